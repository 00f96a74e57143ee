"""The ``folder`` adapter: a folder of RGBA images, or image + mask pairs.

Images are all files under ``root`` (recursively, sorted by relative path) with
an extension from :data:`poseless.data.images.IMAGE_EXTENSIONS`. Hidden files and
folders (name starting with ``.``) and files with other extensions are ignored.
The mask of ``<dir>/<name>.<ext>`` is, in this order:

1. ``<dir>/<name><mask_suffix>.<ext2>`` next to it (files whose stem ends with
   ``mask_suffix`` are masks, never images);
2. ``<mask_dir>/<dir relative to root>/<name>.<ext2>``, then ``<mask_dir>/<name>.<ext2>``;
3. the image's own alpha channel (RGBA PNGs, palette images with transparency).

Item ids are the relative path without extension, ``/`` replaced by ``__`` and
characters other than ``A-Za-z0-9._-`` by ``_``. Two files that map to one id
(``a.png`` and ``a.jpg``) are both rejected, as are masks that belong to no
image. Every image or mask file found thus ends up either as an item or as a
:class:`~poseless.data.adapters.Rejected` entry with its reason.
"""

from __future__ import annotations

import logging
import os
import re
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

from poseless.config import FolderConfig
from poseless.data.adapters import Rejected
from poseless.data.images import IMAGE_EXTENSIONS, load_image, load_mask
from poseless.data.raw import RawItem
from poseless.errors import BadItemError

log = logging.getLogger(__name__)

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def item_id(rel: PurePosixPath) -> str:
    """File-name-safe id of an image at ``rel`` (relative to the root)."""
    text = "__".join((*rel.parent.parts, rel.stem))
    return _UNSAFE.sub("_", text).lstrip(".") or "_"


def list_files(root: Path, exclude: Path | None = None) -> list[PurePosixPath]:
    """Image files under ``root`` (recursive, hidden entries skipped), sorted, relative.

    Args:
        root: folder to search.
        exclude: a folder inside ``root`` not to descend into (e.g. the mask folder).
    Raises:
        BadItemError: ``root`` is missing, not a folder, or a folder cannot be read
            (files in it would otherwise go missing silently).
    """
    if not root.exists():
        raise BadItemError(root, "folder does not exist")
    if not root.is_dir():
        raise BadItemError(root, "not a folder")
    exclude_real = os.path.realpath(exclude) if exclude is not None else None
    found: list[PurePosixPath] = []
    n_other = 0
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            raise BadItemError(folder, f"cannot read folder ({exc.strerror or exc})") from None
        for e in entries:
            if e.name.startswith("."):
                continue
            if e.is_dir(follow_symlinks=False):
                if exclude_real is None or os.path.realpath(e.path) != exclude_real:
                    stack.append(Path(e.path))
            elif Path(e.name).suffix.lower() in IMAGE_EXTENSIONS:
                found.append(PurePosixPath(Path(e.path).relative_to(root).as_posix()))
            else:
                n_other += 1
    if n_other:
        log.info("%s: ignored %d files that are not images", root, n_other)
    return sorted(found)


def _is_mask_name(rel: PurePosixPath, suffix: str) -> bool:
    return bool(suffix) and rel.stem.endswith(suffix) and len(rel.stem) > len(suffix)


def _first_existing(candidates: list[PurePosixPath], available: set[PurePosixPath]):
    return next((c for c in candidates if c in available), None)


def iter_folder(cfg: FolderConfig) -> Iterator[RawItem | Rejected]:
    """Items of a folder dataset (see the module docstring for the layout rules).

    Yields:
        RawItem per usable image (split None: prepare_data assigns it), Rejected
        per unusable image or orphan mask, images in sorted order, orphans last.
    Raises:
        BadItemError: the folder (or mask folder) is unreadable or holds no images.
    """
    root = Path(cfg.root)
    mask_root = Path(cfg.mask_dir) if cfg.mask_dir else None
    files = list_files(root, exclude=mask_root)
    side_masks = {f for f in files if _is_mask_name(f, cfg.mask_suffix)}
    images = [f for f in files if f not in side_masks]
    dir_masks = set(list_files(mask_root)) if mask_root is not None else set()
    if not images:
        raise BadItemError(
            root, f"no images found (looked for {', '.join(IMAGE_EXTENSIONS)}, recursively)"
        )

    by_id: dict[str, list[PurePosixPath]] = defaultdict(list)
    for rel in images:
        by_id[item_id(rel)].append(rel)

    used_side: set[PurePosixPath] = set()
    used_dir: set[PurePosixPath] = set()
    for rel in images:
        rid = item_id(rel)
        src = str(root / rel)
        side = None
        if cfg.mask_suffix:
            side = _first_existing(
                [rel.with_name(rel.stem + cfg.mask_suffix + e) for e in IMAGE_EXTENSIONS],
                side_masks,
            )
        in_dir = None
        if side is None and mask_root is not None:
            names = [rel.stem + e for e in IMAGE_EXTENSIONS]
            in_dir = _first_existing(
                [rel.parent / n for n in names] + [PurePosixPath(n) for n in names], dir_masks
            )
        used_side.update([side] if side else [])
        used_dir.update([in_dir] if in_dir else [])
        others = [o for o in by_id[rid] if o != rel]
        if others:
            also = ", ".join(str(root / o) for o in others)
            yield Rejected(rid, src, f"duplicate id {rid!r}: also produced by {also}")
            continue
        mask_path = root / side if side else (mask_root / in_dir if in_dir else None)
        try:
            yield _read_item(rel, rid, src, root, mask_path, cfg)
        except BadItemError as exc:
            yield Rejected(rid, src, exc.problem)

    orphans = [root / m for m in sorted(side_masks - used_side)]
    if mask_root is not None:
        orphans += [mask_root / m for m in sorted(dir_masks - used_dir)]
    for m in orphans:
        yield Rejected("", str(m), "mask without a matching image")


def _read_item(
    rel: PurePosixPath, rid: str, src: str, root: Path, mask_path: Path | None, cfg: FolderConfig
) -> RawItem:
    image = load_image(root / rel)
    h, w = image.rgb.shape[:2]
    if mask_path is not None:
        try:
            mask = load_mask(mask_path)
        except BadItemError as exc:
            raise BadItemError(src, f"mask {mask_path}: {exc.problem}") from None
        if mask.shape != (h, w):
            raise BadItemError(
                src,
                f"mask {mask_path} is {mask.shape[1]}x{mask.shape[0]} px "
                f"but the image is {w}x{h} px",
            )
    elif image.alpha is not None:
        mask = image.alpha
    else:
        where = f"no {rel.stem}{cfg.mask_suffix}.png next to it" if cfg.mask_suffix else "no mask"
        if cfg.mask_dir:
            where += f", none in {cfg.mask_dir}"
        raise BadItemError(src, f"missing mask: {where}, and the image has no alpha channel")
    category = cfg.category or (rel.parent.name if rel.parent.parts else root.resolve().name)
    return RawItem(
        id=rid, category=category, source=src, rgb=image.rgb, mask=mask, split=None, instance=rid
    )

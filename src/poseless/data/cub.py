"""Adapter ``cub``: CUB-200-2011 birds with their soft segmentation masks.

Layout (``CUB_200_2011.tgz`` unpacked, ``segmentations.tgz`` unpacked next to it)::

    images.txt               "<image_id> <species>/<file>.jpg"
    train_test_split.txt     "<image_id> <1 = train | 0 = test>"
    bounding_boxes.txt       "<image_id> <x> <y> <width> <height>" (pixels, floats)
    classes.txt              "<class_id> <species>" (optional, used to check ``species``)
    images/<species>/<file>.jpg
    segmentations/<species>/<file>.png   soft masks (0..255), one per image

Every item has category ``bird`` and no 3D ground truth (2D metrics only). The
official test images form ``test``; ``val`` is carved from the official train
images by a SHA-256 of the image path (``val_fraction``), so it never changes
with the seed or the subset of species read.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from poseless.config import CubConfig
from poseless.data.adapters import Rejected
from poseless.data.images import load_image, load_mask
from poseless.data.prepared import DatasetError
from poseless.data.raw import RawItem
from poseless.errors import BadItemError
from poseless.utils import stable_hash

CUB_CATEGORY = "bird"
"""Category of every CUB item."""


def read_table(path: Path, n_fields: int) -> dict[int, list[str]]:
    """``<id> <field> ...`` lines -> {id: fields}; errors name the file and the line.

    Args:
        path: text file; n_fields: fields after the id (the last one takes the rest
            of the line only when n_fields == 1).
    """
    if not path.is_file():
        raise FileNotFoundError(f"{path}: CUB-200-2011 file not found")
    out: dict[int, list[str]] = {}
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split(maxsplit=1) if n_fields == 1 else line.split()
        if len(parts) != n_fields + 1:
            raise DatasetError(
                f"{path}:{n}: expected an id and {n_fields} field(s), got {line.strip()!r}"
            )
        try:
            key = int(parts[0])
        except ValueError:
            raise DatasetError(f"{path}:{n}: image id {parts[0]!r} is not an integer") from None
        if key in out:
            raise DatasetError(f"{path}:{n}: duplicate image id {key}")
        out[key] = [p.strip() for p in parts[1:]]
    return out


def is_val(image_name: str, val_fraction: float) -> bool:
    """Whether an official train image goes to val (stable hash of its relative path)."""
    u = int(stable_hash(f"cub/{image_name}", 13), 16) / float(16**13)
    return u < val_fraction


def parse_bbox(fields: list[str], where: str) -> np.ndarray:
    """bounding_boxes.txt fields -> (4,) float x, y, width, height."""
    try:
        box = np.array([float(f) for f in fields])
    except ValueError:
        raise DatasetError(f"{where}: bounding box {fields} is not numeric") from None
    return box


def check_bbox(box: np.ndarray, width: int, height: int, where: str) -> None:
    """(x, y, w, h) must be non-empty and inside the image (1 px slack)."""
    x, y, w, h = box
    if not (w > 0 and h > 0):
        raise BadItemError(where, f"bounding box {box.tolist()} is empty")
    if x < -1 or y < -1 or x + w > width + 1 or y + h > height + 1:
        raise BadItemError(
            where,
            f"bounding box {box.tolist()} (x, y, w, h) lies outside the {width}x{height} px image",
        )


def _species_filter(cfg: CubConfig, root: Path) -> set[str] | None:
    if not cfg.species:
        return None
    classes = root / "classes.txt"
    if classes.is_file():
        known = {f[0] for f in read_table(classes, 1).values()}
        unknown = [s for s in cfg.species if s not in known]
        if unknown:
            raise ValueError(f"cub.species: unknown species {unknown} (see {classes})")
    return set(cfg.species)


def read_item(
    root: Path, seg_root: Path, name: str, box: np.ndarray, split: str, cfg: CubConfig
) -> RawItem:
    """One image -> RawItem (BadItemError naming the file and the problem)."""
    img_path = root / "images" / name
    seg_path = seg_root / Path(name).with_suffix(".png")
    rgb = load_image(img_path).rgb
    mask = load_mask(seg_path)
    h, w = rgb.shape[:2]
    if mask.shape != (h, w):
        raise BadItemError(seg_path, f"mask is {mask.shape[1]}x{mask.shape[0]} px, image {w}x{h}")
    check_bbox(box, w, h, f"{root / 'bounding_boxes.txt'} ({name})")
    if cfg.clip_mask_to_bbox:
        x, y, bw, bh = box
        keep = np.zeros_like(mask, dtype=bool)
        keep[
            max(0, int(np.floor(y))) : int(np.ceil(y + bh)),
            max(0, int(np.floor(x))) : int(np.ceil(x + bw)),
        ] = True
        mask = np.where(keep, mask, 0).astype(np.uint8)
    stem = Path(name).stem
    return RawItem(
        id=f"cub_{stem}",
        category=CUB_CATEGORY,
        source=str(img_path),
        rgb=rgb,
        mask=mask,
        split=split,
        instance=f"cub_{stem}",
    )


def iter_items(cfg: CubConfig, seed: int) -> Iterator[RawItem | Rejected]:
    """Raw CUB items in images.txt order.

    Args:
        cfg: adapter settings; seed: unused (splits are deterministic by name).
    Yields:
        RawItem (no ground truth) with split train / val / test; Rejected for
        unreadable images or masks and boxes outside the image.
    Raises:
        FileNotFoundError / DatasetError: missing or malformed text files.
    """
    del seed
    root = Path(cfg.root)
    if not root.is_dir():
        raise FileNotFoundError(f"cub.root: {root}: folder not found")
    seg_root = Path(cfg.segmentations)
    if not seg_root.is_absolute():
        seg_root = root / seg_root
    if not seg_root.is_dir():
        raise FileNotFoundError(
            f"{seg_root}: CUB segmentations folder not found (unpack segmentations.tgz there)"
        )
    names = read_table(root / "images.txt", 1)
    is_train = read_table(root / "train_test_split.txt", 1)
    boxes = read_table(root / "bounding_boxes.txt", 4)
    for table, label in ((is_train, "train_test_split.txt"), (boxes, "bounding_boxes.txt")):
        missing = sorted(set(names) - set(table))
        if missing:
            raise DatasetError(f"{root / label}: no entry for image id(s) {missing[:5]}")
    species = _species_filter(cfg, root)
    count = 0
    for image_id, (name,) in names.items():
        if species is not None and name.split("/")[0] not in species:
            continue
        if cfg.max_items and count >= cfg.max_items:
            break
        count += 1
        flag = is_train[image_id][0]
        if flag not in ("0", "1"):
            raise DatasetError(
                f"{root / 'train_test_split.txt'}: image id {image_id}: expected 0 or 1, got {flag!r}"
            )
        split = "test" if flag == "0" else ("val" if is_val(name, cfg.val_fraction) else "train")
        box = parse_bbox(boxes[image_id], f"{root / 'bounding_boxes.txt'} (id {image_id})")
        try:
            yield read_item(root, seg_root, name, box, split, cfg)
        except BadItemError as exc:
            yield Rejected(f"cub_{Path(name).stem}", exc.path, exc.problem)

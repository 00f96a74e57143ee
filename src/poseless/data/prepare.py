"""Raw items -> the prepared format: check, crop, resize, composite, write.

For each :class:`RawItem` (see ``poseless.data.prepared`` for the format):

1. **Check** it (:func:`check_item`): array shapes, image/mask size, image at
   least :data:`MIN_IMAGE_SIDE` px, mask not empty, object at least
   :data:`MIN_OBJECT_PIXELS` px, file-name-safe and unique id.
2. **Composite** the RGB on ``background`` with the mask as alpha, at full
   resolution (so the later area resize is the exact antialiased composite).
3. **Crop** a square :class:`Window`: ``crop: bbox`` centres a square of side
   ``L * (1 + 2 * margin)`` (L = longer side of the bounding box of mask >=
   :data:`MASK_THRESHOLD`) on the box; ``crop: none`` keeps the frame (padded to
   a square about its centre when not square). Window parts outside the image
   are padded: background for RGB, 0 for the mask and ground truth.
4. **Resize** to ``image_size``: area (PIL BOX) when shrinking, bilinear when
   enlarging, for RGB and for the mask (resampled as float, then rounded to
   uint8). Image-aligned ground truth (``normals``, ``depth``) is resampled with
   nearest neighbour through the same window; normals are renormalised.

Items without a split get one from a stable hash of their id
(:func:`assign_split`). Bad items follow ``on_bad_item``: ``error`` raises
:class:`BadItemError` naming the file and the problem, ``skip`` lists them in
``rejected.csv``. Everything is written in a fixed order with no timestamps, so
the same input gives byte-identical files.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import re
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, ImageDraw, ImageFont

from poseless.config import PrepareDataConfig, to_dict
from poseless.data.adapters import Rejected
from poseless.data.prepared import MANIFEST_COLUMNS, SPLITS
from poseless.data.raw import RawItem
from poseless.errors import BadItemError, PoselessError
from poseless.utils import stable_hash, write_json_atomic

log = logging.getLogger(__name__)

MIN_IMAGE_SIDE = 8
"""Images with a side shorter than this (px) are rejected."""
MIN_OBJECT_PIXELS = 16
"""Masks with fewer pixels >= MASK_THRESHOLD than this are rejected (tiny object)."""
MASK_THRESHOLD = 128
"""Mask value from which a pixel counts as object (bounding box, object size)."""
IMAGE_ALIGNED_GT = ("normals", "depth")
"""Ground-truth keys that are images of the view and follow the crop and resize."""
CONTACT_SHEET_COLUMNS = 8
"""Image | mask pairs per contact-sheet row."""
CONTACT_SHEET_LABEL = 12
"""Height (px) of the id label under each contact-sheet pair."""
CONTACT_SHEET_GAP = 4
"""Gap (px) between contact-sheet pairs."""

_SAFE_ID = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")


@dataclass(frozen=True)
class Window:
    """A square window in source pixel coordinates; it may extend past the image."""

    x0: int
    """Left column (may be negative)."""
    y0: int
    """Top row (may be negative)."""
    side: int
    """Width = height in source pixels."""


@dataclass(frozen=True)
class PreparedItem:
    """One item after crop, resize and composite."""

    image: np.ndarray
    """(S, S, 3) uint8, composited on the background."""
    mask: np.ndarray
    """(S, S) uint8."""
    gt: dict[str, np.ndarray]
    """Ground truth with image-aligned entries resampled to (.., S, S)."""


@dataclass(frozen=True)
class PrepareSummary:
    """What :func:`write_prepared` wrote."""

    n_items: int
    """Items in the manifest."""
    n_rejected: int
    """Entries in rejected.csv."""
    counts: dict[str, dict[str, int]]
    """Items per split, then per category."""


# ---------------------------------------------------------------------------
# Per-item math
# ---------------------------------------------------------------------------


def assign_split(item_id: str, fractions: tuple[float, float, float]) -> str:
    """Deterministic split of an item from a SHA-256 of its id (not Python's ``hash``).

    The id maps to u in [0, 1); train when u < f0, val when u < f0 + f1, else test.
    """
    u = int(stable_hash(item_id, 13), 16) / float(16**13)
    if u < fractions[0]:
        return SPLITS[0]
    if u < fractions[0] + fractions[1]:
        return SPLITS[1]
    return SPLITS[2]


def check_item(item: RawItem) -> str | None:
    """The reason an item cannot be prepared, or None when it is fine."""
    if not _SAFE_ID.fullmatch(item.id):
        return f"id {item.id!r} is not file-name safe (allowed: A-Z a-z 0-9 . _ -)"
    rgb, mask = item.rgb, item.mask
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        return f"image must be (H, W, 3) uint8, got {rgb.shape} {rgb.dtype}"
    if mask.ndim != 2 or mask.dtype != np.uint8:
        return f"mask must be (H, W) uint8, got {mask.shape} {mask.dtype}"
    h, w = rgb.shape[:2]
    if mask.shape != (h, w):
        return f"mask is {mask.shape[1]}x{mask.shape[0]} px but the image is {w}x{h} px"
    if min(h, w) < MIN_IMAGE_SIDE:
        return f"image too small: {w}x{h} px (minimum side {MIN_IMAGE_SIDE})"
    if not mask.any():
        return "empty mask (all zero)"
    n_obj = int((mask >= MASK_THRESHOLD).sum())
    if n_obj < MIN_OBJECT_PIXELS:
        return (
            f"object too small: {n_obj} mask pixels >= {MASK_THRESHOLD} "
            f"(minimum {MIN_OBJECT_PIXELS})"
        )
    for key in IMAGE_ALIGNED_GT:
        if key in item.gt:
            want = (3, h, w) if key == "normals" else (h, w)
            if item.gt[key].shape != want:
                return f"ground truth {key!r} has shape {item.gt[key].shape}, expected {want}"
    return None


def crop_window(mask: np.ndarray, crop: str, margin: float) -> Window:
    """The square source window of an item.

    Args:
        mask: (H, W) uint8 with at least one pixel >= MASK_THRESHOLD (for ``bbox``).
        crop: ``bbox`` (square around the object) or ``none`` (the whole frame).
        margin: extra space on each side, as a fraction of the box's longer side.
    """
    h, w = mask.shape
    if crop == "none":
        side = max(h, w)
        return Window((w - side) // 2, (h - side) // 2, side)
    if crop != "bbox":
        raise ValueError(f"crop: unknown mode {crop!r} (known: bbox, none)")
    rows = np.flatnonzero((mask >= MASK_THRESHOLD).any(axis=1))
    cols = np.flatnonzero((mask >= MASK_THRESHOLD).any(axis=0))
    y_lo, y_hi = int(rows[0]), int(rows[-1]) + 1
    x_lo, x_hi = int(cols[0]), int(cols[-1]) + 1
    side = max(1, math.ceil(max(y_hi - y_lo, x_hi - x_lo) * (1.0 + 2.0 * margin)))
    x0 = math.floor((x_lo + x_hi - side) / 2.0)
    y0 = math.floor((y_lo + y_hi - side) / 2.0)
    return Window(x0, y0, side)


def composite(rgb: np.ndarray, mask: np.ndarray, background: tuple[float, ...]) -> np.ndarray:
    """rgb: (H, W, 3) uint8, mask: (H, W) uint8 as alpha -> (H, W, 3) uint8 on ``background``."""
    a = mask.astype(np.float32)[..., None] / 255.0
    bg = np.asarray(background, dtype=np.float32) * 255.0
    return np.clip(np.round(rgb.astype(np.float32) * a + bg * (1.0 - a)), 0, 255).astype(np.uint8)


def _window_image(im: Image.Image, window: Window, fill) -> Image.Image:
    """Cut ``window`` out of ``im``, padding with ``fill`` where it leaves the image."""
    w, h = im.size
    if (window.x0, window.y0, window.side) == (0, 0, w) and w == h:
        return im
    canvas = Image.new(im.mode, (window.side, window.side), fill)
    box = (max(window.x0, 0), max(window.y0, 0))
    box = (*box, min(window.x0 + window.side, w), min(window.y0 + window.side, h))
    if box[2] > box[0] and box[3] > box[1]:
        canvas.paste(im.crop(box), (box[0] - window.x0, box[1] - window.y0))
    return canvas


def _resample(src_side: int, size: int) -> Image.Resampling:
    return Image.Resampling.BOX if src_side >= size else Image.Resampling.BILINEAR


def crop_resize_rgb(
    rgb: np.ndarray, window: Window, size: int, fill: tuple[int, ...]
) -> np.ndarray:
    """(H, W, 3) uint8 -> (size, size, 3) uint8 (area when shrinking), padded with ``fill``."""
    im = _window_image(Image.fromarray(rgb, "RGB"), window, fill)
    if im.size != (size, size):
        im = im.resize((size, size), _resample(window.side, size))
    return np.asarray(im).copy()


def crop_resize_mask(mask: np.ndarray, window: Window, size: int) -> np.ndarray:
    """(H, W) uint8 -> (size, size) uint8, resampled as a soft float mask, padded with 0."""
    im = _window_image(Image.fromarray(mask.astype(np.float32), "F"), window, 0.0)
    if im.size != (size, size):
        im = im.resize((size, size), _resample(window.side, size))
    return np.clip(np.round(np.asarray(im)), 0, 255).astype(np.uint8)


def crop_resize_nearest(arr: np.ndarray, window: Window, size: int) -> np.ndarray:
    """(..., H, W) -> (..., size, size): nearest source pixel of each output pixel centre.

    Output pixel i samples source row ``y0 + floor((i + 0.5) * side / size)``; rows and
    columns outside the image give 0.
    """
    h, w = arr.shape[-2:]
    centres = (np.arange(size) + 0.5) * (window.side / size)
    ys = window.y0 + np.floor(centres).astype(np.int64)
    xs = window.x0 + np.floor(centres).astype(np.int64)
    out = arr[..., np.clip(ys, 0, h - 1)[:, None], np.clip(xs, 0, w - 1)[None, :]]
    outside = ((ys < 0) | (ys >= h))[:, None] | ((xs < 0) | (xs >= w))[None, :]
    return np.where(outside, np.zeros((), arr.dtype), out)


def renormalize_normals(normals: np.ndarray) -> np.ndarray:
    """(3, H, W) normals -> float16 unit vectors (zero vectors stay zero)."""
    n = normals.astype(np.float32)
    norm = np.linalg.norm(n, axis=0, keepdims=True)
    return np.where(norm > 1e-6, n / np.maximum(norm, 1e-6), 0.0).astype(np.float16)


def prepare_item(item: RawItem, cfg: PrepareDataConfig) -> PreparedItem:
    """Crop, resize and composite one checked item (see :func:`check_item`)."""
    window = crop_window(item.mask, cfg.crop, cfg.margin)
    size = cfg.image_size
    fill = tuple(int(round(c * 255.0)) for c in cfg.background)
    image = crop_resize_rgb(composite(item.rgb, item.mask, cfg.background), window, size, fill)
    mask = crop_resize_mask(item.mask, window, size)
    gt = dict(item.gt)
    if "normals" in gt:
        gt["normals"] = renormalize_normals(crop_resize_nearest(gt["normals"], window, size))
    if "depth" in gt:
        gt["depth"] = crop_resize_nearest(gt["depth"], window, size).astype(np.float32)
    return PreparedItem(image, mask, gt)


# ---------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Like ``np.savez_compressed`` but byte-deterministic (fixed zip timestamps, sorted keys)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for key in sorted(arrays):
            info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            arr = io.BytesIO()
            np.lib.format.write_array(arr, np.asarray(arrays[key]), allow_pickle=False)
            zf.writestr(info, arr.getvalue())
    path.write_bytes(buf.getvalue())


def _save_png(path: Path, array: np.ndarray, mode: str) -> None:
    Image.fromarray(array, mode).save(path, format="PNG", optimize=False)


def contact_sheet(images: list[np.ndarray], masks: list[np.ndarray], ids: list[str]) -> Image.Image:
    """A grid of image | mask pairs with ids underneath.

    Args:
        images: N arrays (S, S, 3) uint8.
        masks: N arrays (S, S) uint8.
        ids: N labels.
    Returns:
        RGB image of size (cols * (2S + gap) + gap, rows * (S + label + gap) + gap) with
        cols = min(N, CONTACT_SHEET_COLUMNS) (at least 1) and rows = ceil(N / cols).
    """
    s = images[0].shape[0] if images else 1
    cols = max(1, min(len(images), CONTACT_SHEET_COLUMNS))
    rows = math.ceil(len(images) / cols)
    g, lab = CONTACT_SHEET_GAP, CONTACT_SHEET_LABEL
    sheet = Image.new("RGB", (cols * (2 * s + g) + g, rows * (s + lab + g) + g), (128, 128, 128))
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default(size=10)
    for k, (img, msk, name) in enumerate(zip(images, masks, ids)):
        x = g + (k % cols) * (2 * s + g)
        y = g + (k // cols) * (s + lab + g)
        sheet.paste(Image.fromarray(img, "RGB"), (x, y))
        sheet.paste(Image.fromarray(msk, "L").convert("RGB"), (x + s, y))
        draw.text((x, y + s), name[: max(4, 2 * s // 6)], fill=(0, 0, 0), font=font)
    return sheet


def write_prepared(
    entries: Iterable[RawItem | Rejected],
    cfg: PrepareDataConfig,
    out_dir: str | Path,
    *,
    split_fractions: tuple[float, float, float],
    camera: dict | None,
    progress: Callable[[Iterable], Iterable] | None = None,
) -> PrepareSummary:
    """Prepare every entry and write the whole prepared dataset into ``out_dir``.

    Args:
        entries: raw items and rejected inputs from an adapter.
        cfg: the ``prepare_data`` section.
        out_dir: a new or empty folder to fill (write into a temporary folder and rename
            it for atomicity, as the stage does).
        split_fractions: for items that come without a split.
        camera: {fov_deg, distance} of the raw frames, or None; recorded only with
            ``crop: none`` (a crop changes the camera).
        progress: optional wrapper of the iteration (e.g. ``tqdm``).
    Raises:
        BadItemError: a bad item under ``on_bad_item: error``.
        PoselessError: no usable item at all.
    """
    out = Path(out_dir)
    if out.is_dir() and any(out.iterdir()):
        raise ValueError(f"{out}: not empty; write_prepared fills a new folder")
    for sub in ("images", "masks"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    rejected: list[Rejected] = []
    seen: set[str] = set()

    def reject(entry: Rejected) -> None:
        if cfg.on_bad_item == "error":
            raise BadItemError(entry.source, entry.reason)
        log.warning("skipping %s: %s", entry.source, entry.reason)
        rejected.append(entry)

    for entry in progress(entries) if progress is not None else entries:
        if isinstance(entry, Rejected):
            reject(entry)
            continue
        reason = check_item(entry)
        if reason is None and entry.id in seen:
            reason = f"duplicate id {entry.id!r}"
        if reason is None and entry.split is not None and entry.split not in SPLITS:
            reason = f"unknown split {entry.split!r} (known: {', '.join(SPLITS)})"
        if reason is not None:
            reject(Rejected(entry.id, entry.source, reason))
            continue
        seen.add(entry.id)
        item = prepare_item(entry, cfg)
        _save_png(out / "images" / f"{entry.id}.png", item.image, "RGB")
        _save_png(out / "masks" / f"{entry.id}.png", item.mask, "L")
        gt_rel = ""
        if item.gt:
            gt_rel = f"gt/{entry.id}.npz"
            (out / "gt").mkdir(exist_ok=True)
            write_npz(out / gt_rel, item.gt)
        rows.append(
            {
                "id": entry.id,
                "split": entry.split or assign_split(entry.id, split_fractions),
                "category": entry.category,
                "instance": entry.instance or entry.id,
                "image": f"images/{entry.id}.png",
                "mask": f"masks/{entry.id}.png",
                "source": entry.source,
                "azimuth_deg": float(entry.azimuth_deg),
                "elevation_deg": float(entry.elevation_deg),
                "distance": float(entry.distance),
                "gt": gt_rel,
            }
        )

    if not rows:
        first = "; ".join(f"{r.source}: {r.reason}" for r in rejected[:3])
        raise PoselessError(f"no usable items: all {len(rejected)} inputs were rejected ({first})")
    manifest = _manifest_frame(rows)
    pq.write_table(pa.Table.from_pandas(manifest, preserve_index=False), out / "manifest.parquet")
    _write_rejected(out / "rejected.csv", rejected)

    counts = {
        s: {
            str(c): int(n)
            for c, n in manifest.loc[manifest["split"] == s, "category"]
            .value_counts()
            .sort_index()
            .items()
        }
        for s in SPLITS
    }
    meta = {
        "adapter": cfg.adapter,
        "image_size": cfg.image_size,
        "background": list(cfg.background),
        "crop": cfg.crop,
        "margin": cfg.margin,
        "camera": camera if cfg.crop == "none" else None,
        "categories": sorted(manifest["category"].unique().tolist()),
        "counts": counts,
        "n_items": len(manifest),
        "n_rejected": len(rejected),
        "config": to_dict(cfg),
    }
    write_json_atomic(out / "meta.json", meta)

    head = manifest.head(cfg.contact_sheet_items)
    sheet = contact_sheet(
        [_read_png(out / p, "RGB") for p in head["image"]],
        [_read_png(out / p, "L") for p in head["mask"]],
        list(head["id"]),
    )
    sheet.save(out / "contact_sheet.png", format="PNG")
    return PrepareSummary(len(manifest), len(rejected), counts)


def _read_png(path: Path, mode: str) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert(mode))


def _manifest_frame(rows: list[dict]) -> pd.DataFrame:
    """Rows -> manifest with MANIFEST_COLUMNS in order, strings and float64, sorted by id."""
    df = pd.DataFrame(rows, columns=list(MANIFEST_COLUMNS))
    for col in MANIFEST_COLUMNS:
        if col in ("azimuth_deg", "elevation_deg", "distance"):
            df[col] = df[col].astype(np.float64)
        else:
            df[col] = df[col].astype(str)
    return df.sort_values("id", kind="stable").reset_index(drop=True)


def _write_rejected(path: Path, rejected: list[Rejected]) -> None:
    """rejected.csv with columns id, source, reason (header only when empty), sorted."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["id", "source", "reason"])
    for r in sorted(rejected, key=lambda r: (r.id, r.source, r.reason)):
        writer.writerow([r.id, r.source, r.reason])
    path.write_text(buf.getvalue())

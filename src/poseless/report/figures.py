"""Small figure helpers shared by the stages: training curves and image grids.

Every helper returns PNG **bytes** that depend only on its inputs (no
timestamps, no "Software" text chunk), so an artifact folder holding a figure
is byte-identical between identical runs (DVC hashes it). Matplotlib runs on
the Agg backend; image grids are drawn with PIL directly.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

GRID_GAP = 2
"""Pixels between the cells of an image grid."""
GRID_MIN_CELL = 64
"""Image-grid cells are upscaled (nearest, integer factor) to at least this side."""
GRID_LABEL = 14
"""Height of the column-label band and width factor of the row-label band, in pixels."""


def png_bytes(fig) -> bytes:
    """A matplotlib figure as PNG bytes without metadata (byte-stable)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    # Re-encode through PIL so that no text chunk survives whatever matplotlib adds.
    with Image.open(io.BytesIO(buf.getvalue())) as im:
        out = io.BytesIO()
        im.convert("RGB").save(out, format="PNG", optimize=False)
    return out.getvalue()


def _pil_png(im: Image.Image) -> bytes:
    out = io.BytesIO()
    im.save(out, format="PNG", optimize=False)
    return out.getvalue()


def series(records: Sequence[Mapping[str, Any]], key: str) -> tuple[list[int], list[float]]:
    """(steps, values) of the records holding a finite number under ``key``."""
    steps, values = [], []
    for r in records:
        v = r.get(key)
        if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v):
            steps.append(int(r["step"]))
            values.append(float(v))
    return steps, values


def training_curves_png(
    records: Sequence[Mapping[str, Any]],
    panels: Sequence[tuple[str, Sequence[str]]],
    title: str = "",
    columns: int = 3,
) -> bytes:
    """Training curves from metrics.jsonl records, one panel per (title, keys).

    Args:
        records: dicts with an int "step" and numeric values (``read_metrics``);
            a key missing from a record (e.g. G terms logged on G steps only) is
            skipped there.
        panels: (panel title, metric keys drawn in it).
        title: figure title.
        columns: panels per row.
    Returns:
        PNG bytes. A panel whose keys never occur says "no data".
    """
    if not panels:
        raise ValueError("training_curves_png: need at least one panel")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = max(1, min(columns, len(panels)))
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols, 2.6 * rows), dpi=80, squeeze=False)
    for ax in axes.flat[len(panels) :]:
        ax.axis("off")
    for ax, (name, keys) in zip(axes.flat, panels):
        drawn = False
        for key in keys:
            steps, values = series(records, key)
            if steps:
                ax.plot(steps, values, marker="." if len(steps) < 20 else None, label=key)
                drawn = True
        ax.set_title(name, fontsize=9)
        ax.tick_params(labelsize=7)
        ax.set_xlabel("iteration", fontsize=7)
        if drawn:
            if len(keys) > 1:
                ax.legend(fontsize=6)
        else:
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
    if title:
        fig.suptitle(title, fontsize=10)
    # Fixed margins: tight_layout costs about as much as drawing the figure.
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.1, top=0.86, wspace=0.35, hspace=0.6)
    data = png_bytes(fig)
    plt.close(fig)
    return data


def _to_uint8(images: torch.Tensor | np.ndarray) -> np.ndarray:
    arr = images.detach().cpu().float().numpy() if isinstance(images, torch.Tensor) else images
    arr = np.asarray(arr, dtype=np.float64)
    return np.round(np.clip(arr, 0.0, 1.0) * 255.0).astype(np.uint8)


def image_grid(
    images: torch.Tensor | np.ndarray,
    col_labels: Sequence[str] = (),
    row_labels: Sequence[str] = (),
) -> Image.Image:
    """A grid of grey images with optional column and row labels.

    Args:
        images: (R, C, H, W) grey values in [0, 1] (clipped), or (R, C, 3, H, W) RGB.
        col_labels: C labels drawn above the columns (or none).
        row_labels: R labels drawn left of the rows (or none).
    Returns:
        RGB image; cells are upscaled by the integer factor ceil(GRID_MIN_CELL / H).
    """
    if images.ndim not in (4, 5) or (images.ndim == 5 and images.shape[2] != 3):
        raise ValueError(
            f"image_grid: images must be (R, C, H, W) or (R, C, 3, H, W), got {tuple(images.shape)}"
        )
    R, C = int(images.shape[0]), int(images.shape[1])
    H, W = int(images.shape[-2]), int(images.shape[-1])
    if col_labels and len(col_labels) != C:
        raise ValueError(f"image_grid: {len(col_labels)} column labels for {C} columns")
    if row_labels and len(row_labels) != R:
        raise ValueError(f"image_grid: {len(row_labels)} row labels for {R} rows")
    arr = _to_uint8(images)
    if arr.ndim == 4:
        arr = np.repeat(arr[:, :, None], 3, axis=2)  # (R, C, 3, H, W)
    f = max(1, math.ceil(GRID_MIN_CELL / max(H, W)))
    h, w, g = H * f, W * f, GRID_GAP
    top = GRID_LABEL if col_labels else 0
    left = 3 * GRID_LABEL if row_labels else 0
    sheet = Image.new("RGB", (left + C * (w + g) + g, top + R * (h + g) + g), (128, 128, 128))
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default(size=10)
    for j, label in enumerate(col_labels):
        draw.text((left + g + j * (w + g), 1), label, fill=(0, 0, 0), font=font)
    for i, label in enumerate(row_labels):
        draw.text((2, top + g + i * (h + g) + h // 2 - 6), label, fill=(0, 0, 0), font=font)
    for i in range(R):
        for j in range(C):
            cell = Image.fromarray(np.ascontiguousarray(arr[i, j].transpose(1, 2, 0)), "RGB")
            if f > 1:
                cell = cell.resize((w, h), Image.Resampling.NEAREST)
            sheet.paste(cell, (left + g + j * (w + g), top + g + i * (h + g)))
    return sheet


def image_grid_png(
    images: torch.Tensor | np.ndarray,
    col_labels: Sequence[str] = (),
    row_labels: Sequence[str] = (),
) -> bytes:
    """:func:`image_grid` as PNG bytes."""
    return _pil_png(image_grid(images, col_labels, row_labels))

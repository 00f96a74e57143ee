"""Figure helpers: byte-stable PNGs, grid geometry and content, curves from metrics records."""

import io
import math

import numpy as np
import pytest
import torch
from PIL import Image

from poseless.report.figures import (
    GRID_GAP,
    GRID_LABEL,
    GRID_MIN_CELL,
    image_grid,
    image_grid_png,
    series,
    training_curves_png,
)


def png_text_chunks(data: bytes) -> list[bytes]:
    """Types of the PNG's text chunks (tEXt, zTXt, iTXt)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, found = 8, []
    while pos < len(data):
        length = int.from_bytes(data[pos : pos + 4], "big")
        kind = data[pos + 4 : pos + 8]
        if kind in (b"tEXt", b"zTXt", b"iTXt"):
            found.append(kind)
        pos += 12 + length
    return found


def test_image_grid_geometry_and_content():
    images = torch.zeros(2, 3, 16, 16)
    images[1, 2] = 1.0  # the last cell of the second row is white
    images[0, 1, :8] = 0.5  # top half of the middle cell of the first row is grey
    im = image_grid(images, col_labels=["a", "b", "c"], row_labels=["r0", "r1"])
    f = math.ceil(GRID_MIN_CELL / 16)
    cell, g, top, left = 16 * f, GRID_GAP, GRID_LABEL, 3 * GRID_LABEL
    assert im.size == (left + 3 * (cell + g) + g, top + 2 * (cell + g) + g)
    a = np.asarray(im)

    def cell_pixels(i, j):
        y, x = top + g + i * (cell + g), left + g + j * (cell + g)
        return a[y : y + cell, x : x + cell]

    assert (cell_pixels(1, 2) == 255).all()
    assert (cell_pixels(0, 0) == 0).all()
    mid = cell_pixels(0, 1)
    assert (mid[: cell // 2] == 128).all() and (mid[cell // 2 :] == 0).all()


def test_image_grid_without_labels_and_rgb():
    rgb = torch.zeros(1, 2, 3, 64, 64)
    rgb[0, 0, 0] = 1.0  # red
    im = image_grid(rgb)
    assert im.size == (2 * (64 + GRID_GAP) + GRID_GAP, 64 + 2 * GRID_GAP)
    assert tuple(np.asarray(im)[GRID_GAP + 5, GRID_GAP + 5]) == (255, 0, 0)


def test_image_grid_bad_input():
    with pytest.raises(ValueError, match=r"images must be \(R, C, H, W\)"):
        image_grid(torch.zeros(3, 16, 16))
    with pytest.raises(ValueError, match="2 column labels for 3 columns"):
        image_grid(torch.zeros(1, 3, 16, 16), col_labels=["a", "b"])
    with pytest.raises(ValueError, match="1 row labels for 2 rows"):
        image_grid(torch.zeros(2, 3, 16, 16), row_labels=["a"])


def test_grid_png_is_byte_stable_and_has_no_text_chunks():
    images = torch.rand(2, 2, 16, 16, generator=torch.Generator().manual_seed(0))
    a = image_grid_png(images, col_labels=["0°", "90°"])
    assert a == image_grid_png(images.clone(), col_labels=["0°", "90°"])
    assert png_text_chunks(a) == []
    with Image.open(io.BytesIO(a)) as im:
        assert im.mode == "RGB"


RECORDS = [
    {"step": 1, "loss/d": 3.0, "loss/g": 1.0},
    {"step": 2, "loss/d": 2.0},
    {"step": 3, "loss/d": 1.0, "loss/g": "nan"},
    {"step": 4, "loss/d": float("inf"), "loss/g": 0.5},
]


def test_series_skips_missing_and_nonfinite_values():
    assert series(RECORDS, "loss/d") == ([1, 2, 3], [3.0, 2.0, 1.0])
    assert series(RECORDS, "loss/g") == ([1, 4], [1.0, 0.5])
    assert series(RECORDS, "loss/x") == ([], [])


def test_training_curves_png_is_byte_stable():
    panels = [("critic", ("loss/d",)), ("G", ("loss/g",)), ("absent", ("loss/x",))]
    a = training_curves_png(RECORDS, panels, title="t")
    assert a == training_curves_png(list(RECORDS), panels, title="t")
    assert png_text_chunks(a) == []
    other = training_curves_png(RECORDS[:2], panels, title="t")
    assert other != a, "the figure must depend on the data"
    with pytest.raises(ValueError, match="need at least one panel"):
        training_curves_png(RECORDS, [])

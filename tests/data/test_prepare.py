"""Crop / resize / composite math against slow references, and the prepared-format writer."""

import csv
import hashlib
import math
import re

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from poseless.config import PrepareDataConfig
from poseless.data.adapters import Rejected
from poseless.data.prepare import (
    CONTACT_SHEET_COLUMNS,
    CONTACT_SHEET_GAP,
    CONTACT_SHEET_LABEL,
    MIN_OBJECT_PIXELS,
    Window,
    assign_split,
    check_item,
    composite,
    contact_sheet,
    crop_resize_mask,
    crop_resize_nearest,
    crop_resize_rgb,
    crop_window,
    prepare_item,
    renormalize_normals,
    write_npz,
    write_prepared,
)
from poseless.data.prepared import MANIFEST_COLUMNS, PreparedDataset
from poseless.data.raw import RawItem
from poseless.errors import BadItemError, PoselessError

FRACTIONS = (0.8, 0.1, 0.1)


def make_item(item_id="a", h=40, w=60, box=(10, 30, 20, 45), seed=0, **kw) -> RawItem:
    rng = np.random.default_rng(seed)
    mask = np.zeros((h, w), np.uint8)
    y0, y1, x0, x1 = box
    mask[y0:y1, x0:x1] = 255
    rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    return RawItem(id=item_id, category="thing", source=f"src/{item_id}", rgb=rgb, mask=mask, **kw)


def window_reference(arr: np.ndarray, win: Window, fill) -> np.ndarray:
    """Slow: copy the window pixel by pixel, ``fill`` outside the array."""
    out = np.empty((win.side, win.side, *arr.shape[2:]), arr.dtype)
    for i in range(win.side):
        for j in range(win.side):
            y, x = win.y0 + i, win.x0 + j
            inside = 0 <= y < arr.shape[0] and 0 <= x < arr.shape[1]
            out[i, j] = arr[y, x] if inside else fill
    return out


# --- splits -----------------------------------------------------------------


def test_assign_split_is_a_stable_hash():
    u = int(hashlib.sha256(b"chair_0001").hexdigest()[:13], 16) / 16**13
    want = "train" if u < 0.8 else ("val" if u < 0.9 else "test")
    assert assign_split("chair_0001", FRACTIONS) == want
    splits = [assign_split(f"id{i}", FRACTIONS) for i in range(3000)]
    assert splits == [assign_split(f"id{i}", FRACTIONS) for i in range(3000)]
    for name, f in zip(("train", "val", "test"), FRACTIONS):
        assert abs(splits.count(name) / 3000 - f) < 0.03, name
    assert {assign_split(f"id{i}", (1.0, 0.0, 0.0)) for i in range(200)} == {"train"}
    assert {assign_split(f"id{i}", (0.0, 0.0, 1.0)) for i in range(200)} == {"test"}


# --- windows and resampling ---------------------------------------------------


def test_crop_window_bbox_and_none():
    mask = np.zeros((40, 60), np.uint8)
    mask[10:30, 20:30] = 255  # 20 tall, 10 wide, centre (x=25, y=20)
    assert crop_window(mask, "bbox", 0.0) == Window(15, 10, 20)
    assert crop_window(mask, "bbox", 0.5) == Window(5, 0, 40)
    mask[:, :] = 0
    mask[0:4, 0:4] = 255  # corner object: window leaves the image
    assert crop_window(mask, "bbox", 0.25) == Window(-1, -1, 6)
    assert crop_window(mask, "none", 0.3) == Window(0, -10, 60)
    with pytest.raises(ValueError, match="unknown mode"):
        crop_window(mask, "tight", 0.0)


def test_soft_pixels_below_threshold_do_not_grow_the_box():
    mask = np.zeros((40, 40), np.uint8)
    mask[10:20, 10:20] = 255
    mask[0:40, 0] = 100  # faint soft halo
    assert crop_window(mask, "bbox", 0.0) == Window(10, 10, 10)


@pytest.mark.parametrize("win", [Window(-3, 5, 16), Window(50, 30, 20), Window(0, 0, 40)])
def test_crop_resize_rgb_box_equals_block_mean(win):
    rgb = np.random.default_rng(1).integers(0, 256, (40, 60, 3), dtype=np.uint8)
    fill = (10, 200, 30)
    got = crop_resize_rgb(rgb, win, win.side // 2, fill)
    ref = window_reference(rgb, win, fill).astype(np.float64)
    ref = ref.reshape(win.side // 2, 2, win.side // 2, 2, 3).mean(axis=(1, 3))
    assert got.shape == (win.side // 2, win.side // 2, 3)
    assert np.abs(got.astype(np.float64) - ref).max() <= 1.0


def test_crop_resize_mask_is_soft_and_padded_with_zero():
    mask = np.zeros((8, 8), np.uint8)
    mask[:, :4] = 255
    win = Window(-2, 0, 8)  # shifts the object right by 2 px
    got = crop_resize_mask(mask, win, 4)
    ref = window_reference(mask, win, 0).astype(np.float64).reshape(4, 2, 4, 2).mean(axis=(1, 3))
    np.testing.assert_array_equal(got, np.round(ref))
    half = crop_resize_mask(mask, Window(0, 0, 8), 3)[:, 1]  # column straddling the edge
    assert 0 < half.min() < 255  # soft, not thresholded


def test_crop_resize_nearest_matches_loop():
    arr = np.random.default_rng(2).normal(size=(3, 10, 14)).astype(np.float32)
    for win, size in [(Window(-3, 2, 9), 5), (Window(0, 0, 14), 14), (Window(4, -6, 7), 16)]:
        got = crop_resize_nearest(arr, win, size)
        ref = np.zeros((3, size, size), np.float32)
        for i in range(size):
            for j in range(size):
                y = win.y0 + math.floor((i + 0.5) * win.side / size)
                x = win.x0 + math.floor((j + 0.5) * win.side / size)
                if 0 <= y < 10 and 0 <= x < 14:
                    ref[:, i, j] = arr[:, y, x]
        np.testing.assert_array_equal(got, ref)


def test_composite_and_renormalize():
    rgb = np.full((2, 2, 3), 200, np.uint8)
    mask = np.array([[0, 255], [128, 64]], np.uint8)
    out = composite(rgb, mask, (0.0, 1.0, 0.0))
    np.testing.assert_array_equal(out[0, 0], [0, 255, 0])
    np.testing.assert_array_equal(out[0, 1], [200, 200, 200])
    np.testing.assert_array_equal(
        out[1, 0], np.round([200 * 128 / 255, 200 * 128 / 255 + 255 * 127 / 255, 200 * 128 / 255])
    )
    n = np.zeros((3, 2, 2), np.float32)
    n[:, 0, 0] = (3.0, 0.0, -4.0)
    got = renormalize_normals(n)
    assert got.dtype == np.float16
    np.testing.assert_allclose(got[:, 0, 0], (0.6, 0.0, -0.8), atol=1e-3)
    assert not got[:, 1, 1].any()


# --- item checks ---------------------------------------------------------------


@pytest.mark.parametrize(
    "change, reason",
    [
        (lambda it: setattr(it, "mask", np.zeros_like(it.mask)), r"empty mask \(all zero\)"),
        (
            lambda it: setattr(it, "mask", it.mask[:, :-1].copy()),
            r"mask is 59x40 px but the image is 60x40 px",
        ),
        (lambda it: setattr(it, "id", "../x"), r"not file-name safe"),
        (lambda it: setattr(it, "rgb", it.rgb[..., 0].copy()), r"image must be \(H, W, 3\) uint8"),
        (
            lambda it: setattr(it, "rgb", it.rgb.astype(np.uint16)),
            r"image must be \(H, W, 3\) uint8",
        ),
        (
            lambda it: it.gt.update(depth=np.zeros((4, 4), np.float32)),
            r"ground truth 'depth' has shape",
        ),
    ],
)
def test_check_item_reasons(change, reason):
    item = make_item()
    assert check_item(item) is None
    change(item)
    assert re.search(reason, check_item(item) or ""), check_item(item)


def test_too_small_image_and_tiny_object():
    small = make_item(h=6, w=30, box=(0, 6, 0, 30))
    assert "image too small: 30x6 px" in check_item(small)
    tiny = make_item(box=(5, 8, 5, 8))  # 9 object pixels
    assert f"object too small: 9 mask pixels >= 128 (minimum {MIN_OBJECT_PIXELS})" == check_item(
        tiny
    )
    faint = make_item()
    faint.mask[faint.mask > 0] = 60  # nonzero but never >= 128
    assert "object too small: 0 mask pixels" in check_item(faint)


# --- prepare_item ------------------------------------------------------------------


def test_prepare_item_crop_none_keeps_gt_exact():
    item = make_item(h=32, w=32, box=(8, 24, 4, 20))
    n = np.zeros((3, 32, 32), np.float32)
    n[2][item.mask > 0] = -1.0
    item.gt.update(
        normals=n.astype(np.float16),
        depth=np.where(item.mask > 0, 2.5, 0).astype(np.float32),
        R=np.eye(3, dtype=np.float32),
    )
    out = prepare_item(item, PrepareDataConfig(crop="none", image_size=32))
    np.testing.assert_array_equal(out.mask, item.mask)
    np.testing.assert_array_equal(out.gt["normals"], n.astype(np.float16))
    np.testing.assert_array_equal(out.gt["depth"], item.gt["depth"])
    np.testing.assert_array_equal(out.gt["R"], np.eye(3))
    on = item.mask > 0
    np.testing.assert_array_equal(out.image[on], item.rgb[on])
    assert (out.image[~on] == 255).all()


def test_prepare_item_bbox_gt_follows_the_crop():
    item = make_item(h=40, w=60, box=(10, 30, 20, 45))
    item.gt["normals"] = np.where(item.mask > 0, np.array([0, 0, -1.0])[:, None, None], 0).astype(
        np.float16
    )
    item.gt["depth"] = np.where(item.mask > 0, 3.0, 0.0).astype(np.float32)
    out = prepare_item(
        item, PrepareDataConfig(crop="bbox", margin=0.2, image_size=16, background=(0, 0, 0))
    )
    assert out.image.shape == (16, 16, 3) and out.mask.shape == (16, 16)
    assert out.gt["normals"].shape == (3, 16, 16) and out.gt["normals"].dtype == np.float16
    assert out.gt["depth"].shape == (16, 16) and out.gt["depth"].dtype == np.float32
    hard = out.mask == 255
    assert hard.sum() > 0
    assert (out.gt["depth"][hard] == 3.0).all() and (out.gt["depth"][out.mask == 0] == 0).all()
    assert (out.gt["normals"][2][hard] == -1).all()
    assert (out.image[out.mask == 0] == 0).all()  # background, including padded border rows


# --- writer ------------------------------------------------------------------------


def test_write_npz_is_deterministic_and_loadable(tmp_path):
    arrays = {"b": np.arange(6, dtype=np.int32).reshape(2, 3), "a": np.ones(3, np.float16)}
    write_npz(tmp_path / "1.npz", arrays)
    write_npz(tmp_path / "2.npz", dict(reversed(list(arrays.items()))))
    assert (tmp_path / "1.npz").read_bytes() == (tmp_path / "2.npz").read_bytes()
    with np.load(tmp_path / "1.npz") as z:
        assert sorted(z.files) == ["a", "b"]
        np.testing.assert_array_equal(z["b"], arrays["b"])
        assert z["a"].dtype == np.float16


def test_contact_sheet_size():
    imgs = [np.zeros((10, 10, 3), np.uint8)] * 11
    msks = [np.zeros((10, 10), np.uint8)] * 11
    sheet = contact_sheet(imgs, msks, [f"i{k}" for k in range(11)])
    g = CONTACT_SHEET_GAP
    assert sheet.size == (
        CONTACT_SHEET_COLUMNS * (20 + g) + g,
        2 * (10 + CONTACT_SHEET_LABEL + g) + g,
    )
    assert contact_sheet(imgs[:3], msks[:3], ["a", "b", "c"]).size == (
        3 * (20 + g) + g,
        10 + CONTACT_SHEET_LABEL + 2 * g,
    )


def _entries():
    good = [make_item(f"item{k}", seed=k) for k in range(5)]
    good[0].split = "test"
    good[1].azimuth_deg, good[1].elevation_deg, good[1].distance = 30.0, 10.0, 2.0
    good[1].gt["depth"] = np.zeros((40, 60), np.float32)
    empty = make_item("empty")
    empty.mask[:] = 0
    return [*good, Rejected("bad", "src/bad.png", "cannot read image (broken)"), empty]


def test_write_prepared_skip(tmp_path):
    cfg = PrepareDataConfig(
        adapter="folder", on_bad_item="skip", image_size=16, contact_sheet_items=3
    )
    summary = write_prepared(
        _entries(),
        cfg,
        tmp_path,
        split_fractions=FRACTIONS,
        camera={"fov_deg": 30.0, "distance": 2.0},
    )
    assert (summary.n_items, summary.n_rejected) == (5, 2)
    df = pd.read_parquet(tmp_path / "manifest.parquet")
    assert list(df.columns) == list(MANIFEST_COLUMNS)
    assert list(df["id"]) == sorted(df["id"])
    for col in ("azimuth_deg", "elevation_deg", "distance"):
        assert df[col].dtype == np.float64
    for col in ("id", "split", "category", "instance", "image", "mask", "source", "gt"):
        assert pd.api.types.is_string_dtype(df[col]), col
    r0 = df.set_index("id")
    assert r0.loc["item0", "split"] == "test"
    assert r0.loc["item1", "azimuth_deg"] == 30.0 and math.isnan(r0.loc["item2", "azimuth_deg"])
    assert r0.loc["item1", "gt"] == "gt/item1.npz" and r0.loc["item2", "gt"] == ""
    assert sorted(p.name for p in (tmp_path / "gt").iterdir()) == ["item1.npz"]
    assert r0.loc["item3", "split"] == assign_split("item3", FRACTIONS)
    with open(tmp_path / "rejected.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["id"], r["source"], r["reason"]) for r in rows] == [
        ("bad", "src/bad.png", "cannot read image (broken)"),
        ("empty", "src/empty", "empty mask (all zero)"),
    ]
    ds = PreparedDataset(tmp_path)
    assert ds.meta["camera"] is None  # crop: bbox changes the camera
    assert ds.meta["n_rejected"] == 2 and ds.meta["categories"] == ["thing"]
    assert sum(sum(c.values()) for c in ds.meta["counts"].values()) == 5
    batch = ds.load(ds.ids())
    assert batch.images.shape == (5, 3, 16, 16) and batch.masks.shape == (5, 1, 16, 16)
    with Image.open(tmp_path / "contact_sheet.png") as im:
        g = CONTACT_SHEET_GAP
        assert im.size == (3 * (32 + g) + g, 16 + CONTACT_SHEET_LABEL + 2 * g)


def test_write_prepared_error_names_file_and_problem(tmp_path):
    cfg = PrepareDataConfig(on_bad_item="error", image_size=16)
    with pytest.raises(BadItemError, match=r"^src/bad\.png: cannot read image \(broken\)$"):
        write_prepared(_entries(), cfg, tmp_path, split_fractions=FRACTIONS, camera=None)
    with pytest.raises(BadItemError, match=r"^src/empty: empty mask \(all zero\)$"):
        write_prepared(
            [make_item("ok"), _entries()[-1]],
            cfg,
            tmp_path / "2",
            split_fractions=FRACTIONS,
            camera=None,
        )


def test_write_prepared_duplicates_unknown_split_and_nothing_left(tmp_path):
    cfg = PrepareDataConfig(on_bad_item="skip", image_size=16, crop="none")
    weird = make_item("w", split="holdout")
    summary = write_prepared(
        [make_item("a"), make_item("a", seed=3), weird],
        cfg,
        tmp_path,
        split_fractions=FRACTIONS,
        camera={"fov_deg": 30.0, "distance": 2.7},
    )
    assert (summary.n_items, summary.n_rejected) == (1, 2)
    text = (tmp_path / "rejected.csv").read_text()
    assert "duplicate id 'a'" in text and "unknown split 'holdout'" in text
    assert PreparedDataset(tmp_path).meta["camera"] == {"fov_deg": 30.0, "distance": 2.7}
    with pytest.raises(
        PoselessError, match=r"no usable items: all 1 inputs were rejected \(src/x: empty mask"
    ):
        bad = make_item("x")
        bad.mask[:] = 0
        write_prepared([bad], cfg, tmp_path / "none", split_fractions=FRACTIONS, camera=None)


def test_rejected_csv_is_written_when_empty(tmp_path):
    cfg = PrepareDataConfig(image_size=16)
    write_prepared([make_item("a")], cfg, tmp_path, split_fractions=FRACTIONS, camera=None)
    assert (tmp_path / "rejected.csv").read_text() == "id,source,reason\n"
    with pytest.raises(ValueError, match="not empty"):
        write_prepared([make_item("b")], cfg, tmp_path, split_fractions=FRACTIONS, camera=None)

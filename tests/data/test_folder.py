"""The folder adapter: layouts, mask lookup, bad inputs, and nothing goes missing."""

import os
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from poseless.config import FolderConfig, PrepareDataConfig
from poseless.data.adapters import Rejected
from poseless.data.folder import item_id, iter_folder, list_files
from poseless.data.prepare import write_prepared
from poseless.data.prepared import PreparedDataset
from poseless.data.raw import RawItem
from poseless.errors import BadItemError

H, W = 24, 32


def obj_mask(h=H, w=W) -> np.ndarray:
    m = np.zeros((h, w), np.uint8)
    m[h // 4 : 3 * h // 4, w // 4 : w // 2] = 255
    return m


def save_rgba(path: Path, seed=0, mask=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    a = np.zeros((H, W, 4), np.uint8)
    a[..., :3] = np.random.default_rng(seed).integers(0, 256, (H, W, 3))
    a[..., 3] = obj_mask() if mask is None else mask
    Image.fromarray(a, "RGBA").save(path)


def save_pair(img: Path, mask: Path, seed=0, mask_array=None):
    img.parent.mkdir(parents=True, exist_ok=True)
    mask.parent.mkdir(parents=True, exist_ok=True)
    rgb = np.random.default_rng(seed).integers(0, 256, (H, W, 3), dtype=np.uint8)
    Image.fromarray(rgb, "RGB").save(img)
    Image.fromarray(obj_mask() if mask_array is None else mask_array, "L").save(mask)


def split(entries):
    items = [e for e in entries if isinstance(e, RawItem)]
    rejected = [e for e in entries if isinstance(e, Rejected)]
    return items, rejected


def test_item_id_is_file_name_safe():
    assert item_id(PurePosixPath("chairs/img 1.png")) == "chairs__img_1"
    assert item_id(PurePosixPath("a.b.jpg")) == "a.b"
    assert item_id(PurePosixPath("é/x.png")) == "___x"


def test_rgba_folder_and_categories(tmp_path):
    save_rgba(tmp_path / "chair" / "a.png")
    save_rgba(tmp_path / "car" / "b.png", seed=1)
    save_rgba(tmp_path / "top.png", seed=2)
    items, rejected = split(list(iter_folder(FolderConfig(root=str(tmp_path)))))
    assert not rejected
    assert [(i.id, i.category) for i in items] == [
        ("car__b", "car"),
        ("chair__a", "chair"),
        ("top", tmp_path.name),
    ]
    np.testing.assert_array_equal(items[0].mask, obj_mask())
    assert items[0].split is None and items[0].instance == "car__b"
    assert items[0].source == str(tmp_path / "car" / "b.png")
    items, _ = split(list(iter_folder(FolderConfig(root=str(tmp_path), category="thing"))))
    assert {i.category for i in items} == {"thing"}


def test_side_masks_and_mask_dir(tmp_path):
    root = tmp_path / "imgs"
    m2 = obj_mask()
    m2[:, :] = 0
    m2[2:10, 2:10] = 255
    save_pair(root / "x.jpg", root / "x_mask.png")
    save_pair(root / "sub" / "y.png", tmp_path / "masks" / "sub" / "y.png", mask_array=m2)
    save_pair(root / "z.png", tmp_path / "masks" / "z.png")
    cfg = FolderConfig(root=str(root), mask_dir=str(tmp_path / "masks"))
    items, rejected = split(list(iter_folder(cfg)))
    assert not rejected, rejected
    by_id = {i.id: i for i in items}
    assert sorted(by_id) == ["sub__y", "x", "z"]
    np.testing.assert_array_equal(by_id["sub__y"].mask, m2)
    np.testing.assert_array_equal(by_id["x"].mask, obj_mask())


def test_mask_dir_inside_root_is_not_scanned_for_images(tmp_path):
    save_pair(tmp_path / "a.png", tmp_path / "masks" / "a.png")
    items, rejected = split(
        list(iter_folder(FolderConfig(root=str(tmp_path), mask_dir=str(tmp_path / "masks"))))
    )
    assert [i.id for i in items] == ["a"] and not rejected


def test_exif_rotated_jpeg_lines_up_with_display_mask(tmp_path):
    """The mask is stored in display orientation (no EXIF); the JPEG is stored rotated."""
    display_mask = np.zeros((20, 40), np.uint8)
    display_mask[2:12, 4:16] = 255  # object top-left in the displayed photo
    display = np.zeros((20, 40, 3), np.uint8)
    display[display_mask > 0] = (250, 20, 20)  # red object
    display[display_mask == 0] = (20, 20, 250)  # blue elsewhere
    stored = Image.fromarray(display).transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6
    stored.save(tmp_path / "photo.jpg", exif=exif, quality=100)
    Image.fromarray(display_mask, "L").save(tmp_path / "photo_mask.png")
    items, rejected = split(list(iter_folder(FolderConfig(root=str(tmp_path)))))
    assert not rejected, rejected
    (item,) = items
    assert item.rgb.shape == (20, 40, 3)
    inside = item.rgb[display_mask > 0].astype(int)
    outside = item.rgb[display_mask == 0].astype(int)
    assert (inside[:, 0] > inside[:, 2]).mean() > 0.9  # red under the mask
    assert (outside[:, 2] > outside[:, 0]).mean() > 0.9  # blue off it


def test_bad_inputs_are_rejected_with_reasons(tmp_path):
    save_rgba(tmp_path / "good.png")
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(tmp_path / "nomask.png")
    save_pair(tmp_path / "size.png", tmp_path / "size_mask.png", mask_array=obj_mask(H, W + 2))
    save_pair(tmp_path / "dup.png", tmp_path / "dup_mask.png")
    save_rgba(tmp_path / "dup.webp")
    save_pair(tmp_path / "bm.png", tmp_path / "bm_mask.png")
    (tmp_path / "bm_mask.png").write_bytes(b"truncated")
    Image.fromarray(obj_mask(), "L").save(tmp_path / "orphan_mask.png")
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / ".hidden.png").write_bytes(b"ignored")
    items, rejected = split(list(iter_folder(FolderConfig(root=str(tmp_path)))))
    assert [i.id for i in items] == ["good"]
    reasons = {Path(r.source).name: r.reason for r in rejected}
    assert reasons["corrupt.png"].startswith("cannot read image")
    assert (
        reasons["nomask.png"]
        == "missing mask: no nomask_mask.png next to it, and the image has no alpha channel"
    )
    assert (
        reasons["size.png"]
        == f"mask {tmp_path / 'size_mask.png'} is 34x24 px but the image is 32x24 px"
    )
    assert reasons["dup.png"] == f"duplicate id 'dup': also produced by {tmp_path / 'dup.webp'}"
    assert reasons["dup.webp"] == f"duplicate id 'dup': also produced by {tmp_path / 'dup.png'}"
    assert reasons["bm.png"].startswith(f"mask {tmp_path / 'bm_mask.png'}: cannot read image")
    assert reasons["orphan_mask.png"] == "mask without a matching image"
    assert len(rejected) == 7


def test_every_input_file_is_in_manifest_or_rejected(tmp_path):
    root = tmp_path / "raw"
    for k in range(3):
        save_rgba(root / "c1" / f"ok{k}.png", seed=k)
    save_pair(root / "c2" / "p.png", root / "c2" / "p_mask.png")
    (root / "c2" / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    save_rgba(root / "c2" / "empty.png", mask=np.zeros((H, W), np.uint8))
    tiny = np.zeros((H, W), np.uint8)
    tiny[0:2, 0:2] = 255
    save_rgba(root / "c2" / "tiny.png", mask=tiny)
    Image.fromarray(np.zeros((5, 5, 4), np.uint8)).save(root / "c2" / "small.png")
    Image.fromarray(obj_mask(), "L").save(root / "c2" / "lost_mask.png")
    save_rgba(root / "c2" / "p.webp")
    cfg = PrepareDataConfig(
        adapter="folder", on_bad_item="skip", image_size=16, folder=FolderConfig(root=str(root))
    )
    out = tmp_path / "out"
    write_prepared(iter_folder(cfg.folder), cfg, out, split_fractions=(0.8, 0.1, 0.1), camera=None)
    ds = PreparedDataset(out)
    rej = pd.read_csv(out / "rejected.csv", keep_default_na=False)
    accounted = set(ds.manifest["source"]) | set(rej["source"])
    images = {str(p) for p in root.rglob("*") if p.is_file() and not p.stem.endswith("_mask")}
    assert images <= accounted, images - accounted
    for m in root.rglob("*_mask.png"):
        owner = m.with_name(m.name.replace("_mask", ""))
        assert str(m) in accounted or str(owner) in accounted, m
    assert not set(ds.manifest["source"]) & set(rej["source"])
    reasons = dict(zip(rej["source"].map(lambda s: Path(s).name), rej["reason"]))
    assert reasons["empty.png"] == "empty mask (all zero)"
    assert reasons["tiny.png"].startswith("object too small: 4 mask pixels")
    assert reasons["small.png"].startswith("image too small: 5x5 px")
    assert reasons["lost_mask.png"] == "mask without a matching image"
    assert sorted(ds.ids()) == [
        "c1__ok0",
        "c1__ok1",
        "c1__ok2",
    ]  # c2__p is a duplicate (p.png, p.webp)


def test_unreadable_or_empty_folders(tmp_path, monkeypatch):
    with pytest.raises(BadItemError, match=r"nope: folder does not exist"):
        list(iter_folder(FolderConfig(root=str(tmp_path / "nope"))))
    (tmp_path / "file.png").write_bytes(b"x")
    with pytest.raises(BadItemError, match=r"file\.png: not a folder"):
        list(iter_folder(FolderConfig(root=str(tmp_path / "file.png"))))
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / "readme.txt").write_text("hi")
    with pytest.raises(BadItemError, match=r"empty: no images found \(looked for \.png, \.jpg"):
        list(iter_folder(FolderConfig(root=str(tmp_path / "empty"))))
    with pytest.raises(BadItemError, match=r"nomasks: folder does not exist"):
        list(
            iter_folder(
                FolderConfig(root=str(tmp_path / "empty"), mask_dir=str(tmp_path / "nomasks"))
            )
        )

    save_rgba(tmp_path / "locked" / "sub" / "a.png")
    real_scandir = os.scandir

    def scandir(path):
        if Path(path).name == "sub":
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    with pytest.raises(BadItemError, match=r"locked/sub: cannot read folder \(Permission denied\)"):
        list_files(tmp_path / "locked")

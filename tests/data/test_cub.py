"""Tests of the ``cub`` adapter on a tiny dataset written in CUB-200-2011's layout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from poseless.config import CubConfig, PrepareDataConfig, from_dict, load_params
from poseless.data.adapters import Rejected, create_adapter
from poseless.data.cub import is_val, iter_items
from poseless.data.prepare import check_item
from poseless.data.prepared import DatasetError

SPECIES = ("001.Black_footed_Albatross", "002.Laysan_Albatross")


def write_cub(root, n=6, size=(24, 20), boxes=None, flags=None):
    names, lines_split, lines_box = [], [], []
    for i in range(1, n + 1):
        sp = SPECIES[i % 2]
        name = f"{sp}/{sp.split('.')[1]}_{i:04d}_{i}.jpg"
        names.append(f"{i} {name}")
        lines_split.append(f"{i} {(flags or {}).get(i, i % 3 != 0) * 1}")
        box = (boxes or {}).get(i, (2.0, 3.0, 15.0, 12.0))
        lines_box.append(f"{i} " + " ".join(str(b) for b in box))
        img = root / "images" / name
        seg = root / "segmentations" / name.replace(".jpg", ".png")
        img.parent.mkdir(parents=True, exist_ok=True)
        seg.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((size[1], size[0], 3), 100 + i, np.uint8)).save(img)
        mask = np.zeros((size[1], size[0]), np.uint8)
        mask[4:14, 3:16] = 204  # soft value kept as is
        mask[0, 0] = 51
        Image.fromarray(mask).save(seg)
    (root / "images.txt").write_text("\n".join(names) + "\n")
    (root / "train_test_split.txt").write_text("\n".join(lines_split) + "\n")
    (root / "bounding_boxes.txt").write_text("\n".join(lines_box) + "\n")
    (root / "classes.txt").write_text(
        "\n".join(f"{k + 1} {s}" for k, s in enumerate(SPECIES)) + "\n"
    )


def test_items_and_splits(tmp_path):
    write_cub(tmp_path, n=9)
    items = list(iter_items(CubConfig(root=str(tmp_path), val_fraction=0.5), 0))
    assert len(items) == 9 and all(it.category == "bird" and not it.gt for it in items)
    assert items[0].id == "cub_Laysan_Albatross_0001_1"
    assert items[0].rgb.shape == (20, 24, 3) and items[0].mask.dtype == np.uint8
    assert items[0].mask[5, 5] == 204 and items[0].mask[0, 0] == 51, "soft masks are kept"
    for k, it in enumerate(items, start=1):
        if k % 3 == 0:
            assert it.split == "test"
        else:
            name = it.source.split("images/")[1]
            assert it.split == ("val" if is_val(name, 0.5) else "train")
    splits = {it.split for it in items}
    assert splits == {"train", "val", "test"}, "0.5 of 6 train images should give both"
    again = [
        (it.id, it.split) for it in iter_items(CubConfig(root=str(tmp_path), val_fraction=0.5), 7)
    ]
    assert again == [(it.id, it.split) for it in items], "splits do not depend on the seed"


def test_species_filter_clip_and_limit(tmp_path):
    write_cub(tmp_path)
    cfg = CubConfig(root=str(tmp_path), species=(SPECIES[0],), clip_mask_to_bbox=True)
    items = list(iter_items(cfg, 0))
    assert len(items) == 3 and all("Black_footed" in it.id for it in items)
    assert items[0].mask[0, 0] == 0 and items[0].mask[5, 5] == 204
    assert len(list(iter_items(CubConfig(root=str(tmp_path), max_items=2), 0))) == 2
    with pytest.raises(ValueError, match="unknown species"):
        list(iter_items(CubConfig(root=str(tmp_path), species=("999.Dodo",)), 0))


def test_bbox_outside_image_is_rejected(tmp_path):
    write_cub(tmp_path, n=2, boxes={1: (10.0, 3.0, 30.0, 12.0), 2: (2.0, 3.0, 0.0, 5.0)})
    out = list(iter_items(CubConfig(root=str(tmp_path)), 0))
    assert all(isinstance(o, Rejected) for o in out)
    assert "lies outside the 24x20 px image" in out[0].reason
    assert "bounding_boxes.txt" in out[0].source and "is empty" in out[1].reason


def test_missing_mask_and_bad_image(tmp_path):
    write_cub(tmp_path, n=2)
    seg = next((tmp_path / "segmentations").rglob("*_0001_1.png"))
    seg.unlink()
    img = next((tmp_path / "images").rglob("*_0002_2.jpg"))
    img.write_bytes(b"not a jpeg")
    out = list(iter_items(CubConfig(root=str(tmp_path)), 0))
    assert isinstance(out[0], Rejected) and out[0].source.endswith("_0001_1.png")
    assert "file not found" in out[0].reason
    assert isinstance(out[1], Rejected) and "cannot read image" in out[1].reason


@pytest.mark.parametrize(
    "name, text, error, message",
    [
        ("images.txt", None, FileNotFoundError, "images.txt: CUB-200-2011 file not found"),
        ("train_test_split.txt", "1 1\n", DatasetError, r"no entry for image id\(s\) \[2\]"),
        ("train_test_split.txt", "1 1\n2 yes\n", DatasetError, "expected 0 or 1, got 'yes'"),
        (
            "bounding_boxes.txt",
            "1 1 2 3\n2 1 2 3 4\n",
            DatasetError,
            "bounding_boxes.txt:1: expected an id and 4",
        ),
        ("images.txt", "x a.jpg\n", DatasetError, "images.txt:1: image id 'x' is not an integer"),
        ("bounding_boxes.txt", "1 a b c d\n2 1 2 3 4\n", DatasetError, "is not numeric"),
    ],
)
def test_malformed_text_files(tmp_path, name, text, error, message):
    write_cub(tmp_path, n=2)
    if text is None:
        (tmp_path / name).unlink()
    else:
        (tmp_path / name).write_text(text)
    with pytest.raises(error, match=message):
        list(iter_items(CubConfig(root=str(tmp_path)), 0))


def test_missing_folders(tmp_path):
    with pytest.raises(FileNotFoundError, match="cub.root"):
        list(iter_items(CubConfig(root=str(tmp_path / "none")), 0))
    with pytest.raises(FileNotFoundError, match="segmentations folder not found"):
        list(iter_items(CubConfig(root=str(tmp_path)), 0))


def test_registered_adapter(tmp_path):
    write_cub(tmp_path, n=2)
    cfg = from_dict(PrepareDataConfig, {"adapter": "cub", "cub": {"root": str(tmp_path)}})
    items = list(create_adapter(cfg, 0))
    assert len(items) == 2 and all(check_item(it) is None for it in items)
    with pytest.raises(ValueError, match="val_fraction"):
        from_dict(PrepareDataConfig, {"cub": {"val_fraction": 1.0}})


def test_config_file_loads():
    params = load_params(Path(__file__).parents[2] / "config" / "cub.yaml")
    assert params.prepare_data.adapter == "cub"

"""Tests of the ``pix3d`` adapter on a tiny dataset written in Pix3D's layout."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from poseless.config import Pix3dConfig, PrepareDataConfig, from_dict, load_params
from poseless.data.adapters import Rejected, create_adapter
from poseless.data.pix3d import fov_from_focal, iter_items, pix3d_pose_to_ours
from poseless.data.prepare import check_item
from poseless.data.prepared import DatasetError

W, H = 40, 30
VERTS = np.array(
    [[0, 0, 0], [2, 0, 0], [0, 1, 0], [0, 0, 0.5], [2, 1, 0.5]], dtype=float
)  # asymmetric
FACES = np.array([[0, 1, 2], [0, 1, 3], [0, 2, 3], [1, 2, 4]])


def _rot(ax: float, ay: float) -> np.ndarray:
    cx, sx, cy, sy = math.cos(ax), math.sin(ax), math.cos(ay), math.sin(ay)
    Rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    Ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    return Rx @ Ry


def write_obj(path, verts=VERTS, faces=FACES):
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [f"v {x} {y} {z}" for x, y, z in verts] + [
        f"f {a + 1} {b + 1} {c + 1}" for a, b, c in faces
    ]
    path.write_text("\n".join(lines) + "\n")


def entry(name="0001", category="chair", **over):
    e = {
        "img": f"img/{category}/{name}.png",
        "mask": f"mask/{category}/{name}.png",
        "model": f"model/{category}/IKEA_A/model.obj",
        "category": category,
        "img_size": [W, H],
        "bbox": [5, 4, 30, 25],
        "rot_mat": _rot(0.3, 0.8).tolist(),
        "trans_mat": [0.1, -0.05, 3.0],
        "focal_length": 35.0,
        "cam_position": [0.5, 0.5, -2.0],
        "inplane_rotation": 0.0,
        "truncated": False,
        "occluded": False,
        "slightly_occluded": False,
    }
    e.update(over)
    return e


def write_dataset(root, entries, image_size=(W, H), mask_size=(W, H)):
    for e in entries:
        for key, size, mode in (("img", image_size, "RGB"), ("mask", mask_size, "L")):
            p = root / e[key]
            p.parent.mkdir(parents=True, exist_ok=True)
            arr = np.zeros((size[1], size[0]) + ((3,) if mode == "RGB" else ()), np.uint8)
            arr[5:20, 8:25] = 255
            Image.fromarray(arr, mode).save(p)
        if not (root / e["model"]).exists():
            write_obj(root / e["model"])
    (root / "pix3d.json").write_text(json.dumps(entries))


def reference_pixels(verts, rot, trans, focal_mm):
    """Slow reference of the Pix3D Blender demo camera: object T R, camera at the origin
    rotated by pi about y (looks along +z, +y up, +x to the image left), 32 mm sensor."""
    p = verts @ np.asarray(rot).T + np.asarray(trans)
    f = focal_mm / 32.0 * W
    return np.stack([W / 2 - f * p[:, 0] / p[:, 2], H / 2 - f * p[:, 1] / p[:, 2]], axis=1)


def test_item_and_pose_reproduce_the_pix3d_projection(tmp_path):
    e = entry()
    write_dataset(tmp_path, [e])
    (item,) = list(iter_items(Pix3dConfig(root=str(tmp_path)), 0))
    assert item.id == "pix3d_chair_0001" and item.category == "chair" and item.split is None
    assert item.rgb.shape == (H, W, 3) and item.mask.shape == (H, W)
    v, f = item.gt["vertices"], item.gt["faces"]
    assert v.min() >= -0.5 - 1e-6 and v.max() <= 0.5 + 1e-6
    assert np.isclose(np.ptp(v, axis=0).max(), 1.0)
    np.testing.assert_array_equal(f, FACES)
    R, t = item.gt["R"], item.gt["t"]
    assert np.isclose(np.linalg.det(R), 1.0, atol=1e-5)
    cam = v.astype(float) @ R.T.astype(float) + t
    fpx = W / 2 / math.tan(math.radians(float(item.gt["fov_deg"])) / 2)
    ours = np.stack([fpx * cam[:, 0] / cam[:, 2] + W / 2, fpx * cam[:, 1] / cam[:, 2] + H / 2], 1)
    ref = reference_pixels(VERTS, e["rot_mat"], e["trans_mat"], e["focal_length"])
    np.testing.assert_allclose(ours, ref, atol=1e-3)
    # model frame = our frame: the camera at cam_position (-z, above) has azimuth < 180
    assert 0 <= item.azimuth_deg < 360 and item.elevation_deg > 0


def test_pose_conversion_mirrors_x():
    R, t = pix3d_pose_to_ours(np.eye(3), np.array([0.0, 0.0, 2.0]), np.zeros(3), 1.0)
    np.testing.assert_allclose(R, np.diag([-1.0, -1.0, 1.0]))
    np.testing.assert_allclose(t, [0, 0, 2])
    assert fov_from_focal(16.0) == pytest.approx(90.0)


def test_filters_and_split_lists(tmp_path):
    entries = [
        entry("0001"),
        entry("0002", truncated=True),
        entry("0003", occluded="true"),
        entry("0004", slightly_occluded=True),
        entry("0005", category="sofa", model="model/sofa/S/model.obj"),
    ]
    write_dataset(tmp_path, entries)
    ids = [it.id for it in iter_items(Pix3dConfig(root=str(tmp_path), load_models=False), 0)]
    assert ids == ["pix3d_chair_0001", "pix3d_chair_0004"]
    cfg = Pix3dConfig(
        root=str(tmp_path),
        drop_truncated=False,
        drop_slightly_occluded=True,
        categories=("chair", "sofa"),
    )
    assert [it.id for it in iter_items(cfg, 0)] == [
        "pix3d_chair_0001",
        "pix3d_chair_0002",
        "pix3d_sofa_0005",
    ]
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "chair_train.txt").write_text("0001\n")
    (lists / "chair_test.txt").write_text("img/chair/0004.png\n")
    cfg = Pix3dConfig(root=str(tmp_path), split_lists=str(lists))
    assert [(it.id, it.split) for it in iter_items(cfg, 0)] == [
        ("pix3d_chair_0001", "train"),
        ("pix3d_chair_0004", "test"),
    ]
    cfg = Pix3dConfig(root=str(tmp_path), split_lists=str(lists), categories=("sofa",))
    with pytest.raises(FileNotFoundError, match="no split list for category 'sofa'"):
        list(iter_items(cfg, 0))


@pytest.mark.parametrize(
    "over, message",
    [
        ({"bbox": [5, 4, 60, 25]}, "lies outside the 40x30 px image"),
        ({"bbox": [20, 4, 10, 25]}, "empty or inverted"),
        ({"img_size": [64, 64]}, "pix3d.json says 64x64"),
        ({"rot_mat": [[1, 0], [0, 1]]}, r"rot_mat: expected finite \(3, 3\)"),
        ({"rot_mat": (2 * np.eye(3)).tolist()}, "not a rotation matrix"),
        ({"focal_length": 0.0}, "focal_length must be > 0"),
        ({"model": "model/chair/missing/model.obj"}, "CAD model file not found"),
        ({"mask": "mask/chair/none.png"}, "^file not found"),
    ],
)
def test_bad_items_are_rejected(tmp_path, over, message):
    e = entry(**over)
    write_dataset(tmp_path, [entry("0009")])
    (tmp_path / "pix3d.json").write_text(json.dumps([e]))
    if "model" not in over:
        write_obj(tmp_path / e["model"])
    (tmp_path / e["img"]).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(tmp_path / e["img"])
    if "mask" not in over:
        Image.fromarray(np.full((H, W), 255, np.uint8)).save(tmp_path / e["mask"])
    (out,) = list(iter_items(Pix3dConfig(root=str(tmp_path)), 0))
    assert isinstance(out, Rejected), out
    assert re.search(message, out.reason), out.reason


def test_mask_size_mismatch(tmp_path):
    write_dataset(tmp_path, [entry()], mask_size=(W + 2, H))
    (out,) = list(iter_items(Pix3dConfig(root=str(tmp_path)), 0))
    assert isinstance(out, Rejected) and "mask is 42x30 px" in out.reason
    assert out.source.endswith("mask/chair/0001.png")


def test_malformed_dataset(tmp_path):
    with pytest.raises(FileNotFoundError, match="pix3d.json: Pix3D annotation file not found"):
        list(iter_items(Pix3dConfig(root=str(tmp_path)), 0))
    (tmp_path / "pix3d.json").write_text("{not json")
    with pytest.raises(DatasetError, match="not valid JSON"):
        list(iter_items(Pix3dConfig(root=str(tmp_path)), 0))
    e = entry()
    del e["rot_mat"]
    (tmp_path / "pix3d.json").write_text(json.dumps([e]))
    with pytest.raises(DatasetError, match=r"pix3d.json\[0\]: entry lacks keys \['rot_mat'\]"):
        list(iter_items(Pix3dConfig(root=str(tmp_path)), 0))


def test_registered_adapter(tmp_path):
    write_dataset(tmp_path, [entry()])
    cfg = from_dict(PrepareDataConfig, {"adapter": "pix3d", "pix3d": {"root": str(tmp_path)}})
    items = list(create_adapter(cfg, 0))
    assert [it.id for it in items] == ["pix3d_chair_0001"] and check_item(items[0]) is None


def test_config_file_loads():
    params = load_params(Path(__file__).parents[2] / "config" / "pix3d.yaml")
    assert params.prepare_data.adapter == "pix3d"

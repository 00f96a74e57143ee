"""Tests of the ``pascal3d`` adapter on a tiny dataset written in Pascal3D+'s layout."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.io
from PIL import Image

from poseless.config import Pascal3dConfig, PrepareDataConfig, from_dict
from poseless.data.adapters import Rejected, create_adapter
from poseless.data.pascal3d import PASCAL_TO_WORLD, iter_items
from poseless.data.prepare import check_item
from poseless.data.prepared import DatasetError

W, H = 60, 40
CAD_V = np.array([[0, 0, 0], [1.5, 0, 0], [0, 0.6, 0], [0, 0, 0.4], [1.5, 0.6, 0.4]], float)
CAD_F = np.array([[1, 2, 3], [1, 2, 4], [1, 3, 4], [2, 3, 5]])  # 1-based, as in CAD/*.mat
VIEW = {"azimuth": 30.0, "elevation": 20.0, "distance": 5.0, "theta": 10.0, "px": 28.0, "py": 22.0,
        "focal": 1.0, "viewport": 50.0}  # fmt: skip


def make_objects(objs: list[dict]) -> np.ndarray:
    """A 1 x n MATLAB struct array with the fields of the first object."""
    arr = np.zeros((1, len(objs)), dtype=[(k, "O") for k in objs[0]])
    for i, o in enumerate(objs):
        for k, v in o.items():
            arr[0, i][k] = v
    return arr


def obj(**over) -> dict:
    o = {
        "class": "car",
        "bbox": np.array([5.0, 4.0, 50.0, 35.0]),
        "viewpoint": dict(VIEW),
        "cad_index": 1,
        "truncated": 0,
        "occluded": 0,
        "difficult": 0,
    }
    o.update(over)
    return o


def write_pascal(root, objects=None, stem="n02814533_1", masks=(0,), cad=True):
    objects = objects if objects is not None else [obj()]
    img = root / "Images" / "car_imagenet" / f"{stem}.JPEG"
    img.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((H, W, 3), 90, np.uint8)).save(img, format="JPEG")
    ann = root / "Annotations" / "car_imagenet" / f"{stem}.mat"
    ann.parent.mkdir(parents=True, exist_ok=True)
    record = {"filename": f"{stem}.JPEG", "size": {"width": W, "height": H, "depth": 3},
              "objects": make_objects(objects)}  # fmt: skip
    scipy.io.savemat(ann, {"record": record})
    (root / "masks" / "car").mkdir(parents=True, exist_ok=True)
    for k in masks:
        m = root / "masks" / "car" / f"{stem}_{k}.png"
        m.parent.mkdir(parents=True, exist_ok=True)
        arr = np.zeros((H, W), np.uint8)
        arr[6:30, 8:45] = 255
        Image.fromarray(arr).save(m)
    if cad:
        (root / "CAD").mkdir(exist_ok=True)
        cads = np.zeros((1, 2), dtype=[("vertices", "O"), ("faces", "O")])
        for i in range(2):
            cads[0, i]["vertices"] = CAD_V * (1 + i)
            cads[0, i]["faces"] = CAD_F.astype(float)
        scipy.io.savemat(root / "CAD" / "car.mat", {"car": cads})


def cfg(root, **over) -> Pascal3dConfig:
    return Pascal3dConfig(root=str(root), mask_dir=str(root / "masks"), **over)


def toolbox_pixels(X: np.ndarray, vp: dict) -> np.ndarray:
    """Slow reference of the Pascal3D+ toolbox ``project_3d.m``."""
    a, e, d = (math.radians(vp["azimuth"]), math.radians(vp["elevation"]), vp["distance"])
    C = np.array([d * math.cos(e) * math.sin(a), -d * math.cos(e) * math.cos(a), d * math.sin(e)])
    a, e = -a, -(math.pi / 2 - e)
    Rz = np.array([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]])
    Rx = np.array([[1, 0, 0], [0, math.cos(e), -math.sin(e)], [0, math.sin(e), math.cos(e)]])
    R = Rx @ Rz
    M = vp["focal"] * vp["viewport"]
    P = np.diag([M, M, -1.0]) @ np.hstack([R, (-R @ C)[:, None]])
    x = (P @ np.hstack([X, np.ones((len(X), 1))]).T).T
    x = x[:, :2] / x[:, 2:]
    th = math.radians(vp["theta"])
    R2d = np.array([[math.cos(th), -math.sin(th)], [math.sin(th), math.cos(th)]])
    x = (R2d @ x.T).T
    return np.stack([x[:, 0] + vp["px"], -x[:, 1] + vp["py"]], axis=1)


def test_item_pose_matches_the_toolbox_projection(tmp_path):
    write_pascal(tmp_path)
    (item,) = list(iter_items(cfg(tmp_path), 0))
    assert item.id == "p3d_car_n02814533_1_0" and item.category == "car" and item.split is None
    assert item.rgb.shape == (H, W, 3) and item.mask.shape == (H, W)
    assert item.azimuth_deg == pytest.approx(330.0) and item.elevation_deg == pytest.approx(20.0)
    v, R, t = (
        item.gt["vertices"].astype(float),
        item.gt["R"].astype(float),
        item.gt["t"].astype(float),
    )
    assert v.min() >= -0.5 - 1e-6 and v.max() <= 0.5 + 1e-6
    np.testing.assert_array_equal(item.gt["faces"], CAD_F - 1)
    assert np.isclose(np.linalg.det(R), 1.0, atol=1e-5)
    cam = v @ R.T + t
    f = VIEW["focal"] * VIEW["viewport"]
    ours = np.stack(
        [f * cam[:, 0] / cam[:, 2] + VIEW["px"], f * cam[:, 1] / cam[:, 2] + VIEW["py"]], 1
    )
    np.testing.assert_allclose(ours, toolbox_pixels(CAD_V, VIEW), atol=1e-3)
    assert float(item.gt["fov_deg"]) == pytest.approx(
        math.degrees(2 * math.atan(W / 2 / f)), rel=1e-5
    )


def test_frame_change_is_a_proper_rotation_to_y_up():
    assert np.isclose(np.linalg.det(PASCAL_TO_WORLD), 1.0)
    np.testing.assert_array_equal(PASCAL_TO_WORLD @ [0, 0, 1], [0, 1, 0])  # z up -> y up


def test_filters_multiple_objects_and_split_lists(tmp_path):
    objects = [obj(), obj(truncated=1), obj(**{"class": "bus"}), obj(difficult=1), obj(cad_index=2)]
    write_pascal(tmp_path, objects, masks=(0, 1, 3, 4))
    assert [it.id[-1] for it in iter_items(cfg(tmp_path), 0)] == ["0", "4"]
    items = list(iter_items(cfg(tmp_path, drop_truncated=False, drop_difficult=False), 0))
    assert [it.id[-1] for it in items] == ["0", "1", "3", "4"]
    assert not np.allclose(items[0].gt["t"], items[3].gt["t"]), "cad 2 is twice as large"
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "pascal3d_imagenet_car_train.list").write_text("n02814533_1 4\n")
    (lists / "pascal3d_imagenet_car_val.list").write_text("n02814533_1 0\n")
    got = [(it.id[-1], it.split) for it in iter_items(cfg(tmp_path, split_lists=str(lists)), 0)]
    assert got == [("0", "val"), ("4", "train")]
    (lists / "pascal3d_imagenet_car_val.list").write_text("n02814533_1\n")
    with pytest.raises(
        DatasetError, match="car_val.list:1: expected '<image stem> <object index>'"
    ):
        list(iter_items(cfg(tmp_path, split_lists=str(lists)), 0))


def test_coarse_viewpoint_has_no_pose(tmp_path):
    vp = dict(VIEW, distance=0.0)
    write_pascal(tmp_path, [obj(viewpoint=vp)])
    (item,) = list(iter_items(cfg(tmp_path), 0))
    assert math.isnan(item.azimuth_deg) and "R" not in item.gt and "vertices" not in item.gt


@pytest.mark.parametrize(
    "over, masks, message",
    [
        ({"bbox": np.array([5.0, 4.0, 80.0, 35.0])}, (0,), "lies outside the 60x40 px image"),
        ({"bbox": np.array([5.0, 4.0, 50.0])}, (0,), "bbox must have 4 numbers"),
        ({"cad_index": 7}, (0,), "cad_index 7 outside 1..2"),
        ({}, (), "file not found"),
    ],
)
def test_bad_objects_are_rejected(tmp_path, over, masks, message):
    write_pascal(tmp_path, [obj(**over)], masks=masks)
    (out,) = list(iter_items(cfg(tmp_path), 0))
    assert isinstance(out, Rejected) and message in out.reason, out
    assert "n02814533_1" in out.source or "car.mat" in out.source


def test_malformed_files(tmp_path):
    write_pascal(tmp_path)
    ann = tmp_path / "Annotations" / "car_imagenet" / "n02814533_1.mat"
    scipy.io.savemat(ann, {"other": np.zeros(2)})
    (out,) = list(iter_items(cfg(tmp_path), 0))
    assert isinstance(out, Rejected) and "no 'record' variable" in out.reason
    ann.write_bytes(b"garbage")
    (out,) = list(iter_items(cfg(tmp_path), 0))
    assert isinstance(out, Rejected) and "cannot read .mat" in out.reason
    write_pascal(tmp_path, [{"class": "car", "bbox": np.array([1.0, 1, 5, 5])}])
    (out,) = list(iter_items(cfg(tmp_path), 0))
    assert isinstance(out, Rejected) and "lacks fields" in out.reason
    write_pascal(tmp_path, cad=False)
    (tmp_path / "CAD" / "car.mat").unlink()
    (out,) = list(iter_items(cfg(tmp_path), 0))
    assert isinstance(out, Rejected) and "CAD model 1 not found" in out.reason


def test_missing_mask_dir_and_folders(tmp_path):
    write_pascal(tmp_path)
    with pytest.raises(
        FileNotFoundError,
        match=r"pascal3d.mask_dir: .*nope: folder not found \(Pascal3D\+ has no masks",
    ):
        list(iter_items(Pascal3dConfig(root=str(tmp_path), mask_dir=str(tmp_path / "nope")), 0))
    with pytest.raises(
        FileNotFoundError, match="bus_imagenet: Pascal3D\\+ annotation folder not found"
    ):
        list(iter_items(cfg(tmp_path, categories=("bus",)), 0))
    with pytest.raises(ValueError, match="pascal3d.mask_dir: must be set"):
        from_dict(PrepareDataConfig, {"adapter": "pascal3d", "pascal3d": {"root": "/x"}})


def test_registered_adapter(tmp_path):
    write_pascal(tmp_path)
    c = from_dict(
        PrepareDataConfig,
        {
            "adapter": "pascal3d",
            "pascal3d": {"root": str(tmp_path), "mask_dir": str(tmp_path / "masks")},
        },
    )
    items = list(create_adapter(c, 0))
    assert len(items) == 1 and check_item(items[0]) is None

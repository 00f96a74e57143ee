"""Tests of the ``shapenet_nmr`` adapter on tiny npz files written in Kato et al.'s layout."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from poseless.config import PrepareDataConfig, ShapenetNmrConfig, from_dict, load_params
from poseless.data.adapters import Rejected, create_adapter
from poseless.data.prepare import check_item
from poseless.data.prepared import DatasetError
from poseless.data.shapenet_nmr import iter_items, nmr_voxels_to_world, resolve_classes
from poseless.geometry.cameras import kato_extrinsics, project_to_ndc

R32 = 32


def _centres(idx: np.ndarray, res: int = R32) -> np.ndarray:
    return -0.5 + (idx + 0.5) / res


def softras_pixels(points_m: np.ndarray, azimuth_deg: float, elevation_deg: float = 30.0):
    """Slow reference of the SoftRas camera (from its look_at + rasterizer), NMR mesh frame.

    Returns (N, 2) continuous (column, row) coordinates over a unit-size image:
    column grows with camera x = normalize(up x forward), row 0 at camera +y.
    """
    a, e, d = math.radians(azimuth_deg), math.radians(elevation_deg), 2.732
    eye = np.array([d * math.cos(e) * math.sin(a), d * math.sin(e), -d * math.cos(e) * math.cos(a)])
    z = -eye / np.linalg.norm(eye)
    x = np.cross([0.0, 1.0, 0.0], z)
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    p = (points_m - eye) @ np.stack([x, y, z]).T
    tan = math.tan(math.radians(15.0))
    xp, yp = p[:, 0] / (p[:, 2] * tan), p[:, 1] / (p[:, 2] * tan)
    return np.stack([(xp + 1) / 2, (1 - yp) / 2], axis=1)


def our_pixels(points_w: np.ndarray, azimuth_deg: float) -> np.ndarray:
    """Our Kato camera: (N, 2) (column, row) over a unit-size image."""
    R, t = kato_extrinsics(torch.tensor([math.radians(azimuth_deg)], dtype=torch.float64))
    cam = torch.einsum("ij,nj->ni", R[0], torch.from_numpy(points_w)) + t[0]
    ndc, _ = project_to_ndc(cam, math.tan(math.radians(15.0)))
    return ((ndc.numpy() + 1) / 2).astype(np.float64)


def asymmetric_mesh_voxels() -> np.ndarray:
    """(32, 32, 32) occupancy P[i, j, k] along the NMR mesh's (x, y, z): an L with a knob."""
    P = np.zeros((R32,) * 3, bool)
    P[4:28, 6:10, 8:14] = True  # long bar along x
    P[4:8, 10:26, 8:14] = True  # upright at low x
    P[20:24, 10:14, 14:27] = True  # knob towards +z at high x
    return P


def nmr_layout(P: np.ndarray) -> np.ndarray:
    """What the dataset stores for mesh-frame occupancy P (NMR evaluate_iou: V = P^T(0,1)[.., ::-1])."""
    return P.transpose(1, 0, 2)[:, :, ::-1]


def test_voxels_land_where_the_renderer_sees_them():
    P = asymmetric_mesh_voxels()
    V = nmr_layout(P)
    G = nmr_voxels_to_world(V)
    assert G.shape == V.shape and G.dtype == V.dtype and G.sum() == P.sum()
    m_pts = _centres(np.argwhere(P).astype(float))  # NMR mesh frame
    w_pts = _centres(np.argwhere(G).astype(float))  # our world frame
    for view in (0, 1, 5, 13):
        ref = softras_pixels(m_pts, -15.0 * view)  # SoftRas: view k at azimuth -15k
        ours = our_pixels(w_pts, 15.0 * view)  # ours: view k at azimuth +15k
        ref = ref[np.lexsort(ref.T)]
        ours = ours[np.lexsort(ours.T)]
        np.testing.assert_allclose(ours, ref, atol=1e-9, err_msg=f"view {view}")


def test_wrong_transforms_are_detected():
    """The comparison above distinguishes the transform from plausible wrong ones."""
    P = asymmetric_mesh_voxels()
    V = nmr_layout(P)
    m_pts = _centres(np.argwhere(P).astype(float))
    ref = softras_pixels(m_pts, -15.0)
    ref = ref[np.lexsort(ref.T)]
    wrong = [V, V.transpose(1, 0, 2), V.transpose(1, 0, 2)[:, :, ::-1], V[::-1]]
    for W in wrong:
        pts = our_pixels(_centres(np.argwhere(W).astype(float)), 15.0)
        pts = pts[np.lexsort(pts.T)]
        assert not np.allclose(pts, ref, atol=1e-6)


def test_voxel_transform_rejects_non_cubes():
    with pytest.raises(ValueError, match="expected"):
        nmr_voxels_to_world(np.zeros((4, 4, 5), bool))


def write_class(root, class_id="03001627", split="train", n=3, res=16, views=24, **over):
    rng = np.random.default_rng(0)
    images = over.get("images")
    if images is None:
        images = rng.integers(0, 255, size=(n, views, 4, res, res), dtype=np.uint8)
        images[:, :, 3] = 0
        images[:, :, 3, 4:12, 5:11] = 255
    voxels = over.get("voxels")
    if voxels is None:
        voxels = np.zeros((n, R32, R32, R32), bool)
        voxels[:, 3, 5, 7] = True
    np.savez_compressed(root / f"{class_id}_{split}_images.npz", images)
    np.savez_compressed(root / f"{class_id}_{split}_voxels.npz", voxels)
    return images, voxels


def test_one_view_per_instance_seeded(tmp_path):
    images, _ = write_class(tmp_path)
    cfg = ShapenetNmrConfig(root=str(tmp_path), classes=("chair",), splits=("train",))
    items = list(iter_items(cfg, seed=1))
    assert [it.instance for it in items] == [f"03001627_train_{i:05d}" for i in range(3)]
    again = [it.id for it in iter_items(cfg, seed=1)]
    assert again == [it.id for it in items], "same seed must give the same views"
    other = [[it.id for it in iter_items(cfg, seed=s)] for s in range(2, 8)]
    assert any(o != again for o in other), "the seed must change the chosen views"
    for it in items:
        v = int(it.id.rsplit("_v", 1)[1])
        i = int(it.instance.rsplit("_", 1)[1])
        np.testing.assert_array_equal(it.rgb, images[i, v, :3].transpose(1, 2, 0))
        np.testing.assert_array_equal(it.mask, images[i, v, 3])
        assert it.rgb.dtype == np.uint8 and it.rgb.shape == (16, 16, 3)
        assert it.category == "chair" and it.split == "train"
        assert it.azimuth_deg == pytest.approx(15.0 * v)
        assert it.elevation_deg == 30.0 and it.distance == pytest.approx(2.732)
        assert it.gt["voxels"].shape == (32, 32, 32) and it.gt["voxels"].dtype == bool
        assert it.gt["voxels"][31 - 5, 3, 31 - 7], "voxel V[3, 5, 7] -> G[26, 3, 24]"
        assert it.gt["R"].shape == (3, 3) and it.gt["t"].shape == (3,)


def test_all_views_and_subset(tmp_path):
    write_class(tmp_path, n=2)
    cfg = ShapenetNmrConfig(
        root=str(tmp_path), classes=("03001627",), splits=("train",), views="all"
    )
    assert len(list(iter_items(cfg, 0))) == 48
    cfg = ShapenetNmrConfig(
        root=str(tmp_path), classes=("chair",), splits=("train",), view_subset=(0, 6)
    )
    assert {int(it.id[-2:]) for it in iter_items(cfg, 0)} <= {0, 6}


def test_empty_view_is_rejected(tmp_path):
    images, _ = write_class(tmp_path, n=1)
    images[0, :, 3] = 0
    write_class(tmp_path, n=1, images=images)
    out = list(
        iter_items(ShapenetNmrConfig(root=str(tmp_path), classes=("chair",), splits=("train",)), 0)
    )
    assert len(out) == 1 and isinstance(out[0], Rejected)
    assert "empty alpha" in out[0].reason and "03001627_train_images.npz" in out[0].source


@pytest.mark.parametrize(
    "images, voxels, message",
    [
        (np.zeros((2, 24, 4, 8, 8), np.float32), None, "images must be uint8"),
        (np.zeros((2, 12, 4, 8, 8), np.uint8), None, r"shape \(N, 24, 4, S, S\)"),
        (None, np.zeros((3, 32, 32, 32), np.float32), "voxels must be bool"),
        (None, np.zeros((3, 32, 32), bool), r"voxels must have shape"),
        (None, np.zeros((2, 32, 32, 32), bool), "2 voxel grids but the images file has 3"),
    ],
)
def test_malformed_arrays(tmp_path, images, voxels, message):
    write_class(tmp_path, images=images, voxels=voxels)
    cfg = ShapenetNmrConfig(root=str(tmp_path), classes=("chair",), splits=("train",))
    with pytest.raises(DatasetError, match=message) as info:
        list(iter_items(cfg, 0))
    assert "03001627_train_" in str(info.value)


def test_missing_files(tmp_path):
    write_class(tmp_path)
    cfg = ShapenetNmrConfig(root=str(tmp_path), classes=("chair",), splits=("val",))
    with pytest.raises(FileNotFoundError, match="03001627_val_images.npz: file not found"):
        list(iter_items(cfg, 0))
    with pytest.raises(FileNotFoundError, match="folder not found"):
        list(iter_items(ShapenetNmrConfig(root=str(tmp_path / "nope")), 0))
    (tmp_path / "03001627_train_images.npz").unlink()
    np.savez(tmp_path / "03001627_train_images.npz", a=np.zeros(1), b=np.zeros(1))
    cfg = ShapenetNmrConfig(root=str(tmp_path), classes=("chair",), splits=("train",))
    with pytest.raises(DatasetError, match="expected exactly one array"):
        list(iter_items(cfg, 0))


def test_classes_and_config():
    assert resolve_classes(("chair", "02691156", "chair")) == ["03001627", "02691156"]
    with pytest.raises(ValueError, match="unknown class 'dragon'"):
        resolve_classes(("dragon",))
    cfg = from_dict(
        PrepareDataConfig,
        {"adapter": "shapenet_nmr", "shapenet_nmr": {"root": "/x", "views": "all"}},
    )
    assert cfg.shapenet_nmr.views == "all" and len(cfg.shapenet_nmr.classes) == 13
    with pytest.raises(ValueError, match="shapenet_nmr.root: must be set"):
        from_dict(PrepareDataConfig, {"adapter": "shapenet_nmr"})
    with pytest.raises(ValueError, match="view_subset"):
        from_dict(PrepareDataConfig, {"shapenet_nmr": {"view_subset": [24]}})


def test_registered_adapter(tmp_path):
    write_class(tmp_path, n=1)
    cfg = from_dict(
        PrepareDataConfig,
        {
            "adapter": "shapenet_nmr",
            "shapenet_nmr": {"root": str(tmp_path), "classes": ["chair"], "splits": ["train"]},
        },
    )
    items = list(create_adapter(cfg, 0))
    assert len(items) == 1 and check_item(items[0]) is None


def test_config_file_loads():
    params = load_params(Path(__file__).parents[2] / "config" / "shapenet.yaml")
    assert params.prepare_data.adapter == "shapenet_nmr"

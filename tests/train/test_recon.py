"""train_recon's representation-independent part: inputs, pose sources, plumbing, interface."""

import dataclasses
import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from poseless.config import PrepareDataConfig, TrainReconConfig, TrainSubsetSettings
from poseless.data.prepare import write_prepared
from poseless.data.prepared import DatasetError, PreparedDataset
from poseless.data.raw import RawItem
from poseless.errors import PoselessError
from poseless.train.checkpoint import CheckpointError
from poseless.train.recon import (
    BACKENDS,
    Camera,
    ReconData,
    dataset_camera,
    derive_seed,
    finish_metrics,
    get_backend,
    in_azimuth_windows,
    load_recon_data,
    load_reconstructor,
    read_pseudo_poses,
    render_sheet,
    sample_indices,
    train_recon,
)

SIZE = 16


def items(n_train: int = 4, gt: bool = True) -> list[RawItem]:
    g = np.random.default_rng(0)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    out = []
    for k in range(n_train + 2):
        r = 3 + k % 4
        mask = (((yy - 8) ** 2 + (xx - 8) ** 2) <= r * r).astype(np.uint8) * 255
        rgb = g.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
        out.append(
            RawItem(
                id=f"i{k}",
                category="c",
                source=f"s{k}",
                rgb=rgb,
                mask=mask,
                split="train" if k < n_train else "val",
                azimuth_deg=15.0 * k if gt else math.nan,
                elevation_deg=20.0 + k if gt else math.nan,
            )
        )
    return out


def prepared(root, gt=True, camera=True, crop="none") -> PreparedDataset:
    cfg = PrepareDataConfig(crop=crop, image_size=SIZE, contact_sheet_items=0)
    cam = {"fov_deg": 30.0, "distance": 2.732} if camera else None
    write_prepared(items(gt=gt), cfg, root, split_fractions=(1.0, 0.0, 0.0), camera=cam)
    return PreparedDataset(root)


def resolve(name, **common):
    return TrainReconConfig(common=common).resolve(name)


def write_poses(path, ids, az):
    pd.DataFrame({"id": ids, "azimuth_deg": az, "score": 0.5}).to_parquet(path)
    return path


def test_gt_pose_source_reads_manifest_train_split_only(tmp_path):
    ds = prepared(tmp_path / "ds")
    data = load_recon_data(ds, resolve("bl_gt_pose"))
    assert data.ids == ("i0", "i1", "i2", "i3")
    np.testing.assert_array_equal(data.azimuth_deg, [0.0, 15.0, 30.0, 45.0])
    np.testing.assert_array_equal(data.elevation_deg, [20.0, 21.0, 22.0, 23.0])
    assert data.camera == Camera(fov_deg=30.0, distance=2.732)
    assert data.images.dtype == torch.uint8 and data.images.shape == (4, 3, SIZE, SIZE)
    ref = ds.load(list(data.ids))
    images, masks = data.batch(torch.tensor([2, 0]), "cpu")
    assert torch.equal(images, ref.images[[2, 0]]) and torch.equal(masks, ref.masks[[2, 0]])
    idx = torch.tensor([1, 3])
    torch.testing.assert_close(data.azimuth_rad(idx, "cpu"), torch.tensor([15.0, 45.0]).deg2rad())
    torch.testing.assert_close(data.elevation_rad(idx, "cpu"), torch.tensor([21.0, 23.0]).deg2rad())


def test_gt_pose_source_without_gt_poses_fails_clearly(tmp_path):
    ds = prepared(tmp_path / "ds", gt=False)
    with pytest.raises(DatasetError, match=r"manifest.parquet: pose_source 'gt'.*no GT poses"):
        load_recon_data(ds, resolve("bl_gt_pose"))
    data = load_recon_data(ds, resolve("bl_unsup", elevation_deg=25.0))
    assert data.azimuth_deg is None and data.azimuth_rad(torch.tensor([0]), "cpu") is None
    np.testing.assert_array_equal(data.elevation_deg, [25.0] * 4)


def test_pseudo_pose_source_reads_table_by_id(tmp_path):
    ds = prepared(tmp_path / "ds", gt=False)
    ids = ["i3", "i0", "i5", "i2", "i1", "i4"]  # any order, extra ids and columns allowed
    poses = write_poses(tmp_path / "p.parquet", ids, [3.0, 0.0, 5.0, 2.0, 1.0, 4.0])
    data = load_recon_data(ds, resolve("ura"), poses)
    np.testing.assert_array_equal(data.azimuth_deg, [0.0, 1.0, 2.0, 3.0])
    np.testing.assert_array_equal(data.elevation_deg, [30.0] * 4)
    with pytest.raises(PoselessError, match="--poses: the experiment uses pseudo poses"):
        load_recon_data(ds, resolve("ura"), None)


def test_read_pseudo_poses_errors(tmp_path):
    ids = ["a", "b"]
    with pytest.raises(FileNotFoundError, match="run predict_poses first"):
        read_pseudo_poses(tmp_path / "missing.parquet", ids)
    p = tmp_path / "p.parquet"
    pd.DataFrame({"id": ["a"], "azimuth_deg": [1.0]}).to_parquet(p)
    with pytest.raises(DatasetError, match=r"no pseudo pose for 1 training item.*'b'"):
        read_pseudo_poses(p, ids)
    pd.DataFrame({"id": ["a", "b"], "azimuth": [1.0, 2.0]}).to_parquet(p)
    with pytest.raises(DatasetError, match=r"columns missing: \['azimuth_deg'\]"):
        read_pseudo_poses(p, ids)
    pd.DataFrame({"id": ["a", "a"], "azimuth_deg": [1.0, 2.0]}).to_parquet(p)
    with pytest.raises(DatasetError, match="duplicate id 'a'"):
        read_pseudo_poses(p, ids)
    pd.DataFrame({"id": ["a", "b"], "azimuth_deg": [1.0, np.nan]}).to_parquet(p)
    with pytest.raises(DatasetError, match="not finite for id 'b'"):
        read_pseudo_poses(p, ids)
    (tmp_path / "bad.parquet").write_text("not parquet")
    with pytest.raises(DatasetError, match="cannot read as parquet"):
        read_pseudo_poses(tmp_path / "bad.parquet", ids)


def test_camera_is_required_for_the_mesh_renderer(tmp_path):
    ds = prepared(tmp_path / "ds", camera=False)
    with pytest.raises(DatasetError, match=r"meta.json: no camera.*crop: none"):
        dataset_camera(ds)
    with pytest.raises(DatasetError, match="no camera"):
        load_recon_data(ds, resolve("bl_unsup"))
    assert load_recon_data(ds, resolve("bl_unsup"), needs_camera=False).camera is None


def test_derive_seed_and_sampling_are_deterministic():
    assert derive_seed(0, 0) == derive_seed(0, 0)
    assert len({derive_seed(0, 0), derive_seed(0, 1), derive_seed(1, 0)}) == 3
    assert 0 <= derive_seed(3, 4) < 2**32
    with pytest.raises(ValueError, match="seeds must be >= 0"):
        derive_seed(-1, 0)
    a = sample_indices(10, 5, torch.Generator().manual_seed(1))
    b = sample_indices(10, 5, torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and a.shape == (5,) and int(a.max()) < 10


def test_render_sheet_layout():
    images = torch.zeros(2, 3, 4, 5)
    images[1, 0] = 1.0
    masks = torch.ones(2, 1, 4, 5)
    renders = torch.full((2, 1, 4, 5), 0.5)
    sheet = render_sheet(images, masks, renders)
    assert sheet.shape == (2 * 6 + 2, 3 * 7 + 2, 3) and sheet.dtype == np.uint8
    assert (sheet[8:12, 2:7] == [255, 0, 0]).all()  # row 1, input column: red
    assert (sheet[2:6, 9:14] == 255).all()  # mask column
    assert (sheet[2:6, 16:21] == 128).all()  # render column (0.5)
    with pytest.raises(ValueError, match="render_sheet"):
        render_sheet(images, masks[:1], renders)


def test_finish_metrics_drops_wall_times(tmp_path):
    (tmp_path / "r").mkdir()
    lines = [{"step": 1, "wall_s": 0.3, "loss/a": 1.0}, {"step": 2, "wall_s": 0.7, "loss/a": 0.5}]
    (tmp_path / "r" / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    (tmp_path / "o").mkdir()
    path = finish_metrics(tmp_path / "r", tmp_path / "o")
    recs = [json.loads(x) for x in path.read_text().splitlines()]
    assert recs == [{"step": 1, "loss/a": 1.0}, {"step": 2, "loss/a": 0.5}]


def test_resume_dir_must_lie_outside_the_output(tmp_path):
    data = ReconData(
        ids=("a",),
        images=torch.zeros(1, 3, SIZE, SIZE, dtype=torch.uint8),
        masks=torch.zeros(1, 1, SIZE, SIZE, dtype=torch.uint8),
        azimuth_deg=None,
        elevation_deg=np.zeros(1),
        camera=None,
    )
    with pytest.raises(ValueError, match="must lie outside the output folder"):
        train_recon(data, resolve("bl_unsup"), 0, tmp_path / "o", tmp_path / "o" / "resume", "cpu")


def test_backends_and_loader_errors(tmp_path):
    assert "mesh" in BACKENDS and get_backend("mesh").needs_camera
    with pytest.raises(ValueError, match=r"representation 'voxels' has no trainer here"):
        get_backend("voxels")
    with pytest.raises(CheckpointError, match="model.json: not found"):
        load_reconstructor(tmp_path)
    (tmp_path / "model.json").write_text(json.dumps({"config": {"model": {}}}))
    with pytest.raises(CheckpointError, match="no readable config with a representation"):
        load_reconstructor(tmp_path)


def test_in_azimuth_windows_wraps_and_matches_a_slow_reference():
    subset = TrainSubsetSettings(azimuths_deg=(0.0, 60.0, 350.0), width_deg=15.0)
    az = np.random.default_rng(1).uniform(-30.0, 400.0, 500)
    az = np.concatenate([az, [7.5, 7.6, 352.5, 342.5, 342.4, 67.5, 52.5, 52.4]])
    expected = [
        any(min(abs(a - c) % 360.0, 360.0 - abs(a - c) % 360.0) <= 7.5 for c in (0, 60, 350))
        for a in az
    ]
    np.testing.assert_array_equal(in_azimuth_windows(az, subset), expected)
    assert in_azimuth_windows(np.array([1.0, 200.0]), TrainSubsetSettings()).all()


def test_train_subset_keeps_the_windows_of_the_train_split_only(tmp_path):
    # train azimuths 0, 15, 30, 45; the val items (60, 75) are never trained on
    ds = prepared(tmp_path / "ds")
    settings = resolve(
        "bl_unsup", train_subset={"azimuths_deg": [15.0, 45.0, 75.0], "width_deg": 10.0}
    )
    data = load_recon_data(ds, settings)
    assert data.ids == ("i1", "i3")
    assert data.images.shape[0] == 2 and data.masks.shape[0] == 2
    settings = resolve("bl_unsup", train_subset={"azimuths_deg": [75.0], "width_deg": 10.0})
    with pytest.raises(DatasetError, match=r"manifest.parquet: no train item.*75"):
        load_recon_data(ds, settings)
    nogt = prepared(tmp_path / "nogt", gt=False)
    settings = resolve("bl_unsup", train_subset={"azimuths_deg": [15.0]})
    with pytest.raises(DatasetError, match=r"manifest.parquet: train_subset.*4 train item"):
        load_recon_data(nogt, settings)


def test_sparse_azimuth_experiment_is_ura_on_uras_third_subset():
    sparse, ura = resolve("ura_sparse_azimuth"), resolve("ura")
    assert sparse.train_subset.azimuths_deg == (0.0, 60.0, 75.0, 90.0, 180.0, 270.0)
    assert sparse.train_subset.width_deg == 15.0
    assert dataclasses.replace(sparse, train_subset=ura.train_subset) == ura
    with pytest.raises(ValueError, match="width_deg"):
        resolve("ura", train_subset={"azimuths_deg": [0.0], "width_deg": 0.0})

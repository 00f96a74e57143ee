"""External predictions: mesh folders (.obj/.ply/.glb), poses.csv, missing and unreadable meshes."""

import math

import numpy as np
import pandas as pd
import pytest
import torch
import trimesh

from poseless.errors import PoselessError
from poseless.evaluate.external import (
    load_external_predictions,
    load_mesh_file,
    read_poses_csv,
    scan_mesh_folder,
)
from poseless.geometry.cameras import kato_extrinsics


def mesh():
    m = trimesh.creation.box((0.5, 0.3, 0.2))
    return np.asarray(m.vertices), np.asarray(m.faces)


@pytest.mark.parametrize("ext", [".obj", ".ply", ".glb"])
def test_load_mesh_file_reads_each_format(tmp_path, ext):
    v, f = mesh()
    trimesh.Trimesh(v, f, process=False).export(tmp_path / f"m{ext}")
    lv, lf = load_mesh_file(tmp_path / f"m{ext}")
    assert lv.dtype == np.float32 and lf.dtype == np.int64
    np.testing.assert_allclose(lv[lf], v[f], atol=1e-6)  # same triangles


def test_load_mesh_file_errors_name_the_file(tmp_path):
    (tmp_path / "bad.obj").write_text("this is not an obj\n")
    with pytest.raises(ValueError, match="bad.obj"):
        load_mesh_file(tmp_path / "bad.obj")
    trimesh.PointCloud(np.random.default_rng(0).random((5, 3))).export(tmp_path / "pts.ply")
    with pytest.raises(ValueError, match="pts.ply"):
        load_mesh_file(tmp_path / "pts.ply")


def test_scan_folder_rejects_two_meshes_for_one_id(tmp_path):
    v, f = mesh()
    for ext in (".obj", ".ply"):
        trimesh.Trimesh(v, f, process=False).export(tmp_path / f"a{ext}")
    (tmp_path / "notes.txt").write_text("ignored")
    with pytest.raises(PoselessError, match="two meshes for item 'a'"):
        scan_mesh_folder(tmp_path)
    with pytest.raises(FileNotFoundError, match="--meshes"):
        scan_mesh_folder(tmp_path / "nowhere")


def test_poses_csv_rotation_or_azimuth_give_the_same_pose(tmp_path):
    az = np.array([10.0, 200.0])
    R, _ = kato_extrinsics(torch.tensor(np.radians(az)), torch.tensor(np.radians([30.0, 20.0])))
    R = R.numpy()
    cols = {f"r{i}{j}": R[:, i, j] for i in range(3) for j in range(3)}
    pd.DataFrame({"id": ["a", "b"], **cols}).to_csv(tmp_path / "r.csv", index=False)
    pd.DataFrame({"id": ["a", "b"], "azimuth_deg": az, "elevation_deg": [30.0, 20.0]}).to_csv(
        tmp_path / "az.csv", index=False
    )
    by_r, by_az = read_poses_csv(tmp_path / "r.csv"), read_poses_csv(tmp_path / "az.csv")
    for k in ("a", "b"):
        np.testing.assert_allclose(by_r[k][0], by_az[k][0], atol=1e-9)
        assert by_r[k][1] == pytest.approx(by_az[k][1])
    cols["r00"] = np.array([2.0, 1.0])
    pd.DataFrame({"id": ["a", "b"], **cols}).to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(PoselessError, match="id 'a'.*not a rotation"):
        read_poses_csv(tmp_path / "bad.csv")
    pd.DataFrame({"id": ["a"], "x": [1]}).to_csv(tmp_path / "none.csv", index=False)
    with pytest.raises(PoselessError, match="azimuth_deg"):
        read_poses_csv(tmp_path / "none.csv")


def test_missing_and_unreadable_meshes_become_reported_empty_predictions(tmp_path):
    v, f = mesh()
    trimesh.Trimesh(v, f, process=False).export(tmp_path / "good.glb")
    (tmp_path / "broken.ply").write_bytes(b"ply\ngarbage")
    pd.DataFrame({"id": ["good"], "azimuth_deg": [33.0]}).to_csv(
        tmp_path / "poses.csv", index=False
    )
    preds = load_external_predictions(tmp_path, ["good", "broken", "missing"])
    assert [p.id for p in preds] == ["good", "broken", "missing"]
    good, broken, miss = preds
    assert good.error == "" and len(good.faces) == 12 and good.azimuth_deg == 33.0
    assert good.R is not None and good.R.shape == (3, 3)
    assert "broken.ply" in broken.error and len(broken.faces) == 0 and broken.R is None
    assert miss.error.startswith("missing mesh") and math.isnan(miss.azimuth_deg)

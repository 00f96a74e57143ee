"""Stage evaluate end to end on a tiny synthetic dataset, with fake reconstructors and mesh folders."""

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import trimesh
import yaml

import poseless.train.recon as recon_module
from poseless.data.prepared import PreparedDataset
from poseless.evaluate.align import rotation_y
from poseless.train.recon import ReconPrediction

ROOT = Path(__file__).resolve().parents[2]


def _load(name):
    spec = importlib.util.spec_from_file_location(f"{name}_stage", ROOT / "stages" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


evaluate_stage = _load("evaluate")
prepare_stage = _load("prepare_data")

EVALUATE = {
    "protocols": ["azimuth_search", "global", "view_centric", "icp"],
    "n_points": 400,
    "search_points": 200,
    "azimuth_step_deg": 30.0,
    "icp_iterations": 10,
    "batch_size": 3,
    "sample_meshes": 2,
}


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """4 chairs + 4 airplanes (2 test, 2 val, 4 train), 32 px, exact GT meshes and poses."""
    root = tmp_path_factory.mktemp("eval")
    params = root / "prep.yaml"
    params.write_text(
        yaml.safe_dump(
            {
                "prepare_data": {
                    "crop": "none",
                    "image_size": 32,
                    "contact_sheet_items": 1,
                    "synthetic": {
                        "categories": ["chair", "airplane"],
                        "instances_per_category": 4,
                        "render_size": 32,
                        "voxel_resolution": 8,
                        "n_surface_points": 50,
                        "workers": 1,
                        "split_fractions": [0.5, 0.25, 0.25],
                    },
                }
            }
        )
    )
    prepare_stage.main(["--params", str(params), "--out", str(root / "prepared")])
    return root / "prepared"


class FakeReconstructor:
    """Returns each input's GT mesh (rotated about y by ``rotate_deg``) and, optionally, its GT pose.

    Inputs are recognised by their exact pixels, so the fake sees only what a real model sees.
    """

    representation = "fake"

    def __init__(self, dataset: PreparedDataset, rotate_deg: float = 0.0, with_pose: bool = True):
        self.dataset, self.with_pose = dataset, with_pose
        self.A = rotation_y(math.radians(rotate_deg))
        batch = dataset.load(dataset.ids())
        self.by_pixels = {self._key(img): i for img, i in zip(batch.images, batch.ids)}

    @staticmethod
    def _key(image):
        return (image * 255).round().to(dtype=__import__("torch").uint8).numpy().tobytes()

    def predict(self, images, masks):
        ids = [self.by_pixels[self._key(im)] for im in images]
        gts = [self.dataset.load_gt(i, ("vertices", "faces", "R")) for i in ids]
        meshes = [
            ((g["vertices"] @ self.A.T).astype(np.float32), g["faces"].astype(np.int64))
            for g in gts
        ]
        if not self.with_pose:
            return ReconPrediction(meshes, None, None)
        az = self.dataset.manifest.set_index("id").loc[ids, "azimuth_deg"].to_numpy(np.float32)
        return ReconPrediction(meshes, az, np.stack([g["R"] for g in gts]))


def run_stage(tmp_path, prepared, source_args, evaluate=EVALUATE):
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"seed": 0, "evaluate": evaluate}))
    out, metrics = tmp_path / "eval", tmp_path / "metrics.json"
    evaluate_stage.main(
        ["--params", str(params), "--dataset", str(prepared), *source_args]
        + ["--out", str(out), "--metrics", str(metrics), "--device", "cpu"]
    )
    return out, json.loads(metrics.read_text())


def fake_recon_dir(tmp_path, monkeypatch, fake):
    recon = tmp_path / "recon"
    recon.mkdir()
    (recon / "model.json").write_text("{}")
    monkeypatch.setattr(recon_module, "load_reconstructor", lambda path, device: fake)
    return ["--recon", str(recon)]


def test_perfect_prediction_scores_perfectly_under_every_protocol(tmp_path, prepared, monkeypatch):
    ds = PreparedDataset(prepared)
    args = fake_recon_dir(tmp_path, monkeypatch, FakeReconstructor(ds))
    out, metrics = run_stage(tmp_path, prepared, args)
    assert {p.name for p in out.iterdir()} >= {
        "per_item.csv",
        "summary.json",
        "alignments.json",
        "samples.json",
        "meshes",
        "config.yaml",
    }
    for proto in ("azimuth_search", "global", "view_centric", "icp"):
        assert metrics[f"overall/cd@{proto}"] < 1e-9, proto
        for tau in ("0.01", "0.05", "0.1"):
            assert metrics[f"overall/fscore@{tau}@{proto}"] == 1.0, (proto, tau)
        assert metrics[f"overall/mask_iou@{proto}"] >= 0.99, proto
        if proto != "view_centric":
            assert metrics[f"overall/iou32@{proto}"] >= (0.99 if proto == "icp" else 1.0), proto
    assert metrics["overall/pose_median_deg@global"] < 1e-3
    assert metrics["overall/pose_acc@15@global"] == 1.0
    assert metrics["overall/n_items"] == 2 and metrics["overall/n_empty"] == 0
    assert {"chair/n_items", "airplane/n_items"} <= set(metrics)
    table = pd.read_csv(out / "per_item.csv")
    assert list(table["id"]) == ds.ids("test")
    assert (table["iou32@azimuth_search"] == 1.0).all()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["skipped"] == {}
    assert summary["global_alignments"]["chair"]["azimuth_deg"] == 0.0
    samples = json.loads((out / "samples.json").read_text())["samples"]
    assert [s["id"] for s in samples] == ds.ids("test")[:2]
    assert samples[0]["input_view"]["source"] == "predicted pose"
    mesh = trimesh.load(out / samples[0]["mesh"], process=False)
    gt = ds.load_gt(samples[0]["id"], ("vertices",))["vertices"]
    np.testing.assert_allclose(mesh.vertices, gt, atol=1e-5)


def test_rotated_prediction_is_fixed_by_azimuth_search_and_global(tmp_path, prepared, monkeypatch):
    ds = PreparedDataset(prepared)
    fake = FakeReconstructor(ds, rotate_deg=60.0, with_pose=False)
    args = fake_recon_dir(tmp_path, monkeypatch, fake)
    evaluate = {**EVALUATE, "protocols": ["azimuth_search", "global", "view_centric"]}
    out, metrics = run_stage(tmp_path, prepared, args, evaluate)
    assert metrics["overall/iou32@azimuth_search"] == 1.0
    assert metrics["overall/cd@azimuth_search"] < 1e-6  # float32 rotation of the vertices
    assert metrics["overall/mask_iou@azimuth_search"] >= 0.99
    # the model's canonical frame is the GT's turned by 60 deg: global finds 300 deg on val
    assert metrics["overall/iou32@global"] == 1.0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["global_alignments"]["airplane"]["azimuth_deg"] == pytest.approx(300.0)
    assert "no predicted pose" in summary["skipped"]["view_centric"]
    assert summary["skipped"]["pose"] == "the method predicts no pose"
    assert not any(k.endswith("@view_centric") for k in metrics)
    samples = json.loads((out / "samples.json").read_text())["samples"]
    assert samples[0]["input_view"]["source"] == "GT pose, aligned by azimuth_search"


def _write_mesh(path: Path, vertices, faces):
    trimesh.Trimesh(vertices, faces, process=False).export(path)


def test_external_mesh_folder_with_obj_ply_glb_missing_and_broken(tmp_path, prepared):
    ds = PreparedDataset(prepared)
    folder = tmp_path / "method"
    folder.mkdir()
    test_ids, val_ids = ds.ids("test"), ds.ids("val")
    for item_id, ext in zip(val_ids + test_ids[:1], [".obj", ".ply", ".glb"]):
        g = ds.load_gt(item_id, ("vertices", "faces"))
        _write_mesh(folder / f"{item_id}{ext}", g["vertices"], g["faces"])
    (folder / f"{test_ids[1]}.ply").write_bytes(b"ply\nthis is not a mesh\n")
    out, metrics = run_stage(tmp_path, prepared, ["--meshes", str(folder)])
    table = pd.read_csv(out / "per_item.csv").set_index("id")
    good, bad = test_ids
    assert table.loc[good, "iou32@azimuth_search"] == 1.0 and not table.loc[good, "empty"]
    assert table.loc[bad, "empty"] and "cannot read mesh" in table.loc[bad, "error"]
    assert table.loc[bad, "iou32@azimuth_search"] == 0.0
    assert metrics["overall/n_empty"] == 1 and metrics["overall/n_errors"] == 1
    assert metrics["overall/cd@azimuth_search"] < 1e-9  # mean over non-empty predictions
    summary = json.loads((out / "summary.json").read_text())
    assert "no predicted pose" in summary["skipped"]["view_centric"]
    assert summary["source"] == {"meshes": str(folder)}


def test_external_folder_with_poses_csv_enables_view_centric(tmp_path, prepared):
    ds = PreparedDataset(prepared)
    folder = tmp_path / "method"
    folder.mkdir()
    ids = ds.ids("test")
    for item_id in ids:
        g = ds.load_gt(item_id, ("vertices", "faces"))
        _write_mesh(folder / f"{item_id}.glb", g["vertices"], g["faces"])
    az = ds.manifest.set_index("id").loc[ids, "azimuth_deg"]
    pd.DataFrame({"id": ids, "azimuth_deg": az.to_numpy(), "elevation_deg": 30.0}).to_csv(
        folder / "poses.csv", index=False
    )
    evaluate = {**EVALUATE, "protocols": ["view_centric"]}
    _, metrics = run_stage(tmp_path, prepared, ["--meshes", str(folder)], evaluate)
    assert metrics["overall/cd@view_centric"] < 1e-5
    assert metrics["overall/mask_iou@view_centric"] >= 0.99
    assert metrics["overall/pose_median_deg@global"] < 1e-3


def test_missing_recon_folder_is_a_clear_error(tmp_path, prepared):
    with pytest.raises(FileNotFoundError, match=r"--recon .*nowhere.*run train_recon first"):
        run_stage(tmp_path, prepared, ["--recon", str(tmp_path / "nowhere")])
    assert not (tmp_path / "eval").exists()


def test_real_reconstructor_from_train_recon(tmp_path, prepared):
    """The real load_reconstructor on a freshly built (0-iteration) B/Lu model with a pose head."""
    train_stage = _load("train_recon")
    params = tmp_path / "params.yaml"
    common = {"iterations": 0, "batch_size": 2, "render_items": 0}
    common["mesh"] = {"template_level": 1, "encoder_dim": 16}
    params.write_text(
        yaml.safe_dump({"seed": 0, "train_recon": {"run": ["bl_unsup"], "common": common}})
    )
    recon = tmp_path / "recon" / "bl_unsup" / "seed0"
    train_stage.main(
        ["--params", str(params), "--experiment", "bl_unsup", "--dataset", str(prepared)]
        + ["--out", str(recon), "--device", "cpu"]
    )
    evaluate = {**EVALUATE, "protocols": ["azimuth_search", "view_centric"]}
    out, metrics = run_stage(tmp_path, prepared, ["--recon", str(recon)], evaluate)
    assert metrics["overall/n_items"] == 2 and metrics["overall/n_empty"] == 0
    for key in ("iou32@azimuth_search", "mask_iou@view_centric", "fscore@0.1@view_centric"):
        assert 0.0 <= metrics[f"overall/{key}"] <= 1.0, key
    assert metrics["overall/cd@view_centric"] > 0
    summary = json.loads((out / "summary.json").read_text())
    assert (
        summary["source"]["representation"] == "mesh" and "view_centric" not in summary["skipped"]
    )
    samples = json.loads((out / "samples.json").read_text())["samples"]
    assert samples[0]["input_view"]["source"] == "predicted pose"
    assert len(trimesh.load(out / samples[0]["mesh"], process=False).faces) == 80

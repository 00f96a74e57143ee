"""Stage train_recon with the SDF experiments: --knn / --normals / --poses, outputs, determinism."""

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from poseless.cli import run_stage
from poseless.config import PrepareDataConfig
from poseless.data.prepare import write_prepared
from poseless.data.raw import RawItem
from poseless.train.recon import load_reconstructor

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "stages" / "train_recon.py"
SIZE = 32
TINY = {
    "iterations": 1,
    "batch_size": 2,
    "log_every": 1,
    "checkpoint_every": 1,
    "render_items": 1,
    "sdf": {
        "encoder": "resnet18",
        "input_size": 0,
        "rays_per_image": 16,
        "n_samples": 6,
        "field_width": 16,
        "sphere_iterations": 1,
        "sphere_points": 32,
        "eikonal_points": 8,
        "d2_image_size": 16,
        "d2_samples": 4,
        "grid_resolution": 10,
    },
}


def _load_stage():
    spec = importlib.util.spec_from_file_location("train_recon_sdf_stage", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


stage = _load_stage()


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """Prepared discs (no GT pose), pose table, kNN folder, normals folder and params."""
    root = tmp_path_factory.mktemp("sdfstage")
    yy, xx = np.mgrid[:SIZE, :SIZE]
    items, ids = [], [f"d{k}" for k in range(5)]
    for k, item in enumerate(ids):
        mask = (((yy - 16) ** 2 + (xx - 16) ** 2) <= (5 + k) ** 2).astype(np.uint8) * 255
        rgb = np.full((SIZE, SIZE, 3), 50 * k, np.uint8)
        items.append(RawItem(item, "disc", f"s{k}", rgb, mask, "train" if k < 4 else "test"))
    cfg = PrepareDataConfig(crop="none", image_size=SIZE, contact_sheet_items=0)
    camera = {"fov_deg": 30.0, "distance": 2.732}
    write_prepared(items, cfg, root / "prepared", split_fractions=(1.0, 0.0, 0.0), camera=camera)
    pd.DataFrame({"id": ids, "azimuth_deg": [40.0 * k for k in range(5)]}).to_parquet(
        root / "poses.parquet"
    )
    (root / "knn").mkdir()
    pd.DataFrame(
        {
            "id": ids,
            "neighbours": [[ids[(i + 1) % 5], ids[(i + 2) % 5]] for i in range(5)],
            "similarities": [[0.9, 0.8]] * 5,
        }
    ).to_parquet(root / "knn" / "neighbours.parquet")
    (root / "normals").mkdir()
    normals = np.zeros((5, 3, SIZE, SIZE), np.float16)
    normals[:, 2] = -1.0
    np.save(root / "normals" / "normals.npy", normals)
    (root / "normals" / "ids.txt").write_text("\n".join(ids) + "\n")
    params = root / "params.yaml"
    params.write_text(yaml.safe_dump({"seed": 3, "train_recon": {"common": TINY}}))
    return root


def args(inputs, out, experiment, *extra):
    return [
        "--params",
        str(inputs / "params.yaml"),
        "--experiment",
        experiment,
        "--dataset",
        str(inputs / "prepared"),
        "--out",
        str(out),
        "--resume-dir",
        str(out.parent / f"resume_{experiment}"),
        "--device",
        "cpu",
        *extra,
    ]


def all_inputs(inputs):
    return [
        "--poses",
        str(inputs / "poses.parquet"),
        "--knn",
        str(inputs / "knn"),
        "--normals",
        str(inputs / "normals"),
    ]


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_poseless_stage_writes_a_complete_deterministic_folder(inputs, tmp_path):
    a, b = tmp_path / "a" / "seed0", tmp_path / "b" / "seed0"
    stage.main(args(inputs, a, "poseless", *all_inputs(inputs)))
    assert {p.name for p in a.iterdir()} == {
        "model.safetensors",
        "model.json",
        "metrics.jsonl",
        "curves.csv",
        "renders.png",
        "config.yaml",
    }
    assert not (a.parent / "resume_poseless").exists(), "resume folder must go once done"
    config = yaml.safe_load((a / "config.yaml").read_text())
    settings = config["config"]["settings"]
    assert settings["representation"] == "sdf" and settings["view_discriminator"]["enabled"]
    assert config["extra"]["steps"] == 2 and config["extra"]["n_train"] == 4
    rec = load_reconstructor(a)
    pred = rec.predict(torch.rand(1, 3, SIZE, SIZE), torch.ones(1, 1, SIZE, SIZE))
    assert len(pred.meshes) == 1 and pred.azimuth_deg.shape == (1,)
    stage.main(args(inputs, b, "poseless", *all_inputs(inputs)))
    assert tree_bytes(a) == tree_bytes(b)


def test_experiment_without_ssc_or_normals_needs_neither(inputs, tmp_path):
    out = tmp_path / "x" / "seed0"
    stage.main(args(inputs, out, "shapeclipper_no_ssc", "--normals", str(inputs / "normals")))
    assert (out / "model.safetensors").is_file()


@pytest.mark.parametrize(
    ("experiment", "drop", "message"),
    [
        ("shapeclipper", "--knn", "--knn: the experiment uses semantic shape consistency"),
        ("shapeclipper", "--normals", "--normals: the experiment uses normal losses"),
        ("poseless", "--poses", "--poses: the experiment uses pseudo poses"),
    ],
)
def test_missing_inputs_exit_2_with_one_line(
    inputs, tmp_path, monkeypatch, capsys, experiment, drop, message
):
    given = all_inputs(inputs)
    at = given.index(drop)
    extra = given[:at] + given[at + 2 :]
    out = tmp_path / "out"
    monkeypatch.setattr(sys, "argv", ["train_recon.py", *args(inputs, out, experiment, *extra)])
    with pytest.raises(SystemExit) as exc:
        run_stage(stage.main)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err
    assert not out.exists()

"""Stage train_recon end to end: outputs, provenance, resume folder, errors, determinism."""

import importlib.util
import math
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
    "iterations": 2,
    "batch_size": 3,
    "log_every": 1,
    "checkpoint_every": 2,
    "render_items": 2,
    "mesh": {"template_level": 1, "encoder_dim": 8},
}


def _load_stage():
    spec = importlib.util.spec_from_file_location("train_recon_stage", SCRIPT)
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


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """A tiny prepared dataset (discs, GT poses unknown), a pose table and a params file."""
    root = tmp_path_factory.mktemp("stage")
    yy, xx = np.mgrid[:SIZE, :SIZE]
    items = []
    for k in range(6):
        r = 5 + k
        mask = (((yy - 16) ** 2 + (xx - 16) ** 2) <= r * r).astype(np.uint8) * 255
        rgb = np.full((SIZE, SIZE, 3), 40 * k, np.uint8)
        split = "train" if k < 5 else "test"
        items.append(RawItem(f"d{k}", "disc", f"s{k}", rgb, mask, split, azimuth_deg=math.nan))
    cfg = PrepareDataConfig(crop="none", image_size=SIZE, contact_sheet_items=0)
    camera = {"fov_deg": 30.0, "distance": 2.732}
    write_prepared(items, cfg, root / "prepared", split_fractions=(1.0, 0.0, 0.0), camera=camera)
    ids = [f"d{k}" for k in range(6)]
    pd.DataFrame({"id": ids, "azimuth_deg": [30.0 * k for k in range(6)]}).to_parquet(
        root / "poses.parquet"
    )
    params = root / "params.yaml"
    params.write_text(yaml.safe_dump({"seed": 3, "train_recon": {"common": TINY}}))
    return root


def args(inputs, out, experiment, *extra):
    return [
        "--params",
        str(inputs / "params.yaml"),
        "--experiment",
        experiment,
        "--seed",
        "1",
        "--dataset",
        str(inputs / "prepared"),
        "--out",
        str(out),
        "--resume-dir",
        str(out.parent / "resume" / experiment),
        "--device",
        "cpu",
        *extra,
    ]


def test_ura_stage_writes_a_complete_folder(inputs, tmp_path):
    out = tmp_path / "recon" / "ura" / "seed1"
    stage.main(args(inputs, out, "ura", "--poses", str(inputs / "poses.parquet")))
    assert {p.name for p in out.iterdir()} == {
        "model.safetensors",
        "model.json",
        "metrics.jsonl",
        "curves.csv",
        "renders.png",
        "config.yaml",
    }
    assert sorted(p.name for p in out.parent.iterdir()) == ["resume", "seed1"]
    assert not (out.parent / "resume" / "ura").exists(), "resume folder must go once done"
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["stage"] == "train_recon"
    assert config["config"]["experiment"] == "ura" and config["config"]["seed"] == 3
    settings = config["config"]["settings"]
    assert settings["pose_source"] == "pseudo" and settings["view_discriminator"]["enabled"]
    assert settings["iterations"] == 2 and settings["mesh"]["template_level"] == 1
    assert config["extra"]["encoder_weights"]["weights"] == "random-init"
    assert config["extra"]["n_train"] == 5 and config["extra"]["steps"] == 2
    rec = load_reconstructor(out)
    pred = rec.predict(torch.rand(2, 3, SIZE, SIZE), torch.ones(2, 1, SIZE, SIZE))
    assert all(np.abs(v).max() <= 0.5 for v, _ in pred.meshes) and pred.azimuth_deg is None


def test_stage_is_deterministic(inputs, tmp_path):
    a, b = tmp_path / "a" / "seed1", tmp_path / "b" / "seed1"
    stage.main(args(inputs, a, "bl_unsup"))
    stage.main(args(inputs, b, "bl_unsup"))
    assert tree_bytes(a) == tree_bytes(b)


@pytest.mark.parametrize(
    ("experiment", "extra", "message"),
    [
        ("ura", [], "--poses: the experiment uses pseudo poses"),
        ("bl_gt_pose", [], "pose_source 'gt' needs ground-truth azimuth_deg"),
        ("nope", [], "--experiment nope: run: unknown experiment 'nope'"),
    ],
)
def test_user_errors_exit_2_with_one_line(
    inputs, tmp_path, monkeypatch, capsys, experiment, extra, message
):
    out = tmp_path / "out"
    monkeypatch.setattr(sys, "argv", ["train_recon.py", *args(inputs, out, experiment, *extra)])
    with pytest.raises(SystemExit) as exc:
        run_stage(stage.main)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err
    assert not out.exists()

"""End-to-end runs of train_pose and predict_poses on a tiny prepared dataset and generator."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from PIL import Image

from poseless.data.prepared import PreparedDataset
from poseless.geometry.cameras import LookAtCamera
from poseless.models.mesh_decoder import Generator
from poseless.train.checkpoint import save_model
from poseless.train.groups import ALL, GroupError, Groups, write_groups
from poseless.train.pose import ModelFileError, load_generator
from poseless.train.predict_poses import (
    GanRetrieval,
    fit_mirror_frame,
    map_masks,
    predict_azimuths,
    prior_matched_bins,
)

ROOT = Path(__file__).resolve().parents[2]


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


train_pose = _load("stage_train_pose", ROOT / "stages/train_pose.py")
predict_poses = _load("stage_predict_poses", ROOT / "stages/predict_poses.py")
# the tiny prepared-dataset writer shared with tests/features (no package imports in tests)
fixtures = _load("pose_stage_fixtures", ROOT / "tests/features/conftest.py")


@pytest.fixture(autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


class Killed(Exception):
    """Stands in for SIGKILL in the middle of a run."""


def kill_at(k: int):
    def hook(step: int) -> None:
        if step == k:
            raise Killed

    return hook


@pytest.fixture
def setup(tmp_path):
    dataset = fixtures.write_prepared(
        tmp_path / "prepared", splits={"train": 6, "val": 3, "test": 3}
    )
    gan = tmp_path / "gan"
    torch.manual_seed(0)
    G = Generator(z_dim=8, template_level=1)
    # the train_gan format: groups.json + <group>/generator.safetensors + generator.json
    # holding Generator.config() (here one generator for all categories)
    save_model(gan / ALL / "generator.safetensors", G, G.config())
    write_groups(gan, Groups(False, (ALL,)))
    params = tmp_path / "params.yaml"
    params.write_text(
        yaml.safe_dump(
            {
                "seed": 5,
                "train_pose": {
                    "iterations": 4,
                    "batch_size": 2,
                    "image_size": 32,
                    "log_every": 2,
                    "checkpoint_every": 2,
                    "n_samples": 2,
                    "progress": False,
                },
                "predict_poses": {"batch_size": 5},
            }
        )
    )
    return {"dataset": dataset, "gan": gan, "params": params, "tmp": tmp_path}


def train_args(s, out: str, resume: str) -> list[str]:
    t = s["tmp"]
    return [
        "--params", str(s["params"]), "--gan", str(s["gan"]), "--dataset", str(s["dataset"]),
        "--out", str(t / out), "--resume-dir", str(t / resume), "--device", "cpu",
    ]  # fmt: skip


def predict_args(s, pose: str, out: str, metrics: str) -> list[str]:
    t = s["tmp"]
    return [
        "--params", str(s["params"]), "--pose", str(t / pose), "--dataset", str(s["dataset"]),
        "--out", str(t / out), "--metrics", str(t / metrics), "--device", "cpu",
    ]  # fmt: skip


def folder_bytes(path: Path) -> dict[str, bytes]:
    return {
        p.relative_to(path).as_posix(): p.read_bytes()
        for p in sorted(path.rglob("*"))
        if p.is_file()
    }


def test_train_and_predict_are_deterministic_and_resume_after_a_kill(setup):
    s, t = setup, setup["tmp"]
    train_pose.main(train_args(s, "pose_a", "resume_a"))
    with pytest.raises(Killed):
        train_pose.main(train_args(s, "pose_b", "resume_b"), step_hook=kill_at(3))
    assert not (t / "pose_b").exists(), "a killed run must not leave a finished-looking output"
    assert list((t / "resume_b").glob("all/*/checkpoints/step-000000002.pt"))
    train_pose.main(train_args(s, "pose_b", "resume_b"))
    a, b = folder_bytes(t / "pose_a"), folder_bytes(t / "pose_b")
    assert sorted(a) == [
        "all/config.yaml",
        "all/curves.csv",
        "all/metrics.jsonl",
        "all/regressor.json",
        "all/regressor.safetensors",
        "all/samples.png",
        "config.yaml",
        "groups.json",
    ]
    assert a == b, [k for k in a if a[k] != b.get(k)]
    config = yaml.safe_load((t / "pose_a" / "all" / "config.yaml").read_text())
    assert config["stage"] == "train_pose" and config["config"]["seed"] == 5
    assert config["config"]["train_pose"]["iterations"] == 4
    assert config["extra"]["camera"] == {"elevation_deg": 30.0, "distance": 2.732, "fov_deg": 30.0}
    with Image.open(t / "pose_a" / "all" / "samples.png") as im:
        assert im.format == "PNG" and not im.text, im.text

    predict_poses.main(predict_args(s, "pose_a", "poses_a", "m_a.json"))
    predict_poses.main(predict_args(s, "pose_b", "poses_b", "m_b.json"))
    pa_, pb_ = folder_bytes(t / "poses_a"), folder_bytes(t / "poses_b")
    assert sorted(pa_) == ["config.yaml", "histogram.png", "poses.parquet"]
    assert pa_ == pb_, [k for k in pa_ if pa_[k] != pb_.get(k)]
    assert (t / "m_a.json").read_bytes() == (t / "m_b.json").read_bytes()

    table = pd.read_parquet(t / "poses_a" / "poses.parquet")
    manifest = pd.read_parquet(s["dataset"] / "manifest.parquet")
    assert list(table.columns) == [
        "id",
        "split",
        "category",
        "azimuth_deg",
        "gt_azimuth_deg",
        "error_deg",
    ]
    assert table["id"].tolist() == manifest["id"].tolist()
    assert table["split"].tolist() == manifest["split"].tolist()
    assert table["azimuth_deg"].between(0, 360, inclusive="left").all()
    assert np.allclose(table["gt_azimuth_deg"], manifest["azimuth_deg"] % 360)
    assert table["error_deg"].between(0, 180).all()
    metrics = json.loads((t / "m_a.json").read_text())
    assert metrics["n_items"] == 12 and metrics["n_with_gt"] == 12
    assert set(metrics["overall"]) == {
        "n",
        "median_error_deg",
        "mean_error_deg",
        "acc@15",
        "acc@30",
    }
    assert {"offset_deg", "reflected", "median_error_deg"} <= set(metrics["categories"]["chair"])
    assert metrics["overall"]["median_error_deg"] == pytest.approx(
        float(np.median(table["error_deg"]))
    )
    with Image.open(t / "poses_a" / "histogram.png") as im:
        assert im.size[0] > im.size[1] and not im.text


def test_predict_poses_resizes_masks_and_reports_counts_without_gt(setup, tmp_path):
    s = setup
    train_pose.main(train_args(s, "pose", "resume"))
    # a 48-pixel dataset without ground-truth azimuths
    data = fixtures.write_prepared(tmp_path / "big", splits={"train": 4, "test": 2}, size=48)
    manifest = pd.read_parquet(data / "manifest.parquet")
    manifest["azimuth_deg"] = np.nan
    manifest.to_parquet(data / "manifest.parquet")
    s = dict(s, dataset=data)
    predict_poses.main(predict_args(s, "pose", "poses", "m.json"))
    table = pd.read_parquet(tmp_path / "poses" / "poses.parquet")
    assert list(table.columns) == ["id", "split", "category", "azimuth_deg"]
    assert len(table) == 6 and table["azimuth_deg"].between(0, 360, inclusive="left").all()
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["n_with_gt"] == 0 and metrics["counts"] == {"train": 4, "test": 2}
    assert "overall" not in metrics


def test_predict_poses_by_gan_retrieval_labels_each_mask_with_its_best_render(setup):
    s, t = setup, setup["tmp"]
    train_pose.main(train_args(s, "pose", "resume"))
    params = yaml.safe_load(s["params"].read_text())
    params["predict_poses"] |= {
        "method": "gan_retrieval",
        "retrieval_codes": 2,
        "retrieval_step_deg": 30.0,
    }
    s["params"].write_text(yaml.safe_dump(params))
    # the bank is rendered at the size and camera train_gan recorded (24 px, 20 deg
    # elevation here), not at the regressor's (32 px, 30 deg)
    record = {
        "stage": "train_gan",
        "config": {"seed": 0, "train_gan": {"image_size": 24}},
        "extra": {"camera": {"elevation_deg": 20.0, "distance": 2.732, "fov_deg": 30.0}},
    }
    (s["gan"] / "config.yaml").write_text(yaml.safe_dump(record))
    args = predict_args(s, "pose", "poses", "m.json") + ["--gan", str(s["gan"])]
    predict_poses.main(args)
    table = pd.read_parquet(t / "poses" / "poses.parquet")
    assert len(table) == 12
    assert np.allclose(table["azimuth_deg"] % 30.0, 0.0)  # azimuths of the 30-deg bank
    config = yaml.safe_load((t / "poses" / "config.yaml").read_text())
    assert config["extra"]["method"] == "gan_retrieval"
    assert config["extra"]["input_size"] == {ALL: 24}
    # the same bank, built by hand, gives the same labels
    G = load_generator(s["gan"] / ALL)
    bank = GanRetrieval.from_generator(G, LookAtCamera(20.0, 2.732, 30.0), 24, 2, 30.0, seed=5)
    masks = PreparedDataset(s["dataset"]).load(table["id"].tolist()).masks.float()
    want = predict_azimuths(bank, [masks], 24, torch.device("cpu"), True)
    assert np.array_equal(table["azimuth_deg"].to_numpy(), want)
    # frame: mirror rotates the same azimuths by the mirror frame that the flipped
    # masks give, and records it
    params["predict_poses"]["frame"] = "mirror"
    s["params"].write_text(yaml.safe_dump(params))
    predict_poses.main(predict_args(s, "pose", "mirror", "mm.json") + ["--gan", str(s["gan"])])
    mirrored = pd.read_parquet(t / "mirror" / "poses.parquet")
    frame = json.loads((t / "mm.json").read_text())["mirror_frames"][ALL]
    flipped = predict_azimuths(bank, [masks.flip(-1)], 24, torch.device("cpu"), True)
    assert frame == dataclasses.asdict(fit_mirror_frame(want, flipped))
    assert np.allclose(mirrored["azimuth_deg"], np.mod(want - frame["offset_deg"], 360.0))
    params["predict_poses"]["frame"] = "generator"
    s["params"].write_text(yaml.safe_dump(params))
    # retrieval_prior gan: the azimuths are the transport's choices on the same scores,
    # under the prior of the range the GAN recorded; the metrics say what it moved
    record["config"]["train_gan"]["azimuth_range_deg"] = [0.0, 180.0]
    (s["gan"] / "config.yaml").write_text(yaml.safe_dump(record))
    params["predict_poses"]["retrieval_prior"] = "gan"
    s["params"].write_text(yaml.safe_dump(params))
    predict_poses.main(predict_args(s, "pose", "prior", "mp.json") + ["--gan", str(s["gan"])])
    prior = pd.read_parquet(t / "prior" / "poses.parquet")
    half = GanRetrieval.from_generator(
        G, LookAtCamera(20.0, 2.732, 30.0), 24, 2, 30.0, seed=5, azimuth_range_deg=(0.0, 180.0)
    )
    scores = map_masks(half.scores, [masks], 24, torch.device("cpu"), True)
    choice, match = prior_matched_bins(scores, half.prior, 0.01)
    assert np.array_equal(prior["azimuth_deg"].to_numpy(), half.grid_deg[choice])
    assert (prior["azimuth_deg"] < 180.0).all()  # the prior bars the other half
    entry = json.loads((t / "mp.json").read_text())["retrieval_prior"][ALL]
    assert entry == {"masks": dataclasses.asdict(match)}
    # ... which the mirror frame cannot use: the flips' range is what it looks for
    params["predict_poses"]["frame"] = "mirror"
    s["params"].write_text(yaml.safe_dump(params))
    with pytest.raises(ValueError, match="azimuth_range_deg to be the whole circle"):
        predict_poses.main(predict_args(s, "pose", "pm", "pm.json") + ["--gan", str(s["gan"])])
    del record["config"]["train_gan"]["azimuth_range_deg"]
    (s["gan"] / "config.yaml").write_text(yaml.safe_dump(record))
    with pytest.raises(ModelFileError, match="config.train_gan.azimuth_range_deg"):
        predict_poses.main(predict_args(s, "pose", "pm", "pm.json") + ["--gan", str(s["gan"])])
    params["predict_poses"] |= {"frame": "generator", "retrieval_prior": "none"}
    s["params"].write_text(yaml.safe_dump(params))
    # a GAN folder without its train_gan record, or with a broken one: the error names it
    record["extra"] = {}
    (s["gan"] / "config.yaml").write_text(yaml.safe_dump(record))
    with pytest.raises(ModelFileError, match=r"gan/config.yaml: not a train_gan record"):
        predict_poses.main(args)
    (s["gan"] / "config.yaml").unlink()
    with pytest.raises(ModelFileError, match=r"gan/config.yaml: train_gan record not found"):
        predict_poses.main(args)
    # no generator where --gan points: the error names the file
    (t / "nowhere" / ALL).mkdir(parents=True)
    write_groups(t / "nowhere", Groups(False, (ALL,)))
    camera = {"elevation_deg": 20.0, "distance": 2.732, "fov_deg": 30.0}
    (t / "nowhere" / "config.yaml").write_text(
        yaml.safe_dump(record | {"extra": {"camera": camera}})
    )
    with pytest.raises(ModelFileError, match="generator.safetensors"):
        predict_poses.main(args[:-1] + [str(t / "nowhere")])


def test_missing_generator_or_regressor_is_a_clear_error(setup):
    s, t = setup, setup["tmp"]
    (s["gan"] / ALL / "generator.safetensors").unlink()
    with pytest.raises(ModelFileError, match="generator.safetensors: generator weights not found"):
        train_pose.main(train_args(s, "pose", "resume"))
    assert not (t / "pose").exists()
    with pytest.raises(GroupError, match="nowhere/groups.json: missing; run the train_pose stage"):
        predict_poses.main(predict_args(s, "nowhere", "poses", "m.json"))
    write_groups(t / "nowhere", Groups(False, (ALL,)))
    (t / "nowhere" / ALL).mkdir()
    with pytest.raises(ModelFileError, match="regressor.safetensors: regressor weights not found"):
        predict_poses.main(predict_args(s, "nowhere", "poses", "m.json"))
    assert not (t / "poses").exists() and not (t / "m.json").exists()


def test_groups_trained_side_by_side_give_the_same_bytes(setup):
    s, t = setup, setup["tmp"]
    gan = t / "gan2"
    for k, group in enumerate(("chair", "mug")):
        torch.manual_seed(k)
        G = Generator(z_dim=8, template_level=1)
        save_model(gan / group / "generator.safetensors", G, G.config())
    write_groups(gan, Groups(True, ("chair", "mug")))
    s = dict(s, gan=gan)
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # the workers get workers // processes = 1 thread each
    try:
        train_pose.main(train_args(s, "serial", "resume_s"))
        train_pose.main([*train_args(s, "parallel", "resume_p"), "--workers", "2"])
    finally:
        torch.set_num_threads(n)
    a, b = folder_bytes(t / "serial"), folder_bytes(t / "parallel")
    assert {k.split("/")[0] for k in a} == {"chair", "mug", "config.yaml", "groups.json"}
    assert a == b, [k for k in a if a[k] != b.get(k)]
    assert a["chair/regressor.safetensors"] != a["mug/regressor.safetensors"]

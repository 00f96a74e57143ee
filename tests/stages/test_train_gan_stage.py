"""Stage train_gan end to end on a tiny prepared dataset: outputs, determinism, resume, health."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from poseless.cli import run_stage
from poseless.data.prepared import PreparedDataset
from poseless.train import gan

ROOT = Path(__file__).resolve().parents[2]
OUTPUTS = {
    "generator.safetensors",
    "generator.json",
    "discriminator.safetensors",
    "discriminator.json",
    "metrics.jsonl",
    "curves.csv",
    "curves.png",
    "samples.png",
    "config.yaml",
    "health.json",
}
PREPARE = {
    "crop": "none",
    "image_size": 32,
    "contact_sheet_items": 2,
    "synthetic": {
        "categories": ["chair", "airplane"],
        "instances_per_category": 4,
        "render_size": 32,
        "voxel_resolution": 4,
        "n_surface_points": 8,
        "workers": 1,
        "split_fractions": [0.75, 0.25, 0.0],
    },
}
TRAIN_GAN = {
    "iterations": 3,
    "batch_size": 4,
    "template_level": 1,
    "image_size": 32,
    "log_every": 1,
    "checkpoint_every": 2,
    "progress": False,
    "n_samples": 3,
    "n_views": 4,
    "health": {"n_codes": 4, "n_azimuths": 3, "n_real": 8, "fail_on_collapse": False},
}


def load(name):
    spec = importlib.util.spec_from_file_location(f"{name}_stage", ROOT / "stages" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


stage = load("train_gan")


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread: on a shared, busy CPU two threads run these tiny nets ~20x slower."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def write_params(path: Path, train_gan: dict) -> Path:
    path.write_text(yaml.safe_dump({"seed": 3, "prepare_data": PREPARE, "train_gan": train_gan}))
    return path


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("prepared")
    params = write_params(root / "p.yaml", TRAIN_GAN)
    load("prepare_data").main(["--params", str(params), "--out", str(root / "prepared")])
    return root / "prepared"


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def args(params, prepared, d: Path, resume="resume") -> list[str]:
    return [
        "--params", str(params),
        "--dataset", str(prepared),
        "--out", str(d / "gan"),
        "--resume-dir", str(d / resume),
        "--metrics", str(d / "metrics" / "train_gan.json"),
        "--device", "cpu",
    ]  # fmt: skip


def test_end_to_end_deterministic_and_resumable(tmp_path, prepared):
    params = write_params(tmp_path / "p.yaml", TRAIN_GAN)
    a, b = tmp_path / "a", tmp_path / "b"
    stage.main(args(params, prepared, a))
    out = a / "gan"
    ds = PreparedDataset(prepared)
    per_cat = {c: 0 for c in ("airplane", "chair")}
    for i in ds.ids("train"):
        per_cat[str(ds.row(i)["category"])] += 1
    assert {p.name for p in out.iterdir()} == {"groups.json", "config.yaml", *per_cat}
    assert json.loads((out / "groups.json").read_text()) == {
        "per_category": True,
        "groups": ["airplane", "chair"],
    }
    for group in per_cat:
        assert {p.name for p in (out / group).iterdir()} == OUTPUTS - {"config.yaml"}
    assert not any(p.name.startswith(".") for p in a.iterdir()), "no temp folder left behind"
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["stage"] == "train_gan" and config["config"]["seed"] == 3
    assert config["config"]["train_gan"]["iterations"] == 3
    assert config["extra"]["n_train_masks"] == per_cat and min(per_cat.values()) > 0
    assert config["extra"]["camera"] == {"elevation_deg": 30.0, "distance": 2.732, "fov_deg": 30.0}
    metrics = json.loads((a / "metrics" / "train_gan.json").read_text())
    assert set(metrics) == set(per_cat)
    for group, n in per_cat.items():
        health = json.loads((out / group / "health.json").read_text())
        assert {k: metrics[group][k] for k in health} == health
        assert metrics[group]["iterations"] == 3 and "d" in metrics[group]["last_losses"]
        assert metrics[group]["n_train_masks"] == n
        assert set(health["checks"]) == {
            "shape_diversity_ratio",
            "view_variation",
            "area_tv",
            "degenerate_fraction",
        }
        assert health["metrics"]["n_real"] == min(8, n)
        records = [json.loads(s) for s in (out / group / "metrics.jsonl").read_text().splitlines()]
        assert [r["step"] for r in records] == [1, 2, 3]
    # The groups are different models (trained on their own category's masks).
    assert (out / "chair" / "generator.safetensors").read_bytes() != (
        out / "airplane" / "generator.safetensors"
    ).read_bytes()

    # A second run from scratch gives the same bytes; so does one that trains the two
    # groups side by side in two processes (one thread each, as this process).
    stage.main(args(params, prepared, b))
    assert tree_bytes(out) == tree_bytes(b / "gan")
    c = tmp_path / "c"
    stage.main([*args(params, prepared, c), "--workers", "2"])
    assert tree_bytes(out) == tree_bytes(c / "gan")
    assert (c / "metrics" / "train_gan.json").read_bytes() == (
        a / "metrics" / "train_gan.json"
    ).read_bytes()
    assert (a / "metrics" / "train_gan.json").read_bytes() == (
        b / "metrics" / "train_gan.json"
    ).read_bytes()

    # Rerun with the finished resume dir (as after Snakemake deleted the output):
    # nothing to train, same bytes.
    before = tree_bytes(out)
    stage.main(args(params, prepared, a))
    assert tree_bytes(out) == before

    # Collapse checks on: this 3-iteration GAN is still a blob -> exit 2 with advice,
    # metrics and inspection copies written, --out left as it was.
    strict = dict(TRAIN_GAN, health=dict(TRAIN_GAN["health"], fail_on_collapse=True))
    params = write_params(tmp_path / "strict.yaml", strict)
    (a / "metrics" / "train_gan.json").unlink()
    with pytest.raises(SystemExit) as info:
        run_stage(lambda: stage.main(args(params, prepared, a)))
    assert info.value.code == 2
    report = json.loads((a / "metrics" / "train_gan.json").read_text())
    assert report["airplane"]["passed"] is False
    assert report["airplane"]["checks"]["shape_diversity_ratio"]["passed"] is False
    assert tree_bytes(out) == before, "a failed health check must not replace the output"
    inspect = [p for p in (a / "resume").glob("*/*/inspect")]
    assert len(inspect) == 2 and {p.name for p in inspect[0].iterdir()} == {
        "health.json",
        "samples.png",
        "curves.png",
    }


def test_one_generator_for_all_categories(tmp_path, prepared):
    cfg = dict(TRAIN_GAN, iterations=1, n_samples=0, per_category=False)
    params = write_params(tmp_path / "p.yaml", cfg)
    stage.main(args(params, prepared, tmp_path))
    out = tmp_path / "gan"
    assert json.loads((out / "groups.json").read_text()) == {
        "per_category": False,
        "groups": ["all"],
    }
    metrics = json.loads((tmp_path / "metrics" / "train_gan.json").read_text())
    assert metrics["all"]["n_train_masks"] == len(PreparedDataset(prepared).ids("train"))
    assert (out / "all" / "generator.safetensors").is_file()


def test_error_message_names_check_and_advice(tmp_path, prepared, capsys):
    cfg = dict(TRAIN_GAN, iterations=1, n_samples=0)
    cfg["health"] = dict(TRAIN_GAN["health"], fail_on_collapse=True, min_diversity_ratio=1.0)
    params = write_params(tmp_path / "p.yaml", cfg)
    with pytest.raises(SystemExit) as info:
        run_stage(lambda: stage.main(args(params, prepared, tmp_path)))
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "error: train_gan: the GAN failed" in err, err
    assert "shape_diversity_ratio = " in err and "< min 1" in err, err
    assert "train_gan.iterations" in err and "fail_on_collapse: false" in err
    assert "Traceback" not in err
    assert not (tmp_path / "gan").exists()


def test_train_masks_are_resized(prepared):
    ds = PreparedDataset(prepared)
    masks = gan.load_train_masks(ds, 16)
    full = gan.load_train_masks(ds, 32)
    assert masks.shape == (len(ds.ids("train")), 1, 16, 16) and masks.dtype == torch.uint8
    ref = full.float().view(-1, 1, 16, 2, 16, 2).mean((3, 5))
    assert np.abs(masks.float().numpy() - ref.numpy()).max() <= 1.0
    assert ((masks > 0) & (masks < 255)).any(), "area resizing leaves fractional edges"
    binary = gan.load_train_masks(ds, 16, binarize=True)
    assert set(binary.unique().tolist()) <= {0, 255}
    assert torch.equal(binary, torch.where(masks >= 128, 255, 0).to(torch.uint8))


def test_user_errors_exit_2(tmp_path, capsys):
    params = write_params(tmp_path / "p.yaml", dict(TRAIN_GAN, n_critic=0))
    with pytest.raises(SystemExit) as info:
        run_stage(lambda: stage.main(args(params, tmp_path / "nope", tmp_path)))
    assert info.value.code == 2
    assert "train_gan: n_critic: must be >= 1" in capsys.readouterr().err
    params = write_params(tmp_path / "p.yaml", TRAIN_GAN)
    with pytest.raises(SystemExit) as info:
        run_stage(lambda: stage.main(args(params, tmp_path / "nope", tmp_path)))
    assert info.value.code == 2
    assert "run the prepare_data stage first" in capsys.readouterr().err

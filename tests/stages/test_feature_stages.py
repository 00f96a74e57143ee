"""End-to-end runs of embed_images, build_knn and estimate_normals on a tiny prepared dataset."""

from __future__ import annotations

import importlib.util
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from poseless.data.prepared import DatasetError
from poseless.features.clip import WeightsUnavailable
from poseless.features.knn import KnnError

ROOT = Path(__file__).resolve().parents[2]


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


embed_images = _load("stage_embed_images", ROOT / "stages/embed_images.py")
build_knn = _load("stage_build_knn", ROOT / "stages/build_knn.py")
estimate_normals = _load("stage_estimate_normals", ROOT / "stages/estimate_normals.py")
# the tiny prepared-dataset writer shared with tests/features (no package imports in tests)
fixtures = _load("features_fixtures", ROOT / "tests/features/conftest.py")


TINY_CLIP = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
    "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 16, "heads": 1, "layers": 1},
}


class Killed(Exception):
    """Stands in for SIGKILL in the middle of a run."""


def kill_after(k: int):
    def hook(batches_done: int):
        if batches_done >= k:
            raise Killed

    return hook


def params(tmp_path: Path, **sections) -> str:
    path = tmp_path / f"params_{len(list(tmp_path.glob('params_*')))}.yaml"
    path.write_text(yaml.safe_dump({"seed": 3, **sections}))
    return str(path)


@pytest.fixture
def dataset(tmp_path) -> Path:
    return fixtures.write_prepared(tmp_path / "prepared", splits={"train": 10, "val": 4, "test": 4})


def test_embed_images_hog_resumes_identically_and_feeds_build_knn(tmp_path, dataset):
    p = params(tmp_path, embed_images={"encoder": "hog", "batch_size": 4, "hog_size": 32})
    full, cut = tmp_path / "emb_full", tmp_path / "emb_cut"
    embed_images.main(["--params", p, "--dataset", str(dataset), "--out", str(full)])
    with pytest.raises(Killed):
        embed_images.main(
            ["--params", p, "--dataset", str(dataset), "--out", str(cut)], on_batch=kill_after(2)
        )
    assert not cut.exists(), "a killed run must not leave a finished-looking output"
    progress = json.loads((tmp_path / ".emb_cut.partial" / "progress.json").read_text())
    assert progress["done"] == 8
    embed_images.main(
        ["--params", p, "--dataset", str(dataset), "--out", str(cut)], on_batch=lambda b: None
    )
    a, b = np.load(full / "embeddings.npy"), np.load(cut / "embeddings.npy")
    assert a.dtype == np.float16 and a.shape[0] == 18
    np.testing.assert_array_equal(a, b)
    assert (full / "ids.txt").read_text() == (cut / "ids.txt").read_text()
    enc = json.loads((full / "encoder.json").read_text())
    assert enc["kind"] == "hog" and enc["dim"] == a.shape[1] and enc["fallback"] is None
    assert not (tmp_path / ".emb_cut.partial").exists()

    kp = params(tmp_path, build_knn={"k": 3, "diagnostics_items": 18, "diagnostics_points": 64})
    out = tmp_path / "knn"
    build_knn.main(
        ["--params", kp, "--embeddings", str(full), "--dataset", str(dataset), "--out", str(out)]
    )
    table = pd.read_parquet(out / "neighbours.parquet")
    manifest = pd.read_parquet(dataset / "manifest.parquet").set_index("id")
    assert len(table) == 18
    for _, row in table.iterrows():
        assert len(row["neighbours"]) == 3 and row["id"] not in list(row["neighbours"])
        assert set(manifest.loc[list(row["neighbours"]), "split"]) == {
            manifest.loc[row["id"], "split"]
        }
        assert list(row["similarities"]) == sorted(row["similarities"], reverse=True)
    metrics = json.loads((out / "metrics.json").read_text())
    d = metrics["diagnostics"]
    for key in ("chamfer_knn", "chamfer_random", "azimuth_diff_knn_deg", "azimuth_diff_random_deg"):
        assert np.isfinite(d[key]), key
    assert (out / "config.yaml").is_file()


def test_embed_images_clip_checkpoint_and_fail_fast(tmp_path, dataset, monkeypatch):
    import huggingface_hub
    import open_clip

    from poseless.utils import file_sha256

    cfg_path = tmp_path / "TinyCLIP-stage.json"
    cfg_path.write_text(json.dumps(TINY_CLIP))
    open_clip.add_model_config(cfg_path)
    torch.manual_seed(1)
    model, _, _ = open_clip.create_model_and_transforms("TinyCLIP-stage", pretrained=None)
    ckpt = tmp_path / "tiny_clip.pt"
    torch.save(model.state_dict(), ckpt)  # the releases' format: a plain state_dict
    section = {
        "model": "TinyCLIP-stage",
        "model_config": str(cfg_path),
        "pretrained": str(ckpt),
        "batch_size": 8,
    }
    out = tmp_path / "emb"
    embed_images.main(
        [
            "--params",
            params(tmp_path, embed_images=section),
            "--dataset",
            str(dataset),
            "--out",
            str(out),
        ]
    )
    z = np.load(out / "embeddings.npy").astype(np.float32)
    assert z.shape == (18, 16)
    np.testing.assert_allclose(np.linalg.norm(z, axis=1), 1.0, atol=2e-3)
    enc = json.loads((out / "encoder.json").read_text())
    assert (
        enc["kind"] == "clip" and enc["checkpoint_sha256"] == file_sha256(ckpt) and enc["dim"] == 16
    )

    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", lambda *a, **k: None)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    offline = params(tmp_path, embed_images={"model": "ViT-L-14", "pretrained": "openai"})
    t0 = time.monotonic()
    with pytest.raises(WeightsUnavailable, match="embed_images.fallback: hog"):
        embed_images.main(
            ["--params", offline, "--dataset", str(dataset), "--out", str(tmp_path / "x")]
        )
    assert time.monotonic() - t0 < 10.0
    fb = params(tmp_path, embed_images={"pretrained": "openai", "fallback": "hog", "hog_size": 32})
    embed_images.main(["--params", fb, "--dataset", str(dataset), "--out", str(tmp_path / "fb")])
    enc = json.loads((tmp_path / "fb" / "encoder.json").read_text())
    assert enc["kind"] == "hog" and enc["fallback"]["used"] == "hog" and enc["fallback"]["reason"]


@pytest.mark.slow
def test_estimate_normals_omnidata_backend(tmp_path, dataset):
    test_dpt = _load("features_test_dpt", ROOT / "tests/features/test_dpt.py")
    from poseless.features.dpt import omnidata_state_dict

    ckpt = tmp_path / "omnidata_dpt_normal_v2.ckpt"
    torch.save(omnidata_state_dict(test_dpt.random_dpt()), ckpt)
    section = {"backend": "omnidata", "checkpoint": str(ckpt), "input_size": 64, "batch_size": 9}
    out = tmp_path / "normals"
    estimate_normals.main(
        [
            "--params",
            params(tmp_path, estimate_normals=section),
            "--dataset",
            str(dataset),
            "--out",
            str(out),
        ]
    )
    n = np.load(out / "normals.npy").astype(np.float32)
    mask = np.abs(n).sum(1) > 0
    assert n.shape == (18, 3, 32, 32) and mask.any()
    np.testing.assert_allclose(np.linalg.norm(n, axis=1)[mask], 1.0, atol=2e-3)
    m = json.loads((out / "metrics.json").read_text())
    assert m["backend"] == "omnidata" and "gt_angular_error_deg_mean" in m


def test_build_knn_bad_inputs(tmp_path, dataset):
    emb = tmp_path / "emb"
    emb.mkdir()
    ids = [f"item{k:03d}" for k in range(18)]
    (emb / "ids.txt").write_text("".join(f"{i}\n" for i in ids))
    kp = params(tmp_path, build_knn={"k": 5})
    run = [
        "--params",
        kp,
        "--embeddings",
        str(emb),
        "--dataset",
        str(dataset),
        "--out",
        str(tmp_path / "knn"),
    ]
    with pytest.raises(
        FileNotFoundError, match="embeddings.npy: missing; run the embed_images stage first"
    ):
        build_knn.main(run)
    np.save(emb / "embeddings.npy", np.ones(18, np.float16))
    with pytest.raises(KnnError, match=r"expected an \(N, D\) array"):
        build_knn.main(run)
    np.save(emb / "embeddings.npy", np.ones((17, 4), np.float16) / 2)
    with pytest.raises(KnnError, match="17 rows but .* lists 18 ids"):
        build_knn.main(run)
    np.save(emb / "embeddings.npy", np.ones((18, 4), np.float16) / 2)
    with pytest.raises(KnnError, match=r"group '(test|val)' has 4 item\(s\)"):
        build_knn.main(run)
    assert not (tmp_path / "knn").exists()


def test_estimate_normals_dataset_backend_resume_and_corruption(tmp_path, dataset):
    clean = params(tmp_path, estimate_normals={"backend": "dataset", "batch_size": 5})
    out = tmp_path / "normals"
    estimate_normals.main(["--params", clean, "--dataset", str(dataset), "--out", str(out)])
    n = np.load(out / "normals.npy")
    assert n.shape == (18, 3, 32, 32) and n.dtype == np.float16
    m = json.loads((out / "metrics.json").read_text())
    assert m["gt_angular_error_deg_mean"] < 0.5 and m["facing_camera_fraction"] > 0.99
    assert (out / "contact_sheet.png").is_file() and (out / "ids.txt").is_file()

    noisy = params(
        tmp_path,
        estimate_normals={
            "backend": "dataset",
            "batch_size": 5,
            "corruption": {"blotches": 1, "flips": 1, "noise_std": 0.05},
        },
    )
    a, b = tmp_path / "noisy_a", tmp_path / "noisy_b"
    estimate_normals.main(["--params", noisy, "--dataset", str(dataset), "--out", str(a)])
    with pytest.raises(Killed):
        estimate_normals.main(
            ["--params", noisy, "--dataset", str(dataset), "--out", str(b)], on_batch=kill_after(1)
        )
    estimate_normals.main(["--params", noisy, "--dataset", str(dataset), "--out", str(b)])
    np.testing.assert_array_equal(np.load(a / "normals.npy"), np.load(b / "normals.npy"))
    mn = json.loads((a / "metrics.json").read_text())
    assert mn["gt_angular_error_deg_mean"] > 3.0, "corruption must show in the GT error"


def test_empty_dataset_is_a_clear_error(tmp_path):
    ds = fixtures.write_prepared(tmp_path / "empty", splits={"train": 0})
    p = params(tmp_path, embed_images={"encoder": "hog"}, estimate_normals={"backend": "dataset"})
    with pytest.raises(DatasetError, match="no items"):
        embed_images.main(["--params", p, "--dataset", str(ds), "--out", str(tmp_path / "e")])
    with pytest.raises(DatasetError, match="no items"):
        estimate_normals.main(["--params", p, "--dataset", str(ds), "--out", str(tmp_path / "n")])

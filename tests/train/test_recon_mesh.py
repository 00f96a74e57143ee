"""URA stage (c) and its baselines end to end on a tiny prepared dataset (CPU)."""

import math

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from poseless.config import PrepareDataConfig, TrainReconConfig, ViewDiscriminatorSettings
from poseless.data.prepare import write_prepared
from poseless.data.prepared import PreparedDataset
from poseless.data.raw import RawItem
from poseless.errors import TrainingError
from poseless.geometry.cameras import kato_extrinsics
from poseless.geometry.mesh import icosphere
from poseless.models.discriminator import SilhouetteDiscriminator
from poseless.render.soft_raster import SoftRasterSettings, render_silhouettes
from poseless.train import recon_mesh
from poseless.train.metrics_log import read_metrics
from poseless.train.recon import load_recon_data, load_reconstructor, train_recon
from poseless.train.recon_mesh import (
    is_adversarial_step,
    pad_critic_input,
    view_adversarial_loss,
    view_critic_loss,
)

SIZE = 32
TINY = {
    "iterations": 3,
    "batch_size": 4,
    "log_every": 1,
    "checkpoint_every": 100,
    "render_items": 4,
    "lr": 1e-3,
    "mesh": {"template_level": 1, "encoder_dim": 16},
    "view_discriminator": {"lr": 1e-3},
}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # Two oversubscribed cores: one thread per process is several times faster here.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def ellipsoid_items(n: int, n_train: int, seed: int = 0, radii=None) -> list[RawItem]:
    """Ellipsoids (of random radii, or all of ``radii``) at random GT azimuths (elevation 30)."""
    v, f = icosphere(2)
    g = np.random.default_rng(seed)
    items = []
    for k in range(n):
        r = g.uniform(0.12, 0.45, 3) if radii is None else radii
        radii_k = torch.tensor(r, dtype=torch.float32)
        az = float(g.uniform(0, 360))
        R, t = kato_extrinsics(torch.tensor([math.radians(az)]), torch.tensor([math.radians(30.0)]))
        sil = render_silhouettes(
            (v * radii_k)[None], f, R, t, SoftRasterSettings(image_size=SIZE, sigma=1e-5)
        )
        mask = (sil[0, 0].numpy() > 0.5).astype(np.uint8) * 255
        rgb = np.full((SIZE, SIZE, 3), 255, np.uint8)
        rgb[mask > 0] = g.integers(0, 200, 3)
        items.append(
            RawItem(
                id=f"e{k:02d}",
                category="blob",
                source=f"seed{k}",
                rgb=rgb,
                mask=mask,
                split="train" if k < n_train else "test",
                azimuth_deg=az,
                elevation_deg=30.0,
                distance=2.732,
            )
        )
    return items


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("prepared") / "ds"
    cfg = PrepareDataConfig(crop="none", image_size=SIZE, contact_sheet_items=2)
    write_prepared(
        ellipsoid_items(12, 10),
        cfg,
        root,
        split_fractions=(1.0, 0.0, 0.0),
        camera={"fov_deg": 30.0, "distance": 2.732},
    )
    return PreparedDataset(root)


@pytest.fixture(scope="module")
def poses(dataset, tmp_path_factory):
    """A fake predict_poses table: GT azimuth + 40 deg (a consistent pseudo frame)."""
    path = tmp_path_factory.mktemp("poses") / "poses.parquet"
    m = dataset.manifest
    pd.DataFrame(
        {"id": m["id"], "azimuth_deg": (m["azimuth_deg"] + 40.0) % 360.0, "extra": 1.0}
    ).to_parquet(path)
    return path


def settings(name: str, **overrides):
    common = {**TINY, **overrides}
    return TrainReconConfig(common=common).resolve(name)


def run(dataset, poses, tmp_path, name, tag="run", **overrides):
    s = settings(name, **overrides)
    data = load_recon_data(dataset, s, poses)
    out, resume = tmp_path / tag / "out", tmp_path / tag / "resume"
    return train_recon(data, s, 7, out, resume, "cpu", progress=False), out, resume


@pytest.mark.parametrize("name", ["bl_gt_pose", "bl_unsup", "ura", "ura_pad"])
def test_each_experiment_trains_saves_and_predicts(dataset, poses, tmp_path, name):
    result, out, resume = run(dataset, poses, tmp_path, name)
    assert result.steps == 3 and result.resumed_from is None
    assert result.encoder_info["weights"] == "random-init"
    assert {p.name for p in out.iterdir()} == {
        "model.safetensors",
        "model.json",
        "metrics.jsonl",
        "renders.png",
    }
    assert (resume / "checkpoints").is_dir(), "checkpoints must live in the resume folder"
    records = read_metrics(out / "metrics.jsonl")
    assert [r["step"] for r in records] == [1, 2, 3]
    assert all("wall_s" not in r for r in records), "artifact metrics must be deterministic"
    assert {"loss/reprojection", "loss/laplacian", "loss/flatten", "loss/loss"} <= set(records[0])
    adversarial = name.startswith("ura")
    for r in records:
        assert ("loss/d2" in r) == adversarial and ("loss/d2_gp" in r) == adversarial
    # The adversarial term enters R's loss at iteration 0 (record 1), not at 1 or 2.
    assert ["loss/adv" in r for r in records] == [adversarial, False, False]
    with Image.open(out / "renders.png") as im:
        assert im.size == (3 * (SIZE + 2) + 2, 4 * (SIZE + 2) + 2)

    rec = load_reconstructor(out, "cpu")
    assert rec.representation == "mesh" and rec.config["pose_source"] == settings(name).pose_source
    batch = dataset.load(dataset.ids("test"))
    pred = rec.predict(batch.images, batch.masks)
    assert len(pred.meshes) == 2
    for vertices, faces in pred.meshes:
        assert vertices.shape == (42, 3) and vertices.dtype == np.float32
        assert faces.shape == (80, 3) and faces.dtype == np.int64
        assert np.abs(vertices).max() <= 0.5
    if name == "bl_unsup":
        assert (
            pred.azimuth_deg.shape == (2,)
            and ((pred.azimuth_deg >= 0) & (pred.azimuth_deg < 360)).all()
        )
        assert pred.R.shape == (2, 3, 3)
        np.testing.assert_allclose(
            pred.R @ pred.R.transpose(0, 2, 1), np.eye(3)[None].repeat(2, 0), atol=1e-5
        )
        R_expected, _ = kato_extrinsics(
            torch.tensor(np.radians(pred.azimuth_deg.astype(np.float64))).float(),
            torch.full((2,), math.radians(30.0)),
        )
        np.testing.assert_allclose(pred.R, R_expected.numpy(), atol=1e-5)
    else:
        assert pred.azimuth_deg is None and pred.R is None
    with pytest.raises(ValueError, match="masks must be"):
        rec.predict(batch.images, batch.masks[:, :, :4])


def test_reprojection_loss_decreases_with_gt_poses(tmp_path):
    # One ellipsoid larger than the initial sphere, seen from random GT azimuths.
    root = tmp_path / "one_shape"
    cfg = PrepareDataConfig(crop="none", image_size=SIZE)
    camera = {"fov_deg": 30.0, "distance": 2.732}
    items = ellipsoid_items(8, 8, radii=(0.45, 0.22, 0.35))
    write_prepared(items, cfg, root, split_fractions=(1.0, 0.0, 0.0), camera=camera)
    result, out, _ = run(
        PreparedDataset(root), None, tmp_path, "bl_gt_pose", iterations=12, render_items=0
    )
    iou = [r["loss/reprojection"] for r in read_metrics(out / "metrics.jsonl")]
    assert len(iou) == 12 and result.renders_path is None
    assert np.mean(iou[-4:]) < iou[0] - 0.1, f"IoU loss did not go down: {iou}"


class Killed(Exception):
    pass


def test_resume_after_kill_equals_uninterrupted_run(dataset, poses, tmp_path, monkeypatch):
    over = {"iterations": 4, "checkpoint_every": 2}
    _, full, _ = run(dataset, poses, tmp_path, "ura_pad", tag="full", **over)
    records = read_metrics(full / "metrics.jsonl")
    assert ["loss/adv" in r for r in records] == [True, False, False, True]  # iterations 0 and 3

    real_render = recon_mesh.render_at
    calls = {"n": 0}

    def dying_render(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 10:  # iterations 0, 1, 2 render 4 + 3 + 3 times; die inside iteration 3
            raise Killed
        return real_render(*args, **kwargs)

    monkeypatch.setattr(recon_mesh, "render_at", dying_render)
    with pytest.raises(Killed):
        run(dataset, poses, tmp_path, "ura_pad", tag="killed", **over)
    monkeypatch.setattr(recon_mesh, "render_at", real_render)
    assert not (tmp_path / "killed" / "out" / "model.safetensors").exists()
    result, resumed, _ = run(dataset, poses, tmp_path, "ura_pad", tag="killed", **over)
    assert result.resumed_from == 2 and result.steps == 4
    for name in ("model.safetensors", "model.json", "metrics.jsonl", "renders.png"):
        assert (resumed / name).read_bytes() == (full / name).read_bytes(), name


def test_nan_loss_stops_with_training_error(dataset, poses, tmp_path, monkeypatch):
    monkeypatch.setattr(recon_mesh, "silhouette_loss", lambda p, t, kind: (p * float("nan")).sum())
    with pytest.raises(TrainingError, match="loss term 'loss' is nan"):
        run(dataset, poses, tmp_path, "bl_gt_pose", iterations=1)


def test_pad_conditioning_shapes_and_real_fake_conditions():
    torch.manual_seed(0)
    sil = torch.rand(3, 1, 16, 16)
    az = torch.tensor([0.0, math.pi / 2, 2.0])
    x = pad_critic_input(sil, az)
    assert x.shape == (3, 3, 16, 16)
    assert torch.equal(x[:, :1], sil)
    torch.testing.assert_close(x[:, 1, 5, 7], torch.cos(az))
    torch.testing.assert_close(x[:, 2, 0, 0], torch.sin(az))
    pad = SilhouetteDiscriminator(pose_condition=True)
    torch.testing.assert_close(pad.trunk(x)[:, 0], pad(sil, az))

    real, fake = torch.rand(3, 1, 16, 16), torch.rand(3, 1, 16, 16)
    az_real, az_fake = torch.tensor([0.1, 0.2, 0.3]), torch.tensor([3.0, 4.0, 5.0])
    vd = ViewDiscriminatorSettings(enabled=True, pose_aware=True, gp_weight=0.0)
    out = view_critic_loss(pad, real, fake, az_real, az_fake, vd)
    # Real renders are conditioned on the pseudo azimuth, fakes on their random azimuth.
    torch.testing.assert_close(out.d_real, pad(real, az_real).mean())
    torch.testing.assert_close(out.d_fake, pad(fake, az_fake).mean())
    torch.testing.assert_close(
        view_adversarial_loss(pad, fake, az_fake), -pad(fake, az_fake).mean()
    )
    with_gp = view_critic_loss(
        pad,
        real,
        fake,
        az_real,
        az_fake,
        ViewDiscriminatorSettings(pose_aware=True),
        torch.Generator().manual_seed(0),
    )
    assert with_gp.gradient_penalty > 0

    pid = SilhouetteDiscriminator()
    out = view_critic_loss(pid, real, fake, az_real, az_fake, ViewDiscriminatorSettings())
    torch.testing.assert_close(out.d_real, pid(real).mean())
    torch.testing.assert_close(view_adversarial_loss(pid, fake, az_fake), -pid(fake).mean())


def test_adversarial_schedule():
    vd = ViewDiscriminatorSettings(enabled=True, every=3)
    assert [is_adversarial_step(s, vd) for s in range(7)] == [
        True,
        False,
        False,
        True,
        False,
        False,
        True,
    ]
    assert not any(
        is_adversarial_step(s, ViewDiscriminatorSettings(enabled=False)) for s in range(4)
    )

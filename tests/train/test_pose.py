"""URA stage (b): the pseudo pose regressor trained on renders of a frozen generator."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch
import yaml
from safetensors.torch import load_file

from poseless.config import TrainPoseConfig
from poseless.errors import TrainingError
from poseless.geometry.cameras import LookAtCamera, resolve_render_camera
from poseless.models.mesh_decoder import Generator
from poseless.models.pose_regressor import PoseRegressor, angle_error_deg
from poseless.render.soft_raster import SoftRasterSettings
from poseless.train.checkpoint import list_checkpoints, save_model
from poseless.train.metrics_log import read_metrics
from poseless.train.pose import (
    ModelFileError,
    angle_loss,
    gan_camera_mismatch,
    load_generator,
    load_regressor,
    sample_renders,
    train_pose,
)

CAMERA = LookAtCamera(30.0, 2.732, 30.0)
TINY = TrainPoseConfig(
    iterations=6,
    batch_size=3,
    image_size=32,
    log_every=2,
    checkpoint_every=2,
    n_samples=3,
    progress=False,
)


@pytest.fixture(autouse=True)
def one_thread():
    # The 2-core CI machine is shared; one intra-op thread is several times faster there.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def tiny_generator(seed: int = 0) -> Generator:
    torch.manual_seed(seed)
    return Generator(z_dim=8, template_level=1).eval()


def fixed_shape_generator(level: int = 2) -> Generator:
    """A generator whose every code gives one asymmetric mesh: an ellipsoid long in x
    with a horn towards (0.5, 0.8, 0.6), so the silhouette determines the azimuth."""
    G = Generator(z_dim=4, template_level=level)
    t = G.decoder.template  # (V, 3)
    d = torch.tensor([0.5, 0.8, 0.6])
    d = d / d.norm()
    radii = torch.tensor([0.9, 0.3, 0.4]) * (1 + 1.5 * torch.relu(t @ d)[:, None] ** 4)
    target = (t * radii).clamp(-0.97, 0.97)  # before the final 0.5 factor
    base = (0.5 * t).abs()
    bias = torch.where(
        base > 0,
        torch.logit(target.abs().clamp_min(1e-4)) - torch.logit(base.clamp_min(1e-4)),
        torch.zeros_like(target),
    )
    with torch.no_grad():
        for lin in (G.decoder.fc_bias, G.decoder.fc_centroid):
            lin.weight.zero_()
            lin.bias.zero_()
        G.decoder.fc_bias.bias.copy_(bias.reshape(-1))
    return G.eval()


def test_angle_loss_matches_the_obvious_wrapped_difference():
    pred = torch.tensor([10.0, 350.0, 90.0, 0.0, 359.0], dtype=torch.float64)
    true = torch.tensor([350.0, 10.0, 270.0, 0.0, 1.0], dtype=torch.float64)
    expected = [20.0, 20.0, 180.0, 0.0, 2.0]
    assert math.isclose(
        float(angle_loss(pred, true)), math.radians(sum(expected) / 5), rel_tol=1e-12
    )
    # unit gradient away from the +-180 seam, sign of the wrapped difference
    p = torch.tensor([10.0, 350.0], dtype=torch.float64, requires_grad=True)
    angle_loss(p, torch.tensor([350.0, 10.0], dtype=torch.float64)).backward()
    assert torch.allclose(p.grad, torch.tensor([1.0, -1.0], dtype=torch.float64) * math.pi / 360)
    with pytest.raises(ValueError, match="must both be"):
        angle_loss(torch.zeros(3), torch.zeros(2))


def test_sample_renders_shapes_ranges_and_determinism():
    G = tiny_generator()
    raster = SoftRasterSettings(image_size=32)
    a = sample_renders(G, 4, torch.Generator().manual_seed(1), CAMERA, raster, (90.0, 180.0))
    b = sample_renders(G, 4, torch.Generator().manual_seed(1), CAMERA, raster, (90.0, 180.0))
    sil, az = a
    assert sil.shape == (4, 1, 32, 32) and az.shape == (4,)
    assert float(sil.min()) >= 0 and float(sil.max()) <= 1 and float(sil.max()) > 0.5
    assert bool(((az >= 90) & (az < 180)).all()), az
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_resolve_render_camera_prefers_the_dataset_camera():
    cfg = TrainPoseConfig(distance=3.0, fov_deg=40.0, elevation_deg=20.0)
    meta = {"camera": {"distance": 2.5, "fov_deg": 25.0}}
    assert resolve_render_camera(cfg, meta) == LookAtCamera(20.0, 2.5, 25.0)
    assert resolve_render_camera(cfg, {"camera": None}) == LookAtCamera(20.0, 3.0, 40.0)
    assert resolve_render_camera(dataclasses.replace(cfg, camera="config"), meta) == LookAtCamera(
        20.0, 3.0, 40.0
    )


def test_gan_camera_mismatch_reads_the_train_gan_record(tmp_path):
    assert gan_camera_mismatch(tmp_path, CAMERA) is None  # nothing recorded
    record = {"stage": "train_gan", "extra": {"camera": dataclasses.asdict(CAMERA)}}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(record))
    assert gan_camera_mismatch(tmp_path, CAMERA) is None
    message = gan_camera_mismatch(tmp_path, dataclasses.replace(CAMERA, elevation_deg=20.0))
    assert message and "elevation_deg: gan 30.0 vs pose 20.0" in message


def test_train_pose_tiny_run_writes_a_rebuildable_regressor(tmp_path):
    out, resume = tmp_path / "pose", tmp_path / "resume"
    result = train_pose(tiny_generator(), TINY, out, resume, seed=0, camera=CAMERA, device="cpu")
    assert result.steps == 6 and result.resumed_from is None
    assert sorted(p.name for p in out.iterdir()) == [
        "metrics.jsonl",
        "regressor.json",
        "regressor.safetensors",
        "samples.png",
    ]
    assert not (out / "checkpoints").exists(), "checkpoints belong in the resume dir"
    assert list_checkpoints(result.run_dir / "checkpoints"), "no resumable checkpoint written"
    assert result.run_dir.parent == resume
    records = read_metrics(out / "metrics.jsonl")
    assert [r["step"] for r in records] == [2, 4, 6]
    assert all("wall_s" not in r and r["lr/regressor"] == TINY.lr for r in records)
    assert all(0 <= r["loss/angle"] <= math.pi for r in records)
    reg, info = load_regressor(out)
    assert isinstance(reg, PoseRegressor) and info.input_size == 32
    assert info.camera == dataclasses.asdict(CAMERA) and info.model == {"head": "sigmoid"}
    pred = reg(torch.rand(2, 1, 32, 32))
    assert pred.shape == (2,) and bool(((pred >= 0) & (pred < 360)).all())


def test_lr_schedule_halves_at_the_milestones(tmp_path):
    cfg = dataclasses.replace(
        TINY, iterations=5, lr=1e-3, lr_milestones=(2, 4), log_every=1, n_samples=0
    )
    result = train_pose(
        tiny_generator(), cfg, tmp_path / "o", tmp_path / "r", seed=0, camera=CAMERA, device="cpu"
    )
    lrs = [r["lr/regressor"] for r in read_metrics(result.metrics_path)]
    # the record of step s shows the lr the next step will use
    assert lrs == pytest.approx([1e-3, 5e-4, 5e-4, 2.5e-4, 2.5e-4])
    assert result.samples_path is None


class Killed(Exception):
    """Stands in for SIGKILL in the middle of a run."""


def test_killed_run_resumes_bit_for_bit(tmp_path):
    cfg = dataclasses.replace(TINY, n_samples=0)
    full = train_pose(
        tiny_generator(),
        cfg,
        tmp_path / "full",
        tmp_path / "r_full",
        seed=3,
        camera=CAMERA,
        device="cpu",
    )

    def kill_at_5(step: int) -> None:
        if step == 5:
            raise Killed

    with pytest.raises(Killed):
        train_pose(
            tiny_generator(),
            cfg,
            tmp_path / "cut",
            tmp_path / "r_cut",
            seed=3,
            camera=CAMERA,
            device="cpu",
            step_hook=kill_at_5,
        )
    assert not (tmp_path / "cut" / "regressor.safetensors").exists()
    # a new process: the global RNG is wherever it is; the resume restores it
    torch.manual_seed(12345)
    resumed = train_pose(
        tiny_generator(),
        cfg,
        tmp_path / "cut",
        tmp_path / "r_cut",
        seed=3,
        camera=CAMERA,
        device="cpu",
    )
    assert resumed.resumed_from == 4 and resumed.steps == 6
    a = load_file(full.regressor_path)
    b = load_file(resumed.regressor_path)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), "resumed weights differ from uninterrupted"
    assert full.metrics_path.read_bytes() == resumed.metrics_path.read_bytes()


def test_changed_inputs_start_fresh_and_clear_stale_resume_state(tmp_path):
    cfg = dataclasses.replace(TINY, iterations=2, n_samples=0)
    first = train_pose(
        tiny_generator(), cfg, tmp_path / "a", tmp_path / "r", seed=0, camera=CAMERA, device="cpu"
    )
    again = train_pose(
        tiny_generator(), cfg, tmp_path / "b", tmp_path / "r", seed=0, camera=CAMERA, device="cpu"
    )
    assert again.resumed_from == 2 and again.run_dir == first.run_dir  # finished: nothing to do
    other = train_pose(
        tiny_generator(),
        cfg,
        tmp_path / "c",
        tmp_path / "r",
        seed=0,
        camera=CAMERA,
        device="cpu",
        generator_sha256="another generator",
    )
    assert other.resumed_from is None and other.run_dir != first.run_dir
    assert not first.run_dir.exists(), "stale resume state of an older config was kept"


def test_divergence_raises_training_error(tmp_path):
    # lr 1e30 blows the weights up after the first step: the second loss is NaN
    cfg = dataclasses.replace(TINY, iterations=3, lr=1e30, n_samples=0)
    with pytest.raises(TrainingError, match="step 1: loss term 'angle' is nan"):
        train_pose(
            tiny_generator(),
            cfg,
            tmp_path / "o",
            tmp_path / "r",
            seed=0,
            camera=CAMERA,
            device="cpu",
        )
    assert not (tmp_path / "o" / "regressor.safetensors").exists()


def test_missing_or_broken_model_files_name_the_file(tmp_path):
    with pytest.raises(
        ModelFileError, match=r"generator\.safetensors: generator weights not found"
    ):
        load_generator(tmp_path)
    with pytest.raises(
        ModelFileError, match=r"regressor\.safetensors: regressor weights not found"
    ):
        load_regressor(tmp_path)
    # the train_gan format: generator.safetensors + generator.json (Generator.config())
    G = tiny_generator()
    save_model(tmp_path / "generator.safetensors", G, G.config())
    loaded = load_generator(tmp_path)
    assert torch.equal(loaded.decoder.fc1.weight, G.decoder.fc1.weight)
    assert not any(p.requires_grad for p in loaded.parameters())
    (tmp_path / "generator.json").unlink()
    with pytest.raises(ModelFileError, match=r"sidecar of generator\.safetensors not found"):
        load_generator(tmp_path)
    save_model(tmp_path / "regressor.safetensors", PoseRegressor(), {"head": "sigmoid"})
    with pytest.raises(ModelFileError, match="regressor"):
        load_regressor(tmp_path)
    meta = json.loads((tmp_path / "regressor.json").read_text())
    assert meta["config"] == {"head": "sigmoid"}


def test_regressor_learns_the_azimuth_of_a_fixed_asymmetric_shape(tmp_path):
    """Chance level of the mean wrapped error is 90 deg; a short run must do much better."""
    G = fixed_shape_generator()
    cfg = TrainPoseConfig(
        iterations=60,
        batch_size=8,
        lr=1e-3,
        image_size=32,
        log_every=20,
        checkpoint_every=1000,
        n_samples=0,
        progress=False,
    )
    train_pose(G, cfg, tmp_path / "o", tmp_path / "r", seed=0, camera=CAMERA, device="cpu")
    reg, _ = load_regressor(tmp_path / "o")
    raster = SoftRasterSettings(image_size=32)
    sil, az = sample_renders(G, 64, torch.Generator().manual_seed(99), CAMERA, raster)
    with torch.no_grad():
        err = angle_error_deg(reg(sil), az)
    assert float(err.mean()) < 45.0, f"mean held-out error {float(err.mean()):.1f} deg"
    assert float(err.median()) < 25.0, f"median held-out error {float(err.median()):.1f} deg"

"""URA stage (a) library: train_gan runs, resumes bit for bit, and is driven by its config."""

import dataclasses
import math

import pytest
import torch

import poseless.train.gan as gan
from poseless.config import ConfigError, Params, TrainGanConfig, from_dict
from poseless.errors import PoselessError
from poseless.geometry.cameras import LookAtCamera, resolve_render_camera
from poseless.models.discriminator import SilhouetteDiscriminator
from poseless.models.mesh_decoder import Generator
from poseless.render.soft_raster import SoftRasterSettings, render_silhouettes
from poseless.train.checkpoint import list_checkpoints, load_model
from poseless.train.gan import (
    evenly_spaced_azimuths,
    render_views,
    train_gan,
    uniform_azimuths,
)
from poseless.train.metrics_log import read_metrics

TINY = TrainGanConfig(
    iterations=3,
    batch_size=2,
    template_level=1,
    image_size=32,
    log_every=1,
    checkpoint_every=2,
    progress=False,
    n_samples=2,
    n_views=3,
)
CAMERA = LookAtCamera(30.0, 2.732, 30.0)


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread: on a shared, busy CPU two threads run these tiny nets ~20x slower."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def random_masks(n=8, size=32):
    g = torch.Generator().manual_seed(0)
    masks = torch.zeros(n, 1, size, size)
    for i in range(n):
        r = int(torch.randint(4, size // 2 - 2, (1,), generator=g))
        c = size // 2
        masks[i, :, c - r : c + r, c - r // 2 : c + r // 2] = 1.0
    return masks


def run(masks, cfg, tmp_path, name="out", resume="resume", **kw):
    return train_gan(
        masks, cfg, tmp_path / name, tmp_path / resume, seed=0, camera=CAMERA, device="cpu", **kw
    )


def test_train_gan_runs_resumes_bit_for_bit_and_extends(tmp_path):
    masks = random_masks()
    whole = run(masks, TINY, tmp_path, name="whole", resume="r1")
    assert whole.steps == 3 and whole.resumed_from is None
    names = {p.name for p in (tmp_path / "whole").iterdir()}
    assert names == {
        "generator.safetensors",
        "generator.json",
        "discriminator.safetensors",
        "discriminator.json",
        "metrics.jsonl",
        "curves.png",
        "samples.png",
    }, names
    records = read_metrics(whole.metrics_path)
    assert [r["step"] for r in records] == [1, 2, 3]
    assert all("wall_s" not in r for r in records), "the artifact's metrics must be byte-stable"
    # D every iteration, G at iterations 0 (and 3, ...): step 1's record has g terms.
    g_keys = {"loss/g_adv", "loss/g_scale", "loss/g_laplacian", "loss/g_flatten"}
    assert {"loss/d", "loss/gp", "loss/wasserstein"} | g_keys <= set(records[0])
    assert "loss/g_adv" not in records[1] and "loss/g_adv" not in records[2]
    assert records[0]["loss/g_scale"] > 0
    G, cfg = load_model(whole.generator_path, lambda c: Generator(**c))
    assert cfg["template_level"] == 1
    verts, faces = G(G.sample_z(2))
    assert verts.shape == (2, 42, 3) and verts.abs().max() <= 0.5
    D, _ = load_model(whole.discriminator_path, lambda c: SilhouetteDiscriminator(**c))
    assert D(masks[:2]).shape == (2,)
    torch.manual_seed(1)
    fresh = Generator(template_level=1)
    assert not torch.equal(fresh.decoder.fc1.weight, G.decoder.fc1.weight)
    assert list_checkpoints(whole.run_dir / "checkpoints"), "checkpoints live in the resume dir"

    # Killed during step 2 (checkpoint at 2 steps done), then resumed: same bytes.
    stale = tmp_path / "r2" / "0123456789abcdef"
    stale.mkdir(parents=True)

    def kill(step):
        if step == 2:
            raise KeyboardInterrupt

    uint8 = (masks * 255).to(torch.uint8)  # the stage's dtype; must train identically
    with pytest.raises(KeyboardInterrupt):
        run(uint8, TINY, tmp_path, name="killed", resume="r2", step_hook=kill)
    assert not stale.exists(), "stale resume state of another config must be removed"
    resumed = run(uint8, TINY, tmp_path, name="resumed", resume="r2")
    assert resumed.resumed_from == 2 and resumed.steps == 3
    for name in sorted(names):
        a, b = (tmp_path / "whole" / name).read_bytes(), (tmp_path / "resumed" / name).read_bytes()
        assert a == b, f"{name} differs between the resumed and the uninterrupted run"

    longer = dataclasses.replace(TINY, iterations=4)
    extended = run(masks, longer, tmp_path, name="out2", resume="r1")
    assert extended.resumed_from == 3 and extended.steps == 4
    assert extended.run_dir == whole.run_dir, "iterations must not change the resume key"
    assert [r["step"] for r in read_metrics(extended.metrics_path)] == [1, 2, 3, 4]


def test_resume_key_holds_what_changes_the_weights():
    masks = random_masks()
    sha = gan.masks_sha256(masks)
    key = gan.resume_key(TINY, 0, CAMERA, sha)
    same = [
        dataclasses.replace(TINY, iterations=9, log_every=5, n_samples=1, progress=True),
        dataclasses.replace(TINY, health=dataclasses.replace(TINY.health, fail_on_collapse=False)),
    ]
    for cfg in same:
        assert gan.resume_key(cfg, 0, CAMERA, sha) == key
    assert gan.resume_key(dataclasses.replace(TINY, lr=2e-4), 0, CAMERA, sha) != key
    assert gan.resume_key(TINY, 1, CAMERA, sha) != key
    assert gan.resume_key(TINY, 0, LookAtCamera(30.0, 3.0, 30.0), sha) != key
    assert gan.masks_sha256(masks[:6]) != sha
    assert gan.masks_sha256((masks * 255).to(torch.uint8)) != sha


def test_config_reaches_the_renderer_and_camera(tmp_path, monkeypatch):
    seen = {"azimuth": [], "elevation": set(), "distance": set(), "raster": set()}
    real_extrinsics, real_render = gan.kato_extrinsics, gan.render_silhouettes

    def spy_extrinsics(azimuth, elevation, distance):
        seen["azimuth"].append(torch.as_tensor(azimuth).clone())
        seen["elevation"].add(float(elevation))
        seen["distance"].add(float(distance))
        return real_extrinsics(azimuth, elevation, distance)

    def spy_render(vertices, faces, R, t, settings):
        seen["raster"].add((settings.image_size, settings.sigma, settings.fov_deg))
        return real_render(vertices, faces, R, t, settings)

    monkeypatch.setattr(gan, "kato_extrinsics", spy_extrinsics)
    monkeypatch.setattr(gan, "render_silhouettes", spy_render)
    cfg = dataclasses.replace(
        TINY, iterations=1, azimuth_range_deg=(90.0, 100.0), sigma=3e-4, n_samples=0
    )
    camera = LookAtCamera(elevation_deg=10.0, distance=3.5, fov_deg=40.0)
    train_gan(
        random_masks(), cfg, tmp_path / "o", tmp_path / "r", seed=0, camera=camera, device="cpu"
    )
    az = torch.rad2deg(torch.cat(seen["azimuth"]))
    assert len(az) == 4 and az.min() >= 90.0 and az.max() < 100.0, az
    assert seen["elevation"] == {math.radians(10.0)} and seen["distance"] == {3.5}
    assert seen["raster"] == {(32, 3e-4, 40.0)}


def test_resolve_render_camera_prefers_the_dataset_camera():
    meta = {"camera": {"fov_deg": 20.0, "distance": 3.0}}
    assert resolve_render_camera(TINY, meta) == LookAtCamera(30.0, 3.0, 20.0)
    assert resolve_render_camera(TINY, {"camera": None}) == LookAtCamera(30.0, 2.732, 30.0)
    cfg = dataclasses.replace(TINY, camera="config", distance=4.0, elevation_deg=20.0)
    assert resolve_render_camera(cfg, meta) == LookAtCamera(20.0, 4.0, 30.0)
    with pytest.raises(PoselessError, match="camera must hold distance and fov_deg"):
        resolve_render_camera(TINY, {"camera": {"fov_deg": 20.0}})


def test_azimuth_samplers_stay_in_range():
    rng = torch.Generator().manual_seed(0)
    az = torch.rad2deg(uniform_azimuths(1000, rng, (10.0, 20.0)))
    assert az.min() >= 10.0 and az.max() < 20.0 and az.std() > 2.0
    assert evenly_spaced_azimuths(4, (0.0, 360.0)).tolist() == [0.0, 90.0, 180.0, 270.0]


def test_render_views_matches_per_item_renders():
    torch.manual_seed(0)
    G = Generator(template_level=1)
    z = G.sample_z(2, torch.Generator().manual_seed(1))
    azimuth_deg = torch.tensor([0.0, 70.0, 200.0])
    raster = SoftRasterSettings(image_size=16)
    grid, verts = render_views(G, z, azimuth_deg, CAMERA, raster)
    assert grid.shape == (2, 3, 1, 16, 16) and verts.shape == (2, 42, 3)
    for i in range(2):
        for k in range(3):
            R, t = gan.kato_extrinsics(
                torch.deg2rad(azimuth_deg[k : k + 1]), math.radians(30.0), 2.732
            )
            ref = render_silhouettes(verts[i : i + 1], G.faces, R, t, raster)
            torch.testing.assert_close(grid[i, k], ref[0], msg=f"code {i}, azimuth {k}")


def test_bad_masks_are_refused(tmp_path):
    with pytest.raises(ValueError, match=r"masks must be 32 x 32 \(train_gan.image_size\)"):
        run(random_masks(size=64), TINY, tmp_path)
    with pytest.raises(ValueError, match="no training masks"):
        run(random_masks(n=0), TINY, tmp_path)


@pytest.mark.parametrize(
    "section, message",
    [
        ({"azimuth_range_deg": [10, 5]}, "azimuth_range_deg: need 0 <= lo < hi <= 360"),
        ({"image_size": 8}, "image_size: must be >= 16"),
        ({"n_critic": 0}, "n_critic: must be >= 1"),
        ({"health": {"max_area_tv": 2.0}}, "max_area_tv: must lie in"),
        ({"health": {"n_codes": 1}}, "n_codes, n_azimuths and n_real must be >= 2"),
        ({"seed": 1}, "train_gan.seed: unknown key"),
    ],
)
def test_config_validation(section, message):
    with pytest.raises(ConfigError, match=message):
        from_dict(Params, {"train_gan": section})

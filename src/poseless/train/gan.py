"""URA stage (a): the pose-independent mesh GAN (``train_gan``).

Schedule (REFERENCE "URA"; every number comes from
:class:`~poseless.config.TrainGanConfig`): the critic D steps every iteration,
the generator G every ``n_critic``-th (iterations 0, 3, 6, ... by default);
Adam with ``betas``, ``lr`` for both, multiplied by ``lr_gamma`` at each of
``lr_milestones``.

* D step: real = random training silhouettes; fake = G(z), z ~ N(0, z_std^2),
  rendered (no graph into G) at ``elevation_deg`` and azimuth ~
  U[``azimuth_range_deg``); WGAN-GP loss with ``gp_weight`` and the per-sample
  gradient norm (``gp_mode``; :mod:`poseless.losses.gan`).
* G step: fresh z and azimuths; loss
  ``-mean D(fake) + s * (laplacian_weight * Laplacian + flatten_weight * flatten)``
  with ``s = |mean d(-D)/dW_bias| / adaptive_reference`` (adaptive weight,
  recomputed every G step; ``adaptive_weight: false`` uses s = 1).

The camera (distance, field of view) is the prepared dataset's when it records
one and ``camera: dataset`` (:func:`resolve_render_camera`), else the config's.

All randomness (real indices, z, azimuths, GP interpolation weights) comes from
one CPU ``torch.Generator`` seeded with the stage seed and checkpointed by
:class:`~poseless.train.loop.TrainLoop`, so a killed run resumes bit for bit on
the CPU. Resumable state lives in a *resume directory* outside the artifact
folder (Snakemake deletes declared outputs before a rerun), in a sub-folder
named by the hash of everything that changes the trained weights
(:func:`resume_key`: config minus loop length/logging/figures/health, seed,
camera, the training masks' hash), so a changed input never resumes a stale run.

Artifact folder (filled by :func:`train_gan`): ``generator.safetensors`` /
``discriminator.safetensors`` with their JSON config sidecars, ``metrics.jsonl``
(without wall-clock times: byte-identical between identical runs),
``curves.png`` (training curves) and ``samples.png`` (``n_samples`` codes x
``n_views`` azimuths).
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from poseless.config import TrainGanConfig
from poseless.data.prepared import DatasetError, PreparedDataset
from poseless.geometry.cameras import LookAtCamera, kato_extrinsics
from poseless.geometry.mesh import MeshTopology, flatten_loss, laplacian_loss
from poseless.losses.gan import adaptive_geometry_scale, critic_loss, generator_loss
from poseless.models.discriminator import SilhouetteDiscriminator
from poseless.models.mesh_decoder import Generator
from poseless.render.soft_raster import SoftRasterSettings, render_silhouettes
from poseless.report.figures import image_grid_png, training_curves_png
from poseless.train.checkpoint import save_model
from poseless.train.loop import keyed_loop
from poseless.train.metrics_log import read_metrics
from poseless.utils import select_device, write_bytes_atomic, write_text_atomic

log = logging.getLogger(__name__)

GENERATOR_FILE = "generator.safetensors"
"""The generator's weights (sidecar ``generator.json``: ``Generator.config()``)."""
DISCRIMINATOR_FILE = "discriminator.safetensors"
"""The critic's weights (sidecar ``discriminator.json``)."""
METRICS_FILE = "metrics.jsonl"
"""Training metrics (JSON lines, no wall-clock times) in the output folder."""
CURVES_FILE = "curves.png"
"""Training curves figure."""
SAMPLES_FILE = "samples.png"
"""Grid of G(z) renders: one row per code, one column per azimuth."""

_NOT_IN_KEY = (
    "iterations",
    "log_every",
    "checkpoint_every",
    "keep_last",
    "progress",
    "n_samples",
    "n_views",
    "health",
)
"""Config fields that do not change the trained weights (kept out of the resume key)."""

CURVE_PANELS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("critic loss", ("loss/d",)),
    ("Wasserstein estimate", ("loss/wasserstein",)),
    ("gradient penalty", ("loss/gp",)),
    ("G adversarial loss", ("loss/g_adv",)),
    ("Laplacian, flatten (unweighted)", ("loss/g_laplacian", "loss/g_flatten")),
    ("geometry term (weighted, before s)", ("loss/g_geometry",)),
    ("adaptive geometry scale s", ("loss/g_scale",)),
    ("learning rate", ("lr/generator", "lr/discriminator")),
)
"""Panels of curves.png: (title, metrics.jsonl keys)."""


def raster_settings(cfg: TrainGanConfig, camera: LookAtCamera) -> SoftRasterSettings:
    """SoftRas settings of the fake renders (size and sigma from ``cfg``, fov from ``camera``)."""
    return SoftRasterSettings(image_size=cfg.image_size, sigma=cfg.sigma, fov_deg=camera.fov_deg)


def uniform_azimuths(
    n: int, rng: torch.Generator, azimuth_range_deg: tuple[float, float]
) -> torch.Tensor:
    """(n,) float32 azimuths in radians ~ U[lo, hi) degrees, drawn on the CPU from ``rng``."""
    lo, hi = azimuth_range_deg
    deg = lo + torch.rand(n, generator=rng, dtype=torch.float64) * (hi - lo)
    deg = torch.where(deg >= hi, torch.full_like(deg, lo), deg)
    return torch.deg2rad(deg).float()


def evenly_spaced_azimuths(n: int, azimuth_range_deg: tuple[float, float]) -> torch.Tensor:
    """(n,) degrees lo, lo + (hi - lo)/n, ...: the figure's and health checks' views."""
    lo, hi = azimuth_range_deg
    return lo + torch.arange(n, dtype=torch.float64).float() * ((hi - lo) / n)


def render_views(
    G: Generator,
    z: torch.Tensor,
    azimuth_deg: torch.Tensor,
    camera: LookAtCamera,
    raster: SoftRasterSettings,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Every code rendered at every azimuth (no graph).

    Args:
        G: the generator (its device is used).
        z: (N, z_dim) codes.
        azimuth_deg: (K,) azimuths in degrees.
    Returns:
        silhouettes (N, K, 1, S, S) float32 in [0, 1] and vertices (N, V, 3), on G's device.
    """
    device = G.decoder.fc1.weight.device
    n, k = z.shape[0], azimuth_deg.shape[0]
    R, t = kato_extrinsics(
        torch.deg2rad(azimuth_deg.float()).to(device),
        math.radians(camera.elevation_deg),
        camera.distance,
    )  # (K, 3, 3), (K, 3)
    with torch.no_grad():
        vertices, faces = G(z.to(device))
        verts = vertices.float().repeat_interleave(k, dim=0)  # (N*K, V, 3)
        sil = render_silhouettes(verts, faces, R.repeat(n, 1, 1), t.repeat(n, 1), raster)
    return sil.view(n, k, 1, raster.image_size, raster.image_size), vertices


def masks_sha256(masks: torch.Tensor) -> str:
    """sha256 of a mask tensor's shape, dtype and bytes (identifies the training data)."""
    arr = masks.detach().cpu().contiguous()
    h = hashlib.sha256(f"{tuple(arr.shape)}{arr.dtype}".encode())
    h.update(arr.numpy().tobytes())
    return h.hexdigest()


def resume_key(cfg: TrainGanConfig, seed: int, camera: LookAtCamera, data_sha256: str) -> dict:
    """Everything that changes the trained weights (JSON); its hash names the resume folder."""
    keep = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in _NOT_IN_KEY}
    keep["camera_resolved"] = dataclasses.asdict(camera)
    keep["seed"] = int(seed)
    keep["masks_sha256"] = data_sha256
    return json.loads(json.dumps(keep, sort_keys=True))


@dataclass(frozen=True)
class TrainGanResult:
    """What :func:`train_gan` wrote and did."""

    generator_path: Path
    """``generator.safetensors`` (config sidecar ``generator.json``)."""
    discriminator_path: Path
    """``discriminator.safetensors`` (config sidecar ``discriminator.json``)."""
    metrics_path: Path
    """``metrics.jsonl`` in the output folder."""
    curves_path: Path
    """``curves.png``."""
    samples_path: Path | None
    """``samples.png`` (None when ``n_samples`` is 0)."""
    run_dir: Path
    """The resume sub-folder holding the checkpoints."""
    steps: int
    """Iterations completed."""
    resumed_from: int | None
    """Iteration the run resumed from (None: fresh start)."""
    generator: Generator
    """The trained generator (eval mode, on the training device)."""


def _check_masks(masks: torch.Tensor, size: int) -> None:
    if masks.ndim != 4 or masks.shape[1] != 1:
        raise ValueError(f"train_gan: masks must be (N, 1, H, W), got {tuple(masks.shape)}")
    if tuple(masks.shape[-2:]) != (size, size):
        raise ValueError(
            f"train_gan: masks must be {size} x {size} (train_gan.image_size), "
            f"got {tuple(masks.shape[-2:])}; resize them first"
        )
    if masks.shape[0] == 0:
        raise ValueError("train_gan: no training masks")


def load_train_masks(
    dataset: PreparedDataset, size: int, binarize: bool = False, category: str | None = None
) -> torch.Tensor:
    """The train split's masks as (N, 1, size, size) uint8, resized (box / bilinear) if needed.

    ``binarize`` thresholds the resized masks at 0.5 (values 0 or 255); ``category``
    keeps only that category's items.
    """
    ids = dataset.ids("train")
    if category is not None:
        ids = [i for i in ids if str(dataset.row(i)["category"]) == category]
    if not ids:
        which = f" has no {category!r} items" if category is not None else " is empty"
        raise DatasetError(f"{dataset.root}: the train split{which}; nothing to train the GAN on")
    out = np.empty((len(ids), 1, size, size), np.uint8)
    for k, item in enumerate(ids):
        path = dataset.root / dataset.row(item)["mask"]
        try:
            with Image.open(path) as im:
                m = im.convert("L")
                if m.size != (size, size):
                    shrink = m.size[0] > size
                    m = m.resize(
                        (size, size), Image.Resampling.BOX if shrink else Image.Resampling.BILINEAR
                    )
                out[k, 0] = np.asarray(m)
        except OSError as exc:
            raise DatasetError(f"{path}: cannot read prepared mask: {exc}") from exc
    if binarize:
        out = np.where(out >= 128, 255, 0).astype(np.uint8)
    return torch.from_numpy(out)


def as_float_masks(masks: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] / bool / float masks -> float32 in [0, 1] (same shape)."""
    if masks.dtype == torch.uint8:
        return masks.float() / 255.0
    return masks.float()


def train_gan(
    masks: torch.Tensor,
    cfg: TrainGanConfig,
    out_dir: str | Path,
    resume_dir: str | Path,
    *,
    seed: int,
    camera: LookAtCamera,
    device: str | torch.device = "auto",
    step_hook: Callable[[int], None] | None = None,
) -> TrainGanResult:
    """Train URA's mesh generator against a silhouette critic; resumes if interrupted.

    Args:
        masks: (N, 1, S, S) training silhouettes with S = ``cfg.image_size``;
            uint8 in [0, 255] (kept so on the device; batches are converted),
            bool, or float in [0, 1].
        cfg: the ``train_gan`` section.
        out_dir: folder to fill with the artifacts (the stage passes a temporary
            folder it renames when done).
        resume_dir: where resumable checkpoints live, outside ``out_dir``; the run
            uses the sub-folder named by the hash of :func:`resume_key` and deletes
            sibling sub-folders of other configs.
        seed: seeds the networks' initialisation and the data/noise stream.
        camera: the fake renders' camera (:func:`resolve_render_camera`).
        device: "auto", "cpu", "cuda", ... or a torch.device.
        step_hook: called with the step index before each iteration (tests use it
            to interrupt a run).
    """
    out_dir, resume_dir = Path(out_dir), Path(resume_dir)
    _check_masks(masks, cfg.image_size)
    device = device if isinstance(device, torch.device) else select_device(device)
    key = resume_key(cfg, seed, camera, masks_sha256(masks))
    masks = masks.to(device)
    n_real = masks.shape[0]
    loop = keyed_loop(resume_dir, key, cfg, device)
    torch.manual_seed(seed)
    G = Generator(cfg.z_dim, cfg.z_std, cfg.template_level).to(device)
    D = SilhouetteDiscriminator().to(device)
    opt_g = torch.optim.Adam(G.parameters(), lr=cfg.lr, betas=cfg.betas)
    opt_d = torch.optim.Adam(D.parameters(), lr=cfg.lr, betas=cfg.betas)
    sched_g = torch.optim.lr_scheduler.MultiStepLR(opt_g, list(cfg.lr_milestones), cfg.lr_gamma)
    sched_d = torch.optim.lr_scheduler.MultiStepLR(opt_d, list(cfg.lr_milestones), cfg.lr_gamma)
    rng = torch.Generator().manual_seed(seed)
    loop.track(
        modules={"generator": G, "discriminator": D},
        optimizers={"generator": opt_g, "discriminator": opt_d},
        schedulers={"generator": sched_g, "discriminator": sched_d},
        generators={"data": rng},
    )
    topology = MeshTopology.icosphere(cfg.template_level, device=device)
    raster = raster_settings(cfg, camera)
    elevation = math.radians(camera.elevation_deg)

    def render_fakes(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        z = G.sample_z(n, rng)
        azimuth = uniform_azimuths(n, rng, cfg.azimuth_range_deg).to(device)
        R, t = kato_extrinsics(azimuth, elevation, camera.distance)
        with loop.autocast():
            vertices, faces = G(z)
        sil = render_silhouettes(vertices.float(), faces, R, t, raster)  # (n, 1, S, S)
        return sil, vertices

    def step_fn(step: int) -> dict[str, torch.Tensor]:
        if step_hook is not None:
            step_hook(step)
        # Critic step.
        idx = torch.randint(n_real, (cfg.batch_size,), generator=rng).to(device)
        real = as_float_masks(masks[idx])
        with torch.no_grad():
            fake, _ = render_fakes(cfg.batch_size)
        opt_d.zero_grad(set_to_none=True)
        with loop.autocast():
            d_out = critic_loss(
                lambda x: D(x).float(), real, fake, cfg.gp_weight, cfg.gp_mode, generator=rng
            )
        loop.backward(d_out.loss)
        loop.step(opt_d)
        losses = {
            "d": d_out.loss.detach(),
            "wasserstein": d_out.wasserstein,
            "gp": d_out.gradient_penalty,
        }
        if step % cfg.n_critic != 0:
            return losses
        # Generator step.
        fake, vertices = render_fakes(cfg.batch_size)
        with loop.autocast():
            adv = generator_loss(D(fake).float())
        lap = laplacian_loss(vertices.float(), topology.laplacian)
        flat = flatten_loss(vertices.float(), topology.dihedral)
        geometry = cfg.laplacian_weight * lap + cfg.flatten_weight * flat
        if cfg.adaptive_weight:
            scale = adaptive_geometry_scale(adv, G.bias_head.weight, cfg.adaptive_reference)
        else:
            scale = torch.ones((), device=device)
        opt_g.zero_grad(set_to_none=True)
        loop.backward(adv + scale * geometry)
        loop.step(opt_g)
        losses.update(
            g_adv=adv.detach(),
            g_laplacian=lap.detach(),
            g_flatten=flat.detach(),
            g_geometry=geometry.detach(),
            g_scale=scale,
        )
        return losses

    result = loop.run(step_fn)
    G.eval()
    D.eval()

    out_dir.mkdir(parents=True, exist_ok=True)
    gen_path = out_dir / GENERATOR_FILE
    disc_path = out_dir / DISCRIMINATOR_FILE
    save_model(gen_path, copy.deepcopy(G).cpu(), G.config())
    save_model(disc_path, copy.deepcopy(D).cpu(), D.config())
    # Wall-clock times vary between identical runs; the artifact keeps the rest.
    records = [
        {k: v for k, v in r.items() if k != "wall_s"} for r in read_metrics(result.metrics_path)
    ]
    metrics_path = out_dir / METRICS_FILE
    write_text_atomic(metrics_path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in records))
    curves_path = out_dir / CURVES_FILE
    write_bytes_atomic(
        curves_path,
        training_curves_png(records, CURVE_PANELS, title="train_gan: training curves", columns=4),
    )
    samples_path = None
    if cfg.n_samples > 0:
        samples_path = out_dir / SAMPLES_FILE
        write_samples(samples_path, G, cfg, camera, seed)
    return TrainGanResult(
        gen_path,
        disc_path,
        metrics_path,
        curves_path,
        samples_path,
        loop.out_dir,
        result.step,
        result.resumed_from,
        G,
    )


def write_samples(
    path: str | Path, G: Generator, cfg: TrainGanConfig, camera: LookAtCamera, seed: int
) -> None:
    """samples.png: ``n_samples`` codes (rows) x ``n_views`` evenly spaced azimuths (columns).

    The codes come from a stream of their own (seeded ``seed + 1``), so the figure
    shows the same codes whatever happened in training.
    """
    fig_rng = torch.Generator().manual_seed(seed + 1)
    z = G.sample_z(cfg.n_samples, fig_rng)
    azimuth_deg = evenly_spaced_azimuths(cfg.n_views, cfg.azimuth_range_deg)
    sil, _ = render_views(G, z, azimuth_deg, camera, raster_settings(cfg, camera))
    write_bytes_atomic(
        path,
        image_grid_png(
            sil[:, :, 0].cpu(),
            col_labels=[f"{float(a):.0f}°" for a in azimuth_deg],
            row_labels=[f"z{i}" for i in range(cfg.n_samples)],
        ),
    )


def last_losses(records: list[dict[str, Any]]) -> dict[str, float]:
    """The newest value of every ``loss/*`` key in metrics records (keys without the prefix)."""
    out: dict[str, float] = {}
    for r in records:
        for k, v in r.items():
            if k.startswith("loss/") and isinstance(v, int | float):
                out[k[5:]] = float(v)
    return out

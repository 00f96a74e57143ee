"""URA stage (a): the pose-independent mesh GAN (``train_gan``).

Schedule (REFERENCE "URA"): the critic D steps every iteration, the generator G
every ``n_critic`` = 3rd (iterations 0, 3, 6, ...); Adam (0.9, 0.999), lr 1e-4
for both, halved at 200k/300k/400k of 500k iterations; batch 32.

* D step: real = random training silhouettes; fake = G(z) rendered (no graph
  into G) at elevation 30 deg, azimuth ~ U[0, 2 pi); WGAN-GP loss with
  lambda = 10 and the per-sample gradient norm (:mod:`poseless.losses.gan`).
* G step: fresh z and azimuths; loss
  ``-mean D(fake) + s * (w_lap * Laplacian + w_flat * flatten)`` with
  ``s = |mean d(-D)/dW_bias| / 2e-5`` (adaptive weight, recomputed every G
  step; ``adaptive_weight=False`` uses s = 1).

All randomness (real indices, z, azimuths, GP interpolation weights) comes from
one CPU ``torch.Generator`` seeded with ``seed`` and checkpointed, so a killed
run resumes exactly. Outputs in ``out_dir``: ``checkpoints/``,
``metrics.jsonl``, and the final ``generator.safetensors`` /
``discriminator.safetensors`` with their JSON config sidecars.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from poseless.geometry.cameras import KATO_DISTANCE, KATO_ELEVATION_DEG, kato_extrinsics
from poseless.geometry.mesh import MeshTopology, flatten_loss, laplacian_loss
from poseless.losses.gan import (
    ADAPTIVE_REFERENCE,
    GP_WEIGHT,
    adaptive_geometry_scale,
    critic_loss,
    generator_loss,
)
from poseless.models.discriminator import SilhouetteDiscriminator
from poseless.models.mesh_decoder import Z_DIM, Z_STD, Generator
from poseless.render.soft_raster import SoftRasterSettings, render_silhouettes
from poseless.train.checkpoint import save_model
from poseless.train.loop import LoopSettings, TrainLoop
from poseless.utils import select_device


@dataclass(frozen=True)
class TrainGanConfig:
    """Stage ``train_gan``: URA's pose-independent mesh GAN (defaults: the paper's ShapeNet run)."""

    iterations: int = 500_000
    """Total iterations (D steps)."""
    batch_size: int = 32
    """Real and fake silhouettes per D step; fakes per G step."""
    lr: float = 1e-4
    """Adam learning rate of G and D."""
    lr_milestones: tuple[int, ...] = (200_000, 300_000, 400_000)
    """Iterations at which both learning rates are multiplied by ``lr_gamma``."""
    lr_gamma: float = 0.5
    """Learning-rate factor at each milestone."""
    betas: tuple[float, float] = (0.9, 0.999)
    """Adam betas."""
    n_critic: int = 3
    """G steps every ``n_critic`` iterations (D every iteration)."""
    gp_weight: float = GP_WEIGHT
    """WGAN-GP lambda."""
    gp_mode: Literal["per_sample", "per_pixel"] = "per_sample"
    """Gradient norm per sample (Gulrajani) or per pixel (URA code defect)."""
    laplacian_weight: float = 5e-3
    """Weight of the Laplacian term (CUB: 5e-2)."""
    flatten_weight: float = 5e-3
    """Weight of the flatten term."""
    adaptive_weight: bool = True
    """Rescale the geometry term by |mean d(-D)/dW_bias| / adaptive_reference."""
    adaptive_reference: float = ADAPTIVE_REFERENCE
    """Denominator of the adaptive weight."""
    z_dim: int = Z_DIM
    """Generator code size."""
    z_std: float = Z_STD
    """Standard deviation of the generator codes."""
    template_level: int = 3
    """Icosphere level of the template (3: 642 vertices)."""
    elevation_deg: float = KATO_ELEVATION_DEG
    """Elevation of the fake views in degrees."""
    distance: float = KATO_DISTANCE
    """Camera distance of the fake views."""
    fov_deg: float = 30.0
    """Full field of view of the renderer in degrees."""
    sigma: float = 1e-4
    """SoftRas silhouette sharpness."""
    seed: int = 0
    """Seed of the weights' initialisation and of the data/noise stream."""
    log_every: int = 100
    """Metrics record every this many iterations."""
    checkpoint_every: int = 5000
    """Checkpoint every this many iterations."""
    keep_last: int = 2
    """Checkpoints kept."""
    mixed_precision: Literal["off", "bf16", "fp16"] = "off"
    """Autocast of the networks on CUDA (the renderer stays float32). Prefer bf16:
    under fp16 the gradient penalty's inner gradient is not loss-scaled."""
    progress: bool = True
    """Show a progress bar."""


_LOOP_ONLY = ("iterations", "log_every", "checkpoint_every", "keep_last", "progress")


@dataclass(frozen=True)
class TrainGanResult:
    """Where ``train_gan`` left its outputs."""

    generator_path: Path
    """``generator.safetensors`` (config sidecar ``generator.json``)."""
    discriminator_path: Path
    """``discriminator.safetensors`` (config sidecar ``discriminator.json``)."""
    metrics_path: Path
    """``metrics.jsonl``."""
    steps: int
    """Iterations completed."""
    resumed_from: int | None
    """Iteration the run resumed from (None: fresh start)."""


def _as_float_masks(masks: torch.Tensor) -> torch.Tensor:
    if masks.ndim != 4 or masks.shape[1] != 1:
        raise ValueError(f"train_gan: masks must be (N, 1, H, W), got {tuple(masks.shape)}")
    if masks.shape[-1] != masks.shape[-2]:
        raise ValueError(f"train_gan: masks must be square, got {tuple(masks.shape[-2:])}")
    if masks.shape[0] == 0:
        raise ValueError("train_gan: no training masks")
    if masks.dtype == torch.uint8:
        return masks.float() / 255.0
    return masks.float()


def train_gan(
    prepared_masks: torch.Tensor,
    cfg: TrainGanConfig,
    device: str | torch.device,
    out_dir: str | Path,
) -> TrainGanResult:
    """Train URA's mesh generator against a silhouette critic; resumes if interrupted.

    Args:
        prepared_masks: (N, 1, H, W) training silhouettes, float in [0, 1], bool,
            or uint8 in [0, 255]; H = W is the render size.
        cfg: the stage config.
        device: "auto", "cpu", "cuda", ... or a torch.device.
        out_dir: run directory (checkpoints, metrics, final weights).
    """
    out_dir = Path(out_dir)
    device = device if isinstance(device, torch.device) else select_device(device)
    masks = _as_float_masks(prepared_masks).to(device)
    n_real, size = masks.shape[0], masks.shape[-1]
    cfg_dict = dataclasses.asdict(cfg)
    loop = TrainLoop(
        out_dir,
        LoopSettings(
            max_steps=cfg.iterations,
            log_every=cfg.log_every,
            checkpoint_every=cfg.checkpoint_every,
            keep_last=cfg.keep_last,
            mixed_precision=cfg.mixed_precision,
            progress=cfg.progress,
        ),
        config={k: v for k, v in cfg_dict.items() if k not in _LOOP_ONLY},
        device=device,
    )
    torch.manual_seed(cfg.seed)
    G = Generator(cfg.z_dim, cfg.z_std, cfg.template_level).to(device)
    D = SilhouetteDiscriminator().to(device)
    opt_g = torch.optim.Adam(G.parameters(), lr=cfg.lr, betas=cfg.betas)
    opt_d = torch.optim.Adam(D.parameters(), lr=cfg.lr, betas=cfg.betas)
    sched_g = torch.optim.lr_scheduler.MultiStepLR(opt_g, list(cfg.lr_milestones), cfg.lr_gamma)
    sched_d = torch.optim.lr_scheduler.MultiStepLR(opt_d, list(cfg.lr_milestones), cfg.lr_gamma)
    rng = torch.Generator().manual_seed(cfg.seed)
    loop.track(
        modules={"generator": G, "discriminator": D},
        optimizers={"generator": opt_g, "discriminator": opt_d},
        schedulers={"generator": sched_g, "discriminator": sched_d},
        generators={"data": rng},
    )
    topology = MeshTopology.icosphere(cfg.template_level, device=device)
    raster = SoftRasterSettings(image_size=size, sigma=cfg.sigma, fov_deg=cfg.fov_deg)
    elevation = math.radians(cfg.elevation_deg)

    def render_fakes(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        z = G.sample_z(n, rng)
        azimuth = (torch.rand(n, generator=rng) * (2 * math.pi)).to(device)
        R, t = kato_extrinsics(azimuth, elevation, cfg.distance)
        with loop.autocast():
            vertices, faces = G(z)
        sil = render_silhouettes(vertices.float(), faces, R, t, raster)  # (n, 1, S, S)
        return sil, vertices

    def step_fn(step: int) -> dict[str, torch.Tensor]:
        # Critic step.
        idx = torch.randint(n_real, (cfg.batch_size,), generator=rng).to(device)
        real = masks[idx]
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
        geometry = cfg.laplacian_weight * laplacian_loss(
            vertices.float(), topology.laplacian
        ) + cfg.flatten_weight * flatten_loss(vertices.float(), topology.dihedral)
        if cfg.adaptive_weight:
            scale = adaptive_geometry_scale(adv, G.bias_head.weight, cfg.adaptive_reference)
        else:
            scale = torch.ones((), device=device)
        opt_g.zero_grad(set_to_none=True)
        loop.backward(adv + scale * geometry)
        loop.step(opt_g)
        losses.update(g_adv=adv.detach(), g_geometry=geometry.detach(), g_scale=scale)
        return losses

    result = loop.run(step_fn)
    gen_path = out_dir / "generator.safetensors"
    disc_path = out_dir / "discriminator.safetensors"
    save_model(gen_path, G, G.config())
    save_model(disc_path, D, D.config())
    return TrainGanResult(
        gen_path, disc_path, result.metrics_path, result.step, result.resumed_from
    )

"""URA stage (c) and its baselines: the mesh reconstructor (``representation: mesh``).

The reconstructor R (:class:`poseless.models.mesh_recon.MeshReconstructor`) maps
an RGB image to a deformed icosphere in the canonical frame. Its silhouette is
rendered with SoftRas (:func:`poseless.render.soft_raster.render_silhouettes`,
sigma ``mesh.sigma``) at the dataset camera (``meta.json`` fov and distance, the
Kato look-at of :func:`poseless.geometry.cameras.kato_extrinsics`) and the
*used pose* of each image:

* ``pose_source: gt`` (B/Ls, ``bl_gt_pose``): GT azimuth and elevation of the manifest;
* ``pose_source: joint`` (B/Lu, ``bl_unsup``): the azimuth of R's pose head, at
  ``elevation_deg`` (gradients flow into the pose through the renderer);
* ``pose_source: pseudo`` (URA, ``ura``/``ura_pad``): the ``predict_poses``
  azimuth, at ``elevation_deg``.

Each iteration (REFERENCE "URA", stage c; all weights from the settings):

1. **D2 step** (only when ``view_discriminator.enabled``), on batch A:
   R's meshes (no gradient into R) rendered at the used pose are *real*, the
   same meshes at azimuths ~ U[0, 360) (same elevation) are *fake*; WGAN-GP loss
   ``mean D2(fake) - mean D2(real) + gp_weight * GP`` with the per-sample
   gradient norm (``gp_mode``).
2. **R step**, on a fresh batch B:
   ``L = reprojection(render at used pose, mask) + laplacian_weight * Laplacian
   + flatten_weight * flatten``, plus on iterations with ``step % every == 0``
   (0, 3, 6, ... for every = 3) ``weight * (-mean D2(render of B's meshes at a
   random azimuth))``.

**Pose-aware discriminator** (``ura_pad``, URA's PAD ablation, following VPL,
Kato & Harada 2019, whose discriminator takes the viewpoint as a condition):
D2 is :class:`~poseless.models.discriminator.SilhouetteDiscriminator` with
``pose_condition=True`` — the silhouette plus two constant channels cos a,
sin a — and **every render is conditioned on the azimuth it was rendered at**:
real = (render at the pseudo azimuth, the pseudo azimuth), fake = (render at
the random azimuth, that random azimuth); R's adversarial term is
``-D2(render at a random azimuth, that azimuth)``. The gradient penalty is taken
on straight-line interpolates of the whole 3-channel critic input (silhouette and
pose channels together, :func:`pad_critic_input`), i.e. the pose condition is
part of the critic's input, as in a WGAN-GP on concatenated inputs. The
pose-independent D2 (``ura``) sees the silhouette alone.

Outputs in the artifact folder: ``model.safetensors`` + ``model.json`` (config
rebuilding R, camera, elevation, pose source, encoder weights info),
``metrics.jsonl``, ``renders.png``. D2 is a training device only and is kept in
the resume checkpoints, not in the artifact.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from poseless.config import ReconSettings, ViewDiscriminatorSettings, to_dict
from poseless.geometry.cameras import kato_extrinsics
from poseless.geometry.mesh import MeshTopology, flatten_loss, laplacian_loss
from poseless.losses.gan import CriticLoss, critic_loss
from poseless.losses.reprojection import silhouette_loss
from poseless.models.discriminator import SilhouetteDiscriminator, pose_channels
from poseless.models.mesh_recon import MeshReconstructor, create_mesh_reconstructor
from poseless.render.soft_raster import SoftRasterSettings, render_silhouettes
from poseless.train.checkpoint import load_model, save_model
from poseless.train.recon import (
    MODEL_FILE,
    RENDERS_FILE,
    Camera,
    ReconData,
    ReconPrediction,
    Reconstructor,
    TrainReconResult,
    checkpoint_config,
    finish_metrics,
    make_adam,
    make_loop,
    random_azimuths,
    sample_indices,
    write_render_sheet,
)

# ---------------------------------------------------------------------------
# Rendering and the view-discrimination losses (plain functions)
# ---------------------------------------------------------------------------


def render_at(
    vertices: torch.Tensor,
    faces: torch.Tensor,
    azimuth: torch.Tensor,
    elevation: torch.Tensor,
    camera: Camera,
    raster: SoftRasterSettings,
) -> torch.Tensor:
    """Soft silhouettes of meshes seen by the Kato camera at (azimuth, elevation).

    Args:
        vertices: (B, V, 3) canonical frame; faces: (F, 3) long.
        azimuth, elevation: (B,) radians.
        camera: distance (and the fov already in ``raster``).
    Returns:
        (B, 1, S, S) in [0, 1], rendered in float32.
    """
    R, t = kato_extrinsics(azimuth.float(), elevation.float(), camera.distance)
    return render_silhouettes(vertices.float(), faces, R, t, raster)


def pad_critic_input(silhouettes: torch.Tensor, azimuth: torch.Tensor) -> torch.Tensor:
    """PAD critic input: silhouettes (B, 1, H, W) + cos/sin of azimuth (B,) rad -> (B, 3, H, W).

    Exactly what :class:`SilhouetteDiscriminator` (pose_condition=True) feeds its trunk.
    """
    cond = pose_channels(azimuth.to(silhouettes.dtype), *silhouettes.shape[-2:])
    return torch.cat([silhouettes, cond], dim=1)


def view_critic_loss(
    critic: SilhouetteDiscriminator,
    real: torch.Tensor,
    fake: torch.Tensor,
    real_azimuth: torch.Tensor,
    fake_azimuth: torch.Tensor,
    vd: ViewDiscriminatorSettings,
    generator: torch.Generator | None = None,
) -> CriticLoss:
    """D2's WGAN-GP loss (module docstring).

    Args:
        critic: D2 (pose-independent or pose-aware).
        real: (B, 1, H, W) renders at the used pose; fake: (B, 1, H, W) at random azimuths.
        real_azimuth, fake_azimuth: (B,) radians they were rendered at (PAD conditions).
        vd: weights and GP mode.
        generator: RNG of the GP interpolation weights.
    """
    if critic.pose_condition:
        return critic_loss(
            lambda x: critic.trunk(x)[:, 0].float(),
            pad_critic_input(real, real_azimuth),
            pad_critic_input(fake, fake_azimuth),
            vd.gp_weight,
            vd.gp_mode,
            generator=generator,
        )
    return critic_loss(
        lambda x: critic(x).float(), real, fake, vd.gp_weight, vd.gp_mode, generator=generator
    )


def view_adversarial_loss(
    critic: SilhouetteDiscriminator, fake: torch.Tensor, fake_azimuth: torch.Tensor
) -> torch.Tensor:
    """R's adversarial term -mean D2(fake): fake (B, 1, H, W) at azimuths (B,) rad -> scalar."""
    cond = fake_azimuth if critic.pose_condition else None
    return -critic(fake, cond).float().mean()


def is_adversarial_step(step: int, vd: ViewDiscriminatorSettings) -> bool:
    """Whether iteration ``step`` (0-based) adds D2's term to R's loss: every ``every``-th from 0."""
    return vd.enabled and step % vd.every == 0


# ---------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------


def _raster(settings: ReconSettings, data: ReconData) -> SoftRasterSettings:
    if data.camera is None:
        raise ValueError("train_recon(mesh): the training data carries no camera")
    return SoftRasterSettings(
        image_size=data.image_size, sigma=settings.mesh.sigma, fov_deg=data.camera.fov_deg
    )


def model_config(
    model: MeshReconstructor, settings: ReconSettings, data: ReconData, encoder_info: dict
) -> dict:
    """The ``model.json`` config: rebuilds R and says how it renders."""
    return {
        "representation": "mesh",
        "model": model.config(),
        "pose_source": settings.pose_source,
        "camera": to_dict(data.camera),
        "elevation_deg": settings.elevation_deg,
        "image_size": data.image_size,
        "sigma": settings.mesh.sigma,
        "encoder_weights": encoder_info,
    }


def train_mesh_recon(
    data: ReconData,
    settings: ReconSettings,
    seed: int,
    out_dir: Path,
    resume_dir: Path,
    device: torch.device,
    progress: bool = True,
) -> TrainReconResult:
    """Train URA's reconstructor (or a baseline) as the module docstring says; resumes.

    Args:
        data: training split with camera and pose source.
        settings: resolved experiment (representation "mesh").
        seed: weights' init and data-stream seed.
        out_dir: artifact folder (model, metrics, renders).
        resume_dir: checkpoints and raw metrics.
        device: torch device.
    """
    if settings.representation != "mesh":
        raise ValueError(f"train_mesh_recon: representation is {settings.representation!r}")
    if (settings.pose_source == "joint") != (data.azimuth_deg is None):
        raise ValueError(
            f"train_mesh_recon: pose_source {settings.pose_source!r} does not match the data "
            f"(azimuths {'absent' if data.azimuth_deg is None else 'present'})"
        )
    raster = _raster(settings, data)
    camera = data.camera
    vd = settings.view_discriminator
    loop = make_loop(
        settings, resume_dir, checkpoint_config(settings, seed, data), device, progress
    )
    torch.manual_seed(seed)
    model, encoder_info = create_mesh_reconstructor(
        settings.encoder,
        settings.encoder_weights,
        settings.mesh.encoder_dim,
        settings.mesh.template_level,
        pose_head=settings.pose_source == "joint",
    )
    model = model.to(device)
    opt_r, sched_r = make_adam(model.parameters(), settings.lr, settings)
    modules = {"reconstructor": model}
    optimizers = {"reconstructor": opt_r}
    schedulers = {"reconstructor": sched_r}
    critic = None
    if vd.enabled:
        critic = SilhouetteDiscriminator(pose_condition=vd.pose_aware).to(device)
        opt_d, sched_d = make_adam(critic.parameters(), vd.lr, settings)
        modules["view_discriminator"] = critic
        optimizers["view_discriminator"] = opt_d
        schedulers["view_discriminator"] = sched_d
    rng = torch.Generator().manual_seed(seed)
    loop.track(
        modules=modules, optimizers=optimizers, schedulers=schedulers, generators={"data": rng}
    )
    topology = MeshTopology.icosphere(settings.mesh.template_level, device=device)
    faces = model.faces
    n, bs = len(data), settings.batch_size

    def used_azimuth(idx: torch.Tensor, predicted: torch.Tensor | None) -> torch.Tensor:
        az = data.azimuth_rad(idx, device)
        return predicted if az is None else az

    def critic_step() -> dict[str, torch.Tensor]:
        idx = sample_indices(n, bs, rng)
        images, _ = data.batch(idx, device)
        with torch.no_grad():
            with loop.autocast():
                out = model(images)
            elevation = data.elevation_rad(idx, device)
            az_real = used_azimuth(idx, out.azimuth)
            az_fake = random_azimuths(bs, rng, device)
            real = render_at(out.vertices, faces, az_real, elevation, camera, raster)
            fake = render_at(out.vertices, faces, az_fake, elevation, camera, raster)
        opt_d.zero_grad(set_to_none=True)
        with loop.autocast():
            d_out = view_critic_loss(critic, real, fake, az_real, az_fake, vd, generator=rng)
        loop.backward(d_out.loss)
        loop.step(opt_d)
        return {
            "d2": d_out.loss.detach(),
            "d2_wasserstein": d_out.wasserstein,
            "d2_gp": d_out.gradient_penalty,
        }

    def step_fn(step: int) -> dict[str, torch.Tensor]:
        losses = critic_step() if critic is not None else {}
        idx = sample_indices(n, bs, rng)
        images, masks = data.batch(idx, device)
        with loop.autocast():
            out = model(images)
        vertices = out.vertices.float()
        elevation = data.elevation_rad(idx, device)
        sil = render_at(vertices, faces, used_azimuth(idx, out.azimuth), elevation, camera, raster)
        rep = silhouette_loss(sil, masks, settings.mesh.reprojection)
        lap = laplacian_loss(vertices, topology.laplacian)
        flat = flatten_loss(vertices, topology.dihedral)
        total = rep + settings.mesh.laplacian_weight * lap + settings.mesh.flatten_weight * flat
        if critic is not None and is_adversarial_step(step, vd):
            az_fake = random_azimuths(bs, rng, device)
            fake = render_at(vertices, faces, az_fake, elevation, camera, raster)
            critic.requires_grad_(False)  # R's step only; D2 keeps its own gradients
            with loop.autocast():
                adv = view_adversarial_loss(critic, fake, az_fake)
            critic.requires_grad_(True)
            total = total + vd.weight * adv
            losses["adv"] = adv.detach()
        opt_r.zero_grad(set_to_none=True)
        loop.backward(total)
        loop.step(opt_r)
        losses.update(
            loss=total.detach(),
            reprojection=rep.detach(),
            laplacian=lap.detach(),
            flatten=flat.detach(),
        )
        return losses

    result = loop.run(step_fn)
    config = model_config(model, settings, data, encoder_info)
    model_path = out_dir / MODEL_FILE
    save_model(model_path, model, config)
    metrics_path = finish_metrics(resume_dir, out_dir)
    renders_path = None
    if settings.render_items > 0:
        renders_path = out_dir / RENDERS_FILE
        idx = torch.arange(min(settings.render_items, n))
        images, masks = data.batch(idx, device)
        model.eval()
        with torch.no_grad():
            out = model(images)
            az = used_azimuth(idx, out.azimuth)
            sil = render_at(
                out.vertices, faces, az, data.elevation_rad(idx, device), camera, raster
            )
        write_render_sheet(renders_path, images, masks, sil)
    return TrainReconResult(
        model_path=model_path,
        metrics_path=metrics_path,
        renders_path=renders_path,
        steps=result.step,
        resumed_from=result.resumed_from,
        encoder_info=encoder_info,
        last_losses=result.last_losses,
    )


# ---------------------------------------------------------------------------
# Inference
# ---------------------------------------------------------------------------


class MeshReconstructorModel(Reconstructor):
    """A trained mesh reconstructor behind the :class:`Reconstructor` interface."""

    representation = "mesh"

    def __init__(self, model: MeshReconstructor, config: dict, device: torch.device):
        self.model = model.to(device).eval()
        self.config = config
        self.device = device
        self.camera = Camera(**config["camera"])
        self.elevation_deg = float(config["elevation_deg"])

    def predict(self, images: torch.Tensor, masks: torch.Tensor) -> ReconPrediction:
        """images: (B, 3, H, W) RGB in [0, 1]; masks: (B, 1, H, W) (unused: R reads RGB only).

        Returns meshes in the canonical frame; for a model with a pose head (B/Lu)
        also its azimuth (degrees in [0, 360)) and world->camera rotation at
        ``elevation_deg``; None otherwise.
        """
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"predict: images must be (B, 3, H, W), got {tuple(images.shape)}")
        if masks.shape != (images.shape[0], 1, *images.shape[-2:]):
            raise ValueError(
                f"predict: masks must be ({images.shape[0]}, 1, {images.shape[2]}, "
                f"{images.shape[3]}), got {tuple(masks.shape)}"
            )
        with torch.no_grad():
            out = self.model(images.to(self.device).float())
        vertices = out.vertices.float().cpu().numpy().astype(np.float32)
        faces = self.model.faces.cpu().numpy().astype(np.int64)
        meshes = [(v, faces.copy()) for v in vertices]
        if out.azimuth is None:
            return ReconPrediction(meshes=meshes, azimuth_deg=None, R=None)
        az = out.azimuth.float().cpu()
        elevation = torch.full_like(az, math.radians(self.elevation_deg))
        R, _ = kato_extrinsics(az, elevation, self.camera.distance)
        az_deg = np.mod(np.degrees(az.numpy().astype(np.float64)), 360.0).astype(np.float32)
        return ReconPrediction(meshes=meshes, azimuth_deg=az_deg, R=R.numpy().astype(np.float32))


def load_mesh_reconstructor(
    path: Path, config: dict, device: torch.device
) -> MeshReconstructorModel:
    """Rebuild R from ``model.safetensors`` + sidecar (``config`` is the sidecar's)."""
    model, config = load_model(path, lambda c: MeshReconstructor.from_config(c["model"]), device)
    return MeshReconstructorModel(model, config, device)

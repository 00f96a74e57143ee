"""ShapeClipper's SDF reconstructor and the combined ``poseless`` method (``representation: sdf``).

The model (:class:`poseless.models.sdf_recon.SdfReconstructor`) maps an RGB image
on white to a shape code, a colour code and a viewpoint; the SDF + colour fields
are volume-rendered (:mod:`poseless.render.volume`) along rays through pixels
drawn near the mask boundary (:func:`poseless.render.rays.sample_pixels`).

**Camera.** Rays leave the dataset camera (``meta.json``: our synthetic data is
the Kato camera, full FOV 30 deg, distance 2.732) placed by the estimator's pose:
``R, t = Viewpoint.extrinsics(distance)`` — ShapeClipper's
``Rz(roll) Rx(elev) Ry(azim) P`` in our y-up world
(:func:`poseless.geometry.rotations.shapeclipper_extrinsics`) with the camera at
``distance * scale``; with roll 0 and scale 1 it is the Kato camera at azimuth
``-azim``, elevation ``elev``. Datasets without a recorded camera (square crops,
e.g. Pix3D) use ShapeClipper's own camera (``sdf.camera_fov_deg`` 14.25 deg =
focal 4 W, ``sdf.camera_distance`` 5). near/far = distance * scale -/+
``sdf.bound_margin``. Targets: the prepared image re-composited on white with its
mask (ShapeClipper's white background), the mask, and (with ``sdf.normals``) the
``estimate_normals`` camera-frame normals.

**Schedule.** Steps ``0 .. sphere_iterations - 1`` pre-train to a sphere (SDF MSE
to ||x|| - 0.5 on ``sphere_points`` uniform points in [-1, 1]^3 per sample, plus the
azimuth-uniform prior, plus the pose supervision when there is a target); the
next ``iterations`` steps are the main loop. Both share one Adam and one
resumable loop (``lr_milestones`` count from step 0, pre-training included).

**Main step** (weights from ``settings.sdf``):
``rgb * MSE + mask * softIoU + normal * normal_loss`` on the input's rays at the
*used* pose; ``eikonal`` on B * ``eikonal_points`` uniform points plus one sample
per ray (shape code detached); ``azimuth_prior * EMD prior``; ``camera_margin *
hinge``; ``camera_symmetry * flip consistency``; with ``sdf.ssc`` the SSC terms
(:mod:`poseless.train.ssc`: neighbour rendered with the input's shape code, its
own colour code and its own used pose, on its own rays); and, for ``poseless``:

* **pose supervision** (``pose_source: pseudo``; ``gt`` for the GT-viewpoint
  baseline): ``sdf.pose_supervision.weight * mean(1 - cos(a_pred - a_target))``
  (+ the same on elevation), linearly decayed over ``decay_iterations``; the
  target ShapeClipper azimuth is ``-(pseudo + offset)`` with one learnable global
  offset (the GAN's canonical azimuth is arbitrary, the field's mirror plane is
  x = 0). For the first ``init_iterations`` main steps the renders use the
  target pose itself (pseudo azimuth + offset, ``elevation_deg``, no roll,
  scale 1); ``pose_source: gt`` always renders at the GT pose.
* **view discriminator D2** (``view_discriminator.enabled``; URA stage c):
  silhouettes of the SDF rendered as **full low-resolution images**
  (``sdf.d2_image_size`` square, ``sdf.d2_samples`` per ray, no normals) —
  URA's critic is a convolutional net on whole silhouettes, so a scattered ray
  subset would not do, and 32x32 keeps one render of a batch at B * 1024 rays.
  Real = the reconstruction rendered at its used pose, fake = at a random
  azimuth (same elevation, roll, scale); D2 steps every iteration (WGAN-GP), and
  ``-weight * D2(fake)`` enters the loss every ``every``-th main iteration.

Outputs: ``model.safetensors`` + ``model.json`` (config rebuilding the model,
camera, background, mesh extraction grid, encoder weights info),
``metrics.jsonl``, ``renders.png`` (input | mask | rendered mask at the used pose).
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from poseless.config import ReconSettings, SdfReconSettings, to_dict
from poseless.data.prepared import DatasetError
from poseless.evaluate.extract import ExtractSettings, extract_mesh
from poseless.geometry.rotations import angle_to_trig, shapeclipper_to_kato
from poseless.losses.sdf_losses import (
    angle_loss,
    azimuth_uniform_prior,
    camera_margin_loss,
    camera_normals_to_world,
    camera_symmetry_loss,
    mask_iou_loss,
    normal_loss,
    rgb_loss,
    sphere_sdf_loss,
    trig_angle,
)
from poseless.models.discriminator import SilhouetteDiscriminator
from poseless.models.sdf_recon import SdfReconstructor, Viewpoint, create_sdf_reconstructor
from poseless.render.rays import gather_pixels, image_rays, pixel_rays, rays_to_image, sample_pixels
from poseless.render.volume import (
    VolumeRenderOutput,
    eikonal_loss,
    ray_bounds,
    render_rays,
    uniform_points,
)
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
from poseless.train.recon_mesh import is_adversarial_step, view_adversarial_loss, view_critic_loss
from poseless.train.ssc import sample_neighbours, swap_codes

NORMALS_FILE = "normals.npy"
"""Normal maps inside the ``estimate_normals`` folder: (N, 3, H, W) float16, camera frame."""
IDS_FILE = "ids.txt"
"""Row order of ``normals.npy`` (one id a line)."""


# ---------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class NormalMaps:
    """The ``estimate_normals`` maps of the training rows (memory-mapped)."""

    array: np.ndarray
    """(M, 3, H, W) float16 camera-frame unit normals (zero off the mask), all items."""
    rows: np.ndarray
    """(N,) int64 row of ``array`` for each training row."""

    def batch(self, idx: torch.Tensor, device) -> torch.Tensor:
        """idx: (B,) training rows -> (B, 3, H, W) float32 normals on ``device``."""
        rows = self.rows[idx.cpu().numpy()]
        return torch.from_numpy(np.asarray(self.array[rows], dtype=np.float32)).to(device)


def read_normal_maps(
    folder: str | Path, ids: list[str] | tuple[str, ...], size: tuple[int, int]
) -> NormalMaps:
    """Open ``normals.npy`` + ``ids.txt`` of an ``estimate_normals`` folder for ``ids``.

    Args:
        folder: the estimate_normals output folder.
        ids: training ids in row order.
        size: (H, W) of the prepared images the maps must match.
    Raises:
        FileNotFoundError / DatasetError: naming the file and the problem.
    """
    folder = Path(folder)
    npy, ids_path = folder / NORMALS_FILE, folder / IDS_FILE
    for p in (npy, ids_path):
        if not p.is_file():
            raise FileNotFoundError(f"{p}: missing; run estimate_normals first (--normals)")
    try:
        array = np.load(npy, mmap_mode="r")
    except ValueError as exc:
        raise DatasetError(f"{npy}: not a readable .npy array: {exc}") from exc
    if array.ndim != 4 or array.shape[1] != 3 or tuple(array.shape[2:]) != tuple(size):
        raise DatasetError(
            f"{npy}: expected (N, 3, {size[0]}, {size[1]}) normal maps matching the prepared "
            f"images, got shape {array.shape}"
        )
    all_ids = ids_path.read_text().splitlines()
    if len(all_ids) != array.shape[0]:
        raise DatasetError(f"{npy}: {array.shape[0]} rows but {ids_path} lists {len(all_ids)} ids")
    where = {item: r for r, item in enumerate(all_ids)}
    absent = [i for i in ids if i not in where]
    if absent:
        raise DatasetError(
            f"{ids_path}: no normals for {len(absent)} training item(s), e.g. {absent[:3]}"
        )
    return NormalMaps(array=array, rows=np.array([where[i] for i in ids], dtype=np.int64))


def training_camera(data: ReconData, s: SdfReconSettings) -> Camera:
    """The dataset camera, or ShapeClipper's (``camera_fov_deg``, ``camera_distance``) without one."""
    if data.camera is not None:
        return data.camera
    return Camera(fov_deg=s.camera_fov_deg, distance=s.camera_distance)


def on_white(images: torch.Tensor, masks: torch.Tensor, background) -> torch.Tensor:
    """Re-composite prepared images (B, 3, H, W) on white with masks (B, 1, H, W).

    ``image = obj m + bg (1 - m)`` -> ``obj m + (1 - m) = image + (1 - bg)(1 - m)``.
    """
    bg = torch.as_tensor(background, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    return (images + (1.0 - bg) * (1.0 - masks)).clamp(0.0, 1.0)


def tan_half(camera: Camera) -> float:
    """tan(fov / 2) of a camera."""
    return math.tan(math.radians(camera.fov_deg) / 2.0)


# ---------------------------------------------------------------------------
# Rendering helpers (plain functions)
# ---------------------------------------------------------------------------


def render_pixels(
    model: SdfReconstructor,
    shape_code: torch.Tensor,
    color_code: torch.Tensor | None,
    R: torch.Tensor,
    t: torch.Tensor,
    pixel_index: torch.Tensor,
    size: int,
    camera: Camera,
    generator: torch.Generator | None,
    compute_normals: bool,
) -> VolumeRenderOutput:
    """Render chosen pixels of a size x size image (training: stratified jitter).

    Args:
        shape_code, color_code: (B, C); R: (B, 3, 3), t: (B, 3) world->camera;
        pixel_index: (B, R) flat pixel indices.
    """
    origins, dirs = pixel_rays(R, t, tan_half(camera), pixel_index, size, size)
    color_fn = model.field.color_fn(color_code) if color_code is not None else None
    return model.renderer(
        model.field.sdf_fn(shape_code),
        origins,
        dirs,
        training=True,
        color_fn=color_fn,
        generator=generator,
        compute_normals=compute_normals,
    )


def render_silhouettes(
    model: SdfReconstructor,
    shape_code: torch.Tensor,
    R: torch.Tensor,
    t: torch.Tensor,
    size: int,
    camera: Camera,
    n_samples: int,
    generator: torch.Generator | None,
) -> torch.Tensor:
    """Full-image opacity renders (B, 1, size, size) for the view discriminator (with gradients)."""
    origins, dirs = image_rays(R, t, tan_half(camera), size, size)
    settings = dataclasses.replace(model.renderer.settings, n_samples=n_samples)
    near, far = ray_bounds(origins, settings)
    out = render_rays(
        model.field.sdf_fn(shape_code),
        origins,
        dirs,
        near,
        far,
        model.renderer.beta(),
        settings,
        training=True,
        generator=generator,
        compute_normals=False,
    )
    return rays_to_image(out.mask, size, size)


def image_terms(
    out: VolumeRenderOutput,
    rgb_target: torch.Tensor,
    mask_target: torch.Tensor,
    normals_cam: torch.Tensor | None,
    R: torch.Tensor,
    s: SdfReconSettings,
) -> dict[str, torch.Tensor]:
    """RGB, mask and (with ``normals_cam``) normal losses of one render.

    Args:
        out: render of (B, R) rays; rgb_target (B, R, 3); mask_target (B, R);
        normals_cam: (B, R, 3) GT camera-frame normals or None;
        R: (B, 3, 3) world->camera rotation of the pose rendered at.
    """
    terms = {"rgb": rgb_loss(out.rgb, rgb_target), "mask": mask_iou_loss(out.mask, mask_target)}
    if normals_cam is not None:
        target = camera_normals_to_world(normals_cam, R)
        valid = (mask_target > 0.5) & (out.mask.detach() > 0.5)
        terms["normal"] = normal_loss(
            out.normals, target, valid, s.outlier_dropout, s.normal_l1_weight
        )
    return terms


def supervision_weight(s: SdfReconSettings, main_step: int) -> float:
    """Pose-supervision factor at main-loop step ``main_step`` (1, decaying linearly to 0)."""
    decay = s.pose_supervision.decay_iterations
    if decay <= 0 or main_step < 0:
        return 1.0
    return max(0.0, 1.0 - main_step / decay)


class AzimuthOffset(nn.Module):
    """One learnable global azimuth offset (radians) added to the pseudo azimuths."""

    def __init__(self):
        super().__init__()
        self.angle = nn.Parameter(torch.zeros(()))


# ---------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------


def model_config(
    model: SdfReconstructor, settings: ReconSettings, data: ReconData, encoder_info: dict
) -> dict:
    """The ``model.json`` config: rebuilds the model and says how it renders and meshes."""
    s = settings.sdf
    return {
        "representation": "sdf",
        "model": model.config(),
        "pose_source": settings.pose_source,
        "camera": to_dict(training_camera(data, s)),
        "camera_from": "dataset" if data.camera is not None else "settings",
        "background": list(data.background),
        "image_size": data.image_size,
        "extract": {"resolution": s.grid_resolution, "bound": s.grid_bound},
        "encoder_weights": encoder_info,
    }


def _check_inputs(data: ReconData, settings: ReconSettings) -> None:
    s = settings.sdf
    if settings.representation != "sdf":
        raise ValueError(f"train_sdf_recon: representation is {settings.representation!r}")
    if (settings.pose_source == "joint") != (data.azimuth_deg is None):
        raise ValueError(
            f"train_sdf_recon: pose_source {settings.pose_source!r} does not match the data "
            f"(azimuths {'absent' if data.azimuth_deg is None else 'present'})"
        )
    if s.ssc and data.neighbours is None:
        raise ValueError("train_sdf_recon: sdf.ssc is on but the data carries no kNN table")
    if s.normals and data.normals is None:
        raise ValueError("train_sdf_recon: sdf.normals is on but the data carries no normal maps")
    if s.rays_per_image > data.image_size**2:
        raise ValueError(
            f"sdf.rays_per_image: {s.rays_per_image} exceeds the {data.image_size}^2 pixels "
            "of the training images"
        )


def train_sdf_recon(
    data: ReconData,
    settings: ReconSettings,
    seed: int,
    out_dir: Path,
    resume_dir: Path,
    device: torch.device,
    progress: bool = True,
) -> TrainReconResult:
    """Train ShapeClipper / ``poseless`` as the module docstring says; resumes.

    Args:
        data: training split (camera optional; kNN table / normals when used).
        settings: resolved experiment (representation "sdf").
        seed: weights' init and data-stream seed.
        out_dir: artifact folder (model, metrics, renders).
        resume_dir: checkpoints and raw metrics.
        device: torch device.
    """
    _check_inputs(data, settings)
    s = settings.sdf
    ps = s.pose_supervision
    vd = settings.view_discriminator
    camera = training_camera(data, s)
    size, n, bs = data.image_size, len(data), settings.batch_size
    total = dataclasses.replace(settings, iterations=settings.iterations + s.sphere_iterations)
    loop = make_loop(total, resume_dir, checkpoint_config(settings, seed, data), device, progress)
    torch.manual_seed(seed)
    model, encoder_info = create_sdf_reconstructor(
        s.encoder,
        s.encoder_weights,
        s.viewpoint_encoder,
        s.viewpoint_encoder_weights,
        s.code_dim,
        s.field_width,
        s.field_layers,
        s.color_layers,
        s.n_frequencies,
        s.symmetric,
        s.n_samples,
        s.bound_margin,
        s.beta_init,
        s.scale_range,
        s.input_size,
        s.sphere_radius,
    )
    model = model.to(device)
    modules: dict[str, nn.Module] = {"reconstructor": model}
    params = list(model.parameters())
    offset = None
    if settings.pose_source == "pseudo" and ps.learn_offset:
        offset = AzimuthOffset().to(device)
        modules["azimuth_offset"] = offset
        params += list(offset.parameters())
    opt, sched = make_adam(params, settings.lr, settings)
    optimizers, schedulers = {"reconstructor": opt}, {"reconstructor": sched}
    critic = None
    if vd.enabled:
        critic = SilhouetteDiscriminator(pose_condition=vd.pose_aware).to(device)
        opt_d, sched_d = make_adam(critic.parameters(), vd.lr, settings)
        modules["view_discriminator"] = critic
        optimizers["view_discriminator"] = opt_d
        schedulers["view_discriminator"] = sched_d
    rng = torch.Generator().manual_seed(seed)
    render_rng = torch.Generator(device=device).manual_seed(seed + 1)
    loop.track(
        modules=modules,
        optimizers=optimizers,
        schedulers=schedulers,
        generators={"data": rng, "render": render_rng},
    )
    has_target = data.azimuth_deg is not None

    def load(idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        images, masks = data.batch(idx, device)
        return on_white(images, masks, data.background), masks

    def target_viewpoint(idx: torch.Tensor) -> Viewpoint:
        """Pose-source pose (Kato azimuth + offset, elevation, roll 0, scale 1) as a Viewpoint."""
        kato = data.azimuth_rad(idx, device)
        if offset is not None:
            kato = kato + offset.angle
        az = angle_to_trig(-kato)
        el = angle_to_trig(data.elevation_rad(idx, device))
        roll = angle_to_trig(torch.zeros_like(kato))
        return Viewpoint(az, el, roll, torch.ones_like(kato))

    def used_viewpoint(vp: Viewpoint, idx: torch.Tensor, main_step: int) -> Viewpoint:
        if settings.pose_source == "gt" or (has_target and main_step < ps.init_iterations):
            return target_viewpoint(idx)
        return vp

    def pose_terms(vp: Viewpoint, idx: torch.Tensor, main_step: int) -> dict[str, torch.Tensor]:
        if not has_target:
            return {}
        factor = supervision_weight(s, main_step)
        target = target_viewpoint(idx)
        terms = {}
        if ps.weight > 0 and factor > 0:
            terms["pose_azimuth"] = (ps.weight * factor, angle_loss(vp.azimuth, target.azimuth))
        if ps.elevation_weight > 0 and factor > 0:
            terms["pose_elevation"] = (
                ps.elevation_weight * factor,
                angle_loss(vp.elevation, target.elevation),
            )
        return terms

    def sphere_step(step: int) -> dict[str, torch.Tensor]:
        idx = sample_indices(n, bs, rng)
        white, _ = load(idx)
        x = model.prepare(white)
        with loop.autocast():
            shape, _ = model.encode(x)
            vp = model.viewpoint(x)
        pts = uniform_points(bs, s.sphere_points, 1.0, generator=rng).to(device)
        terms = {
            "sphere": (1.0, sphere_sdf_loss(model.sdf_points(pts, shape), pts, s.sphere_radius)),
            "azimuth_prior": (s.azimuth_prior_weight, azimuth_uniform_prior(vp.azimuth)),
            **pose_terms(vp, idx, -1),
        }
        return optimise(terms)

    def optimise(terms: dict[str, tuple[float, torch.Tensor]]) -> dict[str, torch.Tensor]:
        total_loss = sum(w * v for w, v in terms.values())
        opt.zero_grad(set_to_none=True)
        loop.backward(total_loss)
        loop.step(opt)
        return {"loss": total_loss.detach(), **{k: v.detach() for k, (_, v) in terms.items()}}

    def critic_step(main_step: int) -> dict[str, torch.Tensor]:
        idx = sample_indices(n, bs, rng)
        white, _ = load(idx)
        with torch.no_grad():
            x = model.prepare(white)
            with loop.autocast():
                shape, _ = model.encode(x)
                vp = model.viewpoint(x)
            used = used_viewpoint(vp, idx, main_step)
            real_vp, fake_vp, az_real, az_fake = real_and_fake(used)
            real = silhouettes(shape, real_vp)
            fake = silhouettes(shape, fake_vp)
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

    def real_and_fake(used: Viewpoint):
        """Used pose (real) and the same pose at a random azimuth (fake), with Kato azimuths."""
        az_random = random_azimuths(used.azimuth.shape[0], rng, device)
        fake_vp = used.with_azimuth(angle_to_trig(-az_random))
        return used, fake_vp, -trig_angle(used.azimuth), az_random

    def silhouettes(shape: torch.Tensor, vp: Viewpoint) -> torch.Tensor:
        R, t = vp.extrinsics(camera.distance)
        return render_silhouettes(
            model, shape, R, t, s.d2_image_size, camera, s.d2_samples, render_rng
        )

    def main_step_fn(main_step: int) -> dict[str, torch.Tensor]:
        logs = critic_step(main_step) if critic is not None else {}
        idx = sample_indices(n, bs, rng)
        white, masks = load(idx)
        nb_idx = None
        if s.ssc:
            rows, has = sample_neighbours(data.neighbours, idx, s.ssc_temperature, rng)
            if bool(has.any()):
                sel = torch.nonzero(has)[:, 0]
                nb_idx = rows[sel]
                nb_white, nb_masks = load(nb_idx)
        inputs = white if nb_idx is None else torch.cat([white, nb_white])
        x = model.prepare(inputs)
        n_main = white.shape[0]
        use_sym = s.camera_symmetry_weight > 0
        with loop.autocast():
            shape, color = model.encode(x)
            vp_all = model.viewpoint(torch.cat([x, x[:n_main].flip(-1)]) if use_sym else x)
        vp = vp_all.select(slice(0, n_main))
        used = used_viewpoint(vp, idx, main_step)
        R, t = used.extrinsics(camera.distance)
        pix = sample_pixels(masks, s.rays_per_image, s.ray_offset, generator=rng)
        out = render_pixels(
            model, shape[:n_main], color[:n_main], R, t, pix, size, camera, render_rng, s.normals
        )
        normals_cam = None
        if s.normals:
            normals_cam = gather_pixels(data.normals.batch(idx, device), pix)
        own = image_terms(
            out, gather_pixels(white, pix), gather_pixels(masks, pix)[..., 0], normals_cam, R, s
        )
        terms = {
            "rgb": (s.rgb_weight, own["rgb"]),
            "mask": (s.mask_weight, own["mask"]),
        }
        if "normal" in own:
            terms["normal"] = (s.normal_weight, own["normal"])
        if s.eikonal_weight > 0:
            uni = uniform_points(n_main, s.eikonal_points, 1.0, generator=rng).to(device)
            pts = torch.cat([uni, out.eikonal_points], dim=1)
            terms["eikonal"] = (
                s.eikonal_weight,
                eikonal_loss(model.field.sdf_fn(shape[:n_main].detach()), pts),
            )
        terms["azimuth_prior"] = (s.azimuth_prior_weight, azimuth_uniform_prior(vp.azimuth))
        terms["camera_margin"] = (
            s.camera_margin_weight,
            camera_margin_loss(vp.elevation, vp.roll, s.camera_margin_deg),
        )
        if use_sym:
            flipped = vp_all.select(slice(vp_all.scale.shape[0] - n_main, None))
            terms["camera_symmetry"] = (
                s.camera_symmetry_weight,
                camera_symmetry_loss(
                    (vp.azimuth, vp.elevation, vp.roll),
                    (flipped.azimuth, flipped.elevation, flipped.roll),
                ),
            )
        terms.update(pose_terms(vp, idx, main_step))
        if nb_idx is not None:
            k = nb_idx.shape[0]
            nb_vp = used_viewpoint(vp_all.select(slice(n_main, n_main + k)), nb_idx, main_step)
            R_nb, t_nb = nb_vp.extrinsics(camera.distance)
            pix_nb = sample_pixels(nb_masks, s.rays_per_image, s.ray_offset, generator=rng)
            nb_shape, nb_color = swap_codes(shape, color, n_main, sel)
            out_nb = render_pixels(
                model,
                nb_shape,  # the input's shape code with the neighbour's colour code and pose
                nb_color,
                R_nb,
                t_nb,
                pix_nb,
                size,
                camera,
                render_rng,
                s.normals,
            )
            nb_normals = None
            if s.normals:
                nb_normals = gather_pixels(data.normals.batch(nb_idx, device), pix_nb)
            nb = image_terms(
                out_nb,
                gather_pixels(nb_white, pix_nb),
                gather_pixels(nb_masks, pix_nb)[..., 0],
                nb_normals,
                R_nb,
                s,
            )
            terms["ssc_rgb"] = (s.ssc_rgb_weight, nb["rgb"])
            terms["ssc_mask"] = (s.ssc_mask_weight, nb["mask"])
            if "normal" in nb:
                terms["ssc_normal"] = (s.ssc_normal_weight, nb["normal"])
        if critic is not None and is_adversarial_step(main_step, vd):
            _, fake_vp, _, az_fake = real_and_fake(used)
            fake = silhouettes(shape[:n_main], fake_vp)
            critic.requires_grad_(False)  # the reconstructor's step only
            with loop.autocast():
                adv = view_adversarial_loss(critic, fake, az_fake)
            critic.requires_grad_(True)
            terms["adv"] = (vd.weight, adv)
        logs.update(optimise(terms))
        logs["beta"] = model.renderer.beta().detach()
        return logs

    def step_fn(step: int) -> dict[str, torch.Tensor]:
        if step < s.sphere_iterations:
            return sphere_step(step)
        return main_step_fn(step - s.sphere_iterations)

    with warnings.catch_warnings():
        # D2's scheduler counts every step, also the pre-training ones in which D2 does not step.
        warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler.step\(\)`")
        result = loop.run(step_fn)
    model.eval()
    config = model_config(model, settings, data, encoder_info)
    model_path = out_dir / MODEL_FILE
    save_model(model_path, model, config)
    metrics_path = finish_metrics(resume_dir, out_dir)
    renders_path = None
    if settings.render_items > 0:
        renders_path = out_dir / RENDERS_FILE
        idx = torch.arange(min(settings.render_items, n))
        white, masks = load(idx)
        with torch.no_grad():
            x = model.prepare(white)
            shape, _ = model.encode(x)
            used = used_viewpoint(model.viewpoint(x), idx, settings.iterations)
            R, t = used.extrinsics(camera.distance)
            origins, dirs = image_rays(R, t, tan_half(camera), size, size)
        rendered = model.renderer.render_chunked(
            model.field.sdf_fn(shape), origins, dirs, compute_normals=False
        )
        write_render_sheet(renders_path, white, masks, rays_to_image(rendered["mask"], size, size))
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


class SdfReconstructorModel(Reconstructor):
    """A trained SDF reconstructor behind the :class:`Reconstructor` interface."""

    representation = "sdf"

    def __init__(self, model: SdfReconstructor, config: dict, device: torch.device):
        self.model = model.to(device).eval()
        self.config = config
        self.device = device
        self.camera = Camera(**config["camera"])
        self.background = tuple(config["background"])
        ext = config["extract"]
        self.extract = ExtractSettings(resolution=int(ext["resolution"]), bound=float(ext["bound"]))

    def set_extract_settings(self, settings: ExtractSettings) -> None:
        """Use ``settings`` (grid resolution and bound) for the meshes of :meth:`predict`."""
        self.extract = settings

    def predict(self, images: torch.Tensor, masks: torch.Tensor) -> ReconPrediction:
        """images: (B, 3, H, W) RGB in [0, 1] on the dataset background; masks: (B, 1, H, W).

        The image is re-composited on white with its mask (the training input),
        the SDF meshed by marching cubes on the ``extract`` grid (possibly an
        empty mesh for a degenerate field), and the viewpoint estimator's pose
        returned as our Kato azimuth in degrees [0, 360) and the world->camera
        rotation (including elevation and roll).
        """
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"predict: images must be (B, 3, H, W), got {tuple(images.shape)}")
        if masks.shape != (images.shape[0], 1, *images.shape[-2:]):
            raise ValueError(
                f"predict: masks must be ({images.shape[0]}, 1, {images.shape[2]}, "
                f"{images.shape[3]}), got {tuple(masks.shape)}"
            )
        images = images.to(self.device).float()
        white = on_white(images, masks.to(self.device).float(), self.background)
        with torch.no_grad():
            x = self.model.prepare(white)
            shape, _ = self.model.encode(x)
            vp = self.model.viewpoint(x)
        meshes = []
        for b in range(shape.shape[0]):
            code = shape[b : b + 1]
            mesh = extract_mesh(
                lambda p, code=code: self.model.sdf_points(p[None], code)[0],
                self.extract,
                device=self.device,
            )
            meshes.append((mesh.vertices, mesh.faces))
        R, _ = vp.extrinsics(self.camera.distance)
        kato_az = shapeclipper_to_kato(vp.azimuth, vp.elevation, vp.roll, vp.scale)[0]
        az_deg = np.mod(np.degrees(kato_az.cpu().numpy().astype(np.float64)), 360.0)
        return ReconPrediction(
            meshes=meshes,
            azimuth_deg=az_deg.astype(np.float32),
            R=R.float().cpu().numpy().astype(np.float32),
        )


def load_sdf_reconstructor(path: Path, config: dict, device: torch.device) -> SdfReconstructorModel:
    """Rebuild the SDF reconstructor from ``model.safetensors`` + sidecar (``config``)."""
    model, config = load_model(path, lambda c: SdfReconstructor.from_config(c["model"]), device)
    return SdfReconstructorModel(model, config, device)

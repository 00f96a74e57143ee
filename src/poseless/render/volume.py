"""VolSDF-style volume rendering of a signed distance field (ShapeClipper's renderer).

Small functional parts, composed by :func:`render_rays`::

    sample_along_rays()  -> t (B, R, S) stratified depths along each ray
    sdf_with_gradient()  -> sdf, features and grad sdf at x = o + t d (the field's own
                            ``with_gradient`` when it has one, else one autograd call)
    sdf_to_density()     -> sigma = (1 / beta) * Psi_beta(-sdf), Psi the Laplace CDF
    composite()          -> weights w = alpha * T, mask, RGB over the background, depth,
                            normal = normalize(sum_i w_i n_i)

The field is passed in as a function, so the renderer does not know the MLP:
``field_fn(points (B, N, 3)) -> (sdf (B, N), features (B, N, F))`` and
``color_fn(points (B, N, 3), features (B, N, F)) -> rgb (B, N, 3)``
(``poseless.models.sdf.SDFField.sdf_fn`` / ``color_fn`` build them). A field
function may also offer ``field_fn.with_gradient(points) -> (sdf, features,
gradient (B, N, 3))``, the gradient written out as ordinary differentiable ops
(``poseless.models.sdf.SDFNetwork.with_gradient``); it is then used instead of
autograd's double backward (same values to float rounding, about half the cost).

Rays live in the world (canonical) frame; ``t`` is the distance along the unit
direction, so ``depth`` is the expected ray length, not camera z (multiply by
the cosine of the ray with the optical axis for z-depth). Normals are
world-frame unit vectors; ``poseless.geometry.cameras.normals_world_to_camera``
turns them into camera-frame normals.

With gradients enabled, the SDF gradient keeps its graph (``create_graph=True``
on the autograd path), so a loss on the rendered normals (or the eikonal term)
trains the field. Under
``torch.no_grad()`` the gradient is still computed (for the normals) but no
graph is kept and every output is detached.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

FieldFn = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
"""points (B, N, 3) -> (sdf (B, N), features (B, N, F))."""
ColorFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""(points (B, N, 3), features (B, N, F)) -> rgb (B, N, 3)."""


@dataclass(frozen=True)
class VolumeRenderSettings:
    """How rays are sampled, turned into densities and composited (defaults: ShapeClipper)."""

    n_samples: int = 64
    """Samples per ray, uniform between near and far (no importance sampling)."""
    near: float | None = None
    """Fixed near bound along every ray; None: camera distance - ``bound_margin``."""
    far: float | None = None
    """Fixed far bound along every ray; None: camera distance + ``bound_margin``."""
    bound_margin: float = 0.7
    """Half-width of the sampled interval around the camera distance (ShapeClipper 5 s -/+ 0.7)."""
    stratified: bool = True
    """Jitter each sample uniformly inside its bin when rendering for training."""
    beta_init: float = 0.1
    """Initial Laplace scale of the SDF -> density map (learnable)."""
    beta_min: float = 1e-4
    """Effective beta = |beta| + beta_min, so it stays positive."""
    background: tuple[float, float, float] = (1.0, 1.0, 1.0)
    """Background RGB (white)."""
    eikonal_range: float = 1.0
    """Uniform eikonal points are drawn from [-range, range]^3."""
    chunk_rays: int = 4096
    """Rays per chunk in :func:`render_rays_chunked` (evaluation rendering)."""
    analytic_gradient: bool = True
    """Use ``field_fn.with_gradient`` when the field offers it; False: always autograd."""
    chunk_points: int = 65536
    """CPU only: points (whole batch) per field evaluation inside one render, one graph; 0: all
    at once. Same values; buffers under glibc's 32 MB mmap limit are reused, not page-faulted
    on every step (about 2x faster at 12 x 512 rays). Other devices evaluate all at once."""

    def __post_init__(self) -> None:
        if self.n_samples < 2:
            raise ValueError(f"VolumeRenderSettings.n_samples must be >= 2, got {self.n_samples}")
        if (self.near is None) != (self.far is None):
            raise ValueError("VolumeRenderSettings: give both near and far, or neither")
        if self.near is not None and not 0.0 <= self.near < self.far:
            raise ValueError(
                f"VolumeRenderSettings: need 0 <= near < far, got near={self.near}, far={self.far}"
            )
        if self.bound_margin <= 0 or self.beta_init <= 0 or self.beta_min < 0:
            raise ValueError(
                "VolumeRenderSettings: bound_margin, beta_init must be > 0, beta_min >= 0"
            )
        if self.chunk_points < 0:
            raise ValueError(
                f"VolumeRenderSettings.chunk_points must be >= 0, got {self.chunk_points}"
            )
        if self.chunk_rays < 1:
            raise ValueError(f"VolumeRenderSettings.chunk_rays must be >= 1, got {self.chunk_rays}")


@dataclass(frozen=True)
class Composite:
    """Per-ray results of alpha compositing (B batch, R rays, S samples per ray)."""

    weights: torch.Tensor
    """(B, R, S) w_i = alpha_i * T_i."""
    alpha: torch.Tensor
    """(B, R, S) alpha_i = 1 - exp(-sigma_i delta_i)."""
    mask: torch.Tensor
    """(B, R) accumulated opacity sum_i w_i."""
    depth: torch.Tensor
    """(B, R) sum_i w_i t_i (background contributes 0)."""
    rgb: torch.Tensor | None
    """(B, R, 3) sum_i w_i c_i + (1 - mask) * background, or None without colours."""
    normals: torch.Tensor | None
    """(B, R, 3) normalize(sum_i w_i n_i), or None without sample normals."""


@dataclass(frozen=True)
class VolumeRenderOutput:
    """Everything :func:`render_rays` produces (B batch, R rays, S samples per ray)."""

    rgb: torch.Tensor | None
    """(B, R, 3) colour over the background; None when no ``color_fn`` was given."""
    mask: torch.Tensor
    """(B, R) accumulated opacity in [0, 1]."""
    depth: torch.Tensor
    """(B, R) expected distance along the ray, sum_i w_i t_i."""
    normals: torch.Tensor | None
    """(B, R, 3) world-frame unit normals; None when normals were not requested."""
    weights: torch.Tensor
    """(B, R, S) compositing weights."""
    t: torch.Tensor
    """(B, R, S) sample distances along the rays."""
    sdf: torch.Tensor
    """(B, R, S) SDF at the samples."""
    sample_points: torch.Tensor
    """(B, R, S, 3) sample positions."""
    sample_gradients: torch.Tensor | None
    """(B, R, S, 3) grad sdf at the samples (graph kept when gradients are enabled)."""
    eikonal_points: torch.Tensor
    """(B, R, 3) one random sample per ray (detached), for the eikonal term."""
    beta: torch.Tensor
    """() effective Laplace scale used."""


# ---------------------------------------------------------------------------
# Sampling
# ---------------------------------------------------------------------------


def ray_bounds(
    origins: torch.Tensor, settings: VolumeRenderSettings
) -> tuple[torch.Tensor, torch.Tensor]:
    """Near and far distances of each ray.

    Args:
        origins: (B, R, 3) ray origins (camera centres).
    Returns:
        near, far: (B, R). Fixed when the settings give them; otherwise the
        camera's distance to the origin -/+ ``bound_margin`` (ShapeClipper's
        5 s -/+ 0.7 for a camera at distance 5 s looking at the origin).
    """
    if origins.dim() != 3 or origins.shape[-1] != 3:
        raise ValueError(f"ray_bounds: origins must be (B, R, 3), got {tuple(origins.shape)}")
    if settings.near is not None:
        near = origins.new_full(origins.shape[:2], settings.near)
        far = origins.new_full(origins.shape[:2], settings.far)
        return near, far
    distance = origins.detach().norm(dim=-1)
    near = distance - settings.bound_margin
    if bool((near <= 0).any()):
        raise ValueError(
            f"ray_bounds: a camera is within bound_margin={settings.bound_margin} of the "
            "origin; use fixed near/far"
        )
    return near, distance + settings.bound_margin


def sample_along_rays(
    near: torch.Tensor,
    far: torch.Tensor,
    n_samples: int,
    stratified: bool,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Uniform (optionally stratified) sample distances along rays.

    The S distances are ``linspace(near, far, S)``; with ``stratified`` each one
    is redrawn uniformly inside its bin, bounded by the midpoints to its
    neighbours (the first bin starts at near, the last ends at far), so the
    samples stay sorted.

    Args:
        near, far: (B, R) bounds.
        generator: torch.Generator on the rays' device, for the jitter.
    Returns:
        t: (B, R, S) sorted distances in [near, far].
    """
    if near.shape != far.shape:
        raise ValueError(f"sample_along_rays: near {tuple(near.shape)} != far {tuple(far.shape)}")
    steps = torch.linspace(0.0, 1.0, n_samples, device=near.device, dtype=near.dtype)
    t = near[..., None] + (far - near)[..., None] * steps  # (B, R, S)
    if not stratified:
        return t
    mids = 0.5 * (t[..., 1:] + t[..., :-1])
    lower = torch.cat([t[..., :1], mids], dim=-1)
    upper = torch.cat([mids, t[..., -1:]], dim=-1)
    u = torch.rand(t.shape, generator=generator, device=t.device, dtype=t.dtype)
    return lower + (upper - lower) * u


# ---------------------------------------------------------------------------
# Field evaluation, density, compositing
# ---------------------------------------------------------------------------


def sdf_with_gradient(
    field_fn: FieldFn,
    points: torch.Tensor,
    create_graph: bool | None = None,
    analytic: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """SDF, features and grad sdf in one pass.

    With ``analytic`` and a field that has ``with_gradient`` (e.g.
    ``poseless.models.sdf.BoundSDF``), that method computes all three as one
    differentiable forward; otherwise one forward and one ``torch.autograd.grad``
    call (double backward when training). Both give the same values.

    Args:
        field_fn: points (B, N, 3) -> (sdf (B, N), features (B, N, F)).
        points: (B, N, 3); may be part of a graph (e.g. depend on a predicted pose).
        create_graph: keep the graph of the gradient (default: whether gradients
            are enabled), so losses on it train the field.
        analytic: use ``field_fn.with_gradient`` when present.
    Returns:
        sdf: (B, N); features: (B, N, F); gradient: (B, N, 3). All detached when
        ``create_graph`` is False.
    """
    if create_graph is None:
        create_graph = torch.is_grad_enabled()
    with_gradient = getattr(field_fn, "with_gradient", None) if analytic else None
    if with_gradient is not None:
        if create_graph:
            with torch.enable_grad():
                sdf, features, gradient = with_gradient(points)
        else:
            with torch.no_grad():
                sdf, features, gradient = with_gradient(points.detach())
        if sdf.shape != points.shape[:2] or gradient.shape != points.shape:
            raise ValueError(
                f"field_fn.with_gradient returned sdf {tuple(sdf.shape)} and gradient "
                f"{tuple(gradient.shape)} for points {tuple(points.shape)}"
            )
        return sdf, features, gradient
    with torch.enable_grad():
        if not create_graph:
            points = points.detach()
        if not points.requires_grad:
            points = points.requires_grad_(True)
        sdf, features = field_fn(points)
        if sdf.shape != points.shape[:2]:
            raise ValueError(
                f"field_fn returned sdf of shape {tuple(sdf.shape)} for points "
                f"{tuple(points.shape)}; expected {tuple(points.shape[:2])}"
            )
        (gradient,) = torch.autograd.grad(
            sdf, points, grad_outputs=torch.ones_like(sdf), create_graph=create_graph
        )
    if not create_graph:
        return sdf.detach(), features.detach(), gradient.detach()
    return sdf, features, gradient


def effective_beta(raw_beta: torch.Tensor, beta_min: float = 1e-4) -> torch.Tensor:
    """|raw_beta| + beta_min: the Laplace scale actually used (always > 0)."""
    return raw_beta.abs() + beta_min


def sdf_to_density(sdf: torch.Tensor, beta: torch.Tensor | float) -> torch.Tensor:
    """VolSDF density sigma = (1 / beta) * Psi_beta(-sdf).

    Psi_beta is the CDF of the zero-mean Laplace distribution with scale beta:
    Psi(s) = 0.5 exp(s / beta) for s <= 0 and 1 - 0.5 exp(-s / beta) for s > 0.
    Evaluated as 0.5 exp(-|sdf| / beta) (outside) or 1 - that (inside), which
    never overflows.

    Args:
        sdf: (...) signed distances (negative inside).
        beta: scalar tensor or float > 0.
    Returns:
        sigma: (...) densities in (0, 1 / beta].
    """
    half_tail = 0.5 * torch.exp(-sdf.abs() / beta)
    psi = torch.where(sdf >= 0, half_tail, 1.0 - half_tail)
    return psi / beta


def composite(
    density: torch.Tensor,
    t: torch.Tensor,
    far: torch.Tensor,
    rgb: torch.Tensor | None = None,
    normals: torch.Tensor | None = None,
    background: torch.Tensor | tuple[float, float, float] = (1.0, 1.0, 1.0),
) -> Composite:
    """Alpha-composite samples along rays.

    delta_i = t_{i+1} - t_i, and far - t_S for the last sample (0 without
    jitter, as in VolSDF/ShapeClipper); alpha_i = 1 - exp(-sigma_i delta_i);
    T_i = exp(-sum_{j<i} sigma_j delta_j); w_i = alpha_i T_i.

    Args:
        density: (B, R, S) sigma at the samples.
        t: (B, R, S) sorted sample distances.
        far: (B, R) far bounds.
        rgb: (B, R, S, 3) sample colours, or None.
        normals: (B, R, S, 3) sample unit normals, or None.
        background: RGB (3,) composited behind the samples.
    Returns:
        :class:`Composite`.
    """
    if density.shape != t.shape or far.shape != t.shape[:-1]:
        raise ValueError(
            f"composite: density {tuple(density.shape)}, t {tuple(t.shape)} and far "
            f"{tuple(far.shape)} do not match (want (B, R, S), (B, R, S), (B, R))"
        )
    delta = torch.cat([t[..., 1:] - t[..., :-1], (far[..., None] - t[..., -1:]).clamp_min(0)], -1)
    free_energy = density * delta  # (B, R, S)
    alpha = 1.0 - torch.exp(-free_energy)
    # Exclusive cumulative sum: optical depth in front of each sample.
    before = torch.cumsum(free_energy, dim=-1) - free_energy
    weights = alpha * torch.exp(-before)
    mask = weights.sum(dim=-1)
    depth = (weights * t).sum(dim=-1)
    out_rgb = None
    if rgb is not None:
        bg = torch.as_tensor(background, dtype=rgb.dtype, device=rgb.device)
        out_rgb = torch.einsum("brs,brsc->brc", weights, rgb) + (1.0 - mask)[..., None] * bg
    out_normals = None
    if normals is not None:
        out_normals = F.normalize(torch.einsum("brs,brsc->brc", weights, normals), dim=-1, eps=1e-8)
    return Composite(
        weights=weights, alpha=alpha, mask=mask, depth=depth, rgb=out_rgb, normals=out_normals
    )


def evaluate_samples(
    field_fn: FieldFn,
    points: torch.Tensor,
    color_fn: ColorFn | None = None,
    compute_gradient: bool = True,
    analytic: bool = True,
    chunk_points: int = 0,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """SDF, grad sdf and colour at sample points, in chunks of points.

    Every point is evaluated independently, so chunking changes neither the
    values nor the graph (it is one graph over all chunks); it only bounds the
    size of the per-point (N, width) activations.

    Args:
        points: (B, N, 3).
        color_fn: (points, features) -> rgb (B, n, 3); None: no colour.
        compute_gradient: also return grad sdf (see :func:`sdf_with_gradient`).
        analytic: use ``field_fn.with_gradient`` when present.
        chunk_points: at most about this many points (over the whole batch) per chunk;
            0: one chunk.
    Returns:
        sdf: (B, N); gradient: (B, N, 3) or None; rgb: (B, N, 3) or None.
    """
    B, N = points.shape[:2]
    n_chunks = 1 if chunk_points <= 0 else max(1, -(-B * N // chunk_points))
    step = max(1, -(-N // n_chunks))  # equal chunks of at most ~chunk_points points
    sdfs, grads, rgbs = [], [], []
    for start in range(0, N, step):
        part = points[:, start : start + step]
        if compute_gradient:
            sdf, features, grad = sdf_with_gradient(field_fn, part, analytic=analytic)
            grads.append(grad)
        else:
            sdf, features = field_fn(part)
        sdfs.append(sdf)
        if color_fn is not None:
            rgbs.append(color_fn(part, features))

    def join(parts: list[torch.Tensor]) -> torch.Tensor | None:
        if not parts:
            return None
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)

    return join(sdfs), join(grads), join(rgbs)


# ---------------------------------------------------------------------------
# Eikonal term
# ---------------------------------------------------------------------------


def uniform_points(
    batch: int,
    n_points: int,
    half_range: float = 1.0,
    generator: torch.Generator | None = None,
    device=None,
    dtype=None,
) -> torch.Tensor:
    """(B, N, 3) points uniform in [-half_range, half_range]^3."""
    u = torch.rand((batch, n_points, 3), generator=generator, device=device, dtype=dtype)
    return (2.0 * u - 1.0) * half_range


def eikonal_loss(field_fn: FieldFn, points: torch.Tensor, analytic: bool = True) -> torch.Tensor:
    """MSE(||grad sdf||, 1) over the given points, with the graph kept.

    Args:
        field_fn: points (B, N, 3) -> (sdf (B, N), features); pass one built
            from a detached code to keep the term off the encoder (ShapeClipper).
        points: (B, N, 3), e.g. ``uniform_points`` concatenated with
            ``VolumeRenderOutput.eikonal_points``.
        analytic: use ``field_fn.with_gradient`` when present (see :func:`sdf_with_gradient`).
    Returns:
        () scalar.
    """
    _, _, gradient = sdf_with_gradient(
        field_fn, points.detach(), create_graph=True, analytic=analytic
    )
    return ((gradient.norm(dim=-1) - 1.0) ** 2).mean()


# ---------------------------------------------------------------------------
# Whole renderer
# ---------------------------------------------------------------------------


def render_rays(
    field_fn: FieldFn,
    origins: torch.Tensor,
    dirs: torch.Tensor,
    near: torch.Tensor,
    far: torch.Tensor,
    beta: torch.Tensor | float,
    settings: VolumeRenderSettings,
    training: bool,
    color_fn: ColorFn | None = None,
    generator: torch.Generator | None = None,
    compute_normals: bool = True,
) -> VolumeRenderOutput:
    """Volume-render an SDF field along rays.

    Args:
        field_fn: points (B, N, 3) -> (sdf (B, N), features (B, N, F)).
        origins: (B, R, 3) world-frame ray origins.
        dirs: (B, R, 3) unit directions.
        near, far: (B, R) sampling bounds (see :func:`ray_bounds`).
        beta: effective Laplace scale (see :func:`effective_beta`), > 0.
        settings: sampling and background settings.
        training: stratified jitter (if ``settings.stratified``) and a random
            eikonal sample per ray; otherwise the bin centres and the middle sample.
        color_fn: (points, features) -> rgb (B, N, 3); None renders no colour.
        generator: for the jitter and the eikonal sample (on the rays' device).
        compute_normals: evaluate grad sdf and render normals (required for
            normal and per-ray eikonal losses; costs about 2-3x the forward).
    Returns:
        :class:`VolumeRenderOutput`.
    """
    if origins.shape != dirs.shape or origins.dim() != 3 or origins.shape[-1] != 3:
        raise ValueError(
            f"render_rays: origins {tuple(origins.shape)} and dirs {tuple(dirs.shape)} "
            "must both be (B, R, 3)"
        )
    if near.shape != origins.shape[:2] or far.shape != origins.shape[:2]:
        raise ValueError(
            f"render_rays: near {tuple(near.shape)} and far {tuple(far.shape)} must be "
            f"{tuple(origins.shape[:2])}"
        )
    B, R, _ = origins.shape
    S = settings.n_samples
    t = sample_along_rays(near, far, S, training and settings.stratified, generator)
    points = origins[:, :, None, :] + t[..., None] * dirs[:, :, None, :]  # (B, R, S, 3)
    sdf, gradient, rgb = evaluate_samples(
        field_fn,
        points.reshape(B, R * S, 3),
        color_fn,
        compute_normals,
        settings.analytic_gradient,
        settings.chunk_points if points.device.type == "cpu" else 0,
    )
    sample_normals = None
    if gradient is not None:
        sample_normals = F.normalize(gradient, dim=-1, eps=1e-8).reshape(B, R, S, 3)
        gradient = gradient.reshape(B, R, S, 3)
    if rgb is not None:
        rgb = rgb.reshape(B, R, S, 3)
    sdf = sdf.reshape(B, R, S)
    beta_t = torch.as_tensor(beta, dtype=sdf.dtype, device=sdf.device)
    density = sdf_to_density(sdf, beta_t)
    comp = composite(density, t, far, rgb, sample_normals, settings.background)
    if training:
        pick = torch.randint(S, (B, R, 1, 1), generator=generator, device=t.device)
    else:
        pick = torch.full((B, R, 1, 1), S // 2, device=t.device, dtype=torch.long)
    eik = points.detach().gather(2, pick.expand(B, R, 1, 3))[:, :, 0]
    return VolumeRenderOutput(
        rgb=comp.rgb,
        mask=comp.mask,
        depth=comp.depth,
        normals=comp.normals,
        weights=comp.weights,
        t=t,
        sdf=sdf,
        sample_points=points,
        sample_gradients=gradient,
        eikonal_points=eik,
        beta=beta_t,
    )


def render_rays_chunked(
    field_fn: FieldFn,
    origins: torch.Tensor,
    dirs: torch.Tensor,
    beta: torch.Tensor | float,
    settings: VolumeRenderSettings,
    color_fn: ColorFn | None = None,
    compute_normals: bool = True,
) -> dict[str, torch.Tensor]:
    """Evaluation rendering of many rays (e.g. whole images) in chunks, without gradients.

    Args:
        origins, dirs: (B, R, 3) (e.g. from ``poseless.render.rays.image_rays``).
    Returns:
        dict with ``mask`` (B, R), ``depth`` (B, R) and, when available, ``rgb``
        (B, R, 3) and ``normals`` (B, R, 3); all detached.
    """
    near, far = ray_bounds(origins, settings)
    pieces: dict[str, list[torch.Tensor]] = {}
    with torch.no_grad():
        for start in range(0, origins.shape[1], settings.chunk_rays):
            sl = slice(start, start + settings.chunk_rays)
            out = render_rays(
                field_fn,
                origins[:, sl],
                dirs[:, sl],
                near[:, sl],
                far[:, sl],
                beta,
                settings,
                training=False,
                color_fn=color_fn,
                compute_normals=compute_normals,
            )
            for key in ("mask", "depth", "rgb", "normals"):
                value = getattr(out, key)
                if value is not None:
                    pieces.setdefault(key, []).append(value.detach())
    return {key: torch.cat(values, dim=1) for key, values in pieces.items()}


class VolumeRenderer(nn.Module):
    """Holds the settings and the learnable Laplace scale beta; the math is in the functions."""

    def __init__(self, settings: VolumeRenderSettings | None = None):
        super().__init__()
        self.settings = settings or VolumeRenderSettings()
        self.raw_beta = nn.Parameter(torch.tensor(float(self.settings.beta_init)))

    def beta(self) -> torch.Tensor:
        """() effective beta = |raw| + beta_min."""
        return effective_beta(self.raw_beta, self.settings.beta_min)

    def forward(
        self,
        field_fn: FieldFn,
        origins: torch.Tensor,
        dirs: torch.Tensor,
        training: bool,
        color_fn: ColorFn | None = None,
        generator: torch.Generator | None = None,
        compute_normals: bool = True,
    ) -> VolumeRenderOutput:
        """Render rays (B, R, 3) with bounds from the settings; see :func:`render_rays`."""
        near, far = ray_bounds(origins, self.settings)
        return render_rays(
            field_fn,
            origins,
            dirs,
            near,
            far,
            self.beta(),
            self.settings,
            training,
            color_fn=color_fn,
            generator=generator,
            compute_normals=compute_normals,
        )

    def uniform_eikonal_points(
        self, batch: int, n_points: int, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """(B, N, 3) points uniform in [-eikonal_range, eikonal_range]^3 on beta's device."""
        return uniform_points(
            batch,
            n_points,
            self.settings.eikonal_range,
            generator=generator,
            device=self.raw_beta.device,
            dtype=self.raw_beta.dtype,
        )

    def render_chunked(
        self,
        field_fn: FieldFn,
        origins: torch.Tensor,
        dirs: torch.Tensor,
        color_fn: ColorFn | None = None,
        compute_normals: bool = True,
    ) -> dict[str, torch.Tensor]:
        """Chunked no-grad rendering; see :func:`render_rays_chunked`."""
        return render_rays_chunked(
            field_fn, origins, dirs, self.beta().detach(), self.settings, color_fn, compute_normals
        )

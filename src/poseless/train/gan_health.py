"""Health checks of a trained mesh GAN: collapse, pose dependence, realism, degenerate meshes.

URA's code has none; a GAN that collapsed (every z gives the same shape), that
escaped the pose-independent critic with shapes that look alike from every
azimuth, or whose meshes degenerated would silently poison ``train_pose`` and
everything after it. After training, ``n_codes`` codes are each rendered at
``n_azimuths`` evenly spaced azimuths (an (N, K) grid of silhouettes, binarised
at 0.5) and compared with ``n_real`` training masks:

1. **Diversity** (collapse). ``shape_diversity``: mean 1 - IoU between renders of
   *different* codes at the *same* azimuth; ``fake_diversity``: the same over
   different codes at any azimuths (the silhouette distribution the critic
   sees); ``real_diversity``: mean 1 - IoU between different real masks.
   Check: ``shape_diversity / real_diversity >= min_diversity_ratio``.
2. **Distance to the real silhouettes.** Fréchet distance between Gaussians
   fitted to 8 silhouette moments (:func:`silhouette_features`); MMD^2 (biased,
   Gaussian kernel, bandwidth = median real pairwise distance) between
   ``feature_size``^2 area-downsampled silhouettes; histograms of the mask area
   (fraction of the image) and their total-variation distance. Each distance is
   also given between two halves of the real masks (its noise floor).
   Check: ``area_tv <= max_area_tv``.
3. **Pose dependence.** ``view_variation``: mean 1 - IoU between renders of the
   *same* code at *different* azimuths (0 = G ignores the pose, e.g. solids of
   revolution about y); also its ratio to ``shape_diversity``.
   Check: ``view_variation >= min_view_variation``.
4. **Degenerate meshes.** A sample is degenerate when its vertices are not
   finite, its bounding box's largest side is below ``min_extent`` (collapsed to
   a point), more than ``max_bound_fraction`` of its coordinates sit at the
   +-0.5 bound (saturated sigmoid), or it is empty at every azimuth (off screen).
   Check: ``degenerate_fraction <= max_degenerate_fraction``.

:func:`evaluate_gan_health` computes everything into a :class:`GanHealth`;
:func:`raise_if_unhealthy` turns failed checks into a
:class:`~poseless.errors.TrainingError` naming each check, its value and
threshold, with advice.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

from poseless.config import GanHealthConfig
from poseless.errors import TrainingError
from poseless.geometry.cameras import LookAtCamera
from poseless.models.mesh_decoder import Generator
from poseless.render.soft_raster import SoftRasterSettings
from poseless.train.gan import as_float_masks, evenly_spaced_azimuths, render_views

BOUND = 0.5
"""Vertices of the mesh decoder lie in [-BOUND, BOUND]^3."""
BOUND_EPS = 1e-3
"""A coordinate within this of +-BOUND counts as 'at the bound'."""
FEATURE_NAMES = (
    "area",
    "centroid_x",
    "centroid_y",
    "std_x",
    "std_y",
    "bbox_w",
    "bbox_h",
    "bbox_fill",
)
"""Silhouette moments of :func:`silhouette_features` (lengths as fractions of the side)."""

ADVICE = {
    "diversity": (
        "G maps every z to (nearly) the same silhouette (mode collapse). Train longer "
        "(train_gan.iterations), lower train_gan.lr, keep the critic ahead (train_gan.n_critic "
        ">= 3, gp_weight 10, gp_mode per_sample), and look at the prepared dataset's "
        "contact_sheet.png: identical, empty or mis-cropped masks give G nothing to match."
    ),
    "view_variation": (
        "the samples look the same from every azimuth: G escaped the pose-independent critic "
        "with shapes of revolution. Check that train_gan.azimuth_range_deg, elevation_deg and "
        "the camera match the data, train longer or lower train_gan.lr; if the category really "
        "is rotationally symmetric set train_gan.health.min_view_variation: 0."
    ),
    "area": (
        "the rendered silhouettes' sizes do not match the real masks'. Check the camera "
        "(train_gan.camera / distance / fov_deg against the data's framing, "
        "prepare_data.crop and margin) and the masks on contact_sheet.png; train longer."
    ),
    "degenerate": (
        "many meshes are degenerate (collapsed to a point, saturated at the +-0.5 bound, "
        "non-finite or off screen). Lower train_gan.lr, keep train_gan.adaptive_weight on or "
        "raise laplacian_weight / flatten_weight, keep gp_weight at 10, and check the camera "
        "distance so that shapes in [-0.5, 0.5]^3 fill the view."
    ),
}
"""Advice printed for each failed check."""


# ---------------------------------------------------------------------------
# Plain statistics
# ---------------------------------------------------------------------------


def binarize(masks: torch.Tensor) -> torch.Tensor:
    """(N, 1, H, W) or (N, H, W) masks (uint8 / bool / float) -> (N, H*W) float {0, 1} (> 0.5)."""
    m = as_float_masks(masks)
    return (m.reshape(m.shape[0], -1) > 0.5).float()


def iou_distance_matrix(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pairwise 1 - IoU of binary masks.

    a: (N, P), b: (M, P) in {0, 1} -> (N, M) float64; two empty masks are at distance 0.
    """
    a, b = a.double(), b.double()
    inter = a @ b.T  # (N, M)
    union = a.sum(1)[:, None] + b.sum(1)[None, :] - inter
    iou = torch.where(union > 0, inter / union.clamp_min(1.0), torch.ones_like(inter))
    return 1.0 - iou


def mean_pairwise_distance(x: torch.Tensor) -> float:
    """Mean 1 - IoU over the ordered pairs (i != j) of (N, P) binary masks (N >= 2)."""
    n = x.shape[0]
    if n < 2:
        raise ValueError(f"mean_pairwise_distance: need at least 2 masks, got {n}")
    d = iou_distance_matrix(x, x)
    return float((d.sum() - d.diagonal().sum()) / (n * (n - 1)))


def grid_statistics(grid: torch.Tensor) -> dict[str, float]:
    """Diversity statistics of an (N codes, K azimuths, P) binary render grid (N, K >= 2).

    Returns shape_diversity (different codes, same azimuth), view_variation (same
    code, different azimuths) and fake_diversity (different codes, any azimuths).
    """
    n, k, p = grid.shape
    if n < 2 or k < 2:
        raise ValueError(f"grid_statistics: need >= 2 codes and >= 2 azimuths, got {n} x {k}")
    d = iou_distance_matrix(grid.reshape(n * k, p), grid.reshape(n * k, p)).view(n, k, n, k)
    same_code = torch.eye(n, dtype=torch.bool)[:, None, :, None].expand(n, k, n, k)
    same_view = torch.eye(k, dtype=torch.bool)[None, :, None, :].expand(n, k, n, k)
    return {
        "shape_diversity": float(d[~same_code & same_view].mean()),
        "view_variation": float(d[same_code & ~same_view].mean()),
        "fake_diversity": float(d[~same_code].mean()),
    }


def silhouette_features(masks: torch.Tensor) -> np.ndarray:
    """Eight moments per silhouette (:data:`FEATURE_NAMES`), lengths as fractions of the side.

    masks: (N, 1, S, S) -> (N, 8) float64. Empty masks give all zeros.
    """
    m = binarize(masks).double().view(masks.shape[0], masks.shape[-2], masks.shape[-1])
    n, h, w = m.shape
    ys = (torch.arange(h, dtype=torch.float64) + 0.5) / h
    xs = (torch.arange(w, dtype=torch.float64) + 0.5) / w
    area = m.sum((1, 2))  # (N,)
    safe = area.clamp_min(1.0)
    px, py = m.sum(1), m.sum(2)  # (N, W), (N, H) marginals
    cx, cy = (px * xs).sum(1) / safe, (py * ys).sum(1) / safe
    sx = ((px * (xs[None] - cx[:, None]) ** 2).sum(1) / safe).sqrt()
    sy = ((py * (ys[None] - cy[:, None]) ** 2).sum(1) / safe).sqrt()
    on_x, on_y = px > 0, py > 0
    idx_x, idx_y = torch.arange(w), torch.arange(h)
    bw = torch.where(
        on_x.any(1),
        (torch.where(on_x, idx_x, -1).amax(1) - torch.where(on_x, idx_x, w).amin(1) + 1).double(),
        torch.zeros(n, dtype=torch.float64),
    )
    bh = torch.where(
        on_y.any(1),
        (torch.where(on_y, idx_y, -1).amax(1) - torch.where(on_y, idx_y, h).amin(1) + 1).double(),
        torch.zeros(n, dtype=torch.float64),
    )
    fill = area / (bw * bh).clamp_min(1.0)
    feats = torch.stack([area / (h * w), cx, cy, sx, sy, bw / w, bh / h, fill], dim=1)
    return torch.where(area[:, None] > 0, feats, torch.zeros_like(feats)).numpy()


def frechet_distance(x: np.ndarray, y: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two samples (as in FID).

    x: (N, D), y: (M, D), N, M >= 2 ->
    ||mu_x - mu_y||^2 + Tr(C_x + C_y - 2 (C_x C_y)^(1/2)), sample covariances (ddof 1).
    """
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1] or min(len(x), len(y)) < 2:
        raise ValueError(
            f"frechet_distance: need (N, D), (M, D) with N, M >= 2: {x.shape}, {y.shape}"
        )
    cx = np.atleast_2d(np.cov(x, rowvar=False))
    cy = np.atleast_2d(np.cov(y, rowvar=False))
    # Tr (Cx Cy)^(1/2) = Tr (Cx^(1/2) Cy Cx^(1/2))^(1/2): a symmetric PSD matrix, so
    # eigh is exact and stable even when a covariance is singular (e.g. collapse).
    w, u = np.linalg.eigh(cx)
    sx = (u * np.sqrt(w.clip(0.0))) @ u.T
    inner = np.linalg.eigvalsh(sx @ cy @ sx)
    diff = x.mean(0) - y.mean(0)
    tr_sqrt = float(np.sqrt(inner.clip(0.0)).sum())
    return max(0.0, float(diff @ diff + np.trace(cx) + np.trace(cy) - 2.0 * tr_sqrt))


def median_bandwidth(x: np.ndarray) -> float:
    """Median of the non-zero pairwise Euclidean distances of (N, D) ``x`` (1.0 if none)."""
    d = np.sqrt(np.maximum(_sq_dists(x, x), 0.0))
    iu = np.triu_indices(len(x), k=1)
    pos = d[iu][d[iu] > 0]
    return float(np.median(pos)) if pos.size else 1.0


def _sq_dists(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.maximum((a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T, 0.0)


def mmd_rbf(x: np.ndarray, y: np.ndarray, bandwidth: float) -> float:
    """Biased squared MMD with the Gaussian kernel exp(-||a - b||^2 / (2 h^2)).

    x: (N, D), y: (M, D) -> mean k(x, x') + mean k(y, y') - 2 mean k(x, y) >= 0.
    """
    if bandwidth <= 0:
        raise ValueError(f"mmd_rbf: bandwidth must be > 0, got {bandwidth}")
    g = -0.5 / bandwidth**2
    kxx = np.exp(g * _sq_dists(x, x)).mean()
    kyy = np.exp(g * _sq_dists(y, y)).mean()
    kxy = np.exp(g * _sq_dists(x, y)).mean()
    return max(0.0, float(kxx + kyy - 2.0 * kxy))


def downsampled(masks: torch.Tensor, size: int) -> np.ndarray:
    """(N, 1, S, S) masks -> (N, size*size) float64 area-averaged binary silhouettes."""
    m = binarize(masks).view(masks.shape[0], 1, masks.shape[-2], masks.shape[-1])
    return F.adaptive_avg_pool2d(m, size).reshape(m.shape[0], -1).double().numpy()


def area_histogram(masks: torch.Tensor, bins: int) -> np.ndarray:
    """Frequencies (sum 1) of the mask area (fraction of the image) in ``bins`` bins over [0, 1]."""
    area = binarize(masks).mean(1).double().numpy()
    counts, _ = np.histogram(area, bins=bins, range=(0.0, 1.0))
    return counts / max(1, counts.sum())


def total_variation(p: np.ndarray, q: np.ndarray) -> float:
    """Total-variation distance 0.5 * sum |p - q| of two histograms (each summing to 1)."""
    return float(0.5 * np.abs(np.asarray(p) - np.asarray(q)).sum())


@dataclass(frozen=True)
class MeshDegeneracy:
    """Per-sample mesh diagnostics."""

    nonfinite: np.ndarray
    """(N,) bool: some vertex coordinate is NaN or infinite."""
    extent: np.ndarray
    """(N,) largest bounding-box side."""
    bound_fraction: np.ndarray
    """(N,) fraction of vertex coordinates within BOUND_EPS of +-BOUND."""


def mesh_degeneracy(vertices: torch.Tensor) -> MeshDegeneracy:
    """Diagnostics of (N, V, 3) vertices (see :class:`MeshDegeneracy`)."""
    v = vertices.detach().double().cpu()
    nonfinite = ~torch.isfinite(v).all(dim=(1, 2))
    safe = torch.nan_to_num(v, nan=0.0, posinf=0.0, neginf=0.0)
    extent = (safe.amax(1) - safe.amin(1)).amax(1)
    at_bound = (safe.abs() >= BOUND - BOUND_EPS).double().mean(dim=(1, 2))
    return MeshDegeneracy(nonfinite.numpy(), extent.numpy(), at_bound.numpy())


# ---------------------------------------------------------------------------
# The report
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class HealthCheck:
    """One thresholded check."""

    name: str
    """Name of the checked statistic."""
    value: float
    """Its value."""
    threshold: float
    """The configured bound."""
    kind: Literal["min", "max"]
    """min: pass when value >= threshold; max: pass when value <= threshold."""
    advice: str
    """What to try when it fails."""

    @property
    def passed(self) -> bool:
        """Whether the value is on the right side of the threshold (NaN fails)."""
        if math.isnan(self.value):
            return False
        return self.value >= self.threshold if self.kind == "min" else self.value <= self.threshold

    def describe(self) -> str:
        """e.g. ``shape_diversity_ratio = 0.000 < min 0.1``."""
        op = (
            (">=" if self.passed else "<") if self.kind == "min" else ("<=" if self.passed else ">")
        )
        return f"{self.name} = {self.value:.4g} {op} {self.kind} {self.threshold:g}"


@dataclass(frozen=True)
class GanHealth:
    """Everything :func:`evaluate_gan_health` measured."""

    metrics: dict[str, float]
    """Flat statistics (diversities, distances, degeneracy fractions, ...)."""
    checks: tuple[HealthCheck, ...]
    """The thresholded checks."""
    area_edges: tuple[float, ...]
    """Bin edges of the area histograms."""
    area_hist_fake: tuple[float, ...]
    """Frequencies of the fake silhouettes' areas."""
    area_hist_real: tuple[float, ...]
    """Frequencies of the real masks' areas."""
    grid: torch.Tensor
    """(N, K, 1, S, S) the renders the checks used (CPU)."""

    @property
    def passed(self) -> bool:
        """Whether every check passed."""
        return all(c.passed for c in self.checks)

    @property
    def failed(self) -> tuple[HealthCheck, ...]:
        """The checks that failed."""
        return tuple(c for c in self.checks if not c.passed)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary (health.json): metrics, checks, histograms, passed."""
        return {
            "passed": self.passed,
            "checks": {
                c.name: {
                    "value": _round(c.value),
                    "threshold": c.threshold,
                    "kind": c.kind,
                    "passed": c.passed,
                }
                for c in self.checks
            },
            "metrics": {k: _round(v) for k, v in self.metrics.items()},
            "area_histogram": {
                "edges": [_round(e) for e in self.area_edges],
                "fake": [_round(v) for v in self.area_hist_fake],
                "real": [_round(v) for v in self.area_hist_real],
            },
        }


def _round(v: float) -> float | str:
    v = float(v)
    if not math.isfinite(v):
        return str(v)
    return float(f"{v:.6g}")


def evaluate_gan_health(
    G: Generator,
    real_masks: torch.Tensor,
    cfg: GanHealthConfig,
    *,
    camera: LookAtCamera,
    raster: SoftRasterSettings,
    azimuth_range_deg: tuple[float, float],
    seed: int,
) -> GanHealth:
    """Render an (n_codes x n_azimuths) grid of G(z) and compare it with real masks.

    Args:
        G: the trained generator (its device is used).
        real_masks: (N, 1, S, S) training masks (uint8 / bool / float), S = raster size.
        cfg: thresholds and sample counts.
        camera, raster: the training renders' camera and rasterizer settings.
        azimuth_range_deg: the training azimuth range (the grid's azimuths span it evenly).
        seed: seeds the codes and the choice of real masks (a stream of its own).
    """
    S = raster.image_size
    if real_masks.ndim != 4 or real_masks.shape[1:] != (1, S, S):
        raise ValueError(
            f"evaluate_gan_health: real masks must be (N, 1, {S}, {S}), "
            f"got {tuple(real_masks.shape)}"
        )
    if real_masks.shape[0] < 2:
        raise ValueError("evaluate_gan_health: need at least 2 real masks")
    rng = torch.Generator().manual_seed(seed + 2)
    z = G.sample_z(cfg.n_codes, rng)
    azimuth_deg = evenly_spaced_azimuths(cfg.n_azimuths, azimuth_range_deg)
    grid, vertices = render_views(G, z, azimuth_deg, camera, raster)
    grid = grid.cpu()  # (N, K, 1, S, S)
    pick = torch.randperm(real_masks.shape[0], generator=rng)[: cfg.n_real].sort().values
    real = real_masks[pick.to(real_masks.device)].cpu()
    fake = grid.reshape(-1, 1, S, S)
    n, k = cfg.n_codes, cfg.n_azimuths

    bin_grid = binarize(fake).view(n, k, -1)
    stats = grid_statistics(bin_grid)
    real_div = mean_pairwise_distance(binarize(real))
    half = real.shape[0] // 2
    real_a, real_b = real[:half], real[half:]

    f_real, f_fake = silhouette_features(real), silhouette_features(fake)
    d_real, d_fake = downsampled(real, cfg.feature_size), downsampled(fake, cfg.feature_size)
    h = median_bandwidth(d_real)
    hist_real, hist_fake = area_histogram(real, cfg.area_bins), area_histogram(fake, cfg.area_bins)
    degeneracy = mesh_degeneracy(vertices)
    empty = bin_grid.sum(2).amax(1).numpy() == 0  # (N,) empty at every azimuth
    saturated = degeneracy.bound_fraction > cfg.max_bound_fraction
    point = degeneracy.extent < cfg.min_extent
    degenerate = degeneracy.nonfinite | point | saturated | empty
    metrics = {
        **stats,
        "real_diversity": real_div,
        "shape_diversity_ratio": stats["shape_diversity"] / real_div if real_div > 0 else math.nan,
        "fake_diversity_ratio": stats["fake_diversity"] / real_div if real_div > 0 else math.nan,
        "view_to_shape_ratio": (
            stats["view_variation"] / stats["shape_diversity"]
            if stats["shape_diversity"] > 0
            else math.inf
        ),
        "frechet_moments": frechet_distance(f_fake, f_real),
        "mmd_downsampled": mmd_rbf(d_fake, d_real, h),
        "mmd_bandwidth": h,
        "area_tv": total_variation(hist_fake, hist_real),
        "area_mean_fake": float(f_fake[:, 0].mean()),
        "area_mean_real": float(f_real[:, 0].mean()),
        "degenerate_fraction": float(degenerate.mean()),
        "nonfinite_fraction": float(degeneracy.nonfinite.mean()),
        "point_fraction": float(point.mean()),
        "saturated_fraction": float(saturated.mean()),
        "empty_fraction": float(empty.mean()),
        "extent_mean": float(np.nan_to_num(degeneracy.extent).mean()),
        "n_codes": float(n),
        "n_azimuths": float(k),
        "n_real": float(real.shape[0]),
    }
    if min(len(real_a), len(real_b)) >= 2:
        metrics["frechet_moments_real_halves"] = frechet_distance(
            silhouette_features(real_a), silhouette_features(real_b)
        )
        metrics["mmd_downsampled_real_halves"] = mmd_rbf(d_real[:half], d_real[half:], h)
        metrics["area_tv_real_halves"] = total_variation(
            area_histogram(real_a, cfg.area_bins), area_histogram(real_b, cfg.area_bins)
        )
    checks = (
        HealthCheck(
            "shape_diversity_ratio",
            metrics["shape_diversity_ratio"],
            cfg.min_diversity_ratio,
            "min",
            ADVICE["diversity"],
        ),
        HealthCheck(
            "view_variation",
            metrics["view_variation"],
            cfg.min_view_variation,
            "min",
            ADVICE["view_variation"],
        ),
        HealthCheck("area_tv", metrics["area_tv"], cfg.max_area_tv, "max", ADVICE["area"]),
        HealthCheck(
            "degenerate_fraction",
            metrics["degenerate_fraction"],
            cfg.max_degenerate_fraction,
            "max",
            ADVICE["degenerate"],
        ),
    )
    edges = tuple(float(e) for e in np.linspace(0.0, 1.0, cfg.area_bins + 1))
    return GanHealth(
        metrics,
        checks,
        edges,
        tuple(float(v) for v in hist_fake),
        tuple(float(v) for v in hist_real),
        grid,
    )


def raise_if_unhealthy(health: GanHealth, where: str) -> None:
    """Raise :class:`TrainingError` naming every failed check, its value, threshold and advice.

    Args:
        health: the evaluated report.
        where: what the user should inspect (paths of health.json, samples.png, ...).
    """
    failed = health.failed
    if not failed:
        return
    lines = [f"train_gan: the GAN failed {len(failed)} health check(s) (collapsed or degenerate):"]
    for c in failed:
        lines.append(f"  - {c.describe()}: {c.advice}")
    lines.append(
        f"  Inspect {where}. To keep this GAN anyway set train_gan.health.fail_on_collapse: false "
        "(or loosen the threshold); the finished training resumes from its checkpoint, "
        "so only the checks rerun."
    )
    raise TrainingError("\n".join(lines))

"""Evaluation metrics: 3D IoU, Chamfer / F-score, 2D mask IoU, pose errors, surface sampling.

All functions accept numpy arrays or torch tensors (moved to CPU numpy) and
return numpy values or plain floats. Angles are radians except where a name
says ``_deg``.

Definitions (REFERENCE.md "Evaluation", "Evaluation (3D IoU)"):

* **3D IoU** = |A n B| / |A u B| of two boolean grids; two empty grids score 1.
* **Chamfer distance** with *unsquared* L2 distances:
  ``cd = (accuracy + completeness) / 2``, accuracy = mean over predicted points
  of the distance to the nearest GT point, completeness = mean over GT points of
  the distance to the nearest predicted point (ShapeClipper's definition; URA's
  code has none, so this is ours for URA too).
* **F-score@tau** = 2PR / (P + R), precision P = fraction of predicted points
  with a GT point closer than tau, recall R = fraction of GT points with a
  predicted point closer than tau (strict ``<``, as ShapeClipper); 0 when P + R = 0.
* **Empty prediction** (no points): accuracy, completeness and cd are
  ``EMPTY_PREDICTION_DISTANCE`` (inf), precision/recall/F-score are 0. Tables
  should report the count of such items next to the mean.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from scipy.spatial import cKDTree

FSCORE_THRESHOLDS: tuple[float, ...] = (0.01, 0.05, 0.1)
"""F-score thresholds of ShapeClipper ("FS@1/5/10")."""
EMPTY_PREDICTION_DISTANCE = math.inf
"""Accuracy / completeness / Chamfer of an empty prediction."""
POSE_ACCURACY_THRESHOLDS_DEG: tuple[float, ...] = (15.0, 30.0)
"""Pose accuracy thresholds in degrees (Acc@15, Acc@30)."""


def to_numpy(x, name: str = "array", dtype=None) -> np.ndarray:
    """numpy view of a numpy array, torch tensor (detached, on CPU) or sequence."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    try:
        return np.asarray(x, dtype=dtype)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name}: cannot convert {type(x).__name__} to an array: {exc}") from exc


def _points(x, name: str) -> np.ndarray:
    p = to_numpy(x, name, np.float64)
    if p.ndim != 2 or p.shape[1] != 3:
        raise ValueError(f"{name} must have shape (N, 3), got {p.shape}")
    if not np.all(np.isfinite(p)):
        raise ValueError(f"{name} holds non-finite values")
    return p


# --------------------------------------------------------------------------- 3D IoU


def voxel_iou(pred, gt) -> float | np.ndarray:
    """IoU of boolean occupancy grids.

    Args:
        pred, gt: (R, R, R) or (B, R, R, R) bool (non-zero = occupied), same shape.
    Returns:
        A float for single grids, (B,) float64 for batches; 1.0 where both are empty.
    """
    p = to_numpy(pred, "pred").astype(bool)
    g = to_numpy(gt, "gt").astype(bool)
    if p.shape != g.shape:
        raise ValueError(f"pred and gt grids differ in shape: {p.shape} vs {g.shape}")
    if p.ndim not in (3, 4):
        raise ValueError(f"grids must have shape (R, R, R) or (B, R, R, R), got {p.shape}")
    axes = tuple(range(p.ndim - 3, p.ndim))
    inter = np.logical_and(p, g).sum(axis=axes)
    union = np.logical_or(p, g).sum(axis=axes)
    iou = np.where(union > 0, inter / np.maximum(union, 1), 1.0)
    return float(iou) if p.ndim == 3 else iou.astype(np.float64)


def mask_iou(pred, gt, threshold: float = 0.5) -> float | np.ndarray:
    """IoU of 2D masks after thresholding (``> threshold`` is foreground).

    Args:
        pred, gt: (H, W) or (N, H, W) or (N, 1, H, W) float/bool masks, same shape.
    Returns:
        A float for one mask, (N,) float64 otherwise; 1.0 where both are empty.
    """
    p = to_numpy(pred, "pred", np.float64)
    g = to_numpy(gt, "gt", np.float64)
    if p.shape != g.shape:
        raise ValueError(f"pred and gt masks differ in shape: {p.shape} vs {g.shape}")
    if p.ndim == 4:
        if p.shape[1] != 1:
            raise ValueError(f"4D masks must have shape (N, 1, H, W), got {p.shape}")
        p, g = p[:, 0], g[:, 0]
    if p.ndim not in (2, 3):
        raise ValueError(f"masks must be (H, W), (N, H, W) or (N, 1, H, W), got {p.shape}")
    pb, gb = p > threshold, g > threshold
    axes = (-2, -1)
    inter = np.logical_and(pb, gb).sum(axis=axes)
    union = np.logical_or(pb, gb).sum(axis=axes)
    iou = np.where(union > 0, inter / np.maximum(union, 1), 1.0)
    return float(iou) if p.ndim == 2 else iou.astype(np.float64)


# --------------------------------------------------------------------------- points


def nearest_distances(src, dst, tree: cKDTree | None = None) -> np.ndarray:
    """Unsquared L2 distance from every ``src`` point to its nearest ``dst`` point.

    Args:
        src: (N, 3), dst: (M, 3) points; ``tree`` optionally a cKDTree built on dst.
    Returns:
        (N,) float64; all ``EMPTY_PREDICTION_DISTANCE`` when dst is empty.
    """
    s = _points(src, "src")
    if tree is None:
        d = _points(dst, "dst")
        if len(d) == 0:
            return np.full(len(s), EMPTY_PREDICTION_DISTANCE)
        tree = cKDTree(d)
    if len(s) == 0:
        return np.zeros(0)
    dist, _ = tree.query(s, k=1, workers=-1)
    return dist


@dataclass(frozen=True)
class PointMetrics:
    """Chamfer distance and F-scores between a predicted and a GT point cloud."""

    cd: float
    """(accuracy + completeness) / 2, unsquared L2; inf for an empty prediction."""
    accuracy: float
    """Mean distance from predicted points to the GT cloud."""
    completeness: float
    """Mean distance from GT points to the predicted cloud."""
    fscore: dict[float, float]
    """F-score per threshold tau."""
    precision: dict[float, float]
    """Fraction of predicted points within tau of the GT, per tau."""
    recall: dict[float, float]
    """Fraction of GT points within tau of the prediction, per tau."""


def point_metrics_from_distances(
    d_pred_to_gt, d_gt_to_pred, thresholds: tuple[float, ...] = FSCORE_THRESHOLDS
) -> PointMetrics:
    """Chamfer and F-scores from the two nearest-neighbour distance sets.

    Args:
        d_pred_to_gt: (N,) distances of predicted points to the GT (N may be 0).
        d_gt_to_pred: (M,) distances of GT points to the prediction, M > 0.
        thresholds: F-score thresholds.
    """
    a = to_numpy(d_pred_to_gt, "d_pred_to_gt", np.float64).reshape(-1)
    c = to_numpy(d_gt_to_pred, "d_gt_to_pred", np.float64).reshape(-1)
    if len(c) == 0:
        raise ValueError("the GT point cloud is empty: nothing to evaluate against")
    if len(a) == 0:
        inf = EMPTY_PREDICTION_DISTANCE
        zeros = {float(t): 0.0 for t in thresholds}
        return PointMetrics(inf, inf, inf, dict(zeros), dict(zeros), dict(zeros))
    acc, comp = float(a.mean()), float(c.mean())
    fs, pr, rc = {}, {}, {}
    for t in thresholds:
        p = float((a < t).mean())
        r = float((c < t).mean())
        pr[float(t)], rc[float(t)] = p, r
        fs[float(t)] = 2 * p * r / (p + r) if p + r > 0 else 0.0
    return PointMetrics((acc + comp) / 2, acc, comp, fs, pr, rc)


def point_metrics(pred, gt, thresholds: tuple[float, ...] = FSCORE_THRESHOLDS) -> PointMetrics:
    """Chamfer distance (unsquared L2, mean of both directions) and F-scores.

    Args:
        pred: (N, 3) predicted points (N may be 0: empty prediction).
        gt: (M, 3) GT points, M > 0.
    """
    p, g = _points(pred, "pred"), _points(gt, "gt")
    if len(g) == 0:
        raise ValueError("gt point cloud is empty: nothing to evaluate against")
    if len(p) == 0:
        return point_metrics_from_distances(np.zeros(0), np.ones(len(g)), thresholds)
    return point_metrics_from_distances(
        nearest_distances(p, g), nearest_distances(g, p), thresholds
    )


def chamfer_distance(pred, gt) -> float:
    """(accuracy + completeness) / 2 with unsquared L2; pred (N, 3), gt (M, 3)."""
    return point_metrics(pred, gt, ()).cd


def fscore_name(tau: float) -> str:
    """Metric name of the F-score at ``tau``: 0.01 -> 'fscore@0.01'."""
    return f"fscore@{float(tau):g}"


def sample_surface_points(vertices, faces, n: int, seed: int = 0) -> np.ndarray:
    """Area-weighted uniform samples on a triangle mesh, reproducible by ``seed``.

    Args:
        vertices: (V, 3) float, faces: (F, 3) int.
        n: number of points.
    Returns:
        (n, 3) float64 points; (0, 3) when the mesh has no area.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    v = to_numpy(vertices, "vertices", np.float64)
    f = to_numpy(faces, "faces")
    if v.ndim != 2 or v.shape[1] != 3:
        raise ValueError(f"vertices must have shape (V, 3), got {v.shape}")
    if f.size == 0:
        return np.zeros((0, 3))
    if f.ndim != 2 or f.shape[1] != 3:
        raise ValueError(f"faces must have shape (F, 3), got {f.shape}")
    f = f.astype(np.int64)
    if f.min() < 0 or f.max() >= len(v):
        raise ValueError(f"faces index vertices out of range [0, {len(v)})")
    tri = v[f]  # (F, 3, 3)
    area = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
    total = area.sum()
    if not np.isfinite(total) or total <= 0:
        return np.zeros((0, 3))
    rng = np.random.default_rng(seed)
    face = rng.choice(len(f), size=n, p=area / total)
    u, w = rng.random(n), rng.random(n)
    su = np.sqrt(u)
    b0, b1, b2 = 1 - su, su * (1 - w), su * w  # uniform barycentrics
    t = tri[face]
    return b0[:, None] * t[:, 0] + b1[:, None] * t[:, 1] + b2[:, None] * t[:, 2]


# --------------------------------------------------------------------------- poses


def wrap_angle(a) -> np.ndarray:
    """Angles (radians, any shape) wrapped to [-pi, pi)."""
    a = to_numpy(a, "angle", np.float64)
    return (a + np.pi) % (2 * np.pi) - np.pi


def azimuth_error(pred, gt) -> np.ndarray:
    """Absolute wrapped azimuth difference in radians, in [0, pi]; pred, gt (N,) radians."""
    p = to_numpy(pred, "pred", np.float64)
    g = to_numpy(gt, "gt", np.float64)
    if p.shape != g.shape:
        raise ValueError(f"pred and gt azimuths differ in shape: {p.shape} vs {g.shape}")
    return np.abs(wrap_angle(p - g))


def rotation_error(R_pred, R_gt) -> np.ndarray:
    """Geodesic angle between rotations, arccos((tr(R_pred^T R_gt) - 1) / 2).

    Args:
        R_pred, R_gt: (N, 3, 3) or (3, 3) rotation matrices.
    Returns:
        (N,) or () radians in [0, pi].
    """
    a = to_numpy(R_pred, "R_pred", np.float64)
    b = to_numpy(R_gt, "R_gt", np.float64)
    if a.shape != b.shape or a.shape[-2:] != (3, 3):
        raise ValueError(
            f"R_pred and R_gt must both be (N, 3, 3) or (3, 3), got {a.shape}, {b.shape}"
        )
    tr = np.einsum("...ji,...ji->...", a, b)
    return np.arccos(np.clip((tr - 1) / 2, -1.0, 1.0))


@dataclass(frozen=True)
class PoseSummary:
    """Summary of per-item angular pose errors."""

    count: int
    """Number of items."""
    median_deg: float
    """Median error in degrees (nan when count is 0)."""
    mean_deg: float
    """Mean error in degrees (nan when count is 0)."""
    accuracy: dict[float, float]
    """Fraction of items with error <= t degrees, per threshold t (15 and 30 by default)."""


def summarize_pose_errors(
    errors_rad, thresholds_deg: tuple[float, ...] = POSE_ACCURACY_THRESHOLDS_DEG
) -> PoseSummary:
    """Median, mean and Acc@t of angular errors.

    Args:
        errors_rad: (N,) non-negative errors in radians.
    """
    e = np.degrees(to_numpy(errors_rad, "errors_rad", np.float64).reshape(-1))
    if np.any(~np.isfinite(e)) or np.any(e < 0):
        raise ValueError("errors_rad must be finite and non-negative")
    if len(e) == 0:
        return PoseSummary(0, math.nan, math.nan, {float(t): math.nan for t in thresholds_deg})
    acc = {float(t): float((e <= t).mean()) for t in thresholds_deg}
    return PoseSummary(len(e), float(np.median(e)), float(e.mean()), acc)

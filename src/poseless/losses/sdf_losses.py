"""ShapeClipper's loss terms, as small composable functions (REFERENCE "ShapeClipper").

Each function returns one scalar; the trainer (:mod:`poseless.train.recon_sdf`)
weights and sums them. Angles are radians; viewpoint angles are given as
L2-normalised (cos, sin) pairs of shape (B, 2), as the viewpoint estimator
predicts them.

* :func:`rgb_loss` — MSE of rendered and target colours on the sampled rays.
* :func:`mask_iou_loss` — soft IoU of rendered opacity and target mask per image.
* :func:`normal_loss` — 5 |n - n_gt|_1 + (1 - cos) per ray on rays inside both
  masks, the worst ``dropout`` fraction by (1 - cos) over the whole batch dropped;
  GT camera-frame normals are rotated into the canonical frame with the
  **predicted** pose (:func:`camera_normals_to_world`, n_w = R^T n_c).
* :func:`azimuth_uniform_prior` — 1-D earth mover's distance between the batch's
  azimuths and a uniform grid, on cos, sin and cos * sin.
* :func:`camera_margin_loss` — hinge keeping |elevation| and |roll| below 90 deg
  minus a slack.
* :func:`camera_symmetry_loss` — the horizontally flipped image must give the
  mirrored viewpoint (azimuth and roll sines negated, elevation unchanged).
* :func:`sphere_sdf_loss` — the pre-training target ||x|| - r.
* :func:`angle_loss` — 1 - cos(a - b) between (cos, sin) pairs (pose supervision).
* the eikonal term is :func:`poseless.render.volume.eikonal_loss`.
"""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F

from poseless.geometry.cameras import normals_camera_to_world

IOU_EPS = 1e-6
"""Added to the soft-IoU denominator."""


def _check_trig(x: torch.Tensor, name: str) -> None:
    if x.dim() != 2 or x.shape[1] != 2:
        raise ValueError(f"{name}: expected (B, 2) (cos, sin) pairs, got {tuple(x.shape)}")


def rgb_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """pred, target: (B, R, 3) colours in [0, 1] -> () mean squared error."""
    if pred.shape != target.shape:
        raise ValueError(f"rgb_loss: shapes differ: {tuple(pred.shape)} vs {tuple(target.shape)}")
    return ((pred - target) ** 2).mean()


def mask_iou_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1 - mean_b sum(p t) / (sum(p + t - p t) + eps) over each image's rays.

    Args:
        pred: (B, R) rendered opacity; target: (B, R) mask values in [0, 1].
    Returns:
        () scalar in [0, 1].
    """
    if pred.shape != target.shape or pred.dim() != 2:
        raise ValueError(
            f"mask_iou_loss: need two (B, R) tensors, got {tuple(pred.shape)}, {tuple(target.shape)}"
        )
    inter = (pred * target).sum(dim=1)
    union = (pred + target - pred * target).sum(dim=1)
    return 1.0 - (inter / (union + IOU_EPS)).mean()


def camera_normals_to_world(normals_cam: torch.Tensor, R: torch.Tensor) -> torch.Tensor:
    """GT camera-frame normals (B, R, 3) -> canonical-frame unit normals n_w = R^T n_c.

    R: (B, 3, 3) world->camera rotation of the **predicted** pose (gradients flow into it).
    """
    return F.normalize(normals_camera_to_world(normals_cam, R), dim=-1, eps=1e-8)


def kept_after_dropout(n: int, dropout: float) -> int:
    """How many of ``n`` rays survive dropping the worst ``dropout`` fraction (floor of the drop)."""
    return n - int(math.floor(dropout * n + 1e-9))


def normal_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    valid: torch.Tensor,
    dropout: float = 0.2,
    l1_weight: float = 5.0,
) -> torch.Tensor:
    """ShapeClipper's normal loss with batch-wise outlier dropout.

    Per valid ray: ``l1_weight * |n - n_gt|_1 + (1 - cos(n, n_gt))``. The valid
    rays of the whole batch are sorted by (1 - cos) and the worst
    ``floor(dropout * count)`` are dropped (noise tolerance); the loss is the
    mean over the rest.

    Args:
        pred: (B, R, 3) rendered unit normals (canonical frame).
        target: (B, R, 3) GT unit normals in the same frame.
        valid: (B, R) bool, rays inside the GT and the rendered mask.
        dropout: fraction dropped, in [0, 1).
    Returns:
        () scalar (0, still attached to ``pred``, when no ray is valid).
    """
    if pred.shape != target.shape or valid.shape != pred.shape[:2]:
        raise ValueError(
            f"normal_loss: pred {tuple(pred.shape)}, target {tuple(target.shape)} and valid "
            f"{tuple(valid.shape)} do not match (want (B, R, 3), (B, R, 3), (B, R))"
        )
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"normal_loss: dropout must lie in [0, 1), got {dropout}")
    p, t = pred[valid], target[valid]  # (M, 3)
    if p.shape[0] == 0:
        return pred.sum() * 0.0
    one_minus_cos = 1.0 - F.cosine_similarity(p, t, dim=-1, eps=1e-8)  # (M,)
    per_ray = l1_weight * (p - t).abs().sum(dim=-1) + one_minus_cos
    keep = kept_after_dropout(p.shape[0], dropout)
    if keep < p.shape[0]:
        order = torch.argsort(one_minus_cos.detach(), stable=True)[:keep]
        per_ray = per_ray[order]
    return per_ray.mean()


def uniform_grid(batch: int, device=None, dtype=None) -> torch.Tensor:
    """(B,) angles (2k + 1) pi / B, k = 0 .. B - 1: the uniform reference of the azimuth prior."""
    k = torch.arange(batch, device=device, dtype=dtype or torch.get_default_dtype())
    return (2.0 * k + 1.0) * math.pi / batch


def azimuth_uniform_prior(azimuth: torch.Tensor) -> torch.Tensor:
    """EMD between the batch's azimuths and a uniform grid.

    Sort the batch's cos a, sin a and cos a sin a separately, compare each with
    the same function of the grid :func:`uniform_grid` (also sorted);
    loss = (||d cos||_2 + ||d sin||_2 + ||d prod||_2) / (3 B).

    Args:
        azimuth: (B, 2) (cos, sin) pairs.
    Returns:
        () scalar; 0 for a batch that is a permutation of the grid.
    """
    _check_trig(azimuth, "azimuth_uniform_prior")
    B = azimuth.shape[0]
    grid = uniform_grid(B, azimuth.device, azimuth.dtype)
    c, s = azimuth[:, 0], azimuth[:, 1]
    gc, gs = torch.cos(grid), torch.sin(grid)
    total = azimuth.new_zeros(())
    for mine, ref in ((c, gc), (s, gs), (c * s, gc * gs)):
        total = total + (torch.sort(mine).values - torch.sort(ref).values).norm()
    return total / (3.0 * B)


def trig_angle(x: torch.Tensor) -> torch.Tensor:
    """(B, 2) (cos, sin) -> (B,) angle in (-pi, pi]."""
    _check_trig(x, "trig_angle")
    return torch.atan2(x[:, 1], x[:, 0])


def camera_margin_loss(
    elevation: torch.Tensor, roll: torch.Tensor, slack_deg: float = 5.0
) -> torch.Tensor:
    """mean relu(|elev| - (90 - slack) deg) + mean relu(|roll| - (90 - slack) deg), radians.

    Args:
        elevation, roll: (B, 2) (cos, sin) pairs.
    """
    limit = math.radians(90.0 - slack_deg)
    e, r = trig_angle(elevation), trig_angle(roll)
    return F.relu(e.abs() - limit).mean() + F.relu(r.abs() - limit).mean()


def mirrored_viewpoint(
    azimuth: torch.Tensor, elevation: torch.Tensor, roll: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The viewpoint of the horizontally flipped image: azimuth and roll sines negated."""
    flip = azimuth.new_tensor([1.0, -1.0])
    return azimuth * flip, elevation, roll * flip


def camera_symmetry_loss(
    original: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    flipped: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
) -> torch.Tensor:
    """MSE between the flipped image's viewpoint and the mirrored original viewpoint.

    Args:
        original, flipped: (azimuth, elevation, roll), each (B, 2) (cos, sin).
    Returns:
        () mean of the squared differences of the six numbers per image.
    """
    target = mirrored_viewpoint(*original)
    diffs = [((f - t) ** 2) for f, t in zip(flipped, target)]
    return torch.cat(diffs, dim=1).mean()


def sphere_sdf_loss(sdf: torch.Tensor, points: torch.Tensor, radius: float = 0.5) -> torch.Tensor:
    """Sphere pre-training: MSE(sdf, ||x|| - radius). sdf: (B, N); points: (B, N, 3)."""
    if sdf.shape != points.shape[:-1]:
        raise ValueError(
            f"sphere_sdf_loss: sdf {tuple(sdf.shape)} does not match points {tuple(points.shape)}"
        )
    return ((sdf - (points.norm(dim=-1) - radius)) ** 2).mean()


def angle_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """mean(1 - cos(a_pred - a_target)) for (B, 2) (cos, sin) pairs (unit length)."""
    _check_trig(pred, "angle_loss")
    _check_trig(target, "angle_loss")
    return (1.0 - (pred * target).sum(dim=1)).mean()

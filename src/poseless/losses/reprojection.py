"""Silhouette re-projection losses.

URA's soft IoU loss (REFERENCE "URA", Losses)::

    1 - mean_b  sum(p * t) / (sum(p + t - p * t) + 1e-6)

with the sums over each image's pixels. MSE and L1 are offered as alternatives.
"""

from __future__ import annotations

from typing import Literal

import torch

IOU_EPS = 1e-6
"""Added to the soft union (URA)."""


def _check_pair(pred: torch.Tensor, target: torch.Tensor, who: str) -> None:
    if pred.shape != target.shape:
        raise ValueError(
            f"{who}: pred and target shapes differ: {tuple(pred.shape)} vs {tuple(target.shape)}"
        )
    if pred.ndim < 2:
        raise ValueError(f"{who}: expected (B, ...) silhouettes, got shape {tuple(pred.shape)}")


def soft_iou(pred: torch.Tensor, target: torch.Tensor, eps: float = IOU_EPS) -> torch.Tensor:
    """Per-image soft IoU.

    pred, target: (B, ...) e.g. (B, 1, H, W) in [0, 1] -> (B,).
    """
    _check_pair(pred, target, "soft_iou")
    dims = tuple(range(1, pred.ndim))
    inter = (pred * target).sum(dims)
    union = (pred + target - pred * target).sum(dims)
    return inter / (union + eps)


def iou_loss(pred: torch.Tensor, target: torch.Tensor, eps: float = IOU_EPS) -> torch.Tensor:
    """URA's IoU loss, 1 - mean_b soft_iou: pred, target (B, ...) -> scalar."""
    return 1.0 - soft_iou(pred, target, eps).mean()


def silhouette_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    kind: Literal["iou", "mse", "l1"] = "iou",
) -> torch.Tensor:
    """Re-projection loss between silhouettes: pred, target (B, 1, H, W) -> scalar.

    kind: "iou" (URA, :func:`iou_loss`), "mse" or "l1" (mean over all pixels).
    """
    _check_pair(pred, target, "silhouette_loss")
    if kind == "iou":
        return iou_loss(pred, target)
    if kind == "mse":
        return ((pred - target) ** 2).mean()
    if kind == "l1":
        return (pred - target).abs().mean()
    raise ValueError(f"silhouette_loss: kind must be 'iou', 'mse' or 'l1', got {kind!r}")

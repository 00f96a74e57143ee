"""WGAN-GP losses (URA stages a and c) and URA's adaptive geometry weight.

Critic loss (Gulrajani et al. 2017, URA eq. 1)::

    L_D = mean D(fake) - mean D(real) + lambda * mean_i (||grad_x D(x_i)|| - 1)^2

with x_i = e_i * real_i + (1 - e_i) * fake_i, e_i ~ U[0, 1] per sample, and
lambda = 10. ``gp_mode="per_sample"`` (default) takes the norm of each sample's
whole gradient (C x H x W values), as Gulrajani et al. intend.
``gp_mode="per_pixel"`` reproduces a **defect** of URA's public code: the norm is
taken over the channel dimension only, i.e. per pixel (|g| for one-channel
silhouettes), and the penalty (|g_p| - 1)^2 is averaged over samples and pixels.
It pushes every pixel's gradient towards magnitude 1 rather than the image's
gradient norm; it is offered only to reproduce the authors' numbers.

Generator loss: ``-mean D(fake)``.

Adaptive geometry weight (stage a, REFERENCE "URA"): every G step the geometry
term (Laplacian + flatten) is rescaled by ``|mean dL_adv/dW_bias| / 2e-5``, where
``L_adv = -mean D(fake)`` and ``W_bias`` is the **weight matrix of the mesh
decoder's vertex-bias head** (``Linear(2048, 642*3).weight``, shape
(1926, 2048); ``MeshDecoder.bias_head.weight``). The scale is a detached number:
it changes how strongly the regulariser pulls, not the gradients' graph.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch

GP_WEIGHT = 10.0
"""Gradient-penalty weight lambda (URA, Gulrajani et al.)."""
ADAPTIVE_REFERENCE = 2e-5
"""Denominator of URA's adaptive geometry weight."""

GpMode = Literal["per_sample", "per_pixel"]


@dataclass(frozen=True)
class CriticLoss:
    """WGAN-GP critic loss and its parts."""

    loss: torch.Tensor
    """Scalar to minimise: mean D(fake) - mean D(real) + gp_weight * gradient_penalty."""
    d_real: torch.Tensor
    """Scalar mean critic score of the real samples (detached)."""
    d_fake: torch.Tensor
    """Scalar mean critic score of the fake samples (detached)."""
    gradient_penalty: torch.Tensor
    """Scalar gradient penalty before weighting (detached)."""

    @property
    def wasserstein(self) -> torch.Tensor:
        """Critic's estimate of the Wasserstein distance, mean D(real) - mean D(fake)."""
        return self.d_real - self.d_fake


def interpolate(
    real: torch.Tensor, fake: torch.Tensor, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Random points on the segments real_i -- fake_i, one U[0, 1] weight per sample.

    real, fake: (B, ...) -> (B, ...) (detached from both inputs).
    """
    if real.shape != fake.shape:
        raise ValueError(
            f"interpolate: real and fake shapes differ: {tuple(real.shape)} vs {tuple(fake.shape)}"
        )
    shape = (real.shape[0],) + (1,) * (real.ndim - 1)
    draw_on = generator.device if generator is not None else real.device
    e = torch.rand(shape, generator=generator, device=draw_on).to(real.device, real.dtype)
    return (e * real.detach() + (1.0 - e) * fake.detach()).requires_grad_(True)


def gradient_penalty(
    critic: Callable[[torch.Tensor], torch.Tensor],
    points: torch.Tensor,
    mode: GpMode = "per_sample",
) -> torch.Tensor:
    """Gradient penalty of ``critic`` at ``points`` (differentiable w.r.t. its parameters).

    Args:
        critic: maps (B, C, H, W) to scores (B,) or (B, 1).
        points: (B, C, H, W) with ``requires_grad`` (e.g. from :func:`interpolate`).
        mode: "per_sample" = mean_i (||g_i||_2 - 1)^2 over each sample's whole
            gradient; "per_pixel" = mean over samples and pixels of
            (||g_i[:, y, x]||_2 - 1)^2, the norm over channels only (URA code defect).
    Returns:
        scalar penalty (unweighted).
    """
    if not points.requires_grad:
        raise ValueError("gradient_penalty: points must require grad (use interpolate())")
    scores = critic(points)
    (grad,) = torch.autograd.grad(scores.sum(), points, create_graph=True)
    if mode == "per_sample":
        norm = torch.linalg.vector_norm(grad.flatten(1), dim=1)  # (B,)
    elif mode == "per_pixel":
        if grad.ndim < 3:
            raise ValueError("gradient_penalty(per_pixel): points must be (B, C, ...)")
        norm = torch.linalg.vector_norm(grad, dim=1)  # (B, H, W)
    else:
        raise ValueError(
            f"gradient_penalty: mode must be 'per_sample' or 'per_pixel', got {mode!r}"
        )
    return ((norm - 1.0) ** 2).mean()


def critic_loss(
    critic: Callable[[torch.Tensor], torch.Tensor],
    real: torch.Tensor,
    fake: torch.Tensor,
    gp_weight: float = GP_WEIGHT,
    gp_mode: GpMode = "per_sample",
    generator: torch.Generator | None = None,
) -> CriticLoss:
    """WGAN-GP critic loss.

    Args:
        critic: maps (B, C, H, W) to scores (B,) or (B, 1) (wrap a PAD critic's
            condition in a closure).
        real, fake: (B, C, H, W); ``fake`` is detached here (the critic step
            must not reach the generator).
        gp_weight: lambda; 0 disables the penalty (and its extra backward).
        gp_mode: see :func:`gradient_penalty`.
        generator: RNG for the interpolation weights.
    """
    d_real = critic(real).mean()
    d_fake = critic(fake.detach()).mean()
    if gp_weight > 0:
        gp = gradient_penalty(critic, interpolate(real, fake, generator), gp_mode)
    else:
        gp = torch.zeros((), device=real.device, dtype=d_real.dtype)
    loss = d_fake - d_real + gp_weight * gp
    return CriticLoss(loss, d_real.detach(), d_fake.detach(), gp.detach())


def generator_loss(d_fake: torch.Tensor) -> torch.Tensor:
    """WGAN generator loss -mean D(fake): d_fake (B,) or (B, 1) -> scalar."""
    return -d_fake.mean()


def adaptive_geometry_scale(
    adversarial_loss: torch.Tensor,
    bias_weight: torch.Tensor,
    reference: float = ADAPTIVE_REFERENCE,
) -> torch.Tensor:
    """URA's adaptive geometry weight |mean d(adversarial_loss)/d(W_bias)| / reference.

    Args:
        adversarial_loss: scalar -mean D(fake) of the current G step (its graph
            is kept for the following backward).
        bias_weight: W_bias, the vertex-bias head's weight (1926, 2048)
            (``MeshDecoder.bias_head.weight``).
        reference: 2e-5 in URA.
    Returns:
        scalar, detached.
    """
    if adversarial_loss.ndim != 0:
        raise ValueError(
            f"adaptive_geometry_scale: adversarial_loss must be a scalar, got {adversarial_loss.shape}"
        )
    (grad,) = torch.autograd.grad(adversarial_loss, bias_weight, retain_graph=True)
    return (grad.mean().abs() / reference).detach()

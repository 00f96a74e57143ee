import math

import pytest
import torch

from poseless.losses.gan import (
    adaptive_geometry_scale,
    critic_loss,
    generator_loss,
    gradient_penalty,
    interpolate,
)
from poseless.models.mesh_decoder import MeshDecoder


class LinearCritic(torch.nn.Module):
    """D(x) = <w, x> per sample: its input gradient is w everywhere."""

    def __init__(self, w):
        super().__init__()
        self.w = torch.nn.Parameter(w.clone())

    def forward(self, x):
        return (x * self.w).flatten(1).sum(1)


def test_linear_critic_penalties_by_hand():
    w = torch.tensor([[[0.5, 2.0], [0.0, 1.0]]], dtype=torch.float64)  # (1, 2, 2)
    critic = LinearCritic(w)
    x = torch.rand(3, 1, 2, 2, dtype=torch.float64, requires_grad=True)
    # per sample: ||w|| = sqrt(0.25 + 4 + 0 + 1) = sqrt(5.25)
    per_sample = gradient_penalty(critic, x, "per_sample")
    assert per_sample.item() == pytest.approx((math.sqrt(5.25) - 1) ** 2, abs=1e-12)
    # per pixel (one channel): mean over pixels of (|w_p| - 1)^2 = (0.25 + 1 + 1 + 0) / 4
    per_pixel = gradient_penalty(critic, x, "per_pixel")
    assert per_pixel.item() == pytest.approx(2.25 / 4, abs=1e-12)
    assert abs(per_sample.item() - per_pixel.item()) > 0.1


def test_per_pixel_takes_the_norm_over_channels():
    w = torch.tensor([[[3.0]], [[4.0]]], dtype=torch.float64)  # (C=2, 1, 1) -> |g| = 5
    x = torch.rand(2, 2, 1, 1, dtype=torch.float64, requires_grad=True)
    assert gradient_penalty(LinearCritic(w), x, "per_pixel").item() == pytest.approx(16.0)


def test_penalty_gradient_reaches_the_critic():
    w = torch.tensor([[[0.5, 2.0], [0.3, 1.0]]], dtype=torch.float64)
    critic = LinearCritic(w)
    x = torch.rand(2, 1, 2, 2, dtype=torch.float64, requires_grad=True)
    gradient_penalty(critic, x).backward()
    n = w.norm()
    torch.testing.assert_close(critic.w.grad, 2 * (n - 1) * w / n)


def test_per_pixel_zero_gradient_pixels_stay_finite():
    w = torch.tensor([[[0.0, 2.0], [0.0, 1.0]]])
    critic = LinearCritic(w)
    x = torch.rand(2, 1, 2, 2, requires_grad=True)
    gradient_penalty(critic, x, "per_pixel").backward()
    assert torch.isfinite(critic.w.grad).all()


def test_critic_loss_by_hand():
    w = torch.tensor([[[1.0, -1.0], [0.5, 0.0]]], dtype=torch.float64)
    critic = LinearCritic(w)
    real = torch.rand(4, 1, 2, 2, dtype=torch.float64)
    source = torch.rand(4, 1, 2, 2, dtype=torch.float64, requires_grad=True)
    fake = source * 2
    out = critic_loss(
        critic, real, fake, gp_weight=10.0, generator=torch.Generator().manual_seed(0)
    )
    d_real = (real * w).sum((1, 2, 3)).mean()
    d_fake = (fake * w).sum((1, 2, 3)).mean()
    gp = (w.norm() - 1) ** 2
    torch.testing.assert_close(out.loss, d_fake - d_real + 10 * gp)
    torch.testing.assert_close(out.gradient_penalty, gp)
    torch.testing.assert_close(out.wasserstein, (d_real - d_fake).detach())
    out.loss.backward()
    assert source.grad is None, "the critic step must not reach the generator"
    no_gp = critic_loss(critic, real, fake, gp_weight=0.0)
    torch.testing.assert_close(no_gp.loss, d_fake - d_real)


def test_interpolate_lies_on_segments():
    real = torch.rand(5, 1, 3, 3)
    fake = torch.rand(5, 1, 3, 3)
    x1 = interpolate(real, fake, torch.Generator().manual_seed(3))
    x2 = interpolate(real, fake, torch.Generator().manual_seed(3))
    assert torch.equal(x1, x2) and x1.requires_grad
    e = ((x1 - fake) / (real - fake)).flatten(1)  # one weight per sample
    torch.testing.assert_close(e, e[:, :1].expand_as(e), atol=1e-4, rtol=0)
    assert ((e >= 0) & (e <= 1)).all()


def test_generator_loss():
    assert generator_loss(torch.tensor([1.0, 3.0])).item() == -2.0


def test_adaptive_scale_by_hand():
    # fake = W x (a linear "bias head"), D(fake) = <u, fake>, L = -mean_b D
    # dL/dW = -mean_b u x_b^T, so mean(dL/dW) = -mean(u) * mean(x).
    g = torch.Generator().manual_seed(4)
    head = torch.nn.Linear(3, 4, bias=False).double()
    u = torch.randn(4, generator=g, dtype=torch.float64)
    x = torch.randn(6, 3, generator=g, dtype=torch.float64)
    loss = -(head(x) @ u).mean()
    scale = adaptive_geometry_scale(loss, head.weight)
    expected = abs(u.mean() * x.mean()) / 2e-5
    assert scale.item() == pytest.approx(expected.item(), rel=1e-10)
    assert not scale.requires_grad
    loss.backward()  # the graph survives for the generator's own backward


def test_adaptive_scale_on_the_mesh_decoder():
    torch.manual_seed(5)
    dec = MeshDecoder(8)
    critic = LinearCritic(torch.randn(642, 3))
    loss = generator_loss(critic(dec(torch.randn(2, 8))))
    assert dec.bias_head.weight.shape == (1926, 2048)
    scale = adaptive_geometry_scale(loss, dec.bias_head.weight)
    (grad,) = torch.autograd.grad(loss, dec.bias_head.weight, retain_graph=True)
    torch.testing.assert_close(scale, grad.mean().abs() / 2e-5)
    assert scale.item() > 0


def test_bad_inputs():
    x = torch.rand(2, 1, 2, 2)
    with pytest.raises(ValueError, match="must require grad"):
        gradient_penalty(LinearCritic(torch.ones(1, 2, 2)), x)
    with pytest.raises(ValueError, match="mode must be"):
        gradient_penalty(LinearCritic(torch.ones(1, 2, 2)), x.requires_grad_(), "per_row")
    with pytest.raises(ValueError, match="shapes differ"):
        interpolate(torch.rand(2, 1, 2, 2), torch.rand(3, 1, 2, 2))
    with pytest.raises(ValueError, match="must be a scalar"):
        adaptive_geometry_scale(torch.ones(2, requires_grad=True), torch.ones(2))

"""ShapeClipper's loss terms against hand-computed cases and slow references."""

import math

import pytest
import torch

from poseless.geometry.rotations import angle_to_trig, rotation_y
from poseless.losses.sdf_losses import (
    angle_loss,
    azimuth_uniform_prior,
    camera_margin_loss,
    camera_normals_to_world,
    camera_symmetry_loss,
    kept_after_dropout,
    mask_iou_loss,
    mirrored_viewpoint,
    normal_loss,
    rgb_loss,
    sphere_sdf_loss,
    uniform_grid,
)


def test_rgb_and_mask_losses_by_hand():
    pred = torch.tensor([[[0.0, 0.5, 1.0]]])
    assert rgb_loss(pred, torch.zeros_like(pred)).item() == pytest.approx((0.25 + 1.0) / 3)
    p = torch.tensor([[1.0, 0.5, 0.0], [0.0, 0.0, 0.0]])
    t = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    # image 0: inter 1.5, union 1 + 1 = 2 -> 0.75; image 1: inter 0, union 1 -> 0.
    assert mask_iou_loss(p, t).item() == pytest.approx(1 - (0.75 + 0.0) / 2, abs=1e-5)
    with pytest.raises(ValueError, match="mask_iou_loss"):
        mask_iou_loss(p, t[:1])


def test_normal_rotation_uses_transpose_of_the_predicted_pose():
    R = rotation_y(torch.tensor([0.7, -1.2]))  # (2, 3, 3) world->camera
    n_world = torch.nn.functional.normalize(torch.randn(2, 5, 3), dim=-1)
    n_cam = torch.einsum("bij,brj->bri", R, n_world)
    got = camera_normals_to_world(n_cam, R)
    assert torch.allclose(got, n_world, atol=1e-6)
    by_hand = torch.stack([n_cam[b] @ R[b] for b in range(2)])  # rows: (R^T n)^T = n^T R
    assert torch.allclose(got, by_hand, atol=1e-6)


def test_normal_loss_per_ray_value_by_hand():
    pred = torch.tensor([[[1.0, 0.0, 0.0]]])
    target = torch.tensor([[[0.0, 1.0, 0.0]]])
    # 5 * |(1, -1, 0)|_1 + (1 - 0) = 11
    assert normal_loss(pred, target, torch.ones(1, 1, dtype=torch.bool)).item() == pytest.approx(11)


def test_outlier_dropout_drops_exactly_the_worst_fraction():
    g = torch.Generator().manual_seed(0)
    pred = torch.nn.functional.normalize(torch.randn(2, 10, 3, generator=g), dim=-1)
    target = torch.nn.functional.normalize(torch.randn(2, 10, 3, generator=g), dim=-1)
    valid = torch.ones(2, 10, dtype=torch.bool)
    valid[1, 5:] = False  # 15 valid rays over the batch
    got = normal_loss(pred, target, valid, dropout=0.2)
    # Reference: a plain loop over rays, keep the 12 best by (1 - cos), batch-wide.
    rays = []
    for b in range(2):
        for r in range(10):
            if valid[b, r]:
                p, t = pred[b, r], target[b, r]
                cos = float(p @ t / (p.norm() * t.norm()))
                rays.append((1 - cos, 5 * float((p - t).abs().sum()) + (1 - cos)))
    rays.sort(key=lambda x: x[0])
    assert kept_after_dropout(15, 0.2) == 12
    assert got.item() == pytest.approx(sum(v for _, v in rays[:12]) / 12, rel=1e-5)
    no_tol = normal_loss(pred, target, valid, dropout=0.0)
    assert no_tol.item() == pytest.approx(sum(v for _, v in rays) / 15, rel=1e-5)
    empty = normal_loss(pred, target, torch.zeros_like(valid))
    assert empty.item() == 0.0 and empty.requires_grad is pred.requires_grad


def test_normal_loss_gradcheck():
    pred = torch.nn.functional.normalize(torch.randn(1, 6, 3, dtype=torch.float64), dim=-1)
    target = torch.nn.functional.normalize(torch.randn(1, 6, 3, dtype=torch.float64), dim=-1)
    valid = torch.ones(1, 6, dtype=torch.bool)
    pred.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda p: normal_loss(p, target, valid, 0.2), (pred,))


def test_azimuth_prior_is_zero_for_a_uniform_batch_and_matches_the_formula():
    grid = uniform_grid(8, dtype=torch.float64)
    shuffled = grid[torch.randperm(8)]
    assert azimuth_uniform_prior(angle_to_trig(shuffled)).item() == pytest.approx(0.0, abs=1e-12)
    az = torch.tensor([0.0, 0.0, 0.0, 0.0], dtype=torch.float64)
    ref = torch.tensor([(2 * k + 1) * math.pi / 4 for k in range(4)], dtype=torch.float64)
    d = [
        (torch.sort(f(az)).values - torch.sort(f(ref)).values).norm()
        for f in (torch.cos, torch.sin, lambda a: torch.cos(a) * torch.sin(a))
    ]
    assert azimuth_uniform_prior(angle_to_trig(az)).item() == pytest.approx(float(sum(d)) / 12)
    trig = angle_to_trig(torch.rand(5, dtype=torch.float64) * 6).requires_grad_(True)
    assert torch.autograd.gradcheck(azimuth_uniform_prior, (trig,))


def test_camera_margin_hinge():
    el = angle_to_trig(torch.tensor([0.0, math.radians(95.0)]))
    roll = angle_to_trig(torch.tensor([math.radians(-88.0), 0.0]))
    want = (math.radians(10.0) / 2) + (math.radians(3.0) / 2)  # beyond 85 deg
    assert camera_margin_loss(el, roll, 5.0).item() == pytest.approx(want, rel=1e-5)
    zero = angle_to_trig(torch.zeros(3))
    assert camera_margin_loss(zero, zero).item() == 0.0


def test_camera_symmetry_of_a_mirrored_prediction_is_zero():
    az, el, roll = (angle_to_trig(torch.rand(3) * 6) for _ in range(3))
    mirrored = mirrored_viewpoint(az, el, roll)
    assert torch.allclose(mirrored[0][:, 1], -az[:, 1]) and torch.equal(mirrored[1], el)
    assert camera_symmetry_loss((az, el, roll), mirrored).item() == 0.0
    # Unmirrored flipped prediction: only the two sines differ, by 2 sin each.
    want = (4 * az[:, 1] ** 2 + 4 * roll[:, 1] ** 2).sum() / (3 * 6)
    got = camera_symmetry_loss((az, el, roll), (az, el, roll))
    assert got.item() == pytest.approx(want.item(), rel=1e-5)


def test_sphere_and_angle_losses():
    pts = torch.tensor([[[0.5, 0.0, 0.0], [0.0, 1.0, 0.0]]])
    assert sphere_sdf_loss(torch.tensor([[0.0, 0.5]]), pts).item() == 0.0
    assert sphere_sdf_loss(torch.tensor([[1.0, 0.5]]), pts).item() == pytest.approx(0.5)
    a = angle_to_trig(torch.tensor([0.0, math.pi / 2]))
    b = angle_to_trig(torch.tensor([math.pi, math.pi / 2]))
    assert angle_loss(a, b).item() == pytest.approx(1.0)  # (2 + 0) / 2
    with pytest.raises(ValueError, match=r"\(B, 2\)"):
        angle_loss(a[:, :1], b)

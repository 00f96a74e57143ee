"""Tests for poseless.render.rays (boundary-weighted pixel sampling, ray grids)."""

import math

import numpy as np
import pytest
import torch

from poseless.geometry import cameras
from poseless.render.rays import (
    boundary_distance,
    gather_pixels,
    image_rays,
    pixel_ndc,
    pixel_rays,
    ray_sampling_probabilities,
    rays_to_image,
    sample_pixels,
)

TAN15 = math.tan(math.radians(15.0))


def _exact_boundary_distance(mask):
    """Brute force: distance from each pixel centre to the nearest pixel edge between classes."""
    H, W = mask.shape
    segments = []  # ((x0, y0), (x1, y1)) in pixel units, centres at (j + 0.5, i + 0.5)
    for i in range(H):
        for j in range(W):
            if j + 1 < W and mask[i, j] != mask[i, j + 1]:
                segments.append(((j + 1, i), (j + 1, i + 1)))
            if i + 1 < H and mask[i, j] != mask[i + 1, j]:
                segments.append(((j, i + 1), (j + 1, i + 1)))
    out = np.zeros((H, W))
    for i in range(H):
        for j in range(W):
            p = np.array([j + 0.5, i + 0.5])
            best = np.inf
            for a, b in segments:
                a, b = np.array(a, float), np.array(b, float)
                s = np.clip(np.dot(p - a, b - a) / np.dot(b - a, b - a), 0, 1)
                best = min(best, np.linalg.norm(p - (a + s * (b - a))))
            out[i, j] = best
    return out


def test_boundary_distance_straight_edge_is_exact():
    mask = np.zeros((6, 8))
    mask[:, 3:] = 1
    d = boundary_distance(mask)
    expected = np.abs(np.arange(8) + 0.5 - 3.0)[None].repeat(6, 0)
    assert np.allclose(d, expected), d


def test_boundary_distance_close_to_brute_force_on_random_masks():
    rng = np.random.default_rng(0)
    for _ in range(3):
        mask = rng.random((9, 11)) > 0.6
        d = boundary_distance(mask)
        exact = _exact_boundary_distance(mask)
        # Equal where the nearest boundary is an edge face-on; corners differ by < 0.21 px.
        assert np.abs(d - exact).max() < 0.21, np.abs(d - exact).max()
        assert d.min() == pytest.approx(0.5)


def test_boundary_distance_without_boundary_and_bad_shape():
    assert np.all(boundary_distance(np.zeros((4, 4))) == 0)
    assert np.all(boundary_distance(torch.ones(4, 4)) == 0)
    with pytest.raises(ValueError, match=r"mask must be \(H, W\)"):
        boundary_distance(np.zeros((1, 4, 4)))


def test_probabilities_follow_inverse_distance():
    masks = torch.zeros(2, 1, 12, 12)
    masks[0, :, 3:9, 2:7] = 1
    prob = ray_sampling_probabilities(masks, offset=5.0)
    assert prob.shape == (2, 144)
    assert torch.allclose(prob.sum(1), torch.ones(2), atol=1e-6)
    d = torch.from_numpy(boundary_distance(masks[0, 0].numpy())).flatten()
    ref = 1 / (d + 5)
    assert torch.allclose(prob[0], (ref / ref.sum()).float(), atol=1e-7)
    assert prob[0].argmax().item() in torch.nonzero(d == d.min()).flatten().tolist()
    assert torch.allclose(prob[1], torch.full((144,), 1 / 144)), "empty mask should be uniform"
    with pytest.raises(ValueError, match="offset"):
        ray_sampling_probabilities(masks, offset=0)


def test_sample_pixels_deterministic_distinct_and_boundary_preferred():
    masks = torch.zeros(1, 1, 32, 32)
    masks[..., 8:24, 8:24] = 1
    a = sample_pixels(masks, 100, generator=torch.Generator().manual_seed(3))
    b = sample_pixels(masks, 100, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b), "not deterministic given the generator"
    assert a.shape == (1, 100) and a.dtype == torch.long
    assert len(set(a[0].tolist())) == 100, "duplicate rays"
    d = torch.from_numpy(boundary_distance(masks[0, 0].numpy())).flatten()
    counts = torch.zeros(32 * 32)
    gen = torch.Generator().manual_seed(0)
    for _ in range(50):
        counts[sample_pixels(masks, 100, generator=gen)[0]] += 1
    near, far = counts[d < 1].mean(), counts[d > 6].mean()
    assert near > 1.3 * far, f"boundary pixels not preferred: {near:.2f} vs {far:.2f}"
    with pytest.raises(ValueError, match="n_rays"):
        sample_pixels(masks, 32 * 32 + 1)


def test_gather_pixels_and_rays_to_image_match_loops():
    images = torch.randn(2, 3, 5, 7)
    index = torch.tensor([[0, 6, 34, 12], [7, 8, 9, 33]])
    got = gather_pixels(images, index)
    for b in range(2):
        for r in range(4):
            i, j = divmod(int(index[b, r]), 7)
            assert torch.equal(got[b, r], images[b, :, i, j])
    flat = images.flatten(2).transpose(1, 2)
    assert torch.equal(rays_to_image(flat, 5, 7), images)
    assert rays_to_image(torch.zeros(2, 35), 5, 7).shape == (2, 1, 5, 7)
    with pytest.raises(ValueError, match="same B"):
        gather_pixels(images, index[:1])


def test_pixel_ndc_and_rays_reproject_to_their_pixels():
    H, W = 6, 9
    index = torch.tensor([[0, 10, 53], [4, 27, 30]])
    ndc = pixel_ndc(index, H, W)
    grid = cameras.pixel_centers_ndc(H, W)
    for b in range(2):
        for r in range(3):
            i, j = divmod(int(index[b, r]), W)
            assert torch.allclose(ndc[b, r], grid[i, j])
    R, t = cameras.kato_extrinsics(torch.tensor([0.2, 1.5]))
    origins, dirs = pixel_rays(R, t, TAN15, index, H, W)
    points = origins + 2.5 * dirs
    proj, z = cameras.project_to_ndc(cameras.world_to_camera(points, R, t), TAN15)
    assert torch.allclose(proj, ndc, atol=1e-5) and bool((z > 0).all())
    o_all, d_all = image_rays(R, t, TAN15, H, W)
    assert o_all.shape == (2, H * W, 3)
    assert torch.allclose(d_all.gather(1, index[..., None].expand(-1, -1, 3)), dirs, atol=1e-6)
    with pytest.raises(ValueError, match="outside"):
        pixel_ndc(torch.tensor([[H * W]]), H, W)

"""Metrics against brute-force references; empty and bad inputs."""

import math

import numpy as np
import pytest
import torch

from poseless.evaluate.metrics import (
    azimuth_error,
    chamfer_distance,
    fscore_name,
    mask_iou,
    point_metrics,
    rotation_error,
    sample_surface_points,
    summarize_pose_errors,
    voxel_iou,
    wrap_angle,
)


def brute_iou(a, b):
    inter = union = 0
    for x, y in zip(a.ravel(), b.ravel()):
        inter += bool(x) and bool(y)
        union += bool(x) or bool(y)
    return inter / union if union else 1.0


def brute_point_metrics(p, g, taus):
    d_pg = [min(math.dist(a, b) for b in g) for a in p]
    d_gp = [min(math.dist(b, a) for a in p) for b in g]
    acc, comp = sum(d_pg) / len(d_pg), sum(d_gp) / len(d_gp)
    fs = {}
    for t in taus:
        prec = sum(d < t for d in d_pg) / len(d_pg)
        rec = sum(d < t for d in d_gp) / len(d_gp)
        fs[t] = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
    return (acc + comp) / 2, acc, comp, fs


def test_voxel_iou_matches_brute_force():
    rng = np.random.default_rng(0)
    a, b = rng.random((3, 8, 8, 8)) < 0.4, rng.random((3, 8, 8, 8)) < 0.5
    batch = voxel_iou(a, b)
    assert batch.shape == (3,)
    for i in range(3):
        assert voxel_iou(a[i], b[i]) == pytest.approx(brute_iou(a[i], b[i]))
        assert batch[i] == pytest.approx(brute_iou(a[i], b[i]))
    assert voxel_iou(torch.from_numpy(a[0]), torch.from_numpy(a[0])) == 1.0


def test_voxel_iou_empty_and_bad():
    z = np.zeros((4, 4, 4), bool)
    full = np.ones((4, 4, 4), bool)
    assert voxel_iou(z, full) == 0.0, "empty prediction scores 0"
    assert voxel_iou(z, z) == 1.0, "two empty grids agree"
    with pytest.raises(ValueError, match="differ in shape"):
        voxel_iou(z, np.zeros((4, 4, 5), bool))
    with pytest.raises(ValueError, match=r"\(R, R, R\)"):
        voxel_iou(np.zeros((4, 4)), np.zeros((4, 4)))


def test_mask_iou_matches_brute_force():
    rng = np.random.default_rng(1)
    p, g = rng.random((5, 1, 9, 7)), rng.random((5, 1, 9, 7))
    out = mask_iou(torch.from_numpy(p), g)
    assert out.shape == (5,)
    for i in range(5):
        assert out[i] == pytest.approx(brute_iou(p[i, 0] > 0.5, g[i, 0] > 0.5))
    assert mask_iou(p[0, 0], p[0, 0]) == 1.0
    with pytest.raises(ValueError, match=r"\(N, 1, H, W\)"):
        mask_iou(np.zeros((2, 3, 4, 4)), np.zeros((2, 3, 4, 4)))


@pytest.mark.parametrize("n, m", [(57, 80), (1, 5)])
def test_point_metrics_match_brute_force(n, m):
    rng = np.random.default_rng(n)
    p, g = rng.normal(size=(n, 3)) * 0.2, rng.normal(size=(m, 3)) * 0.2
    taus = (0.01, 0.05, 0.1, 0.3)
    got = point_metrics(torch.from_numpy(p), g, taus)
    cd, acc, comp, fs = brute_point_metrics(p, g, taus)
    assert got.cd == pytest.approx(cd) and got.accuracy == pytest.approx(acc)
    assert got.completeness == pytest.approx(comp)
    for t in taus:
        assert got.fscore[t] == pytest.approx(fs[t]), t
    assert chamfer_distance(p, g) == pytest.approx(cd)


def test_chamfer_is_unsquared_and_asymmetric_parts_are_named():
    g = np.zeros((1, 3))
    p = np.array([[0.3, 0.0, 0.0], [0.0, 0.4, 0.0]])
    pm = point_metrics(p, g)
    assert pm.accuracy == pytest.approx(0.35), "mean unsquared distance of predicted points"
    assert pm.completeness == pytest.approx(0.3)
    assert pm.cd == pytest.approx(0.325)


def test_perfect_and_empty_predictions():
    g = np.random.default_rng(2).normal(size=(50, 3))
    pm = point_metrics(g, g)
    assert pm.cd == 0 and all(v == 1.0 for v in pm.fscore.values())
    empty = point_metrics(np.zeros((0, 3)), g)
    assert empty.cd == math.inf and all(v == 0.0 for v in empty.fscore.values())
    with pytest.raises(ValueError, match="gt point cloud is empty"):
        point_metrics(g, np.zeros((0, 3)))
    with pytest.raises(ValueError, match=r"pred must have shape \(N, 3\)"):
        point_metrics(np.zeros((4, 2)), g)
    assert fscore_name(0.01) == "fscore@0.01" and fscore_name(0.1) == "fscore@0.1"


def test_surface_sampling_is_area_weighted_seeded_and_on_surface():
    v = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 2], [3, 0, 2], [0, 3, 2]], float)
    f = np.array([[0, 1, 2], [3, 4, 5]])  # areas 0.5 and 4.5
    pts = sample_surface_points(v, f, 20000, seed=3)
    assert pts.shape == (20000, 3)
    np.testing.assert_array_equal(pts, sample_surface_points(v, f, 20000, seed=3))
    assert not np.array_equal(pts, sample_surface_points(v, f, 20000, seed=4))
    top = np.isclose(pts[:, 2], 2.0)
    assert top.mean() == pytest.approx(0.9, abs=0.01)
    assert np.allclose(pts[~top, 2], 0.0)
    assert (pts[top, :2].sum(1) <= 3 + 1e-9).all() and (pts[~top, :2].sum(1) <= 1 + 1e-9).all()
    assert (pts[:, :2] >= -1e-12).all()
    # uniform within a triangle: half the area of the big one lies below x + y = 3 / sqrt(2)
    assert (pts[top, :2].sum(1) < 3 / math.sqrt(2)).mean() == pytest.approx(0.5, abs=0.02)
    assert sample_surface_points(np.zeros((0, 3)), np.zeros((0, 3), int), 5).shape == (0, 3)


def test_pose_errors():
    deg = np.radians
    np.testing.assert_allclose(
        azimuth_error(deg([350.0, 10.0, 180.0]), deg([10.0, 350.0, 0.0])), deg([20, 20, 180])
    )
    assert wrap_angle(deg(540.0)) == pytest.approx(-np.pi)
    c, s = math.cos(0.7), math.sin(0.7)
    Rz = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
    assert rotation_error(Rz, np.eye(3)) == pytest.approx(0.7)
    assert rotation_error(np.stack([Rz, Rz]), np.stack([Rz, np.eye(3)])) == pytest.approx([0, 0.7])
    summ = summarize_pose_errors(deg([5.0, 10.0, 20.0, 40.0, 100.0]))
    assert summ.median_deg == pytest.approx(20.0) and summ.count == 5
    assert summ.accuracy == {15.0: pytest.approx(0.4), 30.0: pytest.approx(0.6)}
    with pytest.raises(ValueError, match="non-negative"):
        summarize_pose_errors([-0.1])
    with pytest.raises(ValueError, match="differ in shape"):
        azimuth_error([0.0, 1.0], [0.0])

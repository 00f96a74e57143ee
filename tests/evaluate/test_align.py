"""Alignment protocols: known transforms recovered, perfect and empty predictions, bad inputs."""

import math

import numpy as np
import pytest
import trimesh

from poseless.evaluate.align import (
    AZIMUTH_SEARCH,
    FLIP_X,
    GLOBAL,
    ICP,
    PROTOCOLS,
    VIEW_CENTRIC,
    Alignment,
    EvalSettings,
    GTShape,
    PredShape,
    apply_transform,
    azimuth_candidates,
    azimuth_scores,
    best_global_azimuth_offset,
    evaluate_protocol,
    fit_global,
    global_alignment,
    icp,
    icp_fit,
    metric_key,
    rotation_y,
    select_global,
    umeyama,
    view_centric,
    view_centric_transform,
)
from poseless.evaluate.metrics import wrap_angle
from poseless.evaluate.voxelize import voxelize_mesh

FAST = EvalSettings(n_points=3000, search_points=600)


def l_shape():
    """An asymmetric shape (two overlapping boxes: self-intersecting, not watertight as a union)."""
    a = trimesh.creation.box((0.7, 0.22, 0.3))
    b = trimesh.creation.box((0.16, 0.4, 0.14)).apply_translation((0.24, 0.15, 0.06))
    v = np.concatenate([a.vertices, b.vertices])
    f = np.concatenate([a.faces, b.faces + len(a.vertices)])
    return v, f


def camera(az, el=0.5):
    c, s = math.cos(el), math.sin(el)
    Rx = np.array([[1, 0, 0], [0, c, -s], [0, s, c]])
    return Rx @ rotation_y(az)


@pytest.fixture(scope="module")
def gt():
    v, f = l_shape()
    return GTShape(vertices=v, faces=f, voxels=voxelize_mesh(v, f), R=camera(0.4))


def key_set(protocol, iou=True):
    names = (["iou32"] if iou else []) + ["cd", "fscore@0.01", "fscore@0.05", "fscore@0.1"]
    return {metric_key(n, protocol) for n in names}


def test_protocol_names_and_keys():
    assert PROTOCOLS == ("azimuth_search", "global", "view_centric", "icp")
    assert metric_key("iou32", AZIMUTH_SEARCH) == "iou32@azimuth_search"
    assert metric_key("fscore@0.01", GLOBAL) == "fscore@0.01@global"
    with pytest.raises(ValueError, match="unknown protocol"):
        metric_key("cd", "oracle")
    assert len(azimuth_candidates()) == 72 and math.degrees(
        azimuth_candidates()[-1]
    ) == pytest.approx(355)


def test_perfect_prediction_scores_perfectly_under_every_protocol(gt):
    pred = PredShape(gt.vertices, gt.faces, R=gt.R)
    for protocol in PROTOCOLS:
        res = evaluate_protocol(pred, gt, protocol, FAST, alignment=global_alignment(0.0))
        assert set(res.metrics) == key_set(protocol, iou=protocol != VIEW_CENTRIC), protocol
        for k, v in res.metrics.items():
            if k.startswith("cd"):
                assert v == pytest.approx(0.0, abs=1e-9), k
            else:
                assert v == pytest.approx(1.0), k
        assert res.warnings == ()


def test_azimuth_search_recovers_a_known_rotation(gt):
    rot = rotation_y(math.radians(35))
    pred = PredShape(gt.vertices @ rot.T, gt.faces)
    res = evaluate_protocol(pred, gt, AZIMUTH_SEARCH, FAST)
    for crit in ("iou", "cd"):
        al = res.alignments[crit]
        err = abs(wrap_angle(al.azimuth_rad - math.radians(-35)))
        assert err <= math.radians(5) + 1e-9, (crit, math.degrees(al.azimuth_rad))
        np.testing.assert_allclose(al.pred_transform[:3, :3], rotation_y(al.azimuth_rad))
    assert res.metrics["iou32@azimuth_search"] > 0.9
    assert res.metrics["cd@azimuth_search"] < 0.01


def test_global_fit_recovers_rotation_and_flip(gt):
    rot = rotation_y(math.radians(35))
    pairs = [(PredShape(gt.vertices @ rot.T, gt.faces), gt)]
    al = fit_global(pairs, "iou", FAST)
    assert al.protocol == GLOBAL and not al.flip
    assert abs(wrap_angle(al.azimuth_rad + math.radians(35))) <= math.radians(5) + 1e-9
    res = evaluate_protocol(pairs[0][0], gt, GLOBAL, FAST, alignment=al)
    assert res.metrics["iou32@global"] > 0.9
    # a mirrored, rotated prediction: only the flip candidates can match it
    lin = rotation_y(math.radians(-60)) @ FLIP_X
    mirrored = PredShape(gt.vertices @ lin.T, gt.faces)
    flip_settings = EvalSettings(n_points=3000, search_points=600, global_flip=True)
    al = fit_global([(mirrored, gt)], "cd", flip_settings)
    assert al.flip
    np.testing.assert_allclose(al.pred_transform[:3, :3] @ lin, np.eye(3), atol=1e-9)
    res = evaluate_protocol(mirrored, gt, GLOBAL, flip_settings, alignment=al)
    assert res.metrics["cd@global"] < 1e-6


def test_select_global_averages_items():
    a = np.zeros((1, 72))
    b = np.zeros((1, 72))
    a[0, 3], b[0, 3], b[0, 10] = 0.6, 0.5, 0.9  # mean: 0.55 at 3, 0.45 at 10
    al = select_global([a, b], "iou")
    assert math.degrees(al.azimuth_rad) == pytest.approx(15)
    cd = np.ones((1, 72))
    cd[0, 7] = 0.1
    inf = np.full((1, 72), np.inf)  # an empty validation prediction is skipped
    assert math.degrees(select_global([cd, inf], "cd").azimuth_rad) == pytest.approx(35)
    with pytest.raises(ValueError, match="no score tables"):
        select_global([], "iou")
    with pytest.raises(ValueError, match="share one"):
        select_global([np.zeros((1, 72)), np.zeros((2, 72))], "iou")


def test_azimuth_scores_shape_and_best(gt):
    pred = PredShape(gt.vertices @ rotation_y(math.radians(90)).T, gt.faces)
    s = azimuth_scores(
        pred,
        gt,
        "cd",
        EvalSettings(n_points=2000, search_points=500, azimuth_step_deg=30),
        (False, True),
    )
    assert s.shape == (2, 12)
    assert np.argmin(s[0]) == 9, "rotating back by 270 deg undoes +90 deg"


def test_icp_recovers_a_small_rigid_transform(gt):
    axis = np.array([1.0, 1.0, 0.3]) / np.linalg.norm([1.0, 1.0, 0.3])
    M = trimesh.transformations.rotation_matrix(math.radians(8), axis)
    M[:3, 3] = (0.03, -0.02, 0.015)
    pred = PredShape(apply_transform(gt.vertices, M), gt.faces)
    res = icp(pred, gt, EvalSettings(n_points=3000, search_points=1000))
    T = res.alignments["cd"].pred_transform
    np.testing.assert_allclose(T @ M, np.eye(4), atol=0.01)
    assert res.metrics["cd@icp"] < 2e-3
    assert res.metrics["fscore@0.05@icp"] > 0.99


def test_icp_similarity_recovers_scale():
    rng = np.random.default_rng(0)
    dst = rng.uniform(-0.4, 0.4, (400, 3)) * [1.0, 0.5, 0.3]
    src = (dst - [0.02, 0.0, 0.01]) / 1.2
    T, cd = icp_fit(src, dst, (0.0,), iterations=50, scale=True)
    np.testing.assert_allclose(apply_transform(src, T), dst, atol=1e-6)
    A, t = umeyama(src, dst, scale=True)
    np.testing.assert_allclose(A, 1.2 * np.eye(3), atol=1e-9)
    assert cd < 1e-6


def test_view_centric_matches_reference_and_ignores_world_frame(gt):
    # the same object expressed in another world frame, scaled and shifted, with the matching camera
    Q = rotation_y(1.1) @ camera(0.0, 0.3)
    verts = 1.7 * gt.vertices @ Q.T + [0.1, -0.2, 0.05]
    pred = PredShape(verts, gt.faces, R=gt.R @ Q.T)
    res = view_centric(pred, gt, FAST)
    assert res.metrics["cd@view_centric"] < 1e-6
    # reference of the authors' normalize_pc on an explicit cloud
    pts = np.random.default_rng(0).normal(size=(100, 3))
    cam = pts @ gt.R.T
    cam = cam - cam.mean(0)
    ref = cam / (max(np.ptp(cam[:, 0]), np.ptp(cam[:, 1])) + 1e-7)
    np.testing.assert_allclose(
        apply_transform(pts, view_centric_transform(pts, gt.R)), ref, atol=1e-12
    )
    # a wrong predicted pose is penalised
    wrong = PredShape(gt.vertices, gt.faces, R=camera(0.4 + math.radians(90)))
    assert view_centric(wrong, gt, FAST).metrics["cd@view_centric"] > 0.03


def test_empty_prediction_never_crashes(gt):
    pred = PredShape(np.zeros((0, 3)), np.zeros((0, 3), int), R=gt.R)
    for protocol in PROTOCOLS:
        res = evaluate_protocol(pred, gt, protocol, FAST, alignment=global_alignment(0.0))
        assert res.metrics[metric_key("cd", protocol)] == math.inf
        assert res.metrics[metric_key("fscore@0.1", protocol)] == 0.0
        if protocol != VIEW_CENTRIC:
            assert res.metrics[metric_key("iou32", protocol)] == 0.0
        assert any("empty prediction" in w for w in res.warnings)


def test_alignment_round_trips_through_dict():
    al = global_alignment(math.radians(40), flip=True, criterion="iou")
    back = Alignment.from_dict(al.to_dict())
    np.testing.assert_allclose(back.pred_transform, al.pred_transform)
    assert (
        back.flip and back.azimuth_rad == pytest.approx(al.azimuth_rad) and back.criterion == "iou"
    )


def test_bad_inputs_raise_with_messages(gt):
    with pytest.raises(ValueError, match=r"pred.vertices must have shape \(V, 3\)"):
        PredShape(np.zeros((4, 2)), np.zeros((1, 3), int))
    with pytest.raises(ValueError, match="out of range"):
        PredShape(np.zeros((3, 3)), np.array([[0, 1, 5]]))
    with pytest.raises(ValueError, match="not a rotation"):
        PredShape(gt.vertices, gt.faces, R=2 * np.eye(3))
    with pytest.raises(ValueError, match="cubic"):
        GTShape(voxels=np.zeros((4, 4, 5), bool))
    with pytest.raises(ValueError, match="needs a mesh, points or voxels"):
        evaluate_protocol(PredShape(gt.vertices, gt.faces), GTShape(), AZIMUTH_SEARCH, FAST)
    pred = PredShape(gt.vertices, gt.faces)
    with pytest.raises(ValueError, match="needs an alignment"):
        evaluate_protocol(pred, gt, GLOBAL, FAST)
    with pytest.raises(ValueError, match="needs pred.R"):
        evaluate_protocol(pred, gt, VIEW_CENTRIC, FAST)
    with pytest.raises(ValueError, match="unknown protocol"):
        evaluate_protocol(pred, gt, "oracle", FAST)
    with pytest.raises(ValueError, match="does not divide 360"):
        EvalSettings(azimuth_step_deg=7)
    with pytest.raises(ValueError, match="unknown criterion"):
        azimuth_scores(pred, gt, "f1", FAST)


def test_gt_from_prepared_dict(gt):
    g = GTShape.from_gt_dict(
        {"vertices": gt.vertices, "faces": gt.faces.astype(np.int32), "depth": np.zeros((4, 4))}
    )
    assert g.voxels is None and g.faces.dtype == np.int64
    res = evaluate_protocol(PredShape(gt.vertices, gt.faces), g, ICP, FAST)
    assert res.metrics["iou32@icp"] == 1.0, "GT voxels come from the GT mesh when missing"


def brute_median_offset(p, g, reflect):
    """Slow reference: the lowest median error over offsets every 0.01 deg."""
    q = -p if reflect else p
    best = math.inf
    for chunk in np.array_split(np.radians(np.arange(0.0, 360.0, 0.01)), 20):
        err = np.abs(wrap_angle(q[None] + chunk[:, None] - g[None]))
        best = min(best, float(np.median(err, axis=1).min()))
    return best


def test_best_global_azimuth_offset():
    rng = np.random.default_rng(0)
    g = rng.uniform(0, 2 * np.pi, 41)
    noise = rng.normal(0, 0.05, 41)
    p = wrap_angle(g + math.radians(40) + noise)
    res = best_global_azimuth_offset(p, g)
    assert not res.reflected and abs(wrap_angle(res.offset_rad + math.radians(40))) < 0.05
    assert np.median(res.errors_rad) <= brute_median_offset(p, g, False) + 1e-9
    mirrored = wrap_angle(-g + 1.0 + noise)
    res = best_global_azimuth_offset(mirrored, g)
    assert res.reflected and np.median(res.errors_rad) < 0.05
    assert np.median(res.errors_rad) <= brute_median_offset(mirrored, g, True) + 1e-9
    assert not best_global_azimuth_offset(mirrored, g, allow_reflection=False).reflected
    with pytest.raises(ValueError, match="non-empty and equal in length"):
        best_global_azimuth_offset([0.0], [0.0, 1.0])

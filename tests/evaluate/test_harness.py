"""Evaluation harness: silhouettes vs a naive ray caster, per-item skips, aggregation, pose errors."""

import math

import numpy as np
import pytest
import torch
import trimesh

from poseless.evaluate import harness as H
from poseless.evaluate.align import EvalSettings, GTShape
from poseless.geometry.cameras import kato_extrinsics


def naive_silhouette(vertices, faces, R, t, fov_deg, size):
    """One Moller-Trumbore test per (pixel, triangle), pixel centres through the NDC plane."""
    tan = math.tan(math.radians(fov_deg) / 2)
    eye = -R.T @ t
    out = np.zeros((size, size), bool)
    for i in range(size):
        for j in range(size):
            x = ((j + 0.5) / size * 2 - 1) * tan  # NDC x right, y down (OpenCV camera frame)
            y = ((i + 0.5) / size * 2 - 1) * tan
            d = R.T @ np.array([x, y, 1.0])
            for a, b, c in vertices[faces]:
                e1, e2 = b - a, c - a
                p = np.cross(d, e2)
                det = e1 @ p
                if abs(det) < 1e-12:
                    continue
                s = eye - a
                u = (s @ p) / det
                q = np.cross(s, e1)
                v = (d @ q) / det
                if u >= 0 and v >= 0 and u + v <= 1 and (e2 @ q) / det > 0:
                    out[i, j] = True
                    break
    return out


def kato(az_deg, el_deg=30.0):
    R, t = kato_extrinsics(
        torch.tensor([math.radians(az_deg)], dtype=torch.float64),
        torch.tensor([math.radians(el_deg)], dtype=torch.float64),
    )
    return R[0].numpy(), t[0].numpy()


def box(extents=(0.6, 0.3, 0.2)):
    m = trimesh.creation.box(extents)
    return np.asarray(m.vertices), np.asarray(m.faces)


def test_render_silhouette_matches_naive_ray_caster():
    v, f = box()
    for az in (0.0, 37.0, 200.0):
        R, t = kato(az)
        cam = H.ViewCamera(R, t, 30.0)
        fast = H.render_silhouette(v, f, cam, 14)
        slow = naive_silhouette(v, f, R, t, 30.0, 14)
        assert fast.any() and (fast != slow).sum() <= 1, az  # float32 embree on pixel edges


def test_render_silhouette_of_empty_mesh_is_empty():
    R, t = kato(0.0)
    sil = H.render_silhouette(np.zeros((0, 3)), np.zeros((0, 3), int), H.ViewCamera(R, t, 30.0), 8)
    assert sil.shape == (8, 8) and not sil.any()


def truth(item_id="a", category="chair", R=None, with_camera=True):
    v, f = box()
    Rg, t = kato(30.0)
    cam = H.ViewCamera(Rg, t, 30.0) if with_camera else None
    mask = H.render_silhouette(v, f, H.ViewCamera(Rg, t, 30.0), 16)
    return H.ItemTruth(item_id, category, GTShape(v, f, R=Rg if R is None else R), 30.0, mask, cam)


SETTINGS = EvalSettings(n_points=300, search_points=100, azimuth_step_deg=90.0, icp_iterations=5)


def test_evaluate_item_perfect_and_skips():
    tr = truth()
    v, f = box()
    pred = H.ItemPrediction("a", v, f)
    task = H.ItemTask(
        pred, tr, ("azimuth_search", "global", "view_centric"), SETTINGS, None, "why not"
    )
    r = H.evaluate_item(task)
    assert r.metrics["iou32@azimuth_search"] == 1.0 and r.metrics["mask_iou@azimuth_search"] == 1.0
    assert r.skipped == {
        "global": "why not",
        "view_centric": "no predicted pose (the method predicts none)",
    }
    assert not r.empty and r.error == ""


def test_unusable_prediction_is_scored_empty_with_its_reason():
    v, f = box()
    bad = v.copy()
    bad[0, 0] = np.nan
    r = H.evaluate_item(
        H.ItemTask(H.ItemPrediction("a", bad, f), truth(), ("azimuth_search",), SETTINGS)
    )
    assert r.empty and "non-finite" in r.error
    assert r.metrics["iou32@azimuth_search"] == 0.0 and math.isinf(r.metrics["cd@azimuth_search"])
    r = H.evaluate_item(
        H.ItemTask(H.empty_prediction("a", "missing"), truth(), ("azimuth_search",), SETTINGS)
    )
    assert r.empty and r.error == "missing"


def test_item_without_gt_or_camera():
    v, f = box()
    no_gt = H.ItemTruth("a", "chair", None)
    r = H.evaluate_item(
        H.ItemTask(H.ItemPrediction("a", v, f), no_gt, ("azimuth_search",), SETTINGS)
    )
    assert r.error == "no ground truth" and r.metrics == {}
    tr = truth(with_camera=False)
    tr = H.ItemTruth(tr.id, tr.category, tr.gt, camera_reason="crops")
    r = H.evaluate_item(H.ItemTask(H.ItemPrediction("a", v, f), tr, ("azimuth_search",), SETTINGS))
    assert r.skipped == {"mask_iou": "crops"} and "mask_iou@azimuth_search" not in r.metrics


def result(item_id, category, metrics, empty=False, error=""):
    return H.ItemResult(item_id, category, metrics, {}, {}, (), empty, error)


def test_summarize_means_skip_empty_chamfer_and_count_it():
    results = [
        result("a", "chair", {"iou32@global": 0.5, "cd@global": 0.1}),
        result("b", "chair", {"iou32@global": 0.0, "cd@global": math.inf}, empty=True, error="x"),
        result("c", "plane", {"iou32@global": 1.0, "cd@global": 0.3}),
    ]
    s = H.summarize(results)
    assert s["overall"]["metrics"]["iou32@global"] == pytest.approx(0.5)
    assert s["overall"]["metrics"]["cd@global"] == pytest.approx(0.2)
    assert s["overall"]["counts"]["cd@global"] == 2
    assert (s["overall"]["n_empty"], s["overall"]["n_errors"], s["overall"]["n_items"]) == (1, 1, 3)
    assert s["per_category"]["chair"]["metrics"]["cd@global"] == pytest.approx(0.1)
    flat = H.flat_metrics(s)
    assert flat["overall/iou32@global"] == pytest.approx(0.5) and flat["chair/n_empty"] == 1
    assert flat["plane/cd@global"] == pytest.approx(0.3)
    rows = H.per_item_rows(results)
    assert [r["id"] for r in rows] == ["a", "b", "c"] and rows[1]["empty"]


def test_aggregate_seeds_against_numpy():
    vals = [0.2, 0.5, 0.65]
    summaries = [
        {"overall": {"n_empty": k, "metrics": {"iou32@global": v}}, "per_category": {}}
        for k, v in enumerate(vals)
    ]
    agg = H.aggregate_seeds(summaries)["overall"]
    assert agg["iou32@global"].mean == pytest.approx(np.mean(vals))
    assert agg["iou32@global"].std == pytest.approx(np.std(vals, ddof=1))
    assert agg["n_empty"].mean == pytest.approx(1.0)
    one = H.aggregate_seeds(summaries[:1])["overall"]["iou32@global"]
    assert one.n == 1 and math.isnan(one.std)
    with pytest.raises(ValueError, match="no summaries"):
        H.aggregate_seeds([])


def test_pose_errors_remove_a_per_category_offset():
    rng = np.random.default_rng(0)
    gt = rng.uniform(0, 360, 9)
    preds, truths = [], []
    for k, g in enumerate(gt):
        cat = "chair" if k % 2 else "plane"
        off = 40.0 if cat == "chair" else -100.0
        preds.append(
            H.ItemPrediction(
                str(k), np.zeros((0, 3)), np.zeros((0, 3)), azimuth_deg=(g + off) % 360
            )
        )
        truths.append(H.ItemTruth(str(k), cat, None, azimuth_deg=g))
    res = H.pose_errors(preds, truths)
    assert max(res.errors_deg.values()) < 1e-6
    assert res.offsets["chair"]["offset_deg"] % 360 == pytest.approx(320.0)
    summary = H.summarize([result(str(k), t.category, {}) for k, t in enumerate(truths)], res)
    assert summary["overall"]["metrics"]["pose_acc@15@global"] == 1.0
    none = H.pose_errors([H.empty_prediction("0", "")], truths[:1])
    assert none.skipped == "the method predicts no pose"


def test_azimuth_from_rotation_inverts_kato():
    for az in (0.0, 15.0, 123.0, 300.0):
        R, _ = kato(az, 25.0)
        assert H.azimuth_from_rotation(R) == pytest.approx(az, abs=1e-6)


def test_obj_text_round_trip(tmp_path):
    v, f = box()
    (tmp_path / "m.obj").write_text(H.obj_text(v, f))
    m = trimesh.load(tmp_path / "m.obj", process=False)
    np.testing.assert_allclose(m.vertices, v, atol=1e-6)
    np.testing.assert_array_equal(m.faces, f)


def test_pool_map_keeps_order_with_workers():
    assert H.pool_map(math.sqrt, [9.0, 4.0, 1.0, 16.0], workers=2) == [3.0, 2.0, 1.0, 4.0]


def test_fit_global_alignments_per_category_and_reasons():
    v, f = box()
    v = v + [0.15, 0.0, 0.0]  # off-centre: no rotational symmetry about y
    from poseless.evaluate.align import rotation_y

    turned = v @ rotation_y(math.radians(90.0)).T
    preds = [H.ItemPrediction("a", turned, f), H.empty_prediction("b", "missing")]
    a = truth("a", "chair")
    truths = [H.ItemTruth("a", "chair", GTShape(v, f, R=a.gt.R)), truth("b", "plane")]
    al, reasons = H.fit_global_alignments(preds, truths, "iou", SETTINGS)
    assert al["chair"].to_dict()["azimuth_deg"] == pytest.approx(270.0)
    assert reasons == {"plane": "every validation prediction is empty"}
    assert H.global_for("plane", al, reasons) == (None, "every validation prediction is empty")
    assert H.global_for("car", al, reasons)[1].startswith("no validation items of category 'car'")

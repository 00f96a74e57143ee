"""The papers' claims on our numbers: verdicts, boundaries, not-run rows, notes, claims.json."""

import json

import numpy as np
import pandas as pd
import pytest
import yaml

from poseless.config import ReportConfig
from poseless.evaluate.harness import OVERALL, SeedStat
from poseless.report import claims as C
from poseless.report.html import ReportInputs, build_report

IOU, CD, CDV = "iou32@azimuth_search", "cd@azimuth_search", "cd@view_centric"
NOISY = C.NormalsCondition(True, "dataset GT normals with corruption noise_std=0.2")
CLEAN = C.NormalsCondition(False, "dataset GT normals without corruption (clean)")


def stat(mean, std=0.01, n=3):
    return SeedStat(mean, std, n, (mean,) * n)


def agg(**exps):
    """experiment -> {metric: mean} to an aggregate_runs-like dict (overall only)."""
    return {e: {OVERALL: {k: stat(v) for k, v in m.items()}} for e, m in exps.items()}


def by_id(rows):
    return {r.id: r for r in rows}


def claim(cid):
    return next(c for c in C.CLAIMS if c.id == cid)


def check(cid, aggregated, **kw):
    (row,) = C.evaluate_claims(aggregated, claims=(claim(cid),), **kw)
    return row


def test_claim_specs_are_unique_and_complete():
    ids = [c.id for c in C.CLAIMS]
    assert len(ids) == len(set(ids)) == 9
    for c in C.CLAIMS:
        if c.test == "pose_error_at_most":
            assert c.threshold == 20.0 and not c.experiments
        else:
            assert c.metric and c.subject and c.references, c.id
    assert claim("ura_resolves_ambiguity_margin").threshold == 0.10
    assert (
        ".489" in claim("ura_near_gt_pose").statement
        and ".459" in claim("ura_near_gt_pose").statement
    )


def test_margin_holds_fails_and_boundary():
    # 0.377 - 0.277 is 0.0999999... in floats: at the boundary it must hold
    row = check("ura_resolves_ambiguity_margin", agg(ura={IOU: 0.377}, bl_unsup={IOU: 0.277}))
    assert (row.verdict, row.holds) == ("holds", True), row
    assert "ura 0.377 ± 0.010 (n=3 seeds)" in row.values and "= 0.100" in row.values
    row = check("ura_resolves_ambiguity_margin", agg(ura={IOU: 0.376}, bl_unsup={IOU: 0.277}))
    assert (row.verdict, row.holds) == ("does not hold", False), row


def test_ratio_boundary():
    assert check("ura_near_gt_pose", agg(ura={IOU: 0.34}, bl_gt_pose={IOU: 0.4})).holds is True
    assert check("ura_near_gt_pose", agg(ura={IOU: 0.3399}, bl_gt_pose={IOU: 0.4})).holds is False


def test_less_than_is_strict():
    a = agg(shapeclipper={CDV: 0.5}, shapeclipper_no_ssc={CDV: 0.5})
    assert check("ssc_helps", a).verdict == "does not hold"
    a = agg(shapeclipper={CDV: 0.49}, shapeclipper_no_normal={CDV: 0.5})
    assert check("normals_help", a).verdict == "holds"


def test_abs_diff_boundary_is_strict():
    # |0.35 - 0.30| is 0.04999... in floats: still at the boundary, so it does not hold
    a = agg(ura={IOU: 0.30}, ura_sparse_azimuth={IOU: 0.35})
    assert check("robust_to_pose_distribution", a).holds is False
    a = agg(ura={IOU: 0.30}, ura_sparse_azimuth={IOU: 0.2501})
    assert check("robust_to_pose_distribution", a).holds is True


def test_combination_against_max_and_min():
    a = agg(
        poseless={IOU: 0.5, CD: 0.03}, ura={IOU: 0.5, CD: 0.04}, shapeclipper={IOU: 0.4, CD: 0.03}
    )
    rows = by_id(C.evaluate_claims(a, claims=(claim("combination_iou"), claim("combination_cd"))))
    assert rows["combination_iou"].holds is True  # equal to the max holds
    assert rows["combination_cd"].holds is True  # equal to the min holds
    a["poseless"][OVERALL][CD] = stat(0.031)
    assert check("combination_cd", a).verdict == "does not hold"


def test_not_run_claims_are_listed_never_dropped_never_held():
    rows = C.evaluate_claims({})
    assert [r.id for r in rows] == [c.id for c in C.CLAIMS]
    assert all(r.holds is None and r.verdict.startswith("not run") for r in rows)
    row = check("ssc_helps", agg(shapeclipper={CDV: 0.1}))
    assert row.verdict == "not run (needs shapeclipper_no_ssc)"
    assert "shapeclipper 0.100" in row.values and "shapeclipper_no_ssc not run" in row.values
    assert by_id(rows)["pseudo_poses_right"].verdict == "not run (needs predict_poses)"


def test_missing_metric_is_not_tested():
    row = check("combination_cd", agg(poseless={CD: 0.1}, ura={CD: 0.2}, shapeclipper={IOU: 0.3}))
    assert row.verdict == f"not tested (no {CD} for shapeclipper)" and row.holds is None


def test_noise_tolerance_needs_noisy_normals():
    a = agg(shapeclipper={CDV: 0.4}, shapeclipper_no_noise_tol={CDV: 0.5})
    clean = check("noise_tolerance_helps", a, normals=CLEAN)
    assert clean.verdict == "not tested (clean normals)" and clean.holds is None
    assert "clean" in clean.values and "shapeclipper 0.400" in clean.values
    noisy = check("noise_tolerance_helps", a, normals=NOISY)
    assert noisy.verdict == "holds" and "noise_std=0.2" in noisy.values
    unknown = check("noise_tolerance_helps", a, normals=None)
    assert unknown.verdict == "not tested (normals config unknown)"
    # the other normal claim does not care about the noise
    a = agg(shapeclipper={CDV: 0.4}, shapeclipper_no_normal={CDV: 0.5})
    assert check("normals_help", a, normals=CLEAN).holds is True


def write_normals(folder, cfg):
    folder.mkdir()
    (folder / "config.yaml").write_text(yaml.safe_dump(cfg))
    return folder


@pytest.mark.parametrize(
    "cfg, noisy, text",
    [
        ({"backend": "dataset", "corruption": {"noise_std": 0.0, "blotches": 0, "flips": 0}}, False, "clean"),
        ({"backend": "dataset", "corruption": {"noise_std": 0.0, "blotches": 2, "flips": 0}}, True, "blotches=2"),
        ({"backend": "dataset", "corruption": {"noise_std": 0.1, "flips": 1}}, True, "noise_std=0.1, flips=1"),
        ({"backend": "omnidata", "corruption": {}}, True, "omnidata"),
        ({"backend": "dataset"}, False, "clean"),
    ],
)  # fmt: skip
def test_normals_condition_from_provenance(tmp_path, cfg, noisy, text):
    nested = write_normals(tmp_path / "a", {"stage": "estimate_normals",
                                            "config": {"seed": 0, "estimate_normals": cfg}})  # fmt: skip
    bare = write_normals(tmp_path / "b", {"config": cfg})
    for folder in (nested, bare):
        got = C.normals_condition(folder)
        assert got.noisy is noisy and text in got.description, got


def test_normals_condition_absent_or_bad(tmp_path):
    assert C.normals_condition(None) is None and C.normals_condition(tmp_path) is None
    write_normals(tmp_path / "x", {"config": {"seed": 0}})
    with pytest.raises(ValueError, match="config.yaml: no estimate_normals backend"):
        C.normals_condition(tmp_path / "x")


def write_poses(folder, errors_by_cat, with_errors=True):
    folder.mkdir()
    rows = [(cat, e) for cat, errs in errors_by_cat.items() for e in errs]
    table = pd.DataFrame(
        {
            "id": [f"{c}_{k}" for k, (c, _) in enumerate(rows)],
            "category": [c for c, _ in rows],
            "azimuth_deg": np.zeros(len(rows)),
        }
    )
    if with_errors:
        table["error_deg"] = [e for _, e in rows]
    table.to_parquet(folder / "poses.parquet")
    return folder


def test_pose_errors_per_category_and_one_failing(tmp_path):
    rng = np.random.default_rng(0)
    errors = {"chair": rng.uniform(0, 30, 11), "airplane": np.r_[rng.uniform(0, 100, 8), np.nan]}
    folder = write_poses(tmp_path / "poses", errors)
    got = C.pose_errors_by_category(folder)
    for cat, errs in errors.items():  # slow obvious reference: sort, take the middle
        finite = sorted(e for e in errs if e == e)
        mid = len(finite) // 2
        ref = finite[mid] if len(finite) % 2 else (finite[mid - 1] + finite[mid]) / 2
        assert got[cat] == pytest.approx((ref, len(finite))), cat
    assert list(got) == ["airplane", "chair"]
    rows = C.evaluate_claims({}, pose_errors={"airplane": (20.0, 9), "chair": (20.5, 11)})
    poses = [r for r in rows if r.id.startswith("pseudo_poses_right")]
    assert [(r.id, r.verdict, r.holds) for r in poses] == [
        ("pseudo_poses_right/airplane", "holds", True),  # exactly at 20 degrees holds
        ("pseudo_poses_right/chair", "does not hold", False),
    ]
    assert "chair: median error 20.5° over 11 items" in poses[1].values


def test_pose_errors_absent_or_without_gt(tmp_path):
    assert C.pose_errors_by_category(None) is None
    assert C.pose_errors_by_category(tmp_path) is None
    folder = write_poses(tmp_path / "p", {"chair": [1.0]}, with_errors=False)
    assert C.pose_errors_by_category(folder) == {}
    folder = write_poses(tmp_path / "q", {"chair": [1.0, 3.0]})
    pd.read_parquet(folder / "poses.parquet").drop(columns="category").to_parquet(
        folder / "poses.parquet"
    )
    assert C.pose_errors_by_category(folder) == {"all": (2.0, 2)}
    (row,) = C.evaluate_claims({}, pose_errors={}, claims=(claim("pseudo_poses_right"),))
    assert row.verdict == "not tested (no ground-truth azimuths)" and row.holds is None


def test_claims_table_and_json():
    a = agg(ura={IOU: 0.5}, bl_unsup={IOU: 0.2}, bl_gt_pose={IOU: 0.9})
    rows = C.evaluate_claims(a)
    table = C.claims_table(rows)
    assert table.columns == ("claim", "statement", "ours", "verdict")
    assert "1 of 2 tested hold" in table.caption
    data = C.claims_json(rows)
    assert list(data[0]) == ["id", "statement", "values", "verdict", "holds"]
    assert [d["holds"] for d in data[:2]] == [True, False] and data[2]["holds"] is None
    json.dumps(data)


def test_headline_table_overall_and_per_category():
    a = {
        "ura": {
            OVERALL: {IOU: SeedStat(0.5, 0.02, 2), CD: SeedStat(0.04, 0.001, 2)},
            "chair": {IOU: SeedStat(0.45, 0.01, 2)},
        },
        "bl_unsup": {OVERALL: {IOU: SeedStat(0.3, float("nan"), 1)}, "airplane": {}},
    }
    table = C.headline_table(a)
    assert table.columns == (
        "experiment", "seeds", f"{IOU} ↑", f"{CD} ↓", f"{CDV} ↓", "fscore@0.05@azimuth_search ↑",
        f"{IOU} airplane ↑", f"{IOU} chair ↑",
    )  # fmt: skip
    assert table.rows[0] == (
        "ura",
        "2",
        "0.500 ± 0.020",
        "0.040 ± 0.001",
        "—",
        "—",
        "—",
        "0.450 ± 0.010",
    )
    assert table.rows[1] == ("bl_unsup", "1", "0.300", "—", "—", "—", "—", "—")


def write_run(root, exp, seed, metrics, chair=None):
    folder = root / exp / f"seed{seed}"
    folder.mkdir(parents=True)
    block = {"n_items": 4, "n_empty": 0, "n_errors": 0, "metrics": metrics, "counts": {}}
    per_cat = {"chair": {**block, "metrics": chair}} if chair else {}
    (folder / "summary.json").write_text(json.dumps({"overall": block, "per_category": per_cat}))


def test_build_report_writes_claims_sections_and_escaped_notes(tmp_path):
    ev = tmp_path / "eval"
    for seed, (u, b) in enumerate([(0.50, 0.30), (0.54, 0.32)]):
        write_run(ev, "ura", seed, {IOU: u, CD: 0.04}, chair={IOU: u - 0.1})
        write_run(ev, "bl_unsup", seed, {IOU: b, CD: 0.08})
    poses = write_poses(tmp_path / "poses", {"chair": [5.0, 10.0, 15.0]})
    normals = write_normals(tmp_path / "normals", {"config": {"backend": "dataset"}})
    folders = {"poses": poses, "normals": normals}
    cfg = ReportConfig(notes=("Pose <claim> fails: GAN too small & 1 seed.", "Second note."))
    outs = []
    for k in range(2):
        out = tmp_path / f"out{k}"
        out.mkdir()
        info = build_report(ReportInputs(tmp_path / "none", ev, folders), cfg, out)
        outs.append(out)
    assert info["sections"][1:4] == ["Results (headline)", "Claims", "Results"]
    data = json.loads((out / "claims.json").read_text())
    rows = {d["id"]: d for d in data}
    assert rows["ura_resolves_ambiguity_margin"]["verdict"] == "holds"
    assert "ura 0.520 ± 0.028 (n=2 seeds)" in rows["ura_resolves_ambiguity_margin"]["values"]
    assert rows["pseudo_poses_right/chair"]["holds"] is True
    assert rows["ssc_helps"]["verdict"].startswith("not run") and rows["ssc_helps"]["holds"] is None
    assert rows["noise_tolerance_helps"]["holds"] is None
    page = (out / "index.html").read_text()
    assert "<p>Pose &lt;claim&gt; fails: GAN too small &amp; 1 seed.</p>" in page
    assert "<claim>" not in page and "ura_near_gt_pose" in page
    summary = (out / "summary.md").read_text()
    head, claims_part = summary.index("## Results (headline)"), summary.index("## Claims")
    assert (
        head < claims_part < summary.index("Pose <claim> fails") < summary.index("## All results")
    )
    assert "| ura | 2 | 0.520 ± 0.028 |" in summary and "0.420 ± 0.028" in summary
    for name in ("summary.md", "claims.json", "index.html"):  # deterministic
        assert (outs[0] / name).read_text() == (outs[1] / name).read_text(), name

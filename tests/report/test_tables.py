"""Paper-style tables: collecting runs, mean ± std over seeds, paper numbers beside ours."""

import json

import numpy as np

from poseless.report import tables as T
from poseless.report.paper_numbers import PAPER_NUMBERS, comparable, numbers_for


def write_run(root, exp, seed, iou, cd, n_empty=0, chair_iou=None):
    folder = root / exp / f"seed{seed}"
    folder.mkdir(parents=True)
    block = {"n_items": 4, "n_empty": n_empty, "n_errors": 0,
             "metrics": {"iou32@azimuth_search": iou, "cd@azimuth_search": cd}, "counts": {}}  # fmt: skip
    per_cat = {}
    if chair_iou is not None:
        per_cat["chair"] = {**block, "metrics": {"iou32@azimuth_search": chair_iou}}
    (folder / "summary.json").write_text(json.dumps({"overall": block, "per_category": per_cat}))


def test_collect_runs_skips_unfinished_and_sorts(tmp_path):
    write_run(tmp_path, "ura", 1, 0.5, 0.1)
    write_run(tmp_path, "ura", 0, 0.4, 0.2)
    (tmp_path / "ura" / "seed2").mkdir()  # unfinished: no summary.json
    (tmp_path / "ura" / "notes").mkdir()
    runs = T.collect_runs(tmp_path)
    assert list(runs) == ["ura"] and list(runs["ura"]) == [0, 1]
    assert T.collect_runs(tmp_path / "missing") == {}


def test_results_table_mean_std_over_seeds(tmp_path):
    ious = [0.40, 0.45, 0.53]
    for s, v in enumerate(ious):
        write_run(tmp_path, "ura", s, v, 0.1 * (s + 1), n_empty=s)
    write_run(tmp_path, "bl_unsup", 0, 0.2, None)
    table = T.results_table(T.collect_runs(tmp_path), ("iou32", "cd"))
    assert table.columns == (
        "experiment",
        "seeds",
        "iou32@azimuth_search ↑",
        "cd@azimuth_search ↓",
        "empty",
    )
    rows = {r[0]: r for r in table.rows}
    assert rows["ura"][2] == f"{np.mean(ious):.3f} ± {np.std(ious, ddof=1):.3f}"
    assert rows["ura"][4] == "1.0 ± 1.0"
    assert rows["bl_unsup"][1:4] == ("1", "0.200", "—")  # one seed: no ±; no Chamfer: dash
    md = T.to_markdown(table)
    assert md.count("\n") == 2 + 2 + 2 and "| ura | 3 |" in md
    assert "<td>ura</td>" in T.to_html(table)


def test_paper_comparison_only_on_the_papers_dataset(tmp_path):
    write_run(tmp_path, "ura", 0, 0.5, 0.03, chair_iou=0.44)
    runs = T.collect_runs(tmp_path)
    synthetic = T.paper_comparison(runs, "synthetic")
    assert synthetic.rows and all("not comparable" in r[-1] for r in synthetic.rows)
    shapenet = {(r[1], r[2], r[3]): r for r in T.paper_comparison(runs, "shapenet_nmr").rows}
    mean = shapenet[("URA: URA", "shapenet_nmr / 13-class mean", "iou32@azimuth_search")]
    assert mean[4:] == ("0.489", "0.500", "comparable")
    chair = shapenet[("URA: URA", "shapenet_nmr / chair", "iou32@azimuth_search")]
    assert chair[5] == "0.440"
    car = shapenet[("URA: URA", "shapenet_nmr / car", "iou32@azimuth_search")]
    assert car[5].startswith("— (no car items)")
    cd = shapenet[("URA: URA", "shapenet_nmr / 13-class mean", "cd@azimuth_search")]
    assert cd[4] == "0.0338" and "indicative" in cd[6]


def test_paper_numbers_carry_protocol_and_dataset():
    assert {p.dataset for p in PAPER_NUMBERS} == {"shapenet_nmr", "pix3d", "pascal3d"}
    sc = {p.metric: p.value for p in numbers_for("shapeclipper") if p.dataset == "pix3d"}
    assert sc == {"cd": 0.618, "fscore@0.01": 0.1317, "fscore@0.05": 0.5473, "fscore@0.1": 0.8002}
    assert all(p.protocol == "view_centric" for p in numbers_for("shapeclipper"))
    assert comparable(numbers_for("shapeclipper")[0], "pix3d")[0]
    assert comparable(numbers_for("shapeclipper")[0], "cub") == (
        False,
        "not comparable: ours are on cub, the paper's on pix3d",
    )

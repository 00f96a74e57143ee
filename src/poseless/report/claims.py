"""The papers' claims checked on our numbers, and the compact headline table.

Each claim is data (:data:`CLAIMS`, a tuple of frozen :class:`Claim` specs): the
experiments it compares, the metric, the test and its threshold. :func:`evaluate_claims`
checks every claim on the means over seeds of ``aggregate_runs`` (group
``overall`` = all categories) and returns one :class:`ClaimResult` row per claim
(one per category for the pseudo-pose claim). A claim whose experiments were not
run is listed as "not run (needs ...)", never dropped and never counted as
holding; the noise-tolerance claim is "not tested (clean normals)" when the
normals the run used were neither corrupted nor estimated.

The pseudo-pose errors come from the ``predict_poses`` table (``poses.parquet``,
column ``error_deg`` = aligned error; :func:`pose_errors_by_category`), the
normals' provenance from the ``estimate_normals`` folder's ``config.yaml``
(:func:`normals_condition`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import yaml

from poseless.evaluate.harness import OVERALL, SeedStat
from poseless.report.tables import Table, _arrow, format_stat

ClaimTest = Literal[
    "margin_at_least",
    "ratio_at_least",
    "less_than",
    "at_least_max",
    "at_most_min",
    "abs_diff_below",
    "pose_error_at_most",
]
"""How a claim compares its measured means (see :class:`Claim`)."""

EPS = 1e-9
"""Values within EPS of a threshold count as exactly at it (float round-off, e.g. 0.377 - 0.277)."""

HOLDS, FAILS = "holds", "does not hold"
"""The two verdicts of a tested claim."""


@dataclass(frozen=True)
class Claim:
    """One claim of the papers, as a test on the means over seeds.

    Tests (s = subject's mean, r = the references' means, t = threshold):
    margin_at_least: s - r0 >= t; ratio_at_least: s >= t * r0; less_than: s < r0;
    at_least_max: s >= max(r); at_most_min: s <= min(r); abs_diff_below: |s - r0| < t;
    pose_error_at_most: the predict_poses median azimuth error <= t in every category.
    """

    id: str
    """Stable identifier (claims.json, README)."""
    statement: str
    """The claim in plain words, with the papers' numbers."""
    test: ClaimTest
    """How the measured means are compared."""
    metric: str = ""
    """'metric@protocol' key of the evaluate summaries ('' for pose_error_at_most)."""
    subject: str = ""
    """The experiment the claim is about ('' for pose_error_at_most)."""
    references: tuple[str, ...] = ()
    """The experiments it is compared with."""
    threshold: float = 0.0
    """Margin, ratio or bound of the test (unused by less_than, at_least_max, at_most_min)."""
    needs_noisy_normals: bool = False
    """Only tested when the run's normals were corrupted or estimated (not clean GT)."""

    @property
    def experiments(self) -> tuple[str, ...]:
        """Subject then references."""
        return (self.subject, *self.references) if self.subject else ()


CLAIMS: tuple[Claim, ...] = (
    Claim(
        "ura_resolves_ambiguity_margin",
        "URA's pseudo poses resolve the shape-pose ambiguity: its 3D IoU beats the "
        "unsupervised baseline B/Lu by at least 0.10 (paper, ShapeNet 13-class mean: "
        "URA .489 vs B/Lu .277).",
        "margin_at_least",
        "iou32@azimuth_search",
        "ura",
        ("bl_unsup",),
        0.10,
    ),
    Claim(
        "ura_near_gt_pose",
        "URA without poses comes close to training with ground-truth poses: its 3D IoU "
        "is at least 0.85 × that of B/Ls (paper: URA .489 vs B/Ls .459).",
        "ratio_at_least",
        "iou32@azimuth_search",
        "ura",
        ("bl_gt_pose",),
        0.85,
    ),
    Claim(
        "pseudo_poses_right",
        "The GAN-based pseudo poses are right: the median azimuth error of predict_poses "
        "(after the best global alignment) is at most 20 degrees in each category "
        "(URA reports its pseudo poses as accurate enough to replace GT poses).",
        "pose_error_at_most",
        threshold=20.0,
    ),
    Claim(
        "ssc_helps",
        "ShapeClipper's CLIP-kNN shape consistency helps: lower view-centric Chamfer with "
        "it than without (paper, Pix3D CD: .618 vs .749 w/o SSC).",
        "less_than",
        "cd@view_centric",
        "shapeclipper",
        ("shapeclipper_no_ssc",),
    ),
    Claim(
        "normals_help",
        "ShapeClipper's normal loss helps: lower view-centric Chamfer with it than without "
        "(paper, Pix3D CD: .618 vs .766 w/o normal).",
        "less_than",
        "cd@view_centric",
        "shapeclipper",
        ("shapeclipper_no_normal",),
    ),
    Claim(
        "noise_tolerance_helps",
        "With corrupted (estimated) normals, ShapeClipper's noise-tolerant normal loss "
        "(outlier dropout) helps: lower view-centric Chamfer with it than without "
        "(paper, Pix3D CD: .618 vs .640 w/o noise-tol).",
        "less_than",
        "cd@view_centric",
        "shapeclipper",
        ("shapeclipper_no_noise_tol",),
        needs_noisy_normals=True,
    ),
    Claim(
        "combination_iou",
        "Combining the two papers (poseless) is at least as good as either alone in 3D IoU: "
        "poseless ≥ max(ura, shapeclipper).",
        "at_least_max",
        "iou32@azimuth_search",
        "poseless",
        ("ura", "shapeclipper"),
    ),
    Claim(
        "combination_cd",
        "Combining the two papers (poseless) is at least as good as either alone in Chamfer: "
        "poseless ≤ min(ura, shapeclipper).",
        "at_most_min",
        "cd@azimuth_search",
        "poseless",
        ("ura", "shapeclipper"),
    ),
    Claim(
        "robust_to_pose_distribution",
        "URA is robust to the training pose distribution: training on a sparse azimuth "
        "distribution changes its 3D IoU by less than 0.05 (|ura_sparse_azimuth - ura|).",
        "abs_diff_below",
        "iou32@azimuth_search",
        "ura_sparse_azimuth",
        ("ura",),
        0.05,
    ),
)
"""The claims checked in the report, in display order."""

HEADLINE_METRICS: tuple[str, ...] = (
    "iou32@azimuth_search",
    "cd@azimuth_search",
    "cd@view_centric",
    "fscore@0.05@azimuth_search",
)
"""Overall columns of the headline table."""
HEADLINE_PER_CATEGORY = "iou32@azimuth_search"
"""Metric of the headline table's per-category columns."""


@dataclass(frozen=True)
class ClaimResult:
    """One row of the claims table."""

    id: str
    """Claim id (with '/<category>' for per-category rows)."""
    statement: str
    """The claim in plain words."""
    values: str
    """Our measured values: mean ± std (n seeds) of each experiment, and the compared quantity."""
    verdict: str
    """'holds', 'does not hold', 'not run (...)' or 'not tested (...)'."""
    holds: bool | None
    """True / False when tested, None when not run or not tested."""


@dataclass(frozen=True)
class NormalsCondition:
    """Whether the normals a run trained on were noisy (corrupted GT or a real estimator)."""

    noisy: bool
    """True for backend omnidata or dataset with any corruption."""
    description: str
    """Plain words, e.g. 'dataset GT normals with corruption noise_std=0.2'."""


# --------------------------------------------------------------------------- inputs


def pose_errors_by_category(poses_folder: str | Path | None) -> dict[str, tuple[float, int]] | None:
    """category -> (median aligned azimuth error in degrees, items with GT) from ``poses.parquet``.

    ``error_deg`` is the error after the best global alignment that ``predict_poses``
    fitted (its metrics JSON reports the same medians). Returns None when the folder
    or table is absent, {} when the table has no GT errors; a table without a
    ``category`` column is one group ``all``.
    """
    if poses_folder is None:
        return None
    path = Path(poses_folder) / "poses.parquet"
    if not path.is_file():
        return None
    import pandas as pd

    table = pd.read_parquet(path)
    if "error_deg" not in table.columns:
        return {}
    known = table[table["error_deg"].notna()]
    if "category" not in known.columns:
        known = known.assign(category="all")
    return {
        str(cat): (float(group["error_deg"].median()), len(group))
        for cat, group in sorted(known.groupby("category"), key=lambda kv: str(kv[0]))
    }


def normals_condition(normals_folder: str | Path | None) -> NormalsCondition | None:
    """The noise condition of the normals from the ``estimate_normals`` folder's config.yaml.

    Reads ``config.estimate_normals`` (the stage's provenance; a bare ``config`` with
    ``backend`` is accepted too). None when the folder or its config.yaml is absent.
    """
    if normals_folder is None:
        return None
    path = Path(normals_folder) / "config.yaml"
    if not path.is_file():
        return None
    data = yaml.safe_load(path.read_text()) or {}
    cfg = data.get("config", data) if isinstance(data, dict) else {}
    cfg = cfg.get("estimate_normals", cfg) if isinstance(cfg, dict) else {}
    backend = cfg.get("backend") if isinstance(cfg, dict) else None
    if backend is None:
        raise ValueError(f"{path}: no estimate_normals backend in its config")
    if backend != "dataset":
        return NormalsCondition(True, f"estimated by {backend} (a real estimator: noisy)")
    corruption = cfg.get("corruption") or {}
    on = {k: corruption[k] for k in ("noise_std", "blotches", "flips") if corruption.get(k, 0) > 0}
    if not on:
        return NormalsCondition(False, "dataset GT normals without corruption (clean)")
    text = ", ".join(f"{k}={v:g}" for k, v in on.items())
    return NormalsCondition(True, f"dataset GT normals with corruption {text}")


# --------------------------------------------------------------------------- evaluation


def _mean(stat: SeedStat | None) -> float | None:
    return stat.mean if stat is not None and math.isfinite(stat.mean) else None


def _describe(exp: str, stat: SeedStat | None, digits: int) -> str:
    if stat is None or _mean(stat) is None:
        return f"{exp} —"
    seeds = "seed" if stat.n == 1 else "seeds"
    return f"{exp} {format_stat(stat, digits)} (n={stat.n} {seeds})"


def _compare(claim: Claim, s: float, refs: list[float]) -> tuple[bool, str]:
    """(holds, the compared quantity in words) of a metric claim on the means."""
    t, r0 = claim.threshold, refs[0]
    ref = claim.references[0]
    if claim.test == "margin_at_least":
        d = s - r0
        return d >= t - EPS, f"{claim.subject} − {ref} = {d:.3f} (needs ≥ {t:g})"
    if claim.test == "ratio_at_least":
        ratio = s / r0 if r0 != 0 else math.inf
        return s >= t * r0 - EPS, f"{claim.subject} / {ref} = {ratio:.3f} (needs ≥ {t:g})"
    if claim.test == "less_than":
        return s < r0 - EPS, f"{claim.subject} − {ref} = {s - r0:.4f} (needs < 0)"
    if claim.test == "at_least_max":
        m = max(refs)
        return s >= m - EPS, f"{claim.subject} − max = {s - m:.4f} (needs ≥ 0)"
    if claim.test == "at_most_min":
        m = min(refs)
        return s <= m + EPS, f"{claim.subject} − min = {s - m:.4f} (needs ≤ 0)"
    if claim.test == "abs_diff_below":
        d = abs(s - r0)
        return d < t - EPS, f"|{claim.subject} − {ref}| = {d:.3f} (needs < {t:g})"
    raise ValueError(f"claim {claim.id}: test {claim.test!r} is not a metric comparison")


def _metric_claim(
    claim: Claim,
    aggregated: dict[str, dict[str, dict[str, SeedStat]]],
    normals: NormalsCondition | None,
    digits: int,
) -> ClaimResult:
    missing = [e for e in claim.experiments if e not in aggregated]
    stats = {e: aggregated.get(e, {}).get(OVERALL, {}).get(claim.metric) for e in claim.experiments}
    parts = [_describe(e, stats[e], digits) for e in claim.experiments if e not in missing]
    parts += [f"{e} not run" for e in missing]

    def row(verdict: str, holds: bool | None, extra: str = "") -> ClaimResult:
        values = "; ".join(parts + ([extra] if extra else []))
        return ClaimResult(claim.id, claim.statement, values, verdict, holds)

    if missing:
        return row(f"not run (needs {', '.join(missing)})", None)
    absent = [e for e in claim.experiments if _mean(stats[e]) is None]
    if absent:
        return row(f"not tested (no {claim.metric} for {', '.join(absent)})", None)
    normals_text = ""
    if claim.needs_noisy_normals:
        if normals is None:
            return row("not tested (normals config unknown)", None, "normals: no config.yaml found")
        normals_text = f"normals: {normals.description}"
        if not normals.noisy:
            return row("not tested (clean normals)", None, normals_text)
    ok, compared = _compare(
        claim, _mean(stats[claim.subject]), [_mean(stats[e]) for e in claim.references]
    )
    extra = "; ".join(x for x in (compared, normals_text) if x)
    return row(HOLDS if ok else FAILS, ok, extra)


def _pose_claim(
    claim: Claim, pose_errors: dict[str, tuple[float, int]] | None
) -> list[ClaimResult]:
    if pose_errors is None:
        return [
            ClaimResult(
                claim.id, claim.statement, "no poses.parquet", "not run (needs predict_poses)", None
            )
        ]
    if not pose_errors:
        return [
            ClaimResult(
                claim.id,
                claim.statement,
                "poses.parquet has no error_deg",
                "not tested (no ground-truth azimuths)",
                None,
            )
        ]
    rows = []
    for cat, (median, n) in pose_errors.items():
        ok = median <= claim.threshold + EPS
        values = f"{cat}: median error {median:.1f}° over {n} items (needs ≤ {claim.threshold:g}°)"
        rows.append(
            ClaimResult(f"{claim.id}/{cat}", claim.statement, values, HOLDS if ok else FAILS, ok)
        )
    return rows


def evaluate_claims(
    aggregated: dict[str, dict[str, dict[str, SeedStat]]],
    pose_errors: dict[str, tuple[float, int]] | None = None,
    normals: NormalsCondition | None = None,
    claims: tuple[Claim, ...] = CLAIMS,
    digits: int = 3,
) -> list[ClaimResult]:
    """One row per claim (per category for pose claims), in ``claims`` order.

    Args:
        aggregated: ``tables.aggregate_runs`` output, experiment -> group -> key -> SeedStat.
        pose_errors: ``pose_errors_by_category`` output (None: predict_poses not run).
        normals: ``normals_condition`` output (None: unknown).
        claims: the specs to check.
        digits: decimals of the values.
    """
    rows: list[ClaimResult] = []
    for claim in claims:
        if claim.test == "pose_error_at_most":
            rows += _pose_claim(claim, pose_errors)
        else:
            rows.append(_metric_claim(claim, aggregated, normals, digits))
    return rows


# --------------------------------------------------------------------------- outputs


def claims_table(results: list[ClaimResult]) -> Table:
    """The claims as a :class:`Table` (claim, statement, our values, verdict)."""
    rows = tuple((r.id, r.statement, r.values, r.verdict) for r in results)
    held = sum(r.holds is True for r in results)
    tested = sum(r.holds is not None for r in results)
    caption = (
        f"Claims on our numbers (means over seeds, all categories): {held} of {tested} tested hold"
    )
    return Table(("claim", "statement", "ours", "verdict"), rows, caption)


def claims_json(results: list[ClaimResult]) -> list[dict]:
    """claims.json: [{id, statement, values, verdict, holds}]."""
    return [asdict(r) for r in results]


def headline_table(
    aggregated: dict[str, dict[str, dict[str, SeedStat]]],
    metrics: tuple[str, ...] = HEADLINE_METRICS,
    per_category: str = HEADLINE_PER_CATEGORY,
    digits: int = 3,
) -> Table:
    """Experiments x (``metrics`` overall, then ``per_category`` per category), mean ± std.

    The seeds column is the largest number of seeds any overall metric was averaged over.
    """
    cats = sorted({g for agg in aggregated.values() for g in agg if g != OVERALL})
    rows = []
    for exp, agg in aggregated.items():
        overall = agg.get(OVERALL, {})
        seeds = max((s.n for s in overall.values()), default=0)
        cells = [exp, str(seeds)]
        cells += [format_stat(overall.get(m), digits) for m in metrics]
        cells += [format_stat(agg.get(c, {}).get(per_category), digits) for c in cats]
        rows.append(tuple(cells))
    header = (
        "experiment",
        "seeds",
        *(f"{m} {_arrow(m)}" for m in metrics),
        *(f"{per_category} {c} {_arrow(per_category)}" for c in cats),
    )
    return Table(header, tuple(rows), "Headline: overall and per-category, mean ± std over seeds")

"""Paper-style tables: experiments x (metric @ protocol), mean +/- std over seeds.

Inputs are the ``evaluate`` folders ``<eval root>/<experiment>/seed<k>/summary.json``
(:func:`collect_runs`); :func:`results_table` aggregates them over seeds with
:func:`poseless.evaluate.harness.aggregate_seeds`, :func:`paper_comparison` sets
the papers' numbers (:mod:`poseless.report.paper_numbers`) beside ours, and the
``to_markdown`` / ``to_html`` helpers format any :class:`Table`.
"""

from __future__ import annotations

import html
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

from poseless.evaluate.harness import OVERALL, PROTOCOL_ORDER, SeedStat, aggregate_seeds
from poseless.report.paper_numbers import comparable, numbers_for

_SEED_DIR = re.compile(r"^seed(\d+)$")
LOWER_IS_BETTER = ("cd", "pose_median_deg", "pose_mean_deg")
"""Metric names where smaller is better (marked with a down arrow)."""


def collect_runs(eval_root: str | Path) -> dict[str, dict[int, dict]]:
    """experiment -> seed -> summary.json of every ``<exp>/seed<k>/`` under ``eval_root``.

    Folders without a summary.json (unfinished runs) are skipped; experiments
    and seeds are sorted.
    """
    root = Path(eval_root)
    runs: dict[str, dict[int, dict]] = {}
    if not root.is_dir():
        return runs
    for exp_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for seed_dir in sorted(exp_dir.iterdir()):
            m = _SEED_DIR.match(seed_dir.name)
            summary = seed_dir / "summary.json"
            if m and summary.is_file():
                runs.setdefault(exp_dir.name, {})[int(m.group(1))] = json.loads(summary.read_text())
    return {e: dict(sorted(s.items())) for e, s in runs.items()}


@dataclass(frozen=True)
class Table:
    """A formatted table."""

    columns: tuple[str, ...]
    """Header cells."""
    rows: tuple[tuple[str, ...], ...]
    """Body cells, one tuple per row."""
    caption: str = ""
    """One-line caption."""


def format_stat(stat: SeedStat | None, digits: int = 3) -> str:
    """'0.512 ± 0.010' over several seeds, '0.512' for one, '—' when missing."""
    if stat is None or not math.isfinite(stat.mean):
        return "—"
    if stat.n > 1 and math.isfinite(stat.std):
        return f"{stat.mean:.{digits}f} ± {stat.std:.{digits}f}"
    return f"{stat.mean:.{digits}f}"


def _arrow(metric_key: str) -> str:
    return "↓" if metric_key.split("@", 1)[0] in LOWER_IS_BETTER else "↑"


def metric_columns(aggregated: dict[str, dict[str, dict[str, SeedStat]]], metrics) -> list[str]:
    """'metric@protocol' keys present in any experiment, by protocol order then ``metrics`` order."""
    present = {k for agg in aggregated.values() for k in agg.get(OVERALL, {})}
    cols = []
    for proto in PROTOCOL_ORDER:
        for m in metrics:
            if f"{m}@{proto}" in present:
                cols.append(f"{m}@{proto}")
    return cols


def aggregate_runs(runs: dict[str, dict[int, dict]]) -> dict[str, dict[str, dict[str, SeedStat]]]:
    """experiment -> group -> metric key -> SeedStat (see ``aggregate_seeds``)."""
    return {exp: aggregate_seeds(list(seeds.values())) for exp, seeds in runs.items()}


def results_table(
    runs: dict[str, dict[int, dict]], metrics, group: str = OVERALL, digits: int = 3
) -> Table:
    """Experiments x metric@protocol (mean ± std over seeds), with seeds and empty counts.

    Chamfer means are over non-empty predictions; the 'empty' column gives the
    mean count of empty predictions per seed.
    """
    agg = aggregate_runs(runs)
    cols = metric_columns(agg, metrics)
    rows = []
    for exp, stats in agg.items():
        g = stats.get(group, {})
        cells = [exp, str(len(runs[exp]))]
        cells += [format_stat(g.get(c), digits) for c in cols]
        cells.append(format_stat(g.get("n_empty"), 1))
        rows.append(tuple(cells))
    header = ("experiment", "seeds", *(f"{c} {_arrow(c)}" for c in cols), "empty")
    return Table(header, tuple(rows), f"{group}: mean ± std over seeds")


def paper_comparison(runs: dict[str, dict[int, dict]], adapter: str, digits: int = 3) -> Table:
    """The papers' numbers beside ours for every experiment that reproduces a paper row."""
    agg = aggregate_runs(runs)
    rows = []
    for exp in agg:
        for num in numbers_for(exp):
            group = OVERALL if num.subset in ("13-class mean", "mean") else num.subset
            ok, note = comparable(num, adapter)
            stat = agg[exp].get(group, {}).get(num.key)
            ours = format_stat(stat, digits) if group in agg[exp] else f"— (no {group} items)"
            rows.append(
                (
                    exp,
                    f"{num.paper}: {num.method}",
                    f"{num.dataset} / {num.subset}",
                    num.key,
                    f"{num.ours_units:.{digits + 1}g}",
                    ours,
                    "comparable" + (f" ({note})" if note else "") if ok else note,
                )
            )
    header = ("experiment", "paper row", "paper dataset", "metric", "paper", "ours", "comparison")
    return Table(header, tuple(rows), "Paper numbers beside ours (paper values in our units)")


def to_markdown(table: Table) -> str:
    """GitHub-flavoured Markdown of a table (caption as a bold line above)."""

    def esc(c: str) -> str:
        return c.replace("|", "\\|")

    lines = [f"**{table.caption}**", ""] if table.caption else []
    lines.append("| " + " | ".join(esc(c) for c in table.columns) + " |")
    lines.append("|" + "---|" * len(table.columns))
    lines += ["| " + " | ".join(esc(c) for c in row) + " |" for row in table.rows]
    if not table.rows:
        lines.append("| " + " | ".join(["(none)"] + [""] * (len(table.columns) - 1)) + " |")
    return "\n".join(lines) + "\n"


def to_html(table: Table) -> str:
    """An HTML <table> (escaped cells)."""
    head = "".join(f"<th>{html.escape(c)}</th>" for c in table.columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in table.rows
    )
    cap = f"<caption>{html.escape(table.caption)}</caption>" if table.caption else ""
    return f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"

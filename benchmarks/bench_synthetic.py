"""Throughput of the synthetic generator: render-only and full ground truth.

    .venv/bin/python benchmarks/bench_synthetic.py --instances 1000 --workers 2

Wall time depends on what else runs on the machine; cpu_seconds (this process plus its
finished workers) does not. Render-only = shape + image, mask, normals, depth, pose; full = plus mesh, filled voxels
and surface samples. Prints a table and a JSON line of instances/s.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import resource
import time

from poseless.config import SyntheticConfig
from poseless.data.synthetic import CATEGORIES, iter_items


def _cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def run(cfg: SyntheticConfig, shape_gt: bool) -> tuple[float, float, int]:
    """Wall seconds and CPU seconds (this process + finished workers) for all items, item count."""
    t0, c0 = time.perf_counter(), _cpu_seconds()
    n = sum(1 for _ in iter_items(cfg, seed=0, shape_gt=shape_gt))
    return time.perf_counter() - t0, _cpu_seconds() - c0, n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--instances", type=int, default=1000, help="instances in total (split over categories)"
    )
    ap.add_argument("--categories", nargs="+", default=list(CATEGORIES), help="categories to mix")
    ap.add_argument("--workers", type=int, default=2, help="worker processes")
    ap.add_argument("--size", type=int, default=64, help="render size in pixels")
    ap.add_argument("--views", type=int, default=1, help="views per instance")
    ap.add_argument("--skip-full", action="store_true", help="only time the render-only path")
    args = ap.parse_args()
    per_cat = max(1, math.ceil(args.instances / len(args.categories)))
    cfg = dataclasses.replace(
        SyntheticConfig(),
        categories=tuple(args.categories),
        instances_per_category=per_cat,
        views_per_instance=args.views,
        render_size=args.size,
        workers=args.workers,
    )
    n_inst = per_cat * len(args.categories)
    rows = []
    modes = [("render_only", False)] + ([] if args.skip_full else [("full_gt", True)])
    for name, shape_gt in modes:
        secs, cpu, n_items = run(cfg, shape_gt)
        rows.append(
            {
                "mode": name,
                "instances": n_inst,
                "items": n_items,
                "seconds": round(secs, 2),
                "cpu_seconds": round(cpu, 2),
                "instances_per_s": round(n_inst / secs, 1),
                "workers": args.workers,
                "size": args.size,
            }
        )
    print(f"{'mode':<12} {'instances':>9} {'items':>6} {'seconds':>8} {'cpu_s':>8} {'inst/s':>8}")
    for r in rows:
        print(
            f"{r['mode']:<12} {r['instances']:>9} {r['items']:>6} {r['seconds']:>8} "
            f"{r['cpu_seconds']:>8} {r['instances_per_s']:>8}"
        )
    print(json.dumps(rows))


if __name__ == "__main__":
    main()

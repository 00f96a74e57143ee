"""Throughput of prepare_data's writer (check, composite, crop, resize, PNG/npz writing).

Feeds random RawItems (a filled ellipse as mask, optional normals/depth ground truth)
straight to ``write_prepared`` and prints items/s as JSON, e.g.::

    .venv/bin/python benchmarks/prepare_throughput.py --items 200 --raw-size 256 --image-size 64
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from poseless.config import PrepareDataConfig
from poseless.data.prepare import write_prepared
from poseless.data.raw import RawItem


def items(n: int, size: int, with_gt: bool, seed: int = 0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    for k in range(n):
        cy, cx, r = rng.uniform(0.3, 0.7) * size, rng.uniform(0.3, 0.7) * size, size * 0.25
        mask = ((((yy - cy) / r) ** 2 + ((xx - cx) / (0.7 * r)) ** 2) <= 1).astype(np.uint8) * 255
        gt = {}
        if with_gt:
            normals = rng.normal(size=(3, size, size)).astype(np.float16)
            gt = {
                "normals": normals * (mask > 0),
                "depth": np.where(mask > 0, 2.5, 0.0).astype(np.float32),
            }
        rgb = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        yield RawItem(id=f"i{k:05d}", category="c", source=f"bench:{k}", rgb=rgb, mask=mask, gt=gt)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--items", type=int, default=200)
    p.add_argument("--raw-size", type=int, default=256)
    p.add_argument("--image-size", type=int, default=64)
    args = p.parse_args()
    rows = []
    for crop in ("bbox", "none"):
        for with_gt in (False, True):
            cfg = PrepareDataConfig(image_size=args.image_size, crop=crop, contact_sheet_items=32)
            src = list(items(args.items, args.raw_size, with_gt))
            with tempfile.TemporaryDirectory() as tmp:
                t0 = time.perf_counter()
                write_prepared(
                    src, cfg, Path(tmp) / "out", split_fractions=(0.8, 0.1, 0.1), camera=None
                )
                dt = time.perf_counter() - t0
            rows.append(
                {
                    "crop": crop,
                    "gt": with_gt,
                    "items": args.items,
                    "seconds": round(dt, 3),
                    "items_per_s": round(args.items / dt, 1),
                }
            )
    print(
        json.dumps(
            {"raw_size": args.raw_size, "image_size": args.image_size, "results": rows}, indent=1
        )
    )


if __name__ == "__main__":
    main()

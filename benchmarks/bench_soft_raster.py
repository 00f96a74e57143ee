"""Benchmark the soft silhouette rasterizer: sparse fast path vs naive dense.

Forward + backward of SoftRas silhouettes for a deformed level-3 icosphere
(642 vertices, 1280 faces, radius ~0.5) at the Kato camera, 64 x 64. Prints a
JSON object of images/s (fast path, dense path, CUDA when available) and peak
resident memory.

    .venv/bin/python benchmarks/bench_soft_raster.py [--batch 32] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import time

import torch

from poseless.geometry.cameras import kato_extrinsics
from poseless.geometry.mesh import icosphere
from poseless.render.soft_raster import (
    SoftRasterSettings,
    render_silhouettes,
    render_silhouettes_dense,
)


def _inputs(batch: int, device: str):
    g = torch.Generator().manual_seed(0)
    v, f = icosphere(3)
    verts = 0.5 * v[None] * (1 + 0.1 * torch.randn(batch, v.shape[0], 1, generator=g))
    R, t = kato_extrinsics(torch.rand(batch, generator=g) * 2 * math.pi)
    return verts.to(device), f.to(device), R.to(device), t.to(device)


def _images_per_s(fn, batch: int, device: str, repeats: int) -> float:
    verts, f, R, t = _inputs(batch, device)
    settings = SoftRasterSettings()
    times = []
    for _ in range(repeats + 1):  # first call is warm-up
        v = verts.clone().requires_grad_(True)
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn(v, f, R, t, settings).sum().backward()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return batch / min(times[1:])


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32, help="batch size of the fast path")
    parser.add_argument(
        "--dense-batch", type=int, default=1, help="batch of the dense path (extrapolated)"
    )
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats (best is reported)")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (default: torch's)"
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rss0 = _peak_rss_mb()
    fast = _images_per_s(render_silhouettes, args.batch, "cpu", args.repeats)
    rss_fast = _peak_rss_mb()
    dense = _images_per_s(
        render_silhouettes_dense, args.dense_batch, "cpu", max(1, args.repeats // 2)
    )
    result = {
        "image_size": 64,
        "faces": 1280,
        "cpu_threads": torch.get_num_threads(),
        "fast_batch": args.batch,
        "fast_cpu_images_per_s": round(fast, 1),
        "dense_batch": args.dense_batch,
        "dense_cpu_images_per_s": round(dense, 2),
        "speedup_vs_dense": round(fast / dense, 1),
        "peak_rss_mb_after_fast": round(rss_fast, 1),
        "peak_rss_mb_before": round(rss0, 1),
        "peak_rss_mb_after_dense": round(_peak_rss_mb(), 1),
    }
    if torch.cuda.is_available():
        result["cuda_images_per_s"] = round(
            _images_per_s(render_silhouettes, args.batch, "cuda", args.repeats), 1
        )
        result["cuda_peak_mem_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

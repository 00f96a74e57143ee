"""Timings of the evaluation library on one realistic item.

The "prediction" is the marching-cubes mesh of an analytic SDF (a rounded,
asymmetric blob) at the default 101^3 grid; the "GT" is the same blob rotated
by 35 deg about y. Prints a JSON object of median seconds per call.

    .venv/bin/python benchmarks/bench_metrics.py --repeats 3
"""

from __future__ import annotations

import argparse
import json
import math
import time

import numpy as np
import torch

from poseless.evaluate.align import (
    EvalSettings,
    GTShape,
    PredShape,
    evaluate_protocol,
    global_alignment,
    rotation_y,
)
from poseless.evaluate.extract import ExtractSettings, extract_mesh
from poseless.evaluate.metrics import point_metrics, sample_surface_points
from poseless.evaluate.voxelize import voxelize_mesh


def blob_sdf(p: torch.Tensor) -> torch.Tensor:
    """An asymmetric blob: an ellipsoid unioned with a smaller offset sphere (approximate SDF)."""
    e = (p / torch.tensor([0.4, 0.2, 0.25])).norm(dim=-1) - 1.0
    s = (p - torch.tensor([0.25, 0.15, 0.1])).norm(dim=-1) / 0.15 - 1.0
    return torch.minimum(e * 0.2, s * 0.15)


def timed(fn, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times)), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3, help="calls per measurement (median)")
    ap.add_argument("--resolution", type=int, default=101, help="SDF grid resolution")
    ap.add_argument("--n-points", type=int, default=10_000, help="surface points per mesh")
    args = ap.parse_args()

    out = {"torch_threads": torch.get_num_threads()}
    settings = ExtractSettings(resolution=args.resolution)
    out["extract_mesh_s"], mesh = timed(lambda: extract_mesh(blob_sdf, settings), args.repeats)
    out["mesh_faces"] = len(mesh.faces)
    out["voxelize_32_s"], _ = timed(lambda: voxelize_mesh(mesh.vertices, mesh.faces), args.repeats)
    for n in (args.n_points, 100_000):
        a = sample_surface_points(mesh.vertices, mesh.faces, n, 0)
        b = sample_surface_points(mesh.vertices, mesh.faces, n, 1)
        out[f"point_metrics_{n}_s"], _ = timed(lambda a=a, b=b: point_metrics(a, b), args.repeats)

    rot = rotation_y(math.radians(35))
    gv = mesh.vertices @ rot.T
    gt = GTShape(vertices=gv, faces=mesh.faces, voxels=voxelize_mesh(gv, mesh.faces), R=np.eye(3))
    pred = PredShape(mesh.vertices, mesh.faces, R=rot)  # the view of the GT from its predicted pose
    es = EvalSettings(n_points=args.n_points)
    al = global_alignment(math.radians(35))
    for protocol in ("azimuth_search", "global", "view_centric", "icp"):
        t, res = timed(lambda p=protocol: evaluate_protocol(pred, gt, p, es, al), args.repeats)
        out[f"{protocol}_s"] = t
        out[f"{protocol}_metrics"] = {k: round(v, 6) for k, v in res.metrics.items()}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()

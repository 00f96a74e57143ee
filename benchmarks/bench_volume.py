"""Throughput of the SDF volume renderer with ShapeClipper's fields.

One training step as ShapeClipper takes it: B images x R rays, S samples per
ray, SDF MLP with grad sdf (create_graph, for the normal loss), colour MLP,
compositing, eikonal term on B*R uniform points plus one sample per ray, a loss
on RGB / mask / normals / eikonal, and the backward pass into both MLPs, the
codes and beta. Also the no-grad evaluation rendering (with normals).

Two paths: ``new`` (the defaults: grad sdf from ``SDFNetwork.with_gradient``,
the gradient written out as ordinary ops, and field evaluation in chunks of
``chunk_points`` points) and ``old`` (``torch.autograd.grad(create_graph=True)``
then double backward, all points at once; ``analytic_gradient=False``,
``chunk_points=0``). Both compute the same values.

    .venv/bin/python benchmarks/bench_volume.py                      # CPU, both paths
    .venv/bin/python benchmarks/bench_volume.py --threads 1 2 --paths new
    .venv/bin/python benchmarks/bench_volume.py --device cuda        # GPU when present

Prints one JSON object per configuration (with the 1-minute load average, since
the CPU may be shared: repeat and take the best) and a small table.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time

import torch
from torch.nn import functional as F

from poseless.geometry import cameras
from poseless.models.sdf import SDFField, SDFFieldSettings
from poseless.render.rays import pixel_rays
from poseless.render.volume import (
    VolumeRenderer,
    VolumeRenderSettings,
    eikonal_loss,
)
from poseless.utils import select_device


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def render_settings(path: str, samples: int) -> VolumeRenderSettings:
    """Settings of the ``new`` (defaults) or ``old`` (autograd, unchunked) path."""
    if path == "new":
        return VolumeRenderSettings(n_samples=samples)
    if path == "old":
        return VolumeRenderSettings(n_samples=samples, analytic_gradient=False, chunk_points=0)
    raise ValueError(f"--paths: unknown path {path!r} (old or new)")


def _setup(
    batch: int, rays: int, samples: int, device: torch.device, seed: int = 0, path: str = "new"
):
    torch.manual_seed(seed)
    field = SDFField(SDFFieldSettings()).to(device)
    renderer = VolumeRenderer(render_settings(path, samples)).to(device)
    g = torch.Generator().manual_seed(seed)
    azimuth = torch.rand(batch, generator=g) * 2 * math.pi
    R, t = cameras.kato_extrinsics(azimuth, distance=5.0)
    size = 224
    pix = torch.stack([torch.randperm(size * size, generator=g)[:rays] for _ in range(batch)])
    tan_half = 1.0 / 8.0  # ShapeClipper: focal 4 W -> tan(fov / 2) = 1 / 8
    origins, dirs = pixel_rays(R, t, tan_half, pix, size, size)
    shape_code = torch.randn(batch, 64, generator=g).to(device).requires_grad_()
    color_code = torch.randn(batch, 64, generator=g).to(device).requires_grad_()
    target_rgb = torch.rand(batch, rays, 3, generator=g).to(device)
    target_mask = (torch.rand(batch, rays, generator=g) > 0.5).float().to(device)
    target_n = F.normalize(torch.randn(batch, rays, 3, generator=g), dim=-1).to(device)
    return (
        field,
        renderer,
        origins.to(device),
        dirs.to(device),
        shape_code,
        color_code,
        (target_rgb, target_mask, target_n),
    )


def train_step(field, renderer, origins, dirs, shape_code, color_code, targets, generator):
    """One forward + backward; returns the loss value."""
    target_rgb, target_mask, target_n = targets
    batch, rays = origins.shape[:2]
    out = renderer(
        field.sdf_fn(shape_code),
        origins,
        dirs,
        training=True,
        color_fn=field.color_fn(color_code),
        generator=generator,
    )
    eik_points = torch.cat(
        [
            renderer.uniform_eikonal_points(batch, rays, generator=generator),
            out.eikonal_points,
        ],
        dim=1,
    )
    loss = (
        F.mse_loss(out.rgb, target_rgb)
        + 0.5 * F.mse_loss(out.mask, target_mask)
        + 0.01 * (1 - (out.normals * target_n).sum(-1)).mean()
        + 0.03
        * eikonal_loss(
            field.sdf_fn(shape_code.detach()),
            eik_points,
            analytic=renderer.settings.analytic_gradient,
        )
    )
    field.zero_grad(set_to_none=True)
    renderer.zero_grad(set_to_none=True)
    loss.backward()
    return float(loss.detach())


def bench(batch, rays, samples, device, repeats, warmup, path):
    field, renderer, origins, dirs, shape_code, color_code, targets = _setup(
        batch, rays, samples, device, path=path
    )
    generator = torch.Generator(device=device).manual_seed(0)
    for _ in range(warmup):
        train_step(field, renderer, origins, dirs, shape_code, color_code, targets, generator)
    _sync(device)
    times, cpu_times = [], []
    for _ in range(repeats):
        start, cpu_start = time.perf_counter(), time.process_time()
        train_step(field, renderer, origins, dirs, shape_code, color_code, targets, generator)
        _sync(device)
        times.append(time.perf_counter() - start)
        cpu_times.append(time.process_time() - cpu_start)
    train_s = min(times)
    eval_times = []
    with torch.no_grad():
        renderer.render_chunked(field.sdf_fn(shape_code), origins, dirs, field.color_fn(color_code))
        for _ in range(max(1, repeats - 1)):
            _sync(device)
            start = time.perf_counter()
            renderer.render_chunked(
                field.sdf_fn(shape_code), origins, dirs, field.color_fn(color_code)
            )
            _sync(device)
            eval_times.append(time.perf_counter() - start)
    n = batch * rays
    result = {
        "path": path,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "batch": batch,
        "rays_per_image": rays,
        "samples": samples,
        "train_step_s": round(train_s, 4),
        "train_step_cpu_s": round(min(cpu_times), 4),
        "train_rays_per_s": round(n / train_s, 1),
        "eval_rays_per_s": round(n / min(eval_times), 1),
        "load_avg_1min": round(os.getloadavg()[0], 2),
    }
    if device.type == "cuda":
        result["peak_mem_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    return result


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu, cuda, or auto")
    parser.add_argument(
        "--configs",
        nargs="+",
        default=["12x512", "12x128"],
        help="BxR batch configurations (images x rays per image; ShapeClipper trains 12x512)",
    )
    parser.add_argument(
        "--paths", nargs="+", default=["old", "new"], help="old (autograd) and/or new"
    )
    parser.add_argument("--samples", type=int, default=64, help="samples per ray")
    parser.add_argument("--repeats", type=int, default=3, help="timed steps (best is reported)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    parser.add_argument(
        "--threads", type=int, nargs="+", default=[0], help="torch CPU threads (0: default)"
    )
    args = parser.parse_args(argv)
    device = select_device(args.device)
    default_threads = torch.get_num_threads()
    rows = []
    for threads in args.threads:
        torch.set_num_threads(threads or default_threads)
        for config in args.configs:
            batch, rays = (int(v) for v in config.lower().split("x"))
            for path in args.paths:
                row = bench(batch, rays, args.samples, device, args.repeats, args.warmup, path)
                print(json.dumps(row), flush=True)
                rows.append(row)
    print(
        f"\n{'config':>8} {'path':>4} {'thr':>3} {'step s':>8} {'train rays/s':>13} "
        f"{'eval rays/s':>12} {'load':>5}  ({device})"
    )
    for row in rows:
        config = f"{row['batch']}x{row['rays_per_image']}"
        print(
            f"{config:>8} {row['path']:>4} {row['threads']:>3} {row['train_step_s']:>8.3f} "
            f"{row['train_rays_per_s']:>13.0f} {row['eval_rays_per_s']:>12.0f} "
            f"{row['load_avg_1min']:>5.2f}"
        )


if __name__ == "__main__":
    main()

"""Seconds per iteration of URA stage (a) (``poseless.train.gan.train_gan``).

Runs ``--iterations`` GAN iterations (D every iteration, G every 3rd) on random
box silhouettes in a temporary directory, after ``--warmup`` iterations that are
not timed, and prints a JSON object with the mean seconds per iteration and the
projected hours for the paper's 500k iterations.

    .venv/bin/python benchmarks/bench_train_gan.py --device cpu --batch-size 32 --image-size 64
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time

import torch

from poseless.config import TrainGanConfig
from poseless.train.gan import LookAtCamera, train_gan
from poseless.utils import select_device


def box_masks(n: int, size: int, seed: int) -> torch.Tensor:
    """(n, 1, size, size) float boxes of random extent, centred."""
    g = torch.Generator().manual_seed(seed)
    masks = torch.zeros(n, 1, size, size)
    c = size // 2
    for i in range(n):
        h, w = (int(v) for v in torch.randint(size // 8, size // 2 - 1, (2,), generator=g))
        masks[i, :, c - h : c + h, c - w : c + w] = 1.0
    return masks


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--iterations", type=int, default=6)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--mixed-precision", default="off", choices=["off", "bf16", "fp16"])
    args = ap.parse_args()
    device = select_device(args.device)
    masks = box_masks(256, args.image_size, 0)
    cfg = TrainGanConfig(
        iterations=args.warmup,
        batch_size=args.batch_size,
        log_every=10**9,
        checkpoint_every=10**9,
        image_size=args.image_size,
        mixed_precision=args.mixed_precision,
        progress=False,
        n_samples=0,
    )
    camera = LookAtCamera(30.0, 2.732, 30.0)
    with tempfile.TemporaryDirectory() as tmp:
        out, resume = f"{tmp}/out", f"{tmp}/resume"
        kw = {"seed": 0, "camera": camera, "device": device}
        train_gan(masks, cfg, out, resume, **kw)  # warm-up (and the first checkpoint)
        # Timed between the step hooks of steps warmup and warmup + iterations, so the
        # final weights/figures writing is not counted.
        total = args.warmup + args.iterations + 1
        marks = {}

        def hook(step: int) -> None:
            if step in (args.warmup, args.warmup + args.iterations):
                if device.type == "cuda":
                    torch.cuda.synchronize()
                marks[step] = time.perf_counter()

        cfg = dataclasses.replace(cfg, iterations=total)
        train_gan(masks, cfg, out, resume, step_hook=hook, **kw)
        seconds = (marks[args.warmup + args.iterations] - marks[args.warmup]) / args.iterations
    print(
        json.dumps(
            {
                "device": str(device),
                "batch_size": args.batch_size,
                "image_size": args.image_size,
                "mixed_precision": args.mixed_precision,
                "iterations_timed": args.iterations,
                "s_per_iteration": round(seconds, 4),
                "hours_for_500k": round(seconds * 500_000 / 3600, 1),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()

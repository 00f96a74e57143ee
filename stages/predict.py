"""Reconstruct a folder of new images with a trained reconstructor (user-facing; not a workflow stage).

    python stages/predict.py --model data/recon/ura/seed0 --images DIR [--masks DIR] --out DIR

Images are RGBA PNGs or image + ``<name>_mask`` pairs (or masks named like the
images in ``--masks``), prepared like ``prepare_data`` (crop around the mask,
resize to the model's size, composite on white). Writes ``<id>.obj``,
``<id>.glb`` and a turntable ``<id>.gif`` per image, ``predictions.csv``, and
``rejected.csv`` listing unusable images with the reason (also on stderr).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tqdm import tqdm

from poseless.cli import run_stage
from poseless.predict import predict_inputs, prepare_inputs, settings_for_model, write_tables


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--model", required=True, help="train_recon output folder")
    parser.add_argument("--images", required=True, help="folder of images (searched recursively)")
    parser.add_argument(
        "--masks", default=None, help="optional folder of masks named like the images"
    )
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1")
    parser.add_argument("--crop", choices=("bbox", "none"), default=None, help="default: bbox")
    parser.add_argument("--margin", type=float, default=None, help="crop margin (default 0.3)")
    parser.add_argument("--turntable-frames", type=int, default=None, help="GIF frames (0: none)")
    parser.add_argument("--render-size", type=int, default=None, help="GIF side in pixels")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)

    from poseless.train.recon import load_reconstructor
    from poseless.utils import select_device

    if not (Path(args.model) / "model.json").is_file():
        raise FileNotFoundError(f"--model {args.model}: no trained model (model.json) there")
    recon = load_reconstructor(args.model, select_device(args.device))
    settings = settings_for_model(
        recon,
        crop=args.crop,
        margin=args.margin,
        turntable_frames=args.turntable_frames,
        render_size=args.render_size,
    )
    inputs, rejected = prepare_inputs(args.images, args.masks, settings)
    for r in rejected:
        print(f"rejected {r.source}: {r.reason}", file=sys.stderr)
    bar = None if args.no_progress else (lambda it: tqdm(it, desc="predict", unit="batch"))
    rows = predict_inputs(recon, inputs, args.out, settings, bar)
    write_tables(args.out, rows, rejected)
    print(f"predict: {len(rows)} reconstructed, {len(rejected)} rejected -> {args.out}")


if __name__ == "__main__":
    run_stage(main)

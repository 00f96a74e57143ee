"""URA stage (a): train the pose-independent mesh GAN on the train split's masks.

Output folder (written atomically: a temporary folder next to ``--out``, renamed
at the end): ``generator.safetensors`` + ``discriminator.safetensors`` with JSON
sidecars, ``metrics.jsonl`` (+ ``curves.csv``, DVC plots), ``curves.png``, ``samples.png``, ``health.json``,
``config.yaml``. ``--metrics`` gets the health statistics (DVC metrics).
Checkpoints live in ``--resume-dir`` (outside the declared output), so a killed
run resumes. When a health check fails and ``train_gan.health.fail_on_collapse``
is true, the stage writes ``--metrics`` and a copy of health.json / samples.png /
curves.png into the resume folder, then exits 2 with advice; ``--out`` is not written.
"""

from __future__ import annotations

import logging
import shutil

from poseless.cli import run_stage, stage_parser, write_provenance
from poseless.config import load_params, to_dict
from poseless.data.prepared import PreparedDataset
from poseless.geometry.cameras import resolve_render_camera
from poseless.train.gan import (
    last_losses,
    load_train_masks,
    raster_settings,
    train_gan,
)
from poseless.train.gan_health import evaluate_gan_health, raise_if_unhealthy
from poseless.train.metrics_log import CURVES_FILE, read_metrics, write_curves_csv
from poseless.utils import atomic_path, seed_everything, write_json_atomic

PARAMS = ("seed", "train_gan")
STAGE = "train_gan"
INSPECT = ("health.json", "samples.png", "curves.png")


def main(argv=None, step_hook=None):
    parser = stage_parser(__doc__)
    parser.add_argument("--dataset", default="data/prepared", help="prepared dataset folder")
    parser.add_argument("--out", default="data/gan", help="output folder")
    parser.add_argument(
        "--resume-dir", default="data/.resume/train_gan", help="resumable checkpoints"
    )
    parser.add_argument(
        "--metrics", default="data/metrics/train_gan.json", help="DVC metrics (health checks)"
    )
    args = parser.parse_args(argv)
    params = load_params(args.params, sections=PARAMS)
    cfg = params.train_gan
    seed_everything(params.seed)
    dataset = PreparedDataset(args.dataset)
    masks = load_train_masks(dataset, cfg.image_size, binarize=cfg.binarize_real)
    camera = resolve_render_camera(cfg, dataset.meta)
    with atomic_path(args.out) as tmp:
        result = train_gan(
            masks,
            cfg,
            tmp,
            args.resume_dir,
            seed=params.seed,
            camera=camera,
            device=args.device,
            step_hook=step_hook,
        )
        health = evaluate_gan_health(
            result.generator,
            masks,
            cfg.health,
            camera=camera,
            raster=raster_settings(cfg, camera),
            azimuth_range_deg=cfg.azimuth_range_deg,
            seed=params.seed,
        )
        report = health.to_dict()
        write_json_atomic(tmp / "health.json", report)
        losses = last_losses(read_metrics(result.metrics_path))
        write_json_atomic(
            args.metrics, {**report, "iterations": result.steps, "last_losses": losses}
        )
        extra = {"n_train_masks": int(masks.shape[0]), "camera": to_dict(camera)}
        write_provenance(tmp, STAGE, params.to_dict(), extra)
        write_curves_csv(tmp / CURVES_FILE, read_metrics(result.metrics_path))  # DVC plots
        inspect = result.run_dir / "inspect"
        inspect.mkdir(parents=True, exist_ok=True)
        for name in INSPECT:
            if (tmp / name).is_file():
                shutil.copyfile(tmp / name, inspect / name)
        if cfg.health.fail_on_collapse:
            raise_if_unhealthy(health, f"{inspect}/ ({', '.join(INSPECT)}) and {args.metrics}")
        for check in health.failed:
            logging.getLogger(STAGE).warning("health check failed: %s", check.describe())
    logging.getLogger(STAGE).info(
        "%d iterations, health %s -> %s",
        result.steps,
        "passed" if health.passed else "FAILED",
        args.out,
    )


if __name__ == "__main__":
    run_stage(main)

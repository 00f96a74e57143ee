"""URA stage (a): train the pose-independent mesh GAN on the train split's masks.

One generator per category of the train split (``train_gan.per_category``, URA
trains one model per category), or one for all (group ``all``); see
:mod:`poseless.train.groups`. Output folder (written atomically: a temporary
folder next to ``--out``, renamed at the end): ``groups.json``, ``config.yaml``
and per group ``<group>/``: ``generator.safetensors`` + ``discriminator.safetensors``
with JSON sidecars, ``metrics.jsonl`` (+ ``curves.csv``, DVC plots),
``curves.png``, ``samples.png``, ``health.json``. ``--metrics`` gets each
group's health statistics (DVC metrics). Checkpoints live in
``--resume-dir/<group>`` (outside the declared output), so a killed run resumes.
When a health check fails and ``train_gan.health.fail_on_collapse`` is true, the
stage writes ``--metrics`` and a copy of health.json / samples.png / curves.png
into the resume folder, then exits 2 with advice; ``--out`` is not written.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

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
from poseless.train.groups import make_groups, write_groups
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
    train_ids = dataset.ids("train")
    groups = make_groups((dataset.row(i)["category"] for i in train_ids), cfg.per_category)
    camera = resolve_render_camera(cfg, dataset.meta)
    log = logging.getLogger(STAGE)
    metrics: dict = {}
    healths = {}
    with atomic_path(args.out) as tmp:
        tmp.mkdir(parents=True, exist_ok=True)
        for group in groups.names:
            category = group if groups.per_category else None
            masks = load_train_masks(dataset, cfg.image_size, cfg.binarize_real, category)
            out = tmp / group
            log.info("group %s: %d training masks", group, masks.shape[0])
            result = train_gan(
                masks,
                cfg,
                out,
                Path(args.resume_dir) / group,
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
            inspect = result.run_dir / "inspect"
            healths[group] = (health, inspect)
            report = health.to_dict()
            write_json_atomic(out / "health.json", report)
            records = read_metrics(result.metrics_path)
            write_curves_csv(out / CURVES_FILE, records)  # DVC plots
            metrics[group] = {
                **report,
                "iterations": result.steps,
                "n_train_masks": int(masks.shape[0]),
                "last_losses": last_losses(records),
            }
            inspect.mkdir(parents=True, exist_ok=True)
            for name in INSPECT:
                if (out / name).is_file():
                    shutil.copyfile(out / name, inspect / name)
        write_json_atomic(args.metrics, metrics)
        write_groups(tmp, groups)
        extra = {
            "groups": list(groups.names),
            "n_train_masks": {g: m["n_train_masks"] for g, m in metrics.items()},
            "camera": to_dict(camera),
        }
        write_provenance(tmp, STAGE, params.to_dict(), extra)
        if cfg.health.fail_on_collapse:
            for group, (health, inspect) in healths.items():
                raise_if_unhealthy(
                    health, f"{inspect}/ ({', '.join(INSPECT)}) and {args.metrics} [{group}]"
                )
        for group, (health, _) in healths.items():
            for check in health.failed:
                log.warning("group %s: health check failed: %s", group, check.describe())
    log.info(
        "%s -> %s",
        ", ".join(
            f"{g}: {metrics[g]['iterations']} iterations, health "
            + ("passed" if h.passed else "FAILED")
            for g, (h, _) in healths.items()
        ),
        args.out,
    )


if __name__ == "__main__":
    run_stage(main)

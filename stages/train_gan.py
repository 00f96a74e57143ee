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
from pathlib import Path

from poseless.cli import run_stage, stage_parser, write_provenance
from poseless.config import load_params, to_dict
from poseless.data.prepared import PreparedDataset
from poseless.geometry.cameras import resolve_render_camera
from poseless.train.gan_group import INSPECT, train_group
from poseless.train.gan_health import raise_if_unhealthy
from poseless.train.groups import make_groups, map_groups, write_groups
from poseless.utils import atomic_path, seed_everything, write_json_atomic

PARAMS = ("seed", "train_gan")
STAGE = "train_gan"


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
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="train up to this many groups side by side, one process each (the job's threads)",
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
    with atomic_path(args.out) as tmp:
        tmp.mkdir(parents=True, exist_ok=True)
        results = map_groups(
            train_group,
            groups.names,
            1 if step_hook else args.workers,
            dataset_dir=args.dataset,
            per_category=groups.per_category,
            cfg=cfg,
            out_root=tmp,
            resume_root=Path(args.resume_dir),
            seed=params.seed,
            camera=camera,
            device=args.device,
            step_hook=step_hook,
        )
        healths = {g: (health, inspect) for g, (health, _, inspect) in results.items()}
        metrics = {g: entry for g, (_, entry, _) in results.items()}
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

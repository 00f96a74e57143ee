"""Stage train_pose: URA's pseudo pose regressor, trained on renders of the frozen GAN.

One regressor per generator group of ``--gan`` (:mod:`poseless.train.groups`):
reads ``--gan``/groups.json, each ``<group>/generator.safetensors`` (+
generator.json) and the prepared dataset's meta.json (its camera, when
recorded). Writes ``--out`` atomically (built in a temporary folder next to it,
then renamed): groups.json, config.yaml and per group ``<group>/``:
regressor.safetensors + regressor.json, metrics.jsonl (+ curves.csv, DVC plots),
samples.png, config.yaml. Resumable checkpoints live in ``--resume-dir/<group>``
(outside ``--out``: Snakemake deletes declared outputs before a rerun); a killed
run continues from the last one.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

from poseless.cli import run_stage, stage_parser, write_provenance
from poseless.config import load_params
from poseless.data.prepared import DatasetError
from poseless.geometry.cameras import resolve_render_camera
from poseless.train.groups import map_groups, read_groups, write_groups
from poseless.train.pose import gan_camera_mismatch, train_group
from poseless.utils import atomic_path

PARAMS = ("seed", "train_pose")
STAGE = "train_pose"


def main(argv: list[str] | None = None, step_hook=None) -> None:
    parser = stage_parser(__doc__)
    parser.add_argument("--gan", default="data/gan", help="train_gan output folder")
    parser.add_argument("--dataset", default="data/prepared", help="prepared dataset folder")
    parser.add_argument("--out", default="data/pose", help="output folder")
    parser.add_argument(
        "--resume-dir", default="data/.resume/train_pose", help="resumable checkpoints"
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="train up to this many groups side by side, one process each (the job's threads)",
    )
    args = parser.parse_args(argv)
    params = load_params(args.params, sections=PARAMS)
    cfg = params.train_pose
    meta_path = Path(args.dataset) / "meta.json"
    if not meta_path.is_file():
        raise DatasetError(f"{meta_path}: missing; run the prepare_data stage first")
    camera = resolve_render_camera(cfg, json.loads(meta_path.read_text()))
    groups = read_groups(args.gan, "train_gan")
    mismatch = gan_camera_mismatch(args.gan, camera)
    if mismatch:
        logging.getLogger(STAGE).warning(mismatch)
    with atomic_path(args.out) as tmp:
        tmp.mkdir(parents=True, exist_ok=True)
        steps = map_groups(
            train_group,
            groups.names,
            1 if step_hook else args.workers,
            gan_root=Path(args.gan),
            cfg=cfg,
            config=params.to_dict(),
            out_root=tmp,
            resume_root=Path(args.resume_dir),
            seed=params.seed,
            camera=camera,
            device=args.device,
            step_hook=step_hook,
        )
        write_groups(tmp, groups)
        write_provenance(tmp, STAGE, params.to_dict(), {"groups": list(groups.names)})
    summary = ", ".join(
        f"{g}: {n} iterations, last batch error {err:.1f} deg" for g, (n, err) in steps.items()
    )
    print(f"{STAGE}: {summary} -> {args.out}", file=sys.stderr)


if __name__ == "__main__":
    run_stage(main)

"""Stage train_recon: train one experiment's single-view reconstructor for one seed.

Reads the train split of the prepared dataset (and, where the experiment uses
them, the predict_poses table ``--poses``, the build_knn folder ``--knn`` and the
estimate_normals folder ``--normals``), trains the representation the experiment names, and
writes the whole ``--out`` folder atomically (built next to it, renamed at the
end): ``model.safetensors`` + ``model.json``, ``metrics.jsonl`` (+ ``curves.csv``), ``renders.png``,
``config.yaml``. Checkpoints go to ``--resume-dir``, outside ``--out`` because
Snakemake deletes declared outputs before rerunning a job; a killed run started
again with the same arguments continues from the newest checkpoint (a changed
config is refused; delete the resume folder to start over). The resume folder is
removed once the output is complete, so a later rerun trains afresh.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from poseless.cli import run_stage, stage_parser, write_provenance
from poseless.config import ConfigError, load_params, to_dict
from poseless.data.prepared import PreparedDataset
from poseless.train.metrics_log import CURVES_FILE, read_metrics, write_curves_csv
from poseless.train.recon import (
    derive_seed,
    get_backend,
    load_recon_data,
    remove_resume_dir,
    train_recon,
)
from poseless.utils import atomic_path

PARAMS = ("seed", "train_recon")
STAGE = "train_recon"


def main(argv: list[str] | None = None) -> None:
    parser = stage_parser(__doc__)
    parser.add_argument("--experiment", required=True, help="experiment name (train_recon.run)")
    parser.add_argument("--seed", type=int, default=0, help="run seed, combined with params' seed")
    parser.add_argument("--dataset", default="data/prepared", help="prepared dataset folder")
    parser.add_argument("--poses", default=None, help="predict_poses parquet (pseudo-pose runs)")
    parser.add_argument("--knn", default=None, help="build_knn folder (experiments with SSC)")
    parser.add_argument(
        "--normals", default=None, help="estimate_normals folder (experiments with normal losses)"
    )
    parser.add_argument("--out", required=True, help="output folder, e.g. data/recon/ura/seed0")
    parser.add_argument(
        "--resume-dir",
        default=None,
        help="checkpoint folder outside --out (default: .<out name>.resume next to --out)",
    )
    args = parser.parse_args(argv)
    cfg = load_params(args.params, sections=PARAMS)
    try:
        settings = cfg.train_recon.resolve(args.experiment)
    except ValueError as exc:
        raise ConfigError(f"{args.params}: --experiment {args.experiment}: {exc}") from None
    out = Path(args.out)
    resume_dir = Path(args.resume_dir or out.parent / f".{out.name}.resume")
    seed = derive_seed(cfg.seed, args.seed)
    dataset = PreparedDataset(args.dataset)
    backend = get_backend(settings.representation)
    data = load_recon_data(
        dataset,
        settings,
        args.poses,
        needs_camera=backend.needs_camera,
        knn=args.knn,
        normals=args.normals,
    )
    logging.getLogger("poseless").info(
        "train_recon %s seed %d: %d training items, resume folder %s",
        args.experiment,
        args.seed,
        len(data),
        resume_dir,
    )
    with atomic_path(out) as tmp:
        tmp.mkdir()
        result = train_recon(data, settings, seed, tmp, resume_dir, args.device)
        provenance = {
            "seed": cfg.seed,
            "experiment": args.experiment,
            "run_seed": args.seed,
            "train_seed": seed,
            "settings": to_dict(settings),
        }
        extra = {
            "encoder_weights": result.encoder_info,
            "n_train": len(data),
            "image_size": data.image_size,
            "camera": to_dict(data.camera) if data.camera is not None else None,
            "steps": result.steps,
        }
        write_provenance(tmp, STAGE, provenance, extra)
        write_curves_csv(tmp / CURVES_FILE, read_metrics(result.metrics_path))  # DVC plots
    remove_resume_dir(resume_dir)
    print(
        f"train_recon: {args.experiment} seed {args.seed}: {result.steps} iterations "
        f"(resumed from {result.resumed_from}) -> {out}",
        file=sys.stderr,
    )


if __name__ == "__main__":
    run_stage(main)

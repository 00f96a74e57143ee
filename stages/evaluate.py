"""Stage evaluate: score one experiment's reconstructions of the test split under every protocol.

Inputs: the prepared dataset and either a ``train_recon`` folder (``--recon``) or a
folder of meshes named by item id from any other method (``--meshes``, see
``poseless.evaluate.external``). The ``global`` rotation is fitted on validation
predictions. Output folder (written atomically): ``per_item.csv``,
``summary.json`` (per category and overall; ``n_empty`` next to Chamfer means),
``alignments.json``, ``samples.json`` + ``meshes/<id>.obj`` (report samples),
``config.yaml``; and the flat DVC metrics file ``--metrics``.
"""

from __future__ import annotations

import logging
from pathlib import Path

from tqdm import tqdm

from poseless.cli import run_stage, stage_parser, write_provenance
from poseless.config import load_params
from poseless.data.prepared import DatasetError, PreparedDataset
from poseless.evaluate import harness as H
from poseless.evaluate.external import load_external_predictions
from poseless.utils import atomic_path, write_json_atomic

PARAMS = ("seed", "evaluate")
STAGE = "evaluate"
log = logging.getLogger("poseless")


def _val_ids(dataset: PreparedDataset, per_category: int) -> list[str]:
    ids = dataset.ids("val")
    if not per_category:
        return ids
    cats = dataset.manifest.set_index("id").loc[ids, "category"]
    return [i for i, rank in zip(ids, cats.groupby(cats).cumcount()) if rank < per_category]


def main(argv=None):
    parser = stage_parser(__doc__)
    parser.add_argument("--dataset", required=True, help="prepared dataset folder")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--recon", help="train_recon output folder (data/recon/<exp>/seed<k>)")
    source.add_argument("--meshes", help="folder of <item id>.obj/.ply/.glb from another method")
    parser.add_argument("--out", required=True, help="output folder (data/eval/<exp>/seed<k>)")
    parser.add_argument("--metrics", required=True, help="flat DVC metrics JSON file")
    args = parser.parse_args(argv)
    cfg = load_params(args.params, sections=PARAMS)
    ec = cfg.evaluate
    dataset = PreparedDataset(args.dataset)
    ids = dataset.ids(ec.split)[: ec.n_items or None]
    if not ids:
        raise DatasetError(f"{args.dataset}: no items in split {ec.split!r} to evaluate")
    val_ids = _val_ids(dataset, ec.global_fit_items) if "global" in ec.protocols else []

    if args.recon is not None:
        from poseless.train.recon import load_reconstructor
        from poseless.utils import select_device

        if not (Path(args.recon) / "model.json").is_file():
            raise FileNotFoundError(
                f"--recon {args.recon}: no trained model (model.json) there; run train_recon first"
            )
        recon = load_reconstructor(args.recon, select_device(args.device))
        configure = getattr(recon, "set_extract_settings", None)
        if configure is not None:  # SDF models mesh their field on this grid
            configure(H.extract_settings(ec))
        source = {"recon": str(args.recon), "representation": getattr(recon, "representation", "")}

        def predict(which, desc):
            return H.reconstruct(
                recon, dataset, which, ec.batch_size, lambda it: tqdm(it, desc=desc)
            )
    else:
        source = {"meshes": str(args.meshes)}

        def predict(which, desc):
            return load_external_predictions(args.meshes, which)

    preds = predict(ids, "reconstruct test")
    truths = H.load_truths(dataset, ids, ec.gt_voxels)
    settings = H.eval_settings(ec, cfg.seed)
    alignments, reasons = {}, {}
    if val_ids:
        val_truths = H.load_truths(dataset, val_ids, ec.gt_voxels)
        alignments, reasons = H.fit_global_alignments(
            predict(val_ids, "reconstruct val"),
            val_truths,
            ec.global_criterion,
            settings,
            ec.global_per_category,
            ec.workers,
        )
    elif "global" in ec.protocols:
        reasons = {H.ALL_CATEGORIES: "no validation items to fit the global rotation"}
    results = H.evaluate_items(
        preds, truths, ec.protocols, settings, alignments, reasons, ec.workers
    )
    pose = H.pose_errors(preds, truths)
    summary = H.summarize(results, pose, ec.pose_thresholds_deg)
    summary["source"] = source
    summary["global_alignments"] = {k: a.to_dict() for k, a in sorted(alignments.items())}
    for r in results:
        if r.error:
            log.warning("%s: %s", r.id, r.error)

    with atomic_path(args.out) as tmp:
        tmp.mkdir()
        H.write_evaluation(tmp, preds, truths, results, summary, pose, alignments, ec.sample_meshes)
        write_provenance(tmp, STAGE, cfg.to_dict(), {**source, "n_items": len(ids)})
    write_json_atomic(args.metrics, H.flat_metrics(summary))
    over = summary["overall"]
    log.info("evaluate: %d items (%d empty) -> %s", over["n_items"], over["n_empty"], args.out)


if __name__ == "__main__":
    run_stage(main)

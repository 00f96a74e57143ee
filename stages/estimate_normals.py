"""Camera-frame normal map per prepared image (Omnidata DPT-Hybrid or dataset GT).

Output folder: ``normals.npy`` (N, 3, H, W) float16 unit normals in the OpenCV
camera frame (x right, y down, z forward), zero off the mask; ``ids.txt`` (row
order); ``contact_sheet.png`` (image | normals); ``metrics.json``;
``config.yaml``. A killed run resumes from ``.<out>.partial``.
"""

from __future__ import annotations

import numpy as np
import torch

from poseless.cli import run_stage, stage_parser, write_provenance
from poseless.config import load_params
from poseless.data.prepared import DatasetError, PreparedDataset
from poseless.features.normals import (
    build_omnidata_model,
    contact_sheet,
    dataset_normals,
    normals_metrics,
    predict_normals,
)
from poseless.features.stream import ArrayStream, composite_on_white, fingerprint, run_batches
from poseless.utils import file_sha256, seed_everything, select_device, write_json_atomic

PARAMS = ("seed", "estimate_normals")
STAGE = "estimate_normals"


def main(argv=None, on_batch=None):
    parser = stage_parser(__doc__)
    parser.add_argument("--dataset", required=True, help="prepared dataset folder")
    parser.add_argument("--out", required=True, help="output folder")
    args = parser.parse_args(argv)
    cfg = load_params(args.params, sections=PARAMS)
    nc = cfg.estimate_normals
    seed_everything(cfg.seed)
    dataset = PreparedDataset(args.dataset)
    ids = dataset.ids()
    if not ids:
        raise DatasetError(f"{args.dataset}: the dataset has no items")
    background = dataset.meta.get("background", [1.0, 1.0, 1.0])
    s = dataset.image_size
    if nc.backend == "omnidata":
        model = build_omnidata_model(nc.checkpoint, select_device(args.device))
        weights = {"checkpoint_sha256": file_sha256(nc.checkpoint)}

        def compute(b):
            white = composite_on_white(b.images, b.masks, background)
            return predict_normals(model, white, b.masks, nc.input_size, nc.axis_signs).numpy()

    else:
        weights = {}

        def compute(b):
            return dataset_normals(dataset, b.ids, b.masks, nc, cfg.seed).numpy()

    key = fingerprint(cfg.to_dict(), ids, weights, background)
    stream = ArrayStream(args.out, "normals.npy", ids, (3, s, s), "float16", key)
    run_batches(stream, dataset, compute, nc.batch_size, desc=STAGE, on_batch=on_batch)

    normals = stream.array
    shown = ids[: nc.contact_sheet_items]
    if shown:
        b = dataset.load(shown)
        white = composite_on_white(b.images, b.masks, background)
        contact_sheet(
            white,
            torch.from_numpy(np.asarray(normals[: len(shown)], np.float32)),
            b.masks,
            stream.dir / "contact_sheet.png",
        )
    write_json_atomic(
        stream.dir / "metrics.json",
        {**normals_metrics(normals, dataset, ids), "backend": nc.backend, **weights},
    )
    write_provenance(stream.dir, STAGE, cfg.to_dict(), {"n_items": len(ids), **weights})
    stream.finalize()


if __name__ == "__main__":
    run_stage(main)

"""Embed every prepared image (CLIP / HOG / oracle) into embeddings.npy + ids.txt.

Output folder: ``embeddings.npy`` (N, D) float16 L2-normalised rows, ``ids.txt``
(row order), ``encoder.json`` (what ran), ``config.yaml``. A killed run resumes
from ``.<out>.partial`` at the last finished batch.
"""

from __future__ import annotations

from poseless.cli import run_stage, stage_parser, write_provenance
from poseless.config import load_params
from poseless.data.prepared import DatasetError, PreparedDataset
from poseless.features.clip import create_encoder, embed_batch, encoder_record
from poseless.features.stream import ArrayStream, fingerprint, run_batches
from poseless.utils import seed_everything, select_device, write_json_atomic

PARAMS = ("seed", "embed_images")
STAGE = "embed_images"


def main(argv=None, on_batch=None):
    parser = stage_parser(__doc__)
    parser.add_argument("--dataset", required=True, help="prepared dataset folder")
    parser.add_argument("--out", required=True, help="output folder")
    args = parser.parse_args(argv)
    cfg = load_params(args.params, sections=PARAMS)
    ec = cfg.embed_images
    seed_everything(cfg.seed)
    dataset = PreparedDataset(args.dataset)
    ids = dataset.ids()
    if not ids:
        raise DatasetError(f"{args.dataset}: the dataset has no items to embed")
    encoder, fallback = create_encoder(ec, dataset, ids, select_device(args.device))
    record = encoder_record(encoder, ec, fallback)
    background = dataset.meta.get("background", [1.0, 1.0, 1.0])
    key = fingerprint(cfg.to_dict(), ids, record, background)
    stream = ArrayStream(args.out, "embeddings.npy", ids, (encoder.dim,), "float16", key)
    run_batches(
        stream,
        dataset,
        lambda b: embed_batch(encoder, b.images, b.masks, b.ids, background),
        ec.batch_size,
        desc=STAGE,
        on_batch=on_batch,
    )
    write_json_atomic(stream.dir / "encoder.json", record)
    write_provenance(stream.dir, STAGE, cfg.to_dict(), {"n_items": len(ids), "dim": encoder.dim})
    stream.finalize()


if __name__ == "__main__":
    run_stage(main)

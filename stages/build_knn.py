"""K nearest neighbours of every image by embedding cosine -> neighbours.parquet.

Inputs: the ``embed_images`` folder (embeddings.npy, ids.txt) and the prepared
dataset (splits, categories; GT for diagnostics). Output folder:
``neighbours.parquet`` (id, neighbours: list of ids, similarities: list of
float, descending), ``metrics.json`` (GT Chamfer / azimuth diagnostics where
ground truth exists), ``config.yaml``.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from poseless.cli import run_stage, stage_parser, write_provenance
from poseless.config import load_params
from poseless.data.prepared import DatasetError, PreparedDataset
from poseless.features.knn import (
    KnnError,
    build_knn,
    group_labels,
    knn_diagnostics,
    neighbours_table,
    subsample_points,
)
from poseless.features.stream import read_ids
from poseless.utils import atomic_path, write_json_atomic

PARAMS = ("seed", "build_knn")
STAGE = "build_knn"


def _load_embeddings(folder: Path) -> tuple[np.ndarray, list[str]]:
    emb_path, ids_path = folder / "embeddings.npy", folder / "ids.txt"
    for p in (emb_path, ids_path):
        if not p.is_file():
            raise FileNotFoundError(f"{p}: missing; run the embed_images stage first")
    try:
        emb = np.load(emb_path, mmap_mode="r")
    except ValueError as exc:
        raise KnnError(f"{emb_path}: not a readable .npy array: {exc}") from exc
    ids = read_ids(ids_path)
    if len(ids) != len(emb):
        raise KnnError(f"{emb_path}: {len(emb)} rows but {ids_path} lists {len(ids)} ids")
    return emb, ids


def main(argv=None):
    parser = stage_parser(__doc__)
    parser.add_argument("--embeddings", required=True, help="embed_images output folder")
    parser.add_argument("--dataset", required=True, help="prepared dataset folder")
    parser.add_argument("--out", required=True, help="output folder")
    args = parser.parse_args(argv)
    cfg = load_params(args.params, sections=PARAMS)
    kc = cfg.build_knn
    emb, ids = _load_embeddings(Path(args.embeddings))
    dataset = PreparedDataset(args.dataset)
    unknown = sorted(set(ids) - set(dataset.ids()))
    if unknown:
        raise DatasetError(f"{args.embeddings}: ids not in {args.dataset}: {unknown[:3]}")
    groups = group_labels(dataset.manifest, ids, kc.within)
    nb = build_knn(emb, groups, kc, seed=cfg.seed)

    rng = np.random.default_rng(cfg.seed)
    n_diag = min(kc.diagnostics_items, len(ids))
    sample = np.sort(rng.choice(len(ids), n_diag, replace=False)) if n_diag else np.zeros(0, int)
    points = None
    if n_diag and all(dataset.has_gt(i) for i in ids):
        first = dataset.load_gt(ids[0])
        if "points" in first:

            @functools.cache
            def points(r: int) -> np.ndarray:
                pts = dataset.load_gt(ids[r], ("points",))["points"]
                return subsample_points(
                    pts, kc.diagnostics_points, np.random.default_rng([cfg.seed, r])
                )

    azimuth = dataset.manifest.set_index("id").loc[ids, "azimuth_deg"].to_numpy(dtype=np.float64)
    metrics = {"n_items": len(ids), "k": kc.k, "index": kc.index, "within": kc.within}
    metrics["mean_similarity"] = float(np.mean([s.mean() for s in nb.similarity if len(s)]))
    if n_diag:
        metrics["diagnostics"] = knn_diagnostics(nb, groups, points, azimuth, sample, rng)

    with atomic_path(args.out) as tmp:
        tmp.mkdir()
        neighbours_table(ids, nb).to_parquet(tmp / "neighbours.parquet", index=False)
        write_json_atomic(tmp / "metrics.json", metrics)
        write_provenance(tmp, STAGE, cfg.to_dict(), {"n_items": len(ids), "dim": int(emb.shape[1])})


if __name__ == "__main__":
    run_stage(main)

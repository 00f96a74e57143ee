"""K nearest neighbours by embedding cosine (stage ``build_knn``), with faiss.

Embeddings are L2-normalised, so cosine = inner product. Search runs per
*group* (items of one split by default, as ShapeClipper does), excluding the
query itself:

* ``flat`` -- exact (``IndexFlatIP``), the default.
* ``ivf`` -- IVF-Flat, ``nlist`` cells (capped at ``n / 39``) trained by k-means on
  at most ``train_size`` items, ``nprobe`` cells visited per query.
* ``hnsw`` -- HNSW graph (``hnsw_m``, ``ef_construction``, ``ef_search``).

Self exclusion removes the query's own index (not merely the top hit), so exact
duplicates of the query are kept as neighbours. Rows are ordered by similarity
descending, ties by neighbour index ascending. A group with ``<= k`` items cannot
give ``k`` neighbours: ``on_small_group: error`` raises naming the group,
``fewer`` gives each of its items the ``n - 1`` others.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from poseless.config import BuildKnnConfig
from poseless.errors import PoselessError

log = logging.getLogger(__name__)


class KnnError(PoselessError):
    """Bad embeddings or groups for the neighbour search."""


@dataclass(frozen=True)
class Neighbours:
    """The kNN graph: row i lists the neighbours of item i."""

    index: list[np.ndarray]
    """Per item, (k_i,) int64 neighbour row indices (k_i = k unless its group is small)."""
    similarity: list[np.ndarray]
    """Per item, (k_i,) float32 cosine similarities, descending."""


def check_embeddings(
    emb: np.ndarray, name: str = "embeddings", dim: int | None = None
) -> np.ndarray:
    """Validate an (N, D) embedding array; return it as contiguous float32.

    Raises:
        KnnError: not 2-D, empty, wrong D, non-finite, or rows far from unit norm.
    """
    if emb.ndim != 2:
        raise KnnError(f"{name}: expected an (N, D) array, got shape {emb.shape}")
    if emb.shape[0] == 0:
        raise KnnError(f"{name}: no embeddings (N = 0)")
    if dim is not None and emb.shape[1] != dim:
        raise KnnError(f"{name}: expected dimension {dim}, got {emb.shape[1]}")
    x = np.ascontiguousarray(emb, dtype=np.float32)
    if not np.isfinite(x).all():
        raise KnnError(f"{name}: contains NaN or inf")
    norms = np.linalg.norm(x, axis=1)
    if np.abs(norms - 1.0).max() > 1e-2:
        raise KnnError(
            f"{name}: rows must be L2-normalised (norms range {norms.min():.3g}..{norms.max():.3g})"
        )
    return x


def make_index(x: np.ndarray, cfg: BuildKnnConfig, seed: int = 0):
    """Build and fill a faiss inner-product index over ``x`` (n, D) float32."""
    import faiss

    n, d = x.shape
    if cfg.index == "flat":
        index = faiss.IndexFlatIP(d)
    elif cfg.index == "hnsw":
        index = faiss.IndexHNSWFlat(d, cfg.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = cfg.ef_construction
        index.hnsw.efSearch = max(cfg.ef_search, cfg.k + 1)
    else:
        nlist = ivf_nlist_for(n, cfg.nlist)
        if cfg.ivf_quantizer == "hnsw":
            quantizer = faiss.IndexHNSWFlat(d, 32, faiss.METRIC_INNER_PRODUCT)
            quantizer.hnsw.efSearch = max(64, 2 * cfg.nprobe)
        else:
            quantizer = faiss.IndexFlatIP(d)
        index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
        index.cp.seed = seed
        index.cp.niter = cfg.kmeans_iters
        index.cp.spherical = True  # unit-norm centroids for cosine data
        index.cp.max_points_per_centroid = max(1, cfg.train_size // nlist + 1)
        assign = faiss.IndexFlatIP(d)  # exact assignment while training
        index.clustering_index = assign
        rng = np.random.default_rng(seed)
        train = (
            x if n <= cfg.train_size else x[np.sort(rng.choice(n, cfg.train_size, replace=False))]
        )
        index.train(train)
        index.clustering_index = None  # ``assign`` is freed with this frame
        index.nprobe = min(cfg.nprobe, nlist)
    index.add(x)
    return index


def _tidy(rows_i: np.ndarray, rows_s: np.ndarray, self_idx: np.ndarray, k: int):
    """Drop self and padding (-1), sort by (-sim, idx), keep k. Inputs (q, k+1)."""
    out_i, out_s = [], []
    for ii, ss, me in zip(rows_i, rows_s, self_idx):
        keep = (ii != me) & (ii >= 0)
        ii, ss = ii[keep], ss[keep]
        order = np.lexsort((ii, -ss))[:k]
        out_i.append(ii[order].astype(np.int64))
        out_s.append(ss[order].astype(np.float32))
    return out_i, out_s


def knn_in_group(x: np.ndarray, k: int, cfg: BuildKnnConfig, seed: int = 0):
    """Neighbours of every row of ``x`` among the other rows of ``x``.

    Args:
        x: (n, D) float32 unit rows, n >= 2.
        k: neighbours wanted (n - 1 are returned when n <= k).
    Returns:
        (index, similarity): lists of (min(k, n-1),) arrays, indices into ``x``.
    """
    n = len(x)
    return search_self(make_index(x, cfg, seed), x, min(k, n - 1), cfg.query_batch)


def search_self(index, x: np.ndarray, k: int, query_batch: int = 16384):
    """Search every row of ``x`` (n, D) in ``index`` (which holds exactly ``x``), self excluded.

    Returns:
        (index, similarity): lists of (<= k,) arrays, indices into ``x``.
    """
    n = len(x)
    search_k = min(k + 1, n)
    idx_out, sim_out = [], []
    for start in range(0, n, query_batch):
        q = x[start : start + query_batch]
        s, i = index.search(q, search_k)
        a, b = _tidy(i, s, np.arange(start, start + len(q)), k)
        idx_out += a
        sim_out += b
    return idx_out, sim_out


def group_labels(manifest, ids: Sequence[str], within: str) -> np.ndarray:
    """Group label per id: its split, split/category, or one group for all."""
    if within == "all":
        return np.zeros(len(ids), dtype=object)
    rows = manifest.set_index("id").loc[list(ids)]
    if within == "split":
        return rows["split"].to_numpy(dtype=object)
    return (rows["split"].astype(str) + "/" + rows["category"].astype(str)).to_numpy(dtype=object)


def build_knn(
    emb: np.ndarray, groups: np.ndarray, cfg: BuildKnnConfig, seed: int = 0
) -> Neighbours:
    """K nearest neighbours of every item within its group.

    Args:
        emb: (N, D) L2-normalised embeddings (float16 or float32).
        groups: (N,) group label per item (see :func:`group_labels`).
        cfg: index kind and parameters, ``k`` and ``on_small_group``.
    Raises:
        KnnError: bad embeddings, or a group with <= k items under ``on_small_group: error``.
    """
    import faiss

    if cfg.threads > 0:
        faiss.omp_set_num_threads(cfg.threads)
    x = check_embeddings(emb)
    groups = np.asarray(groups, dtype=object)
    if len(groups) != len(x):
        raise KnnError(f"{len(groups)} group labels for {len(x)} embeddings")
    index: list[np.ndarray | None] = [None] * len(x)
    sim: list[np.ndarray | None] = [None] * len(x)
    for g in sorted(set(groups.tolist()), key=str):
        members = np.flatnonzero(groups == g)
        if len(members) <= cfg.k:
            msg = (
                f"group {g!r} has {len(members)} item(s), so an item can have at most "
                f"{len(members) - 1} neighbour(s) but build_knn.k = {cfg.k}"
            )
            if cfg.on_small_group == "error":
                raise KnnError(
                    msg + "; lower k, set build_knn.within: all, or on_small_group: fewer"
                )
            log.warning("%s; giving its items fewer neighbours", msg)
        if len(members) == 1:
            index[members[0]] = np.zeros(0, np.int64)
            sim[members[0]] = np.zeros(0, np.float32)
            continue
        gi, gs = knn_in_group(x[members], cfg.k, cfg, seed)
        for row, a, b in zip(members, gi, gs):
            index[row] = members[a]
            sim[row] = b
    return Neighbours(index, sim)


def neighbours_table(ids: Sequence[str], nb: Neighbours):
    """The output table: id, neighbours (list of ids), similarities (list of float)."""
    import pandas as pd

    ids = np.asarray(list(ids), dtype=object)
    return pd.DataFrame(
        {
            "id": list(ids),
            "neighbours": [list(ids[i]) for i in nb.index],
            "similarities": [s.astype(np.float32).tolist() for s in nb.similarity],
        }
    )


def recall_at_k(found: list[np.ndarray], truth: list[np.ndarray]) -> float:
    """Mean fraction of the true neighbours that were found (recall@k)."""
    hits = [len(set(f.tolist()) & set(t.tolist())) / max(len(t), 1) for f, t in zip(found, truth)]
    return float(np.mean(hits)) if hits else float("nan")


# ---------------------------------------------------------------------------
# Diagnostics on synthetic data (ground truth needed)
# ---------------------------------------------------------------------------


def chamfer(a: np.ndarray, b: np.ndarray) -> float:
    """Symmetric Chamfer distance (mean unsquared L2 both ways, halved) of (P, 3) and (Q, 3)."""
    from scipy.spatial import cKDTree

    da = cKDTree(b).query(a)[0]
    db = cKDTree(a).query(b)[0]
    return float((da.mean() + db.mean()) / 2.0)


def wrapped_azimuth_diff_deg(a, b) -> np.ndarray:
    """|a - b| wrapped to [0, 180] degrees."""
    d = np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)) % 360.0
    return np.minimum(d, 360.0 - d)


def knn_diagnostics(
    nb: Neighbours,
    groups: np.ndarray,
    points: Callable[[int], np.ndarray] | None,
    azimuth_deg: np.ndarray | None,
    sample: np.ndarray,
    rng: np.random.Generator,
) -> dict:
    """Do neighbours share shape more than random pairs? (synthetic data).

    For each sampled item: mean GT Chamfer to its neighbours vs to as many random
    items of its group, and mean wrapped azimuth difference to neighbours vs random.

    Args:
        nb: the graph.
        groups: (N,) group labels (random partners come from the same group).
        points: row -> (P, 3) GT surface points (already subsampled), or None.
        azimuth_deg: (N,) GT azimuths (NaN unknown), or None.
        sample: rows to evaluate.
    Returns:
        dict of floats (``chamfer_knn``, ``chamfer_random``, ``chamfer_ratio``,
        ``azimuth_diff_knn_deg``, ``azimuth_diff_random_deg``, ``n_items``).
    """
    by_group: dict = {}
    for r, g in enumerate(groups):
        by_group.setdefault(g, []).append(r)
    cd_nn, cd_rand, az_nn, az_rand = [], [], [], []
    for r in sample:
        nbrs = nb.index[r]
        if len(nbrs) == 0:
            continue
        pool = [j for j in by_group[groups[r]] if j != r]
        rand = rng.choice(pool, size=len(nbrs), replace=len(pool) < len(nbrs))
        if points is not None:
            cd_nn.append(np.mean([chamfer(points(r), points(j)) for j in nbrs]))
            cd_rand.append(np.mean([chamfer(points(r), points(j)) for j in rand]))
        if azimuth_deg is not None and np.isfinite(azimuth_deg[r]):
            az_nn.append(np.nanmean(wrapped_azimuth_diff_deg(azimuth_deg[r], azimuth_deg[nbrs])))
            az_rand.append(np.nanmean(wrapped_azimuth_diff_deg(azimuth_deg[r], azimuth_deg[rand])))
    out: dict = {"n_items": len(cd_nn) if cd_nn else len(az_nn)}
    if cd_nn:
        out["chamfer_knn"] = float(np.mean(cd_nn))
        out["chamfer_random"] = float(np.mean(cd_rand))
        out["chamfer_ratio"] = out["chamfer_knn"] / max(out["chamfer_random"], 1e-12)
    if az_nn:
        out["azimuth_diff_knn_deg"] = float(np.mean(az_nn))
        out["azimuth_diff_random_deg"] = float(np.mean(az_rand))
    return out


def subsample_points(points: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """At most ``n`` rows of (P, 3) points, drawn without replacement."""
    if len(points) <= n:
        return points
    return points[rng.choice(len(points), n, replace=False)]


def ivf_nlist_for(n: int, nlist: int) -> int:
    """The IVF cell count actually used for a group of n items (>= 39 points per cell)."""
    return max(1, min(nlist, n // 39, int(math.sqrt(n) * 16)))

"""Scale benchmark of build_knn: N x D clustered unit vectors, K neighbours each, self excluded.

Generates random-but-clustered float32 vectors in chunks (each chunk from its own
seed), builds the configured faiss index with the library (``make_index``), tunes
IVF ``nprobe`` on a sample of queries against exact search (smallest value whose
recall@K reaches ``--target-recall``), searches the whole graph with the
library's ``search_self`` and reports times, recall@K and peak RSS as JSON.

    python benchmarks/bench_knn.py                 # 1,000,000 x 768, K = 5, IVF 4096
    python benchmarks/bench_knn.py --n 100000      # smaller
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import numpy as np


def clustered(n: int, d: int, clusters: int, spread: float, seed: int, chunk: int) -> np.ndarray:
    """(n, d) float32 unit rows: centre_c + spread * N(0, I/d), centres random on the sphere."""
    rng = np.random.default_rng([seed, 0])
    centres = rng.standard_normal((clusters, d), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    out = np.empty((n, d), np.float32)
    for c, start in enumerate(range(0, n, chunk)):
        r = np.random.default_rng([seed, c + 1])
        m = min(chunk, n - start)
        x = centres[r.integers(0, clusters, m)]
        x += r.standard_normal((m, d), dtype=np.float32) * (spread / np.sqrt(d))
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        out[start : start + m] = x
    return out


def exact_sample(x: np.ndarray, qi: np.ndarray, k: int, chunk: int) -> list[np.ndarray]:
    """Exact top-k (self excluded) of the rows ``qi`` by chunked dense products, no index copy."""
    q = x[qi]
    best_s = np.full((len(qi), 0), -np.inf, np.float32)
    best_i = np.zeros((len(qi), 0), np.int64)
    for start in range(0, len(x), chunk):
        s = q @ x[start : start + chunk].T  # (Q, chunk)
        rows = np.arange(len(qi))
        own = (qi >= start) & (qi < start + chunk)
        s[rows[own], qi[own] - start] = -np.inf  # self excluded
        cat_s = np.concatenate([best_s, s], 1)
        cat_i = np.concatenate(
            [best_i, np.broadcast_to(np.arange(start, start + s.shape[1]), s.shape)], 1
        )
        top = np.argpartition(-cat_s, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(cat_s, top, 1), axis=1, kind="stable")
        top = np.take_along_axis(top, order, 1)
        best_s = np.take_along_axis(cat_s, top, 1)
        best_i = np.take_along_axis(cat_i, top, 1)
    return list(best_i)


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--d", type=int, default=768)
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--clusters", type=int, default=10_000, help="data clusters (~n/100)")
    ap.add_argument("--spread", type=float, default=0.8, help="intra-cluster noise scale")
    ap.add_argument("--index", choices=["ivf", "hnsw", "flat"], default="ivf")
    ap.add_argument("--nlist", type=int, default=4096)
    ap.add_argument(
        "--nprobe",
        type=int,
        nargs="+",
        default=[4, 8, 16, 32, 64],
        help="candidates, tuned in order",
    )
    ap.add_argument("--target-recall", type=float, default=0.95)
    ap.add_argument("--train-size", type=int, default=100_000)
    ap.add_argument("--kmeans-iters", type=int, default=10)
    ap.add_argument(
        "--quantizer", choices=["flat", "hnsw"], default="hnsw", help="IVF coarse quantizer"
    )
    ap.add_argument("--queries", type=int, default=1000, help="sample queries for recall")
    ap.add_argument("--threads", type=int, default=0, help="OpenMP threads (0: faiss default)")
    ap.add_argument("--chunk", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    import faiss

    from poseless.config import BuildKnnConfig
    from poseless.features.knn import make_index, recall_at_k, search_self

    if args.threads:
        faiss.omp_set_num_threads(args.threads)
    cfg = BuildKnnConfig(
        k=args.k,
        index=args.index,
        nlist=args.nlist,
        nprobe=args.nprobe[0],
        train_size=args.train_size,
        kmeans_iters=args.kmeans_iters,
        ivf_quantizer=args.quantizer,
    )
    t = {}
    t0 = time.perf_counter()
    x = clustered(args.n, args.d, args.clusters, args.spread, args.seed, args.chunk)
    t["generate_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    index = make_index(x, cfg, seed=args.seed)
    t["build_s"] = time.perf_counter() - t0

    rng = np.random.default_rng(args.seed)
    qi = np.sort(rng.choice(args.n, min(args.queries, args.n), replace=False))
    t0 = time.perf_counter()
    truth = exact_sample(x, qi, args.k, args.chunk)
    t["exact_sample_s"] = time.perf_counter() - t0

    def sample_recall() -> float:
        s, i = index.search(x[qi], args.k + 1)
        return recall_at_k([row[row != q][: args.k] for row, q in zip(i, qi)], truth)

    tuning = {}
    if args.index == "ivf":
        t0 = time.perf_counter()
        for p in args.nprobe:
            index.nprobe = p
            tuning[p] = sample_recall()
            if tuning[p] >= args.target_recall:
                break
        t["tune_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    found, _ = search_self(index, x, args.k, cfg.query_batch)
    t["search_all_s"] = time.perf_counter() - t0
    recall = recall_at_k([found[q] for q in qi], truth)
    t["total_s"] = sum(t.values())
    t["total_without_recall_check_s"] = t["total_s"] - t["exact_sample_s"]
    print(
        json.dumps(
            {
                "n": args.n,
                "d": args.d,
                "k": args.k,
                "index": args.index,
                "nlist_used": getattr(index, "nlist", None),
                "nprobe_used": getattr(index, "nprobe", None),
                "nprobe_tuning_recall": tuning,
                "recall_at_k_sample": recall,
                "sample_queries": len(qi),
                "faiss_threads": faiss.omp_get_max_threads(),
                "peak_rss_gib": round(peak_rss_gib(), 2),
                **{k: round(v, 1) for k, v in t.items()},
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()

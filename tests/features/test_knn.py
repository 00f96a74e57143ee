"""faiss kNN against brute-force torch search: self exclusion, ties, groups, small groups."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from poseless.config import BuildKnnConfig
from poseless.features.knn import (
    KnnError,
    build_knn,
    chamfer,
    check_embeddings,
    knn_diagnostics,
    neighbours_table,
    recall_at_k,
    wrapped_azimuth_diff_deg,
)


def unit_rows(n, d, seed=0):
    x = np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def brute_force(x: np.ndarray, groups: np.ndarray, k: int):
    """Obvious reference: dense cosine matrix, mask self and other groups, sort by (-sim, idx)."""
    t = torch.from_numpy(x).double()
    sim = t @ t.T
    out_i, out_s = [], []
    for r in range(len(x)):
        cand = [j for j in range(len(x)) if j != r and groups[j] == groups[r]]
        cand.sort(key=lambda j: (-float(sim[r, j]), j))
        top = cand[:k]
        out_i.append(np.array(top, dtype=np.int64))
        out_s.append(np.array([float(sim[r, j]) for j in top]))
    return out_i, out_s


def test_flat_matches_brute_force_within_splits():
    x = unit_rows(60, 16)
    groups = np.array(["train"] * 40 + ["val"] * 12 + ["test"] * 8, dtype=object)
    nb = build_knn(x.astype(np.float16), groups, BuildKnnConfig(k=5))
    ref_i, ref_s = brute_force(x.astype(np.float16).astype(np.float32), groups, 5)
    for r in range(len(x)):
        assert r not in nb.index[r], f"row {r} lists itself"
        assert set(groups[nb.index[r]]) == {groups[r]}, f"row {r} has neighbours outside its split"
        np.testing.assert_allclose(nb.similarity[r], ref_s[r], atol=1e-4, err_msg=f"row {r}")
        assert list(nb.index[r]) == list(ref_i[r]), f"row {r}: {nb.index[r]} != {ref_i[r]}"


def test_exact_duplicates_are_kept_and_self_is_dropped():
    x = unit_rows(10, 8, seed=1)
    x[3] = x[7] = x[9] = x[0]  # four identical rows: ties at similarity 1
    nb = build_knn(x, np.zeros(10, dtype=object), BuildKnnConfig(k=3))
    for r in (0, 3, 7, 9):
        expected = sorted({0, 3, 7, 9} - {r})
        assert sorted(nb.index[r].tolist()) == expected, f"row {r}: {nb.index[r]}"
        np.testing.assert_allclose(nb.similarity[r], 1.0, atol=1e-5)
        assert nb.index[r].tolist() == expected, "ties must be ordered by index"


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_approximate_indexes_have_high_recall(kind):
    rng = np.random.default_rng(0)
    centres = unit_rows(20, 32, seed=2)
    x = centres[rng.integers(0, 20, 2000)] + 0.3 * rng.normal(size=(2000, 32)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    groups = np.zeros(len(x), dtype=object)
    exact = build_knn(x, groups, BuildKnnConfig(k=5))
    approx = build_knn(x, groups, BuildKnnConfig(k=5, index=kind, nlist=32, nprobe=8))
    rec = recall_at_k(approx.index, exact.index)
    assert rec > 0.9, f"{kind}: recall@5 {rec:.3f}"
    assert all(r not in approx.index[r] for r in range(len(x)))


def test_small_group_errors_or_gives_fewer():
    x = unit_rows(12, 8)
    groups = np.array(["train"] * 9 + ["val"] * 3, dtype=object)
    with pytest.raises(KnnError, match=r"group 'val' has 3 item\(s\).*k = 5"):
        build_knn(x, groups, BuildKnnConfig(k=5))
    nb = build_knn(x, groups, BuildKnnConfig(k=5, on_small_group="fewer"))
    for r in range(9, 12):
        assert sorted(nb.index[r].tolist()) == sorted(set(range(9, 12)) - {r})
    assert all(len(nb.index[r]) == 5 for r in range(9))
    single = build_knn(
        x[:1], np.zeros(1, dtype=object), BuildKnnConfig(k=2, on_small_group="fewer")
    )
    assert len(single.index[0]) == 0


def test_bad_embeddings_are_rejected():
    with pytest.raises(KnnError, match="no embeddings"):
        check_embeddings(np.zeros((0, 4), np.float32))
    with pytest.raises(KnnError, match=r"expected an \(N, D\) array"):
        check_embeddings(np.zeros(4, np.float32))
    with pytest.raises(KnnError, match="L2-normalised"):
        check_embeddings(np.full((3, 4), 2.0, np.float32))
    with pytest.raises(KnnError, match="expected dimension 8, got 4"):
        check_embeddings(unit_rows(3, 4), dim=8)
    bad = unit_rows(3, 4)
    bad[1, 2] = np.nan
    with pytest.raises(KnnError, match="NaN"):
        check_embeddings(bad)


def test_table_and_diagnostics():
    x = unit_rows(8, 4)
    groups = np.zeros(8, dtype=object)
    nb = build_knn(x, groups, BuildKnnConfig(k=2))
    ids = [f"i{r}" for r in range(8)]
    table = neighbours_table(ids, nb)
    assert list(table.columns) == ["id", "neighbours", "similarities"]
    assert table["neighbours"][0] == [ids[j] for j in nb.index[0]]
    # diagnostics: a shape equals itself, so chamfer to a copy is 0, to a scaled copy > 0
    rng = np.random.default_rng(0)
    base = rng.normal(size=(64, 3))
    pts = {r: base * (1.0 + 0.1 * r) for r in range(8)}
    az = np.arange(8) * 45.0
    d = knn_diagnostics(nb, groups, pts.__getitem__, az, np.arange(8), rng)
    assert d["n_items"] == 8 and d["chamfer_knn"] > 0 and d["azimuth_diff_knn_deg"] <= 180
    assert chamfer(base, base) == 0.0
    np.testing.assert_allclose(
        wrapped_azimuth_diff_deg([350.0, 10.0], [10.0, 200.0]), [20.0, 170.0]
    )

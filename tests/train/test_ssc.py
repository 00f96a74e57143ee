"""Semantic shape consistency: kNN table reading, IoU-weighted neighbour sampling."""

import pandas as pd
import pytest
import torch

from poseless.data.prepared import DatasetError
from poseless.train.ssc import (
    mask_iou,
    neighbour_probabilities,
    read_knn_table,
    sample_neighbours,
    swap_codes,
)


def square_masks(sides: list[int], size: int = 8) -> torch.Tensor:
    m = torch.zeros(len(sides), 1, size, size, dtype=torch.uint8)
    for i, s in enumerate(sides):
        m[i, 0, :s, :s] = 255
    return m


def write_table(path, rows: dict[str, list[str]]):
    pd.DataFrame(
        {
            "id": list(rows),
            "neighbours": list(rows.values()),
            "similarities": [[0.5] * len(v) for v in rows.values()],
        }
    ).to_parquet(path / "neighbours.parquet")


def test_mask_iou_by_hand():
    m = square_masks([2, 4, 0, 0]).float() / 255
    assert mask_iou(m[0, 0], m[1, 0]).item() == pytest.approx(4 / 16)
    assert mask_iou(m[2, 0], m[3, 0]).item() == 1.0  # both empty


def test_read_table_keeps_training_neighbours_and_their_ious(tmp_path):
    ids = ["a", "b", "c"]
    write_table(tmp_path, {"a": ["b", "x", "c"], "b": ["a"], "c": ["x"], "x": ["a"]})
    table = read_knn_table(tmp_path, ids, square_masks([2, 4, 8]))
    assert table.index.tolist() == [[1, 2], [0, -1], [-1, -1]]
    assert table.iou[0].tolist() == pytest.approx([4 / 16, 4 / 64])
    assert table.has_neighbour.tolist() == [True, True, False]
    with pytest.raises(DatasetError, match=r"no neighbours for 1 training item.*'d'"):
        read_knn_table(tmp_path, [*ids, "d"], square_masks([2, 4, 8, 1]))
    with pytest.raises(FileNotFoundError, match="run build_knn first"):
        read_knn_table(tmp_path / "none", ids, square_masks([2, 4, 8]))


def test_probabilities_are_proportional_to_one_minus_iou_to_the_t():
    iou = torch.tensor([[0.5, 0.0, 0.9, 0.3], [1.0, 1.0, 0.2, 0.2], [0.1, 0.1, 0.1, 0.1]])
    valid = torch.tensor([[True, True, True, False], [True, True, False, False], [False] * 4])
    p = neighbour_probabilities(iou, valid, 4.0)
    w = [0.5**4, 1.0, 0.1**4]
    assert p[0, :3].tolist() == pytest.approx([x / sum(w) for x in w]) and p[0, 3] == 0
    assert p[1].tolist() == [0.5, 0.5, 0.0, 0.0], "all IoU 1: uniform over the valid slots"
    assert p[2].sum() == 0
    assert neighbour_probabilities(iou[:1], valid[:1], 0.0)[0, :3].tolist() == pytest.approx(
        [1 / 3] * 3
    )


def test_sampling_frequencies_follow_the_probabilities(tmp_path):
    ids = ["a", "b", "c", "d"]
    write_table(tmp_path, {"a": ["b", "c", "d"], "b": ["a"], "c": ["a"], "d": ["a"]})
    table = read_knn_table(tmp_path, ids, square_masks([4, 4, 2, 1]))
    g = torch.Generator().manual_seed(0)
    idx = torch.zeros(20000, dtype=torch.long)
    rows, has = sample_neighbours(table, idx, 4.0, g)
    assert has.all()
    freq = torch.bincount(rows, minlength=4).double() / len(rows)
    w = torch.tensor([(1 - 1.0) ** 4, (1 - 0.25) ** 4, (1 - 1 / 16) ** 4], dtype=torch.float64)
    assert freq[0] == 0 and torch.allclose(freq[1:], w / w.sum(), atol=0.015)
    a, _ = sample_neighbours(table, idx[:50], 4.0, torch.Generator().manual_seed(3))
    b, _ = sample_neighbours(table, idx[:50], 4.0, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


def test_swap_codes_gives_input_shape_and_neighbour_colour():
    shape = torch.arange(5.0)[:, None].expand(5, 2)  # rows 0..2 inputs, 3..4 neighbours
    color = 10 + shape
    s, c = swap_codes(shape, color, 3, torch.tensor([2, 0]))
    assert s[:, 0].tolist() == [2.0, 0.0] and c[:, 0].tolist() == [13.0, 14.0]
    with pytest.raises(ValueError, match="swap_codes"):
        swap_codes(shape, color, 3, torch.tensor([0]))

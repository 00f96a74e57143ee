"""ShapeClipper's semantic shape consistency (SSC) with the CLIP kNN table.

The ``build_knn`` stage writes ``neighbours.parquet``: one row per item with
``id``, ``neighbours`` (list of ids, most similar first) and ``similarities``.
:func:`read_knn_table` turns it into a :class:`NeighbourTable` over the training
rows: neighbour *row indices* (only neighbours that are themselves training
items are kept, so ``within: all`` tables work too) and the mask IoU of each
(item, neighbour) pair, computed once at the dataset resolution.

Each iteration (REFERENCE "ShapeClipper", CLIP kNN):

1. :func:`sample_neighbours` draws one neighbour per item with probability
   ``(1 - maskIoU(input, neighbour))^T / sum`` (T = ``ssc_temperature``, 4):
   neighbours whose silhouettes differ most from the input are preferred, since
   they carry the most information about the unseen sides of the shape. An item
   whose neighbours all have IoU 1 draws uniformly; an item without any training
   neighbour is left out of the SSC terms for that iteration.
2. The neighbour is rendered with the **input's shape code**, the neighbour's
   own colour code and the neighbour's predicted pose, on rays sampled from the
   neighbour's mask; RGB / mask / normal losses compare it to the neighbour's
   own targets (:func:`poseless.train.recon_sdf` composes the terms).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from poseless.data.prepared import DatasetError, read_id_table

KNN_FILE = "neighbours.parquet"
"""The table inside the ``build_knn`` output folder."""
IOU_CHUNK = 256
"""Items whose neighbour IoUs are computed at once."""


@dataclass(frozen=True)
class NeighbourTable:
    """Training-set neighbours of every training item (K = widest row; -1 pads)."""

    index: torch.Tensor
    """(N, K) long neighbour row indices into the training arrays; -1 where absent."""
    iou: torch.Tensor
    """(N, K) float64 mask IoU of (item, neighbour); 0 where absent."""

    @property
    def valid(self) -> torch.Tensor:
        """(N, K) bool: the slot holds a neighbour."""
        return self.index >= 0

    @property
    def has_neighbour(self) -> torch.Tensor:
        """(N,) bool: the item has at least one training neighbour."""
        return self.valid.any(dim=1)


def mask_iou(a: torch.Tensor, b: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """IoU of binarised masks.

    Args:
        a, b: (..., H, W) masks, foreground where > ``threshold``.
    Returns:
        (...) float64 IoU; 1 when both masks are empty.
    """
    a, b = a > threshold, b > threshold
    inter = (a & b).flatten(-2).sum(-1).double()
    union = (a | b).flatten(-2).sum(-1).double()
    return torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(union))


def read_knn_table(path: str | Path, ids: list[str] | tuple[str, ...], masks: torch.Tensor):
    """Read the ``build_knn`` output for the training items.

    Args:
        path: the build_knn folder (holding ``neighbours.parquet``) or the parquet itself.
        ids: training item ids, in row order.
        masks: (N, 1, H, W) training masks (uint8 0..255 or float in [0, 1]).
    Returns:
        :class:`NeighbourTable`.
    Raises:
        FileNotFoundError / DatasetError: naming the file and the problem.
    """
    path = Path(path)
    file = path / KNN_FILE if path.is_dir() else path
    table = read_id_table(
        file, ("id", "neighbours"), "kNN table not found; run build_knn first (--knn)"
    )
    rows = {item: r for r, item in enumerate(ids)}
    by_id = dict(zip(table["id"], table["neighbours"]))
    absent = [i for i in ids if i not in by_id]
    if absent:
        raise DatasetError(
            f"{file}: no neighbours for {len(absent)} training item(s), e.g. {absent[:3]}; "
            "was it built from the same prepared dataset?"
        )
    lists = []
    for item in ids:
        nb = [rows[j] for j in list(by_id[item]) if j in rows and j != item]
        lists.append(nb)
    k = max((len(x) for x in lists), default=0)
    index = torch.full((len(ids), max(k, 1)), -1, dtype=torch.long)
    for r, nb in enumerate(lists):
        index[r, : len(nb)] = torch.tensor(nb, dtype=torch.long)
    m = masks[:, 0].float()
    if masks.dtype == torch.uint8:
        m = m / 255.0
    safe = index.clamp_min(0)
    iou = torch.zeros(index.shape, dtype=torch.float64)
    for start in range(0, len(ids), IOU_CHUNK):  # bounded memory at 1M items
        sl = slice(start, start + IOU_CHUNK)
        iou[sl] = mask_iou(m[sl, None].expand(-1, index.shape[1], -1, -1), m[safe[sl]])
    iou = torch.where(index >= 0, iou, torch.zeros_like(iou))
    return NeighbourTable(index=index, iou=iou)


def neighbour_probabilities(
    iou: torch.Tensor, valid: torch.Tensor, temperature: float
) -> torch.Tensor:
    """Sampling probabilities proportional to (1 - IoU)^T over the valid slots.

    Args:
        iou: (B, K) mask IoUs; valid: (B, K) bool.
        temperature: T >= 0 (0: uniform over the valid neighbours).
    Returns:
        (B, K) float64 rows summing to 1 (all zeros for a row without a valid slot).
        A row whose valid weights are all 0 (every IoU 1) is uniform over its valid slots.
    """
    weight = (1.0 - iou.double()).clamp_min(0.0) ** temperature * valid
    total = weight.sum(dim=1, keepdim=True)
    uniform = valid.double() / valid.sum(dim=1, keepdim=True).clamp_min(1)
    return torch.where(total > 0, weight / total.clamp_min(1e-300), uniform)


def sample_neighbours(
    table: NeighbourTable, idx: torch.Tensor, temperature: float, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw one neighbour per item.

    Args:
        table: the training neighbours.
        idx: (B,) long training rows of the batch.
        temperature: T of :func:`neighbour_probabilities`.
        generator: CPU generator (the draw is deterministic given it).
    Returns:
        neighbour rows (B,) long (0 where the item has none) and has (B,) bool.
    """
    idx = idx.cpu()
    valid = table.valid[idx]
    prob = neighbour_probabilities(table.iou[idx], valid, temperature)
    has = valid.any(dim=1)
    safe = torch.where(has[:, None], prob, torch.ones_like(prob))
    slot = torch.multinomial(safe, 1, generator=generator)[:, 0]
    rows = table.index[idx].gather(1, slot[:, None])[:, 0]
    return torch.where(has, rows, torch.zeros_like(rows)), has


def swap_codes(
    shape: torch.Tensor, color: torch.Tensor, n_inputs: int, selected: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Codes of the neighbour renders (the SSC code swap).

    The encoder ran on ``cat([inputs (n_inputs), neighbours of the selected inputs (K)])``.

    Args:
        shape, color: (n_inputs + K, C) codes in that order.
        selected: (K,) long input rows that have a neighbour, in neighbour order.
    Returns:
        shape codes (K, C) of the **inputs** and colour codes (K, C) of the **neighbours**.
    """
    k = shape.shape[0] - n_inputs
    if selected.shape != (k,) or color.shape[0] != shape.shape[0]:
        raise ValueError(
            f"swap_codes: {shape.shape[0]} codes for {n_inputs} inputs need {k} selected rows, "
            f"got selected {tuple(selected.shape)} and {color.shape[0]} colour codes"
        )
    return shape[:n_inputs][selected.to(shape.device)], color[n_inputs:]

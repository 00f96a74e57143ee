"""Resumable, streamed per-item arrays: the storage of ``embed_images`` and ``estimate_normals``.

A stage that computes one row per dataset item writes into a *partial* folder
next to its output (``.<out>.partial``)::

    rows.npy         (N, *row_shape) array, an np.memmap filled batch by batch
    ids.txt          the item ids, one a line, in row order
    progress.json    {"fingerprint", "n", "done"}: rows [0, done) are final

Rows are flushed to disk before ``progress.json`` is (atomically) rewritten, so
a killed run never claims a row it did not write. A rerun with the same
fingerprint (config, ids, weights) continues at row ``done``; any other
fingerprint starts over. When every row is written the stage adds its other
files and :meth:`ArrayStream.finalize` renames the partial folder onto the
output folder in one step, so the output never looks finished before it is.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from poseless.utils import stable_hash, write_json_atomic

log = logging.getLogger(__name__)


def partial_dir(out_dir: str | Path) -> Path:
    """Where the unfinished output of ``out_dir`` lives: ``<parent>/.<name>.partial``."""
    out_dir = Path(out_dir)
    return out_dir.parent / f".{out_dir.name}.partial"


def fingerprint(*parts: object) -> str:
    """Stable hash of JSON-able parts (config dicts, id lists, weight hashes)."""
    return stable_hash(json.dumps(parts, sort_keys=True, default=str), n_hex=32)


class ArrayStream:
    """Row-ordered, resumable writer of an (N, *row_shape) array.

    Args:
        out_dir: the final output folder (the partial folder sits next to it).
        array_name: file name of the array inside the folder, e.g. ``embeddings.npy``.
        ids: the N item ids, in row order (written to ``ids.txt``).
        row_shape: shape of one row, e.g. ``(768,)`` or ``(3, 64, 64)``.
        dtype: stored dtype (float16 for embeddings and normals).
        key: fingerprint of everything the rows depend on.
    """

    def __init__(
        self,
        out_dir: str | Path,
        array_name: str,
        ids: Sequence[str],
        row_shape: tuple[int, ...],
        dtype: np.dtype | str,
        key: str,
    ):
        self.out_dir = Path(out_dir)
        self.dir = partial_dir(out_dir)
        self.path = self.dir / array_name
        self.ids = list(ids)
        self.n = len(self.ids)
        self.key = key
        shape = (self.n, *row_shape)
        progress = self._read_progress()
        resumable = (
            progress is not None
            and progress.get("fingerprint") == key
            and progress.get("n") == self.n
            and self.path.is_file()
        )
        if resumable:
            self.array = np.lib.format.open_memmap(self.path, mode="r+")
            if self.array.shape != shape or self.array.dtype != np.dtype(dtype):
                resumable = False
                del self.array
        if resumable:
            self.done = int(progress["done"])
            log.info("resuming %s at row %d of %d", self.path, self.done, self.n)
        else:
            if self.dir.exists():
                log.info("discarding stale partial output %s", self.dir)
                shutil.rmtree(self.dir)
            self.dir.mkdir(parents=True)
            (self.dir / "ids.txt").write_text("".join(f"{i}\n" for i in self.ids))
            self.array = np.lib.format.open_memmap(self.path, mode="w+", dtype=dtype, shape=shape)
            self.done = 0
            self._write_progress()

    def _read_progress(self) -> dict | None:
        path = self.dir / "progress.json"
        if not path.is_file():
            return None
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            return None

    def _write_progress(self) -> None:
        write_json_atomic(
            self.dir / "progress.json", {"fingerprint": self.key, "n": self.n, "done": self.done}
        )

    def write(self, rows: np.ndarray) -> None:
        """Append rows ``[done, done + len(rows))``; flushed and recorded before returning.

        Args:
            rows: (B, *row_shape) array, cast to the stored dtype.
        """
        b = len(rows)
        if self.done + b > self.n:
            raise ValueError(f"{self.path}: {self.done} + {b} rows exceed the {self.n} items")
        self.array[self.done : self.done + b] = rows
        self.array.flush()
        self.done += b
        self._write_progress()

    @property
    def complete(self) -> bool:
        """Whether every row has been written."""
        return self.done == self.n

    def finalize(self) -> Path:
        """Rename the finished partial folder onto the output folder; return the output path."""
        if not self.complete:
            raise RuntimeError(f"{self.path}: only {self.done} of {self.n} rows written")
        self.array.flush()
        del self.array
        (self.dir / "progress.json").unlink()
        if self.out_dir.exists():
            shutil.rmtree(self.out_dir)
        os.replace(self.dir, self.out_dir)
        return self.out_dir


def read_ids(path: str | Path) -> list[str]:
    """Item ids of an ``ids.txt`` (one a line)."""
    return Path(path).read_text().splitlines()


def composite_on_white(images: torch.Tensor, masks: torch.Tensor, background) -> torch.Tensor:
    """Re-composite prepared images on white using their masks.

    Prepared images are ``obj * m + bg * (1 - m)``; this returns
    ``obj * m + 1 * (1 - m) = image + (1 - bg) * (1 - m)``, exact for soft masks too.

    Args:
        images: (B, 3, H, W) float in [0, 1], composited on ``background``.
        masks: (B, 1, H, W) float in [0, 1].
        background: RGB triple in [0, 1] (``meta.json`` ``background``).
    Returns:
        (B, 3, H, W) float in [0, 1] on white.
    """
    bg = torch.as_tensor(background, dtype=images.dtype).view(1, 3, 1, 1)
    return (images + (1.0 - bg) * (1.0 - masks)).clamp_(0.0, 1.0)


def run_batches(stream: ArrayStream, dataset, compute, batch_size: int, desc: str, on_batch=None):
    """Fill ``stream`` from row ``stream.done`` on, one dataset batch at a time.

    Args:
        stream: the resumable writer; its ids are the items, in order.
        dataset: a :class:`poseless.data.prepared.PreparedDataset`.
        compute: ``Batch -> (B, *row_shape) array``.
        batch_size: items per batch; resuming keeps the same batch boundaries.
        desc: tqdm label.
        on_batch: optional ``callable(batches_done)`` called after each batch is recorded.
    """
    from tqdm import tqdm

    ids = stream.ids
    with tqdm(total=stream.n, initial=stream.done, desc=desc, unit="img", mininterval=5) as bar:
        while not stream.complete:
            chunk = ids[stream.done : stream.done + batch_size]
            rows = compute(dataset.load(chunk))
            stream.write(np.asarray(rows))
            bar.update(len(chunk))
            if on_batch is not None:
                on_batch((stream.done + batch_size - 1) // batch_size)

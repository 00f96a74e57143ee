"""The one prepared-dataset format every later stage reads.

A prepared dataset is a folder::

    manifest.parquet   one row per item (see MANIFEST_COLUMNS)
    meta.json          adapter, image size, background, camera, counts, resolved config
    images/<id>.png    RGB uint8, object composited on the configured background
    masks/<id>.png     L uint8, 255 = object
    gt/<id>.npz        optional ground truth for evaluation only (see GT_KEYS)
    rejected.csv       items dropped by ``on_bad_item: skip``, with their reason
    contact_sheet.png  a grid of images and masks to look at

No stage after ``prepare_data`` knows where the images came from.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

MANIFEST_COLUMNS: dict[str, str] = {
    "id": "unique item id (file-name safe)",
    "split": "train | val | test",
    "category": "category name",
    "instance": "shape instance id (several views of one instance share it)",
    "image": "path of the RGB PNG, relative to the dataset folder",
    "mask": "path of the mask PNG, relative to the dataset folder",
    "source": "where the item came from (raw file or generator seed)",
    "azimuth_deg": "ground-truth azimuth in degrees (NaN when unknown)",
    "elevation_deg": "ground-truth elevation in degrees (NaN when unknown)",
    "distance": "ground-truth camera distance (NaN when unknown)",
    "gt": "path of the ground-truth npz relative to the dataset folder ('' when none)",
}
"""Columns of manifest.parquet, in order."""

GT_KEYS: dict[str, str] = {
    "vertices": "(V, 3) float32 mesh vertices, canonical world frame, in [-0.5, 0.5]^3",
    "faces": "(F, 3) int32 triangle indices",
    "voxels": "(R, R, R) bool filled occupancy indexed [x, y, z]; cell i centre at -0.5 + (i + 0.5) / R",
    "points": "(P, 3) float32 surface samples",
    "point_normals": "(P, 3) float32 outward unit normals of ``points``",
    "normals": "(3, H, W) float16 camera-frame unit normals of the prepared view, 0 off the mask",
    "depth": "(H, W) float32 camera-frame z of the prepared view, 0 off the mask",
    "R": "(3, 3) float32 world->camera rotation of the view",
    "t": "(3,) float32 translation of the view",
    "fov_deg": "() float32 full field of view of the view",
    "shape_params": "(D,) float32 generator parameters of the shape (synthetic only)",
}
"""Keys a ground-truth npz may hold; every one is optional."""

SPLITS = ("train", "val", "test")


class DatasetError(ValueError):
    """A prepared dataset is missing, incomplete or inconsistent."""


@dataclass(frozen=True)
class Batch:
    """Images of a set of items, in memory."""

    ids: list[str]
    """Item ids, in the order of the tensors."""
    images: torch.Tensor
    """(N, 3, H, W) float in [0, 1]."""
    masks: torch.Tensor
    """(N, 1, H, W) float in [0, 1]."""


class PreparedDataset:
    """Reader of a prepared dataset folder."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        manifest = self.root / "manifest.parquet"
        meta = self.root / "meta.json"
        for p in (manifest, meta):
            if not p.is_file():
                raise DatasetError(f"{p}: missing; run the prepare_data stage first")
        self.manifest = pd.read_parquet(manifest)
        missing = [c for c in MANIFEST_COLUMNS if c not in self.manifest.columns]
        if missing:
            raise DatasetError(f"{manifest}: columns missing: {missing}")
        self.meta = json.loads(meta.read_text())
        if self.manifest["id"].duplicated().any():
            dup = self.manifest["id"][self.manifest["id"].duplicated()].iloc[0]
            raise DatasetError(f"{manifest}: duplicate id {dup!r}")
        self._index = {i: k for k, i in enumerate(self.manifest["id"])}

    def __len__(self) -> int:
        return len(self.manifest)

    @property
    def image_size(self) -> int:
        """Side of the square images."""
        return int(self.meta["image_size"])

    def ids(self, split: str | None = None) -> list[str]:
        """Item ids, optionally of one split, in manifest order."""
        if split is None:
            return list(self.manifest["id"])
        if split not in SPLITS:
            raise DatasetError(f"unknown split {split!r} (known: {SPLITS})")
        return list(self.manifest.loc[self.manifest["split"] == split, "id"])

    def row(self, item_id: str) -> pd.Series:
        """The manifest row of one item."""
        try:
            return self.manifest.iloc[self._index[item_id]]
        except KeyError:
            raise DatasetError(f"{self.root}: no item with id {item_id!r}") from None

    def load(self, ids: list[str]) -> Batch:
        """Read images and masks of ``ids`` into float tensors."""
        imgs = np.stack([self._read(self.row(i)["image"], "RGB") for i in ids]) if ids else None
        msks = np.stack([self._read(self.row(i)["mask"], "L") for i in ids]) if ids else None
        if imgs is None:
            s = self.image_size
            return Batch([], torch.zeros(0, 3, s, s), torch.zeros(0, 1, s, s))
        images = torch.from_numpy(imgs).permute(0, 3, 1, 2).float().div_(255.0)
        masks = torch.from_numpy(msks)[:, None].float().div_(255.0)
        return Batch(list(ids), images, masks)

    def _read(self, rel: str, mode: str) -> np.ndarray:
        path = self.root / rel
        try:
            with Image.open(path) as im:
                return np.asarray(im.convert(mode))
        except (OSError, ValueError) as exc:
            raise DatasetError(f"{path}: cannot read prepared image: {exc}") from exc

    def has_gt(self, item_id: str) -> bool:
        """Whether the item has a ground-truth npz."""
        return bool(self.row(item_id)["gt"])

    def load_gt(self, item_id: str, keys: tuple[str, ...] | None = None) -> dict[str, np.ndarray]:
        """Ground truth of one item (evaluation only). Raises when it has none."""
        rel = self.row(item_id)["gt"]
        if not rel:
            raise DatasetError(f"{self.root}: item {item_id!r} has no ground truth")
        path = self.root / rel
        try:
            with np.load(path) as z:
                wanted = keys if keys is not None else tuple(z.files)
                missing = [k for k in wanted if k not in z.files]
                if missing:
                    raise DatasetError(f"{path}: ground truth lacks {missing}")
                return {k: z[k] for k in wanted}
        except (OSError, ValueError) as exc:
            raise DatasetError(f"{path}: cannot read ground truth: {exc}") from exc


def read_id_table(path: str | Path, columns: tuple[str, ...], missing_hint: str) -> pd.DataFrame:
    """Read a parquet table keyed by a unique ``id`` column (pose tables, kNN tables).

    Args:
        path: the parquet file.
        columns: columns that must be present (``id`` among them).
        missing_hint: what to do when the file is absent, e.g. "run build_knn first".
    Raises:
        FileNotFoundError: the file is absent (message: "<path>: <missing_hint>").
        DatasetError: unreadable, missing columns or duplicate ids, naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: {missing_hint}")
    try:
        table = pd.read_parquet(path)
    except Exception as exc:
        raise DatasetError(f"{path}: cannot read as parquet: {exc}") from exc
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise DatasetError(f"{path}: columns missing: {missing}")
    if table["id"].duplicated().any():
        dup = table["id"][table["id"].duplicated()].iloc[0]
        raise DatasetError(f"{path}: duplicate id {dup!r}")
    return table

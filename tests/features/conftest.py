"""A tiny prepared dataset written in exactly the format of ``poseless.data.prepared``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from poseless.data.prepared import MANIFEST_COLUMNS


def write_prepared(
    root: Path,
    splits: dict[str, int] | None = None,
    size: int = 32,
    background=(1.0, 1.0, 1.0),
    seed: int = 0,
) -> Path:
    """Write ellipsoid 'shapes' seen from the front: images, masks, GT npz, manifest, meta.

    Each item's shape is an ellipsoid with radii ``shape_params`` (3,); its mask is the
    projected ellipse, its GT normals the front-facing ellipsoid normals (n_z < 0).
    """
    splits = splits or {"train": 8, "val": 3, "test": 3}
    rng = np.random.default_rng(seed)
    for sub in ("images", "masks", "gt"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    rows = []
    bg = np.asarray(background, np.float32)
    yy, xx = np.meshgrid(
        (np.arange(size) + 0.5) / size * 2 - 1,
        (np.arange(size) + 0.5) / size * 2 - 1,
        indexing="ij",
    )
    k = 0
    for split, n in splits.items():
        for _ in range(n):
            item = f"item{k:03d}"
            cat = "chair" if k % 2 == 0 else "plane"
            radii = rng.uniform(0.3, 0.9, size=3).astype(np.float32)
            u, v = xx / radii[0], yy / radii[1]
            inside = u**2 + v**2 < 1.0
            w = np.sqrt(np.clip(1 - u**2 - v**2, 0, None))
            n = np.stack([u / radii[0], v / radii[1], -w / radii[2]])
            n = n / np.maximum(np.linalg.norm(n, axis=0, keepdims=True), 1e-8) * inside
            colour = rng.uniform(0.1, 0.9, size=3).astype(np.float32)
            shade = 0.5 + 0.5 * w
            obj = colour[:, None, None] * shade
            img = obj * inside + bg[:, None, None] * (~inside)
            Image.fromarray((img.transpose(1, 2, 0) * 255).round().astype(np.uint8)).save(
                root / "images" / f"{item}.png"
            )
            Image.fromarray((inside * 255).astype(np.uint8)).save(root / "masks" / f"{item}.png")
            dirs = rng.normal(size=(300, 3))
            pts = dirs / np.linalg.norm(dirs, axis=1, keepdims=True) * radii * 0.5
            az = float(rng.uniform(0, 360))
            np.savez(
                root / "gt" / f"{item}.npz",
                normals=n.astype(np.float16),
                shape_params=radii,
                points=pts.astype(np.float32),
            )
            rows.append(
                {
                    "id": item,
                    "split": split,
                    "category": cat,
                    "instance": f"inst{k:03d}",
                    "image": f"images/{item}.png",
                    "mask": f"masks/{item}.png",
                    "source": f"test-seed-{seed}",
                    "azimuth_deg": az,
                    "elevation_deg": 30.0,
                    "distance": 2.732,
                    "gt": f"gt/{item}.npz",
                }
            )
            k += 1
    pd.DataFrame(rows, columns=list(MANIFEST_COLUMNS)).to_parquet(root / "manifest.parquet")
    meta = {"adapter": "test", "image_size": size, "background": list(background), "counts": splits}
    (root / "meta.json").write_text(json.dumps(meta))
    return root


@pytest.fixture
def prepared(tmp_path) -> Path:
    """A 14-item prepared dataset (8 train / 3 val / 3 test) on white."""
    return write_prepared(tmp_path / "prepared")


@pytest.fixture
def prepared_grey(tmp_path) -> Path:
    """The same items composited on grey (to test re-compositing on white)."""
    return write_prepared(tmp_path / "prepared_grey", background=(0.5, 0.5, 0.5))

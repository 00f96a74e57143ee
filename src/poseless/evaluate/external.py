"""Predictions of any other method: a folder of meshes named by item id.

Layout::

    DIR/<item id>.obj | .ply | .glb    one mesh per item, canonical world frame (y up)
    DIR/poses.csv                      optional predicted poses of the input views

``poses.csv`` has a column ``id`` and either the nine entries of the
world->camera rotation ``r00, r01, ..., r22`` (row-major) or ``azimuth_deg``
(and optionally ``elevation_deg``, default 30): a Kato look-at camera
(``poseless.geometry.cameras.kato_extrinsics``). Without it, no pose is
predicted and ``view_centric`` is skipped with that reason.

A missing or unreadable mesh is not fatal: the item gets an empty prediction
whose ``error`` says what went wrong, and is scored as empty. Two files for one
id (``a.obj`` and ``a.ply``) are an error of the folder (ambiguous).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from poseless.errors import PoselessError
from poseless.evaluate.harness import ItemPrediction, azimuth_from_rotation, empty_prediction

MESH_EXTENSIONS = (".obj", ".ply", ".glb")
"""Mesh file types read (case-insensitive)."""
POSES_FILE = "poses.csv"
"""Optional file of predicted poses in the folder."""
ROTATION_COLUMNS = tuple(f"r{i}{j}" for i in range(3) for j in range(3))
"""Row-major world->camera rotation columns of poses.csv."""


def load_mesh_file(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read a triangle mesh (.obj/.ply/.glb; scenes are flattened with their transforms).

    Returns:
        vertices (V, 3) float32, faces (F, 3) int64.
    Raises:
        ValueError: unreadable, not a triangle mesh, or without faces — naming the file.
    """
    import trimesh

    path = Path(path)
    try:
        loaded = trimesh.load(path, force="mesh", process=False)
    except Exception as exc:  # trimesh raises many types on bad files
        raise ValueError(f"{path}: cannot read mesh: {type(exc).__name__}: {exc}") from exc
    if not isinstance(loaded, trimesh.Trimesh):
        raise ValueError(f"{path}: not a triangle mesh (got {type(loaded).__name__})")
    v = np.asarray(loaded.vertices, np.float32)
    f = np.asarray(loaded.faces, np.int64).reshape(-1, 3)
    if len(f) == 0:
        raise ValueError(f"{path}: mesh has no faces")
    if not np.all(np.isfinite(v)):
        raise ValueError(f"{path}: mesh has non-finite vertices")
    return v, f


def scan_mesh_folder(folder: str | Path) -> dict[str, Path]:
    """Item id -> mesh file of a predictions folder.

    Raises:
        FileNotFoundError: the folder does not exist.
        PoselessError: two files give one id.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"--meshes {folder}: folder not found")
    found: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if p.is_file() and p.suffix.lower() in MESH_EXTENSIONS and not p.name.startswith("."):
            if p.stem in found:
                raise PoselessError(
                    f"--meshes {folder}: two meshes for item {p.stem!r}: {found[p.stem].name}, {p.name}"
                )
            found[p.stem] = p
    return found


def read_poses_csv(path: str | Path) -> dict[str, tuple[np.ndarray, float]]:
    """Item id -> (world->camera R (3, 3), azimuth in degrees) from a poses.csv.

    Raises:
        PoselessError: missing columns, duplicate ids, non-finite values or a
            matrix that is not a rotation — naming the file and the id.
    """
    from poseless.geometry.cameras import kato_extrinsics

    path = Path(path)
    table = pd.read_csv(path)
    if "id" not in table.columns:
        raise PoselessError(f"{path}: needs a column 'id'")
    table["id"] = table["id"].astype(str)
    if table["id"].duplicated().any():
        raise PoselessError(
            f"{path}: duplicate id {table['id'][table['id'].duplicated()].iloc[0]!r}"
        )
    out: dict[str, tuple[np.ndarray, float]] = {}
    if all(c in table.columns for c in ROTATION_COLUMNS):
        mats = table[list(ROTATION_COLUMNS)].to_numpy(np.float64).reshape(-1, 3, 3)
        for item_id, R in zip(table["id"], mats):
            ok = np.all(np.isfinite(R)) and np.allclose(R @ R.T, np.eye(3), atol=1e-4)
            if not ok or np.linalg.det(R) < 0:
                raise PoselessError(f"{path}: id {item_id!r}: r00..r22 is not a rotation matrix")
            out[item_id] = (R, azimuth_from_rotation(R))
        return out
    if "azimuth_deg" not in table.columns:
        raise PoselessError(
            f"{path}: needs either the rotation columns {', '.join(ROTATION_COLUMNS)} or azimuth_deg"
        )
    az = table["azimuth_deg"].to_numpy(np.float64)
    el = (
        table["elevation_deg"].to_numpy(np.float64)
        if "elevation_deg" in table.columns
        else np.full(len(table), 30.0)
    )
    bad = ~(np.isfinite(az) & np.isfinite(el))
    if bad.any():
        raise PoselessError(
            f"{path}: id {table['id'].iloc[int(np.argmax(bad))]!r}: non-finite pose"
        )
    import torch

    R, _ = kato_extrinsics(torch.from_numpy(np.radians(az)), torch.from_numpy(np.radians(el)))
    for item_id, a, r in zip(table["id"], az, R.numpy()):
        out[item_id] = (r.astype(np.float64), float(a % 360.0))
    return out


def load_external_predictions(folder: str | Path, ids: Sequence[str]) -> list[ItemPrediction]:
    """Predictions of ``ids`` from a mesh folder (and its optional poses.csv), in order.

    Missing or unreadable meshes give empty predictions with the reason in ``error``.
    """
    folder = Path(folder)
    files = scan_mesh_folder(folder)
    poses = read_poses_csv(folder / POSES_FILE) if (folder / POSES_FILE).is_file() else {}
    out = []
    for item_id in ids:
        path = files.get(item_id)
        if path is None:
            exts = "/".join(MESH_EXTENSIONS)
            out.append(empty_prediction(item_id, f"missing mesh {folder / item_id}{{{exts}}}"))
            continue
        try:
            v, f = load_mesh_file(path)
        except ValueError as exc:
            out.append(empty_prediction(item_id, str(exc)))
            continue
        R, az = poses.get(item_id, (None, math.nan))
        out.append(ItemPrediction(item_id, v, f, R=R, azimuth_deg=az))
    return out

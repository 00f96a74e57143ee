"""Adapter ``shapenet_nmr``: Kato et al.'s ShapeNet renderings (NMR / SoftRas / URA data).

Layout (one folder, as published with the Neural 3D Mesh Renderer)::

    {class_id}_{train|val|test}_images.npz   uint8 (N, 24, 4, 64, 64): RGB + alpha
    {class_id}_{train|val|test}_voxels.npz   bool  (N, 32, 32, 32)

Each npz holds exactly one array (its key is not fixed; readers take the only one).
View ``k`` of an instance is rendered at elevation 30 deg, distance 2.732, and
azimuth ``15 k`` deg in *our* convention (see "Frames" below).

Frames (derived from the authors' code unless marked *assumed*):

* **NMR/SoftRas camera** (derived from SoftRas ``look_at`` and its CUDA
  rasterizer): eye as in ``poseless.geometry.cameras`` but the camera x axis is
  ``up x forward``, and image column j grows with +x, row 0 is camera +y (top).
  Our camera (OpenCV) uses ``forward x up`` as "right", so for the same mesh and
  eye our image is the left-right mirror of SoftRas' image.
* **Views** (derived from SoftRas ``examples/recon/datasets.py``): image ``k``
  is fitted with the SoftRas eye at azimuth ``-15 k`` deg (elevation 30 deg).
* Mirroring the world by ``x -> -x`` maps the SoftRas eye at azimuth ``-a`` to
  our eye at azimuth ``+a`` and undoes the image mirror, so the NMR mesh frame
  ``m`` becomes our world frame by ``s = (-m_x, m_y, m_z)`` and view ``k`` is our
  Kato camera at azimuth ``+15 k`` deg. A proper renderer (ours) then reproduces
  the dataset images. Whether a category's front faces -z at azimuth 0
  is *assumed* (not checked against the ShapeNet models); none of the
  evaluation protocols depend on it.
* **Voxels** (derived from NMR/SoftRas ``evaluate_iou``): a predicted mesh in
  the NMR frame is voxelised as ``P[i, j, k]`` with (i, j, k) along the mesh's
  (x, y, z) (NMR ``voxelization.py`` writes ``voxels[c0, c1, c2]`` from vertex
  coordinates (c0, c1, c2); SoftRas' CUDA port is *assumed* identical), then
  compared with the dataset grid as ``P.transpose(1, 0, 2)[:, :, ::-1]``. So
  ``V[p, q, r] = P[q, p, 31 - r]``. With the x mirror above, our grid
  ``G[i, j, k]`` (indexed [x, y, z], ``prepared.GT_KEYS``) is
  ``V[j, R - 1 - i, R - 1 - k]``: :func:`nmr_voxels_to_world`.
* **Voxel extent** (derived): NMR maps mesh coordinates by ``c * 31/32 + 0.5``
  before voxelising at 32, so its cell centres sit at ``(i - 15.5) / 31``
  (the grid spans ``+-16/31 = +-0.516``), while ours sit at ``(i - 15.5) / 32``.
  We keep the indices (a 3 % scale difference); :data:`NMR_VOXEL_BOUND` is the
  true half-extent for an evaluator that wants to voxelise predictions exactly
  as the authors did.
"""

from __future__ import annotations

import math
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from poseless.config import ShapenetNmrConfig
from poseless.data.adapters import Rejected
from poseless.data.prepared import DatasetError
from poseless.data.raw import RawItem
from poseless.geometry.cameras import KATO_DISTANCE, KATO_ELEVATION_DEG, KATO_FOV_DEG
from poseless.utils import stable_hash

NMR_CLASSES: dict[str, str] = {
    "02691156": "airplane",
    "02828884": "bench",
    "02933112": "cabinet",
    "02958343": "car",
    "03001627": "chair",
    "03211117": "display",
    "03636649": "lamp",
    "03691459": "speaker",
    "04090263": "rifle",
    "04256520": "sofa",
    "04379243": "table",
    "04401088": "phone",
    "04530566": "vessel",
}
"""The 13 ShapeNet synset ids of Kato et al.'s renderings and our category names."""

NMR_VIEWS = 24
"""Views per instance (azimuth step 15 deg)."""
NMR_AZIMUTH_STEP_DEG = 15.0
"""Azimuth between consecutive views, degrees (view k at 15 k in our convention)."""
NMR_VOXEL_BOUND = 16.0 / 31.0
"""Half-extent (mesh units) of the NMR 32^3 voxel grid (cells centred at (i - 15.5) / 31)."""
NMR_SPLITS = ("train", "val", "test")


def resolve_classes(classes: tuple[str, ...]) -> list[str]:
    """Class ids or names -> synset ids, in the given order; unknown ones raise ValueError."""
    by_name = {name: cid for cid, name in NMR_CLASSES.items()}
    out = []
    for c in classes:
        cid = c if c in NMR_CLASSES else by_name.get(c)
        if cid is None:
            known = ", ".join(f"{k} ({v})" for k, v in NMR_CLASSES.items())
            raise ValueError(f"shapenet_nmr.classes: unknown class {c!r} (known: {known})")
        if cid not in out:
            out.append(cid)
    return out


def nmr_voxels_to_world(voxels: np.ndarray) -> np.ndarray:
    """Kato/NMR voxel grid -> the project's grid (indexed [x, y, z], y up).

    Args:
        voxels: (..., R, R, R) occupancy as stored in ``{class}_{split}_voxels.npz``.
    Returns:
        (..., R, R, R) copy with ``out[..., i, j, k] = voxels[..., j, R-1-i, R-1-k]``
        (derivation in the module docstring).
    """
    if voxels.ndim < 3 or not (voxels.shape[-1] == voxels.shape[-2] == voxels.shape[-3]):
        raise ValueError(f"voxels: expected (..., R, R, R), got shape {voxels.shape}")
    out = np.swapaxes(voxels, -3, -2)[..., ::-1, :, ::-1]
    return np.ascontiguousarray(out)


def view_azimuth_deg(view: int) -> float:
    """Azimuth (degrees, our convention) of NMR view ``view`` (0..23)."""
    return (NMR_AZIMUTH_STEP_DEG * view) % 360.0


def _kato_pose(azimuth_deg: float) -> tuple[np.ndarray, np.ndarray]:
    """(3, 3) R and (3,) t of our Kato camera at elevation 30 deg, distance 2.732 (float32)."""
    import torch

    from poseless.geometry.cameras import kato_extrinsics

    R, t = kato_extrinsics(
        torch.tensor([math.radians(azimuth_deg)], dtype=torch.float64),
        math.radians(KATO_ELEVATION_DEG),
        KATO_DISTANCE,
    )
    return R[0].numpy().astype(np.float32), t[0].numpy().astype(np.float32)


def load_single_array(path: Path) -> np.ndarray:
    """The one array stored in an npz file; DatasetError/FileNotFoundError otherwise."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: file not found (expected Kato et al.'s ShapeNet npz)")
    try:
        with np.load(path, allow_pickle=False) as z:
            if len(z.files) != 1:
                raise DatasetError(f"{path}: expected exactly one array, found {z.files}")
            return z[z.files[0]]
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        if isinstance(exc, DatasetError):
            raise
        raise DatasetError(f"{path}: cannot read npz ({exc})") from exc


def check_images(images: np.ndarray, path: Path) -> None:
    """Images must be uint8 (N, 24, 4, S, S)."""
    if images.dtype != np.uint8:
        raise DatasetError(f"{path}: images must be uint8, got {images.dtype}")
    if (
        images.ndim != 5
        or images.shape[1:3] != (NMR_VIEWS, 4)
        or images.shape[3] != images.shape[4]
    ):
        raise DatasetError(
            f"{path}: images must have shape (N, {NMR_VIEWS}, 4, S, S), got {images.shape}"
        )


def check_voxels(voxels: np.ndarray, path: Path, n: int) -> None:
    """Voxels must be bool (or 0/1 integers) of shape (n, R, R, R)."""
    if voxels.ndim != 4 or not (voxels.shape[1] == voxels.shape[2] == voxels.shape[3]):
        raise DatasetError(f"{path}: voxels must have shape (N, R, R, R), got {voxels.shape}")
    if voxels.shape[0] != n:
        raise DatasetError(
            f"{path}: {voxels.shape[0]} voxel grids but the images file has {n} instances"
        )
    if voxels.dtype != np.bool_:
        if (
            not np.issubdtype(voxels.dtype, np.integer)
            or voxels.max(initial=0) > 1
            or voxels.min(initial=0) < 0
        ):
            raise DatasetError(f"{path}: voxels must be bool (or 0/1 integers), got {voxels.dtype}")


def _rng(seed: int, class_id: str, split: str) -> np.random.Generator:
    """A generator per (seed, class, split), independent of which other classes are read."""
    return np.random.default_rng([seed, int(stable_hash(f"nmr/{class_id}/{split}", 12), 16)])


def choose_views(cfg: ShapenetNmrConfig, n: int, rng: np.random.Generator) -> list[list[int]]:
    """View indices per instance: one random allowed view each, or all allowed views."""
    allowed = list(cfg.view_subset) if cfg.view_subset else list(range(NMR_VIEWS))
    if cfg.views == "all":
        return [allowed] * n
    picks = rng.integers(0, len(allowed), size=n)
    return [[allowed[int(p)]] for p in picks]


def iter_items(cfg: ShapenetNmrConfig, seed: int) -> Iterator[RawItem | Rejected]:
    """Raw items of the Kato renderings, class by class, split by split, instance by instance.

    Args:
        cfg: adapter settings (root, classes, splits, views).
        seed: global seed; picks the view of each instance when ``views == 'one'``.
    Yields:
        RawItem per (instance, view) with GT azimuth/elevation/distance and
        ``gt`` = {voxels (32, 32, 32) bool [x, y, z], R (3, 3), t (3,), fov_deg ()};
        Rejected for a view whose alpha channel is empty.
    Raises:
        FileNotFoundError / DatasetError: missing folder or npz, wrong dtype/shape.
    """
    root = Path(cfg.root)
    if not root.is_dir():
        raise FileNotFoundError(f"shapenet_nmr.root: {root}: folder not found")
    fov = np.float32(KATO_FOV_DEG)
    poses = {v: _kato_pose(view_azimuth_deg(v)) for v in range(NMR_VIEWS)}
    for class_id in resolve_classes(cfg.classes):
        name = NMR_CLASSES[class_id]
        for split in cfg.splits:
            img_path = root / f"{class_id}_{split}_images.npz"
            vox_path = root / f"{class_id}_{split}_voxels.npz"
            images = load_single_array(img_path)
            check_images(images, img_path)
            voxels = load_single_array(vox_path)
            check_voxels(voxels, vox_path, images.shape[0])
            n = images.shape[0]
            if cfg.max_instances_per_class:
                n = min(n, cfg.max_instances_per_class)
            views = choose_views(cfg, n, _rng(seed, class_id, split))
            for i in range(n):
                instance = f"{class_id}_{split}_{i:05d}"
                grid = nmr_voxels_to_world(voxels[i].astype(bool))
                for v in views[i]:
                    item_id = f"{instance}_v{v:02d}"
                    source = f"{img_path}[{i}, view {v}]"
                    rgba = images[i, v]  # (4, S, S)
                    if not rgba[3].any():
                        yield Rejected(item_id, source, "empty alpha channel (no object pixels)")
                        continue
                    R, t = poses[v]
                    yield RawItem(
                        id=item_id,
                        category=name,
                        source=source,
                        rgb=np.ascontiguousarray(rgba[:3].transpose(1, 2, 0)),
                        mask=np.ascontiguousarray(rgba[3]),
                        split=split,
                        instance=instance,
                        azimuth_deg=view_azimuth_deg(v),
                        elevation_deg=KATO_ELEVATION_DEG,
                        distance=KATO_DISTANCE,
                        gt={"voxels": grid, "R": R, "t": t, "fov_deg": fov},
                    )

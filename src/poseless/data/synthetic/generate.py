"""The synthetic adapter: shapes x views -> :class:`poseless.data.raw.RawItem` with exact ground truth.

Determinism: instance ``k`` of category ``c`` draws everything (shape, colours, views,
surface samples) from ``np.random.SeedSequence([seed, CATEGORIES.index(c), k])``, so an
item's bytes depend neither on the other categories selected, nor on the number of
worker processes, nor on the order the workers finish in (results are re-ordered).
The split of a category's instances is a seeded permutation cut by ``split_fractions``.

Spawned workers never import torch: the parent computes the poses (``kato_extrinsics``)
and the pixel ray directions (``camera_rays``) and hands them over, which keeps a
worker's start-up to the cost of importing numpy, trimesh and manifold3d.
"""

from __future__ import annotations

import math
import multiprocessing
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from poseless.config import AzimuthConfig, ElevationConfig, SyntheticConfig
from poseless.data.raw import RawItem

from . import raycast
from .raycast import camera_frame_directions, render_view, sample_surface, voxelize_filled
from .shapes import CATEGORIES, check_category, make_shape

_SPLIT_STREAM = 1_000_003
"""Third seed-sequence word of the per-category split permutation (never an instance index)."""


def check_config(cfg: SyntheticConfig) -> None:
    """Raise ValueError naming the ``prepare_data.synthetic`` field when ``cfg`` is unusable."""
    where = "prepare_data.synthetic"
    if not cfg.categories:
        raise ValueError(f"{where}.categories: empty (known: {', '.join(CATEGORIES)})")
    for c in cfg.categories:
        try:
            check_category(c)
        except ValueError as exc:
            raise ValueError(f"{where}.categories: {exc}") from None
    if len(set(cfg.categories)) != len(cfg.categories):
        raise ValueError(f"{where}.categories: duplicates in {list(cfg.categories)}")
    for name in (
        "instances_per_category",
        "views_per_instance",
        "render_size",
        "voxel_resolution",
        "workers",
    ):
        if getattr(cfg, name) < 1:
            raise ValueError(f"{where}.{name}: must be >= 1, got {getattr(cfg, name)}")
    if cfg.n_surface_points < 0:
        raise ValueError(f"{where}.n_surface_points: must be >= 0, got {cfg.n_surface_points}")
    fr = cfg.split_fractions
    if min(fr) < 0 or not math.isclose(sum(fr), 1.0, abs_tol=1e-6):
        raise ValueError(
            f"{where}.split_fractions: need non-negative fractions summing to 1, got {list(fr)}"
        )
    if not 0.0 < cfg.fov_deg < 180.0:
        raise ValueError(f"{where}.fov_deg: must be in (0, 180), got {cfg.fov_deg}")
    # shapes fit in the unit cube: the camera must stay outside its circumscribed sphere
    if cfg.distance <= math.sqrt(3.0) / 2.0:
        raise ValueError(
            f"{where}.distance: must exceed sqrt(3)/2 (the shapes' bounding sphere), got {cfg.distance}"
        )
    az = cfg.azimuth
    if az.mode == "discrete":
        if not az.values_deg:
            raise ValueError(f"{where}.azimuth.values_deg: discrete mode needs at least one value")
        if az.weights and len(az.weights) != len(az.values_deg):
            raise ValueError(
                f"{where}.azimuth.weights: {len(az.weights)} weights for {len(az.values_deg)} values_deg"
            )
        if az.weights and (min(az.weights) < 0 or sum(az.weights) <= 0):
            raise ValueError(
                f"{where}.azimuth.weights: need non-negative weights with a positive sum"
            )
    if az.jitter_deg < 0:
        raise ValueError(f"{where}.azimuth.jitter_deg: must be >= 0, got {az.jitter_deg}")
    el = cfg.elevation
    values = [el.value_deg] if el.mode == "fixed" else list(el.range_deg)
    if el.mode == "uniform" and el.range_deg[0] > el.range_deg[1]:
        raise ValueError(f"{where}.elevation.range_deg: low > high in {list(el.range_deg)}")
    if any(not -90.0 < v < 90.0 for v in values):
        raise ValueError(f"{where}.elevation: elevations must lie in (-90, 90), got {values}")


def sample_azimuths(az: AzimuthConfig, rng: np.random.Generator, n: int) -> np.ndarray:
    """(n,) azimuths in degrees in [0, 360): uniform, or discrete values (weights) + uniform jitter."""
    if az.mode == "uniform":
        return rng.uniform(0.0, 360.0, size=n)
    values = np.asarray(az.values_deg, dtype=np.float64)
    w = np.asarray(az.weights, dtype=np.float64) if az.weights else np.ones(len(values))
    cdf = np.cumsum(w / w.sum())
    pick = np.minimum(np.searchsorted(cdf, rng.random(n), side="right"), len(values) - 1)
    jitter = rng.uniform(-az.jitter_deg, az.jitter_deg, size=n)
    return np.mod(values[pick] + jitter, 360.0)


def sample_elevations(el: ElevationConfig, rng: np.random.Generator, n: int) -> np.ndarray:
    """(n,) elevations in degrees: fixed, or uniform in ``range_deg``."""
    if el.mode == "fixed":
        return np.full(n, float(el.value_deg))
    return rng.uniform(el.range_deg[0], el.range_deg[1], size=n)


def instance_splits(cfg: SyntheticConfig, seed: int, category: str) -> list[str]:
    """Split name of each of ``category``'s instances (seeded permutation, exact fraction counts)."""
    n = cfg.instances_per_category
    n_train = int(round(cfg.split_fractions[0] * n))
    n_val = min(int(round(cfg.split_fractions[1] * n)), n - n_train)
    rng = np.random.default_rng(
        np.random.SeedSequence([seed, check_category(category), _SPLIT_STREAM])
    )
    perm = rng.permutation(n)
    splits = np.empty(n, dtype=object)
    splits[perm[:n_train]] = "train"
    splits[perm[n_train : n_train + n_val]] = "val"
    splits[perm[n_train + n_val :]] = "test"
    return [str(s) for s in splits]


@dataclass(frozen=True)
class InstanceViews:
    """The views of one instance."""

    azimuth_deg: np.ndarray
    """(V,) azimuths in degrees, in [0, 360)."""
    elevation_deg: np.ndarray
    """(V,) elevations in degrees."""
    R: np.ndarray
    """(V, 3, 3) float64 world->camera rotations (Kato look-at, OpenCV frame)."""
    t: np.ndarray
    """(V, 3) float64 translations."""


def _instance_seeds(seed: int, category: str, index: int) -> list[np.random.SeedSequence]:
    """Independent streams of one instance: shape, views, surface samples."""
    return np.random.SeedSequence([seed, check_category(category), index]).spawn(3)


def instance_views(cfg: SyntheticConfig, seed: int, category: str, index: int) -> InstanceViews:
    """Sample the views of one instance and their Kato extrinsics."""
    import torch  # here, not at module level: see the module docstring

    from poseless.geometry.cameras import kato_extrinsics

    rng = np.random.default_rng(_instance_seeds(seed, category, index)[1])
    n = cfg.views_per_instance
    az_deg = sample_azimuths(cfg.azimuth, rng, n)
    el_deg = sample_elevations(cfg.elevation, rng, n)
    R, t = kato_extrinsics(
        torch.as_tensor(np.radians(az_deg), dtype=torch.float64),
        torch.as_tensor(np.radians(el_deg), dtype=torch.float64),
        float(cfg.distance),
    )
    return InstanceViews(az_deg, el_deg, R.numpy(), t.numpy())


def instance_items(
    cfg: SyntheticConfig,
    seed: int,
    category: str,
    index: int,
    split: str,
    shape_gt: bool = True,
    views: InstanceViews | None = None,
) -> list[RawItem]:
    """All views of one instance as RawItems (the unit of work of a worker).

    Args:
        shape_gt: also compute mesh, filled voxels and surface samples (the slow part);
            False gives image, mask, normals, depth and pose only.
        views: the instance's views from :func:`instance_views` (computed here when None).
    """
    shape_ss, _, point_ss = _instance_seeds(seed, category, index)
    shape = make_shape(category, np.random.default_rng(shape_ss))
    if views is None:
        views = instance_views(cfg, seed, category, index)
    n = cfg.views_per_instance
    az_deg, el_deg = views.azimuth_deg, views.elevation_deg
    shared: dict[str, np.ndarray] = {"shape_params": shape.shape_params}
    if shape_gt:
        points, point_normals = sample_surface(
            shape.mesh, cfg.n_surface_points, np.random.default_rng(point_ss)
        )
        shared.update(
            vertices=np.asarray(shape.mesh.vertices, dtype=np.float32),
            faces=np.asarray(shape.mesh.faces, dtype=np.int32),
            voxels=voxelize_filled(shape.mesh.vertices, shape.mesh.faces, cfg.voxel_resolution),
            points=points,
            point_normals=point_normals,
        )
    instance = f"{category}_{index:05d}"
    items = []
    for v in range(n):
        R, t = views.R[v], views.t[v]
        view = render_view(shape, R, t, cfg.fov_deg, cfg.render_size)
        gt = dict(shared)
        gt.update(
            normals=view.normals.astype(np.float16),
            depth=view.depth,
            R=R.astype(np.float32),
            t=t.astype(np.float32),
            fov_deg=np.asarray(cfg.fov_deg, dtype=np.float32),
        )
        items.append(
            RawItem(
                id=instance if v == 0 else f"{instance}_v{v}",
                category=category,
                source=f"synthetic:seed={seed}:{category}:{index}",
                rgb=view.rgb,
                mask=view.mask,
                split=split,
                instance=instance,
                azimuth_deg=float(az_deg[v]),
                elevation_deg=float(el_deg[v]),
                distance=float(cfg.distance),
                gt=gt,
            )
        )
    return items


def _init_worker(directions: dict[tuple[float, int], np.ndarray]) -> None:
    """Pool initializer: install the parent's pixel ray directions (no torch in workers)."""
    raycast._DIRECTIONS.update(directions)


def _work(task) -> list[RawItem]:
    """Worker entry point (module level: picklable under the spawn start method)."""
    return instance_items(*task)


def iter_items(cfg: SyntheticConfig, seed: int, *, shape_gt: bool = True) -> Iterator[RawItem]:
    """Generate the whole synthetic collection, in a fixed order.

    Order: categories as listed in ``cfg.categories``, instances 0..N-1, views 0..V-1.
    Uses ``cfg.workers`` spawned processes when > 1; the output is identical for any
    number of workers.

    Args:
        cfg: the ``prepare_data.synthetic`` section (checked by :func:`check_config`).
        seed: global seed.
        shape_gt: False skips the mesh, voxel and surface-point ground truth.
    Yields:
        RawItem with split, pose and ``gt`` (keys of ``poseless.data.prepared.GT_KEYS``).
    """
    check_config(cfg)
    tasks = []
    for category in cfg.categories:
        splits = instance_splits(cfg, seed, category)
        tasks += [
            (cfg, seed, category, k, splits[k], shape_gt) for k in range(cfg.instances_per_category)
        ]
    if cfg.workers == 1 or len(tasks) == 1:
        for task in tasks:
            yield from instance_items(*task)
        return
    directions = {
        (float(cfg.fov_deg), cfg.render_size): camera_frame_directions(cfg.fov_deg, cfg.render_size)
    }
    ctx = multiprocessing.get_context("spawn")
    pool = ctx.Pool(min(cfg.workers, len(tasks)), initializer=_init_worker, initargs=(directions,))
    try:
        chunk = max(1, min(8, len(tasks) // (4 * cfg.workers)))
        jobs = (task + (instance_views(cfg, seed, task[2], task[3]),) for task in tasks)
        for items in pool.imap(_work, jobs, chunksize=chunk):
            yield from items
        pool.close()
    finally:
        pool.terminate()
        pool.join()

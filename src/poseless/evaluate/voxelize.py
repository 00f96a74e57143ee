"""Mesh -> filled occupancy grid (URA's 3D IoU evaluation, REFERENCE.md "Evaluation (3D IoU)").

Grid convention (the project's GT convention, ``poseless.data.prepared.GT_KEYS``):
a (R, R, R) bool array indexed [x, y, z] over [-bound, bound]^3 (bound 0.5), cell
``i`` spanning ``[-bound + i h, -bound + (i + 1) h]`` with ``h = 2 bound / R``, so
its centre is ``-0.5 + (i + 0.5) / R`` for the default bound.

Algorithm:

1. **Surface voxels** (exact): a cell is a surface cell when its closed box meets
   a triangle. Triangles are split at edge midpoints until their bounding boxes
   are no larger than one cell, so each touches at most 2 x 2 x 2 cells; cells
   holding a vertex are marked at once, the other candidates are tested with the
   separating-axis triangle/box test (Akenine-Moeller: 3 box normals, the
   triangle normal, 9 edge cross products). Triangles wider than 8 cells are
   instead tested against every cell of their grid-clipped bounding box, so huge
   triangles cost time, not memory. No surface cell is missed, whatever the
   triangle sizes. (A triangle lying exactly on a cell face may mark the cell on
   one side only, which still seals the surface.)
2. **Filling**: the exterior is flood-filled (6-connected) from outside the grid
   through non-surface cells; the shape is every cell not in the exterior.

Step 2 needs no orientation or watertightness: self-intersecting, open (with
holes smaller than a cell) or multi-component meshes voxelise sensibly. Parts
of a mesh outside the grid are ignored, so a shape cut open by the grid border
is not filled there.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

_PAIR_CHUNK = 200_000
_MAX_SUBDIVISION_LEVELS = 16
_BIG_TRIANGLE_CELLS = 8
"""Triangles wider than this many cells are tested against their whole bbox instead of split."""


def cell_centers(resolution: int, bound: float = 0.5) -> np.ndarray:
    """(R,) centres of the cells along one axis: -bound + (i + 0.5) * 2 bound / R."""
    return -bound + (np.arange(resolution) + 0.5) * (2.0 * bound / resolution)


def _check_mesh(vertices, faces) -> tuple[np.ndarray, np.ndarray]:
    v = np.asarray(vertices, dtype=np.float64)
    f = np.asarray(faces)
    if v.ndim != 2 or v.shape[1] != 3:
        raise ValueError(f"vertices must have shape (V, 3), got {v.shape}")
    if f.ndim != 2 or (f.shape[1] != 3 and f.size > 0):
        raise ValueError(f"faces must have shape (F, 3), got {f.shape}")
    f = f.reshape(-1, 3).astype(np.int64)
    if f.size and (f.min() < 0 or f.max() >= len(v)):
        raise ValueError(
            f"faces index vertices out of range [0, {len(v)}): min {f.min()}, max {f.max()}"
        )
    if not np.all(np.isfinite(v)):
        raise ValueError("vertices hold non-finite values")
    return v, f


def _min3(x: np.ndarray) -> np.ndarray:
    """(T, 3, ...) -> (T, ...) minimum over axis 1 (faster than .min for tiny axes)."""
    return np.minimum(np.minimum(x[:, 0], x[:, 1]), x[:, 2])


def _max3(x: np.ndarray) -> np.ndarray:
    """(T, 3, ...) -> (T, ...) maximum over axis 1."""
    return np.maximum(np.maximum(x[:, 0], x[:, 1]), x[:, 2])


def _subdivide_to_cell_size(tris: np.ndarray, h: float) -> np.ndarray:
    """Split (T, 3, 3) triangles at edge midpoints until every bbox extent <= h."""
    done = []
    for _ in range(_MAX_SUBDIVISION_LEVELS):
        extent = _max3(tris) - _min3(tris)  # (T, 3)
        small = (extent[:, 0] <= h) & (extent[:, 1] <= h) & (extent[:, 2] <= h)
        done.append(tris[small])
        tris = tris[~small]
        if len(tris) == 0:
            break
        a, b, c = tris[:, 0], tris[:, 1], tris[:, 2]
        ab, bc, ca = (a + b) / 2, (b + c) / 2, (c + a) / 2
        tris = np.concatenate(
            [
                np.stack([a, ab, ca], 1),
                np.stack([ab, b, bc], 1),
                np.stack([ca, bc, c], 1),
                np.stack([ab, bc, ca], 1),
            ]
        )
    else:
        done.append(tris)  # degenerate leftovers (cannot happen for finite input)
    return np.concatenate(done) if done else np.zeros((0, 3, 3))


def triangle_box_overlap(tris: np.ndarray, centers: np.ndarray, half: float) -> np.ndarray:
    """Separating-axis test of triangles against axis-aligned cubes (closed: touching counts).

    Args:
        tris: (P, 3, 3) triangle vertices.
        centers: (P, 3) cube centres.
        half: half side of the cubes.
    Returns:
        (P,) bool, True where triangle p meets cube p.
    """
    v = np.moveaxis(tris - centers[:, None, :], 0, -1)  # (3 vertices, 3 coords, P)
    tol = 1e-9 * half
    vmin = np.minimum(np.minimum(v[0], v[1]), v[2])  # (3, P)
    vmax = np.maximum(np.maximum(v[0], v[1]), v[2])
    sep = ((vmin > half + tol) | (vmax < -half - tol)).any(axis=0)  # box normals
    f = np.stack([v[1] - v[0], v[2] - v[1], v[0] - v[2]])  # (3 edges, 3 coords, P)
    n = np.cross(f[0], f[1], axis=0)  # (3, P) triangle normal
    d = (n * v[0]).sum(axis=0)
    sep |= np.abs(d) > (half + tol) * np.abs(n).sum(axis=0)
    fx, fy, fz = f[:, 0], f[:, 1], f[:, 2]  # (3 edges, P)
    vx, vy, vz = v[:, 0, None], v[:, 1, None], v[:, 2, None]  # (3 vertices, 1, P)
    # the 9 axes e_i x f_j, as (a_x, a_y, a_z) with shapes broadcastable to (3 edges, P)
    for ax, ay, az in ((0.0, -fz, fy), (fz, 0.0, -fx), (-fy, fx, 0.0)):
        p = ax * vx + ay * vy + az * vz  # (3 vertices, 3 edges, P)
        r = (half + tol) * (np.abs(ax) + np.abs(ay) + np.abs(az))  # (3 edges, P)
        pmin = np.minimum(np.minimum(p[0], p[1]), p[2])
        pmax = np.maximum(np.maximum(p[0], p[1]), p[2])
        sep |= ((pmin > r) | (pmax < -r)).any(axis=0)
    return ~sep


def _mark_big_triangle(grid, tri, lo, hi, bound, h) -> None:
    """Test one large triangle (3, 3) against every cell of its grid-clipped bbox."""
    r = grid.shape[0]
    i0 = np.clip(np.floor((lo + bound) / h).astype(np.int64), 0, r - 1)
    i1 = np.clip(np.floor((hi + bound) / h).astype(np.int64), 0, r - 1)
    axes = [np.arange(a, b + 1) for a, b in zip(i0, i1)]
    cells = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)
    for s in range(0, len(cells), _PAIR_CHUNK):
        c = cells[s : s + _PAIR_CHUNK]
        tris = np.broadcast_to(tri, (len(c), 3, 3))
        hit = triangle_box_overlap(tris, -bound + (c + 0.5) * h, h / 2)
        grid[tuple(c[hit].T)] = True


def surface_voxels(vertices, faces, resolution: int = 32, bound: float = 0.5) -> np.ndarray:
    """Cells whose closed box meets the mesh surface.

    Args:
        vertices: (V, 3) float, faces: (F, 3) int.
        resolution: R cells per axis over [-bound, bound]^3.
    Returns:
        (R, R, R) bool indexed [x, y, z].
    """
    if resolution < 1:
        raise ValueError(f"resolution must be >= 1, got {resolution}")
    v, f = _check_mesh(vertices, faces)
    grid = np.zeros((resolution,) * 3, dtype=bool)
    if len(f) == 0:
        return grid
    h = 2.0 * bound / resolution
    tris = v[f]  # (T, 3, 3)
    tmin, tmax = _min3(tris), _max3(tris)  # (T, 3)
    inside = ((tmax >= -bound) & (tmin <= bound)).all(axis=1)
    tris, tmin, tmax = tris[inside], tmin[inside], tmax[inside]
    big = (tmax - tmin).max(axis=1) > _BIG_TRIANGLE_CELLS * h
    for tri, lo, hi in zip(tris[big], tmin[big], tmax[big]):
        _mark_big_triangle(grid, tri, lo, hi, bound, h)
    tris = _subdivide_to_cell_size(tris[~big], h)
    if len(tris) == 0:
        return grid
    flat_grid = grid.reshape(-1)
    r = resolution

    def cell_id(ix, iy, iz):
        """Linear cell index, -1 outside the grid."""
        ok = (ix >= 0) & (ix < r) & (iy >= 0) & (iy < r) & (iz >= 0) & (iz < r)
        return np.where(ok, (ix * r + iy) * r + iz, -1)

    # Cells holding a vertex certainly meet its triangle: mark them without a test.
    vidx = np.floor((tris + bound) / h).astype(np.int64)  # (T, 3 vertices, 3 coords)
    vid = cell_id(vidx[..., 0], vidx[..., 1], vidx[..., 2])  # (T, 3)
    flat_grid[vid[vid >= 0]] = True
    lo = _min3(vidx)  # (T, 3)
    span = np.minimum(_max3(vidx) - lo, 1)  # bbox extent <= h spans <= 2 cells per axis
    multi = (span > 0).any(axis=1)
    tris, lo, span, vid = tris[multi], lo[multi], span[multi], vid[multi]
    tri_ids, cells = [], []
    for dx, dy, dz in [(i, j, k) for i in (0, 1) for j in (0, 1) for k in (0, 1)]:
        cid = cell_id(lo[:, 0] + dx, lo[:, 1] + dy, lo[:, 2] + dz)
        need = (dx <= span[:, 0]) & (dy <= span[:, 1]) & (dz <= span[:, 2]) & (cid >= 0)
        need &= (cid != vid[:, 0]) & (cid != vid[:, 1]) & (cid != vid[:, 2])
        idx = np.nonzero(need)[0]
        tri_ids.append(idx)
        cells.append(cid[idx])
    tri_id = np.concatenate(tri_ids)
    cid = np.concatenate(cells)  # candidates that need the separating-axis test
    for s in range(0, len(cid), _PAIR_CHUNK):
        c = cid[s : s + _PAIR_CHUNK]
        ijk = np.stack([c // (r * r), (c // r) % r, c % r], axis=-1)
        centers = -bound + (ijk + 0.5) * h
        hit = triangle_box_overlap(tris[tri_id[s : s + _PAIR_CHUNK]], centers, h / 2)
        flat_grid[c[hit]] = True
    return grid


def fill_exterior(surface: np.ndarray) -> np.ndarray:
    """Filled occupancy from surface cells: everything not 6-connected to outside the grid.

    Args:
        surface: (R, R, R) bool surface cells.
    Returns:
        (R, R, R) bool: surface plus enclosed cells.
    """
    surface = np.asarray(surface, dtype=bool)
    if surface.ndim != 3:
        raise ValueError(f"surface must be a 3D grid, got shape {surface.shape}")
    return ndimage.binary_fill_holes(surface)


def voxelize_mesh(vertices, faces, resolution: int = 32, bound: float = 0.5) -> np.ndarray:
    """Filled voxels of a mesh (surface cells, then exterior flood fill).

    Args:
        vertices: (V, 3) float world coordinates, faces: (F, 3) int.
        resolution: R cells per axis over [-bound, bound]^3 (32 for URA's IoU).
    Returns:
        (R, R, R) bool indexed [x, y, z]; all False for a mesh without faces.
    """
    return fill_exterior(surface_voxels(vertices, faces, resolution, bound))

"""Mesh extraction from a signed distance field (ShapeClipper's evaluation).

The SDF is sampled on a regular grid of ``resolution`` points per axis over
``[-bound, bound]^3`` (default 101^3 over [-0.6, 0.6]^3, REFERENCE.md
"Evaluation"), evaluated in chunks through a callable, and the zero level set is
extracted with marching cubes (pymcubes).

Conventions:

* The SDF is negative inside, positive outside.
* Grid sample ``[i, j, k]`` sits at world ``(x_i, y_j, z_k)`` with
  ``x_i = -bound + i * 2 * bound / (resolution - 1)`` (``linspace``, both ends
  included), so a marching-cubes vertex at index coordinates ``v`` maps to
  ``-bound + v * 2 * bound / (resolution - 1)``. (The authors' code divides by the
  number of samples instead of the number of intervals, which shrinks meshes by
  1 %; we use the exact mapping.)
* Faces are wound so that their normals point outwards (towards larger SDF).
* A grid without a zero crossing (or with non-finite values) gives an empty mesh
  and a warning instead of an exception: a diverged or collapsed model must still
  be evaluated (and score badly).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import mcubes
import numpy as np
import torch


@dataclass(frozen=True)
class ExtractSettings:
    """How an SDF is sampled and meshed."""

    resolution: int = 101
    """Grid samples per axis (ShapeClipper: 101, i.e. 100 cells)."""
    bound: float = 0.6
    """The grid covers [-bound, bound]^3."""
    chunk: int = 65536
    """Points per call of the SDF callable."""
    level: float = 0.0
    """Iso-value of the extracted surface."""

    def __post_init__(self):
        if self.resolution < 2:
            raise ValueError(f"ExtractSettings.resolution must be >= 2, got {self.resolution}")
        if not self.bound > 0:
            raise ValueError(f"ExtractSettings.bound must be > 0, got {self.bound}")
        if self.chunk < 1:
            raise ValueError(f"ExtractSettings.chunk must be >= 1, got {self.chunk}")


@dataclass(frozen=True)
class ExtractedMesh:
    """A triangle mesh extracted from an SDF grid."""

    vertices: np.ndarray
    """(V, 3) float32 world-frame vertices; (0, 3) when empty."""
    faces: np.ndarray
    """(F, 3) int64 vertex indices, outward winding; (0, 3) when empty."""
    warning: str
    """'' when fine, otherwise what went wrong (empty shape, non-finite SDF, open at the grid boundary)."""

    @property
    def empty(self) -> bool:
        """Whether the mesh has no faces."""
        return len(self.faces) == 0


def empty_mesh(warning: str) -> ExtractedMesh:
    """An empty mesh carrying ``warning``."""
    return ExtractedMesh(np.zeros((0, 3), np.float32), np.zeros((0, 3), np.int64), warning)


def grid_coordinates(resolution: int, bound: float) -> np.ndarray:
    """(resolution,) float64 sample positions along one axis: linspace(-bound, bound)."""
    return np.linspace(-bound, bound, resolution)


@torch.no_grad()
def sample_sdf_grid(
    sdf_fn: Callable[[torch.Tensor], torch.Tensor],
    settings: ExtractSettings = ExtractSettings(),
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> np.ndarray:
    """Evaluate ``sdf_fn`` on the grid of ``settings``.

    Args:
        sdf_fn: maps points (N, 3) on ``device`` to SDF values (N,) (or (N, 1)).
        settings: grid resolution, bound and chunk size.
        device: where the points are made; default CPU.
    Returns:
        sdf: (R, R, R) float32 numpy array indexed [x, y, z].
    """
    res = settings.resolution
    axis = torch.linspace(-settings.bound, settings.bound, res, device=device, dtype=dtype)
    n = res**3
    out = np.empty(n, dtype=np.float32)
    for start in range(0, n, settings.chunk):
        idx = torch.arange(start, min(start + settings.chunk, n), device=device)
        ix = torch.div(idx, res * res, rounding_mode="floor")
        iy = torch.div(idx, res, rounding_mode="floor") % res
        iz = idx % res
        pts = torch.stack([axis[ix], axis[iy], axis[iz]], dim=-1)  # (N, 3)
        val = sdf_fn(pts)
        if not isinstance(val, torch.Tensor):
            raise TypeError(f"sdf_fn must return a torch.Tensor, got {type(val).__name__}")
        if val.shape not in ((len(pts),), (len(pts), 1)):
            raise ValueError(
                f"sdf_fn returned shape {tuple(val.shape)} for {len(pts)} points; expected "
                f"({len(pts)},) or ({len(pts)}, 1)"
            )
        out[start : start + len(pts)] = val.reshape(-1).float().cpu().numpy()
    return out.reshape(res, res, res)


def mesh_from_sdf_grid(sdf: np.ndarray, bound: float = 0.6, level: float = 0.0) -> ExtractedMesh:
    """Marching cubes on an SDF grid sampled as in ``sample_sdf_grid``.

    Args:
        sdf: (R, R, R) SDF values indexed [x, y, z] over [-bound, bound]^3, R >= 2.
        bound: half-side of the sampled cube.
        level: iso-value.
    Returns:
        The mesh in world coordinates; empty with a warning when the grid has no
        crossing of ``level`` or holds non-finite values.
    """
    sdf = np.asarray(sdf)
    if sdf.ndim != 3 or len(set(sdf.shape)) != 1 or sdf.shape[0] < 2:
        raise ValueError(f"sdf must be a cubic (R, R, R) grid with R >= 2, got shape {sdf.shape}")
    if not np.all(np.isfinite(sdf)):
        bad = int(np.size(sdf) - np.isfinite(sdf).sum())
        return empty_mesh(f"SDF grid holds {bad} non-finite values; no mesh extracted")
    lo, hi = float(sdf.min()), float(sdf.max())
    if lo > level:
        return empty_mesh(f"SDF > {level} everywhere on the grid (min {lo:.4g}): empty shape")
    if hi < level:
        return empty_mesh(
            f"SDF < {level} everywhere on the grid (max {hi:.4g}): shape fills the grid"
        )
    verts, faces = mcubes.marching_cubes(sdf.astype(np.float64), float(level))
    if len(faces) == 0:
        return empty_mesh(f"marching cubes found no surface at level {level}")
    res = sdf.shape[0]
    verts = -bound + verts * (2.0 * bound / (res - 1))
    # pymcubes treats values above the level as inside; our SDF is negative inside.
    faces = np.ascontiguousarray(faces[:, ::-1].astype(np.int64))
    warning = ""
    border = np.concatenate(
        [sdf[[0, -1]].ravel(), sdf[:, [0, -1]].ravel(), sdf[:, :, [0, -1]].ravel()]
    )
    if border.min() <= level:
        warning = f"surface reaches the grid boundary (+-{bound}); the mesh is open there"
    return ExtractedMesh(verts.astype(np.float32), faces, warning)


def extract_mesh(
    sdf_fn: Callable[[torch.Tensor], torch.Tensor],
    settings: ExtractSettings = ExtractSettings(),
    device: torch.device | str | None = None,
) -> ExtractedMesh:
    """SDF callable -> mesh: ``sample_sdf_grid`` then ``mesh_from_sdf_grid``.

    Args:
        sdf_fn: maps points (N, 3) float32 on ``device`` to SDF values (N,).
    Returns:
        The extracted mesh (possibly empty, with ``warning`` set).
    """
    grid = sample_sdf_grid(sdf_fn, settings, device=device)
    return mesh_from_sdf_grid(grid, settings.bound, settings.level)

"""Exact, independent ground truth for synthetic shapes: ray-cast views, filled voxels, surface samples.

The renderer casts one ray per pixel centre (``poseless.geometry.cameras`` rays, so image
conventions are shared with the rest of the project) against the mesh with embree
(``trimesh.ray.ray_pyembree.RayMeshIntersector``) and then recomputes the hit distance
exactly in float64 against the hit triangle's plane. It is deliberately not a
differentiable renderer: it is the reference the learned renderers are judged against.

Shading: per-part colour times ``AMBIENT + DIFFUSE * max(0, n . l)`` with a fixed light
direction ``LIGHT_DIR_CAM`` in the camera frame (Lambertian, flat per-face normals).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import trimesh
from trimesh.ray.ray_pyembree import RayMeshIntersector

from .shapes import SyntheticShape

LIGHT_DIR_CAM = np.array([-0.3, -0.5, -1.0]) / np.linalg.norm([-0.3, -0.5, -1.0])
"""Unit direction towards the light in the OpenCV camera frame (upper left, behind the camera)."""
AMBIENT = 0.3
"""Ambient shading term."""
DIFFUSE = 0.7
"""Lambertian shading weight."""


@dataclass(frozen=True)
class ViewRender:
    """One ray-cast view of a shape."""

    rgb: np.ndarray
    """(H, W, 3) uint8 shaded per-part colours, black off the mask."""
    mask: np.ndarray
    """(H, W) uint8, 255 where the pixel-centre ray hits the mesh, else 0."""
    normals: np.ndarray
    """(3, H, W) float32 camera-frame unit normals facing the camera, 0 off the mask."""
    depth: np.ndarray
    """(H, W) float32 camera-frame z of the hit point, 0 off the mask."""


def _check_pose(
    R: np.ndarray, t: np.ndarray, fov_deg: float, size: int
) -> tuple[np.ndarray, np.ndarray]:
    R = np.asarray(R, dtype=np.float64)
    t = np.asarray(t, dtype=np.float64)
    if R.shape != (3, 3) or t.shape != (3,):
        raise ValueError(f"render_view: R must be (3, 3) and t (3,), got {R.shape} and {t.shape}")
    if not np.allclose(R @ R.T, np.eye(3), atol=1e-5) or np.linalg.det(R) < 0:
        raise ValueError("render_view: R is not a rotation matrix")
    if not 0.0 < fov_deg < 180.0:
        raise ValueError(f"render_view: fov_deg must be in (0, 180), got {fov_deg}")
    if int(size) != size or size < 1:
        raise ValueError(f"render_view: size must be a positive integer, got {size}")
    return R, t


_DIRECTIONS: dict[tuple[float, int], np.ndarray] = {}
"""Cache of camera-frame pixel ray directions by (fov_deg, size); filled in spawned workers
by ``generate``'s pool initializer so that workers never import torch."""


def camera_frame_directions(fov_deg: float, size: int) -> np.ndarray:
    """(size*size, 3) float64 unit ray directions through the pixel centres, camera frame.

    Computed once per (fov, size) with ``camera_rays`` at the identity pose, so the pixel
    and NDC conventions are exactly those of ``poseless.geometry.cameras``.
    """
    key = (float(fov_deg), int(size))
    if key not in _DIRECTIONS:
        # imported here, not at module level: spawned workers get the directions from the
        # parent and skip importing torch (seconds per worker on a small machine)
        import torch

        from poseless.geometry.cameras import camera_rays, pixel_centers_ndc

        ndc = pixel_centers_ndc(key[1], key[1], dtype=torch.float64).reshape(-1, 2)
        eye = torch.eye(3, dtype=torch.float64)[None]
        zero = torch.zeros(1, 3, dtype=torch.float64)
        _, d = camera_rays(eye, zero, math.tan(math.radians(key[0]) / 2.0), ndc)
        out = d[0].numpy().copy()
        out.setflags(write=False)
        _DIRECTIONS[key] = out
    return _DIRECTIONS[key]


def pixel_rays(
    R: np.ndarray, t: np.ndarray, fov_deg: float, size: int
) -> tuple[np.ndarray, np.ndarray]:
    """World-frame rays through the pixel centres, row-major (pixel (i, j) is ray i * size + j).

    Same rays as ``camera_rays(R, t, tan(fov / 2), pixel_centers_ndc(size, size))``.

    Args:
        R: (3, 3) world->camera rotation; t: (3,) translation.
    Returns:
        origins: (H*W, 3) float64 camera centre; directions: (H*W, 3) float64 unit vectors.
    """
    R = np.asarray(R, dtype=np.float64)
    t = np.asarray(t, dtype=np.float64)
    d_world = camera_frame_directions(fov_deg, size) @ R  # rows: R^T d_cam
    d_world /= np.linalg.norm(d_world, axis=1, keepdims=True)
    eye = -R.T @ t
    return np.broadcast_to(eye, d_world.shape).copy(), d_world


def cast_first_hits(
    mesh: trimesh.Trimesh, origins: np.ndarray, directions: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """First intersection of each ray with ``mesh``.

    Args:
        origins, directions: (N, 3) float64 rays (unit directions).
    Returns:
        ray_index: (K,) rays that hit; tri_index: (K,) hit faces; dist: (K,) float64 exact
        distance along the ray to the hit triangle's plane.
    """
    tri, ray = RayMeshIntersector(mesh).intersects_id(
        origins, directions, multiple_hits=False, return_locations=False
    )
    ray = np.asarray(ray, dtype=np.int64)
    tri = np.asarray(tri, dtype=np.int64)
    order = np.argsort(ray, kind="stable")
    ray, tri = ray[order], tri[order]
    n = mesh.face_normals[tri]
    v0 = mesh.vertices[mesh.faces[tri, 0]]
    denom = np.einsum("ij,ij->i", n, directions[ray])
    safe = np.where(np.abs(denom) < 1e-12, 1e-12, denom)
    dist = np.einsum("ij,ij->i", n, v0 - origins[ray]) / safe
    return ray, tri, dist


def render_view(shape: SyntheticShape, R, t, fov_deg: float, size: int) -> ViewRender:
    """Ray-cast one view of ``shape``.

    Args:
        shape: the shape (mesh, face parts, part colours).
        R: (3, 3) world->camera rotation (OpenCV frame); t: (3,) translation.
        fov_deg: full field of view in degrees; size: image side H = W.
    Returns:
        :class:`ViewRender` with rgb (H, W, 3), mask (H, W), normals (3, H, W), depth (H, W).
    """
    R, t = _check_pose(R, t, fov_deg, size)
    origins, dirs = pixel_rays(R, t, fov_deg, size)
    ray, tri, dist = cast_first_hits(shape.mesh, origins, dirs)
    n_pix = size * size
    hit_points = origins[ray] + dist[:, None] * dirs[ray]
    depth = np.zeros(n_pix, dtype=np.float64)
    depth[ray] = hit_points @ R[2] + t[2]
    d_cam = dirs[ray] @ R.T
    n_cam = shape.mesh.face_normals[tri] @ R.T
    facing = np.einsum("ij,ij->i", n_cam, d_cam)
    n_cam = np.where((facing > 0)[:, None], -n_cam, n_cam)
    norm = np.linalg.norm(n_cam, axis=1, keepdims=True)
    n_cam = np.where(norm > 1e-12, n_cam / np.maximum(norm, 1e-12), -d_cam)
    normals = np.zeros((n_pix, 3), dtype=np.float64)
    normals[ray] = n_cam
    shade = AMBIENT + DIFFUSE * np.clip(n_cam @ LIGHT_DIR_CAM, 0.0, None)
    colour = shape.part_colors[shape.face_parts[tri]].astype(np.float64) * shade[:, None]
    rgb = np.zeros((n_pix, 3), dtype=np.uint8)
    rgb[ray] = np.clip(np.round(colour * 255.0), 0, 255).astype(np.uint8)
    mask = np.zeros(n_pix, dtype=np.uint8)
    mask[ray] = 255
    return ViewRender(
        rgb=rgb.reshape(size, size, 3),
        mask=mask.reshape(size, size),
        normals=np.ascontiguousarray(normals.T.reshape(3, size, size).astype(np.float32)),
        depth=depth.reshape(size, size).astype(np.float32),
    )


def _edge_inside(ax, ay, bx, by, px, py) -> np.ndarray:
    """Whether p lies strictly left of the directed edge a->b, with a consistent tie-break.

    Points exactly on the edge are decided by a symbolic perturbation p + (e1, e2),
    e1 >> e2 > 0, evaluated on the edge in a canonical (lexicographic) direction so that
    two triangles sharing the edge always disagree: each ray crosses exactly one of them.
    """
    swap = (ax > bx) | ((ax == bx) & (ay > by))
    Px, Py = np.where(swap, bx, ax), np.where(swap, by, ay)
    Qx, Qy = np.where(swap, ax, bx), np.where(swap, ay, by)
    w = (Qx - Px) * (py - Py) - (Qy - Py) * (px - Px)
    tie = np.where(Qy != Py, -(Qy - Py), Qx - Px)
    w_sign = np.where(w != 0, np.sign(w), np.sign(tie))
    w_sign = np.where(swap, -w_sign, w_sign)
    return w_sign > 0


def voxelize_filled(vertices: np.ndarray, faces: np.ndarray, resolution: int) -> np.ndarray:
    """Exact filled occupancy of a watertight mesh on the cell centres of [-0.5, 0.5]^3.

    Casts one ray along +z through every (x, y) column of cell centres, finds all its
    crossings with the triangles (2D point-in-triangle with a consistent tie-break, then
    the plane's z), and marks a cell inside when an odd number of crossings lie below its
    centre (parity rule, valid for watertight meshes).

    Args:
        vertices: (V, 3) float; faces: (F, 3) int; resolution: R.
    Returns:
        (R, R, R) bool indexed [x, y, z]; cell i has its centre at -0.5 + (i + 0.5) / R.
    """
    if resolution < 1:
        raise ValueError(f"voxelize_filled: resolution must be >= 1, got {resolution}")
    R = int(resolution)
    centres = -0.5 + (np.arange(R) + 0.5) / R
    tri = np.asarray(vertices, dtype=np.float64)[np.asarray(faces)]  # (F, 3, 3)
    a, b, c = tri[:, 0], tri[:, 1], tri[:, 2]
    area2 = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])
    keep = area2 != 0
    a, b, c, area2 = a[keep], b[keep], c[keep], area2[keep]
    flip = area2 < 0  # make every projected triangle counter-clockwise
    b, c = np.where(flip[:, None], c, b), np.where(flip[:, None], b, c)
    area2 = np.abs(area2)
    lo = np.minimum(np.minimum(a, b), c)[:, :2]
    hi = np.maximum(np.maximum(a, b), c)[:, :2]
    # candidate cell-centre columns of each triangle's xy bounding box (1 cell of slack)
    i0 = np.clip(np.floor((lo + 0.5) * R - 0.5).astype(np.int64), 0, R - 1)
    i1 = np.clip(np.ceil((hi + 0.5) * R - 0.5).astype(np.int64), 0, R - 1)
    nx, ny = i1[:, 0] - i0[:, 0] + 1, i1[:, 1] - i0[:, 1] + 1
    counts = nx * ny
    tid = np.repeat(np.arange(len(a)), counts)
    local = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    ix = i0[tid, 0] + local // ny[tid]
    iy = i0[tid, 1] + local % ny[tid]
    px, py = centres[ix], centres[iy]
    A, B, C = a[tid], b[tid], c[tid]
    inside = (
        _edge_inside(A[:, 0], A[:, 1], B[:, 0], B[:, 1], px, py)
        & _edge_inside(B[:, 0], B[:, 1], C[:, 0], C[:, 1], px, py)
        & _edge_inside(C[:, 0], C[:, 1], A[:, 0], A[:, 1], px, py)
    )
    ix, iy, px, py = ix[inside], iy[inside], px[inside], py[inside]
    A, B, C, ar = A[inside], B[inside], C[inside], area2[tid[inside]]
    # barycentric interpolation of z at the column
    la = ((B[:, 0] - px) * (C[:, 1] - py) - (B[:, 1] - py) * (C[:, 0] - px)) / ar
    lb = ((C[:, 0] - px) * (A[:, 1] - py) - (C[:, 1] - py) * (A[:, 0] - px)) / ar
    z = la * A[:, 2] + lb * B[:, 2] + (1.0 - la - lb) * C[:, 2]
    first_above = np.searchsorted(centres, z, side="right")  # cells k >= this have centre > z
    crossings = np.zeros((R, R, R + 1), dtype=np.int64)
    np.add.at(crossings, (ix, iy, first_above), 1)
    below = np.cumsum(crossings, axis=2)[:, :, :R]
    return (below % 2).astype(bool)


def sample_surface(
    mesh: trimesh.Trimesh, n: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Area-uniform surface samples.

    Returns:
        points: (n, 3) float32; normals: (n, 3) float32 outward unit face normals.
    """
    if n < 0:
        raise ValueError(f"sample_surface: n must be >= 0, got {n}")
    areas = mesh.area_faces
    cdf = np.cumsum(areas)
    face = np.searchsorted(cdf, rng.random(n) * cdf[-1], side="right")
    face = np.minimum(face, len(areas) - 1)
    r1, r2 = rng.random(n), rng.random(n)
    s = np.sqrt(r1)
    tri = mesh.triangles[face]
    pts = (
        (1 - s)[:, None] * tri[:, 0]
        + (s * (1 - r2))[:, None] * tri[:, 1]
        + (s * r2)[:, None] * tri[:, 2]
    )
    return pts.astype(np.float32), mesh.face_normals[face].astype(np.float32)

"""Shaded renders and turntable GIFs of meshes for the report and ``predict``.

Rendering is exact ray casting (embree through trimesh, one ray per pixel centre
with the rays of :func:`poseless.data.synthetic.raycast.pixel_rays`), never the
training rasterizer: what the report shows is the mesh itself. Shading is
Lambertian with flat face normals turned towards the camera (two-sided, so open
or inside-out meshes still look solid) and a fixed camera-frame light.

Views follow the Kato look-at camera of :mod:`poseless.geometry.cameras`; a
turntable turns the *object* about world y under a fixed camera.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

LIGHT_DIR_CAM = np.array([-0.3, -0.5, -1.0]) / np.linalg.norm([-0.3, -0.5, -1.0])
"""Unit direction towards the light in the OpenCV camera frame (upper left, behind the camera)."""


@dataclass(frozen=True)
class RenderSettings:
    """How a mesh is drawn."""

    size: int = 128
    """Image side in pixels."""
    fov_deg: float = 30.0
    """Full field of view (Kato)."""
    distance: float = 2.732
    """Camera distance from the origin (Kato)."""
    elevation_deg: float = 30.0
    """Camera elevation of turntables and default views."""
    color: tuple[float, float, float] = (0.55, 0.65, 0.85)
    """Surface RGB in [0, 1]."""
    background: tuple[float, float, float] = (1.0, 1.0, 1.0)
    """Background RGB in [0, 1]."""
    ambient: float = 0.3
    """Ambient term of the shading."""

    def __post_init__(self):
        if self.size < 1 or not 0 < self.fov_deg < 180 or self.distance <= 0:
            raise ValueError(
                "RenderSettings: size >= 1, fov_deg in (0, 180), distance > 0 required"
            )


def kato_pose(
    azimuth_deg: float, elevation_deg: float, distance: float
) -> tuple[np.ndarray, np.ndarray]:
    """World->camera (R (3, 3), t (3,)) of the Kato look-at camera (float64 numpy)."""
    import torch

    from poseless.geometry.cameras import kato_extrinsics

    R, t = kato_extrinsics(
        torch.tensor([math.radians(azimuth_deg)], dtype=torch.float64),
        torch.tensor([math.radians(elevation_deg)], dtype=torch.float64),
        distance,
    )
    return R[0].numpy(), t[0].numpy()


def render_mesh(vertices, faces, R, t, fov_deg: float, settings: RenderSettings = RenderSettings()):
    """Ray-cast a shaded image of a mesh.

    Args:
        vertices: (V, 3) float world coordinates; faces: (F, 3) int.
        R: (3, 3) world->camera rotation; t: (3,) translation; fov_deg: full field of view.
    Returns:
        rgb: (S, S, 3) uint8; mask: (S, S) bool (pixel-centre ray hits the mesh).
    """
    import trimesh

    from poseless.data.synthetic.raycast import cast_first_hits, pixel_rays

    s = settings.size
    bg = np.asarray(settings.background, np.float64)
    rgb = np.broadcast_to(bg, (s * s, 3)).copy()
    mask = np.zeros(s * s, bool)
    v = np.asarray(vertices, np.float64).reshape(-1, 3)
    f = np.asarray(faces, np.int64).reshape(-1, 3)
    if len(f):
        R = np.asarray(R, np.float64)
        origins, dirs = pixel_rays(R, np.asarray(t, np.float64), fov_deg, s)
        mesh = trimesh.Trimesh(v, f, process=False)
        ray, tri, _ = cast_first_hits(mesh, origins, dirs)
        n_cam = mesh.face_normals[tri] @ R.T
        d_cam = dirs[ray] @ R.T
        flip = np.einsum("ij,ij->i", n_cam, d_cam) > 0
        n_cam[flip] *= -1.0
        shade = settings.ambient + (1 - settings.ambient) * np.clip(n_cam @ LIGHT_DIR_CAM, 0, None)
        rgb[ray] = np.asarray(settings.color)[None] * shade[:, None]
        mask[ray] = True
    img = np.clip(np.round(rgb * 255.0), 0, 255).astype(np.uint8).reshape(s, s, 3)
    return img, mask.reshape(s, s)


def render_view(
    vertices, faces, azimuth_deg: float, settings: RenderSettings = RenderSettings()
) -> np.ndarray:
    """(S, S, 3) uint8 render from the Kato camera at ``azimuth_deg`` and ``settings.elevation_deg``."""
    R, t = kato_pose(azimuth_deg, settings.elevation_deg, settings.distance)
    return render_mesh(vertices, faces, R, t, settings.fov_deg, settings)[0]


def turntable_frames(
    vertices, faces, n_frames: int = 24, settings: RenderSettings = RenderSettings(), R=None, t=None
) -> list[np.ndarray]:
    """Renders of the object turned about world y by 360 k / n_frames degrees, k = 0..n-1.

    Args:
        vertices: (V, 3); faces: (F, 3).
        R, t: the camera (default: Kato at azimuth 0 and ``settings.elevation_deg``).
    Returns:
        n_frames arrays (S, S, 3) uint8.
    """
    from poseless.evaluate.align import rotation_y

    if n_frames < 1:
        raise ValueError(f"n_frames must be >= 1, got {n_frames}")
    if R is None or t is None:
        R, t = kato_pose(0.0, settings.elevation_deg, settings.distance)
    v = np.asarray(vertices, np.float64).reshape(-1, 3)
    frames = []
    for k in range(n_frames):
        A = rotation_y(2 * math.pi * k / n_frames)
        frames.append(render_mesh(v @ A.T, faces, R, t, settings.fov_deg, settings)[0])
    return frames


def gif_bytes(frames: list[np.ndarray], duration_ms: int = 80) -> bytes:
    """An endlessly looping GIF of (S, S, 3) uint8 frames (deterministic bytes, PIL)."""
    if not frames:
        raise ValueError("gif_bytes: no frames")
    images = [Image.fromarray(np.asarray(f, np.uint8), "RGB") for f in frames]
    buf = io.BytesIO()
    images[0].save(
        buf, format="GIF", save_all=True, append_images=images[1:], duration=duration_ms, loop=0
    )
    return buf.getvalue()


def png_bytes(image: np.ndarray) -> bytes:
    """PNG bytes of an (H, W, 3) or (H, W) uint8 array."""
    buf = io.BytesIO()
    Image.fromarray(np.asarray(image, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()

"""Cameras and the project's one set of conventions.

Everything that places a camera, projects a point or interprets a normal goes
through this module: the synthetic ray caster, the differentiable renderers,
the normal estimators and the losses.

Conventions (decided once, tested in ``tests/geometry/test_cameras.py``):

* **World frame**: right-handed, y up. Shapes live in [-0.5, 0.5]^3; a
  category's canonical "front" faces -z, i.e. towards the camera at azimuth 0.
* **Kato/SoftRas viewpoint**: the eye sits on a sphere around the origin,
  ``eye = (d cosE sinA, d sinE, -d cosE cosA)``, looking at the origin with
  world +y as up. Angles are radians inside the library (degrees only in files
  and plots). Default d = 2.732, E = 30 deg, full field of view 30 deg.
* **Camera frame**: OpenCV, right-handed: x right, y down, z forward (into the
  scene). ``x_cam = R @ x_world + t`` with R world->camera and t = -R @ eye.
  Visible surfaces have camera-frame normals with n_z < 0.
* **Image axes**: pixel (row i, column j) has its centre at
  ``u = j + 0.5, v = i + 0.5``; normalised device coordinates (NDC) are
  ``x_ndc = 2u/W - 1`` (right) and ``y_ndc = 2v/H - 1`` (down), both in [-1, 1]
  over the image. A point projects to ``x_ndc = x / (z tan(fov/2))``,
  ``y_ndc = y / (z tan(fov/2))`` (square pixels, square images).
* **Normal images** store camera-frame unit normals, (3, H, W) float, zero
  outside the mask; ``normals_to_rgb`` maps them to [0, 1] for display only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

KATO_DISTANCE = 2.732
"""Kato et al. / SoftRas camera distance from the origin."""
KATO_ELEVATION_DEG = 30.0
"""Kato et al. / SoftRas default elevation in degrees."""
KATO_FOV_DEG = 30.0
"""Full field of view of the Kato/SoftRas camera in degrees (half-angle 15)."""


@dataclass(frozen=True)
class Intrinsics:
    """Pinhole intrinsics of a square image."""

    fov_deg: float = KATO_FOV_DEG
    """Full field of view in degrees."""
    image_size: int = 64
    """Image side in pixels."""

    @property
    def tan_half_fov(self) -> float:
        """tan(fov / 2): NDC = camera xy / (z * tan_half_fov)."""
        return math.tan(math.radians(self.fov_deg) / 2.0)

    @property
    def focal_px(self) -> float:
        """Focal length in pixels."""
        return (self.image_size / 2.0) / self.tan_half_fov


def _as_tensor(x, like: torch.Tensor | None = None, dtype=None) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x if dtype is None else x.to(dtype)
    dtype = dtype or (like.dtype if like is not None else torch.get_default_dtype())
    device = like.device if like is not None else None
    return torch.as_tensor(x, dtype=dtype, device=device)


def eye_from_spherical(distance, elevation, azimuth) -> torch.Tensor:
    """Camera centre on the viewing sphere (Kato convention).

    Args:
        distance, elevation, azimuth: tensors (B,) or scalars; angles in radians.
    Returns:
        eye: (B, 3) world-frame camera centres.
    """
    azimuth = _as_tensor(azimuth)
    elevation = _as_tensor(elevation, like=azimuth)
    distance = _as_tensor(distance, like=azimuth)
    azimuth, elevation, distance = torch.broadcast_tensors(
        azimuth.reshape(-1), elevation.reshape(-1), distance.reshape(-1)
    )
    return torch.stack(
        [
            distance * torch.cos(elevation) * torch.sin(azimuth),
            distance * torch.sin(elevation),
            -distance * torch.cos(elevation) * torch.cos(azimuth),
        ],
        dim=-1,
    )


def look_at_rotation(eye: torch.Tensor, up=(0.0, 1.0, 0.0)) -> torch.Tensor:
    """World->camera rotation of a camera at ``eye`` looking at the origin.

    Args:
        eye: (B, 3) camera centres (not at the origin, not on the up axis).
        up: world up direction.
    Returns:
        R: (B, 3, 3) whose rows are the camera's right, down and forward axes
        in world coordinates (OpenCV frame).
    """
    up_t = _as_tensor(up, like=eye).expand_as(eye)
    forward = torch.nn.functional.normalize(-eye, dim=-1)
    right = torch.nn.functional.normalize(torch.cross(forward, up_t, dim=-1), dim=-1)
    down = torch.cross(forward, right, dim=-1)
    return torch.stack([right, down, forward], dim=-2)


def kato_extrinsics(azimuth, elevation=None, distance=KATO_DISTANCE):
    """Extrinsics of the Kato/SoftRas look-at camera.

    Args:
        azimuth: (B,) radians.
        elevation: (B,) radians or scalar; default 30 deg.
        distance: (B,) or scalar.
    Returns:
        R: (B, 3, 3) world->camera rotation; t: (B, 3) translation, so that
        ``x_cam = R @ x_world + t``.
    """
    if elevation is None:
        elevation = math.radians(KATO_ELEVATION_DEG)
    eye = eye_from_spherical(distance, elevation, azimuth)
    R = look_at_rotation(eye)
    t = -torch.einsum("bij,bj->bi", R, eye)
    return R, t


def world_to_camera(points: torch.Tensor, R: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """points: (B, N, 3) world -> (B, N, 3) camera frame; R (B, 3, 3), t (B, 3)."""
    return torch.einsum("bij,bnj->bni", R, points) + t[:, None, :]


def camera_to_world(points: torch.Tensor, R: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """points: (B, N, 3) camera -> (B, N, 3) world frame; inverse of world_to_camera."""
    return torch.einsum("bji,bnj->bni", R, points - t[:, None, :])


def project_to_ndc(points_cam: torch.Tensor, tan_half_fov: float, eps: float = 1e-8):
    """Perspective projection of camera-frame points.

    Args:
        points_cam: (..., 3) camera-frame points with z > 0 in front.
    Returns:
        ndc: (..., 2) x right, y down in [-1, 1] over the image; z: (...) depth.
    """
    z = points_cam[..., 2]
    safe_z = torch.where(z.abs() < eps, torch.full_like(z, eps), z)
    ndc = points_cam[..., :2] / (safe_z[..., None] * tan_half_fov)
    return ndc, z


def pixel_centers_ndc(height: int, width: int, device=None, dtype=None) -> torch.Tensor:
    """NDC coordinates of pixel centres.

    Returns:
        (H, W, 2): [..., 0] = x (right), [..., 1] = y (down).
    """
    dtype = dtype or torch.get_default_dtype()
    ys = (2.0 * (torch.arange(height, device=device, dtype=dtype) + 0.5) / height) - 1.0
    xs = (2.0 * (torch.arange(width, device=device, dtype=dtype) + 0.5) / width) - 1.0
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([gx, gy], dim=-1)


def ndc_to_pixel(ndc: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(..., 2) NDC -> (..., 2) continuous pixel coordinates (u = column, v = row)."""
    u = (ndc[..., 0] + 1.0) * 0.5 * width
    v = (ndc[..., 1] + 1.0) * 0.5 * height
    return torch.stack([u, v], dim=-1)


def camera_rays(
    R: torch.Tensor, t: torch.Tensor, tan_half_fov: float, ndc: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """World-frame rays through NDC image points.

    Args:
        R: (B, 3, 3), t: (B, 3) extrinsics.
        ndc: (B, N, 2) or (N, 2) image points in NDC.
    Returns:
        origins: (B, N, 3) camera centres; directions: (B, N, 3) unit vectors.
    """
    if ndc.dim() == 2:
        ndc = ndc[None].expand(R.shape[0], -1, -1)
    d_cam = torch.cat([ndc * tan_half_fov, torch.ones_like(ndc[..., :1])], dim=-1)
    d_world = torch.einsum("bji,bnj->bni", R, d_cam)
    d_world = torch.nn.functional.normalize(d_world, dim=-1)
    center = -torch.einsum("bji,bj->bi", R, t)
    return center[:, None, :].expand_as(d_world), d_world


def normals_world_to_camera(n_world: torch.Tensor, R: torch.Tensor) -> torch.Tensor:
    """(B, ..., 3) world normals -> camera-frame normals, R: (B, 3, 3)."""
    shape = n_world.shape
    flat = n_world.reshape(shape[0], -1, 3)
    return torch.einsum("bij,bnj->bni", R, flat).reshape(shape)


def normals_camera_to_world(n_cam: torch.Tensor, R: torch.Tensor) -> torch.Tensor:
    """(B, ..., 3) camera-frame normals -> world normals (n_w = R^T n_c)."""
    shape = n_cam.shape
    flat = n_cam.reshape(shape[0], -1, 3)
    return torch.einsum("bji,bnj->bni", R, flat).reshape(shape)


def normals_to_rgb(normals_chw: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Display colours for camera-frame normal images: (.., 3, H, W) -> [0, 1]."""
    rgb = normals_chw * 0.5 + 0.5
    if mask is not None:
        rgb = rgb * mask + (1.0 - mask)
    return rgb.clamp(0.0, 1.0)


@dataclass(frozen=True)
class LookAtCamera:
    """A Kato look-at camera of training renders: fixed elevation, distance and FOV."""

    elevation_deg: float
    """Elevation in degrees."""
    distance: float
    """Distance of the eye from the origin."""
    fov_deg: float
    """Full field of view in degrees."""


def resolve_render_camera(cfg, dataset_meta) -> LookAtCamera:
    """The camera of a stage's renders.

    ``cfg`` has ``camera`` ("dataset" | "config"), ``elevation_deg``, ``distance``
    and ``fov_deg``. With "dataset", the prepared dataset's ``meta.json`` camera
    (distance, fov_deg) is used when it records one; otherwise the config's. The
    elevation always comes from the config (datasets record none).
    """
    from poseless.errors import PoselessError

    camera = (dataset_meta or {}).get("camera") if cfg.camera == "dataset" else None
    if camera:
        try:
            return LookAtCamera(
                float(cfg.elevation_deg), float(camera["distance"]), float(camera["fov_deg"])
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise PoselessError(
                f"meta.json: camera must hold distance and fov_deg, got {camera!r}"
            ) from exc
    return LookAtCamera(float(cfg.elevation_deg), float(cfg.distance), float(cfg.fov_deg))

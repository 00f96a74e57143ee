"""Rotation helpers and the ShapeClipper pose parametrisation.

ShapeClipper's viewpoint estimator predicts three (cos, sin) pairs (azimuth,
elevation, roll), each L2-normalised, and a distance scale. Its world->camera
pose (see ``REFERENCE.md``) is::

    R_sc = Rz(roll) @ Rx(elev) @ Ry(azim) @ P,   P = [[-1, 0, 0], [0, 0, -1], [0, -1, 0]]
    t    = (0, 0, base_distance * scale)

with ShapeClipper's own matrices (``sc_azimuth_matrix`` etc., which reproduce
the authors' sign conventions exactly) acting on a **z-up** world. Our world is
**y-up** (``poseless.geometry.cameras``). The fixed proper rotation
``SC_TO_WORLD`` maps ShapeClipper world coordinates to ours,
``x_ours = SC_TO_WORLD @ x_sc`` (x stays, z_sc -> y, y_sc -> -z), chosen so that
the ShapeClipper camera at zero angles is the Kato camera at azimuth 0,
elevation 0. A camera expressed in our world frame is then
``R = R_sc @ SC_TO_WORLD.T`` with the same t.

With this frame, a ShapeClipper pose (a, e, roll = 0) is the Kato look-at camera
at azimuth ``-a`` and elevation ``e`` (``kato_to_shapeclipper`` and
``shapeclipper_to_kato`` convert both ways; a non-zero roll is an in-image
rotation of the Kato camera: ``R = sc_roll_matrix(roll) @ R_kato``).

All angles are radians. Batched functions take (B,) angles or (B, 2)
(cos, sin) pairs and return (B, 3, 3) matrices.
"""

from __future__ import annotations

import torch

from poseless.geometry.cameras import eye_from_spherical, look_at_rotation

SHAPECLIPPER_DISTANCE = 5.0
"""ShapeClipper's base camera distance (``opt.camera.dist``); t_z = 5 * scale."""

SC_PERMUTE = ((-1.0, 0.0, 0.0), (0.0, 0.0, -1.0), (0.0, -1.0, 0.0))
"""ShapeClipper's fixed permutation P (rows), applied first to world points."""

SC_TO_WORLD = ((1.0, 0.0, 0.0), (0.0, 0.0, 1.0), (0.0, -1.0, 0.0))
"""Proper rotation (rows) mapping ShapeClipper z-up world coordinates to our y-up world."""


def _const(rows, like: torch.Tensor) -> torch.Tensor:
    return torch.tensor(rows, dtype=like.dtype, device=like.device)


def _angles(x) -> torch.Tensor:
    x = torch.as_tensor(x, dtype=x.dtype if isinstance(x, torch.Tensor) else None)
    if not x.is_floating_point():
        x = x.to(torch.get_default_dtype())
    return x.reshape(-1)


# ---------------------------------------------------------------------------
# Generic rotation helpers
# ---------------------------------------------------------------------------


def rotation_x(angle) -> torch.Tensor:
    """Right-handed rotation about +x: angle (B,) radians -> (B, 3, 3)."""
    a = _angles(angle)
    c, s, o, z = torch.cos(a), torch.sin(a), torch.ones_like(a), torch.zeros_like(a)
    return torch.stack([o, z, z, z, c, -s, z, s, c], dim=-1).reshape(-1, 3, 3)


def rotation_y(angle) -> torch.Tensor:
    """Right-handed rotation about +y: angle (B,) radians -> (B, 3, 3)."""
    a = _angles(angle)
    c, s, o, z = torch.cos(a), torch.sin(a), torch.ones_like(a), torch.zeros_like(a)
    return torch.stack([c, z, s, z, o, z, -s, z, c], dim=-1).reshape(-1, 3, 3)


def rotation_z(angle) -> torch.Tensor:
    """Right-handed rotation about +z: angle (B,) radians -> (B, 3, 3)."""
    a = _angles(angle)
    c, s, o, z = torch.cos(a), torch.sin(a), torch.ones_like(a), torch.zeros_like(a)
    return torch.stack([c, -s, z, s, c, z, z, z, o], dim=-1).reshape(-1, 3, 3)


def axis_angle_to_matrix(axis_angle: torch.Tensor) -> torch.Tensor:
    """Rodrigues' formula.

    Args:
        axis_angle: (..., 3) rotation vectors (unit axis times angle in radians).
    Returns:
        (..., 3, 3) rotation matrices; the identity for zero vectors.
    """
    if axis_angle.shape[-1] != 3:
        raise ValueError(f"axis_angle: expected shape (..., 3), got {tuple(axis_angle.shape)}")
    theta2 = (axis_angle * axis_angle).sum(-1, keepdim=True)[..., None]  # (..., 1, 1)
    small = theta2 < 1e-12
    theta2_safe = torch.where(small, torch.ones_like(theta2), theta2)
    theta = theta2_safe.sqrt()
    # sin(t)/t and (1 - cos t)/t^2 with Taylor expansions near zero.
    a = torch.where(small, 1.0 - theta2 / 6.0, torch.sin(theta) / theta)
    b = torch.where(small, 0.5 - theta2 / 24.0, (1.0 - torch.cos(theta)) / theta2_safe)
    x, y, z = axis_angle.unbind(-1)
    zero = torch.zeros_like(x)
    K = torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], dim=-1).reshape(
        *axis_angle.shape[:-1], 3, 3
    )
    eye = torch.eye(3, dtype=axis_angle.dtype, device=axis_angle.device).expand_as(K)
    return eye + a * K + b * (K @ K)


def rotation_angle_between(R1: torch.Tensor, R2: torch.Tensor) -> torch.Tensor:
    """Geodesic angle between rotations.

    Args:
        R1, R2: (..., 3, 3) rotation matrices (broadcastable).
    Returns:
        (...) angle of R1^T R2 in [0, pi] radians.
    """
    rel = R1.transpose(-1, -2) @ R2
    trace = rel.diagonal(dim1=-2, dim2=-1).sum(-1)
    # atan2 form is accurate near 0 and pi (acos is not).
    skew = torch.stack(
        [
            rel[..., 2, 1] - rel[..., 1, 2],
            rel[..., 0, 2] - rel[..., 2, 0],
            rel[..., 1, 0] - rel[..., 0, 1],
        ],
        dim=-1,
    )
    return torch.atan2(skew.norm(dim=-1), trace - 1.0)


def angle_diff(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Wrapped difference ``atan2(sin(a - b), cos(a - b))`` in (-pi, pi]; a, b: (...) radians."""
    d = a - b
    return torch.atan2(torch.sin(d), torch.cos(d))


def angle_to_trig(angle) -> torch.Tensor:
    """angle (B,) radians -> (B, 2) (cos, sin)."""
    a = _angles(angle)
    return torch.stack([torch.cos(a), torch.sin(a)], dim=-1)


def trig_to_angle(trig: torch.Tensor) -> torch.Tensor:
    """(B, 2) (cos, sin), not necessarily normalised -> (B,) angle atan2(sin, cos)."""
    _check_trig(trig, "trig")
    return torch.atan2(trig[..., 1], trig[..., 0])


def normalize_trig(raw: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """L2-normalise raw (B, 2) network outputs into (cos, sin) pairs (ShapeClipper head)."""
    _check_trig(raw, "raw")
    return torch.nn.functional.normalize(raw, dim=-1, eps=eps)


def _check_trig(trig: torch.Tensor, name: str) -> None:
    if trig.dim() != 2 or trig.shape[-1] != 2:
        raise ValueError(
            f"{name}: expected (cos, sin) pairs of shape (B, 2), got {tuple(trig.shape)}"
        )


# ---------------------------------------------------------------------------
# ShapeClipper parametrisation
# ---------------------------------------------------------------------------


def sc_azimuth_matrix(trig: torch.Tensor) -> torch.Tensor:
    """ShapeClipper Ry: (B, 2) (cos, sin) -> (B, 3, 3) rows [c,0,s],[0,1,0],[-s,0,c]."""
    _check_trig(trig, "azimuth")
    c, s = trig.unbind(-1)
    o, z = torch.ones_like(c), torch.zeros_like(c)
    return torch.stack([c, z, s, z, o, z, -s, z, c], dim=-1).reshape(-1, 3, 3)


def sc_elevation_matrix(trig: torch.Tensor) -> torch.Tensor:
    """ShapeClipper Rx: (B, 2) (cos, sin) -> (B, 3, 3) rows [1,0,0],[0,c,-s],[0,s,c]."""
    _check_trig(trig, "elevation")
    c, s = trig.unbind(-1)
    o, z = torch.ones_like(c), torch.zeros_like(c)
    return torch.stack([o, z, z, z, c, -s, z, s, c], dim=-1).reshape(-1, 3, 3)


def sc_roll_matrix(trig: torch.Tensor) -> torch.Tensor:
    """ShapeClipper Rz: (B, 2) (cos, sin) -> (B, 3, 3) rows [c,s,0],[-s,c,0],[0,0,1].

    Note the authors' Rz is the transpose of the usual right-handed rotation.
    """
    _check_trig(trig, "roll")
    c, s = trig.unbind(-1)
    o, z = torch.ones_like(c), torch.zeros_like(c)
    return torch.stack([c, s, z, -s, c, z, z, z, o], dim=-1).reshape(-1, 3, 3)


def shapeclipper_extrinsics(
    azimuth: torch.Tensor,
    elevation: torch.Tensor,
    roll: torch.Tensor,
    scale: torch.Tensor | float = 1.0,
    base_distance: float = SHAPECLIPPER_DISTANCE,
    frame: str = "world",
) -> tuple[torch.Tensor, torch.Tensor]:
    """World->camera extrinsics of a ShapeClipper pose.

    Args:
        azimuth, elevation, roll: (B, 2) (cos, sin) pairs (normalise raw outputs
            with ``normalize_trig`` first).
        scale: (B,) or scalar distance scale (ShapeClipper: 1 + 0.2 tanh(.)).
        base_distance: t_z at scale 1.
        frame: "world" (our y-up world, the default) or "shapeclipper" (the
            authors' z-up world).
    Returns:
        R: (B, 3, 3), t: (B, 3) with ``x_cam = R @ x + t`` (OpenCV camera frame).
    """
    if frame not in ("world", "shapeclipper"):
        raise ValueError(f"frame: expected 'world' or 'shapeclipper', got {frame!r}")
    Ry = sc_azimuth_matrix(azimuth)
    Rx = sc_elevation_matrix(elevation)
    Rz = sc_roll_matrix(roll)
    R = Rz @ Rx @ Ry @ _const(SC_PERMUTE, Ry)
    if frame == "world":
        R = R @ _const(SC_TO_WORLD, R).T
    scale = torch.as_tensor(scale, dtype=R.dtype, device=R.device).reshape(-1)
    tz = (base_distance * scale).expand(R.shape[0])
    t = torch.stack([torch.zeros_like(tz), torch.zeros_like(tz), tz], dim=-1)
    return R, t


def kato_to_shapeclipper(
    azimuth, elevation, distance, base_distance: float = SHAPECLIPPER_DISTANCE
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Kato look-at camera -> ShapeClipper pose giving the same camera in our world.

    Args:
        azimuth, elevation, distance: (B,) or scalars (radians, world units).
    Returns:
        azim, elev, roll: (B, 2) (cos, sin) pairs (roll is 0); scale: (B,)
        so that ``shapeclipper_extrinsics(azim, elev, roll, scale, base_distance)``
        equals ``cameras.kato_extrinsics(azimuth, elevation, distance)``.
    """
    azimuth, elevation, distance = torch.broadcast_tensors(
        _angles(azimuth), _angles(elevation), _angles(distance)
    )
    azim = angle_to_trig(-azimuth)
    elev = angle_to_trig(elevation)
    roll = angle_to_trig(torch.zeros_like(azimuth))
    return azim, elev, roll, distance / base_distance


def shapeclipper_to_kato(
    azimuth: torch.Tensor,
    elevation: torch.Tensor,
    roll: torch.Tensor,
    scale: torch.Tensor | float = 1.0,
    base_distance: float = SHAPECLIPPER_DISTANCE,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """ShapeClipper pose -> Kato (azimuth, elevation, distance) plus residual image roll.

    Works for any pose, including |elevation| > 90 deg (an upside-down camera,
    whose residual roll is then near pi). Degenerate only when the camera looks
    straight along the world y axis (Kato elevation +-90 deg).

    Args:
        azimuth, elevation, roll: (B, 2) (cos, sin) pairs; scale: (B,) or scalar.
    Returns:
        azimuth, elevation, distance, roll_angle: (B,) each, such that
        ``R = sc_roll_matrix(angle_to_trig(roll_angle)) @ R_kato`` and the
        camera centres coincide, with ``R_kato, t_kato = kato_extrinsics(...)``.
    """
    R, t = shapeclipper_extrinsics(azimuth, elevation, roll, scale, base_distance)
    eye = -torch.einsum("bji,bj->bi", R, t)  # (B, 3) camera centre in our world
    dist = eye.norm(dim=-1)
    kato_elev = torch.asin((eye[:, 1] / dist).clamp(-1.0, 1.0))
    kato_azim = torch.atan2(eye[:, 0], -eye[:, 2])
    R_kato = look_at_rotation(eye_from_spherical(dist, kato_elev, kato_azim))
    rel = R @ R_kato.transpose(-1, -2)  # = sc_roll_matrix(roll): rows [c, s], [-s, c]
    roll_angle = torch.atan2(rel[:, 0, 1], rel[:, 0, 0])
    return kato_azim, kato_elev, dist, roll_angle


__all__ = [
    "SC_PERMUTE",
    "SC_TO_WORLD",
    "SHAPECLIPPER_DISTANCE",
    "angle_diff",
    "angle_to_trig",
    "axis_angle_to_matrix",
    "kato_to_shapeclipper",
    "normalize_trig",
    "rotation_angle_between",
    "rotation_x",
    "rotation_y",
    "rotation_z",
    "sc_azimuth_matrix",
    "sc_elevation_matrix",
    "sc_roll_matrix",
    "shapeclipper_extrinsics",
    "shapeclipper_to_kato",
    "trig_to_angle",
]

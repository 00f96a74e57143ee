"""Rotation helpers and the ShapeClipper <-> Kato pose conversions."""

import math

import pytest
import torch

from poseless.geometry.cameras import kato_extrinsics
from poseless.geometry.rotations import (
    SC_PERMUTE,
    SC_TO_WORLD,
    angle_diff,
    angle_to_trig,
    axis_angle_to_matrix,
    kato_to_shapeclipper,
    normalize_trig,
    rotation_angle_between,
    rotation_x,
    rotation_y,
    rotation_z,
    sc_azimuth_matrix,
    sc_elevation_matrix,
    sc_roll_matrix,
    shapeclipper_extrinsics,
    shapeclipper_to_kato,
    trig_to_angle,
)

D64 = torch.float64


def _t(*x):
    return torch.tensor(x, dtype=D64)


def _eye_of(R, t):
    return -torch.einsum("bji,bj->bi", R, t)


def test_axis_rotations_hand_cases():
    q = math.pi / 2
    torch.testing.assert_close(rotation_z(_t(q))[0] @ _t(1, 0, 0), _t(0, 1, 0), atol=1e-12, rtol=0)
    torch.testing.assert_close(rotation_x(_t(q))[0] @ _t(0, 1, 0), _t(0, 0, 1), atol=1e-12, rtol=0)
    torch.testing.assert_close(rotation_y(_t(q))[0] @ _t(0, 0, 1), _t(1, 0, 0), atol=1e-12, rtol=0)
    R = rotation_y(torch.linspace(-3, 3, 7, dtype=D64))
    assert R.shape == (7, 3, 3)
    torch.testing.assert_close(R @ R.transpose(1, 2), torch.eye(3, dtype=D64).expand(7, 3, 3))


def test_axis_angle_matches_axis_rotations_and_is_smooth_at_zero():
    a = _t(0.3, -1.2, 2.9)
    e = torch.eye(3, dtype=D64)
    torch.testing.assert_close(axis_angle_to_matrix(a[:, None] * e[0]), rotation_x(a))
    torch.testing.assert_close(axis_angle_to_matrix(a[:, None] * e[1]), rotation_y(a))
    torch.testing.assert_close(axis_angle_to_matrix(a[:, None] * e[2]), rotation_z(a))
    torch.testing.assert_close(
        axis_angle_to_matrix(torch.zeros(2, 4, 3, dtype=D64)), e.expand(2, 4, 3, 3)
    )
    x = (torch.randn(4, 3, dtype=D64) * 1e-4).requires_grad_(True)
    assert torch.autograd.gradcheck(axis_angle_to_matrix, (x,))
    y = torch.randn(4, 3, dtype=D64).requires_grad_(True)
    assert torch.autograd.gradcheck(axis_angle_to_matrix, (y,))
    with pytest.raises(ValueError, match="axis_angle"):
        axis_angle_to_matrix(torch.zeros(3, 2))


def test_rotation_angle_between():
    g = torch.Generator().manual_seed(0)
    R1 = axis_angle_to_matrix(torch.randn(6, 3, generator=g, dtype=D64))
    theta = _t(0.0, 1e-5, 0.5, 2.0, 3.1, math.pi - 1e-6)
    axis = torch.nn.functional.normalize(torch.randn(6, 3, generator=g, dtype=D64), dim=-1)
    R2 = R1 @ axis_angle_to_matrix(axis * theta[:, None])
    torch.testing.assert_close(rotation_angle_between(R1, R2), theta, atol=1e-7, rtol=0)


def test_angle_diff_wraps():
    a = torch.deg2rad(_t(350.0, 10.0, 180.0, -170.0, 725.0))
    b = torch.deg2rad(_t(10.0, 350.0, 0.0, 170.0, 0.0))
    torch.testing.assert_close(torch.rad2deg(angle_diff(a, b)), _t(-20.0, 20.0, 180.0, 20.0, 5.0))


def test_trig_helpers():
    a = _t(-3.0, -0.5, 0.0, 1.0, 3.1)
    torch.testing.assert_close(trig_to_angle(angle_to_trig(a)), a)
    raw = _t(3.0, 4.0)[None]
    torch.testing.assert_close(normalize_trig(raw), _t(0.6, 0.8)[None])
    torch.testing.assert_close(trig_to_angle(raw * 7), torch.atan2(_t(4.0), _t(3.0)))
    with pytest.raises(ValueError, match=r"\(B, 2\)"):
        normalize_trig(torch.zeros(3))


def test_shapeclipper_matrices_follow_the_authors_signs():
    a = _t(0.4, -1.3)
    trig = angle_to_trig(a)
    torch.testing.assert_close(sc_azimuth_matrix(trig), rotation_y(a))
    torch.testing.assert_close(sc_elevation_matrix(trig), rotation_x(a))
    torch.testing.assert_close(sc_roll_matrix(trig), rotation_z(-a))  # transpose of the usual Rz


def test_shapeclipper_zero_pose():
    zero = angle_to_trig(_t(0.0))
    R, t = shapeclipper_extrinsics(zero, zero, zero, _t(1.0), frame="shapeclipper")
    torch.testing.assert_close(R[0], torch.tensor(SC_PERMUTE, dtype=D64))
    torch.testing.assert_close(t[0], _t(0.0, 0.0, 5.0))
    # z-up world: camera on +y, image up = world +z.
    torch.testing.assert_close(_eye_of(R, t)[0], _t(0.0, 5.0, 0.0))
    torch.testing.assert_close(R[0, 1], _t(0.0, 0.0, -1.0))
    # Our world: the Kato camera at azimuth 0, elevation 0, distance 5.
    Rw, tw = shapeclipper_extrinsics(zero, zero, zero, _t(1.0))
    Rk, tk = kato_extrinsics(_t(0.0), _t(0.0), 5.0)
    torch.testing.assert_close(Rw, Rk)
    torch.testing.assert_close(tw, tk)


def test_frame_change_is_a_proper_rotation_taking_z_up_to_y_up():
    M = torch.tensor(SC_TO_WORLD, dtype=D64)
    torch.testing.assert_close(M @ M.T, torch.eye(3, dtype=D64))
    assert torch.linalg.det(M).item() == pytest.approx(1.0)
    torch.testing.assert_close(M @ _t(0.0, 0.0, 1.0), _t(0.0, 1.0, 0.0))


@pytest.mark.parametrize(
    "az_deg, el_deg, dist",
    [
        (0.0, 30.0, 2.732),
        (90.0, 0.0, 2.0),
        (-135.0, 45.0, 6.0),
        (200.0, -20.0, 4.0),
        (10.0, 89.0, 3.0),
    ],
)
def test_kato_to_shapeclipper_gives_the_same_camera(az_deg, el_deg, dist):
    az, el = _t(math.radians(az_deg)), _t(math.radians(el_deg))
    azim, elev, roll, scale = kato_to_shapeclipper(az, el, dist)
    for trig in (azim, elev, roll):
        torch.testing.assert_close(trig.norm(dim=-1), torch.ones(1, dtype=D64))
    R, t = shapeclipper_extrinsics(azim, elev, roll, scale)
    Rk, tk = kato_extrinsics(az, el, dist)
    torch.testing.assert_close(R, Rk)
    torch.testing.assert_close(_eye_of(R, t), _eye_of(Rk, tk))
    back = shapeclipper_to_kato(azim, elev, roll, scale)
    torch.testing.assert_close(angle_diff(back[0], az), _t(0.0), atol=1e-9, rtol=0)
    torch.testing.assert_close(back[1], el)
    torch.testing.assert_close(back[2], _t(dist))
    torch.testing.assert_close(back[3], _t(0.0), atol=1e-9, rtol=0)


def test_random_poses_round_trip_both_ways():
    g = torch.Generator().manual_seed(3)
    n = 64
    az = (torch.rand(n, generator=g, dtype=D64) - 0.5) * 4 * math.pi
    el = (torch.rand(n, generator=g, dtype=D64) - 0.5) * math.radians(170)
    dist = 1.5 + 3 * torch.rand(n, generator=g, dtype=D64)
    Rk, tk = kato_extrinsics(az, el, dist)
    R, t = shapeclipper_extrinsics(*kato_to_shapeclipper(az, el, dist))
    torch.testing.assert_close(R, Rk)
    torch.testing.assert_close(t, tk)
    # ShapeClipper -> Kato with roll: R = Rz_sc(roll) @ R_kato, same centre, same roll.
    sa = angle_to_trig(torch.rand(n, generator=g, dtype=D64) * 2 * math.pi)
    se = angle_to_trig((torch.rand(n, generator=g, dtype=D64) - 0.5) * math.radians(170))
    roll_angle = (torch.rand(n, generator=g, dtype=D64) - 0.5) * 2.0
    sr = angle_to_trig(roll_angle)
    scale = 0.8 + 0.4 * torch.rand(n, generator=g, dtype=D64)
    R, t = shapeclipper_extrinsics(sa, se, sr, scale)
    kaz, kel, kd, kroll = shapeclipper_to_kato(sa, se, sr, scale)
    torch.testing.assert_close(kroll, roll_angle)
    torch.testing.assert_close(kel, trig_to_angle(se))
    torch.testing.assert_close(
        angle_diff(kaz, -trig_to_angle(sa)), torch.zeros(n, dtype=D64), atol=1e-9, rtol=0
    )
    Rk2, tk2 = kato_extrinsics(kaz, kel, kd)
    torch.testing.assert_close(sc_roll_matrix(angle_to_trig(kroll)) @ Rk2, R)
    torch.testing.assert_close(_eye_of(Rk2, tk2), _eye_of(R, t))
    torch.testing.assert_close(kd, 5.0 * scale)


def test_upside_down_shapeclipper_pose_has_roll_pi():
    sa, se, sr = (
        angle_to_trig(_t(0.3)),
        angle_to_trig(_t(math.radians(120))),
        angle_to_trig(_t(0.0)),
    )
    R, t = shapeclipper_extrinsics(sa, se, sr)
    kaz, kel, kd, kroll = shapeclipper_to_kato(sa, se, sr)
    assert abs(abs(kroll.item()) - math.pi) < 1e-9
    Rk, tk = kato_extrinsics(kaz, kel, kd)
    torch.testing.assert_close(sc_roll_matrix(angle_to_trig(kroll)) @ Rk, R)


def test_bad_inputs():
    with pytest.raises(ValueError, match="frame"):
        shapeclipper_extrinsics(*(angle_to_trig(_t(0.0)),) * 3, frame="opengl")
    with pytest.raises(ValueError, match="azimuth"):
        sc_azimuth_matrix(torch.zeros(2, 3))

"""Hand-computed checks of the camera conventions in poseless.geometry.cameras."""

import math

import pytest
import torch

from poseless.geometry.cameras import (
    KATO_DISTANCE,
    Intrinsics,
    camera_rays,
    camera_to_world,
    eye_from_spherical,
    kato_extrinsics,
    look_at_rotation,
    ndc_to_pixel,
    normals_camera_to_world,
    normals_world_to_camera,
    pixel_centers_ndc,
    project_to_ndc,
    world_to_camera,
)

D64 = torch.float64


def _kato(az_deg, el_deg, d=KATO_DISTANCE):
    return kato_extrinsics(
        torch.tensor([math.radians(az_deg)], dtype=D64),
        torch.tensor([math.radians(el_deg)], dtype=D64),
        d,
    )


def _ndc(points, R, t, fov_deg=30.0):
    cam = world_to_camera(torch.as_tensor(points, dtype=D64)[None], R, t)
    return project_to_ndc(cam, math.tan(math.radians(fov_deg) / 2))


def test_azimuth0_elevation0_camera_looks_along_plus_z():
    R, t = _kato(0.0, 0.0, 2.0)
    torch.testing.assert_close(R[0], torch.diag(torch.tensor([-1.0, -1.0, 1.0], dtype=D64)))
    torch.testing.assert_close(t[0], torch.tensor([0.0, 0.0, 2.0], dtype=D64))
    eye = eye_from_spherical(2.0, torch.tensor([0.0], dtype=D64), 0.0)
    torch.testing.assert_close(eye[0], torch.tensor([0.0, 0.0, -2.0], dtype=D64))
    ndc, z = _ndc([[0.1, 0.0, 0.0], [0.0, 0.1, 0.0], [0.0, 0.0, 0.0]], R, t)
    # Physical, non-mirrored camera facing +z: world +x is on the image's left, +y is up.
    assert ndc[0, 0, 0] < 0 and abs(float(ndc[0, 0, 1])) < 1e-12, "world +x must appear left"
    assert ndc[0, 1, 1] < 0 and abs(float(ndc[0, 1, 0])) < 1e-12, "world +y must appear up"
    torch.testing.assert_close(ndc[0, 2], torch.zeros(2, dtype=D64))
    torch.testing.assert_close(z[0], torch.tensor([2.0, 2.0, 2.0], dtype=D64))


def test_azimuth90_camera_on_plus_x():
    R, t = _kato(90.0, 0.0, 3.0)
    center = -(R[0].T @ t[0])
    torch.testing.assert_close(center, torch.tensor([3.0, 0.0, 0.0], dtype=D64))
    # Rows: right = world -z, down = world -y, forward = world -x.
    expected = torch.tensor([[0.0, 0.0, -1.0], [0.0, -1.0, 0.0], [-1.0, 0.0, 0.0]], dtype=D64)
    torch.testing.assert_close(R[0], expected, atol=1e-12, rtol=0)
    ndc, _ = _ndc([[0.0, 0.0, 0.2]], R, t)
    assert ndc[0, 0, 0] < 0, "world +z must appear left of the azimuth-90 camera"


def test_elevation_near90_looks_down_with_plus_z_at_top():
    R, t = _kato(0.0, 89.9, 2.0)
    forward = R[0, 2]
    assert forward[1] < -0.999, f"camera must look down, forward={forward}"
    ndc, _ = _ndc([[0.0, 0.0, 0.2], [0.2, 0.0, 0.0]], R, t)
    assert ndc[0, 0, 1] < 0, "world +z must appear at the top when looking down from azimuth 0"
    assert ndc[0, 1, 0] < 0, "world +x stays on the left"


def test_extrinsics_are_proper_rotations_and_eye_on_sphere():
    g = torch.Generator().manual_seed(0)
    az = torch.rand(16, generator=g, dtype=D64) * 2 * math.pi
    el = (torch.rand(16, generator=g, dtype=D64) - 0.5) * 3.0
    R, t = kato_extrinsics(az, el, 2.5)
    eye = torch.eye(3, dtype=D64).expand(16, 3, 3)
    torch.testing.assert_close(R @ R.transpose(1, 2), eye)
    torch.testing.assert_close(torch.linalg.det(R), torch.ones(16, dtype=D64))
    centers = -torch.einsum("bji,bj->bi", R, t)
    torch.testing.assert_close(centers, eye_from_spherical(2.5, el, az))
    # The origin projects to the image centre.
    cam = world_to_camera(torch.zeros(16, 1, 3, dtype=D64), R, t)
    torch.testing.assert_close(cam[:, 0], torch.tensor([0.0, 0.0, 2.5], dtype=D64).expand(16, 3))
    torch.testing.assert_close(look_at_rotation(centers), R)


def test_projection_to_ndc_and_pixels():
    intr = Intrinsics(fov_deg=30.0, image_size=64)
    tan = intr.tan_half_fov
    pts = torch.tensor(
        [[[0.0, 0.0, 2.0], [2.0 * tan, 0.0, 2.0], [0.0, -4.0 * tan, 4.0]]], dtype=D64
    )
    ndc, z = project_to_ndc(pts, tan)
    torch.testing.assert_close(
        ndc[0], torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, -1.0]], dtype=D64)
    )
    px = ndc_to_pixel(ndc, 64, 64)
    torch.testing.assert_close(
        px[0], torch.tensor([[32.0, 32.0], [64.0, 32.0], [32.0, 0.0]], dtype=D64)
    )
    assert intr.focal_px == pytest.approx(32.0 / math.tan(math.radians(15.0)))
    # A point at pixel offset (du, dv) from the centre: x_cam / z = du / focal_px.
    p = torch.tensor([[[10.0 / intr.focal_px, 0.0, 1.0]]], dtype=D64)
    torch.testing.assert_close(
        ndc_to_pixel(project_to_ndc(p, tan)[0], 64, 64)[0, 0], torch.tensor([42.0, 32.0], dtype=D64)
    )


def test_pixel_centers():
    c = pixel_centers_ndc(4, 8, dtype=D64)
    assert c.shape == (4, 8, 2)
    torch.testing.assert_close(c[0, 0], torch.tensor([-1 + 1 / 8, -1 + 1 / 4], dtype=D64))
    torch.testing.assert_close(c[3, 7], torch.tensor([1 - 1 / 8, 1 - 1 / 4], dtype=D64))
    px = ndc_to_pixel(c, 4, 8)
    torch.testing.assert_close(px[2, 5], torch.tensor([5.5, 2.5], dtype=D64))


def test_camera_rays_hit_points_that_project_back():
    R, t = _kato(40.0, 25.0)
    tan = math.tan(math.radians(15.0))
    ndc = pixel_centers_ndc(5, 5, dtype=D64).reshape(-1, 2)
    origins, dirs = camera_rays(R, t, tan, ndc)
    torch.testing.assert_close(dirs.norm(dim=-1), torch.ones(1, 25, dtype=D64))
    pts = origins + 1.7 * dirs
    back, _ = project_to_ndc(world_to_camera(pts, R, t), tan)
    torch.testing.assert_close(back[0], ndc)
    # The central ray points at the origin.
    o, d = camera_rays(R, t, tan, torch.zeros(1, 2, dtype=D64))
    torch.testing.assert_close(d[0, 0], torch.nn.functional.normalize(-o[0, 0], dim=0))


def test_world_camera_round_trips_and_normal_frames():
    g = torch.Generator().manual_seed(1)
    R, t = kato_extrinsics(
        torch.rand(3, generator=g, dtype=D64) * 6, torch.rand(3, generator=g, dtype=D64), 2.0
    )
    p = torch.randn(3, 10, 3, generator=g, dtype=D64)
    torch.testing.assert_close(camera_to_world(world_to_camera(p, R, t), R, t), p)
    n = torch.nn.functional.normalize(torch.randn(3, 4, 5, 3, generator=g, dtype=D64), dim=-1)
    nc = normals_world_to_camera(n, R)
    assert nc.shape == n.shape
    torch.testing.assert_close(normals_camera_to_world(nc, R), n)
    # A surface facing the camera (normal towards the eye) has n_z < 0 in the camera frame.
    eye = -torch.einsum("bji,bj->bi", R, t)
    facing = normals_world_to_camera(torch.nn.functional.normalize(eye, dim=-1)[:, None], R)
    assert (facing[..., 2] < -0.999).all()

"""Ray-cast renderer, filled voxels and surface samples against hand-computed cases."""

import math

import numpy as np
import pytest
import torch
import trimesh

from poseless.data.synthetic import (
    SHAPE_PARAM_DIM,
    SyntheticShape,
    make_shape,
    render_view,
    sample_surface,
    voxelize_filled,
)
from poseless.data.synthetic.raycast import AMBIENT, DIFFUSE, LIGHT_DIR_CAM, pixel_rays
from poseless.geometry.cameras import (
    KATO_DISTANCE,
    camera_rays,
    kato_extrinsics,
    pixel_centers_ndc,
)

COLOUR = np.array([[0.8, 0.4, 0.2]], dtype=np.float32)


def _wrap(mesh: trimesh.Trimesh) -> SyntheticShape:
    return SyntheticShape(
        mesh=mesh,
        face_parts=np.zeros(len(mesh.faces), np.int32),
        part_colors=COLOUR,
        part_names=("body",),
        shape_params=np.zeros(SHAPE_PARAM_DIM, np.float32),
        category="test",
    )


def _pose(az_deg, el_deg, distance=KATO_DISTANCE):
    R, t = kato_extrinsics(
        torch.tensor([math.radians(az_deg)], dtype=torch.float64),
        torch.tensor([math.radians(el_deg)], dtype=torch.float64),
        distance,
    )
    return R[0].numpy(), t[0].numpy()


def test_pixel_rays_match_camera_rays():
    R, t = _pose(37.0, 21.0, 2.5)
    o, d = pixel_rays(R, t, 30.0, 16)
    ndc = pixel_centers_ndc(16, 16, dtype=torch.float64).reshape(-1, 2)
    o_ref, d_ref = camera_rays(
        torch.as_tensor(R)[None], torch.as_tensor(t)[None], math.tan(math.radians(15.0)), ndc
    )
    assert np.allclose(o, o_ref[0].numpy(), atol=1e-12)
    assert np.allclose(d, d_ref[0].numpy(), atol=1e-12)


def test_box_front_face_mask_depth_normals_colour():
    side, size, fov = 0.6, 48, 30.0
    shape = _wrap(trimesh.creation.box(extents=(side, side, side)))
    R, t = _pose(0.0, 0.0)
    v = render_view(shape, R, t, fov, size)
    # front face z = -side/2 at camera depth d - side/2, NDC half width hw
    z_front = KATO_DISTANCE - side / 2
    hw = (side / 2) / (z_front * math.tan(math.radians(fov / 2)))
    centres = (np.arange(size) + 0.5) * 2 / size - 1
    inside = np.abs(centres) < hw
    expected = np.outer(inside, inside)
    assert np.array_equal(v.mask == 255, expected), "mask differs from the projected square"
    assert set(np.unique(v.mask)) == {0, 255}
    on = expected
    assert np.allclose(v.depth[on], z_front, atol=1e-9), "front face depth"
    assert np.all(v.depth[~on] == 0)
    n = v.normals.transpose(1, 2, 0)
    assert np.allclose(n[on], [0.0, 0.0, -1.0], atol=1e-7), "front face camera normal"
    assert np.all(n[~on] == 0)
    shade = AMBIENT + DIFFUSE * max(0.0, float(np.dot([0.0, 0.0, -1.0], LIGHT_DIR_CAM)))
    rgb = np.round(COLOUR[0].astype(np.float64) * shade * 255).astype(np.uint8)
    assert np.all(v.rgb[on] == rgb), f"{v.rgb[on][0]} != {rgb}"
    assert np.all(v.rgb[~on] == 0), "background must be black"


def test_box_visible_faces_normals_at_kato_view():
    shape = _wrap(trimesh.creation.box(extents=(0.5, 0.7, 0.4)))
    R, t = _pose(30.0, 30.0)
    v = render_view(shape, R, t, 30.0, 64)
    n = v.normals.transpose(1, 2, 0)[v.mask == 255]  # (K, 3)
    axes = np.concatenate([np.eye(3), -np.eye(3)]) @ R.T  # world face normals -> camera
    dist = np.linalg.norm(n[:, None, :] - axes[None], axis=-1)
    assert np.all(dist.min(1) < 1e-7), "a pixel's normal is not a box face normal"
    seen = set(np.unique(dist.argmin(1)))
    # the azimuth-30 eye is at +x, -z, above: it sees the +x side, the top and the front (-z)
    assert seen == {0, 1, 5}, f"visible faces {seen}"
    assert np.all(n[:, 2] < 0), "visible normals must face the camera"
    assert np.allclose(np.linalg.norm(n, axis=1), 1.0, atol=1e-6)


def test_sphere_silhouette_area_depth_and_centre_normal():
    r, size, fov = 0.4, 128, 30.0
    shape = _wrap(trimesh.creation.icosphere(subdivisions=5, radius=r))
    R, t = _pose(123.0, 30.0)
    v = render_view(shape, R, t, fov, size)
    # silhouette of a sphere on the optical axis: circle of NDC radius tan(asin(r/d)) / tan(fov/2)
    rho = math.tan(math.asin(r / KATO_DISTANCE)) / math.tan(math.radians(fov / 2))
    c = (np.arange(size) + 0.5) * 2 / size - 1
    expected = (c[:, None] ** 2 + c[None, :] ** 2) < rho**2
    mism = np.sum((v.mask == 255) != expected)
    assert mism <= 0.01 * expected.sum(), f"{mism} pixels differ from the analytic disc"
    mid = size // 2
    centre = v.depth[mid - 1 : mid + 1, mid - 1 : mid + 1]
    assert np.allclose(centre, KATO_DISTANCE - r, atol=2e-3), centre
    assert np.allclose(v.normals[:, mid, mid], [0.0, 0.0, -1.0], atol=0.03)


def test_render_bad_inputs():
    shape = _wrap(trimesh.creation.box())
    R, t = _pose(0.0, 30.0)
    with pytest.raises(ValueError, match="not a rotation"):
        render_view(shape, 2 * R, t, 30.0, 8)
    with pytest.raises(ValueError, match=r"R must be \(3, 3\)"):
        render_view(shape, R[:2], t, 30.0, 8)
    with pytest.raises(ValueError, match="fov_deg"):
        render_view(shape, R, t, 0.0, 8)
    with pytest.raises(ValueError, match="size"):
        render_view(shape, R, t, 30.0, 0)


def test_render_generated_shape_invariants():
    shape = make_shape("chair", np.random.default_rng(0))
    R, t = _pose(200.0, 25.0)
    v = render_view(shape, R, t, 30.0, 64)
    on = v.mask == 255
    assert 100 < on.sum() < 64 * 64
    assert v.rgb.dtype == np.uint8 and v.rgb.shape == (64, 64, 3)
    assert v.normals.dtype == np.float32 and v.normals.shape == (3, 64, 64)
    assert v.depth.dtype == np.float32 and v.depth.shape == (64, 64)
    assert np.all(v.rgb[~on] == 0) and np.all(v.normals[:, ~on] == 0) and np.all(v.depth[~on] == 0)
    assert np.allclose(np.linalg.norm(v.normals[:, on], axis=0), 1.0, atol=1e-6)
    # object within the unit cube: depth within d -/+ sqrt(3)/2
    assert v.depth[on].min() > KATO_DISTANCE - 0.87 and v.depth[on].max() < KATO_DISTANCE + 0.87
    # every hit point lies inside the unit cube
    o, d = pixel_rays(R, t, 30.0, 64)
    cos = d @ R[2]  # camera z per unit length along each ray
    pts = o + (v.depth.reshape(-1) / cos)[:, None] * d
    assert np.all(np.abs(pts[on.reshape(-1)]) <= 0.5 + 1e-6)


def _centres(res):
    return -0.5 + (np.arange(res) + 0.5) / res


@pytest.mark.parametrize(("category", "seed"), [("mug", 0), ("chair", 1), ("lamp", 2), ("car", 3)])
def test_voxels_match_contains_reference(category, seed):
    shape = make_shape(category, np.random.default_rng(seed))
    res = 32
    vox = voxelize_filled(shape.mesh.vertices, shape.mesh.faces, res)
    c = _centres(res)
    grid = np.stack(np.meshgrid(c, c, c, indexing="ij"), -1).reshape(-1, 3)
    ref = shape.mesh.contains(grid).reshape(res, res, res)  # slow reference
    assert vox.shape == (res, res, res) and vox.dtype == bool
    assert ref.sum() > 50
    assert np.array_equal(vox, ref), f"{(vox != ref).sum()} cells differ"


def test_voxels_of_box_are_indexed_xyz():
    lo, hi = np.array([-0.41, -0.2, 0.03]), np.array([0.1, 0.33, 0.47])
    box = trimesh.creation.box(bounds=np.stack([lo, hi]))
    res = 16
    vox = voxelize_filled(box.vertices, box.faces, res)
    c = _centres(res)
    inside = [(c > lo[k]) & (c < hi[k]) for k in range(3)]
    expected = inside[0][:, None, None] & inside[1][None, :, None] & inside[2][None, None, :]
    assert np.array_equal(vox, expected)


def test_voxels_tie_break_when_edges_pass_through_cell_centres():
    """Box corners exactly on cell-centre columns: the top/bottom diagonals and the side
    edges pass through columns; each column must still see an even number of crossings."""
    res = 16
    c = _centres(res)
    lo = np.array([c[3], c[3], -0.31])
    hi = np.array([c[11], c[11], 0.27])
    box = trimesh.creation.box(bounds=np.stack([lo, hi]))
    vox = voxelize_filled(box.vertices, box.faces, res)
    zprof = (c > lo[2]) & (c < hi[2])
    for i in range(res):
        for j in range(res):
            col = vox[i, j]
            if 3 < i < 11 and 3 < j < 11:
                assert np.array_equal(col, zprof), f"interior column {(i, j)} wrong"
            elif not (3 <= i <= 11 and 3 <= j <= 11):
                assert not col.any(), f"outside column {(i, j)} filled"
            else:  # boundary column: all or nothing, never a parity error
                assert np.array_equal(col, zprof) or not col.any(), f"boundary column {(i, j)}"


def test_voxelize_bad_resolution():
    box = trimesh.creation.box()
    with pytest.raises(ValueError, match="resolution"):
        voxelize_filled(box.vertices, box.faces, 0)


def test_surface_samples_on_box_faces():
    ext = np.array([0.6, 0.4, 0.2])
    box = trimesh.creation.box(extents=ext)
    pts, nrm = sample_surface(box, 2000, np.random.default_rng(0))
    assert pts.shape == (2000, 3) and nrm.shape == (2000, 3) and pts.dtype == np.float32
    axis = np.abs(nrm).argmax(1)
    on_face = np.abs(np.abs(pts[np.arange(2000), axis]) - ext[axis] / 2) < 1e-6
    assert on_face.all(), "samples off their face"
    assert np.allclose(
        pts[np.arange(2000), axis] * nrm[np.arange(2000), axis], ext[axis] / 2, atol=1e-6
    )
    # area-uniform: share of samples on the two largest faces ~ their area share
    area = np.array([ext[1] * ext[2], ext[0] * ext[2], ext[0] * ext[1]])
    share = np.bincount(axis, minlength=3) / 2000
    assert np.allclose(share, area / area.sum(), atol=0.04), share
    again, _ = sample_surface(box, 2000, np.random.default_rng(0))
    assert again.tobytes() == pts.tobytes()

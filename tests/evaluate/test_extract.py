"""Mesh extraction from SDFs: grid mapping, orientation, chunking, empty cases."""

import math

import numpy as np
import pytest
import torch
import trimesh

from poseless.evaluate.extract import (
    ExtractSettings,
    extract_mesh,
    grid_coordinates,
    mesh_from_sdf_grid,
    sample_sdf_grid,
)

CENTER = torch.tensor([0.1, -0.05, 0.2])


def sphere_sdf(radius=0.3, center=CENTER):
    return lambda p: (p - center.to(p)).norm(dim=-1) - radius


def test_defaults_follow_shapeclipper():
    s = ExtractSettings()
    assert (s.resolution, s.bound, s.level) == (101, 0.6, 0.0), (
        "REFERENCE: 101^3 over [-0.6, 0.6]^3 at 0"
    )


def test_grid_is_indexed_xyz_with_linspace_positions():
    s = ExtractSettings(resolution=7, bound=0.6, chunk=10)  # chunk does not divide 343
    axis = grid_coordinates(7, 0.6)
    for d in range(3):
        g = sample_sdf_grid(lambda p, d=d: p[:, d], s)
        expect = np.broadcast_to(axis.reshape([7 if i == d else 1 for i in range(3)]), (7, 7, 7))
        np.testing.assert_allclose(
            g, expect, atol=1e-6, err_msg=f"axis {d} of the grid is misplaced"
        )


def test_chunks_bound_the_calls():
    sizes = []

    def fn(p):
        sizes.append(len(p))
        return p.norm(dim=-1) - 0.3

    g = sample_sdf_grid(fn, ExtractSettings(resolution=9, chunk=100))
    assert max(sizes) <= 100 and sum(sizes) == 9**3, sizes
    g1 = sample_sdf_grid(fn, ExtractSettings(resolution=9, chunk=10**6))
    np.testing.assert_array_equal(g, g1)


def test_sphere_lands_in_world_coordinates_with_outward_faces():
    s = ExtractSettings(resolution=41)
    m = extract_mesh(sphere_sdf(), s)
    assert m.warning == "" and not m.empty
    c = CENTER.numpy()
    r = np.linalg.norm(m.vertices - c, axis=1)
    h = 1.2 / 40
    assert np.abs(r - 0.3).max() < 0.1 * h, f"vertices off the sphere by {np.abs(r - 0.3).max()}"
    for d in range(3):  # per-axis extremes catch a swapped or shifted axis
        assert abs(m.vertices[:, d].max() - (c[d] + 0.3)) < 0.2 * h, d
        assert abs(m.vertices[:, d].min() - (c[d] - 0.3)) < 0.2 * h, d
    tm = trimesh.Trimesh(m.vertices, m.faces, process=False)
    outward = ((tm.triangles_center - c) * tm.face_normals).sum(axis=1)
    proper = tm.area_faces > 1e-10  # marching cubes emits a few zero-area faces
    assert (outward[proper] > 0).all(), "faces must be wound with outward normals"
    assert tm.is_watertight
    assert abs(tm.volume - 4 / 3 * math.pi * 0.3**3) / (4 / 3 * math.pi * 0.3**3) < 0.02


def test_output_dtypes():
    m = extract_mesh(sphere_sdf(0.4, torch.zeros(3)), ExtractSettings(resolution=11))
    assert not m.empty and m.faces.dtype == np.int64 and m.vertices.dtype == np.float32


@pytest.mark.parametrize(
    "value, expect",
    [(1.0, "empty shape"), (-1.0, "fills the grid"), (math.nan, "non-finite")],
)
def test_degenerate_sdfs_give_empty_mesh_with_warning(value, expect):
    m = extract_mesh(lambda p: torch.full((len(p),), value), ExtractSettings(resolution=8))
    assert m.empty and m.vertices.shape == (0, 3) and m.faces.shape == (0, 3)
    assert expect in m.warning, m.warning


def test_surface_at_grid_boundary_is_flagged():
    m = extract_mesh(sphere_sdf(0.7, torch.zeros(3)), ExtractSettings(resolution=21))
    assert not m.empty and "boundary" in m.warning, m.warning


def test_bad_inputs_raise_with_messages():
    with pytest.raises(ValueError, match="expected"):
        sample_sdf_grid(lambda p: p[:, :2], ExtractSettings(resolution=4))
    with pytest.raises(TypeError, match="torch.Tensor"):
        sample_sdf_grid(lambda p: p.numpy()[:, 0], ExtractSettings(resolution=4))
    with pytest.raises(ValueError, match="cubic"):
        mesh_from_sdf_grid(np.zeros((4, 4, 5)))
    with pytest.raises(ValueError, match="resolution"):
        ExtractSettings(resolution=1)

"""Voxelisation against slow references: polygon clipping, contains(), dense samples, exact boxes."""

import numpy as np
import pytest
import trimesh

from poseless.evaluate import voxelize
from poseless.evaluate.voxelize import (
    cell_centers,
    fill_exterior,
    surface_voxels,
    triangle_box_overlap,
    voxelize_mesh,
)

R = 32
H = 1.0 / R


def clip_overlap(tri, center, half):
    """Slow reference: clip the triangle polygon by the 6 box planes (Sutherland-Hodgman)."""
    poly = [np.asarray(p, float) for p in tri]
    for axis in range(3):
        for sign in (1.0, -1.0):
            bound = center[axis] + sign * half  # keep points with sign * (x - bound) <= 0
            out = []
            for i, cur in enumerate(poly):
                prev = poly[i - 1]
                fc, fp = sign * (cur[axis] - bound), sign * (prev[axis] - bound)
                if fc <= 1e-12:
                    if fp > 1e-12:
                        out.append(prev + (cur - prev) * fp / (fp - fc))
                    out.append(cur)
                elif fp <= 1e-12:
                    out.append(prev + (cur - prev) * fp / (fp - fc))
            poly = out
            if not poly:
                return False
    return True


def test_cell_centers_follow_gt_convention():
    c = cell_centers(R)
    np.testing.assert_allclose(c, -0.5 + (np.arange(R) + 0.5) / R)


def test_triangle_box_overlap_matches_polygon_clipping():
    rng = np.random.default_rng(0)
    n = 600
    centers = rng.uniform(-0.2, 0.2, (n, 3))
    scale = rng.choice([0.05, 0.2, 1.0], size=(n, 1, 1))
    tris = centers[:, None, :] + rng.normal(size=(n, 3, 3)) * scale * 0.15
    boxes = centers + rng.uniform(-0.06, 0.06, (n, 3))
    fast = triangle_box_overlap(tris, boxes, 0.02)
    slow = np.array([clip_overlap(tris[i], boxes[i], 0.02) for i in range(n)])
    assert 0.1 < slow.mean() < 0.9, "test must exercise both outcomes"
    np.testing.assert_array_equal(fast, slow)


def test_exact_box_with_faces_inside_cells():
    c = cell_centers(R)
    lo, hi = np.array([c[3], c[10], c[5]]), np.array([c[20], c[15], c[29]])
    box = trimesh.creation.box(bounds=np.stack([lo, hi]))
    vox = voxelize_mesh(box.vertices, box.faces, R)
    expect = np.zeros((R, R, R), bool)
    expect[3:21, 10:16, 5:30] = True  # indexed [x, y, z]
    np.testing.assert_array_equal(vox, expect)
    surf = surface_voxels(box.vertices, box.faces, R)
    assert not surf[4:20, 11:15, 6:29].any() and surf[3, 12, 12] and surf[12, 15, 12]


def test_big_plane_triangles_mark_one_layer():
    v = np.array([[-0.6, -0.6, 0.01], [0.6, -0.6, 0.01], [0.6, 0.6, 0.01], [-0.6, 0.6, 0.01]])
    f = np.array([[0, 1, 2], [0, 2, 3]])
    vox = voxelize_mesh(v, f, R)
    k = int(np.floor((0.01 + 0.5) / H))
    assert vox[:, :, k].all() and vox.sum() == R * R, "a plane is one layer, nothing enclosed"


@pytest.fixture(scope="module")
def sphere():
    return trimesh.creation.icosphere(subdivisions=3, radius=0.37).apply_translation(
        [0.03, -0.05, 0.02]
    )


def test_split_and_whole_bbox_paths_agree(monkeypatch):
    rng = np.random.default_rng(5)
    v = rng.uniform(-0.55, 0.55, (30, 3))
    f = rng.integers(0, 30, (40, 3))
    f = f[(f[:, 0] != f[:, 1]) & (f[:, 1] != f[:, 2]) & (f[:, 0] != f[:, 2])]
    monkeypatch.setattr(voxelize, "_BIG_TRIANGLE_CELLS", 1000)
    split = surface_voxels(v, f, R)
    monkeypatch.setattr(voxelize, "_BIG_TRIANGLE_CELLS", 0)
    whole = surface_voxels(v, f, R)
    assert split.sum() > 1000
    np.testing.assert_array_equal(split, whole)


def test_watertight_mesh_matches_contains_up_to_boundary_cells(sphere):
    vox = voxelize_mesh(sphere.vertices, sphere.faces, R)
    surf = surface_voxels(sphere.vertices, sphere.faces, R)
    c = cell_centers(R)
    centres = np.stack(np.meshgrid(c, c, c, indexing="ij"), -1).reshape(-1, 3)
    inside = sphere.contains(centres).reshape(R, R, R)
    assert not (inside & ~vox).any(), "every cell whose centre is inside must be filled"
    assert not (vox & ~inside & ~surf).any(), "extra filled cells must be surface (boundary) cells"
    assert (vox & ~inside).sum() < 0.25 * inside.sum()


def test_surface_cells_are_complete_and_sound(sphere):
    surf = surface_voxels(sphere.vertices, sphere.faces, R)
    dense, _ = trimesh.sample.sample_surface_even(sphere, 60000, seed=1)
    idx = np.floor((dense + 0.5) / H).astype(int)
    assert surf[tuple(idx.T)].all(), "a cell holding a surface point is missing"
    c = cell_centers(R)
    centres = np.stack(np.meshgrid(c, c, c, indexing="ij"), -1)[surf]
    _, dist, _ = trimesh.proximity.closest_point(sphere, centres)
    assert dist.max() <= np.sqrt(3) / 2 * H + 1e-9, "a surface cell does not meet the surface"


def test_open_and_self_intersecting_meshes():
    fine = trimesh.creation.icosphere(subdivisions=4, radius=0.37)
    assert fine.edges_unique_length.max() < H, "the hole below must be smaller than a cell"
    ref = voxelize_mesh(fine.vertices, fine.faces, R)
    holed = voxelize_mesh(fine.vertices, fine.faces[1:], R)  # open mesh: one face removed
    np.testing.assert_array_equal(holed, ref)
    a = trimesh.creation.icosphere(2, radius=0.25).apply_translation([-0.12, 0, 0])
    b = trimesh.creation.icosphere(2, radius=0.25).apply_translation([0.12, 0.05, 0])
    both = voxelize_mesh(
        np.concatenate([a.vertices, b.vertices]),
        np.concatenate([a.faces, b.faces + len(a.vertices)]),
        R,
    )
    va, vb = voxelize_mesh(a.vertices, a.faces, R), voxelize_mesh(b.vertices, b.faces, R)
    np.testing.assert_array_equal(both, va | vb)


def test_fill_exterior_floods_from_outside_only():
    s = np.zeros((6, 6, 6), bool)
    s[1:5, 1:5, 1:5] = True
    s[2:4, 2:4, 2:4] = False
    filled = fill_exterior(s)
    assert filled[1:5, 1:5, 1:5].all() and filled.sum() == 64
    s[2, 2, 1] = False  # open a tunnel from the cavity to the outside
    s[2, 2, 0] = False
    assert fill_exterior(s).sum() == s.sum()


def test_empty_and_bad_inputs():
    assert not voxelize_mesh(np.zeros((0, 3)), np.zeros((0, 3), int)).any()
    with pytest.raises(ValueError, match=r"vertices must have shape \(V, 3\)"):
        voxelize_mesh(np.zeros((4, 2)), np.zeros((1, 3), int))
    with pytest.raises(ValueError, match="out of range"):
        voxelize_mesh(np.zeros((3, 3)), np.array([[0, 1, 3]]))
    with pytest.raises(ValueError, match="non-finite"):
        voxelize_mesh(np.full((3, 3), np.nan), np.array([[0, 1, 2]]))

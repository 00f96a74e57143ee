"""Procedural shapes: watertight, normalised, centred, canonically oriented, varied, deterministic."""

import numpy as np
import pytest

from poseless.data.synthetic import (
    CATEGORIES,
    PART_NAMES,
    SHAPE_PARAM_DIM,
    make_shape,
    voxelize_filled,
)

SEEDS = range(12)
P0 = len(CATEGORIES)  # first generator parameter in shape_params


def _shape(category, seed):
    return make_shape(category, np.random.default_rng(seed))


def _part_centroid(shape, name):
    """Area-weighted centroid (3,) of the faces of one part."""
    k = shape.part_names.index(name)
    sel = shape.face_parts == k
    assert sel.any(), f"{shape.category}: part {name} has no faces"
    area = shape.mesh.area_faces[sel]
    return (shape.mesh.triangles_center[sel] * area[:, None]).sum(0) / area.sum()


def test_at_least_seven_categories():
    assert len(CATEGORIES) >= 7, CATEGORIES
    assert set(CATEGORIES) >= {"chair", "table", "airplane", "car", "mug", "lamp", "sofa"}


@pytest.mark.parametrize("category", CATEGORIES)
def test_watertight_normalised_centred(category):
    for seed in SEEDS:
        s = _shape(category, seed)
        m = s.mesh
        tag = f"{category} seed {seed}"
        assert m.is_watertight, f"{tag}: not watertight"
        assert m.is_winding_consistent, f"{tag}: inconsistent winding"
        assert m.volume > 0, f"{tag}: inward-facing normals (volume {m.volume})"
        lo, hi = m.bounds
        assert np.allclose((lo + hi) / 2, 0.0, atol=1e-12), f"{tag}: bbox centre {(lo + hi) / 2}"
        assert abs((hi - lo).max() - 1.0) < 1e-12, f"{tag}: longest side {(hi - lo).max()}"
        assert lo.min() >= -0.5 - 1e-12 and hi.max() <= 0.5 + 1e-12, f"{tag}: outside the unit cube"
        assert 50 <= len(m.faces) <= 5000, f"{tag}: {len(m.faces)} faces"
        assert s.face_parts.shape == (len(m.faces),) and s.face_parts.dtype == np.int32
        assert s.face_parts.min() >= 0 and s.face_parts.max() < len(PART_NAMES[category])
        assert s.part_names == PART_NAMES[category]
        assert s.part_colors.shape == (len(s.part_names), 3)
        assert s.part_colors.min() >= 0 and s.part_colors.max() <= 1
        assert s.shape_params.shape == (SHAPE_PARAM_DIM,) and s.shape_params.dtype == np.float32
        onehot = np.zeros(len(CATEGORIES), np.float32)
        onehot[CATEGORIES.index(category)] = 1
        assert np.array_equal(s.shape_params[:P0], onehot), f"{tag}: bad one-hot"


def test_same_seed_same_bytes_and_seeds_differ():
    for category in CATEGORIES:
        a, b = _shape(category, 3), _shape(category, 3)
        assert a.mesh.vertices.tobytes() == b.mesh.vertices.tobytes(), category
        assert a.mesh.faces.tobytes() == b.mesh.faces.tobytes(), category
        assert a.face_parts.tobytes() == b.face_parts.tobytes(), category
        assert a.part_colors.tobytes() == b.part_colors.tobytes(), category
        shapes = [_shape(category, s) for s in range(6)]
        params = {s.shape_params.tobytes() for s in shapes}
        volumes = {round(s.mesh.volume, 9) for s in shapes}
        extents = {tuple(np.round(s.mesh.extents, 6)) for s in shapes}
        assert len(params) == 6 and len(volumes) == 6 and len(extents) == 6, (
            f"{category}: seeds do not give different shapes"
        )


def test_chair_structural_variants_all_occur():
    # parameter order: w, d, st, sh, bh, bt, tilt, back_style, n_slats, base_style,
    # leg_t, leg_round, splay, arms, ...
    params = np.stack([_shape("chair", s).shape_params[P0:] for s in range(40)])
    assert set(params[:, 7].astype(int)) == {0, 1, 2}, "back styles (solid / slats / rails)"
    assert set(params[:, 9].astype(int)) == {0, 1, 2}, "bases (4 legs / pedestal / sled)"
    assert set(params[:, 13].astype(int)) == {0, 1}, "with and without arms"


def _style_seed(category, style, index=P0):
    for seed in range(200):
        if int(_shape(category, seed).shape_params[index]) == style:
            return seed
    raise AssertionError(f"{category}: no seed with style {style}")


def test_canonical_orientation():
    for seed in range(5):
        c = _shape("chair", seed)
        seat, back = _part_centroid(c, "seat"), _part_centroid(c, "back")
        assert back[2] > seat[2] + 0.1, f"chair {seed}: back rest not at +z ({back} vs {seat})"
        assert back[1] > seat[1], f"chair {seed}: back below the seat"
        assert _part_centroid(c, "base")[1] < seat[1], f"chair {seed}: base above the seat"

        t = _shape("table", seed)
        assert _part_centroid(t, "top")[1] > _part_centroid(t, "legs")[1], f"table {seed}"

        a = _shape("airplane", seed)
        fus = a.mesh.vertices[np.unique(a.mesh.faces[a.face_parts == 0])]
        wings = a.mesh.vertices[np.unique(a.mesh.faces[a.face_parts == 1])]
        assert fus[:, 2].min() < wings[:, 2].min(), f"airplane {seed}: nose not at -z"
        assert abs(a.mesh.vertices[:, 2].min() + 0.5) < 1e-9 or abs(a.mesh.extents[2] - 1) > 1e-9
        assert _part_centroid(a, "tail")[2] > _part_centroid(a, "wings")[2] + 0.1, (
            f"airplane {seed}"
        )

        car = _shape("car", seed)
        assert _part_centroid(car, "headlights")[2] < -0.3, f"car {seed}: headlights not at -z"
        assert _part_centroid(car, "taillights")[2] > 0.3, f"car {seed}: taillights not at +z"
        assert _part_centroid(car, "cabin")[1] > _part_centroid(car, "body")[1], f"car {seed}"

        mug = _shape("mug", seed)
        handle = _part_centroid(mug, "handle")
        assert handle[0] > 0.2 and abs(handle[2]) < 1e-6, f"mug {seed}: handle not on +x ({handle})"
        hull = mug.mesh.convex_hull
        assert mug.mesh.volume < 0.75 * hull.volume, f"mug {seed}: no real concavity"
        top = mug.mesh.bounds[1, 1]
        probe = np.array([[0.0, top - 0.05, 0.0]])  # just below the rim, on the axis
        assert not mug.mesh.contains(probe)[0] and hull.contains(probe)[0], f"mug {seed}: not open"

        lamp = _shape("lamp", seed)
        assert _part_centroid(lamp, "shade")[1] > _part_centroid(lamp, "base")[1], f"lamp {seed}"

        sofa = _shape("sofa", seed)
        assert _part_centroid(sofa, "back")[2] > _part_centroid(sofa, "cushions")[2] + 0.05, (
            f"sofa {seed}: back not at +z"
        )
    desk = _shape("lamp", _style_seed("lamp", 2))
    assert _part_centroid(desk, "shade")[2] < -0.1, "desk lamp does not reach towards -z"


def test_chair_front_back_asymmetric_left_right_symmetric():
    for seed in range(3):
        s = _shape("chair", seed)
        vox = voxelize_filled(s.mesh.vertices, s.mesh.faces, 32)
        n = vox.sum()
        assert (vox != vox[::-1]).sum() <= 0.01 * n, f"chair {seed}: not left/right (x) symmetric"
        assert (vox != vox[:, :, ::-1]).sum() > 0.2 * n, f"chair {seed}: front/back symmetric"


def test_unknown_category_lists_known_ones():
    with pytest.raises(ValueError, match=r"unknown synthetic category 'horse'.*chair.*sofa"):
        make_shape("horse", np.random.default_rng(0))

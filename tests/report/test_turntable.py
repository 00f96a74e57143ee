"""Ray-cast renders and turntables: silhouettes, shading, object turn vs camera turn, GIF bytes."""

import io

import numpy as np
import pytest
import trimesh
from PIL import Image

from poseless.evaluate.harness import ViewCamera, render_silhouette
from poseless.report.turntable import (
    RenderSettings,
    gif_bytes,
    kato_pose,
    render_mesh,
    render_view,
    turntable_frames,
)

SET = RenderSettings(size=24)


def lshape():
    a = trimesh.creation.box((0.6, 0.2, 0.2))
    b = trimesh.creation.box((0.2, 0.5, 0.2))
    b.apply_translation((0.2, 0.2, 0.1))
    m = trimesh.util.concatenate([a, b])
    return np.asarray(m.vertices), np.asarray(m.faces)


def test_render_mask_is_the_exact_silhouette_and_background_elsewhere():
    v, f = lshape()
    R, t = kato_pose(40.0, 30.0, 2.732)
    rgb, mask = render_mesh(v, f, R, t, 30.0, SET)
    np.testing.assert_array_equal(mask, render_silhouette(v, f, ViewCamera(R, t, 30.0), 24))
    assert (rgb[~mask] == 255).all() and (rgb[mask] < 255).any()


def test_shading_is_two_sided_and_brighter_facing_the_light():
    # one square facing the camera, seen from the front and from behind (flipped winding)
    v = np.array([[-0.3, -0.3, 0], [0.3, -0.3, 0], [0.3, 0.3, 0], [-0.3, 0.3, 0]], float)
    f = np.array([[0, 1, 2], [0, 2, 3]])
    R, t = np.eye(3), np.array([0.0, 0.0, 2.0])
    a, ma = render_mesh(v, f, R, t, 30.0, SET)
    b, mb = render_mesh(v, f[:, ::-1], R, t, 30.0, SET)
    np.testing.assert_array_equal(a, b)
    dark = RenderSettings(size=24, ambient=0.0)
    c, _ = render_mesh(v, f, R, t, 30.0, dark)
    assert c[ma].mean() > 0  # the light (behind the camera) lights a camera-facing square
    assert c[ma].mean() < a[ma].mean()  # less ambient, darker


def test_turntable_frame_k_equals_the_camera_at_azimuth_360k_over_n():
    v, f = lshape()
    frames = turntable_frames(v, f, 4, SET)
    assert len(frames) == 4 and frames[0].shape == (24, 24, 3)
    for k, frame in enumerate(frames):
        view = render_view(v, f, 90.0 * k, SET)
        assert (np.abs(frame.astype(int) - view.astype(int)).max(axis=-1) > 2).mean() < 0.01, k
    assert not np.array_equal(frames[0], frames[1])


def test_gif_bytes_are_deterministic_and_loop():
    frames = [np.full((8, 8, 3), c, np.uint8) for c in (0, 128, 255)]
    data = gif_bytes(frames, 50)
    assert data == gif_bytes(frames, 50)
    with Image.open(io.BytesIO(data)) as im:
        assert im.n_frames == 3 and im.info.get("loop") == 0
    with pytest.raises(ValueError, match="no frames"):
        gif_bytes([])


def test_empty_mesh_renders_background():
    rgb, mask = render_mesh(
        np.zeros((0, 3)), np.zeros((0, 3), int), np.eye(3), np.array([0, 0, 2.0]), 30.0, SET
    )
    assert not mask.any() and (rgb == 255).all()

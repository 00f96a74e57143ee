"""ShapeClipper's reconstructor network: shapes, initial pose, config round trip, code swap."""

import math

import pytest
import torch

from poseless.geometry.rotations import shapeclipper_to_kato
from poseless.models.sdf_recon import (
    ResidualBottleneck,
    SdfReconstructor,
    ShapeClipperEncoder,
    create_sdf_reconstructor,
)
from poseless.render.rays import pixel_rays
from poseless.train.recon import Camera
from poseless.train.recon_sdf import render_pixels


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    model, info = create_sdf_reconstructor(
        "resnet18", None, "resnet18", None, code_dim=8, field_width=16, n_samples=8, input_size=32
    )
    return model.eval(), info


def test_default_architecture_is_shapeclippers():
    torch.manual_seed(0)
    model, info = create_sdf_reconstructor()
    assert info["encoder"]["name"] == "resnet34" and info["viewpoint_encoder"]["name"] == "resnet18"
    assert model.encoder.backbone.fc.out_features == 1024 and model.encoder.code_dim == 64
    assert not model.encoder.backbone.imagenet_norm
    blocks = [m for m in model.encoder.shape_head if isinstance(m, ResidualBottleneck)]
    assert len(blocks) == 2 and model.encoder.shape_head[-1].in_features == 512
    f = model.field.settings
    assert (f.hidden_width, f.n_hidden_layers, f.n_frequencies, f.symmetric) == (64, 5, 6, True)
    assert model.renderer.settings.n_samples == 64 and model.input_size == 224


def test_initial_viewpoint_is_level_and_unit_scale(tiny):
    model, _ = tiny
    vp = model.viewpoint(model.prepare(torch.rand(3, 3, 20, 20)))
    assert vp.azimuth.shape == (3, 2)
    assert torch.allclose(vp.azimuth.norm(dim=1), torch.ones(3))
    assert torch.allclose(vp.elevation, torch.tensor([[1.0, 0.0]] * 3))
    assert torch.allclose(vp.roll, torch.tensor([[1.0, 0.0]] * 3))
    assert torch.allclose(vp.scale, torch.ones(3))
    R, t = vp.extrinsics(2.732)
    assert torch.allclose(t[:, 2], torch.full((3,), 2.732))
    az, el, dist, roll = shapeclipper_to_kato(vp.azimuth, vp.elevation, vp.roll, vp.scale, 2.732)
    assert torch.allclose(az, -torch.atan2(vp.azimuth[:, 1], vp.azimuth[:, 0]), atol=1e-5)
    assert torch.allclose(el, torch.zeros(3), atol=1e-5) and torch.allclose(dist, t[:, 2])


def test_config_round_trip_reproduces_outputs(tiny):
    model, _ = tiny
    clone = SdfReconstructor.from_config(model.config())
    clone.load_state_dict(model.state_dict())
    clone.eval()
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        a, b = model.encode(x), clone.encode(x)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    with pytest.raises(ValueError, match="bad config"):
        SdfReconstructor.from_config({"encoder": {}})


def test_encoder_checks_backbone_width(tiny):
    model, _ = tiny
    with pytest.raises(ValueError, match="1024"):
        ShapeClipperEncoder(model.viewpoint.backbone)


def test_render_uses_the_given_shape_code(tiny):
    """The render uses exactly the shape code it is given (the SSC code swap)."""
    model, _ = tiny
    # Geometric init ignores the code; give the code weights values so that it matters.
    with torch.no_grad():
        model.field.sdf.layers[0].weight[:, -8:].normal_(0, 1.0)
    torch.manual_seed(1)
    shape = torch.randn(2, 8)
    color = torch.randn(2, 8)
    R = torch.eye(3).expand(2, 3, 3)
    t = torch.tensor([[0.0, 0.0, 2.732]] * 2)
    pix = torch.tensor([[0, 100, 528, 1000]] * 2)
    cam = Camera(fov_deg=30.0, distance=2.732)

    def render(s, c):
        g = torch.Generator().manual_seed(0)
        return render_pixels(model, s, c, R, t, pix, 32, cam, g, compute_normals=False)

    swapped = render(shape.flip(0), color)  # item 0 rendered with item 1's shape code
    direct = render(shape, color)
    single = render(shape[1:].expand(2, 8), color)
    assert torch.allclose(swapped.sdf[0], single.sdf[0]) and not torch.allclose(
        swapped.sdf[0], direct.sdf[0]
    )
    origins, dirs = pixel_rays(R, t, math.tan(math.radians(15)), pix, 32, 32)
    assert torch.allclose(swapped.sample_points[:, :, 0], origins + dirs * swapped.t[..., :1])

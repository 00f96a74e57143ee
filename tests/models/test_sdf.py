"""Tests for poseless.models.sdf (ShapeClipper's SDF and colour MLPs)."""

import math

import pytest
import torch
from torch.nn import functional as F

from poseless.models.sdf import (
    ColorNetwork,
    SDFField,
    SDFFieldSettings,
    SDFNetwork,
    fold_symmetric,
    positional_encoding,
)
from poseless.render.volume import sdf_with_gradient


def _naive_pe(x, n_freq):
    parts = [x]
    for k in range(n_freq):
        parts += [torch.sin(x * 2.0**k), torch.cos(x * 2.0**k)]
    return torch.cat(parts, dim=-1)


def _naive_sdf(net: SDFNetwork, points, code):
    """The reference formulation: concatenate the code to every point, cat/sqrt(2) at skips."""
    s = net.settings
    x = fold_symmetric(points) if s.symmetric else points
    inputs = _naive_pe(x, s.n_frequencies)
    if s.shape_code_dim:
        inputs = torch.cat([inputs, code[:, None, :].expand(-1, points.shape[1], -1)], dim=-1)
    h = inputs
    for index, layer in enumerate(net.layers):
        if index in s.skip_layers:
            h = torch.cat([h, inputs], dim=-1) / math.sqrt(2.0)
        h = layer(h)
        if index < len(net.layers) - 1:
            h = F.softplus(h, beta=s.softplus_beta)
    return h[..., 0], h[..., 1:]


def _perturb_(module, scale=0.3, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g) / math.sqrt(p.shape[-1]))


def test_positional_encoding_matches_naive_and_has_39_dims():
    x = torch.randn(2, 7, 3)
    pe = positional_encoding(x, 6)
    assert pe.shape == (2, 7, 39), pe.shape
    assert torch.allclose(pe, _naive_pe(x, 6)), "PE layout differs from [x, sin, cos, ...]"
    assert torch.equal(positional_encoding(x, 0), x)


def test_layer_dimensions_follow_shapeclipper():
    net = SDFNetwork()
    ins = [layer.in_features for layer in net.layers]
    outs = [layer.out_features for layer in net.layers]
    assert ins == [103, 167, 167, 64, 64, 64], ins
    assert outs == [64, 64, 64, 64, 64, 65], outs
    color = ColorNetwork()
    assert [layer.in_features for layer in color.layers] == [167, 64, 64, 64]
    assert [layer.out_features for layer in color.layers] == [64, 64, 64, 3]


@pytest.mark.parametrize("symmetric", [True, False])
def test_fast_sdf_forward_matches_concatenation_reference(symmetric):
    torch.manual_seed(0)
    net = SDFNetwork(SDFFieldSettings(symmetric=symmetric))
    _perturb_(net)  # geometric init zeroes the code weights; make every weight matter
    points = torch.rand(3, 50, 3) * 2 - 1
    code = torch.randn(3, 64)
    sdf, feat = net(points, code)
    ref_sdf, ref_feat = _naive_sdf(net, points, code)
    assert sdf.shape == (3, 50) and feat.shape == (3, 50, 64)
    assert torch.allclose(sdf, ref_sdf, atol=1e-5), (sdf - ref_sdf).abs().max()
    assert torch.allclose(feat, ref_feat, atol=1e-5), (feat - ref_feat).abs().max()


def test_fast_color_forward_matches_concatenation_reference():
    torch.manual_seed(1)
    net = ColorNetwork()
    points = torch.rand(2, 20, 3) * 2 - 1
    code = torch.randn(2, 64)
    feat = torch.randn(2, 20, 64)
    rgb = net(points, code, feat)
    inputs = torch.cat(
        [_naive_pe(fold_symmetric(points), 6), code[:, None].expand(-1, 20, -1), feat], dim=-1
    )
    h = inputs
    for layer in net.layers[:-1]:
        h = torch.relu(layer(h))
    ref = torch.sigmoid(net.layers[-1](h))
    assert torch.allclose(rgb, ref, atol=1e-6), (rgb - ref).abs().max()
    assert bool(((rgb > 0) & (rgb < 1)).all())


def test_batched_codes_act_per_item():
    torch.manual_seed(2)
    field = SDFField()
    _perturb_(field)
    points = torch.rand(3, 30, 3) * 2 - 1
    codes = torch.randn(3, 64)
    sdf, feat = field.sdf(points, codes)
    for b in range(3):
        one, one_feat = field.sdf(points[b : b + 1], codes[b : b + 1])
        assert torch.allclose(sdf[b], one[0], atol=1e-6)
        assert torch.allclose(feat[b], one_feat[0], atol=1e-6)
    other, _ = field.sdf(points, torch.randn(3, 64))
    assert (other - sdf).abs().max() > 1e-3, "the shape code has no effect"


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_geometric_init_is_a_sphere_of_radius_half(seed):
    torch.manual_seed(seed)
    net = SDFNetwork()
    g = torch.Generator().manual_seed(seed)
    dirs = F.normalize(torch.randn(2, 2000, 3, generator=g), dim=-1)
    radius = 0.25 + 0.75 * torch.rand(2, 2000, 1, generator=g)
    points = dirs * radius
    code = torch.randn(2, 64, generator=g)
    sdf, _, grad = sdf_with_gradient(lambda p: net(p, code), points, create_graph=False)
    err = (sdf - (radius[..., 0] - 0.5)).abs()
    assert err.mean() < 0.03, f"mean |sdf - (|x| - 0.5)| = {err.mean():.3f}"
    near = (radius[..., 0] - 0.5).abs() < 0.15
    assert err[near].mean() < 0.03, f"near the sphere: {err[near].mean():.3f}"
    norm = grad.norm(dim=-1)
    assert 0.95 < norm.mean() < 1.05 and norm.std() < 0.1, f"mean ||grad sdf|| = {norm.mean():.3f}"
    cos = F.cosine_similarity(grad, dirs, dim=-1)
    assert cos.mean() > 0.98, f"gradient not radial: mean cos {cos.mean():.3f}"
    # At init the code does not change the field (its weights start at zero).
    sdf2, _ = net(points, torch.randn(2, 64, generator=g))
    assert torch.allclose(sdf, sdf2, atol=1e-6)


def test_symmetry_is_structural_when_on_and_absent_when_off():
    points = torch.rand(2, 40, 3) * 2 - 1
    mirrored = points * torch.tensor([-1.0, 1.0, 1.0])
    code, ccode = torch.randn(2, 64), torch.randn(2, 64)
    for symmetric in (True, False):
        torch.manual_seed(3)
        field = SDFField(SDFFieldSettings(symmetric=symmetric))
        _perturb_(field)
        sdf, feat = field.sdf(points, code)
        sdf_m, feat_m = field.sdf(mirrored, code)
        rgb = field.color(points, ccode, feat)
        rgb_m = field.color(mirrored, ccode, feat_m)
        if symmetric:
            assert torch.equal(sdf, sdf_m) and torch.equal(rgb, rgb_m)
        else:
            assert (sdf - sdf_m).abs().max() > 1e-3, "asymmetric field came out symmetric"


def test_unconditional_field_and_closures():
    settings = SDFFieldSettings(shape_code_dim=0, color_code_dim=0, hidden_width=16, feature_dim=8)
    field = SDFField(settings)
    points = torch.rand(2, 5, 3)
    sdf, feat = field.sdf_fn()(points)
    assert sdf.shape == (2, 5) and feat.shape == (2, 5, 8)
    assert field.color_fn()(points, feat).shape == (2, 5, 3)


def test_bad_inputs_raise_clear_errors():
    net = SDFNetwork()
    with pytest.raises(ValueError, match=r"code must be \(B=2, 64\)"):
        net(torch.rand(2, 5, 3), torch.randn(3, 64))
    with pytest.raises(ValueError, match=r"points must be \(B, N, 3\)"):
        net(torch.rand(5, 3), torch.randn(1, 64))
    with pytest.raises(ValueError, match="skip_layers"):
        SDFFieldSettings(skip_layers=(5,))
    with pytest.raises(ValueError, match="hidden_width"):
        SDFFieldSettings(hidden_width=0)
    with pytest.raises(ValueError, match="features must be"):
        ColorNetwork()(torch.rand(1, 4, 3), torch.randn(1, 64), torch.randn(1, 4, 32))

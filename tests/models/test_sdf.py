"""Tests for poseless.models.sdf (ShapeClipper's SDF and colour MLPs)."""

import math

import pytest
import torch
from torch.nn import functional as F

from poseless.models.sdf import (
    BoundSDF,
    ColorNetwork,
    SDFField,
    SDFFieldSettings,
    SDFNetwork,
    fold_symmetric,
    positional_encoding,
    softplus_with_slope,
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


def _autograd_reference(net: SDFNetwork, points, code):
    """The slow obvious path: forward, then autograd.grad with create_graph (double backward)."""
    points = points.detach().requires_grad_(True)
    sdf, feat = net(points, code)
    (grad,) = torch.autograd.grad(sdf.sum(), points, create_graph=True)
    return points, sdf, feat, grad


def _second_order_loss(sdf, feat, grad, weights):
    """A loss touching the values, the features and the gradient (normal-like + eikonal)."""
    normals = F.normalize(grad, dim=-1)
    eikonal = ((grad.norm(dim=-1) - 1) ** 2).mean()
    return (sdf**2).mean() + feat.mean() + (normals * weights).sum() + eikonal


@pytest.mark.parametrize(
    "settings",
    [
        SDFFieldSettings(),
        SDFFieldSettings(symmetric=False),
        SDFFieldSettings(shape_code_dim=0, n_frequencies=0, hidden_width=16, skip_layers=(2,)),
        SDFFieldSettings(hidden_width=8, n_hidden_layers=2, skip_layers=(), softplus_beta=3.0),
    ],
    ids=["shapeclipper", "asymmetric", "no-pe-no-code", "tiny-no-skip"],
)
def test_with_gradient_matches_autograd_double_backward_float64(settings):
    torch.manual_seed(4)
    net = SDFNetwork(settings).double()
    _perturb_(net)
    g = torch.Generator().manual_seed(4)
    points = torch.rand(2, 40, 3, generator=g, dtype=torch.float64) * 2 - 1
    points[0, :5, 0] = 0.0  # on the mirror plane: |x|' = 0 on both paths
    code = None
    if settings.shape_code_dim:
        code = torch.randn(2, settings.shape_code_dim, generator=g, dtype=torch.float64)
    weights = torch.randn(2, 40, 3, generator=g, dtype=torch.float64)
    ref_points, ref_sdf, ref_feat, ref_grad = _autograd_reference(net, points, code)
    new_points = points.detach().requires_grad_(True)
    sdf, feat, grad = net.with_gradient(new_points, code)
    assert grad.shape == (2, 40, 3), grad.shape
    assert torch.allclose(sdf, ref_sdf, atol=1e-12), (sdf - ref_sdf).abs().max()
    assert torch.allclose(feat, ref_feat, atol=1e-12), (feat - ref_feat).abs().max()
    assert torch.allclose(grad, ref_grad, rtol=1e-7, atol=1e-8), (grad - ref_grad).abs().max()
    # Second order: a loss on the gradient trains the weights and moves the points alike.
    params = list(net.parameters())
    ref = torch.autograd.grad(
        _second_order_loss(ref_sdf, ref_feat, ref_grad, weights),
        [*params, ref_points],
        allow_unused=True,
        materialize_grads=True,
    )
    new = torch.autograd.grad(
        _second_order_loss(sdf, feat, grad, weights),
        [*params, new_points],
        allow_unused=True,
        materialize_grads=True,
    )
    for index, (a, b) in enumerate(zip(ref, new)):
        scale = a.abs().max().clamp_min(1e-12)
        assert ((a - b).abs().max() / scale) < 1e-6, f"tensor {index}: {(a - b).abs().max()}"


def test_with_gradient_gradcheck_float64():
    torch.manual_seed(5)
    settings = SDFFieldSettings(
        hidden_width=6,
        n_hidden_layers=3,
        skip_layers=(1,),
        n_frequencies=2,
        shape_code_dim=4,
        feature_dim=2,
        softplus_beta=4.0,
        geometric_init=False,
    )
    net = SDFNetwork(settings).double()
    points = (torch.rand(1, 4, 3, dtype=torch.float64) - 0.5).requires_grad_(True)
    code = torch.randn(1, 4, dtype=torch.float64, requires_grad=True)
    # d/d points of the gradient output is the Hessian: checks the second-order graph.
    assert torch.autograd.gradcheck(
        lambda p, c: net.with_gradient(p, c), (points, code), atol=1e-6
    ), "with_gradient is not differentiable in the points / code"


def test_softplus_with_slope_matches_softplus_and_gradchecks():
    z = torch.cat(
        [torch.linspace(-0.5, 0.5, 201, dtype=torch.float64), torch.tensor([-3.0, 3.0, 0.0])]
    )
    for beta in (100.0, 1.0):
        h, slope = softplus_with_slope(z, beta)
        assert torch.allclose(h, F.softplus(z, beta=beta), atol=1e-12), beta
        assert torch.allclose(slope, torch.sigmoid(beta * z), atol=1e-15), beta
        zf = z.float()
        hf, _ = softplus_with_slope(zf, beta)
        assert torch.allclose(hf, F.softplus(zf, beta=beta), atol=1e-7), "float32 softplus"
    small = (torch.randn(12, dtype=torch.float64) * 0.05).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: softplus_with_slope(x, 100.0), (small,))
    assert torch.autograd.gradcheck(lambda x: softplus_with_slope(x, 2.0), (small * 20,))


def test_bound_sdf_closure_offers_the_gradient():
    torch.manual_seed(6)
    field = SDFField(SDFFieldSettings(hidden_width=16, feature_dim=8))
    code = torch.randn(2, 64)
    bound = field.sdf_fn(code)
    assert isinstance(bound, BoundSDF)
    points = torch.rand(2, 7, 3)
    sdf, feat = bound(points)
    sdf2, feat2, grad = bound.with_gradient(points)
    assert torch.equal(sdf, field.sdf(points, code)[0])
    assert torch.allclose(sdf, sdf2, atol=1e-6) and torch.allclose(feat, feat2, atol=1e-6)
    _, _, ref = sdf_with_gradient(lambda p: field.sdf(p, code), points, analytic=False)
    assert torch.allclose(grad, ref, atol=1e-5), (grad - ref).abs().max()


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

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from poseless.models.pose_regressor import PoseRegressor, angle_error_deg


def test_architecture_matches_reference():
    p = PoseRegressor()
    layers = [m for m in p.modules() if isinstance(m, nn.Conv2d)]
    got = [(c.in_channels, c.out_channels, c.kernel_size, c.stride, c.padding) for c in layers]
    assert got == [
        (1, 64, (4, 4), (2, 2), (1, 1)),
        (64, 128, (4, 4), (2, 2), (1, 1)),
        (128, 256, (4, 4), (2, 2), (1, 1)),
        (256, 512, (4, 4), (2, 2), (1, 1)),
        (512, 100, (4, 4), (2, 2), (0, 0)),
    ]
    assert (p.fc1.in_features, p.fc1.out_features) == (100, 50)
    assert (p.fc2.in_features, p.fc2.out_features) == (50, 1)
    assert PoseRegressor("cossin").fc2.out_features == 2


def test_forward_matches_explicit_network():
    torch.manual_seed(0)
    p = PoseRegressor()
    x = torch.rand(4, 1, 64, 64)
    layers = [m for m in p.modules() if isinstance(m, nn.Conv2d)]
    h = x
    for conv in layers[:4]:
        h = F.relu(F.conv2d(h, conv.weight, conv.bias, stride=2, padding=1))
    h = F.relu(F.conv2d(h, layers[4].weight, layers[4].bias, stride=2)).mean(dim=(2, 3))
    expected = torch.sigmoid(p.fc2(F.relu(p.fc1(h))))[:, 0] * 360
    torch.testing.assert_close(p(x), expected)


@pytest.mark.parametrize("head", ["sigmoid", "cossin"])
@pytest.mark.parametrize("size", [32, 64, 128])
def test_output_range_and_shape(head, size):
    torch.manual_seed(1)
    p = PoseRegressor(head)
    with torch.no_grad():
        p.fc2.weight.mul_(200.0)  # spread the outputs over the whole circle
    deg = p(torch.rand(8, 1, size, size))
    assert deg.shape == (8,)
    assert (deg >= 0).all() and (deg < 360).all(), deg
    cs = p.cos_sin(torch.rand(3, 1, size, size))
    torch.testing.assert_close(cs.norm(dim=1), torch.ones(3))


def test_saturated_sigmoid_wraps_to_zero():
    p = PoseRegressor()
    with torch.no_grad():
        p.fc2.weight.zero_()
        p.fc2.bias.fill_(100.0)  # sigmoid == 1.0 exactly in float32
    deg = p(torch.rand(2, 1, 64, 64))
    assert torch.equal(deg, torch.zeros(2))


def test_cos_sin_agrees_with_forward():
    torch.manual_seed(2)
    for head in ("sigmoid", "cossin"):
        p = PoseRegressor(head)
        x = torch.rand(3, 1, 32, 32)
        a = torch.deg2rad(p(x))
        torch.testing.assert_close(
            p.cos_sin(x), torch.stack([a.cos(), a.sin()], 1), atol=1e-5, rtol=0
        )


def test_gradients_reach_the_trunk():
    p = PoseRegressor()
    p(torch.rand(2, 1, 64, 64)).sum().backward()
    assert p.trunk.features[0].weight.grad.abs().sum() > 0


def test_angle_error():
    pred = torch.tensor([350.0, 10.0, 180.0, 90.0])
    target = torch.tensor([10.0, 350.0, 0.0, 90.0])
    torch.testing.assert_close(
        angle_error_deg(pred, target), torch.tensor([20.0, 20.0, 180.0, 0.0])
    )


def test_bad_inputs():
    with pytest.raises(ValueError, match="head must be"):
        PoseRegressor("angle")
    with pytest.raises(ValueError, match=r"\(B, 1, H, W\)"):
        PoseRegressor()(torch.rand(1, 64, 64))

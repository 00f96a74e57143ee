import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from poseless.models.discriminator import (
    SilhouetteDiscriminator,
    final_conv_padding,
    pose_channels,
)


def convs(module):
    return [m for m in module.modules() if isinstance(m, nn.Conv2d)]


def test_architecture_matches_reference():
    d = SilhouetteDiscriminator()
    layers = convs(d)
    got = [(c.in_channels, c.out_channels, c.kernel_size, c.stride, c.padding) for c in layers]
    assert got == [
        (1, 64, (4, 4), (2, 2), (1, 1)),
        (64, 128, (4, 4), (2, 2), (1, 1)),
        (128, 256, (4, 4), (2, 2), (1, 1)),
        (256, 512, (4, 4), (2, 2), (1, 1)),
        (512, 1, (4, 4), (2, 2), (0, 0)),
    ]
    norm_types = (nn.BatchNorm2d, nn.InstanceNorm2d, nn.GroupNorm, nn.LayerNorm)
    assert not any(isinstance(m, norm_types) for m in d.modules())
    assert not any(isinstance(m, nn.Sigmoid) for m in d.modules())
    assert sum(isinstance(m, nn.ReLU) for m in d.modules()) == 4


def reference_forward(d, x, last_pad=0):
    """The paper's network written out layer by layer."""
    layers = convs(d)
    h = x
    for conv in layers[:4]:
        h = F.relu(F.conv2d(h, conv.weight, conv.bias, stride=2, padding=1))
    h = F.pad(h, (last_pad,) * 4)
    h = F.conv2d(h, layers[4].weight, layers[4].bias, stride=2)
    return h.mean(dim=(1, 2, 3))


@pytest.mark.parametrize("size,last_pad", [(64, 0), (128, 0), (32, 1), (16, 2)])
def test_forward_matches_explicit_network(size, last_pad):
    torch.manual_seed(0)
    d = SilhouetteDiscriminator()
    x = torch.rand(3, 1, size, size)
    out = d(x)
    assert out.shape == (3,)
    torch.testing.assert_close(out, reference_forward(d, x, last_pad))


def test_final_conv_padding():
    assert [final_conv_padding(s) for s in (1, 2, 3, 4, 8)] == [2, 1, 1, 0, 0]


def test_no_sigmoid_scores_unbounded():
    d = SilhouetteDiscriminator()
    with torch.no_grad():
        convs(d)[-1].bias.fill_(7.0)
    assert (d(torch.rand(2, 1, 64, 64)) > 1.0).all()
    with torch.no_grad():
        convs(d)[-1].bias.fill_(-7.0)
    assert (d(torch.rand(2, 1, 64, 64)) < 0.0).all()


def test_pose_aware_variant():
    torch.manual_seed(1)
    d = SilhouetteDiscriminator(pose_condition=True)
    assert convs(d)[0].in_channels == 3
    x = torch.rand(2, 1, 64, 64)
    a = torch.tensor([0.3, 2.0])
    out = d(x, a)
    assert out.shape == (2,)
    assert not torch.allclose(out, d(x, a + 1.0)), "the pose condition must change the score"
    torch.testing.assert_close(out, d(x, a + 2 * math.pi), rtol=0, atol=1e-5)
    ch = pose_channels(a, 4, 5)
    assert ch.shape == (2, 2, 4, 5)
    assert torch.allclose(ch[1, 0], torch.full((4, 5), math.cos(2.0)))
    assert torch.allclose(ch[1, 1], torch.full((4, 5), math.sin(2.0)))
    with pytest.raises(ValueError, match="azimuth_rad must be"):
        d(x)
    with pytest.raises(ValueError, match="pose-independent"):
        SilhouetteDiscriminator()(x, a)


def test_bad_inputs():
    d = SilhouetteDiscriminator()
    with pytest.raises(ValueError, match=r"\(B, 1, H, W\)"):
        d(torch.rand(2, 3, 64, 64))
    with pytest.raises(ValueError, match=">= 16"):
        d(torch.rand(2, 1, 8, 8))

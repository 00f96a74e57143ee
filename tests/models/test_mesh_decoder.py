import math

import pytest
import torch

from poseless.geometry.mesh import icosphere
from poseless.models.mesh_decoder import (
    CENTROID_SCALE,
    Generator,
    MeshDecoder,
    deform_template,
)


def slow_deform(template, bias, centroid):
    """Coordinate-by-coordinate transcription of REFERENCE's vertex formula."""
    B, V = bias.shape[:2]
    out = torch.empty(B, V, 3, dtype=torch.float64)
    for b in range(B):
        for i in range(V):
            for k in range(3):
                base = 0.5 * float(template[i, k])
                sign = (base > 0) - (base < 0)
                if base == 0:
                    v = 0.0
                else:
                    logit = math.log(abs(base) / (1 - abs(base)))
                    v = sign / (1 + math.exp(-(logit + float(bias[b, i, k]))))
                c = math.tanh(float(centroid[b, k]))
                v = max(v, 0.0) * (1 - c) - max(-v, 0.0) * (1 + c) + c
                out[b, i, k] = 0.5 * v
    return out


def test_deform_matches_slow_reference():
    g = torch.Generator().manual_seed(0)
    template = torch.nn.functional.normalize(torch.randn(7, 3, generator=g, dtype=torch.float64))
    template[0, 1] = 0.0  # exact zeros occur on the icosphere
    bias = 3 * torch.randn(2, 7, 3, generator=g, dtype=torch.float64)
    centroid = torch.randn(2, 3, generator=g, dtype=torch.float64)
    fast = deform_template(template, bias, centroid)
    torch.testing.assert_close(fast, slow_deform(template, bias, centroid), rtol=0, atol=1e-12)


def test_zero_bias_and_centroid_give_quarter_template():
    # b = 0.5 t; sigmoid(logit|b|) sign(b) = b; c = 0 leaves b; halved: 0.25 t.
    template, _ = icosphere(3, dtype=torch.float64)
    v = deform_template(template, torch.zeros(1, 642, 3, dtype=torch.float64), torch.zeros(1, 3))
    torch.testing.assert_close(v[0], 0.25 * template, rtol=0, atol=1e-12)

    dec = MeshDecoder(5)
    with torch.no_grad():
        for head in (dec.fc_bias, dec.fc_centroid):
            head.weight.zero_()
            head.bias.zero_()
    out = dec(torch.randn(3, 5))
    expected = 0.25 * dec.template
    torch.testing.assert_close(out, expected.expand(3, -1, -1), rtol=0, atol=1e-6)
    norms = out.norm(dim=-1)
    torch.testing.assert_close(norms, torch.full_like(norms, 0.25), rtol=0, atol=1e-6)


def test_vertices_stay_in_half_cube_for_any_input():
    g = torch.Generator().manual_seed(1)
    template, _ = icosphere(3)
    for scale in (1.0, 10.0, 100.0):
        bias = scale * torch.randn(4, 642, 3, generator=g)
        centroid = scale * torch.randn(4, 3, generator=g)
        v = deform_template(template, bias, centroid)
        assert v.abs().max() <= 0.5, f"scale {scale}: max |v| = {v.abs().max()}"
    dec = MeshDecoder(16)
    v = dec(50 * torch.randn(8, 16, generator=g))
    assert v.shape == (8, 642, 3)
    assert torch.isfinite(v).all() and v.abs().max() <= 0.5


def test_zero_centroid_keeps_each_coordinate_on_its_side():
    g = torch.Generator().manual_seed(2)
    template, _ = icosphere(2)
    bias = 5 * torch.randn(2, template.shape[0], 3, generator=g)
    v = deform_template(template, bias, torch.zeros(2, 3))
    assert torch.equal(torch.sign(v), torch.sign(template).expand_as(v))


def test_centroid_head_scaled_by_a_tenth():
    dec = MeshDecoder(4)
    with torch.no_grad():
        dec.fc_bias.weight.zero_()
        dec.fc_bias.bias.zero_()
        dec.fc_centroid.weight.zero_()
        dec.fc_centroid.bias.copy_(torch.tensor([2.0, -3.0, 0.5]))
    out = dec(torch.zeros(1, 4))
    c = torch.tanh(CENTROID_SCALE * torch.tensor([2.0, -3.0, 0.5]))
    t = 0.5 * dec.template
    expected = 0.5 * (torch.relu(t) * (1 - c) - torch.relu(-t) * (1 + c) + c)
    torch.testing.assert_close(out[0], expected, rtol=0, atol=1e-6)


def test_architecture_sizes():
    gen = Generator()
    dec = gen.decoder
    assert (dec.fc1.in_features, dec.fc1.out_features) == (128, 1024)
    assert (dec.fc2.in_features, dec.fc2.out_features) == (1024, 2048)
    assert (dec.fc_centroid.in_features, dec.fc_centroid.out_features) == (2048, 3)
    assert (dec.fc_bias.in_features, dec.fc_bias.out_features) == (2048, 642 * 3)
    assert gen.bias_head is dec.fc_bias
    assert dec.template.shape == (642, 3) and gen.faces.shape == (1280, 3)
    assert gen.faces.dtype == torch.long
    torch.testing.assert_close(dec.template.norm(dim=1), torch.ones(642))
    # The template is rebuilt, not stored: the state dict holds only weights.
    assert all(k.split(".")[-1] in ("weight", "bias") for k in gen.state_dict())


def test_generator_sampling_and_output():
    gen = Generator()
    z1 = gen.sample_z(4000, torch.Generator().manual_seed(3))
    z2 = gen.sample_z(4000, torch.Generator().manual_seed(3))
    assert z1.shape == (4000, 128) and torch.equal(z1, z2)
    assert abs(z1.std().item() - 0.33) < 0.005, z1.std()
    assert abs(z1.mean().item()) < 0.005
    verts, faces = gen(z1[:2])
    assert verts.shape == (2, 642, 3) and faces.shape == (1280, 3)
    verts.sum().backward()
    assert gen.decoder.fc1.weight.grad is not None


def test_gradcheck_deform():
    g = torch.Generator().manual_seed(4)
    template = torch.nn.functional.normalize(torch.randn(4, 3, generator=g, dtype=torch.float64))
    bias = torch.randn(2, 4, 3, generator=g, dtype=torch.float64, requires_grad=True)
    centroid = torch.randn(2, 3, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda b, c: deform_template(template, b, c), (bias, centroid))


def test_bad_inputs():
    dec = MeshDecoder(8)
    with pytest.raises(ValueError, match=r"input must be \(B, 8\)"):
        dec(torch.zeros(2, 7))
    with pytest.raises(ValueError, match="bias must be"):
        deform_template(torch.zeros(5, 3), torch.zeros(1, 4, 3), torch.zeros(1, 3))
    with pytest.raises(ValueError, match="centroid must be"):
        deform_template(torch.zeros(5, 3), torch.zeros(2, 5, 3), torch.zeros(1, 3))
    with pytest.raises(ValueError, match="dim_in must be positive"):
        MeshDecoder(0)

"""URA's mesh reconstructor: shapes, bounds, pose head, rebuild from config."""

import math

import pytest
import torch

from poseless.models.mesh_recon import (
    MeshReconstructor,
    azimuth_from_vector,
    create_mesh_reconstructor,
)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_shapes_bounds_and_no_pose_head():
    torch.manual_seed(0)
    model, info = create_mesh_reconstructor("resnet18", "", 16, template_level=1)
    assert info["weights"] == "random-init" and info["imagenet_norm"] is True
    assert not model.has_pose_head and model.pose is None
    out = model(torch.rand(3, 3, 32, 32) * 10)  # large inputs: the bounds still hold
    assert out.vertices.shape == (3, 42, 3) and out.azimuth is None
    assert out.vertices.abs().max() <= 0.5
    assert model.faces.shape == (80, 3) and model.faces.dtype == torch.long


def test_pose_head_gives_azimuth_with_gradient():
    torch.manual_seed(0)
    model, _ = create_mesh_reconstructor("resnet18", None, 16, template_level=0, pose_head=True)
    out = model(torch.rand(2, 3, 32, 32))
    assert out.azimuth.shape == (2,)
    assert (out.azimuth.abs() <= math.pi + 1e-6).all()
    out.azimuth.sum().backward()
    assert model.pose.weight.grad is not None and model.pose.weight.grad.abs().sum() > 0


def test_azimuth_from_vector_matches_atan2_and_ignores_scale():
    a = torch.tensor([0.0, 0.5, 2.0, -2.5, math.pi - 1e-3])
    vec = torch.stack([torch.cos(a), torch.sin(a)], 1) * torch.tensor(
        [[1.0], [3.0], [0.2], [7.0], [1.0]]
    )
    torch.testing.assert_close(azimuth_from_vector(vec), a, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match=r"expected \(B, 2\)"):
        azimuth_from_vector(torch.zeros(3))


def test_from_config_rebuilds_the_same_module():
    torch.manual_seed(0)
    model, _ = create_mesh_reconstructor("resnet18", "", 8, template_level=1, pose_head=True)
    cfg = model.config()
    assert cfg == {
        "encoder": {"name": "resnet18", "out_dim": 8, "imagenet_norm": True},
        "template_level": 1,
        "pose_head": True,
    }
    rebuilt = MeshReconstructor.from_config(cfg)
    rebuilt.load_state_dict(model.state_dict())
    model.eval()
    rebuilt.eval()
    x = torch.rand(2, 3, 32, 32)
    a, b = model(x), rebuilt(x)
    assert torch.equal(a.vertices, b.vertices) and torch.equal(a.azimuth, b.azimuth)
    with pytest.raises(ValueError, match="bad config"):
        MeshReconstructor.from_config({"template_level": 1})


def test_imagenet_normalisation_is_applied():
    torch.manual_seed(0)
    model, _ = create_mesh_reconstructor("resnet18", "", 8, template_level=0)
    enc = model.encoder.eval()
    x = torch.rand(1, 3, 32, 32)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    expected = enc.fc(enc.backbone((x - mean) / std))
    torch.testing.assert_close(enc(x), expected)


def test_missing_weights_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        create_mesh_reconstructor("resnet18", str(tmp_path / "nope.pth"), 8)

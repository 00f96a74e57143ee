import pytest
import torch
import torchvision

from poseless.errors import PoselessError
from poseless.models.encoders import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    MissingWeightsError,
    create_encoder,
    resolve_weights,
)
from poseless.utils import file_sha256


@pytest.fixture(scope="module")
def resnet18_file(tmp_path_factory):
    """A random-init resnet18 state dict saved the way torchvision distributes its weights."""
    torch.manual_seed(123)
    state = torchvision.models.resnet18(weights=None).state_dict()
    path = tmp_path_factory.mktemp("weights") / "my-resnet18.pth"
    torch.save(state, path)
    return path, state


def test_random_init_shapes_and_info():
    enc, info = create_encoder("resnet18", None, out_dim=512)
    out = enc(torch.rand(2, 3, 16, 16))
    assert out.shape == (2, 512)
    assert info["weights"] == "random-init" and info["weights_sha256"] is None
    assert isinstance(enc.backbone.fc, torch.nn.Identity)
    assert (enc.fc.in_features, enc.fc.out_features) == (512, 512)
    assert enc.config() == {"name": "resnet18", "out_dim": 512, "imagenet_norm": False}


def test_resnet34_builds():
    enc, _ = create_encoder("resnet34", None, out_dim=1024)
    assert len(enc.backbone.layer1) == 3 and len(enc.backbone.layer3) == 6
    assert enc(torch.rand(2, 3, 16, 16)).shape == (2, 1024)


def test_loads_torchvision_state_dict_from_path(resnet18_file):
    path, state = resnet18_file
    enc, info = create_encoder("resnet18", str(path), out_dim=7)
    for key in ("conv1.weight", "layer4.1.bn2.running_var", "layer2.0.downsample.0.weight"):
        assert torch.equal(enc.backbone.state_dict()[key], state[key]), key
    assert "fc.weight" not in enc.backbone.state_dict()
    assert info["weights"] == "file"
    assert info["weights_path"] == str(path)
    assert info["weights_sha256"] == file_sha256(path)
    assert info["weights_tag"] is None


def test_imagenet_normalisation_option():
    enc, info = create_encoder("resnet18", None, out_dim=4, imagenet_norm=True)
    assert info["imagenet_norm"] and enc.config()["imagenet_norm"]
    enc.eval()
    x = torch.rand(2, 3, 16, 16)
    normed = enc(x)
    enc.imagenet_norm = False
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    torch.testing.assert_close(normed, enc((x - mean) / std))
    assert not torch.allclose(normed, enc(x))


def test_missing_file_fails_fast(tmp_path):
    with pytest.raises(MissingWeightsError, match="does not exist.*null for random"):
        create_encoder("resnet18", str(tmp_path / "nope.pth"), out_dim=8)


def test_tag_is_looked_up_in_the_hub_cache_only(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(MissingWeightsError, match=r"not in the torch hub cache.*TORCH_HOME"):
        create_encoder("resnet18", "IMAGENET1K_V1", out_dim=8)
    cached = tmp_path / "checkpoints" / "resnet18-f37072fd.pth"
    cached.parent.mkdir()
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), cached)
    for tag in ("IMAGENET1K_V1", "DEFAULT", "ResNet18_Weights.IMAGENET1K_V1"):
        assert resolve_weights("resnet18", tag) == (cached, "ResNet18_Weights.IMAGENET1K_V1")
    # Our stand-in file cannot have torchvision's hash: caught as a corrupt download.
    with pytest.raises(PoselessError, match="does not match the hash prefix f37072fd"):
        create_encoder("resnet18", "IMAGENET1K_V1", out_dim=8)


def test_bad_arguments(resnet18_file, tmp_path):
    with pytest.raises(ValueError, match="name must be one of"):
        create_encoder("vgg16", None, out_dim=8)
    with pytest.raises(ValueError, match="unknown pretrained value 'IMAGENET9K'"):
        create_encoder("resnet18", "IMAGENET9K", out_dim=8)
    path, _ = resnet18_file
    with pytest.raises(PoselessError, match="not a torchvision resnet34 state dict"):
        create_encoder("resnet34", str(path), out_dim=8)
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a torch file")
    with pytest.raises(PoselessError, match="cannot read"):
        create_encoder("resnet18", str(junk), out_dim=8)

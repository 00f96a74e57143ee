"""Image encoders: torchvision ResNets with the classifier replaced by a projection.

``create_encoder(name, pretrained, out_dim)`` builds a torchvision ResNet-18/34,
optionally loads torchvision's released ImageNet weights **from disk only**,
removes ``fc`` and appends ``Linear(512, out_dim)``. Nothing is downloaded at
runtime: a missing file fails at once with a message saying what to set.

``pretrained`` is one of
* ``None`` — random initialisation (from the global torch RNG; recorded as such);
* a path to torchvision's weights file as distributed (a state dict, e.g.
  ``resnet18-f37072fd.pth``);
* a torchvision weights tag (``"IMAGENET1K_V1"``, ``"DEFAULT"`` or
  ``"ResNet18_Weights.IMAGENET1K_V1"``), read from the torch hub cache
  (``torch.hub.get_dir()/checkpoints/<file name of the tag's URL>``, the place
  torchvision itself would have downloaded it to; ``$TORCH_HOME`` moves it).

URA's reconstructor: ResNet-18, ImageNet init, Linear 512 -> 512, ImageNet
normalisation. ShapeClipper's encoder: ResNet-34, Linear 512 -> 1024, no
normalisation (input in [0, 1]).
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
import torchvision
from torch import nn

from poseless.errors import PoselessError
from poseless.utils import file_sha256

ENCODERS = ("resnet18", "resnet34")
"""Names accepted by :func:`create_encoder`."""
FEATURE_DIM = 512
"""Pooled feature size of ResNet-18/34."""
IMAGENET_MEAN = (0.485, 0.456, 0.406)
"""Per-channel mean of torchvision's ImageNet normalisation."""
IMAGENET_STD = (0.229, 0.224, 0.225)
"""Per-channel standard deviation of torchvision's ImageNet normalisation."""

_HASH_IN_NAME = re.compile(r"-([a-f0-9]{6,})\.")


class MissingWeightsError(PoselessError, FileNotFoundError):
    """Pretrained weights were asked for but are not on disk (nothing is downloaded)."""


class ResNetEncoder(nn.Module):
    """RGB images (B, 3, H, W) in [0, 1] -> features (B, out_dim).

    ``backbone`` is a torchvision ResNet whose ``fc`` is already ``Identity``.
    """

    def __init__(self, name: str, backbone: nn.Module, out_dim: int, imagenet_norm: bool):
        super().__init__()
        self.name = name
        self.out_dim = out_dim
        self.imagenet_norm = imagenet_norm
        self.backbone = backbone
        self.fc = nn.Linear(FEATURE_DIM, out_dim)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images: (B, 3, H, W) in [0, 1] -> (B, out_dim)."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"{self.name} encoder: input must be (B, 3, H, W), got {images.shape}")
        if self.imagenet_norm:
            images = (images - self.mean.to(images.dtype)) / self.std.to(images.dtype)
        return self.fc(self.backbone(images))  # (B, 512) -> (B, out_dim)

    def config(self) -> dict:
        """Arguments that rebuild this module with :func:`create_encoder` (pretrained=None)."""
        return {"name": self.name, "out_dim": self.out_dim, "imagenet_norm": self.imagenet_norm}


def _weights_enum(name: str):
    return torchvision.models.get_model_weights(name)


def resolve_weights(name: str, pretrained: str) -> tuple[Path, str | None]:
    """Where the weights for ``pretrained`` live: (path, torchvision tag or None).

    Raises :class:`MissingWeightsError` when the file is not there.
    """
    path = Path(pretrained).expanduser()
    looks_like_path = path.suffix in (".pth", ".pt") or "/" in pretrained or path.exists()
    if looks_like_path:
        if not path.is_file():
            raise MissingWeightsError(
                f"create_encoder({name!r}): pretrained weights file {path} does not exist; "
                "set `pretrained` to torchvision's ImageNet file for this network "
                "(a state dict as distributed), to a torchvision weights tag cached in the "
                "torch hub directory, or to null for random initialisation"
            )
        return path, None
    enum = _weights_enum(name)
    tag = pretrained.split(".", 1)[1] if pretrained.startswith(enum.__name__ + ".") else pretrained
    try:
        weights = enum[tag]
    except KeyError:
        valid = ", ".join(w.name for w in enum) + ", DEFAULT"
        raise ValueError(
            f"create_encoder({name!r}): unknown pretrained value {pretrained!r}: not an "
            f"existing file and not a weights tag of {enum.__name__} ({valid})"
        ) from None
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
    if not cached.is_file():
        raise MissingWeightsError(
            f"create_encoder({name!r}): weights {enum.__name__}.{weights.name} are not in the "
            f"torch hub cache ({cached}); nothing is downloaded at runtime. Copy the file "
            f"from {weights.url} there (or set $TORCH_HOME), set `pretrained` to the file's "
            "path, or set it to null for random initialisation"
        )
    return cached, f"{enum.__name__}.{weights.name}"


def create_encoder(
    name: str,
    pretrained: str | None,
    out_dim: int,
    imagenet_norm: bool = False,
) -> tuple[ResNetEncoder, dict]:
    """Build a ResNet encoder: RGB (B, 3, H, W) in [0, 1] -> (B, out_dim).

    Args:
        name: "resnet18" or "resnet34".
        pretrained: None (random init), a path to torchvision's weights file, or
            a torchvision weights tag found in the torch hub cache.
        out_dim: size of the final Linear(512, out_dim).
        imagenet_norm: normalise the input with ImageNet's mean/std inside forward.
    Returns:
        (module, info): info records the weights loaded ("weights": "random-init"
        or "file"), their path, sha256 and tag, and the constructor arguments.
    """
    if name not in ENCODERS:
        raise ValueError(f"create_encoder: name must be one of {ENCODERS}, got {name!r}")
    if out_dim <= 0:
        raise ValueError(f"create_encoder: out_dim must be positive, got {out_dim}")
    backbone = getattr(torchvision.models, name)(weights=None)
    info: dict = {"name": name, "out_dim": out_dim, "imagenet_norm": imagenet_norm}
    if pretrained is None:
        info.update(weights="random-init", weights_path=None, weights_sha256=None, weights_tag=None)
    else:
        path, tag = resolve_weights(name, pretrained)
        sha = file_sha256(path)
        match = _HASH_IN_NAME.search(path.name)
        if tag is not None and match and not sha.startswith(match.group(1)):
            raise PoselessError(
                f"{path}: sha256 {sha[:12]}... does not match the hash prefix "
                f"{match.group(1)} in its name (corrupt or partial file); replace it"
            )
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:
            raise PoselessError(f"{path}: cannot read as a torch state dict ({e})") from e
        if not isinstance(state, dict):
            raise PoselessError(f"{path}: expected a state dict, got {type(state).__name__}")
        try:
            backbone.load_state_dict(state, strict=True)
        except RuntimeError as e:
            raise PoselessError(f"{path}: not a torchvision {name} state dict: {e}") from e
        info.update(weights="file", weights_path=str(path), weights_sha256=sha, weights_tag=tag)
    backbone.fc = nn.Identity()
    return ResNetEncoder(name, backbone, out_dim, imagenet_norm), info

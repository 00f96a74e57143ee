"""URA's mesh reconstructor R: image encoder + mesh decoder head (+ a pose head for B/Lu).

Architecture (REFERENCE "URA", reconstructor): a torchvision ResNet-18 (or 34)
with ``fc`` removed, ``Linear(512, code_dim)``, ImageNet normalisation of the RGB
input (:func:`poseless.models.encoders.create_encoder`), then URA's mesh decoder
(:class:`poseless.models.mesh_decoder.MeshDecoder`: fc 1024 -> 2048, centroid and
per-vertex bias heads deforming the unit icosphere), so vertices stay in
[-0.5, 0.5]^3 in the canonical world frame.

Pose head (``pose_head=True``, the B/Lu baseline that predicts shape and pose
jointly): ``Linear(code_dim, 2)`` on the image code gives a 2-vector, normalised
to (cos a, sin a); the azimuth is ``a = atan2(sin, cos)`` in (-pi, pi]. The
(cos, sin) parameterisation keeps 0 and 2 pi the same output and is
differentiable everywhere (the pose regressor's ``sigmoid * 360`` is not
continuous across 0 deg). Elevation is not predicted (URA renders at a fixed
elevation).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from poseless.models.encoders import ResNetEncoder, create_encoder
from poseless.models.mesh_decoder import TEMPLATE_LEVEL, MeshDecoder

POSE_EPS = 1e-6
"""Added to the pose head's vector norm before normalising."""


@dataclass(frozen=True)
class MeshReconOutput:
    """What the mesh reconstructor predicts for a batch of images."""

    vertices: torch.Tensor
    """(B, V, 3) canonical-frame vertices in [-0.5, 0.5]^3 (float32 at least)."""
    azimuth: torch.Tensor | None
    """(B,) predicted azimuth in radians, (-pi, pi] (pose head only, else None)."""


def azimuth_from_vector(vec: torch.Tensor) -> torch.Tensor:
    """Pose-head output (B, 2) -> azimuth (B,) radians: atan2 of the normalised (cos, sin)."""
    if vec.ndim != 2 or vec.shape[1] != 2:
        raise ValueError(f"azimuth_from_vector: expected (B, 2), got {tuple(vec.shape)}")
    cs = vec / (vec.norm(dim=1, keepdim=True) + POSE_EPS)
    return torch.atan2(cs[:, 1], cs[:, 0])


class MeshReconstructor(nn.Module):
    """RGB images (B, 3, H, W) in [0, 1] -> :class:`MeshReconOutput`.

    Build it with :func:`create_mesh_reconstructor` (records the encoder weights)
    or :meth:`from_config` (random init, for loading saved weights).
    """

    def __init__(
        self,
        encoder: ResNetEncoder,
        template_level: int = TEMPLATE_LEVEL,
        pose_head: bool = False,
    ):
        super().__init__()
        self.encoder = encoder
        self.decoder = MeshDecoder(encoder.out_dim, template_level=template_level)
        self.pose = nn.Linear(encoder.out_dim, 2) if pose_head else None

    @property
    def faces(self) -> torch.Tensor:
        """(F, 3) int64 template faces shared by every prediction."""
        return self.decoder.faces

    @property
    def has_pose_head(self) -> bool:
        """Whether the model predicts the azimuth (B/Lu)."""
        return self.pose is not None

    def forward(self, images: torch.Tensor) -> MeshReconOutput:
        """images: (B, 3, H, W) in [0, 1] -> vertices (B, V, 3) [+ azimuth (B,)]."""
        code = self.encoder(images)  # (B, code_dim)
        vertices = self.decoder(code)  # (B, V, 3)
        azimuth = None
        if self.pose is not None:
            azimuth = azimuth_from_vector(self.pose(code).float())
        return MeshReconOutput(vertices=vertices, azimuth=azimuth)

    def config(self) -> dict:
        """Constructor arguments that rebuild this module with :meth:`from_config`."""
        return {
            "encoder": self.encoder.config(),
            "template_level": self.decoder.template_level,
            "pose_head": self.has_pose_head,
        }

    @classmethod
    def from_config(cls, config: dict) -> MeshReconstructor:
        """Rebuild (randomly initialised) from :meth:`config`'s output; load weights after."""
        try:
            enc = config["encoder"]
            encoder, _ = create_encoder(
                enc["name"], None, int(enc["out_dim"]), imagenet_norm=bool(enc["imagenet_norm"])
            )
            return cls(encoder, int(config["template_level"]), bool(config["pose_head"]))
        except (KeyError, TypeError) as exc:
            raise ValueError(
                f"MeshReconstructor.from_config: bad config {config!r}: {exc}"
            ) from exc


def create_mesh_reconstructor(
    encoder: str,
    encoder_weights: str | None,
    code_dim: int,
    template_level: int = TEMPLATE_LEVEL,
    pose_head: bool = False,
) -> tuple[MeshReconstructor, dict]:
    """URA's reconstructor with ImageNet-normalised input.

    Args:
        encoder: "resnet18" or "resnet34".
        encoder_weights: None/'' (random init) or local torchvision weights
            (path or cached tag; see :func:`create_encoder`).
        code_dim: size of the encoder's Linear(512, code_dim) (URA: 512).
        template_level: icosphere level of the template (URA: 3).
        pose_head: add the (cos, sin) azimuth head (B/Lu).
    Returns:
        (model, encoder info) — info says which weights the encoder started from.
    """
    enc, info = create_encoder(encoder, encoder_weights or None, code_dim, imagenet_norm=True)
    return MeshReconstructor(enc, template_level, pose_head), info

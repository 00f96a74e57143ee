"""URA's silhouette discriminator (D1 of stage a, D2 of stage c) and its PAD variant.

Architecture (REFERENCE "URA"): input 1 x 64 x 64; Conv 4x4 stride 2 pad 1 with
ReLU for 1 -> 64 -> 128 -> 256 -> 512, then Conv 4x4 stride 2 pad 0 512 -> 1,
global average pool -> one scalar per image. No normalisation, no sigmoid
(a WGAN critic).

Input size: the four padded convolutions divide the side by 16, so a 64 image
reaches the last conv at 4 x 4 (-> 1 x 1, exactly the paper's network) and a 128
image at 8 x 8 (-> 3 x 3, averaged by the pool). For inputs smaller than 64 the
last conv would not fit, so it zero-pads its input just enough to reach 4 x 4
(``final_conv_padding``): 32 -> 2 x 2, padded by 1. The padding is 0 for sides
>= 64, so the paper's network is unchanged there. Sides below 16 are refused.

Pose-aware variant (PAD, the ``ura_pad`` ablation): ``pose_condition=True``
adds two input channels holding cos(azimuth) and sin(azimuth), broadcast over
the image, concatenated to the silhouette (input 3 x H x W). We condition at the
input, as the simplest conditioning that lets every layer see the pose;
(cos, sin) rather than the angle keeps 0 and 2 pi the same input.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

TRUNK_CHANNELS = (64, 128, 256, 512)
"""Output channels of URA's four stride-2 4x4 convolutions."""
MIN_INPUT_SIZE = 16
"""Smallest accepted image side."""


def final_conv_padding(size: int) -> int:
    """Zero padding of the last 4x4 stride-2 conv for a feature map of side ``size``:
    0 when ``size >= 4`` (the paper's pad 0), else enough to reach 4."""
    return max(0, math.ceil((4 - size) / 2))


def check_silhouettes(x: torch.Tensor, channels: int, who: str) -> None:
    """Raise a clear error unless ``x`` is (B, channels, H, W) with H, W >= 16."""
    if x.ndim != 4 or x.shape[1] != channels:
        raise ValueError(f"{who}: input must be (B, {channels}, H, W), got {tuple(x.shape)}")
    if min(x.shape[-2:]) < MIN_INPUT_SIZE:
        raise ValueError(
            f"{who}: image side must be >= {MIN_INPUT_SIZE}, got {tuple(x.shape[-2:])}"
        )


class ConvTrunk(nn.Module):
    """Four Conv 4x4 s2 p1 + ReLU layers, then a last Conv 4x4 s2 (pad 0 for sides
    >= 64, see :func:`final_conv_padding`), optionally ReLU, then global average
    pooling.

    (B, in_channels, H, W) -> (B, out_channels).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        channels: tuple[int, ...] = TRUNK_CHANNELS,
        final_relu: bool = False,
    ):
        super().__init__()
        self.final_relu = final_relu
        layers: list[nn.Module] = []
        c_prev = in_channels
        for c in channels:
            layers += [nn.Conv2d(c_prev, c, kernel_size=4, stride=2, padding=1), nn.ReLU()]
            c_prev = c
        self.features = nn.Sequential(*layers)
        self.final = nn.Conv2d(c_prev, out_channels, kernel_size=4, stride=2, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C_in, H, W) -> (B, C_out) (pooled output of the last conv)."""
        h = self.features(x)  # (B, 512, H/16, W/16)
        pad = max(final_conv_padding(h.shape[-2]), final_conv_padding(h.shape[-1]))
        if pad:
            h = F.pad(h, (pad, pad, pad, pad))
        h = self.final(h)  # (B, C_out, h, w)
        if self.final_relu:
            h = F.relu(h)
        return h.mean(dim=(-2, -1))


def pose_channels(azimuth_rad: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """cos/sin of the azimuth broadcast over the image.

    Args:
        azimuth_rad: (B,) azimuths in radians.
    Returns:
        (B, 2, height, width): channel 0 = cos, channel 1 = sin.
    """
    cs = torch.stack([torch.cos(azimuth_rad), torch.sin(azimuth_rad)], dim=1)  # (B, 2)
    return cs[:, :, None, None].expand(-1, -1, height, width)


class SilhouetteDiscriminator(nn.Module):
    """URA's silhouette critic: (B, 1, H, W) [+ azimuth (B,) for PAD] -> scores (B,).

    Args:
        pose_condition: False = the paper's pose-independent discriminator (PID);
            True = pose-aware (PAD), conditioned on cos/sin of the azimuth as two
            extra constant input channels.
    """

    def __init__(self, pose_condition: bool = False):
        super().__init__()
        self.pose_condition = pose_condition
        self.in_channels = 3 if pose_condition else 1
        self.trunk = ConvTrunk(self.in_channels, 1)

    def forward(
        self, silhouettes: torch.Tensor, azimuth_rad: torch.Tensor | None = None
    ) -> torch.Tensor:
        """silhouettes: (B, 1, H, W) in [0, 1]; azimuth_rad: (B,) (PAD only) -> (B,)."""
        check_silhouettes(silhouettes, 1, "SilhouetteDiscriminator")
        if self.pose_condition:
            if azimuth_rad is None or azimuth_rad.shape != silhouettes.shape[:1]:
                raise ValueError(
                    "SilhouetteDiscriminator(pose_condition=True): azimuth_rad must be "
                    f"({silhouettes.shape[0]},), got "
                    f"{None if azimuth_rad is None else tuple(azimuth_rad.shape)}"
                )
            cond = pose_channels(azimuth_rad.to(silhouettes.dtype), *silhouettes.shape[-2:])
            silhouettes = torch.cat([silhouettes, cond], dim=1)
        elif azimuth_rad is not None:
            raise ValueError(
                "SilhouetteDiscriminator: azimuth_rad given to a pose-independent "
                "discriminator (construct it with pose_condition=True for PAD)"
            )
        return self.trunk(silhouettes)[:, 0]

    def config(self) -> dict:
        """Constructor arguments that rebuild this module (JSON-serialisable)."""
        return {"pose_condition": self.pose_condition}

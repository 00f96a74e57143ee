"""URA's pseudo pose regressor: silhouette -> azimuth.

Architecture (REFERENCE "URA"): the discriminator's conv trunk
(:class:`~poseless.models.discriminator.ConvTrunk`) with the last conv 512 -> 100
followed by ReLU, global average pool, Linear 100 -> 50, ReLU, Linear 50 -> 1,
output ``sigmoid * 360`` = azimuth in degrees (the paper's default head,
``head="sigmoid"``). Input: the silhouette only.

Variant ``head="cossin"``: Linear 50 -> 2, L2-normalised to (cos, sin); the
azimuth is ``atan2(sin, cos)`` mapped to [0, 360). It has no seam at 0/360
where the sigmoid head must jump across its whole range.

Both heads return degrees in [0, 360) from :meth:`PoseRegressor.forward` (the
sigmoid head's value 360 cannot occur: it is wrapped to 0).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from poseless.models.discriminator import ConvTrunk, check_silhouettes

POSE_FEATURES = 100
"""Channels of the trunk's last conv in the pose regressor."""
HIDDEN = 50
"""Hidden units of the pose regressor's MLP head."""


def angle_error_deg(pred_deg: torch.Tensor, target_deg: torch.Tensor) -> torch.Tensor:
    """Absolute wrapped angle difference |atan2(sin d, cos d)| in degrees, elementwise.

    pred_deg, target_deg: broadcastable tensors (B,) -> (B,) in [0, 180].
    """
    d = torch.deg2rad(pred_deg - target_deg)
    return torch.rad2deg(torch.atan2(torch.sin(d), torch.cos(d)).abs())


class PoseRegressor(nn.Module):
    """Silhouettes (B, 1, H, W) -> azimuth in degrees (B,) in [0, 360).

    Args:
        head: "sigmoid" (paper: Linear 50 -> 1, sigmoid * 360) or "cossin"
            (Linear 50 -> 2, normalised (cos, sin)).
    """

    def __init__(self, head: Literal["sigmoid", "cossin"] = "sigmoid"):
        super().__init__()
        if head not in ("sigmoid", "cossin"):
            raise ValueError(f"PoseRegressor: head must be 'sigmoid' or 'cossin', got {head!r}")
        self.head = head
        self.trunk = ConvTrunk(1, POSE_FEATURES, final_relu=True)
        self.fc1 = nn.Linear(POSE_FEATURES, HIDDEN)
        self.fc2 = nn.Linear(HIDDEN, 1 if head == "sigmoid" else 2)

    def _head_output(self, silhouettes: torch.Tensor) -> torch.Tensor:
        check_silhouettes(silhouettes, 1, "PoseRegressor")
        h = self.trunk(silhouettes)  # (B, 100), ReLU after the last conv, then pooled
        return self.fc2(F.relu(self.fc1(h)))  # (B, 1) or (B, 2)

    def cos_sin(self, silhouettes: torch.Tensor) -> torch.Tensor:
        """(B, 1, H, W) -> unit (cos, sin) of the azimuth (B, 2) (either head)."""
        out = self._head_output(silhouettes)
        if self.head == "cossin":
            return F.normalize(out, dim=1)
        a = torch.deg2rad(torch.sigmoid(out[:, 0]) * 360.0)
        return torch.stack([torch.cos(a), torch.sin(a)], dim=1)

    def forward(self, silhouettes: torch.Tensor) -> torch.Tensor:
        """(B, 1, H, W) -> azimuth degrees (B,) in [0, 360)."""
        out = self._head_output(silhouettes)
        if self.head == "sigmoid":
            deg = torch.sigmoid(out[:, 0]) * 360.0
        else:
            cs = F.normalize(out, dim=1)
            deg = torch.rad2deg(torch.atan2(cs[:, 1], cs[:, 0]))
        # Wrap into [0, 360): maps 360 (sigmoid saturation) and negative atan2 values,
        # with unit gradient everywhere else.
        return torch.remainder(deg, 360.0)

    def config(self) -> dict:
        """Constructor arguments that rebuild this module (JSON-serialisable)."""
        return {"head": self.head}

"""URA's mesh decoder (the generator G and the reconstructor's head).

A code ``x`` goes through ``fc dim_in -> 1024 -> ReLU -> 2048 -> ReLU`` and two
heads: a centroid ``2048 -> 3`` (scaled by 0.1) and a per-vertex bias
``2048 -> V * 3``. The vertices follow SoftRas/URA exactly
(:func:`deform_template`):

    b = 0.5 * template
    v = sigmoid(logit(|b|) + bias) * sign(b)
    c = tanh(centroid)
    v = relu(v) * (1 - c) - relu(-v) * (1 + c) + c
    v = 0.5 * v

Each coordinate of ``sigmoid(...) * sign(b)`` lies in (-1, 1) with the sign of
the template's, the centroid step maps [-1, 1] onto itself with 0 -> c, and the
last step halves it, so every vertex stays in [-0.5, 0.5]^3. A zero bias and a
zero centroid give ``0.5 * b = 0.25 * template`` (a sphere of radius 0.25).
Template coordinates that are exactly 0 (logit(0) = -inf) stay 0 before the
centroid shift, as in the authors' code.

The template is the unit icosphere of level 3 (642 vertices, 1280 faces).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

Z_DIM = 128
"""URA generator code size."""
Z_STD = 0.33
"""Standard deviation of URA's generator codes, z ~ N(0, 0.33^2)."""
CENTROID_SCALE = 0.1
"""Factor on the centroid head's output before tanh."""
TEMPLATE_LEVEL = 3
"""Icosphere subdivision level of the template (642 vertices)."""


def deform_template(
    template: torch.Tensor, bias: torch.Tensor, centroid: torch.Tensor
) -> torch.Tensor:
    """URA/SoftRas vertex formula (see the module docstring).

    Args:
        template: (V, 3) unit-sphere template vertices, coordinates in [-1, 1].
        bias: (B, V, 3) per-vertex bias (logit offsets).
        centroid: (B, 3) raw centroid (already scaled by 0.1), before tanh.
    Returns:
        vertices: (B, V, 3), every coordinate in [-0.5, 0.5].
    """
    if template.ndim != 2 or template.shape[1] != 3:
        raise ValueError(f"deform_template: template must be (V, 3), got {tuple(template.shape)}")
    if bias.ndim != 3 or bias.shape[1:] != template.shape:
        raise ValueError(
            f"deform_template: bias must be (B, {template.shape[0]}, 3), got {tuple(bias.shape)}"
        )
    if centroid.shape != (bias.shape[0], 3):
        raise ValueError(
            f"deform_template: centroid must be ({bias.shape[0]}, 3), got {tuple(centroid.shape)}"
        )
    base = 0.5 * template
    if base.abs().max() >= 1.0:
        raise ValueError("deform_template: template coordinates must lie in (-2, 2)")
    v = torch.sigmoid(torch.logit(base.abs()) + bias) * torch.sign(base)  # (B, V, 3)
    c = torch.tanh(centroid)[:, None, :]  # (B, 1, 3)
    v = F.relu(v) * (1.0 - c) - F.relu(-v) * (1.0 + c) + c
    return 0.5 * v


def default_template(level: int = TEMPLATE_LEVEL) -> tuple[torch.Tensor, torch.Tensor]:
    """The unit icosphere template: vertices (V, 3) float32, faces (F, 3) int64."""
    from poseless.geometry.mesh import icosphere

    vertices, faces = icosphere(level)
    return torch.as_tensor(vertices, dtype=torch.float32), torch.as_tensor(faces, dtype=torch.long)


class MeshDecoder(nn.Module):
    """Code (B, dim_in) -> template-deformed vertices (B, V, 3) in [-0.5, 0.5]^3.

    ``template``/``faces`` default to the level-3 unit icosphere. They are
    non-persistent buffers: the state dict holds only the weights and the
    template is rebuilt from ``template_level`` (recorded in :meth:`config`).
    """

    def __init__(
        self,
        dim_in: int,
        template_level: int = TEMPLATE_LEVEL,
        template: tuple[torch.Tensor, torch.Tensor] | None = None,
    ):
        super().__init__()
        if dim_in <= 0:
            raise ValueError(f"MeshDecoder: dim_in must be positive, got {dim_in}")
        vertices, faces = template if template is not None else default_template(template_level)
        vertices = torch.as_tensor(vertices, dtype=torch.float32)
        faces = torch.as_tensor(faces, dtype=torch.long)
        if vertices.ndim != 2 or vertices.shape[1] != 3:
            raise ValueError(f"MeshDecoder: template vertices must be (V, 3), got {vertices.shape}")
        self.dim_in = dim_in
        self.template_level = template_level
        self.num_vertices = vertices.shape[0]
        self.register_buffer("template", vertices, persistent=False)  # (V, 3)
        self.register_buffer("faces", faces, persistent=False)  # (F, 3)
        self.fc1 = nn.Linear(dim_in, 1024)
        self.fc2 = nn.Linear(1024, 2048)
        self.fc_centroid = nn.Linear(2048, 3)
        self.fc_bias = nn.Linear(2048, self.num_vertices * 3)

    @property
    def bias_head(self) -> nn.Linear:
        """The vertex-bias head; its ``weight`` is URA's W_bias (adaptive geometry weight)."""
        return self.fc_bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, dim_in) -> vertices (B, V, 3)."""
        if x.ndim != 2 or x.shape[1] != self.dim_in:
            raise ValueError(f"MeshDecoder: input must be (B, {self.dim_in}), got {tuple(x.shape)}")
        h = F.relu(self.fc2(F.relu(self.fc1(x))))  # (B, 2048)
        centroid = self.fc_centroid(h) * CENTROID_SCALE  # (B, 3)
        bias = self.fc_bias(h).view(-1, self.num_vertices, 3)  # (B, V, 3)
        # The vertex formula runs in float32 at least (logit/sigmoid lose the
        # template's precision in bf16/fp16 under autocast).
        dtype = torch.promote_types(bias.dtype, torch.float32)
        return deform_template(self.template.to(dtype), bias.to(dtype), centroid.to(dtype))

    def config(self) -> dict:
        """Constructor arguments that rebuild this module (JSON-serialisable)."""
        return {"dim_in": self.dim_in, "template_level": self.template_level}


class Generator(nn.Module):
    """URA's shape generator G: z (B, 128) ~ N(0, 0.33^2) -> (vertices (B, V, 3), faces (F, 3))."""

    def __init__(
        self,
        z_dim: int = Z_DIM,
        z_std: float = Z_STD,
        template_level: int = TEMPLATE_LEVEL,
        template: tuple[torch.Tensor, torch.Tensor] | None = None,
    ):
        super().__init__()
        self.z_dim = z_dim
        self.z_std = z_std
        self.decoder = MeshDecoder(z_dim, template_level=template_level, template=template)

    @property
    def faces(self) -> torch.Tensor:
        """(F, 3) int64 template faces."""
        return self.decoder.faces

    @property
    def bias_head(self) -> nn.Linear:
        """The decoder's vertex-bias head (W_bias = ``bias_head.weight``)."""
        return self.decoder.bias_head

    def sample_z(
        self, n: int, generator: torch.Generator | None = None, device=None
    ) -> torch.Tensor:
        """Codes (n, z_dim) ~ N(0, z_std^2) on ``device`` (default: this module's).

        The numbers are drawn on ``generator``'s device (CPU generators give the
        same codes whatever ``device`` is), then moved.
        """
        module_device = self.decoder.fc1.weight.device
        device = torch.device(device) if device is not None else module_device
        draw_on = generator.device if generator is not None else device
        z = torch.randn(n, self.z_dim, generator=generator, device=draw_on)
        return (z * self.z_std).to(device)

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """z: (B, z_dim) -> (vertices (B, V, 3), faces (F, 3))."""
        return self.decoder(z), self.decoder.faces

    def config(self) -> dict:
        """Constructor arguments that rebuild this module (JSON-serialisable)."""
        return {
            "z_dim": self.z_dim,
            "z_std": self.z_std,
            "template_level": self.decoder.template_level,
        }

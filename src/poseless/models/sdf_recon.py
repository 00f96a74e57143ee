"""ShapeClipper's reconstructor: image encoder, viewpoint estimator, SDF + colour fields.

Architecture (REFERENCE "ShapeClipper"):

* **Encoder** — a torchvision ResNet-34 (``fc`` removed) and ``Linear(512, 1024)``
  (:func:`poseless.models.encoders.create_encoder`, no ImageNet normalisation:
  input RGB in [0, 1] on white). The 1024 features split into a 512-d shape
  part and a 512-d colour part, each mapped by two :class:`ResidualBottleneck`
  blocks and ``Linear(512, 64)`` to a 64-d code.
* **Viewpoint estimator** — a separate ResNet-18 whose ``Linear(512, 7)`` gives
  three raw (cos, sin) pairs (azimuth, elevation, roll), each L2-normalised, and
  a distance scale ``1 + 0.2 tanh(raw)``. The elevation and roll rows start with
  zero weights and bias (1, 0), i.e. at 0 deg, and the scale row at 0 (scale 1);
  the weights still receive gradients, so they learn.
* **Fields** — :class:`poseless.models.sdf.SDFField` (shape code -> SDF and
  features, colour code -> RGB), structurally mirror-symmetric about x = 0.
* **Renderer** — :class:`poseless.render.volume.VolumeRenderer` (it holds the
  learnable Laplace scale beta).

**Camera mapping.** The estimator's pose is ShapeClipper's parametrisation
``R = Rz(roll) Rx(elev) Ry(azim) P`` expressed in our y-up world
(:func:`poseless.geometry.rotations.shapeclipper_extrinsics`, frame "world") with
``t = (0, 0, distance * scale)``, where ``distance`` is the **dataset camera's**
distance (Kato 2.732 for our synthetic data; ShapeClipper's 5 when the dataset
records no camera) and the field of view is the dataset's (30 deg; else
ShapeClipper's 14.25 deg, focal 4 W). With roll 0 and scale 1 this is exactly the
Kato look-at camera at azimuth ``-azim`` and elevation ``elev``
(:func:`poseless.geometry.rotations.kato_to_shapeclipper` /
``shapeclipper_to_kato`` convert), so a ShapeClipper azimuth a is our azimuth -a.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from poseless.geometry.rotations import normalize_trig, shapeclipper_extrinsics
from poseless.models.encoders import ResNetEncoder, create_encoder
from poseless.models.sdf import SDFField, SDFFieldSettings
from poseless.render.volume import VolumeRenderer, VolumeRenderSettings

SPLIT_DIM = 512
"""Width of each half (shape, colour) of the encoder's 1024 features."""


class ResidualBottleneck(nn.Module):
    """Pre-activation residual MLP block: x + W2 relu(W1 relu(x)), W1: d -> d/4, W2: d/4 -> d."""

    def __init__(self, dim: int, bottleneck: int | None = None):
        super().__init__()
        hidden = bottleneck or max(1, dim // 4)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, dim) -> (B, dim)."""
        return x + self.fc2(F.relu(self.fc1(F.relu(x))))


def code_head(code_dim: int) -> nn.Sequential:
    """Two residual bottleneck blocks on 512 features, then Linear(512, code_dim)."""
    return nn.Sequential(
        ResidualBottleneck(SPLIT_DIM), ResidualBottleneck(SPLIT_DIM), nn.Linear(SPLIT_DIM, code_dim)
    )


class ShapeClipperEncoder(nn.Module):
    """RGB (B, 3, H, W) in [0, 1] on white -> shape code (B, C), colour code (B, C)."""

    def __init__(self, backbone: ResNetEncoder, code_dim: int = 64):
        super().__init__()
        if backbone.out_dim != 2 * SPLIT_DIM:
            raise ValueError(
                f"ShapeClipperEncoder: backbone out_dim must be 1024, got {backbone.out_dim}"
            )
        self.backbone = backbone
        self.code_dim = code_dim
        self.shape_head = code_head(code_dim)
        self.color_head = code_head(code_dim)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """images: (B, 3, H, W) -> (shape (B, code_dim), colour (B, code_dim))."""
        h = self.backbone(images)  # (B, 1024)
        return self.shape_head(h[:, :SPLIT_DIM]), self.color_head(h[:, SPLIT_DIM:])


@dataclass(frozen=True)
class Viewpoint:
    """A batch of ShapeClipper poses (our world frame; see the module docstring)."""

    azimuth: torch.Tensor
    """(B, 2) unit (cos, sin) of the ShapeClipper azimuth (= minus our Kato azimuth)."""
    elevation: torch.Tensor
    """(B, 2) unit (cos, sin) of the elevation."""
    roll: torch.Tensor
    """(B, 2) unit (cos, sin) of the in-image roll."""
    scale: torch.Tensor
    """(B,) distance scale; the camera sits at ``distance * scale``."""

    def extrinsics(self, distance: float) -> tuple[torch.Tensor, torch.Tensor]:
        """World->camera R (B, 3, 3), t (B, 3) with the camera at ``distance * scale``."""
        return shapeclipper_extrinsics(
            self.azimuth, self.elevation, self.roll, self.scale, base_distance=distance
        )

    def select(self, index: torch.Tensor | slice) -> Viewpoint:
        """The poses of ``index`` (rows)."""
        return Viewpoint(
            self.azimuth[index], self.elevation[index], self.roll[index], self.scale[index]
        )

    def with_azimuth(self, azimuth: torch.Tensor) -> Viewpoint:
        """The same poses with the azimuth (B, 2) replaced."""
        return Viewpoint(azimuth, self.elevation, self.roll, self.scale)


class ViewpointEstimator(nn.Module):
    """RGB (B, 3, H, W) -> :class:`Viewpoint` (ResNet + Linear(512, 7))."""

    def __init__(self, backbone: ResNetEncoder, scale_range: float = 0.2):
        super().__init__()
        if backbone.out_dim != 7:
            raise ValueError(
                f"ViewpointEstimator: backbone out_dim must be 7, got {backbone.out_dim}"
            )
        self.backbone = backbone
        self.scale_range = scale_range
        with torch.no_grad():
            fc = backbone.fc
            fc.weight[2:].zero_()
            fc.bias[2:].copy_(torch.tensor([1.0, 0.0, 1.0, 0.0, 0.0]))

    def forward(self, images: torch.Tensor) -> Viewpoint:
        """images: (B, 3, H, W) -> poses (float32)."""
        raw = self.backbone(images).float()  # (B, 7)
        return Viewpoint(
            azimuth=normalize_trig(raw[:, 0:2]),
            elevation=normalize_trig(raw[:, 2:4]),
            roll=normalize_trig(raw[:, 4:6]),
            scale=1.0 + self.scale_range * torch.tanh(raw[:, 6]),
        )


class SdfReconstructor(nn.Module):
    """Encoder + viewpoint estimator + fields + renderer (beta); build with :func:`create_sdf_reconstructor`."""

    def __init__(
        self,
        encoder: ShapeClipperEncoder,
        viewpoint: ViewpointEstimator,
        field_settings: SDFFieldSettings,
        render_settings: VolumeRenderSettings,
        input_size: int = 224,
    ):
        super().__init__()
        self.encoder = encoder
        self.viewpoint = viewpoint
        self.field = SDFField(field_settings)
        self.renderer = VolumeRenderer(render_settings)
        self.input_size = input_size

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) on white -> network input (B, 3, S, S), S = ``input_size`` (0: unchanged)."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(
                f"SdfReconstructor: images must be (B, 3, H, W), got {tuple(images.shape)}"
            )
        s = self.input_size
        if s == 0 or tuple(images.shape[-2:]) == (s, s):
            return images
        return F.interpolate(
            images, size=(s, s), mode="bilinear", align_corners=False, antialias=True
        )

    def encode(self, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Prepared inputs (B, 3, S, S) -> shape and colour codes (B, C) float32."""
        shape, color = self.encoder(inputs)
        return shape.float(), color.float()

    def sdf_points(self, points: torch.Tensor, shape_code: torch.Tensor) -> torch.Tensor:
        """SDF (B, N) at points (B, N, 3) for shape codes (B, C)."""
        return self.field.sdf(points, shape_code)[0]

    def config(self) -> dict:
        """Constructor arguments (with random init) for :meth:`from_config`."""
        f = self.field.settings
        r = self.renderer.settings
        return {
            "encoder": self.encoder.backbone.config(),
            "code_dim": self.encoder.code_dim,
            "viewpoint_encoder": self.viewpoint.backbone.config(),
            "scale_range": self.viewpoint.scale_range,
            "field": {
                "hidden_width": f.hidden_width,
                "n_hidden_layers": f.n_hidden_layers,
                "n_frequencies": f.n_frequencies,
                "symmetric": f.symmetric,
                "color_hidden_layers": f.color_hidden_layers,
                "init_radius": f.init_radius,
            },
            "render": {
                "n_samples": r.n_samples,
                "bound_margin": r.bound_margin,
                "beta_init": r.beta_init,
            },
            "input_size": self.input_size,
        }

    @classmethod
    def from_config(cls, config: dict) -> SdfReconstructor:
        """Rebuild (randomly initialised) from :meth:`config`; load the weights after."""
        try:
            enc, vp, fld, rnd = (
                config["encoder"],
                config["viewpoint_encoder"],
                config["field"],
                config["render"],
            )
            backbone, _ = create_encoder(enc["name"], None, int(enc["out_dim"]))
            vbackbone, _ = create_encoder(vp["name"], None, int(vp["out_dim"]))
            code_dim = int(config["code_dim"])
            return cls(
                ShapeClipperEncoder(backbone, code_dim),
                ViewpointEstimator(vbackbone, float(config["scale_range"])),
                _field_settings(code_dim, **fld),
                VolumeRenderSettings(
                    n_samples=int(rnd["n_samples"]),
                    bound_margin=float(rnd["bound_margin"]),
                    beta_init=float(rnd["beta_init"]),
                ),
                int(config["input_size"]),
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"SdfReconstructor.from_config: bad config {config!r}: {exc}") from exc


def _field_settings(
    code_dim: int,
    hidden_width: int,
    n_hidden_layers: int,
    n_frequencies: int,
    symmetric: bool,
    color_hidden_layers: int,
    init_radius: float,
) -> SDFFieldSettings:
    return SDFFieldSettings(
        hidden_width=int(hidden_width),
        n_hidden_layers=int(n_hidden_layers),
        n_frequencies=int(n_frequencies),
        symmetric=bool(symmetric),
        shape_code_dim=code_dim,
        feature_dim=int(hidden_width),
        color_hidden_width=int(hidden_width),
        color_hidden_layers=int(color_hidden_layers),
        color_code_dim=code_dim,
        init_radius=float(init_radius),
    )


def create_sdf_reconstructor(
    encoder: str = "resnet34",
    encoder_weights: str | None = None,
    viewpoint_encoder: str = "resnet18",
    viewpoint_weights: str | None = None,
    code_dim: int = 64,
    field_width: int = 64,
    field_layers: int = 5,
    color_layers: int = 3,
    n_frequencies: int = 6,
    symmetric: bool = True,
    n_samples: int = 64,
    bound_margin: float = 0.9,
    beta_init: float = 0.1,
    scale_range: float = 0.2,
    input_size: int = 224,
    init_radius: float = 0.5,
) -> tuple[SdfReconstructor, dict]:
    """ShapeClipper's reconstructor (random or local ImageNet weights in the ResNets).

    Returns:
        (model, info): info = {"encoder": create_encoder info, "viewpoint_encoder": ...}.
    """
    backbone, info_e = create_encoder(encoder, encoder_weights or None, 2 * SPLIT_DIM)
    vbackbone, info_v = create_encoder(viewpoint_encoder, viewpoint_weights or None, 7)
    model = SdfReconstructor(
        ShapeClipperEncoder(backbone, code_dim),
        ViewpointEstimator(vbackbone, scale_range),
        _field_settings(
            code_dim, field_width, field_layers, n_frequencies, symmetric, color_layers, init_radius
        ),
        VolumeRenderSettings(n_samples=n_samples, bound_margin=bound_margin, beta_init=beta_init),
        input_size,
    )
    return model, {"encoder": info_e, "viewpoint_encoder": info_v}

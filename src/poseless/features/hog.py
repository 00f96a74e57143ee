"""Offline fallback image descriptor: HOG of the masked grayscale image + colour histogram.

Needs no weights, so ``embed_images`` can run where no CLIP checkpoint can be
had (``embed_images.fallback: hog`` or ``encoder: hog``). It sees silhouette and
coarse shading/colour, which is enough to find similar-looking neighbours on
simple data; it is not a substitute for CLIP on real photographs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from skimage.feature import hog


@dataclass(frozen=True)
class HogSettings:
    """Settings of :func:`hog_descriptor`."""

    size: int = 64
    """Side the image is resized to before HOG."""
    orientations: int = 9
    """HOG orientation bins."""
    pixels_per_cell: int = 8
    """HOG cell side in pixels."""
    color_bins: int = 8
    """Per-channel histogram bins of the masked RGB (0: no colour part)."""


def hog_dim(s: HogSettings) -> int:
    """Length of :func:`hog_descriptor`'s output."""
    cells = s.size // s.pixels_per_cell
    blocks = max(cells - 1, 0)
    return blocks * blocks * 4 * s.orientations + 3 * s.color_bins


def _unit(v: np.ndarray) -> np.ndarray:
    n = float(np.linalg.norm(v))
    return v / n if n > 0 else v


def hog_descriptor(image: torch.Tensor, mask: torch.Tensor, s: HogSettings) -> np.ndarray:
    """HOG + colour-histogram descriptor of one image, L2-normalised.

    Args:
        image: (3, H, W) float in [0, 1] (any background; only the mask region counts).
        mask: (1, H, W) float in [0, 1].
    Returns:
        (hog_dim(s),) float32, unit norm (zero only for an empty, flat image).
    """
    x = torch.cat([image, mask], 0)[None].float()
    x = F.interpolate(x, size=(s.size, s.size), mode="bilinear", align_corners=False)[0]
    rgb, m = x[:3], x[3:4]
    gray = (0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]) * m[0]  # background -> 0
    h = hog(
        gray.numpy().astype(np.float64),
        orientations=s.orientations,
        pixels_per_cell=(s.pixels_per_cell, s.pixels_per_cell),
        cells_per_block=(2, 2),
        feature_vector=True,
    ).astype(np.float32)
    parts = [_unit(h)]
    if s.color_bins > 0:
        w = m[0].flatten().numpy()
        hists = [
            np.histogram(rgb[c].flatten().numpy(), bins=s.color_bins, range=(0.0, 1.0), weights=w)[
                0
            ]
            for c in range(3)
        ]
        parts.append(_unit(np.concatenate(hists).astype(np.float32)))
    return _unit(np.concatenate(parts)).astype(np.float32)


class HogEncoder:
    """Batch wrapper of :func:`hog_descriptor` with the encoder interface of ``clip.py``."""

    kind = "hog"

    def __init__(self, settings: HogSettings):
        self.settings = settings
        self.dim = hog_dim(settings)

    def info(self) -> dict:
        """What ran, for ``encoder.json``."""
        return {"kind": self.kind, "dim": self.dim, "settings": asdict(self.settings)}

    def encode(self, images: torch.Tensor, masks: torch.Tensor, ids: list[str]) -> np.ndarray:
        """images: (B, 3, H, W) in [0, 1]; masks: (B, 1, H, W) -> (B, dim) float32 unit rows."""
        return np.stack([hog_descriptor(im, m, self.settings) for im, m in zip(images, masks)])

"""What an adapter yields: one raw item, before cropping, resizing and compositing."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np


@dataclass
class RawItem:
    """One image of a collection as an adapter reads it."""

    id: str
    """Unique, file-name-safe id."""
    category: str
    """Category name."""
    source: str
    """Where it came from (file path, or generator seed for synthetic data)."""
    rgb: np.ndarray
    """(H, W, 3) uint8 image (pixels off the mask may hold anything)."""
    mask: np.ndarray
    """(H, W) uint8 in [0, 255] (soft masks allowed), same H, W as rgb."""
    split: str | None = None
    """train | val | test, or None to let prepare_data assign it."""
    instance: str = ""
    """Shape instance id ('' -> the item id)."""
    azimuth_deg: float = math.nan
    """Ground-truth azimuth in degrees, NaN when unknown."""
    elevation_deg: float = math.nan
    """Ground-truth elevation in degrees, NaN when unknown."""
    distance: float = math.nan
    """Ground-truth camera distance, NaN when unknown."""
    gt: dict[str, np.ndarray] = field(default_factory=dict)
    """Ground truth for evaluation (keys from ``prepared.GT_KEYS``); image-aligned
    entries (``normals``, ``depth``) are cropped/resized with the image."""

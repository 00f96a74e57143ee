"""Robust reading of raw images and masks into uint8 arrays.

Every failure raises :class:`poseless.errors.BadItemError` naming the file and
the problem; no PIL exception escapes. Conventions:

* **Orientation.** ``ImageOps.exif_transpose`` is applied to images *and* masks,
  so both come out in display orientation. A mask without an EXIF orientation
  tag (the usual case: masks are drawn on the displayed photo or written by a
  segmenter that loaded it upright) is taken as already in display orientation,
  so it lines up with an EXIF-rotated JPEG.
* **Bit depth.** 16-bit images (``I;16*``, and ``I`` holding 0..65535) are
  scaled to 8 bits as ``round(v * 255 / 65535)``, keeping the full range (never
  clipped); ``F`` images must hold values in [0, 1].
* **Modes.** Grayscale, palette, CMYK, YCbCr, LAB and HSV become RGB. An alpha
  channel (``RGBA``, ``LA``, ``PA``, ``P`` with a transparency entry) is
  returned separately as the default mask.
* **Masks** are read as one channel: the alpha channel when the file has a
  non-constant one, else the luminance. Masks holding only 0 and 1 are scaled to
  0 and 255.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from poseless.errors import BadItemError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
"""File extensions (lower case) read as images; the first is preferred for masks."""

_ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")
_WIDE_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")


@dataclass(frozen=True)
class LoadedImage:
    """An image in display orientation, as 8-bit RGB plus its alpha channel if any."""

    rgb: np.ndarray
    """(H, W, 3) uint8."""
    alpha: np.ndarray | None
    """(H, W) uint8 alpha channel, or None when the file has none."""


def _open_upright(path: Path) -> Image.Image:
    """Open, fully decode and EXIF-rotate an image; any failure -> BadItemError."""
    try:
        with Image.open(path) as im:
            im.load()  # decode now: truncated or corrupt data fails here, not later
            upright = ImageOps.exif_transpose(im)
            upright.load()
            return upright
    except BadItemError:
        raise
    except FileNotFoundError:
        raise BadItemError(path, "file not found") from None
    except UnidentifiedImageError:
        raise BadItemError(path, "cannot read image (not a recognised image format)") from None
    except Image.DecompressionBombError as exc:
        raise BadItemError(path, f"image too large: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - any decoder failure is a bad file, not a bug
        detail = str(exc) or type(exc).__name__
        raise BadItemError(path, f"cannot read image ({detail})") from None


def wide_to_uint8(values: np.ndarray, mode: str, path: Path | str) -> np.ndarray:
    """Scale a 16-bit / 32-bit integer or float single-channel array to uint8.

    Args:
        values: (H, W) array as ``np.asarray`` gives it for PIL mode ``mode``.
        mode: PIL mode, one of ``I;16*``, ``I``, ``F``.
        path: for error messages.
    Returns:
        (H, W) uint8; 16-bit data as ``round(v * 255 / 65535)`` (65535 -> 255).
    """
    v = values.astype(np.float64)
    if mode == "F":
        if v.size and (not np.isfinite(v).all() or v.min() < 0.0 or v.max() > 1.0):
            raise BadItemError(path, "float image must hold values in [0, 1]")
        return np.round(v * 255.0).astype(np.uint8)
    if v.size and (v.min() < 0 or v.max() > 65535):
        raise BadItemError(
            path,
            f"32-bit integer image with values in [{int(v.min())}, {int(v.max())}] "
            "is not supported (expected 16-bit data, 0..65535)",
        )
    return np.round(v * (255.0 / 65535.0)).astype(np.uint8)


def _split_alpha(im: Image.Image) -> tuple[Image.Image, np.ndarray | None]:
    """-> (colour image in any mode but with no alpha, (H, W) uint8 alpha or None)."""
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    elif im.mode in ("RGBa", "La", "PA"):
        im = im.convert("RGBA" if im.mode != "La" else "LA")
    if im.mode in ("RGBA", "LA"):
        alpha = np.asarray(im.getchannel("A")).copy()
        return im.convert("RGB" if im.mode == "RGBA" else "L"), alpha
    return im, None


def load_image(path: str | Path) -> LoadedImage:
    """Read any supported image file as upright 8-bit RGB (+ alpha).

    Raises:
        BadItemError: unreadable, truncated, corrupt or unsupported file.
    """
    path = Path(path)
    im = _open_upright(path)
    if im.mode in _WIDE_MODES:
        gray = wide_to_uint8(np.asarray(im), im.mode, path)
        return LoadedImage(np.repeat(gray[..., None], 3, axis=2), None)
    im, alpha = _split_alpha(im)
    try:
        rgb = np.asarray(im.convert("RGB")).copy()
    except (ValueError, OSError) as exc:
        raise BadItemError(path, f"cannot convert mode {im.mode} to RGB ({exc})") from None
    return LoadedImage(rgb, alpha)


def load_mask(path: str | Path) -> np.ndarray:
    """Read a mask file as upright (H, W) uint8, 255 = object (soft values kept).

    Raises:
        BadItemError: unreadable, truncated, corrupt or unsupported file.
    """
    path = Path(path)
    im = _open_upright(path)
    if im.mode in _WIDE_MODES:
        mask = wide_to_uint8(np.asarray(im), im.mode, path)
    else:
        colour, alpha = _split_alpha(im)
        if alpha is not None and alpha.min() != alpha.max():
            mask = alpha
        else:
            mask = np.asarray(colour.convert("L")).copy()
    if mask.size and mask.max() == 1:  # a 0/1 label image, not a nearly empty soft mask
        mask = mask * np.uint8(255)
    return mask

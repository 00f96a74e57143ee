"""Choosing pixels to render and building their rays.

Training renders R rays per image, drawn without replacement with probability
proportional to 1 / (d + offset), d the distance in pixels from the pixel
centre to the mask boundary on either side (ShapeClipper: boundary rays are
preferred; offset 5). Evaluation renders full-image ray grids in chunks.

Pixel indices are flat row-major indices ``i * W + j`` over (H, W); their NDC
coordinates come from ``poseless.geometry.cameras.pixel_centers_ndc`` and their
rays from ``cameras.camera_rays``, so the conventions (OpenCV camera frame,
y-down NDC, pixel centres) are the project's.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage

from poseless.geometry.cameras import camera_rays, pixel_centers_ndc


def boundary_distance(mask: np.ndarray | torch.Tensor) -> np.ndarray:
    """Distance in pixels from each pixel centre to the mask boundary.

    The boundary runs along pixel edges between foreground (> 0.5) and
    background pixels; a pixel's distance is its Euclidean distance to the
    nearest pixel of the other class minus half a pixel (exact for straight
    boundaries, like vigra's ``boundaryDistanceTransform`` that ShapeClipper
    uses). Pixels next to the boundary get 0.5. If the mask is all foreground
    or all background there is no boundary and every distance is 0.

    Args:
        mask: (H, W) array, foreground where > 0.5.
    Returns:
        (H, W) float64 distances >= 0.5 (or all 0 without a boundary).
    """
    if isinstance(mask, torch.Tensor):
        mask = mask.detach().cpu().numpy()
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"boundary_distance: mask must be (H, W), got shape {mask.shape}")
    inside = mask > 0.5
    if inside.all() or not inside.any():
        return np.zeros(mask.shape, dtype=np.float64)
    d_in = ndimage.distance_transform_edt(inside)  # inside: distance to nearest background
    d_out = ndimage.distance_transform_edt(~inside)  # outside: distance to nearest foreground
    return np.where(inside, d_in, d_out) - 0.5


def _masks_bhw(masks: torch.Tensor) -> torch.Tensor:
    if masks.dim() == 4 and masks.shape[1] == 1:
        masks = masks[:, 0]
    if masks.dim() != 3:
        raise ValueError(f"masks must be (B, 1, H, W) or (B, H, W), got {tuple(masks.shape)}")
    return masks


def ray_sampling_probabilities(masks: torch.Tensor, offset: float = 5.0) -> torch.Tensor:
    """Per-pixel probability of being rendered, proportional to 1 / (d + offset).

    Args:
        masks: (B, 1, H, W) or (B, H, W), foreground where > 0.5.
        offset: added to the boundary distance (ShapeClipper: 5); larger is more uniform.
    Returns:
        (B, H * W) probabilities summing to 1 per image (flat row-major pixels).
    """
    if offset <= 0:
        raise ValueError(f"ray_sampling_probabilities: offset must be > 0, got {offset}")
    masks = _masks_bhw(masks)
    dist = np.stack([boundary_distance(m) for m in masks.detach().cpu().numpy()])
    weight = torch.from_numpy(1.0 / (dist + offset)).flatten(1)
    prob = weight / weight.sum(dim=1, keepdim=True)
    return prob.to(device=masks.device, dtype=torch.get_default_dtype())


def sample_pixels(
    masks: torch.Tensor,
    n_rays: int,
    offset: float = 5.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Draw ``n_rays`` distinct pixels per image, boundary pixels preferred.

    Args:
        masks: (B, 1, H, W) or (B, H, W).
        n_rays: R <= H * W.
        offset: see :func:`ray_sampling_probabilities`.
        generator: CPU torch.Generator; the draw is deterministic given it.
    Returns:
        (B, R) long flat pixel indices on the masks' device.
    """
    masks = _masks_bhw(masks)
    n_pixels = masks.shape[1] * masks.shape[2]
    if not 1 <= n_rays <= n_pixels:
        raise ValueError(f"sample_pixels: n_rays must be in [1, H*W={n_pixels}], got {n_rays}")
    prob = ray_sampling_probabilities(masks, offset).cpu()
    index = torch.multinomial(prob, n_rays, replacement=False, generator=generator)
    return index.to(masks.device)


def pixel_ndc(pixel_index: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """NDC coordinates of pixel centres.

    Args:
        pixel_index: (B, R) flat row-major pixel indices.
    Returns:
        (B, R, 2) NDC (x right, y down) of those pixel centres.
    """
    grid = pixel_centers_ndc(height, width, device=pixel_index.device).reshape(-1, 2)
    if bool((pixel_index < 0).any()) or bool((pixel_index >= grid.shape[0]).any()):
        raise ValueError(
            f"pixel_ndc: indices outside [0, {grid.shape[0]}) for a {height}x{width} image"
        )
    return grid[pixel_index]


def gather_pixels(images: torch.Tensor, pixel_index: torch.Tensor) -> torch.Tensor:
    """Read image values at flat pixel indices.

    Args:
        images: (B, C, H, W) (RGB, mask with C = 1, camera-frame normals, ...).
        pixel_index: (B, R) flat row-major indices.
    Returns:
        (B, R, C).
    """
    if images.dim() != 4 or pixel_index.dim() != 2 or images.shape[0] != pixel_index.shape[0]:
        raise ValueError(
            f"gather_pixels: need images (B, C, H, W) and indices (B, R) with the same B, got "
            f"{tuple(images.shape)} and {tuple(pixel_index.shape)}"
        )
    B, C = images.shape[:2]
    flat = images.reshape(B, C, -1)
    index = pixel_index[:, None, :].expand(B, C, -1)
    return flat.gather(2, index).transpose(1, 2)


def pixel_rays(
    R: torch.Tensor,
    t: torch.Tensor,
    tan_half_fov: float,
    pixel_index: torch.Tensor,
    height: int,
    width: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """World-frame rays through chosen pixel centres.

    Args:
        R: (B, 3, 3), t: (B, 3) world->camera extrinsics.
        pixel_index: (B, Rays) flat pixel indices.
    Returns:
        origins, dirs: (B, Rays, 3); dirs are unit vectors.
    """
    ndc = pixel_ndc(pixel_index, height, width).to(R.dtype)
    return camera_rays(R, t, tan_half_fov, ndc)


def image_rays(
    R: torch.Tensor, t: torch.Tensor, tan_half_fov: float, height: int, width: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rays through every pixel centre, row-major.

    Args:
        R: (B, 3, 3), t: (B, 3).
    Returns:
        origins, dirs: (B, H * W, 3); render them with
        ``poseless.render.volume.render_rays_chunked`` and reshape with :func:`rays_to_image`.
    """
    ndc = pixel_centers_ndc(height, width, device=R.device, dtype=R.dtype).reshape(-1, 2)
    return camera_rays(R, t, tan_half_fov, ndc)


def rays_to_image(values: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(B, H * W) or (B, H * W, C) per-ray values -> (B, C, H, W) images (C = 1 for (B, H*W))."""
    if values.dim() == 2:
        values = values[..., None]
    if values.dim() != 3 or values.shape[1] != height * width:
        raise ValueError(
            f"rays_to_image: values must be (B, {height * width}[, C]), got {tuple(values.shape)}"
        )
    return values.transpose(1, 2).reshape(values.shape[0], values.shape[2], height, width)

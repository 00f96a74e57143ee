"""Per-image camera-frame normal maps (stage ``estimate_normals``).

Output convention (the project's, see ``poseless.geometry.cameras``): (3, H, W)
unit normals in the OpenCV camera frame (x right, y down, z forward), zero
outside the binarised (> 0.5) object mask; visible surfaces have n_z < 0.

Backends:

* ``omnidata`` -- DPT-Hybrid (:mod:`poseless.features.dpt`) from the released
  checkpoint. The white-background image is resized to ``input_size`` (bilinear),
  fed as RGB in [0, 1] without mean/std normalisation (Omnidata's normal demo),
  the output clamped to [0, 1], resized back, mapped to [-1, 1], multiplied by
  ``axis_signs`` and L2-normalised, then masked. With the default signs (1, 1, 1)
  the channels are read as camera-frame x right, y down, z forward, exactly as
  ShapeClipper reads Omnidata's normal PNGs. Where a model's channels follow
  another frame, ``axis_signs`` fixes it; ``metrics.json`` reports the fraction of
  object pixels facing the camera (n_z < 0) and, with GT, the angular error, so
  a wrong frame shows up at once.
* ``dataset`` -- the ground-truth ``normals`` of the prepared dataset (synthetic),
  optionally corrupted (:func:`corrupt_normals`) to imitate an estimator's
  errors; deterministic given the seed and the item id.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from poseless.config import EstimateNormalsConfig, NormalCorruptionConfig
from poseless.errors import PoselessError
from poseless.features.dpt import DPTHybridNormal, load_omnidata_checkpoint
from poseless.utils import stable_hash


class NormalsError(PoselessError):
    """Normals cannot be produced for the configured backend and data."""


def build_omnidata_model(checkpoint: str | Path, device) -> DPTHybridNormal:
    """DPT-Hybrid normal model with the released weights, in eval mode on ``device``.

    Built on the meta device (no random init of 120M weights), then filled by the
    checkpoint. Raises :class:`poseless.features.dpt.CheckpointError` naming the path.
    """
    if not str(checkpoint):
        raise NormalsError(
            "estimate_normals.checkpoint is empty; set it to the local omnidata_dpt_normal_v2.ckpt "
            "(or use backend: dataset on synthetic data)"
        )
    path = Path(checkpoint)
    if not path.is_file():
        load_omnidata_checkpoint(torch.nn.Module(), path)  # raises the clear missing-file error
    with torch.device("meta"):
        model = DPTHybridNormal()
    model = model.to_empty(device="cpu")
    load_omnidata_checkpoint(model, path)
    return model.eval().to(device)


@torch.no_grad()
def predict_normals(
    model: torch.nn.Module,
    images: torch.Tensor,
    masks: torch.Tensor,
    input_size: int,
    axis_signs=(1.0, 1.0, 1.0),
) -> torch.Tensor:
    """Run the normal model and convert to the project's normal images.

    Args:
        images: (B, 3, H, W) RGB in [0, 1], white background.
        masks: (B, 1, H, W) in [0, 1].
        input_size: network input side (multiple of 32).
        axis_signs: per-channel signs to the OpenCV camera frame.
    Returns:
        (B, 3, H, W) float32 unit normals, zero where mask <= 0.5.
    """
    device = next(model.parameters()).device
    h, w = images.shape[-2:]
    x = F.interpolate(
        images.to(device), size=(input_size, input_size), mode="bilinear", align_corners=False
    )
    with torch.autocast("cuda", enabled=device.type == "cuda"):
        y = model(x)
    y = y.float().clamp(0.0, 1.0)
    y = F.interpolate(y, size=(h, w), mode="bilinear", align_corners=False).cpu()
    n = (y * 2.0 - 1.0) * torch.as_tensor(axis_signs, dtype=y.dtype).view(1, 3, 1, 1)
    return to_normal_image(n, masks)


def to_normal_image(n: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """L2-normalise (B, 3, H, W) vectors and zero them where mask (B, 1, H, W) <= 0.5."""
    return F.normalize(n, dim=1, eps=1e-8) * (masks > 0.5).to(n.dtype)


def random_disc(
    h: int, w: int, radius_range: tuple[float, float], rng: np.random.Generator, inside: np.ndarray
) -> np.ndarray:
    """Boolean (H, W) disc centred on a random pixel of ``inside`` (H, W) bool.

    Radius is U[radius_range] times the image side.
    """
    ys, xs = np.nonzero(inside)
    k = rng.integers(len(ys))
    r = rng.uniform(*radius_range) * max(h, w)
    yy, xx = np.mgrid[0:h, 0:w]
    return (yy - ys[k]) ** 2 + (xx - xs[k]) ** 2 <= r * r


def corrupt_normals(
    n: np.ndarray, mask: np.ndarray, cfg: NormalCorruptionConfig, rng: np.random.Generator
) -> np.ndarray:
    """Imitate a monocular estimator's errors on a clean normal image.

    In order: Gaussian noise (std ``noise_std``) on every direction, then
    ``blotches`` discs replaced by one wrong random camera-facing normal each,
    then ``flips`` discs with x and y signs flipped; renormalised and masked.

    Args:
        n: (3, H, W) unit normals (zero off the mask).
        mask: (H, W) bool object mask.
    Returns:
        (3, H, W) float32.
    """
    n = n.astype(np.float32).copy()
    h, w = mask.shape
    if not mask.any():
        return n
    if cfg.noise_std > 0:
        n = n + rng.normal(0.0, cfg.noise_std, size=n.shape).astype(np.float32)
    for _ in range(cfg.blotches):
        disc = random_disc(h, w, cfg.radius_range, rng, mask)
        v = rng.normal(size=3)
        v[2] = -abs(v[2])  # camera-facing, but unrelated to the surface
        n[:, disc] = (v / np.linalg.norm(v)).astype(np.float32)[:, None]
    for _ in range(cfg.flips):
        disc = random_disc(h, w, cfg.radius_range, rng, mask)
        n[0, disc] *= -1.0
        n[1, disc] *= -1.0
    norm = np.linalg.norm(n, axis=0, keepdims=True)
    return (n / np.maximum(norm, 1e-8) * mask).astype(np.float32)


def item_rng(seed: int, item_id: str) -> np.random.Generator:
    """Generator of one item's corruption: same seed and id, same errors, in any order."""
    return np.random.default_rng([seed, int(stable_hash(item_id, 8), 16)])


def dataset_normals(
    dataset, ids: list[str], masks: torch.Tensor, cfg: EstimateNormalsConfig, seed: int
) -> torch.Tensor:
    """Ground-truth normals of ``ids`` (optionally corrupted) as (B, 3, H, W) float32.

    Args:
        masks: (B, 1, H, W) prepared masks (the output is masked by them).
    Raises:
        NormalsError: an item without GT normals or with a wrong shape.
    """
    out = []
    h, w = masks.shape[-2:]
    c = cfg.corruption
    corrupt = c.noise_std > 0 or c.blotches > 0 or c.flips > 0
    for i, item in enumerate(ids):
        if not dataset.has_gt(item):
            raise NormalsError(
                f"{dataset.root}: item {item!r} has no ground truth; backend dataset needs gt normals"
            )
        gt = dataset.load_gt(item)
        if "normals" not in gt:
            raise NormalsError(f"{dataset.root}: ground truth of {item!r} lacks 'normals'")
        n = np.asarray(gt["normals"], np.float32)
        if n.shape != (3, h, w):
            raise NormalsError(
                f"{dataset.root}: normals of {item!r} have shape {n.shape}, expected (3, {h}, {w})"
            )
        m = masks[i, 0].numpy() > 0.5
        if corrupt:
            n = corrupt_normals(n * m, m, c, item_rng(seed, item))
        out.append(torch.from_numpy(n))
    return to_normal_image(torch.stack(out), masks)


def angular_error_deg(a: np.ndarray, b: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Angle in degrees between (3, ...) unit fields ``a`` and ``b`` at ``valid`` (...) pixels."""
    cos = np.clip((a * b).sum(0)[valid], -1.0, 1.0)
    return np.degrees(np.arccos(cos))


def normals_metrics(normals: np.ndarray, dataset, ids: list[str]) -> dict:
    """Sanity figures of an (N, 3, H, W) normal array: camera-facing fraction, error vs GT.

    Returns:
        ``facing_camera_fraction`` (object pixels with n_z < 0), and where GT normals
        exist ``gt_angular_error_deg_mean`` / ``_median`` and ``gt_error_over_30deg``.
    """
    facing, total, errors = 0, 0, []
    for r, item in enumerate(ids):
        n = np.asarray(normals[r], np.float32)
        valid = np.abs(n).sum(0) > 0
        facing += int((n[2][valid] < 0).sum())
        total += int(valid.sum())
        if dataset.has_gt(item):
            gt = dataset.load_gt(item)
            if "normals" in gt and gt["normals"].shape == n.shape:
                g = np.asarray(gt["normals"], np.float32)
                g = g / np.maximum(np.linalg.norm(g, axis=0, keepdims=True), 1e-8)
                both = valid & (np.abs(g).sum(0) > 0)
                errors.append(angular_error_deg(n, g, both))
    out: dict = {"n_items": len(ids), "facing_camera_fraction": facing / max(total, 1)}
    if errors:
        e = np.concatenate(errors)
        out["gt_angular_error_deg_mean"] = float(e.mean()) if e.size else float("nan")
        out["gt_angular_error_deg_median"] = float(np.median(e)) if e.size else float("nan")
        out["gt_error_over_30deg"] = float((e > 30).mean()) if e.size else float("nan")
    return out


def contact_sheet(
    images: torch.Tensor, normals: torch.Tensor, masks: torch.Tensor, path: str | Path
) -> None:
    """Save a grid of (image | normals) pairs, one pair per row.

    Args:
        images: (B, 3, H, W) in [0, 1]; normals: (B, 3, H, W); masks: (B, 1, H, W).
    """
    from PIL import Image

    from poseless.geometry.cameras import normals_to_rgb

    rgb = normals_to_rgb(normals.float(), (masks > 0.5).float())
    rows = torch.cat([images.float(), rgb], dim=3)  # (B, 3, H, 2W)
    sheet = torch.cat(list(rows), dim=1) if len(rows) else torch.ones(3, 1, 1)
    arr = (sheet.permute(1, 2, 0).clamp(0, 1) * 255).round().byte().numpy()
    Image.fromarray(arr).save(path)

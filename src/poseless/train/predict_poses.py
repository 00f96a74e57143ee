"""Pseudo poses for every prepared image (``predict_poses``) and their evaluation.

The trained regressor (:func:`poseless.train.pose.load_regressor`) reads each
item's **mask** (the silhouette; resized to the regressor's input size when the
prepared images have another size) and predicts an azimuth in [0, 360). Those
azimuths are the pseudo poses the reconstructor trains with.

Where the dataset has ground-truth azimuths (manifest ``azimuth_deg`` not NaN),
they are compared *after the best global alignment*: the regressor lives in the
generator's own canonical frame, so one offset (and optionally a reflection
a -> -a) per category, or one for all items, is fitted by
:func:`poseless.evaluate.align.best_global_azimuth_offset` (minimising the
median error) on all items with GT. Two scalars for hundreds of items: the fit
cannot overfit noticeably, and it is the number a pose-free method can be held
to.

With ``frame: mirror`` (not in URA) each category's azimuths are then rotated into
the frame whose mirror plane is x = 0 (:func:`fit_mirror_frame`): the plane the SDF
fields are built symmetric about, which the generator's arbitrary frame misses (on the
bench by about 100 deg, so a symmetric field cannot fit the shapes at those poses).

Outputs: a pose table (:func:`pose_table`; ``id``, ``split``, ``category``,
``azimuth_deg`` and, with GT, ``gt_azimuth_deg`` and ``error_deg``), a metrics
dict for DVC (:func:`pose_metrics`) and a figure (:func:`write_pose_figure`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
import yaml

from poseless.config import PredictPosesConfig
from poseless.data.prepared import SPLITS, PreparedDataset
from poseless.evaluate.align import best_global_azimuth_offset
from poseless.evaluate.metrics import summarize_pose_errors
from poseless.geometry.cameras import LookAtCamera, kato_extrinsics
from poseless.models.mesh_decoder import Generator
from poseless.models.pose_regressor import PoseRegressor
from poseless.render.soft_raster import SoftRasterSettings, render_silhouettes
from poseless.train.groups import Groups
from poseless.train.pose import ModelFileError, png_bytes
from poseless.utils import write_bytes_atomic

TABLE_COLUMNS: dict[str, str] = {
    "id": "item id (manifest order)",
    "split": "train | val | test",
    "category": "category name",
    "azimuth_deg": "predicted (pseudo) azimuth in degrees, [0, 360), in the generator's "
    "frame or (frame: mirror) its category's mirror frame",
    "gt_azimuth_deg": "ground-truth azimuth in degrees (NaN when unknown; only with GT)",
    "error_deg": "|wrapped error| after the best global alignment, degrees (only with GT)",
}
"""Columns of poses.parquet; the last two only when some item has a GT azimuth."""


def resize_masks(masks: torch.Tensor, size: int) -> torch.Tensor:
    """Masks (N, 1, H, W) in [0, 1] -> (N, 1, size, size) (area-weighted when shrinking).

    Non-square masks are refused: prepared images are square.
    """
    if masks.ndim != 4 or masks.shape[1] != 1:
        raise ValueError(f"resize_masks: masks must be (N, 1, H, W), got {tuple(masks.shape)}")
    h, w = masks.shape[-2:]
    if h != w:
        raise ValueError(f"resize_masks: masks must be square, got {h} x {w}")
    if h == size:
        return masks
    return F.interpolate(
        masks, size=(size, size), mode="bilinear", align_corners=False, antialias=h > size
    ).clamp_(0.0, 1.0)


def map_masks(
    fn: Callable[[torch.Tensor], torch.Tensor],
    batches: Iterable[torch.Tensor],
    input_size: int,
    device: torch.device,
    binarize: bool = False,
) -> np.ndarray | None:
    """``fn`` of every mask in ``batches`` of (B, 1, H, W), resized to ``input_size``
    (thresholded at 0.5 with ``binarize``), concatenated along the first axis as float64.

    Returns None when there were no batches.
    """
    out = []
    with torch.no_grad():
        for masks in batches:
            x = resize_masks(masks.float(), input_size).to(device)
            if binarize:
                x = (x > 0.5).float()
            out.append(fn(x).double().cpu().numpy())
    return np.concatenate(out) if out else None


def map_masks_with_flips(
    fn: Callable[[torch.Tensor], torch.Tensor],
    batches: Iterable[torch.Tensor],
    input_size: int,
    device: torch.device,
    binarize: bool = False,
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """:func:`map_masks` of every mask and of its horizontal flip, reading each batch once.

    Each (B, 1, H, W) batch goes through as one (2B, ...) batch, masks then flips.
    """
    sizes: list[int] = []

    def with_flips() -> Iterable[torch.Tensor]:
        for masks in batches:
            sizes.append(len(masks))
            yield torch.cat([masks, masks.flip(-1)])

    out = map_masks(fn, with_flips(), input_size, device, binarize)
    if out is None:
        return None, None
    parts = np.split(out, np.cumsum([2 * n for n in sizes])[:-1])
    unflipped = [p[:n] for p, n in zip(parts, sizes, strict=True)]
    flipped = [p[n:] for p, n in zip(parts, sizes, strict=True)]
    return np.concatenate(unflipped), np.concatenate(flipped)


def _wrap_degrees(az: np.ndarray | None) -> np.ndarray:
    if az is None:
        return np.zeros(0, np.float64)
    return np.where(az >= 360.0, az - 360.0, az)


def predict_azimuths(
    regressor: PoseRegressor | GanRetrieval,
    batches: Iterable[torch.Tensor],
    input_size: int,
    device: torch.device,
    binarize: bool = False,
) -> np.ndarray:
    """Azimuths (degrees, [0, 360)) of every mask in ``batches`` of (B, 1, H, W), in order.

    ``regressor``: the pose regressor, or :class:`GanRetrieval` (any module mapping
    (B, 1, S, S) masks to (B,) degrees, S = ``input_size``).

    ``binarize`` thresholds the resized masks at 0.5 (the regressor's training renders
    are near-binary SoftRas silhouettes).

    Returns:
        (N,) float64.
    """
    regressor = regressor.to(device).eval()
    return _wrap_degrees(map_masks(regressor, batches, input_size, device, binarize))


def predict_azimuths_with_flips(
    regressor: PoseRegressor | GanRetrieval,
    batches: Iterable[torch.Tensor],
    input_size: int,
    device: torch.device,
    binarize: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`predict_azimuths` of every mask and of its horizontal flip, reading each batch once.

    Returns:
        (azimuths (N,), azimuths of the flipped masks (N,)), float64 degrees.
    """
    regressor = regressor.to(device).eval()
    a, a_flipped = map_masks_with_flips(regressor, batches, input_size, device, binarize)
    return _wrap_degrees(a), _wrap_degrees(a_flipped)


def mask_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of every pair of binary masks: a (N, P) x b (M, P), 0/1 floats -> (N, M)."""
    inter = a @ b.T
    union = a.sum(1, keepdim=True) + b.sum(1)[None] - inter
    return inter / union.clamp_min(1e-6)


def render_azimuth_grid(
    G: Generator,
    camera: LookAtCamera,
    size: int,
    codes: int,
    step_deg: float,
    seed: int,
    sigma: float = 1e-4,
) -> tuple[torch.Tensor, np.ndarray]:
    """Binary silhouettes of ``codes`` samples of ``G`` at azimuths 0, step, ..., < 360.

    Returns:
        renders (n_az * codes, size, size) bool, azimuth-major (all codes at the
        first azimuth, then the next); azimuths_deg (n_az * codes,) float64.
    """
    if codes < 1 or not 0.0 < step_deg <= 360.0:
        raise ValueError(
            f"render_azimuth_grid: need codes >= 1 and 0 < step <= 360, got {codes}, {step_deg}"
        )
    device = G.decoder.fc1.weight.device
    raster = SoftRasterSettings(image_size=size, sigma=sigma, fov_deg=camera.fov_deg)
    z = G.sample_z(codes, torch.Generator().manual_seed(seed), device=device)
    azimuths = np.arange(0.0, 360.0, step_deg)
    out = []
    with torch.no_grad():
        vertices, faces = G(z)
        for a in azimuths:
            R, t = kato_extrinsics(
                torch.full((codes,), math.radians(a), device=device),
                math.radians(camera.elevation_deg),
                camera.distance,
            )
            out.append(render_silhouettes(vertices.float(), faces, R, t, raster)[:, 0] > 0.5)
    return torch.cat(out).cpu(), np.repeat(azimuths, codes)


def _gan_record(gan_dir) -> tuple[Path, dict]:
    path = Path(gan_dir) / "config.yaml"
    if not path.is_file():
        raise ModelFileError(f"{path}: train_gan record not found; run the train_gan stage")
    try:
        record = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ModelFileError(f"{path}: not YAML ({e}); rerun the train_gan stage") from e
    return path, record


def gan_render_settings(gan_dir) -> tuple[int, LookAtCamera]:
    """The image size and camera a ``train_gan`` output's critic saw its renders at.

    Read from the folder's ``config.yaml`` (``config.train_gan.image_size``,
    ``extra.camera``). Retrieval renders its bank there: the generator is right at
    its own resolution, and may not be at a coarser one (a 48-px airplane GAN was
    7.5 deg off retrieved at 48 px and 47 deg off at 32 px).

    Raises:
        ModelFileError: naming ``config.yaml`` when it is missing or lacks either entry.
    """
    path, record = _gan_record(gan_dir)
    try:
        size = int(record["config"]["train_gan"]["image_size"])
        camera = LookAtCamera(**record["extra"]["camera"])
    except (KeyError, TypeError, ValueError) as e:
        raise ModelFileError(
            f"{path}: not a train_gan record with config.train_gan.image_size and "
            f"extra.camera ({type(e).__name__}: {e}); rerun the train_gan stage"
        ) from e
    return size, camera


def gan_azimuth_range(gan_dir) -> tuple[float, float]:
    """The azimuth range [lo, hi) degrees a ``train_gan`` output's fakes were drawn from.

    Read from ``config.train_gan.azimuth_range_deg`` of the folder's ``config.yaml``.

    Raises:
        ModelFileError: naming ``config.yaml`` when it is missing or lacks the entry.
    """
    path, record = _gan_record(gan_dir)
    try:
        lo, hi = (float(x) for x in record["config"]["train_gan"]["azimuth_range_deg"])
    except (KeyError, TypeError, ValueError) as e:
        raise ModelFileError(
            f"{path}: not a train_gan record with config.train_gan.azimuth_range_deg "
            f"({type(e).__name__}: {e}); rerun the train_gan stage"
        ) from e
    if not 0.0 <= lo < hi <= 360.0:
        raise ModelFileError(
            f"{path}: azimuth_range_deg must be 0 <= lo < hi <= 360, got {[lo, hi]}"
        )
    return lo, hi


class GanRetrieval(torch.nn.Module):
    """Pseudo poses by retrieval (not in URA): the azimuth of the most similar GAN render.

    A drop-in for the regressor in :func:`predict_azimuths`: (B, 1, S, S) masks in,
    (B,) azimuths in degrees out. Each mask (thresholded at 0.5) is compared by IoU
    with a fixed bank of binary renders of the frozen generator (``codes`` samples
    at every ``step_deg`` of azimuth, :func:`render_azimuth_grid`), and takes the
    azimuth of the best match. Like the regressor's, its azimuths live in the
    generator's canonical frame. It needs no training, and it does not suffer the
    regressor's gap between the GAN's renders and the real masks; it is only as
    right as the GAN's shapes are (``benchmarks/diagnose_pseudo_poses.py``).
    """

    def __init__(
        self,
        renders: torch.Tensor,
        azimuths_deg: np.ndarray | torch.Tensor,
        azimuth_range_deg: tuple[float, float] = (0.0, 360.0),
    ):
        super().__init__()
        if renders.ndim != 3 or renders.shape[1] != renders.shape[2] or len(renders) == 0:
            raise ValueError(
                f"GanRetrieval: renders must be (N, S, S), N > 0, got {tuple(renders.shape)}"
            )
        az = np.asarray(azimuths_deg, np.float64)
        if az.shape != (len(renders),):
            raise ValueError(f"GanRetrieval: {len(renders)} renders but {az.shape} azimuths")
        lo, hi = azimuth_range_deg
        if not 0.0 <= lo < hi <= 360.0:
            raise ValueError(
                f"GanRetrieval: azimuth range must be 0 <= lo < hi <= 360, got {[lo, hi]}"
            )
        self.size = int(renders.shape[-1])
        self.register_buffer("bank", renders.flatten(1).float())
        self.register_buffer("azimuths_deg", torch.from_numpy(az))
        grid, bin_of = np.unique(az, return_inverse=True)
        self.grid_deg = grid
        """(K,) the bank's distinct azimuths, ascending."""
        self.register_buffer("bin_of", torch.from_numpy(bin_of.reshape(-1)).long())
        inside = (grid >= lo) & (grid < hi)
        if not inside.any():
            raise ValueError(f"GanRetrieval: no bank azimuth lies in the range {[lo, hi]}")
        self.azimuth_range_deg = (float(lo), float(hi))
        self.prior = inside / inside.sum()
        """(K,) the GAN's pose prior on ``grid_deg``: uniform over its azimuth range."""

    @classmethod
    def from_generator(
        cls,
        G: Generator,
        camera: LookAtCamera,
        size: int,
        codes: int,
        step_deg: float,
        seed: int,
        azimuth_range_deg: tuple[float, float] = (0.0, 360.0),
    ) -> GanRetrieval:
        """The retrieval bank of one generator (see :func:`render_azimuth_grid`)."""
        return cls(*render_azimuth_grid(G, camera, size, codes, step_deg, seed), azimuth_range_deg)

    def _check(self, masks: torch.Tensor) -> torch.Tensor:
        if masks.ndim != 4 or masks.shape[1] != 1 or masks.shape[-1] != self.size:
            raise ValueError(
                f"GanRetrieval: masks must be (B, 1, {self.size}, {self.size}), "
                f"got {tuple(masks.shape)}"
            )
        return (masks.flatten(1) > 0.5).to(self.bank)

    def forward(self, masks: torch.Tensor) -> torch.Tensor:
        """masks (B, 1, S, S) in [0, 1] -> (B,) azimuths in degrees, float64."""
        best = mask_iou(self._check(masks), self.bank).argmax(dim=1)
        return self.azimuths_deg[best]

    def scores(self, masks: torch.Tensor) -> torch.Tensor:
        """masks (B, 1, S, S) in [0, 1] -> (B, K) best IoU over the codes at each of
        ``grid_deg`` (the argmax over K is :meth:`forward`'s azimuth)."""
        iou = mask_iou(self._check(masks), self.bank)
        out = iou.new_full((len(iou), len(self.grid_deg)), -1.0)
        return out.scatter_reduce_(1, self.bin_of.expand(len(iou), -1), iou, "amax")


@dataclass(frozen=True)
class PriorMatch:
    """What :func:`prior_matched_bins` did to one set of retrievals."""

    moved: float
    """Share of items whose azimuth differs from their most similar render's."""
    iou_given_up: float
    """Mean IoU of the most similar render minus that at the chosen azimuth."""
    iterations: int
    """Sinkhorn iterations run (until no potential moves by ``tol`` or the cap)."""
    marginal_error: float
    """Total-variation distance of the plan's azimuth marginal from the prior (about 0
    for balanced transport; how far the data pulled it away for unbalanced)."""


def prior_matched_bins(
    scores: np.ndarray,
    prior: np.ndarray,
    epsilon: float,
    strength: float | None = None,
    max_iterations: int = 5000,
    tol: float = 1e-4,
) -> tuple[np.ndarray, PriorMatch]:
    """Retrieval whose azimuths follow a prior: entropic optimal transport (not in URA).

    Transports the N items (mass 1/N each) onto the K azimuths (mass ``prior``) at cost
    -IoU, with entropy ``epsilon`` (log-domain Sinkhorn). The plan's row of item i is
    proportional to exp((scores[i, k] + g_k) / epsilon), with one potential g_k per
    azimuth; each item takes the azimuth of its row's largest entry, i.e. the argmax
    of its IoU plus g_k. So the items keep their own ranking of similar renders, and
    only the azimuths the retrieval over-fills (a GAN that matches the real masks of
    one arc of views better from the opposite side) pay for it. With ``strength``
    the azimuth marginal is only pulled towards the prior (KL penalty of that weight,
    unbalanced transport); None holds it there.

    Args:
        scores: (N, K) similarities (IoU) of each item at each azimuth.
        prior: (K,) nonnegative azimuth weights (normalised here); a zero weight bars
            that azimuth.
    Returns:
        ((N,) chosen azimuth indices, :class:`PriorMatch`).

    Raises:
        ValueError: on mis-shaped or non-finite scores, a bad prior or settings.
    """
    from scipy.special import logsumexp

    s = np.asarray(scores, np.float64)
    q = np.asarray(prior, np.float64).reshape(-1)
    if s.ndim != 2 or s.shape[1] != q.size or s.shape[0] == 0:
        raise ValueError(
            f"prior_matched_bins: scores must be (N > 0, K) with K = {q.size} prior weights, "
            f"got {s.shape}"
        )
    if not (np.all(np.isfinite(s)) and np.all(np.isfinite(q))) or (q < 0).any() or q.sum() <= 0:
        raise ValueError("prior_matched_bins: scores must be finite and the prior >= 0, not all 0")
    if not epsilon > 0 or (strength is not None and not strength > 0):
        raise ValueError(
            f"prior_matched_bins: need epsilon > 0 and strength > 0 or None, got {epsilon}, "
            f"{strength}"
        )
    n = s.shape[0]
    q = q / q.sum()
    log_k = s / epsilon
    with np.errstate(divide="ignore"):
        log_q = np.log(q)
    log_p = -math.log(n)
    fi = 1.0 if strength is None else strength / (strength + epsilon)
    allowed = q > 0
    log_v = np.where(allowed, 0.0, -np.inf)
    iterations = 0
    while iterations < max_iterations:
        iterations += 1
        log_u = log_p - logsumexp(log_k + log_v[None, :], axis=1)
        new_v = log_v.copy()
        new_v[allowed] = fi * (log_q[allowed] - logsumexp(log_k + log_u[:, None], axis=0)[allowed])
        delta = float(np.abs(new_v[allowed] - log_v[allowed]).max())
        log_v = new_v
        if delta < tol:
            break
    log_u = log_p - logsumexp(log_k + log_v[None, :], axis=1)
    marginal = np.exp(logsumexp(log_k + log_u[:, None], axis=0) + log_v)
    error = 0.5 * float(np.abs(marginal / marginal.sum() - q).sum())
    choice = np.argmax(log_k + log_v[None, :], axis=1)  # barred azimuths: log_v = -inf
    plain = s.argmax(1)
    match = PriorMatch(
        moved=float((choice != plain).mean()),
        iou_given_up=float((s.max(1) - s[np.arange(n), choice]).mean()),
        iterations=iterations,
        marginal_error=error,
    )
    return choice, match


MIRROR_BIN_DEG = 5.0
"""Histogram bin of a + a_flipped when :func:`fit_mirror_frame` looks for its mode."""


@dataclass(frozen=True)
class MirrorFrame:
    """Where a category's mirror plane lies in its pose frame (``frame: mirror``)."""

    offset_deg: float
    """c in [0, 180): azimuth a of the pose frame is azimuth a - c of the mirror frame."""
    agreement: float
    """Fraction of items whose a + a_flipped lies within the tolerance of 2c."""
    n: int
    """Items the fit used."""


def fit_mirror_frame(
    azimuth_deg: np.ndarray, flipped_deg: np.ndarray, tolerance_deg: float = 15.0
) -> MirrorFrame:
    """The rotation that puts a category's mirror plane at x = 0, from its own images.

    A mirror-symmetric object seen at azimuth a, in a frame whose mirror plane is
    x = 0, looks like its horizontally flipped image at azimuth -a (Kato cameras; the
    mirror x -> -x flips the image). In a pose frame whose azimuths are the mirror
    frame's plus c (a rotation about y), an image at a and its flip at a_flipped
    satisfy a + a_flipped = 2c (mod 360); c is fixed mod 180, and c or c + 180 both
    put the plane at x = 0. So 2c is the mode of a + a_flipped over the items (a histogram of
    :data:`MIRROR_BIN_DEG` bins, smoothed over one bin each side), refined by the
    circular mean of the items within ``tolerance_deg`` of it. Front/back flips of the
    pose method put an item 180 deg off 2c, outside the tolerance; a category that is
    not mirror-symmetric shows as a low ``agreement``.

    Args:
        azimuth_deg, flipped_deg: (N,) azimuths of the masks and of their flips (deg).
        tolerance_deg: half-width of the inlier band around the mode (deg).
    """
    a = np.asarray(azimuth_deg, np.float64).reshape(-1)
    b = np.asarray(flipped_deg, np.float64).reshape(-1)
    if a.shape != b.shape or a.size == 0:
        raise ValueError(
            f"fit_mirror_frame: need as many flipped as unflipped azimuths (> 0), got "
            f"{a.size} and {b.size}"
        )
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        raise ValueError("fit_mirror_frame: azimuths must be finite")
    s = np.mod(a + b, 360.0)
    n_bins = int(round(360.0 / MIRROR_BIN_DEG))
    hist, _ = np.histogram(s, bins=n_bins, range=(0.0, 360.0))
    smooth = hist + np.roll(hist, 1) + np.roll(hist, -1)
    mode = (int(np.argmax(smooth)) + 0.5) * MIRROR_BIN_DEG
    inlier = np.abs(np.mod(s - mode + 180.0, 360.0) - 180.0) <= tolerance_deg
    mean = np.exp(1j * np.radians(s[inlier])).mean()
    two_c = float(np.degrees(np.angle(mean)))
    c = float(np.mod(two_c / 2.0, 180.0))
    c = 0.0 if c >= 180.0 else c  # mod of a tiny negative can round to 180.0
    return MirrorFrame(c, float(inlier.mean()), int(a.size))


def dataset_mask_batches(
    dataset: PreparedDataset,
    ids: list[str],
    batch_size: int,
    progress: Callable[[Iterable], Iterable] | None = None,
) -> Iterable[torch.Tensor]:
    """Masks (B, 1, H, W) of ``ids`` in batches of ``batch_size``, in order."""
    starts = range(0, len(ids), batch_size)
    for s in progress(starts) if progress is not None else starts:
        yield dataset.load(ids[s : s + batch_size]).masks


@dataclass(frozen=True)
class CategoryAlignment:
    """The global alignment fitted for one group of items."""

    offset_deg: float
    """Offset added to the (possibly reflected) predicted azimuths, degrees in [-180, 180)."""
    reflected: bool
    """Whether predictions were reflected (a -> -a) before the offset."""
    errors_deg: np.ndarray
    """(N,) aligned absolute errors in degrees, [0, 180]."""


def fit_alignment(
    pred_deg: np.ndarray, gt_deg: np.ndarray, allow_reflection: bool
) -> CategoryAlignment:
    """Best global offset (and reflection) of predicted vs GT azimuths (degrees, (N,) each)."""
    fit = best_global_azimuth_offset(np.radians(pred_deg), np.radians(gt_deg), allow_reflection)
    return CategoryAlignment(
        float(np.degrees(fit.offset_rad)), bool(fit.reflected), np.degrees(fit.errors_rad)
    )


def _summary(errors_deg: np.ndarray, thresholds: tuple[float, ...]) -> dict:
    s = summarize_pose_errors(np.radians(errors_deg), tuple(thresholds))
    out = {"n": s.count, "median_error_deg": s.median_deg, "mean_error_deg": s.mean_deg}
    for t, acc in s.accuracy.items():
        out[f"acc@{t:g}"] = acc
    return out


def pose_table(
    ids: list[str],
    splits: list[str],
    categories: list[str],
    pred_deg: np.ndarray,
    gt_deg: np.ndarray,
    cfg: PredictPosesConfig,
) -> tuple[pd.DataFrame, dict]:
    """The pose table and the DVC metrics of one set of predictions.

    Args:
        ids, splits, categories: per item, (N,) lists.
        pred_deg: (N,) predicted azimuths, degrees.
        gt_deg: (N,) ground-truth azimuths, degrees, NaN where unknown.
        cfg: the ``predict_poses`` section (alignment grouping, thresholds).
    Returns:
        (table with :data:`TABLE_COLUMNS`, metrics dict): the metrics hold the
        counts always and, with GT, per category and overall the median/mean
        aligned error, the accuracies, and the fitted offset and reflection.
    """
    n = len(ids)
    pred = np.asarray(pred_deg, np.float64).reshape(-1)
    gt = np.asarray(gt_deg, np.float64).reshape(-1)
    if not (len(splits) == len(categories) == len(pred) == len(gt) == n):
        raise ValueError(
            f"pose_table: lengths differ: ids {n}, splits {len(splits)}, categories "
            f"{len(categories)}, predictions {len(pred)}, gt {len(gt)}"
        )
    if not np.all(np.isfinite(pred)):
        raise ValueError("pose_table: predicted azimuths must be finite")
    pred = np.mod(pred, 360.0)
    pred = np.where(pred >= 360.0, 0.0, pred)  # fmod of tiny negatives can give 360.0
    table = pd.DataFrame(
        {
            "id": pd.Series(ids, dtype="string"),
            "split": pd.Series(splits, dtype="string"),
            "category": pd.Series(categories, dtype="string"),
            "azimuth_deg": pred,
        }
    )
    cats = np.asarray(categories, dtype=object)
    metrics: dict = {
        "n_items": n,
        "counts": {s: int(sum(1 for x in splits if x == s)) for s in SPLITS if s in set(splits)},
        "categories": {
            str(c): {"n_items": int((cats == c).sum())} for c in sorted(set(categories))
        },
    }
    has_gt = np.isfinite(gt)
    metrics["n_with_gt"] = int(has_gt.sum())
    if not has_gt.any():
        return table, metrics

    errors = np.full(n, np.nan)
    thresholds = tuple(cfg.accuracy_thresholds_deg)
    groups = (
        [(str(c), cats == c) for c in sorted(set(categories))]
        if cfg.alignment == "per_category"
        else [("all", np.ones(n, bool))]
    )
    metrics["alignment"] = {"grouping": cfg.alignment, "allow_reflection": cfg.allow_reflection}
    fits = {}
    for name, members in groups:
        sel = members & has_gt
        if not sel.any():
            continue
        fit = fit_alignment(pred[sel], gt[sel], cfg.allow_reflection)
        errors[sel] = fit.errors_deg
        fits[name] = {"offset_deg": fit.offset_deg, "reflected": fit.reflected}
    for c in metrics["categories"]:
        sel = (cats == c) & has_gt
        if sel.any():
            entry = metrics["categories"][c]
            entry.update(_summary(errors[sel], thresholds))
            if cfg.alignment == "per_category":
                entry.update(fits[c])
    metrics["overall"] = _summary(errors[has_gt], thresholds)
    if cfg.alignment == "all":
        metrics["overall"].update(fits["all"])
    table["gt_azimuth_deg"] = np.where(has_gt, np.mod(gt, 360.0), np.nan)
    table["error_deg"] = errors
    return table, _finite_json(metrics)


def _finite_json(obj):
    """NaN -> None so the metrics file is strict JSON."""
    if isinstance(obj, dict):
        return {k: _finite_json(v) for k, v in obj.items()}
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def predict_dataset(
    regressors: Mapping[str, tuple[PoseRegressor, int]],
    groups: Groups,
    dataset: PreparedDataset,
    cfg: PredictPosesConfig,
    device: torch.device,
    progress: Callable[[Iterable], Iterable] | None = None,
) -> tuple[pd.DataFrame, dict]:
    """Predict every item of ``dataset`` (manifest order) with its category's regressor.

    Args:
        regressors: group name -> (regressor, input size), one per ``groups`` name.
        groups: the ``train_pose`` groups (:mod:`poseless.train.groups`).

    With ``cfg.frame == "mirror"`` each group's flipped masks are predicted too, and its
    azimuths are rotated by :func:`fit_mirror_frame`'s c (a -> a - c).

    Returns:
        :func:`pose_table`'s output; the metrics also hold ``frame`` and, in the mirror
        frame, ``mirror_frames`` (group -> offset_deg, agreement, n).
    """
    ids = dataset.ids()
    if not ids:
        raise ValueError(f"{dataset.root}: the prepared dataset has no items")
    m = dataset.manifest
    categories = [str(c) for c in m["category"]]
    item_groups = np.array([groups.of(c) for c in categories], dtype=object)
    pred = np.zeros(len(ids), np.float64)
    frames: dict[str, MirrorFrame] = {}
    matches: dict[str, dict] = {}
    for group in groups.names:
        rows = np.flatnonzero(item_groups == group)
        if rows.size == 0:
            continue
        regressor, input_size = regressors[group]
        batches = dataset_mask_batches(dataset, [ids[r] for r in rows], cfg.batch_size, progress)
        mirror = cfg.frame == "mirror"
        if cfg.retrieval_prior == "gan":
            pred[rows], flipped, matches[group] = _prior_matched_retrieval(
                regressor, batches, input_size, device, cfg, mirror, group
            )
        elif not mirror:
            pred[rows] = predict_azimuths(
                regressor, batches, input_size, device, binarize=cfg.binarize
            )
        else:
            pred[rows], flipped = predict_azimuths_with_flips(
                regressor, batches, input_size, device, binarize=cfg.binarize
            )
        if mirror:
            frame = fit_mirror_frame(pred[rows], flipped, cfg.frame_tolerance_deg)
            pred[rows] -= frame.offset_deg
            frames[group] = frame
    gt = m["azimuth_deg"].to_numpy(np.float64)
    table, metrics = pose_table(ids, [str(s) for s in m["split"]], categories, pred, gt, cfg)
    metrics["frame"] = cfg.frame
    if frames:
        metrics["mirror_frames"] = {g: dataclasses.asdict(f) for g, f in frames.items()}
    if matches:
        metrics["retrieval_prior"] = matches
    return table, metrics


def _prior_matched_retrieval(
    retrieval: PoseRegressor | GanRetrieval,
    batches: Iterable[torch.Tensor],
    input_size: int,
    device: torch.device,
    cfg: PredictPosesConfig,
    with_flips: bool,
    group: str,
) -> tuple[np.ndarray, np.ndarray | None, dict]:
    """One group's retrieval under its GAN's pose prior (``retrieval_prior: gan``).

    Returns the azimuths, those of the flipped masks (``with_flips``; each set is
    matched to the prior on its own) and the :class:`PriorMatch` entries for the metrics.
    """
    if not isinstance(retrieval, GanRetrieval):
        raise ValueError(
            f"predict_poses: retrieval_prior {cfg.retrieval_prior!r} needs method "
            f"gan_retrieval (group {group} has a {type(retrieval).__name__})"
        )
    if with_flips and retrieval.azimuth_range_deg != (0.0, 360.0):
        raise ValueError(
            f"predict_poses: retrieval_prior {cfg.retrieval_prior!r} with frame: mirror needs "
            f"the GAN's train_gan.azimuth_range_deg to be the whole circle (group {group}: "
            f"{list(retrieval.azimuth_range_deg)}): the flipped masks' azimuths follow the "
            "mirrored range, whose position is what the frame fit looks for"
        )
    retrieval = retrieval.to(device).eval()
    if with_flips:
        sets = map_masks_with_flips(retrieval.scores, batches, input_size, device, cfg.binarize)
    else:
        sets = (map_masks(retrieval.scores, batches, input_size, device, cfg.binarize), None)
    out: list[np.ndarray | None] = []
    entry: dict = {}
    for name, scores in zip(("masks", "flipped"), sets, strict=True):
        if scores is None:
            out.append(None)
            continue
        choice, match = prior_matched_bins(
            scores, retrieval.prior, cfg.retrieval_prior_epsilon, cfg.retrieval_prior_strength
        )
        out.append(retrieval.grid_deg[choice].astype(np.float64))
        entry[name] = dataclasses.asdict(match)
    return out[0], out[1], entry


def write_pose_figure(path, table: pd.DataFrame) -> None:
    """Histogram of predicted azimuths per category; with GT also aligned error
    histogram and predicted-vs-true scatter. PNG without metadata (byte-stable)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    has_gt = "gt_azimuth_deg" in table and table["gt_azimuth_deg"].notna().any()
    ncols = 3 if has_gt else 1
    fig, axes = plt.subplots(1, ncols, figsize=(4.2 * ncols, 3.4), squeeze=False)
    axes = axes[0]
    bins = np.linspace(0.0, 360.0, 37)
    cats = sorted(table["category"].unique())
    axes[0].hist(
        [table.loc[table["category"] == c, "azimuth_deg"].to_numpy() for c in cats],
        bins=bins,
        stacked=True,
        label=[str(c) for c in cats],
    )
    axes[0].set_xlabel("predicted azimuth (deg)")
    axes[0].set_ylabel("items")
    axes[0].set_title("pseudo poses")
    axes[0].legend(fontsize=7)
    if has_gt:
        gt_rows = table[table["gt_azimuth_deg"].notna()]
        axes[1].scatter(
            gt_rows["gt_azimuth_deg"], gt_rows["azimuth_deg"], s=6, alpha=0.6, linewidths=0
        )
        axes[1].set_xlabel("true azimuth (deg)")
        axes[1].set_ylabel("predicted azimuth (deg)")
        axes[1].set_xlim(0, 360)
        axes[1].set_ylim(0, 360)
        axes[1].set_title("predicted vs true (unaligned)")
        axes[2].hist(gt_rows["error_deg"], bins=np.linspace(0.0, 180.0, 37))
        med = float(np.median(gt_rows["error_deg"]))
        axes[2].axvline(med, color="k", linestyle="--", linewidth=1)
        axes[2].set_xlabel("error after global alignment (deg)")
        axes[2].set_title(f"median {med:.1f}°")
    fig.tight_layout()
    data = png_bytes(fig)
    plt.close(fig)
    write_bytes_atomic(path, data)

"""Alignment protocols of 3D evaluation (REFERENCE.md "Evaluation protocols in the field").

Numbers are comparable only under one protocol, so every metric key names its
protocol: ``metric_key("iou32", "azimuth_search") == "iou32@azimuth_search"``.

* ``azimuth_search`` (URA, an oracle): the prediction is rotated about the world
  y (up) axis by each of 72 azimuths 0, 5, ..., 355 deg; per instance the best
  one is kept, chosen separately per metric: by voxel IoU for ``iou``, by Chamfer
  for ``cd`` and the F-scores.
* ``global``: one rotation about y (optionally composed with the mirror
  x -> -x) for the whole test set, fitted on validation items with
  ``fit_global`` or given (``global_alignment``); honest for methods that learn
  their own canonical frame.
* ``view_centric`` (ShapeClipper): the prediction is rotated into its predicted
  camera frame and the GT into its GT camera frame (world->camera rotations,
  translation ignored); each cloud is centred on its mean and divided by
  max(x-extent, y-extent), its image-plane extent; then Chamfer and F-score. No
  IoU (the two clouds no longer share a voxel grid).
* ``icp``: per-instance rigid (or similarity) ICP from a few initial azimuths
  (Unicorn-style; generous).

One call per item and protocol: ``evaluate_protocol(pred, gt, protocol,
settings, alignment)`` returns a ``ProtocolResult`` with the metrics under their
keys and the transforms used. Transforms are 4x4 matrices acting on column
vectors, ``x' = T[:3, :3] @ x + T[:3, 3]``, for the prediction and for the GT.

Empty predictions (no faces) never raise: IoU is 0, Chamfer is inf (see
``metrics.EMPTY_PREDICTION_DISTANCE``), F-scores are 0, the alignment is the
identity and a warning is recorded. An empty GT raises: it cannot be evaluated.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
from scipy.spatial import cKDTree

from poseless.evaluate.metrics import (
    FSCORE_THRESHOLDS,
    fscore_name,
    nearest_distances,
    point_metrics,
    sample_surface_points,
    to_numpy,
    voxel_iou,
    wrap_angle,
)
from poseless.evaluate.voxelize import voxelize_mesh

AZIMUTH_SEARCH = "azimuth_search"
"""URA's per-instance oracle over 72 azimuths."""
GLOBAL = "global"
"""One rotation (and optional flip) for the whole test set."""
VIEW_CENTRIC = "view_centric"
"""ShapeClipper's camera-frame comparison with image-plane scale normalisation."""
ICP = "icp"
"""Per-instance rigid or similarity ICP."""
PROTOCOLS: tuple[str, ...] = (AZIMUTH_SEARCH, GLOBAL, VIEW_CENTRIC, ICP)
"""All protocol names, used verbatim in metric keys."""

CD = "cd"
"""Metric name of the Chamfer distance."""


def iou_name(resolution: int = 32) -> str:
    """Metric name of voxel IoU at ``resolution``: 32 -> 'iou32'."""
    return f"iou{int(resolution)}"


def metric_key(metric: str, protocol: str) -> str:
    """'metric@protocol', e.g. ('fscore@0.01', 'global') -> 'fscore@0.01@global'."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r} (known: {PROTOCOLS})")
    if not metric or metric.endswith("@"):
        raise ValueError(f"bad metric name {metric!r}")
    return f"{metric}@{protocol}"


# --------------------------------------------------------------------------- transforms


def rotation_y(theta: float) -> np.ndarray:
    """(3, 3) right-handed rotation by ``theta`` radians about world +y (z -> x for theta = pi/2)."""
    c, s = math.cos(theta), math.sin(theta)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


FLIP_X = np.diag([-1.0, 1.0, 1.0])
"""The mirror x -> -x used by ``global`` (applied before the rotation)."""


def homogeneous(linear: np.ndarray, translation=None) -> np.ndarray:
    """(4, 4) transform from a (3, 3) linear part and a (3,) translation (default 0)."""
    T = np.eye(4)
    T[:3, :3] = linear
    if translation is not None:
        T[:3, 3] = translation
    return T


def apply_transform(points: np.ndarray, T: np.ndarray) -> np.ndarray:
    """points (N, 3) -> (N, 3) under the 4x4 transform T (x' = A x + t)."""
    return points @ T[:3, :3].T + T[:3, 3]


def azimuth_candidates(step_deg: float = 5.0) -> np.ndarray:
    """(A,) azimuths in radians: 0, step, ..., < 360 deg (72 for the default 5 deg)."""
    if not 0 < step_deg <= 360:
        raise ValueError(f"azimuth step must be in (0, 360] degrees, got {step_deg}")
    n = int(round(360.0 / step_deg))
    if abs(n * step_deg - 360.0) > 1e-6:
        raise ValueError(f"azimuth step {step_deg} deg does not divide 360")
    return np.radians(np.arange(n) * step_deg)


def _candidate_matrix(azimuth: float, flip: bool) -> np.ndarray:
    return rotation_y(azimuth) @ FLIP_X if flip else rotation_y(azimuth)


# --------------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class EvalSettings:
    """How predictions are compared with ground truth."""

    n_points: int = 10_000
    """Surface points sampled per mesh for Chamfer / F-score (ShapeClipper: 100k)."""
    search_points: int = 2048
    """Points used to choose an azimuth / fit ICP (a subset of the n_points)."""
    fscore_thresholds: tuple[float, ...] = FSCORE_THRESHOLDS
    """F-score thresholds."""
    voxel_resolution: int = 32
    """Voxel grid side when the GT has no voxels and is voxelised from its mesh."""
    voxel_bound: float = 0.5
    """Voxel grids cover [-voxel_bound, voxel_bound]^3."""
    azimuth_step_deg: float = 5.0
    """Azimuth grid step of azimuth_search and global (72 candidates)."""
    global_flip: bool = False
    """Whether fit_global also tries the mirror x -> -x."""
    icp_iterations: int = 100
    """ICP iterations per initialisation."""
    icp_init_azimuths_deg: tuple[float, ...] = (0.0, 90.0, 180.0, 270.0)
    """Initial rotations about y tried by ICP."""
    icp_scale: bool = False
    """ICP fits a similarity (with scale) instead of a rigid transform."""
    seed: int = 0
    """Seed of surface sampling. Prediction and GT use the same seed, so a perfect
    prediction samples the very GT points and scores CD 0 exactly; distinct meshes
    (different face lists) get unrelated samples."""

    def __post_init__(self):
        if self.n_points < 1 or self.search_points < 1:
            raise ValueError(
                f"EvalSettings: n_points and search_points must be >= 1, got "
                f"{self.n_points}, {self.search_points}"
            )
        if self.icp_iterations < 1 or not self.icp_init_azimuths_deg:
            raise ValueError("EvalSettings: ICP needs >= 1 iteration and >= 1 initial azimuth")
        azimuth_candidates(self.azimuth_step_deg)


def _optional(x, name: str, dtype=None):
    return None if x is None else to_numpy(x, name, dtype)


def _rotation(x, name: str):
    R = _optional(x, name, np.float64)
    if R is None:
        return None
    if R.shape != (3, 3):
        raise ValueError(f"{name} must have shape (3, 3), got {R.shape}")
    if not np.allclose(R @ R.T, np.eye(3), atol=1e-4) or np.linalg.det(R) < 0:
        raise ValueError(f"{name} is not a rotation matrix (R R^T != I or det < 0)")
    return R


def _mesh(vertices, faces, name: str):
    if (vertices is None) != (faces is None):
        raise ValueError(f"{name}: give both vertices and faces or neither")
    if vertices is None:
        return None, None
    v = to_numpy(vertices, f"{name}.vertices", np.float64)
    f = to_numpy(faces, f"{name}.faces")
    if v.ndim != 2 or v.shape[1] != 3:
        raise ValueError(f"{name}.vertices must have shape (V, 3), got {v.shape}")
    if f.size == 0:
        f = np.zeros((0, 3), np.int64)
    if f.ndim != 2 or f.shape[1] != 3:
        raise ValueError(f"{name}.faces must have shape (F, 3), got {f.shape}")
    f = f.astype(np.int64)
    if len(f) and (f.min() < 0 or f.max() >= len(v)):
        raise ValueError(f"{name}.faces index vertices out of range [0, {len(v)})")
    if not np.all(np.isfinite(v)):
        raise ValueError(f"{name}.vertices hold non-finite values")
    return v, f


@dataclass(frozen=True)
class PredShape:
    """A predicted shape of one item (numpy or torch inputs are converted to numpy)."""

    vertices: np.ndarray
    """(V, 3) float mesh vertices in the prediction's canonical frame; (0, 3) if empty."""
    faces: np.ndarray
    """(F, 3) int triangles; (0, 3) if empty."""
    R: np.ndarray | None = None
    """(3, 3) predicted world->camera rotation of the input view (view_centric only)."""

    def __post_init__(self):
        v, f = _mesh(self.vertices, self.faces, "pred")
        if v is None:
            raise ValueError(
                "pred: vertices and faces are required (use empty arrays for no shape)"
            )
        object.__setattr__(self, "vertices", v)
        object.__setattr__(self, "faces", f)
        object.__setattr__(self, "R", _rotation(self.R, "pred.R"))

    @property
    def empty(self) -> bool:
        """Whether the prediction has no faces."""
        return len(self.faces) == 0


@dataclass(frozen=True)
class GTShape:
    """Ground truth of one item; any field may be missing (see ``poseless.data.prepared.GT_KEYS``)."""

    vertices: np.ndarray | None = None
    """(V, 3) float GT mesh vertices, canonical world frame."""
    faces: np.ndarray | None = None
    """(F, 3) int GT triangles."""
    voxels: np.ndarray | None = None
    """(R, R, R) bool filled occupancy indexed [x, y, z] over [-0.5, 0.5]^3."""
    points: np.ndarray | None = None
    """(P, 3) float GT surface samples (used when there is no mesh)."""
    R: np.ndarray | None = None
    """(3, 3) GT world->camera rotation of the input view (view_centric only)."""

    def __post_init__(self):
        v, f = _mesh(self.vertices, self.faces, "gt")
        object.__setattr__(self, "vertices", v)
        object.__setattr__(self, "faces", f)
        vox = _optional(self.voxels, "gt.voxels")
        if vox is not None:
            if vox.ndim != 3 or len(set(vox.shape)) != 1:
                raise ValueError(f"gt.voxels must be a cubic (R, R, R) grid, got {vox.shape}")
            vox = vox.astype(bool)
        object.__setattr__(self, "voxels", vox)
        pts = _optional(self.points, "gt.points", np.float64)
        if pts is not None and (pts.ndim != 2 or pts.shape[1] != 3):
            raise ValueError(f"gt.points must have shape (P, 3), got {pts.shape}")
        object.__setattr__(self, "points", pts)
        object.__setattr__(self, "R", _rotation(self.R, "gt.R"))

    @classmethod
    def from_gt_dict(cls, gt: dict) -> GTShape:
        """From a prepared GT npz dict (keys of ``GT_KEYS``; unknown keys are ignored)."""
        return cls(
            vertices=gt.get("vertices"),
            faces=gt.get("faces"),
            voxels=gt.get("voxels"),
            points=gt.get("points"),
            R=gt.get("R"),
        )


@dataclass(frozen=True)
class Alignment:
    """The transforms a protocol applied before measuring."""

    protocol: str
    """Protocol name (one of PROTOCOLS)."""
    criterion: str
    """What chose it: 'iou', 'cd', 'given', 'camera' (view_centric), 'identity' (empty prediction)."""
    pred_transform: np.ndarray = field(default_factory=lambda: np.eye(4))
    """(4, 4) applied to the prediction."""
    gt_transform: np.ndarray = field(default_factory=lambda: np.eye(4))
    """(4, 4) applied to the GT."""
    azimuth_rad: float = math.nan
    """Rotation about y of the prediction (azimuth_search / global; nan otherwise)."""
    flip: bool = False
    """Whether the mirror x -> -x was applied before the rotation (global)."""

    def to_dict(self) -> dict:
        """JSON-ready dict (degrees for the azimuth, nested lists for the matrices)."""
        return {
            "protocol": self.protocol,
            "criterion": self.criterion,
            "pred_transform": np.asarray(self.pred_transform).tolist(),
            "gt_transform": np.asarray(self.gt_transform).tolist(),
            "azimuth_deg": None if math.isnan(self.azimuth_rad) else math.degrees(self.azimuth_rad),
            "flip": bool(self.flip),
        }

    @classmethod
    def from_dict(cls, d: dict) -> Alignment:
        """Inverse of ``to_dict``."""
        az = d.get("azimuth_deg")
        return cls(
            protocol=d["protocol"],
            criterion=d["criterion"],
            pred_transform=np.asarray(d["pred_transform"], dtype=np.float64),
            gt_transform=np.asarray(d["gt_transform"], dtype=np.float64),
            azimuth_rad=math.nan if az is None else math.radians(az),
            flip=bool(d.get("flip", False)),
        )


def global_alignment(
    azimuth_rad: float = 0.0, flip: bool = False, criterion: str = "given"
) -> Alignment:
    """A ``global`` alignment rotating every prediction by ``azimuth_rad`` about y (after the optional mirror)."""
    return Alignment(
        GLOBAL,
        criterion,
        homogeneous(_candidate_matrix(azimuth_rad, flip)),
        np.eye(4),
        azimuth_rad,
        flip,
    )


@dataclass(frozen=True)
class ProtocolResult:
    """Metrics of one item under one protocol."""

    protocol: str
    """Protocol name."""
    metrics: dict[str, float]
    """Metric key ('iou32@global', 'cd@global', 'fscore@0.01@global', ...) -> value."""
    alignments: dict[str, Alignment]
    """Alignment used per criterion: 'iou' for the IoU, 'cd' for Chamfer and F-scores."""
    warnings: tuple[str, ...] = ()
    """Problems met (empty prediction, missing GT parts)."""


# --------------------------------------------------------------------------- shared helpers


class _Prepared:
    """Sampled points and voxels of one (pred, gt) pair, computed once."""

    def __init__(self, pred: PredShape, gt: GTShape, settings: EvalSettings):
        if not isinstance(pred, PredShape) or not isinstance(gt, GTShape):
            raise TypeError("pred must be a PredShape and gt a GTShape")
        self.pred, self.gt, self.settings = pred, gt, settings
        self.warnings: list[str] = []
        n = settings.n_points
        self.pred_points = sample_surface_points(pred.vertices, pred.faces, n, settings.seed)
        if pred.empty or len(self.pred_points) == 0:
            self.warnings.append("empty prediction (no faces or zero area)")
        if gt.vertices is not None and len(gt.faces):
            self.gt_points = sample_surface_points(gt.vertices, gt.faces, n, settings.seed)
        elif gt.points is not None:
            # shuffled, so that the first search_points are a uniform subset
            order = np.random.default_rng(settings.seed).permutation(len(gt.points))[:n]
            self.gt_points = gt.points[order]
        else:
            self.gt_points = None
        if self.gt_points is not None and len(self.gt_points) == 0:
            raise ValueError("gt: the GT mesh/points are empty; nothing to evaluate against")
        if gt.voxels is not None:
            self.gt_voxels = gt.voxels
        elif gt.vertices is not None and len(gt.faces):
            self.gt_voxels = voxelize_mesh(
                gt.vertices, gt.faces, settings.voxel_resolution, settings.voxel_bound
            )
        else:
            self.gt_voxels = None
        if self.gt_points is None and self.gt_voxels is None:
            raise ValueError("gt: needs a mesh, points or voxels to evaluate against")

    @property
    def has_pred(self) -> bool:
        return len(self.pred_points) > 0

    @property
    def resolution(self) -> int:
        return self.gt_voxels.shape[0]

    def iou(self, T: np.ndarray) -> float:
        """Voxel IoU of the prediction under the 4x4 transform T."""
        if not self.has_pred:
            return voxel_iou(np.zeros_like(self.gt_voxels), self.gt_voxels)
        v = apply_transform(self.pred.vertices, T)
        vox = voxelize_mesh(v, self.pred.faces, self.resolution, self.settings.voxel_bound)
        return voxel_iou(vox, self.gt_voxels)

    def point_metrics(self, T_pred: np.ndarray, T_gt: np.ndarray | None = None) -> dict[str, float]:
        """cd and F-score metric names -> values under the transforms."""
        gt = self.gt_points if T_gt is None else apply_transform(self.gt_points, T_gt)
        pm = point_metrics(
            apply_transform(self.pred_points, T_pred), gt, self.settings.fscore_thresholds
        )
        out = {CD: pm.cd}
        out.update({fscore_name(t): f for t, f in pm.fscore.items()})
        return out


def _result(protocol, metrics, alignments, prep: _Prepared) -> ProtocolResult:
    keyed = {metric_key(m, protocol): float(v) for m, v in metrics.items()}
    return ProtocolResult(protocol, keyed, alignments, tuple(prep.warnings))


# --------------------------------------------------------------------------- azimuth scores


def _azimuth_scores(prep: _Prepared, criterion: str, flips: tuple[bool, ...]) -> np.ndarray:
    azimuths = azimuth_candidates(prep.settings.azimuth_step_deg)
    scores = np.empty((len(flips), len(azimuths)))
    if criterion == "iou":
        if prep.gt_voxels is None:
            raise ValueError("criterion 'iou' needs GT voxels or a GT mesh")
        for i, flip in enumerate(flips):
            for j, az in enumerate(azimuths):
                scores[i, j] = prep.iou(homogeneous(_candidate_matrix(az, flip)))
        return scores
    if criterion != CD:
        raise ValueError(f"unknown criterion {criterion!r} (known: 'iou', 'cd')")
    if prep.gt_points is None:
        raise ValueError("criterion 'cd' needs GT points or a GT mesh")
    if not prep.has_pred:
        scores[:] = math.inf
        return scores
    k = prep.settings.search_points
    p, g = prep.pred_points[:k], prep.gt_points[:k]
    # Rotating the prediction by A equals rotating the GT by A^T: both trees are built once.
    p_tree, g_tree = cKDTree(p), cKDTree(g)
    for i, flip in enumerate(flips):
        for j, az in enumerate(azimuths):
            A = _candidate_matrix(az, flip)
            acc = nearest_distances(p @ A.T, None, g_tree).mean()
            comp = nearest_distances(g @ A, None, p_tree).mean()
            scores[i, j] = (acc + comp) / 2
    return scores


def azimuth_scores(
    pred: PredShape,
    gt: GTShape,
    criterion: str,
    settings: EvalSettings = EvalSettings(),
    flips: tuple[bool, ...] = (False,),
) -> np.ndarray:
    """Score of every candidate rotation about y (after the optional mirror).

    Args:
        criterion: 'iou' (voxel IoU, higher is better) or 'cd' (Chamfer on
            ``settings.search_points`` points, lower is better).
        flips: which mirror states to try.
    Returns:
        (len(flips), A) scores; column j is azimuth ``azimuth_candidates(step)[j]``.
    """
    return _azimuth_scores(_Prepared(pred, gt, settings), criterion, flips)


def azimuth_search(
    pred: PredShape, gt: GTShape, settings: EvalSettings = EvalSettings()
) -> ProtocolResult:
    """URA's oracle: per instance, the best of the 72 rotations of the prediction about y.

    The IoU is the best IoU over the azimuths (alignment 'iou'); Chamfer and the
    F-scores are measured at the azimuth with the lowest Chamfer on
    ``settings.search_points`` points (alignment 'cd'), with all points.
    """
    prep = _Prepared(pred, gt, settings)
    azimuths = azimuth_candidates(settings.azimuth_step_deg)
    metrics, alignments = {}, {}
    for criterion in ("iou", CD):
        if (criterion == "iou" and prep.gt_voxels is None) or (
            criterion == CD and prep.gt_points is None
        ):
            continue
        if not prep.has_pred:
            best = 0
        else:
            s = _azimuth_scores(prep, criterion, (False,))[0]
            best = int(np.argmax(s)) if criterion == "iou" else int(np.argmin(s))
        T = homogeneous(rotation_y(azimuths[best]))
        alignments[criterion] = Alignment(AZIMUTH_SEARCH, criterion, T, np.eye(4), azimuths[best])
        if criterion == "iou":
            metrics[iou_name(prep.resolution)] = prep.iou(T)
        else:
            metrics.update(prep.point_metrics(T))
    return _result(AZIMUTH_SEARCH, metrics, alignments, prep)


# --------------------------------------------------------------------------- global


def select_global(
    score_tables: Iterable[np.ndarray], criterion: str, settings: EvalSettings = EvalSettings()
) -> Alignment:
    """The one candidate that is best on average over items.

    Args:
        score_tables: per item, the (F, A) output of ``azimuth_scores`` with
            flips (False,) or (False, True) (the same for all items).
        criterion: 'iou' (maximise the mean) or 'cd' (minimise the mean over
            items whose scores are finite, i.e. non-empty predictions).
    Returns:
        A ``global`` alignment with that azimuth and flip.
    """
    tables = [np.asarray(t, dtype=np.float64) for t in score_tables]
    if not tables:
        raise ValueError("select_global: no score tables (no validation items)")
    shapes = {t.shape for t in tables}
    if len(shapes) != 1 or tables[0].ndim != 2:
        raise ValueError(f"select_global: score tables must share one (F, A) shape, got {shapes}")
    stack = np.stack(tables)  # (N, F, A)
    azimuths = azimuth_candidates(settings.azimuth_step_deg)
    if stack.shape[2] != len(azimuths):
        raise ValueError(
            f"select_global: {stack.shape[2]} azimuths but the settings give {len(azimuths)}"
        )
    if criterion == "iou":
        flat = int(np.argmax(stack.mean(axis=0)))
    elif criterion == CD:
        finite = np.isfinite(stack).all(axis=(1, 2))
        if not finite.any():
            raise ValueError("select_global: every validation prediction is empty")
        flat = int(np.argmin(stack[finite].mean(axis=0)))
    else:
        raise ValueError(f"unknown criterion {criterion!r} (known: 'iou', 'cd')")
    f, a = np.unravel_index(flat, stack.shape[1:])
    return global_alignment(float(azimuths[a]), bool(f == 1), criterion)


def fit_global(
    pairs: Iterable[tuple[PredShape, GTShape]],
    criterion: str = "iou",
    settings: EvalSettings = EvalSettings(),
) -> Alignment:
    """Fit the ``global`` rotation (and mirror if ``settings.global_flip``) on validation pairs.

    Each candidate is scored on every pair with ``azimuth_scores`` and the best
    on average is returned (see ``select_global``).
    """
    flips = (False, True) if settings.global_flip else (False,)
    tables = [azimuth_scores(p, g, criterion, settings, flips) for p, g in pairs]
    return select_global(tables, criterion, settings)


def evaluate_global(
    pred: PredShape, gt: GTShape, alignment: Alignment, settings: EvalSettings = EvalSettings()
) -> ProtocolResult:
    """All metrics with the prediction under one fixed (set-wide) alignment.

    ``alignment`` comes from ``fit_global`` / ``select_global`` on validation
    items or from ``global_alignment`` (e.g. the identity for methods trained in
    the GT frame).
    """
    prep = _Prepared(pred, gt, settings)
    T = np.asarray(alignment.pred_transform, dtype=np.float64)
    if T.shape != (4, 4):
        raise ValueError(f"alignment.pred_transform must be (4, 4), got {T.shape}")
    metrics = {}
    if prep.gt_voxels is not None:
        metrics[iou_name(prep.resolution)] = prep.iou(T)
    if prep.gt_points is not None:
        metrics.update(prep.point_metrics(T))
    return _result(GLOBAL, metrics, {"iou": alignment, CD: alignment}, prep)


# --------------------------------------------------------------------------- view-centric


def view_centric_transform(points: np.ndarray, R: np.ndarray) -> np.ndarray:
    """ShapeClipper's normalisation of one cloud: rotate by R, centre on the mean, scale by image extent.

    Args:
        points: (N, 3), N > 0; R: (3, 3) world->camera rotation.
    Returns:
        (4, 4) transform x -> (R x - m) / s, m the mean of R x and s = max(x-extent,
        y-extent) of R x (+1e-7, as the authors' code).
    """
    cam = points @ R.T
    m = cam.mean(axis=0)
    ext = cam.max(axis=0) - cam.min(axis=0)
    s = max(ext[0], ext[1]) + 1e-7
    return homogeneous(R / s, -m / s)


def view_centric(
    pred: PredShape, gt: GTShape, settings: EvalSettings = EvalSettings()
) -> ProtocolResult:
    """ShapeClipper's protocol: both shapes in their own camera frame, scaled by image-plane extent.

    Needs ``pred.R`` (predicted world->camera rotation) and ``gt.R``; reports
    Chamfer and F-scores (no IoU).
    """
    if pred.R is None or gt.R is None:
        raise ValueError("view_centric needs pred.R (predicted pose) and gt.R (GT pose)")
    prep = _Prepared(pred, gt, settings)
    if prep.gt_points is None:
        raise ValueError("view_centric needs GT points or a GT mesh")
    T_gt = view_centric_transform(prep.gt_points, gt.R)
    if prep.has_pred:
        T_pred = view_centric_transform(prep.pred_points, pred.R)
    else:
        T_pred = homogeneous(pred.R)
    metrics = prep.point_metrics(T_pred, T_gt)
    al = Alignment(VIEW_CENTRIC, "camera", T_pred, T_gt)
    return _result(VIEW_CENTRIC, metrics, {CD: al}, prep)


# --------------------------------------------------------------------------- ICP


def umeyama(src: np.ndarray, dst: np.ndarray, scale: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares similarity (or rigid) transform mapping src onto dst.

    Args:
        src, dst: (N, 3) corresponding points, N >= 3.
        scale: fit a uniform scale too (Umeyama) instead of a rotation only (Kabsch).
    Returns:
        A: (3, 3) = s R with det R = +1; t: (3,); dst ~ src @ A.T + t.
    """
    mu_s, mu_d = src.mean(axis=0), dst.mean(axis=0)
    xs, xd = src - mu_s, dst - mu_d
    cov = xd.T @ xs / len(src)
    U, D, Vt = np.linalg.svd(cov)
    S = np.diag([1.0, 1.0, np.sign(np.linalg.det(U) * np.linalg.det(Vt)) or 1.0])
    R = U @ S @ Vt
    s = 1.0
    if scale:
        var = (xs**2).sum(axis=1).mean()
        s = float(np.trace(np.diag(D) @ S) / var) if var > 0 else 1.0
    A = s * R
    return A, mu_d - mu_s @ A.T


def icp_fit(
    src: np.ndarray,
    dst: np.ndarray,
    init_azimuths_rad: Iterable[float] = (0.0,),
    iterations: int = 100,
    scale: bool = False,
) -> tuple[np.ndarray, float]:
    """Symmetric ICP: align cloud ``src`` onto ``dst`` from several initial rotations about y.

    Each iteration pairs every src point with its nearest dst point and every dst
    point with its nearest transformed src point, then re-fits the transform on
    all pairs (Kabsch, or Umeyama with ``scale``). Initial translations match the
    centroids. The run with the lowest final Chamfer wins.

    Args:
        src: (N, 3), dst: (M, 3) points, N, M >= 3.
    Returns:
        T: (4, 4) transform of src; cd: its Chamfer distance on these points.
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    if len(src) < 3 or len(dst) < 3:
        raise ValueError(f"icp_fit needs >= 3 points per cloud, got {len(src)} and {len(dst)}")
    s_tree, d_tree = cKDTree(src), cKDTree(dst)
    best_T, best_cd = np.eye(4), math.inf
    for az in init_azimuths_rad:
        A = rotation_y(az)
        t = dst.mean(axis=0) - src.mean(axis=0) @ A.T
        prev = math.inf
        for _ in range(iterations):
            moved = src @ A.T + t
            d1, i1 = d_tree.query(moved, workers=-1)
            back = np.linalg.solve(A, (dst - t).T).T  # dst in src coordinates
            _, i2 = s_tree.query(back, workers=-1)
            d2 = np.linalg.norm(src[i2] @ A.T + t - dst, axis=1)
            cd = (d1.mean() + d2.mean()) / 2
            A, t = umeyama(np.concatenate([src, src[i2]]), np.concatenate([dst[i1], dst]), scale)
            if prev - cd < 1e-7 * max(prev, 1e-12):
                break
            prev = cd
        moved = src @ A.T + t
        cd = (
            d_tree.query(moved, workers=-1)[0].mean()
            + cKDTree(moved).query(dst, workers=-1)[0].mean()
        ) / 2
        if cd < best_cd:
            best_T, best_cd = homogeneous(A, t), float(cd)
    return best_T, best_cd


def icp(pred: PredShape, gt: GTShape, settings: EvalSettings = EvalSettings()) -> ProtocolResult:
    """Per-instance ICP of the prediction onto the GT (rigid, or similarity with ``settings.icp_scale``).

    Fitted on ``settings.search_points`` points from ``settings.icp_init_azimuths_deg``;
    Chamfer, F-scores and (when the GT has voxels or a mesh) IoU are then measured
    with the fitted transform applied to the predicted mesh.
    """
    prep = _Prepared(pred, gt, settings)
    if prep.gt_points is None:
        raise ValueError("icp needs GT points or a GT mesh")
    T = np.eye(4)
    if len(prep.pred_points) >= 3:
        k = settings.search_points
        T, _ = icp_fit(
            prep.pred_points[:k],
            prep.gt_points[:k],
            np.radians(settings.icp_init_azimuths_deg),
            settings.icp_iterations,
            settings.icp_scale,
        )
    al = Alignment(ICP, CD, T, np.eye(4))
    metrics = {}
    if prep.gt_voxels is not None:
        metrics[iou_name(prep.resolution)] = prep.iou(T)
    metrics.update(prep.point_metrics(T))
    return _result(ICP, metrics, {"iou": al, CD: al}, prep)


# --------------------------------------------------------------------------- dispatch


def evaluate_protocol(
    pred: PredShape,
    gt: GTShape,
    protocol: str,
    settings: EvalSettings = EvalSettings(),
    alignment: Alignment | None = None,
) -> ProtocolResult:
    """Metrics of one item under one protocol (``alignment`` is required for ``global``)."""
    if protocol == AZIMUTH_SEARCH:
        return azimuth_search(pred, gt, settings)
    if protocol == GLOBAL:
        if alignment is None:
            raise ValueError(
                "protocol 'global' needs an alignment (fit_global on validation items)"
            )
        return evaluate_global(pred, gt, alignment, settings)
    if protocol == VIEW_CENTRIC:
        return view_centric(pred, gt, settings)
    if protocol == ICP:
        return icp(pred, gt, settings)
    raise ValueError(f"unknown protocol {protocol!r} (known: {PROTOCOLS})")


# --------------------------------------------------------------------------- pose


@dataclass(frozen=True)
class AzimuthOffset:
    """The set-wide azimuth correction that minimises the median error."""

    offset_rad: float
    """Offset added to the (possibly reflected) predicted azimuths."""
    reflected: bool
    """Whether predictions were reflected (a -> -a) before the offset."""
    errors_rad: np.ndarray
    """(N,) aligned absolute errors |wrap(+-pred + offset - gt)| in [0, pi]."""


def best_global_azimuth_offset(
    pred_az, gt_az, allow_reflection: bool = True, step_deg: float = 0.1
) -> AzimuthOffset:
    """One offset (and optional reflection) for all items minimising the median wrapped error.

    Learned pose estimators have their own azimuth origin (and sometimes
    direction); this finds it. Candidates: a grid of ``step_deg``; the offsets
    that make single items exact (N <= 4096); and the centres of the shortest
    circular windows holding k of those exact offsets, k around N / 2. The
    latter makes the search exact for odd N (the median is then the k-th
    smallest error, minimised at the centre of the shortest k-window); for even
    N it is within the grid step. Ties go to the lower mean error, then to no
    reflection.

    Args:
        pred_az, gt_az: (N,) azimuths in radians, N >= 1.
    """
    p = to_numpy(pred_az, "pred_az", np.float64).reshape(-1)
    g = to_numpy(gt_az, "gt_az", np.float64).reshape(-1)
    if p.shape != g.shape or len(p) == 0:
        raise ValueError(
            f"pred_az and gt_az must be non-empty and equal in length, got {p.shape}, {g.shape}"
        )
    if not (np.all(np.isfinite(p)) and np.all(np.isfinite(g))):
        raise ValueError("pred_az and gt_az must be finite")
    n = len(p)
    grid = np.radians(np.arange(0.0, 360.0, step_deg))
    best = None
    for reflected in (False, True) if allow_reflection else (False,):
        q = -p if reflected else p
        exact = np.sort(wrap_angle(g - q))  # (N,) offsets making each item exact
        cands = [grid] + ([exact] if n <= 4096 else [])
        ext = np.concatenate([exact, exact + 2 * np.pi])
        for k in sorted({n // 2, n // 2 + 1, (n + 1) // 2} - {0}):
            width = ext[np.arange(n) + k - 1] - exact  # (N,) circular windows of k items
            top = np.argsort(width)[:64]
            cands.append((exact[top] + ext[top + k - 1]) / 2)
        cands = np.concatenate(cands)
        for s in range(0, len(cands), 512):
            c = cands[s : s + 512]
            err = np.abs(wrap_angle(q[None] + c[:, None] - g[None]))  # (C, N)
            med, mean = np.median(err, axis=1), err.mean(axis=1)
            j = int(np.lexsort((mean, med))[0])
            key = (med[j], mean[j])
            if best is None or key < best[0]:
                best = (key, float(c[j]), reflected)
    _, offset, reflected = best
    q = -p if reflected else p
    errors = np.abs(wrap_angle(q + offset - g))
    return AzimuthOffset(float(wrap_angle(offset)), reflected, errors)

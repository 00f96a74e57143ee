"""Per-item evaluation of reconstructions under the alignment protocols, and its aggregation.

The ``evaluate`` stage runs, for one experiment and seed:

1. :func:`reconstruct` — the reconstructor on the scored split, in batches
   (meshes in the canonical frame, plus the predicted pose when the model has
   one), or :mod:`poseless.evaluate.external` for a folder of meshes;
2. :func:`fit_global_alignments` — the ``global`` rotation fitted on validation
   items (per category by default), or a recorded reason why it cannot be;
3. :func:`evaluate_items` — every item under every protocol
   (:func:`evaluate_item`, in a process pool when ``workers > 1``; results keep
   the item order);
4. :func:`pose_errors` — azimuth errors after the best global azimuth offset
   (per category; when the model predicts poses and the dataset has GT azimuths);
5. :func:`summarize` — per-category and overall means, :func:`flat_metrics` — the
   DVC metrics file; :func:`aggregate_seeds` — mean +/- std over seeds (report).

Metric keys always name their protocol (``align.metric_key``):
``iou32@azimuth_search``, ``cd@global``, ``fscore@0.01@view_centric``, and

* ``mask_iou@<protocol>`` — 2D IoU of the input mask with the prediction's
  silhouette at the input view. For ``view_centric`` the prediction is rendered
  at its **predicted** pose (the re-projection the model claims); for the other
  protocols the prediction, aligned as that protocol aligned it (the IoU
  alignment where there are two), is rendered at the **GT** pose. Silhouettes
  are ray cast exactly (embree through trimesh, one ray per pixel centre, the
  rays of :func:`poseless.data.synthetic.raycast.pixel_rays`), not with the
  differentiable renderer. It needs the dataset's exact camera (``meta.json``
  ``camera``, i.e. data prepared with ``crop: none``) and a GT rotation.
* ``pose_err_deg@global`` (per item), ``pose_median_deg@global``,
  ``pose_mean_deg@global``, ``pose_acc@15@global``, ... (summaries).

Empty predictions (no faces, or an unusable mesh: the reason is kept in the
item's ``error``) score IoU 0, F-score 0 and Chamfer inf. Chamfer means are over
the non-empty predictions only; ``n_empty`` is reported next to them.
"""

from __future__ import annotations

import math
import multiprocessing
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from poseless.evaluate.align import (
    AZIMUTH_SEARCH,
    CD,
    GLOBAL,
    ICP,
    VIEW_CENTRIC,
    Alignment,
    EvalSettings,
    GTShape,
    PredShape,
    apply_transform,
    azimuth_scores,
    best_global_azimuth_offset,
    evaluate_protocol,
    metric_key,
    select_global,
)
from poseless.evaluate.extract import ExtractSettings
from poseless.evaluate.metrics import mask_iou, summarize_pose_errors

ALL_CATEGORIES = "*"
"""Key of a ``global`` alignment shared by every category."""
OVERALL = "overall"
"""Group name of the all-items summary."""
MASK_IOU = "mask_iou"
"""Metric name of the 2D silhouette IoU at the input view."""


# --------------------------------------------------------------------------- settings


def eval_settings(cfg, seed: int = 0) -> EvalSettings:
    """``EvalSettings`` from an ``EvaluateConfig`` (``poseless.config``) and the run's seed."""
    return EvalSettings(
        n_points=cfg.n_points,
        search_points=min(cfg.search_points, cfg.n_points),
        fscore_thresholds=tuple(cfg.fscore_thresholds),
        azimuth_step_deg=cfg.azimuth_step_deg,
        global_flip=cfg.global_flip,
        icp_iterations=cfg.icp_iterations,
        icp_scale=cfg.icp_scale,
        seed=seed,
    )


def extract_settings(cfg) -> ExtractSettings:
    """``ExtractSettings`` (SDF models' mesh extraction) from an ``EvaluateConfig``."""
    return ExtractSettings(resolution=cfg.grid_resolution, bound=cfg.grid_bound)


# --------------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class ViewCamera:
    """The exact pinhole camera of an input view."""

    R: np.ndarray
    """(3, 3) world->camera rotation (OpenCV frame)."""
    t: np.ndarray
    """(3,) translation."""
    fov_deg: float
    """Full field of view in degrees."""


@dataclass(frozen=True)
class ItemPrediction:
    """What a method predicted for one item."""

    id: str
    """Item id."""
    vertices: np.ndarray
    """(V, 3) float mesh vertices in the method's canonical frame; (0, 3) when none."""
    faces: np.ndarray
    """(F, 3) int triangles; (0, 3) when none."""
    R: np.ndarray | None = None
    """(3, 3) predicted world->camera rotation of the input view, None when not predicted."""
    azimuth_deg: float = math.nan
    """Predicted azimuth in degrees (nan when not predicted)."""
    error: str = ""
    """Why there is no usable prediction (missing/unreadable mesh); '' when fine."""


def empty_prediction(item_id: str, error: str) -> ItemPrediction:
    """An empty prediction carrying the reason (scored as an empty shape)."""
    return ItemPrediction(
        item_id, np.zeros((0, 3), np.float32), np.zeros((0, 3), np.int64), error=error
    )


@dataclass(frozen=True)
class ItemTruth:
    """Ground truth of one item, as evaluation needs it."""

    id: str
    """Item id."""
    category: str
    """Category name."""
    gt: GTShape | None
    """3D ground truth (None: the item has none and is not scored in 3D)."""
    azimuth_deg: float = math.nan
    """GT azimuth in degrees (nan when unknown)."""
    mask: np.ndarray | None = None
    """(H, W) bool input mask (the prepared mask > 0.5)."""
    camera: ViewCamera | None = None
    """Exact camera of the input view (None: no mask IoU)."""
    camera_reason: str = ""
    """Why ``camera`` is None."""


def load_truths(dataset, ids: Sequence[str], gt_voxels: str = "mesh") -> list[ItemTruth]:
    """Ground truth, input masks and exact cameras of ``ids`` from a ``PreparedDataset``.

    ``gt_voxels``: ``mesh`` drops the dataset's voxels of items that have a GT mesh,
    so that the GT is voxelised by the very voxeliser the predictions go through
    (``voxelize.voxelize_mesh``, conservative surface cells + fill) and a perfect
    prediction scores IoU 1. The synthetic GT voxels sample cell centres instead,
    which on thin parts differs a lot (a perfect airplane mesh scores ~0.3 against
    them). ``dataset`` keeps the dataset's voxels (URA's protocol on ShapeNet,
    whose GT is voxels only).

    The camera is exact only when the prepared images keep the raw frame
    (``meta.json`` ``camera`` set, i.e. ``crop: none``); its rotation is the GT
    ``R``, its translation the GT ``t`` (else (0, 0, distance)), its field of view
    the GT ``fov_deg`` (else the meta camera's).
    """
    cam_meta = dataset.meta.get("camera")
    batch = dataset.load(list(ids))
    out = []
    for k, item_id in enumerate(ids):
        row = dataset.row(item_id)
        gt, camera, reason = None, None, ""
        if dataset.has_gt(item_id):
            g = dataset.load_gt(item_id)
            if gt_voxels not in ("mesh", "dataset"):
                raise ValueError(f"gt_voxels: unknown mode {gt_voxels!r} (known: mesh, dataset)")
            if gt_voxels == "mesh" and "vertices" in g and "faces" in g and len(g["faces"]):
                g = {k: v for k, v in g.items() if k != "voxels"}
            gt = GTShape.from_gt_dict(g)
            if not isinstance(cam_meta, dict):
                reason = "the prepared images are crops (no exact camera in meta.json)"
            elif "R" not in g:
                reason = "no GT rotation"
            else:
                t = g.get("t", np.array([0.0, 0.0, float(cam_meta["distance"])]))
                fov = float(g.get("fov_deg", cam_meta["fov_deg"]))
                camera = ViewCamera(np.asarray(g["R"], np.float64), np.asarray(t, np.float64), fov)
        else:
            reason = "no ground truth"
        out.append(
            ItemTruth(
                id=item_id,
                category=str(row["category"]),
                gt=gt,
                azimuth_deg=float(row["azimuth_deg"]),
                mask=batch.masks[k, 0].numpy() > 0.5,
                camera=camera,
                camera_reason=reason,
            )
        )
    return out


def reconstruct(
    reconstructor,
    dataset,
    ids: Sequence[str],
    batch_size: int = 16,
    progress: Callable[[Iterable], Iterable] | None = None,
) -> list[ItemPrediction]:
    """Run a ``Reconstructor`` (``poseless.train.recon``) on ``ids`` in batches.

    Returns:
        One prediction per id, in order: the mesh (canonical frame) and, when the
        model predicts a pose, its world->camera R and azimuth.
    Raises:
        ValueError: the reconstructor returned the wrong number of meshes or poses.
    """
    starts = range(0, len(ids), batch_size)
    out: list[ItemPrediction] = []
    for s in progress(starts) if progress is not None else starts:
        chunk = list(ids[s : s + batch_size])
        batch = dataset.load(chunk)
        pred = reconstructor.predict(batch.images, batch.masks)
        n = len(chunk)
        if len(pred.meshes) != n:
            raise ValueError(f"reconstructor returned {len(pred.meshes)} meshes for {n} images")
        for name, arr in (("R", pred.R), ("azimuth_deg", pred.azimuth_deg)):
            if arr is not None and len(arr) != n:
                raise ValueError(f"reconstructor returned {len(arr)} {name} for {n} images")
        for k, item_id in enumerate(chunk):
            v, f = pred.meshes[k]
            out.append(
                ItemPrediction(
                    id=item_id,
                    vertices=np.asarray(v, np.float32),
                    faces=np.asarray(f, np.int64).reshape(-1, 3),
                    R=None if pred.R is None else np.asarray(pred.R[k], np.float64),
                    azimuth_deg=math.nan
                    if pred.azimuth_deg is None
                    else float(pred.azimuth_deg[k]),
                )
            )
    return out


# --------------------------------------------------------------------------- rendering


def render_silhouette(vertices, faces, camera: ViewCamera, size: int) -> np.ndarray:
    """Exact silhouette: does the ray through each pixel centre hit the mesh?

    Args:
        vertices: (V, 3) float world coordinates; faces: (F, 3) int.
        camera: the view; size: image side H = W.
    Returns:
        (size, size) bool, row-major like the project's images.
    """
    import trimesh
    from trimesh.ray.ray_pyembree import RayMeshIntersector

    from poseless.data.synthetic.raycast import pixel_rays

    v = np.asarray(vertices, np.float64)
    f = np.asarray(faces, np.int64).reshape(-1, 3)
    if len(f) == 0:
        return np.zeros((size, size), bool)
    origins, dirs = pixel_rays(camera.R, camera.t, camera.fov_deg, size)
    mesh = trimesh.Trimesh(v, f, process=False)
    hit = RayMeshIntersector(mesh).intersects_any(origins, dirs)
    return np.asarray(hit, bool).reshape(size, size)


# --------------------------------------------------------------------------- one item


@dataclass(frozen=True)
class ItemResult:
    """Scores of one item."""

    id: str
    """Item id."""
    category: str
    """Category name."""
    metrics: dict[str, float]
    """Metric key ('iou32@azimuth_search', 'mask_iou@global', ...) -> value."""
    skipped: dict[str, str]
    """Protocol (or 'mask_iou') -> why it was not scored for this item."""
    alignments: dict[str, dict[str, dict]]
    """Protocol -> criterion ('iou', 'cd') -> ``Alignment.to_dict()``."""
    warnings: tuple[str, ...] = ()
    """Problems met (empty prediction, open meshes, ...)."""
    empty: bool = False
    """Whether the prediction had no surface."""
    error: str = ""
    """Why the prediction is unusable or the item unscored ('' when fine)."""


@dataclass(frozen=True)
class ItemTask:
    """Everything :func:`evaluate_item` needs (picklable, for the process pool)."""

    pred: ItemPrediction
    """The prediction."""
    truth: ItemTruth
    """The ground truth."""
    protocols: tuple[str, ...]
    """Protocols to run."""
    settings: EvalSettings
    """Comparison settings."""
    global_alignment: Alignment | None = None
    """The ``global`` alignment of the item's category (None: skipped)."""
    global_reason: str = ""
    """Why ``global_alignment`` is None."""


def _pred_shape(pred: ItemPrediction) -> tuple[PredShape, str]:
    try:
        return PredShape(pred.vertices, pred.faces, pred.R), pred.error
    except ValueError as exc:
        error = f"unusable prediction: {exc}"
    try:  # keep a usable pose for view_centric even when the mesh is unusable
        return PredShape(np.zeros((0, 3)), np.zeros((0, 3), np.int64), pred.R), error
    except ValueError:
        return PredShape(np.zeros((0, 3)), np.zeros((0, 3), np.int64), None), error


def _mask_alignment(protocol: str, alignments: dict[str, Alignment]) -> Alignment | None:
    if protocol == VIEW_CENTRIC:
        return None
    return alignments.get("iou") or alignments.get(CD)


def evaluate_item(task: ItemTask) -> ItemResult:
    """Score one item under every protocol of ``task`` (see the module docstring)."""
    pred, truth = task.pred, task.truth
    if truth.gt is None:
        return ItemResult(
            truth.id, truth.category, {}, {"*": "no ground truth"}, {}, error="no ground truth"
        )
    shape, error = _pred_shape(pred)
    metrics: dict[str, float] = {}
    skipped: dict[str, str] = {}
    alignments: dict[str, dict[str, dict]] = {}
    warnings: list[str] = []
    for protocol in task.protocols:
        if protocol == VIEW_CENTRIC and shape.R is None:
            skipped[protocol] = (
                "no predicted pose (the method predicts none)"
                if pred.R is None
                else "the predicted pose is not a rotation"
            )
            continue
        if protocol == VIEW_CENTRIC and truth.gt.R is None:
            skipped[protocol] = "no GT pose in the dataset"
            continue
        if protocol == GLOBAL and task.global_alignment is None:
            skipped[protocol] = task.global_reason or "no global alignment"
            continue
        res = evaluate_protocol(shape, truth.gt, protocol, task.settings, task.global_alignment)
        metrics.update(res.metrics)
        alignments[protocol] = {c: a.to_dict() for c, a in res.alignments.items()}
        warnings.extend(w for w in res.warnings if w not in warnings)
        if truth.camera is None or truth.mask is None:
            skipped[MASK_IOU] = truth.camera_reason or "no exact camera"
            continue
        if protocol == VIEW_CENTRIC:
            cam = ViewCamera(shape.R, truth.camera.t, truth.camera.fov_deg)
            verts = shape.vertices
        else:
            al = _mask_alignment(protocol, res.alignments)
            cam = truth.camera
            verts = (
                shape.vertices if al is None else apply_transform(shape.vertices, al.pred_transform)
            )
        sil = render_silhouette(verts, shape.faces, cam, truth.mask.shape[0])
        metrics[metric_key(MASK_IOU, protocol)] = mask_iou(sil, truth.mask)
    return ItemResult(
        id=truth.id,
        category=truth.category,
        metrics=metrics,
        skipped=skipped,
        alignments=alignments,
        warnings=tuple(warnings),
        empty=shape.empty,
        error=error,
    )


# --------------------------------------------------------------------------- many items


def pool_map(fn: Callable, tasks: Sequence, workers: int = 1) -> list:
    """``[fn(t) for t in tasks]``, in a spawn process pool when ``workers > 1`` (order kept)."""
    if workers <= 1 or len(tasks) <= 1:
        return [fn(t) for t in tasks]
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=min(workers, len(tasks)), mp_context=ctx) as ex:
        return list(ex.map(fn, tasks, chunksize=1))


def _scores_task(args: tuple) -> np.ndarray | None:
    pred, gt, criterion, settings, flips = args
    shape, _ = _pred_shape(pred)
    if shape.empty:
        return None
    return azimuth_scores(shape, gt, criterion, settings, flips)


def fit_global_alignments(
    preds: Sequence[ItemPrediction],
    truths: Sequence[ItemTruth],
    criterion: str,
    settings: EvalSettings,
    per_category: bool = True,
    workers: int = 1,
) -> tuple[dict[str, Alignment], dict[str, str]]:
    """Fit the ``global`` rotation on validation predictions.

    Args:
        preds, truths: validation items, aligned by position.
        criterion: 'iou' or 'cd' (see ``align.select_global``).
        per_category: one rotation per category; else one for all (key ``ALL_CATEGORIES``).
    Returns:
        alignments: category (or ``ALL_CATEGORIES``) -> Alignment;
        reasons: category -> why none could be fitted (no validation items with
        ground truth, every prediction empty).
    """
    if len(preds) != len(truths):
        raise ValueError(f"{len(preds)} predictions but {len(truths)} truths")
    flips = (False, True) if settings.global_flip else (False,)
    usable = [(p, t) for p, t in zip(preds, truths) if t.gt is not None]
    tables = pool_map(
        _scores_task, [(p, t.gt, criterion, settings, flips) for p, t in usable], workers
    )
    groups: dict[str, list[np.ndarray]] = {}
    seen: set[str] = set()
    for (_, t), table in zip(usable, tables):
        key = t.category if per_category else ALL_CATEGORIES
        seen.add(key)
        if table is not None:
            groups.setdefault(key, []).append(table)
    alignments, reasons = {}, {}
    for key in sorted(seen):
        if key not in groups:
            reasons[key] = "every validation prediction is empty"
            continue
        alignments[key] = select_global(groups[key], criterion, settings)
    return alignments, reasons


def global_for(
    category: str, alignments: dict[str, Alignment], reasons: dict[str, str]
) -> tuple[Alignment | None, str]:
    """The ``global`` alignment that applies to ``category`` (or None and why)."""
    for key in (category, ALL_CATEGORIES):
        if key in alignments:
            return alignments[key], ""
    reason = reasons.get(category) or reasons.get(ALL_CATEGORIES)
    return (
        None,
        reason or f"no validation items of category {category!r} to fit the global rotation",
    )


def evaluate_items(
    preds: Sequence[ItemPrediction],
    truths: Sequence[ItemTruth],
    protocols: Sequence[str],
    settings: EvalSettings,
    global_alignments: dict[str, Alignment] | None = None,
    global_reasons: dict[str, str] | None = None,
    workers: int = 1,
) -> list[ItemResult]:
    """:func:`evaluate_item` for every (prediction, truth) pair, in item order."""
    if len(preds) != len(truths):
        raise ValueError(f"{len(preds)} predictions but {len(truths)} truths")
    for p, t in zip(preds, truths):
        if p.id != t.id:
            raise ValueError(f"prediction {p.id!r} is paired with truth {t.id!r}")
    tasks = []
    for p, t in zip(preds, truths):
        al, reason = global_for(t.category, global_alignments or {}, global_reasons or {})
        if global_alignments is None:
            reason = "no global alignment was fitted"
        tasks.append(ItemTask(p, t, tuple(protocols), settings, al, reason))
    return pool_map(evaluate_item, tasks, workers)


# --------------------------------------------------------------------------- pose


@dataclass(frozen=True)
class PoseResult:
    """Azimuth errors after the best global azimuth offset (per category)."""

    errors_deg: dict[str, float]
    """Item id -> aligned absolute azimuth error in degrees."""
    offsets: dict[str, dict]
    """Category -> {'offset_deg', 'reflected'} of the fitted correction."""
    skipped: str = ""
    """Why there are no pose errors ('' when there are)."""


def pose_errors(
    preds: Sequence[ItemPrediction], truths: Sequence[ItemTruth], allow_reflection: bool = True
) -> PoseResult:
    """Aligned azimuth errors of items with a predicted and a GT azimuth.

    The offset (and optional reflection) is fitted per category with
    ``align.best_global_azimuth_offset`` (each category may have its own origin).
    """
    by_cat: dict[str, list[tuple[str, float, float]]] = {}
    for p, t in zip(preds, truths):
        if math.isfinite(p.azimuth_deg) and math.isfinite(t.azimuth_deg):
            by_cat.setdefault(t.category, []).append((t.id, p.azimuth_deg, t.azimuth_deg))
    if not by_cat:
        has_pred = any(math.isfinite(p.azimuth_deg) for p in preds)
        why = "no GT azimuths in the dataset" if has_pred else "the method predicts no pose"
        return PoseResult({}, {}, why)
    errors, offsets = {}, {}
    for cat in sorted(by_cat):
        ids, pa, ga = zip(*by_cat[cat])
        off = best_global_azimuth_offset(np.radians(pa), np.radians(ga), allow_reflection)
        offsets[cat] = {"offset_deg": math.degrees(off.offset_rad), "reflected": off.reflected}
        errors.update(zip(ids, np.degrees(off.errors_rad).tolist()))
    return PoseResult(errors, offsets)


def azimuth_from_rotation(R) -> float:
    """Azimuth in degrees [0, 360) of a Kato look-at camera from its world->camera R (3, 3).

    The camera looks along its +z axis, world direction ``R[2]``; the eye lies
    opposite, ``eye ~ -R[2] = (cosE sinA, sinE, -cosE cosA)``.
    """
    R = np.asarray(R, np.float64)
    e = -R[2]
    return float(np.degrees(np.arctan2(e[0], -e[2])) % 360.0)


# --------------------------------------------------------------------------- aggregation


def _mean_block(rows: list[dict[str, float]], n_empty: int, n_errors: int, n: int) -> dict:
    keys = sorted({k for r in rows for k in r})
    means, counts = {}, {}
    for k in keys:
        vals = np.array([r[k] for r in rows if k in r], np.float64)
        finite = vals[np.isfinite(vals)]
        counts[k] = int(len(finite))
        means[k] = float(finite.mean()) if len(finite) else math.nan
    return {
        "n_items": n,
        "n_empty": n_empty,
        "n_errors": n_errors,
        "metrics": means,
        "counts": counts,
    }


def summarize(
    results: Sequence[ItemResult],
    pose: PoseResult | None = None,
    pose_thresholds_deg: tuple[float, ...] = (15.0, 30.0),
) -> dict:
    """Per-category and overall means.

    Returns:
        {'overall': block, 'per_category': {category: block}, 'skipped': {protocol: reason}}
        with block = {'n_items', 'n_empty', 'n_errors', 'metrics': {key: mean}, 'counts':
        {key: items averaged}}. Means skip non-finite values (Chamfer of empty
        predictions): read them with ``n_empty``. Pose summaries (``pose_median_deg@global``,
        ``pose_acc@15@global``, ...) join the metrics when ``pose`` has errors.
    """
    pose_err = pose.errors_deg if pose is not None else {}
    groups: dict[str, list[ItemResult]] = {OVERALL: list(results)}
    for r in results:
        groups.setdefault(f"cat:{r.category}", []).append(r)
    blocks = {}
    for name, items in groups.items():
        rows = []
        for r in items:
            row = dict(r.metrics)
            if r.id in pose_err:
                row[metric_key("pose_err_deg", GLOBAL)] = pose_err[r.id]
            rows.append(row)
        block = _mean_block(
            rows, sum(r.empty for r in items), sum(bool(r.error) for r in items), len(items)
        )
        errs = [pose_err[r.id] for r in items if r.id in pose_err]
        if errs:
            ps = summarize_pose_errors(np.radians(errs), pose_thresholds_deg)
            block["metrics"][metric_key("pose_median_deg", GLOBAL)] = ps.median_deg
            block["metrics"][metric_key("pose_mean_deg", GLOBAL)] = ps.mean_deg
            for t, acc in ps.accuracy.items():
                block["metrics"][metric_key(f"pose_acc@{t:g}", GLOBAL)] = acc
            block["metrics"].pop(metric_key("pose_err_deg", GLOBAL), None)
            block["counts"].pop(metric_key("pose_err_deg", GLOBAL), None)
        blocks[name] = block
    skipped: dict[str, str] = {}
    for r in results:
        for proto, reason in r.skipped.items():
            skipped.setdefault(proto, reason)
    if pose is not None and pose.skipped:
        skipped["pose"] = pose.skipped
    return {
        OVERALL: blocks[OVERALL],
        "per_category": {k[4:]: v for k, v in sorted(blocks.items()) if k.startswith("cat:")},
        "skipped": skipped,
    }


def flat_metrics(summary: dict) -> dict[str, float]:
    """The DVC metrics file: ``overall/iou32@azimuth_search``, ``chair/n_empty``, ... (finite values only)."""
    out: dict[str, float] = {}
    groups = {OVERALL: summary[OVERALL], **summary.get("per_category", {})}
    for name, block in groups.items():
        for k in ("n_items", "n_empty", "n_errors"):
            out[f"{name}/{k}"] = int(block[k])
        for k, v in sorted(block["metrics"].items()):
            if math.isfinite(v):
                out[f"{name}/{k}"] = float(v)
    return out


def per_item_rows(results: Sequence[ItemResult], pose: PoseResult | None = None) -> list[dict]:
    """Rows of per_item.csv: id, category, empty, error, warnings, then every metric key (sorted)."""
    keys = sorted({k for r in results for k in r.metrics})
    pose_key = metric_key("pose_err_deg", GLOBAL)
    if pose is not None and pose.errors_deg:
        keys.append(pose_key)
    rows = []
    for r in results:
        row = {
            "id": r.id,
            "category": r.category,
            "empty": bool(r.empty),
            "error": r.error,
            "warnings": "; ".join(r.warnings),
        }
        for k in keys:
            row[k] = r.metrics.get(k, math.nan)
        if pose is not None and pose.errors_deg:
            row[pose_key] = pose.errors_deg.get(r.id, math.nan)
        rows.append(row)
    return rows


@dataclass(frozen=True)
class SeedStat:
    """One metric over seeds."""

    mean: float
    """Mean over the seeds that have the metric."""
    std: float
    """Sample standard deviation (ddof 1); nan with a single seed."""
    n: int
    """Number of seeds."""
    values: tuple[float, ...] = field(default=())
    """Per-seed values, in seed order."""


def aggregate_seeds(summaries: Sequence[dict]) -> dict[str, dict[str, SeedStat]]:
    """Mean +/- std over seeds of every group's metrics (and n_empty).

    Args:
        summaries: ``summarize`` outputs (summary.json) of one experiment, one per seed.
    Returns:
        group ('overall' or a category) -> metric key -> SeedStat.
    """
    if not summaries:
        raise ValueError("aggregate_seeds: no summaries")
    values: dict[str, dict[str, list[float]]] = {}
    for s in summaries:
        groups = {OVERALL: s[OVERALL], **s.get("per_category", {})}
        for name, block in groups.items():
            g = values.setdefault(name, {})
            for k, v in block["metrics"].items():
                g.setdefault(k, []).append(math.nan if v is None else float(v))
            g.setdefault("n_empty", []).append(float(block["n_empty"]))
    out: dict[str, dict[str, SeedStat]] = {}
    for name, metrics in values.items():
        out[name] = {}
        for k, vals in metrics.items():
            arr = np.array([v for v in vals if math.isfinite(v)])
            mean = float(arr.mean()) if len(arr) else math.nan
            std = float(arr.std(ddof=1)) if len(arr) > 1 else math.nan
            out[name][k] = SeedStat(mean, std, len(arr), tuple(vals))
    return out


PROTOCOL_ORDER = (AZIMUTH_SEARCH, GLOBAL, VIEW_CENTRIC, ICP)
"""Display order of protocols."""


# --------------------------------------------------------------------------- outputs

PER_ITEM_FILE = "per_item.csv"
"""Per-item metrics table in the evaluation folder."""
SUMMARY_FILE = "summary.json"
"""Per-category and overall summary in the evaluation folder."""
ALIGNMENTS_FILE = "alignments.json"
"""The global alignments and every item's per-protocol alignments."""
SAMPLES_FILE = "samples.json"
"""Sample items (meshes/<id>.obj) and how to render them from the input view."""


def obj_text(vertices, faces) -> str:
    """Wavefront OBJ text of a triangle mesh (deterministic: fixed float format, 1-based faces).

    Args:
        vertices: (V, 3) float; faces: (F, 3) int.
    """
    v = np.asarray(vertices, np.float64).reshape(-1, 3)
    f = np.asarray(faces, np.int64).reshape(-1, 3) + 1
    lines = [f"v {a:.6f} {b:.6f} {c:.6f}" for a, b, c in v]
    lines += [f"f {a} {b} {c}" for a, b, c in f]
    return "\n".join(lines) + "\n"


def input_view(pred: ItemPrediction, truth: ItemTruth, result: ItemResult) -> dict | None:
    """How to render a prediction as seen from its input view (for the report).

    The predicted pose when there is one; else the GT pose with the prediction
    aligned by ``azimuth_search`` (or ``global``); None without an exact camera.
    Returns {'R', 't', 'fov_deg', 'pred_transform' (4x4), 'source'} as lists.
    """
    cam = truth.camera
    if cam is None:
        return None
    if pred.R is not None:
        T, R, src = np.eye(4), np.asarray(pred.R), "predicted pose"
    else:
        for proto in (AZIMUTH_SEARCH, GLOBAL, ICP):
            al = result.alignments.get(proto, {})
            chosen = al.get("iou") or al.get(CD)
            if chosen is not None:
                T, R, src = (
                    np.asarray(chosen["pred_transform"]),
                    cam.R,
                    f"GT pose, aligned by {proto}",
                )
                break
        else:
            return None
    return {
        "R": np.asarray(R).tolist(),
        "t": np.asarray(cam.t).tolist(),
        "fov_deg": float(cam.fov_deg),
        "pred_transform": np.asarray(T).tolist(),
        "source": src,
    }


def finite_or_none(obj):
    """A copy of nested dicts/lists with nan and inf floats replaced by None (strict JSON)."""
    if isinstance(obj, dict):
        return {k: finite_or_none(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [finite_or_none(v) for v in obj]
    if isinstance(obj, float | np.floating):
        return float(obj) if math.isfinite(obj) else None
    return obj


def write_evaluation(
    out_dir,
    preds: Sequence[ItemPrediction],
    truths: Sequence[ItemTruth],
    results: Sequence[ItemResult],
    summary: dict,
    pose: PoseResult,
    global_alignments: dict[str, Alignment],
    sample_meshes: int = 8,
) -> None:
    """Write per_item.csv, summary.json, alignments.json, samples.json and meshes/<id>.obj.

    ``out_dir`` is an existing folder (the stage fills a temporary one and renames it).
    Sample meshes are the first ``sample_meshes`` items with a non-empty prediction.
    """
    from pathlib import Path

    import pandas as pd

    from poseless.utils import write_json_atomic, write_text_atomic

    out = Path(out_dir)
    rows = per_item_rows(results, pose)
    frame = pd.DataFrame(rows)
    write_text_atomic(out / PER_ITEM_FILE, frame.to_csv(index=False, float_format="%.6g"))
    write_json_atomic(out / SUMMARY_FILE, finite_or_none(summary))
    write_json_atomic(
        out / ALIGNMENTS_FILE,
        {
            "global": {k: a.to_dict() for k, a in sorted(global_alignments.items())},
            "pose_offsets": pose.offsets,
            "items": {r.id: r.alignments for r in results},
        },
    )
    samples = []
    for p, t, r in zip(preds, truths, results):
        if len(samples) >= sample_meshes:
            break
        if r.empty or r.error or len(p.faces) == 0:
            continue
        rel = f"meshes/{p.id}.obj"
        (out / "meshes").mkdir(exist_ok=True)
        write_text_atomic(out / rel, obj_text(p.vertices, p.faces))
        samples.append(
            {
                "id": p.id,
                "category": t.category,
                "mesh": rel,
                "azimuth_deg": None if math.isnan(p.azimuth_deg) else p.azimuth_deg,
                "gt_azimuth_deg": None if math.isnan(t.azimuth_deg) else t.azimuth_deg,
                "input_view": input_view(p, t, r),
                "metrics": r.metrics,
            }
        )
    write_json_atomic(out / SAMPLES_FILE, finite_or_none({"samples": samples}))

"""Adapter ``pascal3d``: the ImageNet subset of Pascal3D+ (release 1.1) with object masks.

Layout::

    Images/{class}_imagenet/{stem}.JPEG
    Annotations/{class}_imagenet/{stem}.mat   struct ``record`` with ``objects`` (1 x n struct):
        class, bbox [x1 y1 x2 y2] (1-based pixels), truncated, occluded, difficult,
        cad_index (1-based), viewpoint {azimuth, elevation, distance, theta, px, py,
        focal, viewport, ...} (degrees; ``distance`` 0 = only a coarse viewpoint)
    CAD/{class}.mat                           struct array ``{class}`` with vertices, faces (1-based)
      or CAD/{class}/{NN}.off                 one OFF file per CAD model (NN = cad_index, 2 digits)
    <mask_dir>/{class}/{stem}_{k}.png         mask of object k (0-based), SDF-SRN/ShapeClipper style

Pascal3D+ has no masks: ``mask_dir`` must point at externally made masks.

Camera (derived from the Pascal3D+ toolbox ``project_3d.m``): the CAD frame is
z-up; the camera centre is ``C = d (cosE sinA, -cosE cosA, sinE)``; with
``R_p = Rx(E - pi/2) Rz(-A)`` the camera coordinates ``X_c = R_p (X - C)``
project as ``x = f X_cx / -X_cz``, ``y = f X_cy / -X_cz`` (f = focal * viewport),
then an in-plane rotation by ``theta`` and ``u = x' + px``, ``v = -y' + py``.
The camera at azimuth 0 sits on -y and sees +x on the right (a proper camera).

Ours: the proper rotation ``PASCAL_TO_WORLD`` (x -> -x, z -> y, y -> z) takes
the z-up CAD frame to our y-up world; it maps the Pascal camera at (A, E) to
our Kato eye at azimuth ``-A``, elevation ``E``. Whether azimuth 0 shows each
class's front (our -z convention) is *assumed* from the dataset's definition.
GT ``R, t`` are exact for the full image with focal ``focal * viewport`` pixels
and principal point (px, py) (:func:`pascal_pose_to_ours`).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import scipy.io

from poseless.config import Pascal3dConfig
from poseless.data.adapters import Rejected
from poseless.data.images import load_image, load_mask
from poseless.data.pix3d import normalize_mesh
from poseless.data.prepared import SPLITS, DatasetError
from poseless.data.raw import RawItem
from poseless.errors import BadItemError

PASCAL_TO_WORLD = np.array([[-1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
"""Proper rotation (rows): Pascal3D+ CAD frame (z up) -> our world (y up)."""
OBJECT_FIELDS = ("class", "bbox", "viewpoint", "cad_index")
"""Fields every annotation object must have."""


def _rz(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _rx(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def pascal_pose_to_ours(
    azimuth_deg: float,
    elevation_deg: float,
    distance: float,
    theta_deg: float,
    center: np.ndarray,
    scale: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Pascal3D+ viewpoint -> our world->camera (R, t) for the normalised CAD model.

    Args:
        azimuth_deg, elevation_deg, distance, theta_deg: the annotation's viewpoint.
        center: (3,) and scale: normalisation of the CAD model *in our frame*
            (``v_ours = (PASCAL_TO_WORLD @ v_pascal - center) / scale``).
    Returns:
        R: (3, 3) float32 proper rotation, t: (3,) float32, so that
        ``x_cv = R v_ours + t`` is the OpenCV camera frame (up to the factor
        ``scale``), projected with focal ``focal * viewport`` px at (px, py).
    """
    a, e, th = (math.radians(x) for x in (azimuth_deg, elevation_deg, theta_deg))
    C = distance * np.array([math.cos(e) * math.sin(a), -math.cos(e) * math.cos(a), math.sin(e)])
    R_p = _rx(e - math.pi / 2) @ _rz(-a)
    flip = np.diag([1.0, -1.0, -1.0])  # toolbox camera (x right, y up, z back) -> OpenCV
    c, s = math.cos(th), math.sin(th)
    roll = np.array([[c, s, 0.0], [-s, c, 0.0], [0.0, 0.0, 1.0]])  # theta in y-down image axes
    R = roll @ flip @ R_p @ PASCAL_TO_WORLD.T
    C_ours = (PASCAL_TO_WORLD @ C - center) / scale
    t = -R @ C_ours
    return R.astype(np.float32), t.astype(np.float32)


def _field(obj, name: str, where: str):
    if not hasattr(obj, name):
        raise DatasetError(f"{where}: annotation object lacks field {name!r}")
    return getattr(obj, name)


def _scalar(value, name: str, where: str, default: float | None = None) -> float:
    arr = np.asarray(value, dtype=object).reshape(-1)
    if arr.size == 0:
        if default is not None:
            return default
        raise BadItemError(where, f"{name} is empty")
    try:
        return float(arr[0])
    except (TypeError, ValueError):
        raise BadItemError(where, f"{name} is not a number: {arr[0]!r}") from None


def read_annotation(path: Path) -> list:
    """``record.objects`` of a Pascal3D+ annotation file as a list of mat_structs."""
    if not path.is_file():
        raise BadItemError(path, "annotation file not found")
    try:
        mat = scipy.io.loadmat(path, squeeze_me=True, struct_as_record=False)
    except Exception as exc:  # noqa: BLE001 - any reader failure is a bad file
        raise BadItemError(path, f"cannot read .mat ({exc or type(exc).__name__})") from None
    if "record" not in mat:
        raise BadItemError(
            path, f"no 'record' variable (found {sorted(k for k in mat if not k.startswith('__'))})"
        )
    record = mat["record"]
    if not hasattr(record, "objects"):
        raise BadItemError(path, "record has no 'objects' field")
    return list(np.atleast_1d(record.objects))


class CadModels:
    """Normalised CAD models of one class, loaded on first use."""

    def __init__(self, root: Path, cls: str):
        self.root = root
        self.cls = cls
        self._models: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray, float]] = {}
        self._mat = None

    def _raw(self, index: int) -> tuple[np.ndarray, np.ndarray, Path]:
        mat_path = self.root / "CAD" / f"{self.cls}.mat"
        off_path = self.root / "CAD" / self.cls / f"{index:02d}.off"
        if mat_path.is_file():
            if self._mat is None:
                try:
                    mat = scipy.io.loadmat(mat_path, squeeze_me=True, struct_as_record=False)
                except Exception as exc:  # noqa: BLE001
                    raise DatasetError(f"{mat_path}: cannot read .mat ({exc})") from None
                if self.cls not in mat:
                    raise DatasetError(f"{mat_path}: no variable {self.cls!r}")
                self._mat = np.atleast_1d(mat[self.cls])
            if not 1 <= index <= len(self._mat):
                raise BadItemError(mat_path, f"cad_index {index} outside 1..{len(self._mat)}")
            m = self._mat[index - 1]
            v = np.asarray(m.vertices, dtype=np.float64)
            f = np.asarray(m.faces, dtype=np.int64) - 1
            return v, f, mat_path
        if off_path.is_file():
            import trimesh

            try:
                mesh = trimesh.load(off_path, force="mesh", process=False)
            except Exception as exc:  # noqa: BLE001
                raise BadItemError(off_path, f"cannot read CAD model ({exc})") from None
            return np.asarray(mesh.vertices, float), np.asarray(mesh.faces, np.int64), off_path
        raise BadItemError(mat_path, f"CAD model {index} not found (nor {off_path})")

    def get(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
        """(vertices (V, 3) float32 normalised in our frame, faces (F, 3) int32, centre, scale)."""
        if index not in self._models:
            v, f, path = self._raw(index)
            if v.ndim != 2 or v.shape[1] != 3 or f.ndim != 2 or f.shape[1] != 3 or len(f) == 0:
                raise BadItemError(
                    path, f"CAD model {index}: bad vertices {v.shape} / faces {f.shape}"
                )
            if f.min() < 0 or f.max() >= len(v):
                raise BadItemError(path, f"CAD model {index}: face index out of range")
            vn, c, s = normalize_mesh(v @ PASCAL_TO_WORLD.T)
            self._models[index] = (vn, f.astype(np.int32), c, s)
        return self._models[index]


def read_split_lists(folder: Path, cls: str) -> dict[tuple[str, int], str]:
    """(stem, object index) -> split from ``pascal3d_imagenet_{cls}_{split}.list`` files."""
    if not folder.is_dir():
        raise FileNotFoundError(f"pascal3d.split_lists: {folder}: folder not found")
    out: dict[tuple[str, int], str] = {}
    found = False
    for split in SPLITS:
        f = folder / f"pascal3d_imagenet_{cls}_{split}.list"
        if not f.is_file():
            continue
        found = True
        for n, line in enumerate(f.read_text().splitlines(), start=1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 2 or not parts[1].isdigit():
                raise DatasetError(f"{f}:{n}: expected '<image stem> <object index>', got {line!r}")
            out[(parts[0], int(parts[1]))] = split
    if not found:
        raise FileNotFoundError(f"{folder}: no pascal3d_imagenet_{cls}_{{train,val,test}}.list")
    return out


def read_object(
    cfg: Pascal3dConfig,
    cls: str,
    stem: str,
    k: int,
    obj,
    split: str | None,
    cads: CadModels | None,
    where: str,
) -> RawItem:
    """Object k of image ``stem`` -> RawItem (BadItemError naming the file and problem)."""
    root = Path(cfg.root)
    img_path = root / "Images" / f"{cls}_imagenet" / f"{stem}.JPEG"
    mask_path = Path(cfg.mask_dir) / cls / f"{stem}_{k}.png"
    rgb = load_image(img_path).rgb
    mask = load_mask(mask_path)
    h, w = rgb.shape[:2]
    if mask.shape != (h, w):
        raise BadItemError(mask_path, f"mask is {mask.shape[1]}x{mask.shape[0]} px, image {w}x{h}")
    bbox = np.asarray(_field(obj, "bbox", where), dtype=np.float64).reshape(-1)
    if bbox.shape != (4,):
        raise BadItemError(where, f"bbox must have 4 numbers, got {bbox.tolist()}")
    x1, y1, x2, y2 = bbox
    if not (x2 > x1 and y2 > y1):
        raise BadItemError(where, f"bbox {bbox.tolist()} is empty or inverted")
    if x1 < 0 or y1 < 0 or x2 > w + 1 or y2 > h + 1:
        raise BadItemError(where, f"bbox {bbox.tolist()} lies outside the {w}x{h} px image")
    vp = _field(obj, "viewpoint", where)
    gt: dict[str, np.ndarray] = {}
    az = el = dist = math.nan
    distance = _scalar(getattr(vp, "distance", []), "viewpoint.distance", where, default=0.0)
    if distance > 0:
        a = _scalar(_field(vp, "azimuth", where), "viewpoint.azimuth", where)
        e = _scalar(_field(vp, "elevation", where), "viewpoint.elevation", where)
        th = _scalar(getattr(vp, "theta", 0.0), "viewpoint.theta", where, default=0.0)
        focal = _scalar(getattr(vp, "focal", 1.0), "viewpoint.focal", where, default=1.0)
        viewport = _scalar(getattr(vp, "viewport", 3000.0), "viewpoint.viewport", where, 3000.0)
        az, el = (-a) % 360.0, e
        gt["fov_deg"] = np.float32(math.degrees(2 * math.atan(w / 2 / (focal * viewport))))
        center, scale = np.zeros(3), 1.0
        if cads is not None:
            index = int(_scalar(_field(obj, "cad_index", where), "cad_index", where))
            verts, faces, center, scale = cads.get(index)
            gt.update(vertices=verts, faces=faces)
        R, t = pascal_pose_to_ours(a, e, distance, th, center, scale)
        gt.update(R=R, t=t)
        dist = distance / scale
    return RawItem(
        id=f"p3d_{cls}_{stem}_{k}",
        category=cls,
        source=f"{img_path} (object {k})",
        rgb=rgb,
        mask=mask,
        split=split,
        instance=f"p3d_{cls}_{stem}_{k}",
        azimuth_deg=az,
        elevation_deg=el,
        distance=dist,
        gt=gt,
    )


def _flag(obj, name: str) -> bool:
    value = getattr(obj, name, 0)
    arr = np.asarray(value).reshape(-1)
    return bool(arr.size and float(arr[0]))


def iter_items(cfg: Pascal3dConfig, seed: int) -> Iterator[RawItem | Rejected]:
    """Raw Pascal3D+ ImageNet objects of the configured classes, by class then file name.

    Args:
        cfg: adapter settings; seed: unused.
    Yields:
        RawItem per kept object, ``gt`` = {vertices, faces, R, t, fov_deg} when a
        fine viewpoint exists; Rejected for unreadable files, missing masks, bad boxes.
    Raises:
        FileNotFoundError / DatasetError: missing folders or split lists.
    """
    del seed
    root = Path(cfg.root)
    if not root.is_dir():
        raise FileNotFoundError(f"pascal3d.root: {root}: folder not found")
    if not Path(cfg.mask_dir).is_dir():
        raise FileNotFoundError(
            f"pascal3d.mask_dir: {cfg.mask_dir}: folder not found (Pascal3D+ has no masks; "
            "provide {class}/{image stem}_{object index}.png object masks)"
        )
    for cls in cfg.categories:
        ann_dir = root / "Annotations" / f"{cls}_imagenet"
        if not ann_dir.is_dir():
            raise FileNotFoundError(f"{ann_dir}: Pascal3D+ annotation folder not found")
        splits = read_split_lists(Path(cfg.split_lists), cls) if cfg.split_lists else None
        cads = CadModels(root, cls) if cfg.load_models else None
        for ann_path in sorted(ann_dir.glob("*.mat")):
            stem = ann_path.stem
            try:
                objects = read_annotation(ann_path)
            except BadItemError as exc:
                yield Rejected(f"p3d_{cls}_{stem}", exc.path, exc.problem)
                continue
            for k, obj in enumerate(objects):
                where = f"{ann_path} (object {k})"
                missing = [f for f in OBJECT_FIELDS if not hasattr(obj, f)]
                if missing:
                    yield Rejected(f"p3d_{cls}_{stem}_{k}", where, f"object lacks fields {missing}")
                    continue
                if str(getattr(obj, "class", "")) != cls:
                    continue
                if cfg.drop_truncated and _flag(obj, "truncated"):
                    continue
                if cfg.drop_occluded and _flag(obj, "occluded"):
                    continue
                if cfg.drop_difficult and _flag(obj, "difficult"):
                    continue
                split = None
                if splits is not None:
                    split = splits.get((stem, k))
                    if split is None:
                        continue
                try:
                    yield read_object(cfg, cls, stem, k, obj, split, cads, where)
                except BadItemError as exc:
                    yield Rejected(f"p3d_{cls}_{stem}_{k}", exc.path, exc.problem)

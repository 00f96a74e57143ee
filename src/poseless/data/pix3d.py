"""Adapter ``pix3d``: Pix3D (Sun et al. 2018) images, masks, CAD models and poses.

Layout (as unpacked from ``pix3d.zip``)::

    pix3d.json              list of entries (img, mask, model, category, bbox, rot_mat, ...)
    img/{category}/*.jpg|png
    mask/{category}/*.png
    model/{category}/{model}/model.obj

Frames (from the Pix3D README and its Blender rendering demo ``demo.py``):

* **Model frame**: "+x leftward, +y upward, +z inward, in canonical view", i.e.
  the canonical front faces -z and a viewer in front sees +x on their left.
  That is exactly our world frame (``poseless.geometry.cameras``: y up, front
  towards the Kato camera at azimuth 0, which sits on -z and, being a right-handed
  OpenCV camera, sees +x on the left). **The Pix3D -> ours axis change is the
  identity**; we only centre the model on its bounding-box centre ``c`` and
  divide by its longest side ``s`` so that it fits [-0.5, 0.5]^3.
* **Camera** (derived from ``demo.py``): the object gets world matrix
  ``T(trans_mat) @ R(rot_mat)`` (the OBJ importer's axis conversion is
  overwritten), the camera sits at the origin with Euler rotation (0, pi, 0),
  so it looks along +z with +y up and +x on the image *left*; the focal length
  is ``focal_length`` mm on a 32 mm wide sensor. In OpenCV terms
  ``x_cv = D (rot_mat @ v + trans_mat)`` with ``D = diag(-1, -1, 1)``, and the
  pixel focal length is ``focal_length / 32 * width``, principal point the image
  centre. With ``v = s v_ours + c``: ``R = D rot_mat`` and
  ``t = D (rot_mat c + trans_mat) / s`` (:func:`pix3d_pose_to_ours`).
* ``cam_position`` ("camera looking at the object centre, up +y, in the model
  frame") gives the item's azimuth/elevation in our Kato convention
  (``eye = (d cosE sinA, d sinE, -d cosE cosA)``), distance in normalised units.

Splits: with ``split_lists`` set, the ShapeClipper-style lists
``{category}_{train|val|test}.txt`` decide (each line an image stem, file name or
``img/...`` path); entries listed in none are left out. Without lists, items
come without a split and ``prepare_data`` assigns one from a hash of the id.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from poseless.config import Pix3dConfig
from poseless.data.adapters import Rejected
from poseless.data.images import load_image, load_mask
from poseless.data.prepared import SPLITS, DatasetError
from poseless.data.raw import RawItem
from poseless.errors import BadItemError

PIX3D_SENSOR_WIDTH_MM = 32.0
"""Sensor width Pix3D's focal lengths refer to."""
PIX3D_TO_CV = np.diag([-1.0, -1.0, 1.0])
"""Pix3D/Blender camera (x left, y up, z forward) -> OpenCV camera (x right, y down, z forward)."""
REQUIRED_KEYS = ("img", "mask", "model", "category", "bbox", "rot_mat", "trans_mat", "focal_length")
"""Keys every pix3d.json entry must have."""


def normalize_mesh(vertices: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Centre on the bounding-box centre and scale the longest side to 1.

    Args:
        vertices: (V, 3) float.
    Returns:
        (V, 3) float32 in [-0.5, 0.5]^3, centre c (3,) and scale s with ``v = s v_out + c``.
    """
    lo, hi = vertices.min(0), vertices.max(0)
    c = (lo + hi) / 2.0
    s = float((hi - lo).max())
    if not s > 0:
        raise ValueError("mesh has zero extent")
    return ((vertices - c) / s).astype(np.float32), c, s


def pix3d_pose_to_ours(
    rot_mat: np.ndarray, trans_mat: np.ndarray, center: np.ndarray, scale: float
) -> tuple[np.ndarray, np.ndarray]:
    """Pix3D object pose -> our world->camera (R, t) for the normalised model.

    Args:
        rot_mat: (3, 3), trans_mat: (3,) from pix3d.json; center (3,), scale: from
            :func:`normalize_mesh`.
    Returns:
        R: (3, 3) float32 proper rotation, t: (3,) float32, with
        ``x_cv = R v_ours + t`` up to the factor ``scale`` (projection unchanged).
    """
    R = PIX3D_TO_CV @ rot_mat
    t = PIX3D_TO_CV @ (rot_mat @ center + trans_mat) / scale
    return R.astype(np.float32), t.astype(np.float32)


def fov_from_focal(focal_mm: float) -> float:
    """Horizontal full field of view (degrees) of a ``focal_mm`` lens on the 32 mm sensor."""
    return math.degrees(2.0 * math.atan(PIX3D_SENSOR_WIDTH_MM / 2.0 / focal_mm))


def spherical_from_eye(eye: np.ndarray) -> tuple[float, float, float]:
    """Camera centre (3,) in our world -> (azimuth deg in [0, 360), elevation deg, distance)."""
    d = float(np.linalg.norm(eye))
    if d == 0:
        return math.nan, math.nan, math.nan
    az = math.degrees(math.atan2(eye[0], -eye[2])) % 360.0
    el = math.degrees(math.asin(max(-1.0, min(1.0, eye[1] / d))))
    return az, el, d


def _flag(value) -> bool:
    """pix3d.json flags are JSON booleans or the strings "true"/"false"."""
    if isinstance(value, str):
        return value.strip().lower() == "true"
    return bool(value)


def read_annotations(path: Path) -> list[dict]:
    """Entries of pix3d.json; FileNotFoundError / DatasetError when unusable."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: Pix3D annotation file not found")
    try:
        entries = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DatasetError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise DatasetError(f"{path}: expected a JSON list of objects")
    return entries


def _list_key(category: str, line: str) -> tuple[str, str]:
    """(category, image stem) of a split-list line or an ``img`` path."""
    return category, Path(line.strip()).stem


def read_split_lists(folder: Path, categories: tuple[str, ...]) -> dict[tuple[str, str], str]:
    """(category, image stem) -> split from ``{category}_{split}.txt`` files.

    A category needs at least one list file; a missing one raises FileNotFoundError.
    """
    if not folder.is_dir():
        raise FileNotFoundError(f"pix3d.split_lists: {folder}: folder not found")
    out: dict[tuple[str, str], str] = {}
    for cat in categories:
        found = False
        for split in SPLITS:
            f = folder / f"{cat}_{split}.txt"
            if not f.is_file():
                continue
            found = True
            for line in f.read_text().splitlines():
                if not line.strip():
                    continue
                key = _list_key(cat, line)
                if key in out and out[key] != split:
                    raise DatasetError(f"{f}: {line.strip()!r} is also listed in {out[key]}")
                out[key] = split
        if not found:
            raise FileNotFoundError(
                f"{folder}: no split list for category {cat!r} "
                f"(expected {cat}_train.txt / {cat}_val.txt / {cat}_test.txt)"
            )
    return out


def _matrix(entry: dict, key: str, shape: tuple[int, ...], where: str) -> np.ndarray:
    try:
        arr = np.asarray(entry[key], dtype=np.float64)
    except (TypeError, ValueError):
        raise BadItemError(where, f"{key}: not numeric: {entry[key]!r}") from None
    if arr.shape != shape or not np.isfinite(arr).all():
        raise BadItemError(where, f"{key}: expected finite {shape}, got {arr.shape}")
    return arr


def check_bbox(bbox: np.ndarray, width: int, height: int, where: str) -> None:
    """bbox (x1, y1, x2, y2) must be non-empty and inside the image (1 px slack)."""
    x1, y1, x2, y2 = bbox
    if not (x2 > x1 and y2 > y1):
        raise BadItemError(where, f"bbox {bbox.tolist()} is empty or inverted")
    if x1 < -1 or y1 < -1 or x2 > width + 1 or y2 > height + 1:
        raise BadItemError(
            where, f"bbox {bbox.tolist()} lies outside the {width}x{height} px image"
        )


class _MeshCache:
    """Normalised CAD meshes by path (Pix3D reuses each model for many images)."""

    def __init__(self):
        self._cache: dict[Path, tuple[np.ndarray, np.ndarray, np.ndarray, float]] = {}

    def get(self, path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
        if path not in self._cache:
            self._cache[path] = load_normalized_obj(path)
        return self._cache[path]


def load_normalized_obj(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Read a mesh file -> (vertices (V, 3) float32 in [-0.5, 0.5]^3, faces (F, 3) int32, c, s)."""
    import trimesh

    if not path.is_file():
        raise BadItemError(path, "CAD model file not found")
    try:
        mesh = trimesh.load(path, force="mesh", process=False)
    except Exception as exc:  # noqa: BLE001 - any parser failure is a bad file
        raise BadItemError(path, f"cannot read CAD model ({exc or type(exc).__name__})") from None
    v = np.asarray(getattr(mesh, "vertices", np.zeros((0, 3))), dtype=np.float64)
    f = np.asarray(getattr(mesh, "faces", np.zeros((0, 3))), dtype=np.int64)
    if v.ndim != 2 or v.shape[0] < 3 or f.ndim != 2 or f.shape[0] < 1 or f.shape[1] != 3:
        raise BadItemError(path, f"CAD model has no triangles ({v.shape[0]} vertices)")
    try:
        vn, c, s = normalize_mesh(v)
    except ValueError as exc:
        raise BadItemError(path, str(exc)) from None
    return vn, f.astype(np.int32), c, s


def _item_id(entry: dict) -> str:
    img = Path(str(entry["img"]))
    return f"pix3d_{entry['category']}_{img.stem}"


def read_entry(
    root: Path, entry: dict, split: str | None, meshes: _MeshCache | None, where: str
) -> RawItem:
    """One pix3d.json entry -> RawItem (BadItemError naming the file and the problem)."""
    img_path = root / str(entry["img"])
    mask_path = root / str(entry["mask"])
    image = load_image(img_path)
    rgb = image.rgb
    mask = load_mask(mask_path)
    h, w = rgb.shape[:2]
    if mask.shape != (h, w):
        raise BadItemError(mask_path, f"mask is {mask.shape[1]}x{mask.shape[0]} px, image {w}x{h}")
    if "img_size" in entry:
        size = _matrix(entry, "img_size", (2,), where)
        if (int(size[0]), int(size[1])) != (w, h):
            raise BadItemError(
                img_path, f"image is {w}x{h} px but pix3d.json says {int(size[0])}x{int(size[1])}"
            )
    check_bbox(_matrix(entry, "bbox", (4,), where), w, h, where)
    rot = _matrix(entry, "rot_mat", (3, 3), where)
    trans = _matrix(entry, "trans_mat", (3,), where)
    focal = float(_matrix(entry, "focal_length", (), where))
    if focal <= 0:
        raise BadItemError(where, f"focal_length must be > 0, got {focal}")
    if abs(np.linalg.det(rot) - 1.0) > 1e-3 or not np.allclose(rot @ rot.T, np.eye(3), atol=1e-3):
        raise BadItemError(where, "rot_mat is not a rotation matrix")
    model_path = root / str(entry["model"])
    gt: dict[str, np.ndarray] = {"fov_deg": np.float32(fov_from_focal(focal))}
    az = el = dist = math.nan
    if meshes is not None:
        verts, faces, c, s = meshes.get(model_path)
        R, t = pix3d_pose_to_ours(rot, trans, c, s)
        gt.update(vertices=verts, faces=faces, R=R, t=t)
        if "cam_position" in entry:
            az, el, dist = spherical_from_eye(_matrix(entry, "cam_position", (3,), where) / s)
    else:
        gt.update(R=(PIX3D_TO_CV @ rot).astype(np.float32))
    return RawItem(
        id=_item_id(entry),
        category=str(entry["category"]),
        source=str(img_path),
        rgb=rgb,
        mask=mask,
        split=split,
        instance=f"pix3d_{Path(str(entry['model'])).parent.as_posix().replace('/', '_')}",
        azimuth_deg=az,
        elevation_deg=el,
        distance=dist,
        gt=gt,
    )


def iter_items(cfg: Pix3dConfig, seed: int) -> Iterator[RawItem | Rejected]:
    """Raw Pix3D items of the configured categories, in pix3d.json order.

    Args:
        cfg: adapter settings; seed: unused (the order and splits are deterministic).
    Yields:
        RawItem with ``gt`` = {vertices, faces (normalised CAD), R, t, fov_deg} and
        azimuth/elevation from ``cam_position``; Rejected for unusable entries.
    Raises:
        FileNotFoundError / DatasetError: missing root, annotation file or split lists,
        or an entry without the required keys.
    """
    del seed
    root = Path(cfg.root)
    if not root.is_dir():
        raise FileNotFoundError(f"pix3d.root: {root}: folder not found")
    ann_path = root / cfg.annotation
    entries = read_annotations(ann_path)
    splits = read_split_lists(Path(cfg.split_lists), cfg.categories) if cfg.split_lists else None
    meshes = _MeshCache() if cfg.load_models else None
    wanted = set(cfg.categories)
    seen: set[str] = set()
    for k, entry in enumerate(entries):
        where = f"{ann_path}[{k}]"
        missing = [key for key in REQUIRED_KEYS if key not in entry]
        if missing:
            raise DatasetError(f"{where}: entry lacks keys {missing}")
        if entry["category"] not in wanted:
            continue
        if cfg.drop_truncated and _flag(entry.get("truncated", False)):
            continue
        if cfg.drop_occluded and _flag(entry.get("occluded", False)):
            continue
        if cfg.drop_slightly_occluded and _flag(entry.get("slightly_occluded", False)):
            continue
        split = None
        if splits is not None:
            split = splits.get(_list_key(str(entry["category"]), str(entry["img"])))
            if split is None:
                continue
        item_id = _item_id(entry)
        if item_id in seen:
            raise DatasetError(f"{where}: image {entry['img']!r} appears twice")
        seen.add(item_id)
        try:
            yield read_entry(root, entry, split, meshes, where)
        except BadItemError as exc:
            yield Rejected(item_id, exc.path, exc.problem)

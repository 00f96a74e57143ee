"""Reconstruct new images with a trained model: the user-facing ``stages/predict.py``.

Images are read with the ``folder`` adapter's rules (RGBA PNGs, or image +
``<name>_mask`` pairs, or masks in a separate folder; see
:mod:`poseless.data.folder`), checked with :func:`poseless.data.prepare.check_item`
and prepared exactly like ``prepare_data`` does (:func:`poseless.data.prepare.prepare_item`:
square crop around the mask with a margin, area resize, composite on the
background). Bad inputs are collected with their reason, never fatal.

Per usable image the output folder gets ``<id>.obj``, ``<id>.glb`` and a
turntable ``<id>.gif``; plus ``predictions.csv`` (id, source, azimuth_deg,
vertices, faces) and ``rejected.csv`` (id, source, reason).

The crop margin matters: a model trained on frames where the object fills part
of the image (the synthetic data: about 60 %) sees new images best prepared to
look alike, hence the default margin 0.3 (object ~ 1 / 1.6 of the side).
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from poseless.config import FolderConfig, PrepareDataConfig
from poseless.data.adapters import Rejected
from poseless.data.folder import iter_folder
from poseless.data.prepare import check_item, prepare_item
from poseless.evaluate.harness import obj_text
from poseless.report.turntable import RenderSettings, gif_bytes, turntable_frames
from poseless.utils import write_bytes_atomic, write_text_atomic


@dataclass(frozen=True)
class PredictSettings:
    """How new images are prepared and what is written for them."""

    image_size: int = 64
    """Side the images are resized to (the model's training size)."""
    crop: str = "bbox"
    """bbox: square crop around the mask; none: keep the whole frame."""
    margin: float = 0.3
    """Margin around the mask's box, as a fraction of its longer side."""
    background: tuple[float, float, float] = (1.0, 1.0, 1.0)
    """RGB in [0, 1] the object is composited on (the training background)."""
    batch_size: int = 8
    """Images per reconstructor call."""
    turntable_frames: int = 24
    """Frames of each turntable GIF (0: no GIF)."""
    render_size: int = 128
    """Side of the turntable frames."""
    fov_deg: float = 30.0
    """Field of view of the turntable camera."""
    distance: float = 2.732
    """Distance of the turntable camera."""


@dataclass(frozen=True)
class PreparedInput:
    """One new image, prepared."""

    id: str
    """Item id (from the file name)."""
    source: str
    """Image path."""
    image: np.ndarray
    """(S, S, 3) uint8 composited RGB."""
    mask: np.ndarray
    """(S, S) uint8 mask."""


def settings_for_model(reconstructor, **overrides) -> PredictSettings:
    """Settings matching a reconstructor's saved config (image size, camera), then ``overrides``."""
    cfg = getattr(reconstructor, "config", {}) or {}
    base = {}
    if "image_size" in cfg:
        base["image_size"] = int(cfg["image_size"])
    cam = cfg.get("camera") or {}
    if "fov_deg" in cam and "distance" in cam:
        base["fov_deg"], base["distance"] = float(cam["fov_deg"]), float(cam["distance"])
    base.update({k: v for k, v in overrides.items() if v is not None})
    return PredictSettings(**base)


def prepare_inputs(
    images: str | Path, masks: str | Path | None, settings: PredictSettings
) -> tuple[list[PreparedInput], list[Rejected]]:
    """Read, check and prepare every image of a folder.

    Returns:
        usable inputs (sorted by path) and rejected ones with their reason.
    Raises:
        BadItemError: the folder is missing, unreadable or holds no images.
    """
    folder_cfg = FolderConfig(
        root=str(images), mask_dir=str(masks) if masks else "", category="input"
    )
    prep_cfg = PrepareDataConfig(
        adapter="folder",
        image_size=settings.image_size,
        crop=settings.crop,
        margin=settings.margin,
        background=settings.background,
    )
    good, bad = [], []
    for entry in iter_folder(folder_cfg):
        if isinstance(entry, Rejected):
            bad.append(entry)
            continue
        reason = check_item(entry)
        if reason is not None:
            bad.append(Rejected(entry.id, entry.source, reason))
            continue
        item = prepare_item(entry, prep_cfg)
        good.append(PreparedInput(entry.id, entry.source, item.image, item.mask))
    return good, bad


def _glb_bytes(vertices: np.ndarray, faces: np.ndarray) -> bytes:
    import trimesh

    return trimesh.Trimesh(vertices, faces, process=False).export(file_type="glb")


def predict_inputs(
    reconstructor,
    inputs: list[PreparedInput],
    out_dir: str | Path,
    settings: PredictSettings,
    progress: Callable[[Iterable], Iterable] | None = None,
) -> list[dict]:
    """Reconstruct ``inputs`` and write ``<id>.obj``, ``<id>.glb``, ``<id>.gif`` into ``out_dir``.

    Returns:
        One row per input: id, source, azimuth_deg (nan without a pose head),
        vertices, faces (0 for an empty reconstruction, which gets no files).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    render = RenderSettings(
        size=settings.render_size, fov_deg=settings.fov_deg, distance=settings.distance
    )
    starts = range(0, len(inputs), settings.batch_size)
    for s in progress(starts) if progress is not None else starts:
        chunk = inputs[s : s + settings.batch_size]
        images = (
            torch.from_numpy(np.stack([c.image for c in chunk])).permute(0, 3, 1, 2).float() / 255.0
        )
        masks = torch.from_numpy(np.stack([c.mask for c in chunk]))[:, None].float() / 255.0
        pred = reconstructor.predict(images, masks)
        for k, item in enumerate(chunk):
            v, f = (np.asarray(a) for a in pred.meshes[k])
            f = f.reshape(-1, 3).astype(np.int64)
            az = math.nan if pred.azimuth_deg is None else float(pred.azimuth_deg[k])
            rows.append(
                {
                    "id": item.id,
                    "source": item.source,
                    "azimuth_deg": az,
                    "vertices": len(v),
                    "faces": len(f),
                }
            )
            if len(f) == 0:
                continue
            write_text_atomic(out / f"{item.id}.obj", obj_text(v, f))
            write_bytes_atomic(out / f"{item.id}.glb", _glb_bytes(v, f))
            if settings.turntable_frames > 0:
                frames = turntable_frames(v, f, settings.turntable_frames, render)
                write_bytes_atomic(out / f"{item.id}.gif", gif_bytes(frames))
    return rows


def write_tables(out_dir: str | Path, rows: list[dict], rejected: list[Rejected]) -> None:
    """predictions.csv (id, source, azimuth_deg, vertices, faces) and rejected.csv (id, source, reason)."""
    out = Path(out_dir)
    for name, header, body in (
        (
            "predictions.csv",
            ["id", "source", "azimuth_deg", "vertices", "faces"],
            [list(r.values()) for r in rows],
        ),
        (
            "rejected.csv",
            ["id", "source", "reason"],
            [[r.id, r.source, r.reason] for r in rejected],
        ),
    ):
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(body)
        write_text_atomic(out / name, buf.getvalue())

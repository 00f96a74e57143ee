"""Stage ``train_recon``, the representation-independent part.

One experiment (a resolved :class:`poseless.config.ReconSettings`) trains one
single-view reconstructor on the **train** split of a prepared dataset. This
module holds what every representation shares:

* the training data in memory (:class:`ReconData`, :func:`load_recon_data`):
  RGB images (the network input), masks (the re-projection target), the dataset
  camera (``meta.json`` ``camera``: fov_deg, distance) and the pose source —
  ``gt``: azimuth and elevation from the manifest; ``pseudo``: azimuth from the
  ``predict_poses`` table (:func:`read_pseudo_poses`, by id) at the settings'
  ``elevation_deg``; ``joint``: none (the network predicts the azimuth);
* the loop plumbing (:func:`make_loop`, :func:`make_adam`, :func:`finish_metrics`,
  :func:`write_render_sheet`): progress bar, ``metrics.jsonl``, resumable
  checkpoints in a *resume folder* kept outside the artifact folder (Snakemake
  deletes declared outputs before rerunning a job, so a killed run's checkpoints
  must live elsewhere);
* the artifact interface used by ``evaluate``/``predict``: the final model is
  ``model.safetensors`` + ``model.json`` (:func:`poseless.train.checkpoint.save_model`;
  the sidecar's config names the ``representation`` and rebuilds the model on
  its own), read back with :func:`load_reconstructor` as a :class:`Reconstructor`
  whose :meth:`~Reconstructor.predict` returns a :class:`ReconPrediction`.

Representations register in :data:`BACKENDS` (a name -> lazy loader of a
:class:`Backend`); :func:`train_recon` and :func:`load_reconstructor` dispatch on
``settings.representation`` / the saved config. ``mesh`` (URA) lives in
:mod:`poseless.train.recon_mesh`, ``sdf`` (ShapeClipper, ``poseless``) in
:mod:`poseless.train.recon_sdf`.

Randomness: the weights are initialised from ``torch.manual_seed(seed)``; batch
indices, random azimuths and gradient-penalty weights come from one CPU
``torch.Generator`` seeded with ``seed`` and checkpointed, so a killed CPU run
resumes bit for bit, and the same seed and config give identical artifact bytes.
"""

from __future__ import annotations

import abc
import json
import logging
import math
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from poseless.config import ReconSettings, TrainSubsetSettings, to_dict
from poseless.data.prepared import DatasetError, PreparedDataset, read_id_table
from poseless.errors import PoselessError
from poseless.train.checkpoint import CheckpointError, sidecar_path
from poseless.train.loop import LoopSettings, TrainLoop
from poseless.train.metrics_log import read_metrics
from poseless.utils import select_device, write_text_atomic

MODEL_FILE = "model.safetensors"
"""Final weights in the artifact folder (config sidecar ``model.json``)."""
METRICS_FILE = "metrics.jsonl"
"""Loss records in the artifact folder (wall times dropped: the bytes are deterministic)."""
RENDERS_FILE = "renders.png"
"""Training renders: one row per item, input | target mask | render at the used pose."""
LOOP_ONLY_KEYS = ("iterations", "log_every", "checkpoint_every", "keep_last", "render_items")
"""Settings that do not change the trained model's trajectory (left out of the resume check)."""
LOAD_CHUNK = 256
"""Items decoded per chunk when loading the training split."""


# ---------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Camera:
    """The dataset's pinhole look-at camera (``meta.json`` ``camera``)."""

    fov_deg: float
    """Full field of view in degrees."""
    distance: float
    """Distance of the camera from the origin."""


def dataset_camera(dataset: PreparedDataset) -> Camera:
    """The camera recorded in ``meta.json``; a clear error when it is absent.

    Raises:
        DatasetError: no usable ``camera`` entry (e.g. prepared with ``crop: bbox``).
    """
    cam = dataset.meta.get("camera")
    where = dataset.root / "meta.json"
    if not isinstance(cam, dict) or "fov_deg" not in cam or "distance" not in cam:
        raise DatasetError(
            f"{where}: no camera (fov_deg, distance) recorded, but the reconstructor renders "
            "at the dataset camera; prepare the data with `crop: none` from an adapter that "
            "knows its camera (synthetic, shapenet_nmr)"
        )
    fov, dist = float(cam["fov_deg"]), float(cam["distance"])
    if not (0.0 < fov < 180.0) or not dist > 0.0:
        raise DatasetError(f"{where}: invalid camera fov_deg={fov}, distance={dist}")
    return Camera(fov_deg=fov, distance=dist)


def read_pseudo_poses(path: str | Path, ids: list[str]) -> np.ndarray:
    """Pseudo azimuths of ``ids`` from the ``predict_poses`` table.

    Args:
        path: parquet with at least the columns ``id`` and ``azimuth_deg``.
        ids: items wanted, in order.
    Returns:
        (N,) float64 azimuths in degrees, in the order of ``ids``.
    Raises:
        FileNotFoundError / DatasetError: naming the file and the problem.
    """
    path = Path(path)
    table = read_id_table(
        path, ("id", "azimuth_deg"), "pseudo-pose table not found; run predict_poses first"
    )
    by_id = table.set_index("id")["azimuth_deg"]
    absent = [i for i in ids if i not in by_id.index]
    if absent:
        raise DatasetError(
            f"{path}: no pseudo pose for {len(absent)} training item(s), e.g. {absent[:3]}; "
            "was it predicted from the same prepared dataset?"
        )
    az = by_id.loc[ids].to_numpy(dtype=np.float64)
    bad = ~np.isfinite(az)
    if bad.any():
        raise DatasetError(f"{path}: azimuth_deg is not finite for id {ids[int(np.argmax(bad))]!r}")
    return az


@dataclass(frozen=True)
class ReconData:
    """The training split in memory, with its pose source and camera."""

    ids: tuple[str, ...]
    """Item ids, in tensor order."""
    images: torch.Tensor
    """(N, 3, H, W) uint8 RGB (the network input)."""
    masks: torch.Tensor
    """(N, 1, H, W) uint8 masks, 255 = object (the re-projection target)."""
    azimuth_deg: np.ndarray | None
    """(N,) float64 azimuth of the pose source (gt or pseudo); None for ``joint``."""
    elevation_deg: np.ndarray
    """(N,) float64 elevation of the renders (gt: manifest; else ``settings.elevation_deg``)."""
    camera: Camera | None
    """Dataset camera (None only for representations that do not need it)."""
    background: tuple[float, float, float] = (1.0, 1.0, 1.0)
    """RGB the prepared images are composited on (``meta.json`` ``background``)."""
    neighbours: Any = None
    """kNN table of the training rows (:class:`poseless.train.ssc.NeighbourTable`), if used."""
    normals: Any = None
    """Camera-frame normal maps of the training rows
    (:class:`poseless.train.recon_sdf.NormalMaps`), if used."""

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def image_size(self) -> int:
        """Side of the square images."""
        return int(self.images.shape[-1])

    def batch(self, idx: torch.Tensor, device) -> tuple[torch.Tensor, torch.Tensor]:
        """idx: (B,) long -> images (B, 3, H, W), masks (B, 1, H, W) float in [0, 1] on ``device``."""
        idx = idx.cpu()
        images = self.images[idx].to(device).float().div_(255.0)
        masks = self.masks[idx].to(device).float().div_(255.0)
        return images, masks

    def azimuth_rad(self, idx: torch.Tensor, device) -> torch.Tensor | None:
        """(B,) float32 radians of the pose source for ``idx``; None for ``joint``."""
        if self.azimuth_deg is None:
            return None
        az = torch.from_numpy(np.radians(self.azimuth_deg[idx.cpu().numpy()]))
        return az.float().to(device)

    def elevation_rad(self, idx: torch.Tensor, device) -> torch.Tensor:
        """(B,) float32 radians of the render elevation for ``idx``."""
        return (
            torch.from_numpy(np.radians(self.elevation_deg[idx.cpu().numpy()])).float().to(device)
        )


def load_recon_data(
    dataset: PreparedDataset,
    settings: ReconSettings,
    poses: str | Path | None = None,
    split: str = "train",
    needs_camera: bool = True,
    knn: str | Path | None = None,
    normals: str | Path | None = None,
) -> ReconData:
    """Load ``split`` of a prepared dataset for training ``settings``.

    Args:
        dataset: the prepared dataset.
        settings: resolved experiment settings (decides the pose source).
        poses: the ``predict_poses`` parquet; required when the experiment uses
            pseudo poses, ignored otherwise.
        split: which split to train on (the stage always uses "train").
        needs_camera: fail when ``meta.json`` has no camera (mesh: yes); otherwise the
            camera is read when recorded and left None when not.
        knn: the ``build_knn`` folder; required when the experiment uses SSC.
        normals: the ``estimate_normals`` folder; required when it uses normals.
    Raises:
        DatasetError / FileNotFoundError / PoselessError: naming the file or argument.
    """
    ids = dataset.ids(split)
    if not ids:
        raise DatasetError(f"{dataset.root}: no items in split {split!r}")
    if split == "train" and settings.train_subset.azimuths_deg:
        ids = select_train_subset(dataset, ids, settings.train_subset)
    recorded = dataset.meta.get("camera") is not None
    camera = dataset_camera(dataset) if needs_camera or recorded else None
    rows = dataset.manifest.set_index("id").loc[ids]
    elevation = np.full(len(ids), float(settings.elevation_deg))
    azimuth = None
    if settings.uses_gt_poses:
        azimuth = rows["azimuth_deg"].to_numpy(dtype=np.float64)
        elevation = rows["elevation_deg"].to_numpy(dtype=np.float64)
        bad = ~(np.isfinite(azimuth) & np.isfinite(elevation))
        if bad.any():
            raise DatasetError(
                f"{dataset.root / 'manifest.parquet'}: pose_source 'gt' needs ground-truth "
                f"azimuth_deg and elevation_deg, but {int(bad.sum())} {split} item(s) have none "
                f"(e.g. {ids[int(np.argmax(bad))]!r}); this dataset has no GT poses, use a "
                "pose-free experiment (bl_unsup, ura)"
            )
    elif settings.uses_pseudo_poses:
        if poses is None:
            raise PoselessError(
                "--poses: the experiment uses pseudo poses (pose_source 'pseudo'); give the "
                "predict_poses table (data/poses/poses.parquet)"
            )
        azimuth = read_pseudo_poses(poses, ids)
    images, masks = [], []
    for start in range(0, len(ids), LOAD_CHUNK):
        batch = dataset.load(ids[start : start + LOAD_CHUNK])
        images.append(batch.images.mul(255.0).round_().to(torch.uint8))
        masks.append(batch.masks.mul(255.0).round_().to(torch.uint8))
    masks_t = torch.cat(masks)
    table = maps = None
    if settings.uses_knn:
        if knn is None:
            raise PoselessError(
                "--knn: the experiment uses semantic shape consistency; give the build_knn "
                "folder (data/features/knn)"
            )
        from poseless.train.ssc import read_knn_table

        table = read_knn_table(knn, ids, masks_t)
    if settings.uses_normals:
        if normals is None:
            raise PoselessError(
                "--normals: the experiment uses normal losses; give the estimate_normals "
                "folder (data/features/normals)"
            )
        from poseless.train.recon_sdf import read_normal_maps

        maps = read_normal_maps(normals, ids, tuple(masks_t.shape[-2:]))
    background = tuple(float(c) for c in dataset.meta.get("background", (1.0, 1.0, 1.0)))
    return ReconData(
        ids=tuple(ids),
        images=torch.cat(images),
        masks=masks_t,
        azimuth_deg=azimuth,
        elevation_deg=elevation,
        camera=camera,
        background=background,
        neighbours=table,
        normals=maps,
    )


def in_azimuth_windows(azimuth_deg: np.ndarray, subset: TrainSubsetSettings) -> np.ndarray:
    """Boolean mask: which azimuths (degrees) lie within ``width_deg / 2`` of a window centre."""
    azimuth_deg = np.asarray(azimuth_deg, dtype=np.float64)
    if not subset.azimuths_deg:
        return np.ones(azimuth_deg.shape, dtype=bool)
    centres = np.asarray(subset.azimuths_deg, dtype=np.float64)
    gap = np.abs((azimuth_deg[:, None] - centres[None, :] + 180.0) % 360.0 - 180.0)
    return (gap <= subset.width_deg / 2.0).any(axis=1)


def select_train_subset(
    dataset: PreparedDataset, ids: list[str], subset: TrainSubsetSettings
) -> list[str]:
    """The train ids whose ground-truth azimuth lies in one of ``subset``'s windows."""
    manifest = dataset.root / "manifest.parquet"
    azimuth = dataset.manifest.set_index("id").loc[ids, "azimuth_deg"].to_numpy(np.float64)
    if not np.isfinite(azimuth).all():
        raise DatasetError(
            f"{manifest}: train_subset selects views by ground-truth azimuth, but "
            f"{int((~np.isfinite(azimuth)).sum())} train item(s) have none; drop train_subset "
            "for this dataset"
        )
    keep = in_azimuth_windows(azimuth, subset)
    if not keep.any():
        raise DatasetError(
            f"{manifest}: no train item has an azimuth within {subset.width_deg / 2:g} deg of "
            f"train_subset.azimuths_deg {list(subset.azimuths_deg)}"
        )
    kept = [i for i, k in zip(ids, keep, strict=True) if k]
    logging.getLogger("poseless").info(
        "train_subset: %d of %d train items within %g deg of azimuths %s",
        len(kept),
        len(ids),
        subset.width_deg / 2,
        list(subset.azimuths_deg),
    )
    return kept


def derive_seed(global_seed: int, run_seed: int) -> int:
    """One training seed from the params' global seed and the run's ``--seed`` (32 bits)."""
    if global_seed < 0 or run_seed < 0:
        raise ValueError(f"seeds must be >= 0, got seed={global_seed}, --seed={run_seed}")
    state = np.random.SeedSequence([global_seed, run_seed]).generate_state(1, dtype=np.uint32)
    return int(state[0])


def sample_indices(n: int, batch_size: int, generator: torch.Generator) -> torch.Tensor:
    """(batch_size,) long indices in [0, n), drawn with replacement from ``generator``."""
    return torch.randint(n, (batch_size,), generator=generator)


def random_azimuths(n: int, generator: torch.Generator, device) -> torch.Tensor:
    """(n,) float32 azimuths ~ U[0, 2 pi) radians, drawn on the CPU ``generator``."""
    return (torch.rand(n, generator=generator) * (2.0 * math.pi)).to(device)


# ---------------------------------------------------------------------------
# Loop plumbing
# ---------------------------------------------------------------------------


def checkpoint_config(settings: ReconSettings, seed: int, data: ReconData) -> dict:
    """The config saved with every checkpoint; a resume with a different one is refused."""
    cfg = {k: v for k, v in to_dict(settings).items() if k not in LOOP_ONLY_KEYS}
    return {
        "settings": cfg,
        "seed": seed,
        "n_train": len(data),
        "image_size": data.image_size,
        "camera": to_dict(data.camera) if data.camera is not None else None,
    }


def make_loop(
    settings: ReconSettings,
    resume_dir: str | Path,
    config: dict,
    device: torch.device,
    progress: bool = True,
) -> TrainLoop:
    """The :class:`TrainLoop` of one run: checkpoints and raw metrics in ``resume_dir``."""
    return TrainLoop(
        resume_dir,
        LoopSettings(
            max_steps=settings.iterations,
            log_every=settings.log_every,
            checkpoint_every=settings.checkpoint_every,
            keep_last=settings.keep_last,
            mixed_precision="bf16" if settings.amp else "off",
            progress=progress,
        ),
        config=config,
        device=device,
    )


def make_adam(
    params, lr: float, settings: ReconSettings
) -> tuple[torch.optim.Adam, torch.optim.lr_scheduler.MultiStepLR]:
    """Adam(lr, settings.betas) with lr x ``lr_gamma`` at each of ``lr_milestones`` (iterations)."""
    opt = torch.optim.Adam(params, lr=lr, betas=tuple(settings.betas))
    sched = torch.optim.lr_scheduler.MultiStepLR(
        opt, list(settings.lr_milestones), settings.lr_gamma
    )
    return opt, sched


def finish_metrics(resume_dir: str | Path, out_dir: str | Path) -> Path:
    """Copy the loop's ``metrics.jsonl`` into the artifact folder without wall times.

    Wall-clock seconds differ between runs; the artifact copy keeps the step,
    learning rates and losses only, so its bytes are deterministic.
    """
    records = read_metrics(Path(resume_dir) / METRICS_FILE)
    lines = [json.dumps({k: v for k, v in r.items() if k != "wall_s"}) + "\n" for r in records]
    path = Path(out_dir) / METRICS_FILE
    write_text_atomic(path, "".join(lines))
    return path


RENDER_GAP = 2
"""Pixels between the columns and rows of the render sheet."""


def render_sheet(images: torch.Tensor, masks: torch.Tensor, renders: torch.Tensor) -> np.ndarray:
    """One row per item: input | target mask | render, on a grey background.

    Args:
        images: (N, 3, H, W) in [0, 1]; masks, renders: (N, 1, H, W) in [0, 1].
    Returns:
        (N * (H + gap) + gap, 3 * (W + gap) + gap, 3) uint8.
    """
    n, _, h, w = images.shape
    if masks.shape != (n, 1, h, w) or renders.shape != (n, 1, h, w):
        raise ValueError(
            f"render_sheet: masks {tuple(masks.shape)} and renders {tuple(renders.shape)} "
            f"must be ({n}, 1, {h}, {w})"
        )
    g = RENDER_GAP
    sheet = np.full((n * (h + g) + g, 3 * (w + g) + g, 3), 128, np.uint8)
    cols = [images, masks.expand(-1, 3, -1, -1), renders.expand(-1, 3, -1, -1)]
    for i in range(n):
        for j, col in enumerate(cols):
            tile = (col[i].detach().float().clamp(0, 1).cpu().numpy() * 255.0).round()
            y, x = g + i * (h + g), g + j * (w + g)
            sheet[y : y + h, x : x + w] = tile.astype(np.uint8).transpose(1, 2, 0)
    return sheet


def write_render_sheet(
    path: str | Path, images: torch.Tensor, masks: torch.Tensor, renders: torch.Tensor
) -> None:
    """Write :func:`render_sheet` as a PNG (deterministic bytes)."""
    sheet = render_sheet(images, masks, renders)
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    Image.fromarray(sheet, "RGB").save(tmp, format="PNG")
    tmp.replace(path)


# ---------------------------------------------------------------------------
# Results and the inference interface
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainReconResult:
    """What :func:`train_recon` wrote and did."""

    model_path: Path
    """``model.safetensors`` in the artifact folder (sidecar ``model.json``)."""
    metrics_path: Path
    """``metrics.jsonl`` in the artifact folder."""
    renders_path: Path | None
    """``renders.png`` (None when ``render_items`` is 0)."""
    steps: int
    """Iterations completed."""
    resumed_from: int | None
    """Iteration the run resumed from (None: fresh start)."""
    encoder_info: dict
    """Which weights the image encoder started from (``create_encoder`` info)."""
    last_losses: dict[str, float]
    """Losses of the last iteration run."""


@dataclass(frozen=True)
class ReconPrediction:
    """Reconstructions of a batch of images."""

    meshes: list[tuple[np.ndarray, np.ndarray]]
    """Per image (vertices (V, 3) float32, faces (F, 3) int64), canonical world frame."""
    azimuth_deg: np.ndarray | None
    """(B,) float32 predicted azimuth in degrees where the model predicts a pose, else None."""
    R: np.ndarray | None
    """(B, 3, 3) float32 world->camera rotation of the predicted pose, else None."""


class Reconstructor(abc.ABC):
    """A trained single-view reconstructor, as the evaluate/predict stages see it."""

    representation: str
    """Name of the representation ("mesh", "sdf")."""
    config: dict
    """The saved config (``model.json``'s ``config``)."""

    @abc.abstractmethod
    def predict(self, images: torch.Tensor, masks: torch.Tensor) -> ReconPrediction:
        """images: (B, 3, H, W) RGB in [0, 1]; masks: (B, 1, H, W) in [0, 1] -> prediction."""


@dataclass(frozen=True)
class Backend:
    """One representation's trainer and loader."""

    train: Callable[..., TrainReconResult]
    """``train(data, settings, seed, out_dir, resume_dir, device, progress) -> TrainReconResult``."""
    load: Callable[[Path, dict, torch.device], Reconstructor]
    """``load(model_path, config, device) -> Reconstructor`` (config: the sidecar's)."""
    needs_camera: bool
    """Whether training renders at the dataset camera (``meta.json`` camera required)."""


def _mesh_backend() -> Backend:
    from poseless.train import recon_mesh

    return Backend(recon_mesh.train_mesh_recon, recon_mesh.load_mesh_reconstructor, True)


def _sdf_backend() -> Backend:
    from poseless.train import recon_sdf

    return Backend(recon_sdf.train_sdf_recon, recon_sdf.load_sdf_reconstructor, False)


BACKENDS: dict[str, Callable[[], Backend]] = {"mesh": _mesh_backend, "sdf": _sdf_backend}
"""Representation name -> lazy loader of its :class:`Backend` (imports on first use)."""


def get_backend(representation: str) -> Backend:
    """The :class:`Backend` of ``representation``; a clear error for unknown ones."""
    if representation not in BACKENDS:
        raise ValueError(
            f"representation {representation!r} has no trainer here (known: {sorted(BACKENDS)})"
        )
    return BACKENDS[representation]()


def train_recon(
    data: ReconData,
    settings: ReconSettings,
    seed: int,
    out_dir: str | Path,
    resume_dir: str | Path,
    device: str | torch.device = "auto",
    progress: bool = True,
) -> TrainReconResult:
    """Train (or resume) one experiment; write model, metrics and renders into ``out_dir``.

    Args:
        data: the training split (:func:`load_recon_data`).
        settings: the resolved experiment.
        seed: training seed (:func:`derive_seed`).
        out_dir: artifact folder (existing; the stage passes a temporary folder).
        resume_dir: checkpoints and raw metrics; a run killed part-way continues
            from here. Keep it outside ``out_dir``.
        device: "auto", "cpu", "cuda", ...
    """
    device = device if isinstance(device, torch.device) else select_device(device)
    out_dir, resume_dir = Path(out_dir), Path(resume_dir)
    if (
        resume_dir.resolve() == out_dir.resolve()
        or out_dir.resolve() in resume_dir.resolve().parents
    ):
        raise ValueError(
            f"--resume-dir {resume_dir}: must lie outside the output folder {out_dir} "
            "(Snakemake deletes declared outputs before a rerun)"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    backend = get_backend(settings.representation)
    return backend.train(data, settings, seed, out_dir, resume_dir, device, progress)


def load_reconstructor(out_dir: str | Path, device: str | torch.device = "cpu") -> Reconstructor:
    """Rebuild the reconstructor saved in a ``train_recon`` artifact folder.

    Raises:
        CheckpointError: the folder has no model or its sidecar is unreadable.
    """
    path = Path(out_dir) / MODEL_FILE
    side = sidecar_path(path)
    if not side.is_file():
        raise CheckpointError(f"{side}: not found; is {out_dir} a train_recon output folder?")
    try:
        config: dict[str, Any] = json.loads(side.read_text())["config"]
        representation = config["representation"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{side}: no readable config with a representation ({exc})") from exc
    device = device if isinstance(device, torch.device) else select_device(device)
    return get_backend(representation).load(path, config, device)


def remove_resume_dir(resume_dir: str | Path) -> None:
    """Delete a finished run's checkpoints (a rerun must train afresh, not resume at the end)."""
    shutil.rmtree(resume_dir, ignore_errors=True)

"""URA stage (b): the pseudo pose regressor (``train_pose``).

The regressor (:class:`~poseless.models.pose_regressor.PoseRegressor`) learns
silhouette -> azimuth **only from renders of the frozen generator**: every
iteration draws fresh codes z ~ N(0, z_std^2), decodes G(z), renders the meshes
with SoftRas at azimuths ~ U[lo, hi) (default U[0, 360)) and the configured
elevation / distance / field of view, and minimises the angle loss
``mean |atan2(sin d, cos d)|`` (d the predicted minus true azimuth, radians;
:func:`angle_loss`). Adam (0.9, 0.999), lr 1e-4 halved at 50k and 75k of 100k
iterations, batch 32 (REFERENCE "URA").

Because G chooses its own canonical frame, the azimuths are *pseudo* poses:
they agree with the dataset's up to one global offset (and possibly a
reflection); ``predict_poses`` measures them after that alignment.

All randomness (z, azimuths) comes from one CPU ``torch.Generator`` seeded with
the stage seed and checkpointed by :class:`~poseless.train.loop.TrainLoop`, so a
killed run resumes bit for bit on the CPU. Resumable state lives in a
*resume directory* outside the artifact folder (Snakemake deletes declared
outputs before a rerun), in a sub-folder named by the hash of everything that
changes the result (config minus loop length/logging, seed, generator weights,
camera), so a changed input never resumes a stale run.

Artifact folder (filled by :func:`train_pose`): ``regressor.safetensors`` +
``regressor.json`` (rebuilds the model on its own: :func:`load_regressor`),
``metrics.jsonl`` (without wall-clock times, so the folder is byte-identical
between identical runs) and ``samples.png`` (training renders, true vs predicted
azimuth).
"""

from __future__ import annotations

import copy
import dataclasses
import io
import json
import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from PIL import Image

from poseless.cli import write_provenance
from poseless.config import TrainPoseConfig
from poseless.errors import PoselessError
from poseless.geometry.cameras import LookAtCamera, kato_extrinsics
from poseless.models.mesh_decoder import Generator
from poseless.models.pose_regressor import PoseRegressor, angle_error_deg
from poseless.render.soft_raster import SoftRasterSettings, render_silhouettes
from poseless.train.checkpoint import CheckpointError, load_model, save_model
from poseless.train.loop import keyed_loop
from poseless.train.metrics_log import CURVES_FILE, read_metrics, write_curves_csv
from poseless.utils import (
    file_sha256,
    select_device,
    write_bytes_atomic,
    write_text_atomic,
)

log = logging.getLogger(__name__)

GENERATOR_FILE = "generator.safetensors"
"""The generator's weights in the ``train_gan`` output folder (sidecar ``generator.json``)."""
REGRESSOR_FILE = "regressor.safetensors"
"""The regressor's weights in the ``train_pose`` output folder (sidecar ``regressor.json``)."""
SAMPLES_FILE = "samples.png"
"""Figure of training renders with true and predicted azimuths."""
METRICS_FILE = "metrics.jsonl"
"""Training metrics (JSON lines) in the output folder."""

_LOOP_ONLY = ("iterations", "log_every", "checkpoint_every", "keep_last", "progress", "n_samples")
"""Config fields that do not change the trained weights (kept out of the resume key)."""


class ModelFileError(PoselessError):
    """A generator or regressor folder lacks its model file or holds an unreadable one."""


# ---------------------------------------------------------------------------
# Loading the inputs and outputs
# ---------------------------------------------------------------------------


def _load(path: Path, builder: Callable[[dict], torch.nn.Module], what: str, stage: str, device):
    if not path.is_file():
        raise ModelFileError(
            f"{path}: {what} weights not found; run the {stage} stage first "
            f"(expected {path.name} and its sidecar {path.with_suffix('.json').name})"
        )
    try:
        return load_model(path, builder, device)
    except CheckpointError as exc:
        raise ModelFileError(f"{path}: cannot load the {what}: {exc}") from exc
    except (KeyError, TypeError, ValueError, json.JSONDecodeError) as exc:
        raise ModelFileError(f"{path}: the {what}'s config sidecar is not usable: {exc}") from exc


def load_generator(gan_dir: str | Path, device: str | torch.device = "cpu") -> Generator:
    """The frozen generator of a ``train_gan`` output folder (eval mode, no grad).

    Reads ``generator.safetensors`` + ``generator.json`` (``Generator.config()``)
    written by :func:`poseless.train.checkpoint.save_model`.

    Raises:
        ModelFileError: naming the missing or unreadable file.
    """
    G, _ = _load(
        Path(gan_dir) / GENERATOR_FILE, lambda c: Generator(**c), "generator", "train_gan", device
    )
    G.requires_grad_(False)
    return G


@dataclass(frozen=True)
class RegressorInfo:
    """What the regressor's sidecar records besides the weights."""

    input_size: int
    """Side of the silhouettes it was trained on (inputs are resized to it)."""
    camera: dict[str, float]
    """elevation_deg, distance, fov_deg of its training renders."""
    model: dict[str, Any]
    """Constructor arguments of the :class:`PoseRegressor`."""


def regressor_record(regressor: PoseRegressor, input_size: int, camera: LookAtCamera) -> dict:
    """The JSON sidecar config that rebuilds a regressor (see :class:`RegressorInfo`)."""
    return {
        "model": regressor.config(),
        "input_size": int(input_size),
        "camera": dataclasses.asdict(camera),
    }


def load_regressor(
    pose_dir: str | Path, device: str | torch.device = "cpu"
) -> tuple[PoseRegressor, RegressorInfo]:
    """The trained regressor of a ``train_pose`` output folder (eval mode) and its record.

    Raises:
        ModelFileError: naming the missing or unreadable file.
    """
    path = Path(pose_dir) / REGRESSOR_FILE
    model, cfg = _load(
        path, lambda c: PoseRegressor(**c["model"]), "regressor", "train_pose", device
    )
    try:
        info = RegressorInfo(int(cfg["input_size"]), dict(cfg["camera"]), dict(cfg["model"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelFileError(f"{path.with_suffix('.json')}: bad regressor record: {exc}") from exc
    return model, info


# ---------------------------------------------------------------------------
# The maths
# ---------------------------------------------------------------------------


def angle_loss(pred_deg: torch.Tensor, target_deg: torch.Tensor) -> torch.Tensor:
    """URA's pose loss: mean |atan2(sin d, cos d)| in radians, d = pred - target.

    pred_deg, target_deg: (B,) azimuths in degrees -> scalar in [0, pi].
    """
    if pred_deg.shape != target_deg.shape or pred_deg.ndim != 1:
        raise ValueError(
            f"angle_loss: pred and target must both be (B,), got "
            f"{tuple(pred_deg.shape)} and {tuple(target_deg.shape)}"
        )
    d = torch.deg2rad(pred_deg - target_deg)
    return torch.atan2(torch.sin(d), torch.cos(d)).abs().mean()


def sample_renders(
    G: Generator,
    n: int,
    rng: torch.Generator,
    camera: LookAtCamera,
    raster: SoftRasterSettings,
    azimuth_range_deg: tuple[float, float] = (0.0, 360.0),
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fresh G(z) rendered at random azimuths (no graph).

    Args:
        G: the frozen generator (its device is used).
        n: number of renders.
        rng: CPU generator of z and of the azimuths.
    Returns:
        silhouettes (n, 1, S, S) float32 in [0, 1]; azimuth_deg (n,) in [lo, hi) on G's device.
    """
    device = G.decoder.fc1.weight.device
    z = G.sample_z(n, rng, device=device)  # (n, z_dim)
    lo, hi = azimuth_range_deg
    azimuth_deg = (lo + torch.rand(n, generator=rng, dtype=torch.float64) * (hi - lo)).float()
    azimuth_deg = torch.where(azimuth_deg >= hi, torch.full_like(azimuth_deg, lo), azimuth_deg)
    azimuth_deg = azimuth_deg.to(device)
    R, t = kato_extrinsics(
        torch.deg2rad(azimuth_deg), math.radians(camera.elevation_deg), camera.distance
    )
    with torch.no_grad():
        vertices, faces = G(z)
        sil = render_silhouettes(vertices.float(), faces, R, t, raster)  # (n, 1, S, S)
    return sil, azimuth_deg


def gan_camera_mismatch(gan_dir: str | Path, camera: LookAtCamera) -> str | None:
    """A warning when the GAN's recorded camera (``config.yaml`` extra.camera, written
    by the train_gan stage) differs from ``camera``; None when equal or not recorded.

    The regressor should see the generator's shapes as the GAN's critic saw them.
    """
    path = Path(gan_dir) / "config.yaml"
    if not path.is_file():
        return None
    try:
        recorded = (yaml.safe_load(path.read_text()) or {}).get("extra", {}).get("camera")
    except (yaml.YAMLError, AttributeError):
        return None
    if not isinstance(recorded, Mapping):
        return None
    mine = dataclasses.asdict(camera)
    diffs = []
    for k, value in mine.items():
        theirs = recorded.get(k)
        if isinstance(theirs, int | float) and not math.isclose(theirs, value, rel_tol=1e-9):
            diffs.append(f"{k}: gan {theirs!r} vs pose {value!r}")
    if not diffs:
        return None
    return (
        f"{path}: the GAN was trained with another camera ({'; '.join(diffs)}); "
        "set train_pose's elevation_deg/distance/fov_deg/camera to match"
    )


# ---------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainPoseResult:
    """What :func:`train_pose` wrote and did."""

    regressor_path: Path
    """``regressor.safetensors`` in the output folder (sidecar ``regressor.json``)."""
    metrics_path: Path
    """``metrics.jsonl`` in the output folder."""
    samples_path: Path | None
    """``samples.png`` (None when ``n_samples`` is 0)."""
    run_dir: Path
    """The resume sub-folder holding the checkpoints."""
    steps: int
    """Iterations completed."""
    resumed_from: int | None
    """Iteration the run resumed from (None: fresh start)."""
    last_loss_deg: float
    """Mean angle error (degrees) of the last iteration run (nan if none ran)."""


def resume_key(
    cfg: TrainPoseConfig, seed: int, camera: LookAtCamera, generator_sha256: str
) -> dict[str, Any]:
    """Everything that changes the trained weights (JSON); its hash names the resume folder."""
    keep = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in _LOOP_ONLY}
    keep["camera_resolved"] = dataclasses.asdict(camera)
    keep["seed"] = int(seed)
    keep["generator_sha256"] = generator_sha256
    return json.loads(json.dumps(keep, sort_keys=True))


def train_pose(
    G: Generator,
    cfg: TrainPoseConfig,
    out_dir: str | Path,
    resume_dir: str | Path,
    *,
    seed: int,
    camera: LookAtCamera,
    device: str | torch.device = "auto",
    generator_sha256: str = "",
    step_hook: Callable[[int], None] | None = None,
) -> TrainPoseResult:
    """Train the pseudo pose regressor on renders of the frozen ``G``; resumes if interrupted.

    Args:
        G: the trained generator (moved to ``device``, frozen).
        cfg: the ``train_pose`` section.
        out_dir: folder to fill with the artifacts (the stage passes a temporary
            folder it renames when done).
        resume_dir: where resumable checkpoints live, outside ``out_dir``; the run
            uses the sub-folder named by the hash of :func:`resume_key`, and
            deletes sibling sub-folders of older configs.
        seed: seeds the regressor's initialisation and the render stream.
        camera: the renders' camera (:func:`resolve_render_camera`).
        device: "auto", "cpu", "cuda", ... or a torch.device.
        generator_sha256: identity of G's weights (part of the resume key).
        step_hook: called with the step index before each iteration (tests use
            it to interrupt a run).
    """
    out_dir, resume_dir = Path(out_dir), Path(resume_dir)
    device = device if isinstance(device, torch.device) else select_device(device)
    key = resume_key(cfg, seed, camera, generator_sha256)
    loop = keyed_loop(resume_dir, key, cfg, device)
    G = G.to(device).eval().requires_grad_(False)
    torch.manual_seed(seed)
    regressor = PoseRegressor(head=cfg.head).to(device)
    opt = torch.optim.Adam(regressor.parameters(), lr=cfg.lr, betas=cfg.betas)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, list(cfg.lr_milestones), cfg.lr_gamma)
    rng = torch.Generator().manual_seed(seed)
    loop.track(
        modules={"regressor": regressor},
        optimizers={"regressor": opt},
        schedulers={"regressor": sched},
        generators={"renders": rng},
    )
    raster = SoftRasterSettings(image_size=cfg.image_size, sigma=cfg.sigma, fov_deg=camera.fov_deg)

    def step_fn(step: int) -> dict[str, torch.Tensor]:
        if step_hook is not None:
            step_hook(step)
        sil, azimuth_deg = sample_renders(
            G, cfg.batch_size, rng, camera, raster, cfg.azimuth_range_deg
        )
        opt.zero_grad(set_to_none=True)
        with loop.autocast():
            pred = regressor(sil).float()  # (B,) degrees
        loss = angle_loss(pred, azimuth_deg)
        loop.backward(loss)
        loop.step(opt)
        return {"angle": loss.detach(), "error_deg": torch.rad2deg(loss.detach())}

    result = loop.run(step_fn)
    regressor.eval()

    out_dir.mkdir(parents=True, exist_ok=True)
    reg_path = out_dir / REGRESSOR_FILE
    save_model(
        reg_path,
        copy.deepcopy(regressor).cpu(),
        regressor_record(regressor, cfg.image_size, camera),
    )
    metrics_path = out_dir / METRICS_FILE
    # Wall-clock times vary between identical runs; the artifact keeps the rest.
    records = [
        {k: v for k, v in r.items() if k != "wall_s"} for r in read_metrics(result.metrics_path)
    ]
    write_text_atomic(metrics_path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in records))
    samples_path = None
    if cfg.n_samples > 0:
        samples_path = out_dir / SAMPLES_FILE
        # A stream of its own, so the figure never depends on how training went.
        fig_rng = torch.Generator().manual_seed(seed + 1)
        sil, true_deg = sample_renders(
            G, cfg.n_samples, fig_rng, camera, raster, cfg.azimuth_range_deg
        )
        with torch.no_grad():
            pred_deg = regressor(sil).float()
        write_samples_figure(samples_path, sil.cpu(), true_deg.cpu(), pred_deg.cpu())
    last = result.last_losses.get("error_deg", math.nan)
    return TrainPoseResult(
        reg_path, metrics_path, samples_path, loop.out_dir, result.step, result.resumed_from, last
    )


# ---------------------------------------------------------------------------
# Figure
# ---------------------------------------------------------------------------


def png_bytes(fig) -> bytes:
    """A matplotlib figure as PNG bytes without metadata (no Software tag: byte-stable)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    # Re-encode through PIL so that no text chunk survives whatever matplotlib adds.
    with Image.open(io.BytesIO(buf.getvalue())) as im:
        out = io.BytesIO()
        im.convert("RGB").save(out, format="PNG", optimize=False)
    return out.getvalue()


def write_samples_figure(
    path: str | Path, silhouettes: torch.Tensor, true_deg: torch.Tensor, pred_deg: torch.Tensor
) -> None:
    """Grid of renders titled with true and predicted azimuth and the wrapped error.

    silhouettes: (N, 1, S, S) in [0, 1]; true_deg, pred_deg: (N,) degrees.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = silhouettes.shape[0]
    cols = min(n, 4)
    rows = math.ceil(n / cols)
    err = angle_error_deg(pred_deg, true_deg)
    fig, axes = plt.subplots(rows, cols, figsize=(2.2 * cols, 2.6 * rows + 0.4), squeeze=False)
    for k, ax in enumerate(axes.flat):
        ax.axis("off")
        if k >= n:
            continue
        ax.imshow(silhouettes[k, 0].numpy(), cmap="gray", vmin=0.0, vmax=1.0)
        ax.set_title(
            f"true {float(true_deg[k]):.0f}°  pred {float(pred_deg[k]):.0f}°\n"
            f"error {float(err[k]):.0f}°",
            fontsize=8,
        )
    fig.suptitle("train_pose: renders of G(z), true vs predicted azimuth", fontsize=9)
    fig.tight_layout(h_pad=1.5)
    data = png_bytes(fig)
    plt.close(fig)
    write_bytes_atomic(path, data)


def generator_fingerprint(gan_dir: str | Path) -> str:
    """sha256 of the generator's weights file (raises :class:`ModelFileError` if absent)."""
    path = Path(gan_dir) / GENERATOR_FILE
    if not path.is_file():
        raise ModelFileError(f"{path}: generator weights not found; run the train_gan stage first")
    return file_sha256(path)


def train_group(
    group: str,
    *,
    gan_root: Path,
    cfg: TrainPoseConfig,
    config: dict,
    out_root: Path,
    resume_root: Path,
    seed: int,
    camera: LookAtCamera,
    device: str,
    step_hook: Callable[[int], None] | None = None,
) -> tuple[int, float]:
    """Stage ``train_pose`` for one group: the regressor of ``gan_root/<group>``'s generator
    into ``out_root/<group>`` (with provenance and DVC curves).

    Returns (iterations, last batch error in degrees). Module-level so that
    :func:`poseless.train.groups.map_groups` can run each group in its own process.
    """
    gan_dir = Path(gan_root) / group
    sha = generator_fingerprint(gan_dir)
    dev = select_device(device)
    G = load_generator(gan_dir, dev)
    out = Path(out_root) / group
    result = train_pose(
        G,
        cfg,
        out,
        Path(resume_root) / group,
        seed=seed,
        camera=camera,
        device=dev,
        generator_sha256=sha,
        step_hook=step_hook,
    )
    extra = {
        "group": group,
        "generator_sha256": sha,
        "camera": dataclasses.asdict(camera),
        "steps": result.steps,
    }
    write_provenance(out, "train_pose", config, extra)
    write_curves_csv(out / CURVES_FILE, read_metrics(result.metrics_path))  # DVC plots
    return result.steps, result.last_loss_deg

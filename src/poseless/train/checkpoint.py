"""Resumable training checkpoints and final model artifacts.

**Checkpoints** (:class:`CheckpointManager`) hold everything a killed run needs
to continue bit for bit: the state dicts of any number of modules, optimisers,
lr schedulers and grad scalers, the states of named ``torch.Generator``s (e.g. a
data stream's), the global RNG states (Python, NumPy, torch CPU, and CUDA when
present), the step, and the JSON config that rebuilds the model(s).

Files are ``<dir>/step-<step:09d>.pt``, written atomically
(:func:`poseless.utils.atomic_path`), plus ``<dir>/latest``, a one-line text file
naming the newest checkpoint, rewritten (atomically) after it. Only the newest
``keep_last`` checkpoints are kept.

Checkpoints are read with ``torch.load(..., weights_only=True)``: they contain
only tensors, numbers, strings, lists and dicts (RNG states as tensors, configs
as JSON strings), so loading a file someone else pushed runs no pickled code.

**Final artifacts** (:func:`save_model` / :func:`load_model`): weights as
safetensors plus a JSON sidecar (``<name>.json``) with the config that rebuilds
the module.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_model as _st_load_model
from safetensors.torch import save_model as _st_save_model

from poseless.errors import PoselessError
from poseless.utils import atomic_path, file_sha256, write_json_atomic, write_text_atomic

CHECKPOINT_FORMAT = 1
"""Version of the checkpoint layout written by this module."""
LATEST_NAME = "latest"
"""Name of the pointer file holding the newest checkpoint's file name."""
_STEP_FILE = re.compile(r"^step-(\d{9})\.pt$")


class CheckpointError(PoselessError):
    """A checkpoint cannot be read or does not fit the objects it is loaded into."""


# ---------------------------------------------------------------------------
# RNG states as plain tensors / numbers
# ---------------------------------------------------------------------------


def get_rng_state() -> dict[str, Any]:
    """Global RNG states (Python, NumPy, torch CPU, CUDA if available) as tensors/numbers."""
    version, internal, gauss_next = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": {
            "version": int(version),
            "internal": torch.tensor(internal, dtype=torch.int64),
            "gauss_next": gauss_next,
        },
        "numpy": {
            "name": str(name),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore states saved by :func:`get_rng_state` (CUDA only when present and matching)."""
    py = state["python"]
    random.setstate(
        (py["version"], tuple(int(v) for v in py["internal"].tolist()), py["gauss_next"])
    )
    npy = state["numpy"]
    np.random.set_state(
        (
            npy["name"],
            npy["keys"].numpy().astype(np.uint32),
            npy["pos"],
            npy["has_gauss"],
            npy["cached_gaussian"],
        )
    )
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda", [])
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


# ---------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class CheckpointInfo:
    """What a loaded checkpoint said about itself."""

    path: Path
    """File it was read from."""
    step: int
    """Number of completed training steps."""
    config: dict
    """The config saved with it (rebuilds the model(s))."""
    extra: dict
    """Free-form JSON data the trainer saved alongside."""


def checkpoint_name(step: int) -> str:
    """File name of the checkpoint at ``step``."""
    return f"step-{step:09d}.pt"


def list_checkpoints(directory: str | Path) -> list[Path]:
    """Checkpoint files in ``directory``, oldest step first."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    files = [p for p in directory.iterdir() if _STEP_FILE.match(p.name) and p.is_file()]
    return sorted(files, key=lambda p: int(_STEP_FILE.match(p.name).group(1)))


def latest_checkpoint(directory: str | Path) -> Path | None:
    """The newest checkpoint: the one ``latest`` names, else the highest step, else None."""
    directory = Path(directory)
    pointer = directory / LATEST_NAME
    if pointer.is_file():
        candidate = directory / pointer.read_text().strip()
        if _STEP_FILE.match(candidate.name) and candidate.is_file():
            return candidate
    files = list_checkpoints(directory)
    return files[-1] if files else None


def _state_of(obj: Any) -> Any:
    if isinstance(obj, torch.Generator):
        return obj.get_state()
    return obj.state_dict()


def _load_into(obj: Any, state: Any, name: str, path: Path) -> None:
    try:
        if isinstance(obj, torch.Generator):
            obj.set_state(state)
        else:
            obj.load_state_dict(state)
    except (RuntimeError, KeyError, ValueError, TypeError) as e:
        raise CheckpointError(f"{path}: cannot load entry {name!r}: {e}") from e


class CheckpointManager:
    """Save/restore training state in ``directory``; keeps the newest ``keep_last``.

    ``objects`` passed to :meth:`save`/:meth:`load` map names to anything with
    ``state_dict``/``load_state_dict`` (modules, optimisers, schedulers, grad
    scalers) or to ``torch.Generator``s; the same names must be used for both.
    """

    def __init__(self, directory: str | Path, keep_last: int = 3):
        if keep_last < 1:
            raise ValueError(f"CheckpointManager: keep_last must be >= 1, got {keep_last}")
        self.directory = Path(directory)
        self.keep_last = keep_last

    def latest(self) -> Path | None:
        """Path of the newest checkpoint, or None."""
        return latest_checkpoint(self.directory)

    def clear(self) -> None:
        """Delete every checkpoint and the ``latest`` pointer in the directory."""
        (self.directory / LATEST_NAME).unlink(missing_ok=True)
        for path in list_checkpoints(self.directory):
            path.unlink()

    def save(
        self,
        step: int,
        objects: Mapping[str, Any],
        config: Mapping[str, Any],
        extra: Mapping[str, Any] | None = None,
    ) -> Path:
        """Write the checkpoint of ``step`` (completed steps); returns its path."""
        payload = {
            "format": CHECKPOINT_FORMAT,
            "step": int(step),
            "config_json": json.dumps(config, sort_keys=True),
            "extra_json": json.dumps(extra or {}, sort_keys=True),
            "state": {name: _state_of(obj) for name, obj in objects.items()},
            "rng": get_rng_state(),
        }
        path = self.directory / checkpoint_name(step)
        with atomic_path(path) as tmp:
            torch.save(payload, tmp)
        write_text_atomic(self.directory / LATEST_NAME, path.name + "\n")
        for old in list_checkpoints(self.directory)[: -self.keep_last]:
            if old != path:
                old.unlink(missing_ok=True)
        return path

    def load(
        self,
        objects: Mapping[str, Any],
        path: str | Path | None = None,
        restore_rng: bool = True,
    ) -> CheckpointInfo | None:
        """Load ``path`` (default: the newest) into ``objects``; None when there is none.

        Every name in ``objects`` must be in the checkpoint and vice versa.
        """
        path = Path(path) if path is not None else self.latest()
        if path is None:
            return None
        payload = read_checkpoint(path)
        saved, wanted = set(payload["state"]), set(objects)
        if saved != wanted:
            raise CheckpointError(
                f"{path}: holds {sorted(saved)} but the trainer tracks {sorted(wanted)}; "
                "resume with the same models/optimisers, or start in a fresh directory"
            )
        for name, obj in objects.items():
            _load_into(obj, payload["state"][name], name, path)
        if restore_rng:
            set_rng_state(payload["rng"])
        return CheckpointInfo(
            path=path,
            step=payload["step"],
            config=json.loads(payload["config_json"]),
            extra=json.loads(payload["extra_json"]),
        )


def read_checkpoint(path: str | Path) -> dict:
    """The raw payload of a checkpoint file (weights-only load on the CPU)."""
    path = Path(path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"{path}: cannot read checkpoint ({e})") from e
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{path}: not a poseless checkpoint of format {CHECKPOINT_FORMAT} "
            f"(found {payload.get('format') if isinstance(payload, dict) else type(payload)})"
        )
    return payload


# ---------------------------------------------------------------------------
# Final artifacts
# ---------------------------------------------------------------------------


def sidecar_path(path: str | Path) -> Path:
    """``model.safetensors`` -> ``model.json`` (the config sidecar)."""
    return Path(path).with_suffix(".json")


def save_model(path: str | Path, model: torch.nn.Module, config: Mapping[str, Any]) -> None:
    """Write ``model``'s weights to ``path`` (safetensors) and ``config`` to its sidecar.

    Both writes are atomic; the sidecar also records the weights' sha256.
    """
    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"save_model: {path}: the file name must end in .safetensors")
    json.dumps(config)  # fail before writing anything if the config is not JSON
    with atomic_path(path) as tmp:
        _st_save_model(model, str(tmp), force_contiguous=True)
    write_json_atomic(
        sidecar_path(path),
        {"config": dict(config), "weights": path.name, "weights_sha256": file_sha256(path)},
    )


def load_model(
    path: str | Path,
    builder: Callable[[dict], torch.nn.Module],
    device: str | torch.device = "cpu",
) -> tuple[torch.nn.Module, dict]:
    """Rebuild a model saved by :func:`save_model`: ``builder(config)``, then load the weights.

    Returns (model on ``device`` in eval mode, config).
    """
    path = Path(path)
    side = sidecar_path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: model weights file not found")
    if not side.is_file():
        raise CheckpointError(f"{side}: config sidecar of {path.name} not found")
    meta = json.loads(side.read_text())
    sha = file_sha256(path)
    if meta.get("weights_sha256") not in (None, sha):
        raise CheckpointError(
            f"{path}: sha256 {sha[:12]}... differs from the sidecar's "
            f"{meta['weights_sha256'][:12]}... (weights and config out of step)"
        )
    model = builder(meta["config"])
    try:
        _st_load_model(model, str(path), strict=True, device="cpu")
    except RuntimeError as e:
        raise CheckpointError(f"{path}: weights do not fit the rebuilt model: {e}") from e
    return model.to(device).eval(), meta["config"]

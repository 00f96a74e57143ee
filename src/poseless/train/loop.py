"""A small training loop shared by every training stage.

The stage owns the maths: it writes ``step_fn(step) -> {loss name: value}``
that does one iteration (forwards, backwards, optimiser steps). The loop owns
the bookkeeping around it:

* a tqdm progress bar showing the current losses;
* ``metrics.jsonl`` (:mod:`poseless.train.metrics_log`): every ``log_every``
  steps one record with the step, wall time, each optimiser's lr and the mean
  of each loss over the steps since the previous record that returned it;
* a checkpoint every ``checkpoint_every`` steps and at the end
  (:class:`~poseless.train.checkpoint.CheckpointManager`), and **resume from the
  newest checkpoint** when run again after a kill: modules, optimisers,
  schedulers, grad scaler, tracked ``torch.Generator``s and the global RNGs are
  restored, so a resumed CPU run ends bit for bit where an uninterrupted one
  would (given a ``step_fn`` whose randomness comes from those generators or
  from the step index);
* NaN/Inf losses stop training with :class:`poseless.errors.TrainingError`
  naming the step and the loss term; nothing is saved for that step;
* mixed precision on CUDA only (``autocast`` / ``backward`` / ``step``
  helpers); on the CPU it is always off.

Usage::

    loop = TrainLoop(out_dir, LoopSettings(max_steps=1000), config=cfg_dict)
    model = Net().to(loop.device)
    opt = torch.optim.Adam(model.parameters(), 1e-4)
    loop.track(modules={"model": model}, optimizers={"opt": opt})

    def step_fn(step):
        opt.zero_grad(set_to_none=True)
        with loop.autocast():
            loss = model(batch(step)).mean()
        loop.backward(loss)
        loop.step(opt)
        return {"loss": loss}

    result = loop.run(step_fn)

Schedulers passed to :meth:`TrainLoop.track` are stepped by the loop once per
iteration, after ``step_fn`` (milestones are in iterations).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from tqdm import tqdm

from poseless.errors import TrainingError
from poseless.train.checkpoint import CheckpointManager
from poseless.train.metrics_log import MetricsLog
from poseless.utils import select_device, stable_hash

StepFn = Callable[[int], Mapping[str, Any]]


@dataclass(frozen=True)
class LoopSettings:
    """How long to train and how often to log and checkpoint."""

    max_steps: int
    """Total number of iterations (steps 0 .. max_steps - 1)."""
    log_every: int = 100
    """Append a metrics record every this many steps (and at the last step)."""
    checkpoint_every: int = 1000
    """Save a checkpoint every this many steps (and at the last step)."""
    keep_last: int = 2
    """Checkpoints kept on disk (older ones are deleted)."""
    mixed_precision: Literal["off", "bf16", "fp16"] = "off"
    """Autocast dtype on CUDA; ignored (off) on the CPU."""
    progress: bool = True
    """Show a tqdm progress bar."""
    resume: bool = True
    """Continue from the newest checkpoint in the output directory if there is one
    (False: delete the directory's checkpoints and start again)."""

    def __post_init__(self):
        for name in ("max_steps", "log_every", "checkpoint_every", "keep_last"):
            value = getattr(self, name)
            low = 0 if name == "max_steps" else 1
            if not isinstance(value, int) or value < low:
                raise ValueError(f"LoopSettings.{name}: must be an int >= {low}, got {value!r}")
        if self.mixed_precision not in ("off", "bf16", "fp16"):
            raise ValueError(
                "LoopSettings.mixed_precision: must be 'off', 'bf16' or 'fp16', "
                f"got {self.mixed_precision!r}"
            )


@dataclass(frozen=True)
class LoopResult:
    """What a finished :meth:`TrainLoop.run` did."""

    step: int
    """Completed steps (== max_steps)."""
    resumed_from: int | None
    """Step of the checkpoint the run resumed from (None: started fresh)."""
    checkpoint: Path | None
    """The newest checkpoint on disk."""
    metrics_path: Path
    """The JSON-lines metrics file."""
    last_losses: dict[str, float]
    """Loss values returned by the last step run (empty if none ran)."""


def _config_diff(saved: Mapping, current: Mapping, prefix: str = "") -> list[str]:
    diffs = []
    for key in sorted(set(saved) | set(current)):
        a, b = saved.get(key, "<missing>"), current.get(key, "<missing>")
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            diffs += _config_diff(a, b, f"{prefix}{key}.")
        elif a != b:
            diffs.append(f"{prefix}{key}: {a!r} -> {b!r}")
    return diffs


class TrainLoop:
    """Generic resumable training loop (see the module docstring).

    Args:
        out_dir: run directory; holds ``checkpoints/`` and ``metrics.jsonl``.
        settings: loop settings.
        config: JSON-serialisable config saved with every checkpoint (it must
            rebuild the models); a resume with a different config is refused.
            Keep the loop length out of it if runs may be extended.
        device: "auto", "cpu", "cuda", ... (:func:`poseless.utils.select_device`).
    """

    def __init__(
        self,
        out_dir: str | Path,
        settings: LoopSettings,
        config: Mapping[str, Any],
        device: str | torch.device = "auto",
    ):
        self.out_dir = Path(out_dir)
        self.settings = settings
        # JSON round trip: tuples become lists, exactly as the checkpoint stores them.
        self.config = json.loads(json.dumps(dict(config)))
        self.device = device if isinstance(device, torch.device) else select_device(device)
        use_amp = self.device.type == "cuda" and settings.mixed_precision != "off"
        self.amp_dtype = (
            {"bf16": torch.bfloat16, "fp16": torch.float16}[settings.mixed_precision]
            if use_amp
            else None
        )
        self.scaler = torch.amp.GradScaler("cuda") if self.amp_dtype == torch.float16 else None
        self.checkpoints = CheckpointManager(self.out_dir / "checkpoints", settings.keep_last)
        self.metrics = MetricsLog(self.out_dir / "metrics.jsonl")
        self.modules: dict[str, torch.nn.Module] = {}
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.schedulers: dict[str, Any] = {}
        self.generators: dict[str, torch.Generator] = {}
        self._stepped = False

    # -- registration and mixed-precision helpers ----------------------------

    def track(
        self,
        modules: Mapping[str, torch.nn.Module] | None = None,
        optimizers: Mapping[str, torch.optim.Optimizer] | None = None,
        schedulers: Mapping[str, Any] | None = None,
        generators: Mapping[str, torch.Generator] | None = None,
    ) -> None:
        """Register what is checkpointed (names must be stable across resumes)."""
        self.modules.update(modules or {})
        self.optimizers.update(optimizers or {})
        self.schedulers.update(schedulers or {})
        self.generators.update(generators or {})

    def autocast(self):
        """Context manager: autocast to the configured dtype on CUDA, else a no-op."""
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type="cuda", dtype=self.amp_dtype)

    def backward(self, loss: torch.Tensor, **kwargs) -> None:
        """``loss.backward()``, scaled when fp16 mixed precision is on."""
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward(**kwargs)

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        """``optimizer.step()``, through the grad scaler when fp16 mixed precision is on."""
        if self.scaler is not None:
            self.scaler.step(optimizer)
            self._stepped = True
        else:
            optimizer.step()

    # -- the loop --------------------------------------------------------------

    def _objects(self) -> dict[str, Any]:
        objects: dict[str, Any] = {}
        for kind, group in (
            ("module", self.modules),
            ("optimizer", self.optimizers),
            ("scheduler", self.schedulers),
            ("generator", self.generators),
        ):
            for name, obj in group.items():
                objects[f"{kind}/{name}"] = obj
        if self.scaler is not None:
            objects["grad_scaler"] = self.scaler
        return objects

    def _lrs(self) -> dict[str, float]:
        return {f"lr/{n}": float(o.param_groups[0]["lr"]) for n, o in self.optimizers.items()}

    def _check_finite(self, step: int, losses: Mapping[str, Any]) -> dict[str, float]:
        values = {}
        for name, value in losses.items():
            v = float(value.detach()) if isinstance(value, torch.Tensor) else float(value)
            if not math.isfinite(v):
                lrs = ", ".join(f"{k[3:]}={lr:g}" for k, lr in self._lrs().items())
                raise TrainingError(
                    f"{self.out_dir}: step {step}: loss term {name!r} is {v} (diverged). "
                    f"Lower the learning rate (now {lrs or 'n/a'}) or that term's weight and "
                    "start again in a fresh directory; nothing was saved for this step, "
                    f"the last checkpoint ({self.checkpoints.latest()}) is untouched."
                )
            values[name] = v
        return values

    def run(self, step_fn: StepFn) -> LoopResult:
        """Run (or resume) steps until ``settings.max_steps``; returns a :class:`LoopResult`."""
        s = self.settings
        objects = self._objects()
        if not s.resume:
            self.checkpoints.clear()
        info = self.checkpoints.load(objects) if s.resume else None
        start, wall_offset = 0, 0.0
        if info is not None:
            diffs = _config_diff(info.config, self.config)
            if diffs:
                raise TrainingError(
                    f"{info.path}: cannot resume, the config changed: {'; '.join(diffs)}. "
                    f"Restore it, or delete {self.checkpoints.directory} to start again."
                )
            start = info.step
            wall_offset = float(info.extra.get("wall_s", 0.0))
        self.metrics.truncate_after(start)
        for module in self.modules.values():
            module.train()

        last_ckpt = info.path if info is not None else None
        last_losses: dict[str, float] = {}
        # {name: [sum, count]} since the last metrics record (a term may come on some
        # steps only, e.g. G every 3rd); checkpointed so that a resumed run logs the
        # same means as an uninterrupted one.
        window: dict[str, list] = dict(info.extra.get("window", {})) if info else {}
        t0 = time.perf_counter()
        bar = tqdm(
            total=s.max_steps,
            initial=min(start, s.max_steps),
            disable=not s.progress,
            dynamic_ncols=True,
            desc=self.out_dir.name,
        )
        try:
            for step in range(start, s.max_steps):
                self._stepped = False
                losses = step_fn(step)
                last_losses = self._check_finite(step, losses)
                if self.scaler is not None and self._stepped:
                    self.scaler.update()
                for scheduler in self.schedulers.values():
                    scheduler.step()
                done = step + 1
                for k, v in last_losses.items():
                    acc = window.setdefault(k, [0.0, 0])
                    acc[0] += v
                    acc[1] += 1
                wall = wall_offset + time.perf_counter() - t0
                if done % s.log_every == 0 or done == s.max_steps:
                    means = {f"loss/{k}": total / n for k, (total, n) in window.items()}
                    self.metrics.append(
                        {"step": done, "wall_s": round(wall, 3), **self._lrs(), **means}
                    )
                    bar.set_postfix({k[5:]: f"{v:.4g}" for k, v in means.items()}, refresh=False)
                    window = {}
                if done % s.checkpoint_every == 0 or done == s.max_steps:
                    extra = {"wall_s": wall, "window": window}
                    last_ckpt = self.checkpoints.save(done, objects, self.config, extra=extra)
                bar.update(1)
        finally:
            bar.close()
        return LoopResult(
            step=max(start, s.max_steps),
            resumed_from=info.step if info is not None else None,
            checkpoint=last_ckpt,
            metrics_path=self.metrics.path,
            last_losses=last_losses,
        )


def keyed_loop(resume_dir: str | Path, key: Mapping, cfg: Any, device) -> TrainLoop:
    """A :class:`TrainLoop` whose checkpoints live in ``resume_dir/<hash of key>``.

    ``key`` identifies everything that makes a run resumable (config without
    loop-only fields, seed, camera, input hashes): a changed input starts a fresh
    run instead of refusing to resume, and the sub-folders of other keys are
    deleted. ``cfg`` supplies the loop fields (``iterations``, ``log_every``,
    ``checkpoint_every``, ``keep_last``, ``mixed_precision``, ``progress``).
    """
    resume_dir = Path(resume_dir)
    run_dir = resume_dir / stable_hash(json.dumps(key, sort_keys=True))
    if resume_dir.is_dir():
        for stale in sorted(p for p in resume_dir.iterdir() if p.is_dir() and p != run_dir):
            logging.getLogger(__name__).info("removing resume state of another config: %s", stale)
            shutil.rmtree(stale, ignore_errors=True)
    settings = LoopSettings(
        max_steps=cfg.iterations,
        log_every=cfg.log_every,
        checkpoint_every=cfg.checkpoint_every,
        keep_last=cfg.keep_last,
        mixed_precision=cfg.mixed_precision,
        progress=cfg.progress,
    )
    return TrainLoop(run_dir, settings, config=key, device=device)

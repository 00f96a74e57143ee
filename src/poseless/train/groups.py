"""Model groups of URA's stages (a) and (b): one GAN and pose regressor per category.

URA trains one model per category (REFERENCE "URA" schedules): a single generator
for chairs *and* airplanes collapses to one mode and its canonical frame fits
neither, so the pseudo poses it teaches are near chance. ``train_gan`` therefore
trains one generator per category of the train split (``train_gan.per_category``)
and writes each into a sub-folder named after the group; ``train_pose`` trains
one regressor per generator; ``predict_poses`` labels every item with its
category's regressor. With ``per_category: false`` there is one group, ``all``.

Layout of a grouped folder (``data/gan``, ``data/pose``)::

    groups.json          {"per_category": bool, "groups": [name, ...]}
    <group>/...          one model's artifacts
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import re
import signal
import sys
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from poseless.errors import PoselessError
from poseless.utils import LOG_FORMAT, write_json_atomic

GROUPS_FILE = "groups.json"
"""The group index of a grouped model folder."""
ALL = "all"
"""The one group's name when models are not split by category."""
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class GroupError(PoselessError):
    """A grouped model folder is missing, malformed, or lacks an item's group."""


@dataclass(frozen=True)
class Groups:
    """The models of a grouped folder."""

    per_category: bool
    """True: one model per category, named after it; False: one model, ``all``."""
    names: tuple[str, ...]
    """Group names, sorted; each is a sub-folder."""

    def of(self, category: str) -> str:
        """The group whose model serves an item of ``category``."""
        if not self.per_category:
            return ALL
        if category not in self.names:
            raise GroupError(
                f"category {category!r} has no model (trained groups: {', '.join(self.names)}); "
                "train_gan trains one per category of the train split"
            )
        return category


def make_groups(categories: Iterable[str], per_category: bool) -> Groups:
    """Groups for the train split's ``categories`` (a name each, or ``all``)."""
    cats = sorted({str(c) for c in categories})
    if not cats:
        raise GroupError("no categories: the train split is empty")
    if not per_category:
        return Groups(False, (ALL,))
    bad = [c for c in cats if not _NAME.match(c) or c == ALL]
    if bad:
        raise GroupError(
            f"categories {bad} cannot name a model folder (letters, digits, '_', '.', '-'; "
            f"not {ALL!r}); rename them or set train_gan.per_category: false"
        )
    return Groups(True, tuple(cats))


def configured_groups(params) -> tuple[str, ...] | None:
    """The groups a run of ``params`` (a :class:`poseless.config.Params`) will train, when
    the config alone tells: ``all``, or the synthetic adapter's categories; else None."""
    if not params.train_gan.per_category:
        return (ALL,)
    if params.prepare_data.adapter == "synthetic":
        return tuple(sorted(set(params.prepare_data.synthetic.categories)))
    return None


def write_groups(folder: str | Path, groups: Groups) -> None:
    """Write ``folder/groups.json``."""
    write_json_atomic(
        Path(folder) / GROUPS_FILE,
        {"per_category": groups.per_category, "groups": list(groups.names)},
    )


def read_groups(folder: str | Path, stage: str) -> Groups:
    """The groups of a grouped model folder written by ``stage`` (clear errors when absent)."""
    path = Path(folder) / GROUPS_FILE
    if not path.is_file():
        raise GroupError(f"{path}: missing; run the {stage} stage first")
    try:
        data = json.loads(path.read_text())
        per_category = data["per_category"]
        names = tuple(data["groups"])
    except (ValueError, KeyError, TypeError) as exc:
        raise GroupError(f"{path}: not a {stage} group index ({exc})") from exc
    if (
        not isinstance(per_category, bool)
        or not names
        or not all(isinstance(n, str) for n in names)
    ):
        raise GroupError(f"{path}: expected per_category (bool) and a non-empty list of groups")
    missing = [n for n in names if not (Path(folder) / n).is_dir()]
    if missing:
        raise GroupError(f"{path}: group folders {missing} are missing")
    return Groups(per_category, names)


def _die_with_parent(parent_pid: int) -> None:
    """Linux: have the kernel SIGKILL this worker when its parent dies, so that a killed
    stage leaves no orphan training on into its resume folder; exit now if the parent
    is already gone."""
    if sys.platform.startswith("linux"):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent_pid:
        os._exit(1)


def _init_worker(torch_threads: int, parent_pid: int) -> None:
    """A group worker: dies with the stage, ``torch_threads`` threads (the parent's
    OMP_NUM_THREADS is the whole job's) and the stages' log format on stderr."""
    _die_with_parent(parent_pid)
    import torch

    torch.set_num_threads(torch_threads)
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT, stream=sys.stderr)


def map_groups(
    fn: Callable[..., Any], names: Sequence[str], workers: int, **kwargs: Any
) -> dict[str, Any]:
    """``{group: fn(group, **kwargs)}`` for every group, in ``names`` order.

    ``workers <= 1`` (or one group) runs them one after another in this process.
    Otherwise up to ``workers`` spawned processes train groups side by side, each
    with ``workers // processes`` torch threads: the groups are independent (each
    seeds its own RNGs), so a group's result does not depend on which process ran
    it, only on its thread count. ``fn`` and ``kwargs`` must be picklable (a
    module-level function; no hooks). The first failure is re-raised.
    """
    names = list(names)
    processes = min(max(1, workers), len(names))
    if processes <= 1:
        return {name: fn(name, **kwargs) for name in names}
    threads = max(1, workers // processes)
    logging.getLogger("poseless").info(
        "training %d groups in %d processes of %d thread(s)", len(names), processes, threads
    )
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(
        processes, mp_context=context, initializer=_init_worker, initargs=(threads, os.getpid())
    ) as pool:
        futures = {name: pool.submit(fn, name, **kwargs) for name in names}
        try:
            return {name: futures[name].result() for name in names}
        except BaseException:
            for future in futures.values():
                future.cancel()
            raise

"""One group's GAN for stage ``train_gan``: train it, check its health, keep copies to inspect.

Module-level so that :func:`poseless.train.groups.map_groups` can run each group
in its own process.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from poseless.config import TrainGanConfig
from poseless.data.prepared import PreparedDataset
from poseless.geometry.cameras import LookAtCamera
from poseless.train.gan import last_losses, load_train_masks, raster_settings, train_gan
from poseless.train.gan_health import GanHealth, evaluate_gan_health
from poseless.train.metrics_log import CURVES_FILE, read_metrics, write_curves_csv
from poseless.utils import write_json_atomic

INSPECT = ("health.json", "samples.png", "curves.png")
"""Files copied into the resume folder's ``inspect/`` (kept when the stage fails)."""


def train_group(
    group: str,
    *,
    dataset_dir,
    per_category: bool,
    cfg: TrainGanConfig,
    out_root: Path,
    resume_root: Path,
    seed: int,
    camera: LookAtCamera,
    device: str,
    step_hook=None,
) -> tuple[GanHealth, dict, Path]:
    """Train and check one group's GAN into ``out_root/<group>``.

    Returns (health, its DVC metrics entry, the inspect folder). Module-level and
    picklable so that :func:`poseless.train.groups.map_groups` can run groups in
    separate processes.
    """
    dataset = PreparedDataset(dataset_dir)
    category = group if per_category else None
    masks = load_train_masks(dataset, cfg.image_size, cfg.binarize_real, category)
    out = out_root / group
    logging.getLogger("train_gan").info("group %s: %d training masks", group, masks.shape[0])
    result = train_gan(
        masks,
        cfg,
        out,
        resume_root / group,
        seed=seed,
        camera=camera,
        device=device,
        step_hook=step_hook,
    )
    health = evaluate_gan_health(
        result.generator,
        masks,
        cfg.health,
        camera=camera,
        raster=raster_settings(cfg, camera),
        azimuth_range_deg=cfg.azimuth_range_deg,
        seed=seed,
    )
    inspect = result.run_dir / "inspect"
    report = health.to_dict()
    write_json_atomic(out / "health.json", report)
    records = read_metrics(result.metrics_path)
    write_curves_csv(out / CURVES_FILE, records)  # DVC plots
    entry = {
        **report,
        "iterations": result.steps,
        "n_train_masks": int(masks.shape[0]),
        "last_losses": last_losses(records),
    }
    inspect.mkdir(parents=True, exist_ok=True)
    for name in INSPECT:
        if (out / name).is_file():
            shutil.copyfile(out / name, inspect / name)
    return health, entry, inspect

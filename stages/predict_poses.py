"""Stage predict_poses: the pseudo pose (azimuth) of every prepared image's mask.

By the trained regressor of the item's category (``--pose``; URA), or, with
``predict_poses.method: gan_retrieval``, by the azimuth of the most similar render of
its category's generator (``--gan``), rendered at the size and camera the GAN was
trained with (``--gan``'s config.yaml); with ``predict_poses.retrieval_prior: gan`` the
retrieved azimuths of each category are made to follow the GAN's pose prior (its
``azimuth_range_deg``). With ``predict_poses.frame: mirror`` each
category's azimuths are rotated so that its mirror plane is x = 0 (the metrics JSON
records the rotation and the share of items that agree on it).

Writes ``--out`` atomically (a temporary folder next to it, then renamed):
poses.parquet (id, split, category, azimuth_deg [, gt_azimuth_deg, error_deg]),
histogram.png and config.yaml; and the DVC metrics JSON ``--metrics`` (errors
after the best global alignment where the dataset has GT azimuths, else counts).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from poseless.cli import run_stage, stage_parser, write_provenance
from poseless.config import load_params
from poseless.data.prepared import PreparedDataset
from poseless.train.groups import read_groups
from poseless.train.pose import load_generator, load_regressor
from poseless.train.predict_poses import (
    GanRetrieval,
    gan_azimuth_range,
    gan_render_settings,
    predict_dataset,
    write_pose_figure,
)
from poseless.utils import atomic_path, select_device, write_json_atomic

PARAMS = ("seed", "predict_poses")
STAGE = "predict_poses"


def main(argv: list[str] | None = None) -> None:
    parser = stage_parser(__doc__)
    parser.add_argument("--pose", default="data/pose", help="train_pose output folder")
    parser.add_argument(
        "--gan", default="data/gan", help="train_gan output folder (method gan_retrieval)"
    )
    parser.add_argument("--dataset", default="data/prepared", help="prepared dataset folder")
    parser.add_argument("--out", default="data/poses", help="output folder")
    parser.add_argument(
        "--metrics", default="data/metrics/predict_poses.json", help="DVC metrics JSON"
    )
    args = parser.parse_args(argv)
    params = load_params(args.params, sections=PARAMS)
    cfg = params.predict_poses
    device = select_device(args.device)
    regressors = {}
    if cfg.method == "gan_retrieval":
        # the bank is rendered as the GAN's critic saw its samples: its size and camera
        groups = read_groups(args.gan, "train_gan")
        size, camera = gan_render_settings(args.gan)
        # the GAN's pose prior: only read where the retrieval follows it
        azimuth_range = (
            gan_azimuth_range(args.gan) if cfg.retrieval_prior == "gan" else (0.0, 360.0)
        )
        for group in groups.names:
            G = load_generator(Path(args.gan) / group, device)
            bank = GanRetrieval.from_generator(
                G,
                camera,
                size,
                cfg.retrieval_codes,
                cfg.retrieval_step_deg,
                seed=params.seed,
                azimuth_range_deg=azimuth_range,
            )
            regressors[group] = (bank, size)
    else:
        groups = read_groups(args.pose, "train_pose")
        for group in groups.names:
            regressor, info = load_regressor(Path(args.pose) / group, device)
            regressors[group] = (regressor, info.input_size)
    dataset = PreparedDataset(args.dataset)

    def progress(batches):
        return tqdm(batches, desc=STAGE, unit="batch", file=sys.stderr)

    table, metrics = predict_dataset(regressors, groups, dataset, cfg, device, progress)
    with atomic_path(args.out) as tmp:
        tmp.mkdir(parents=True)
        pq.write_table(pa.Table.from_pandas(table, preserve_index=False), tmp / "poses.parquet")
        write_pose_figure(tmp / "histogram.png", table)
        write_provenance(
            tmp,
            STAGE,
            params.to_dict(),
            {
                "groups": list(groups.names),
                "method": cfg.method,
                "input_size": {g: n for g, (_, n) in regressors.items()},
            },
        )
    write_json_atomic(args.metrics, metrics)
    overall = metrics.get("overall")
    summary = (
        f"median aligned error {overall['median_error_deg']:.1f} deg"
        if overall
        else "no ground-truth azimuths"
    )
    for group, frame in metrics.get("mirror_frames", {}).items():
        summary += (
            f"; {group}: mirror frame at {frame['offset_deg']:.1f} deg "
            f"({frame['agreement']:.0%} of items agree)"
        )
    for group, match in metrics.get("retrieval_prior", {}).items():
        summary += (
            f"; {group}: the GAN's pose prior moved {match['masks']['moved']:.0%} of the "
            f"retrievals (mean IoU given up {match['masks']['iou_given_up']:.3f})"
        )
    print(f"{STAGE}: {len(table)} items, {summary} -> {args.out}", file=sys.stderr)


if __name__ == "__main__":
    run_stage(main)

"""Where do URA's pseudo poses go wrong: the GAN's shape, or the regressor?

For each category (generator group) of a finished run, nearest-neighbour pose
estimates of the real masks, each scored after the best global azimuth alignment
(offset and reflection, as ``predict_poses`` scores the regressor):

* ``gan_nn``: the azimuth of the most similar (mask IoU) render of the GAN, over
  ``--codes`` codes x azimuths every ``--step`` degrees. When this fails too, the
  generator's shape is wrong: its silhouettes match the real ones at the wrong
  azimuths (the shape-pose ambiguity left unresolved), and no regressor trained on
  its renders can do better.
  Also ``mirror``: the mirror frame ``predict_poses.frame: mirror`` fits from these
  retrievals and the flipped masks' (c, its agreement) and ``plane_error_deg``, how far
  that plane lies from the true one (the GT alignment offset after rotating by c,
  away from 0 or 180 deg).
* ``gan_prior``: the same renders, retrieved under the GAN's pose prior (uniform over
  the circle; ``predict_poses.retrieval_prior: gan``, balanced transport at
  ``--prior-epsilon``), with ``moved``, the share of items it moved. A GAN that folds
  the circle (most masks retrieved on one half, front and back confused for a whole
  arc of views) fails ``gan_nn`` and passes here.
* ``real_nn``: the ground-truth azimuth of the most similar *other* real mask of the
  category: the ceiling of silhouette matching at this resolution.
* ``regressor``: the ``predict_poses`` table's aligned error (when ``--poses``).
* ``regressor_on_gan``: the trained regressor (``--pose``) on the GAN renders above,
  against their true azimuths (same frame, no alignment). Small here and large on the
  real masks: the regressor fits the generator's shapes and does not transfer to the
  real ones (too little shape diversity in the GAN), not a training failure.

Each aligned entry has ``flip``: the share of errors above 150 deg (front and back
confused: a GAN shape that is nearly symmetric front to back at this resolution).

    .venv/bin/python benchmarks/diagnose_pseudo_poses.py                # data/ of the last run
    .venv/bin/python benchmarks/diagnose_pseudo_poses.py --gan data/gan --size 48

Prints one JSON object per category and a small table. Needs ground-truth azimuths
(the synthetic data, ShapeNet/NMR).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from poseless.data.prepared import PreparedDataset
from poseless.geometry.cameras import LookAtCamera
from poseless.models.pose_regressor import angle_error_deg
from poseless.train.groups import read_groups
from poseless.train.pose import load_generator, load_regressor
from poseless.train.predict_poses import (
    GanRetrieval,
    fit_alignment,
    fit_mirror_frame,
    gan_render_settings,
    mask_iou,
    predict_azimuths,
    prior_matched_bins,
    render_azimuth_grid,
    resize_masks,
)


def error_summary(e: np.ndarray) -> dict:
    """Median, accuracies and front/back flip share of absolute azimuth errors (degrees)."""
    return {
        "median_deg": round(float(np.median(e)), 1),
        "acc@15": round(float((e < 15).mean()), 3),
        "acc@30": round(float((e < 30).mean()), 3),
        "flip": round(float((e > 150).mean()), 3),
    }


def aligned(pred_deg: np.ndarray, gt_deg: np.ndarray) -> dict:
    return error_summary(fit_alignment(pred_deg, gt_deg, allow_reflection=True).errors_deg)


def mirror_frame(
    a: np.ndarray, real: torch.Tensor, fake: torch.Tensor, fake_az: np.ndarray, gt, size: int
):
    """The mirror frame fitted from retrievals of the masks and their flips, and its error.

    a: (N,) retrieved azimuths of ``real``, (N, size * size) binary masks; fake: the GAN
    renders at ``fake_az``; gt: (N,) GT azimuths.
    """
    flipped = real.view(-1, size, size).flip(-1).flatten(1)
    a_flipped = fake_az[mask_iou(flipped, fake).argmax(1).numpy()]
    frame = fit_mirror_frame(a, a_flipped)
    offset = fit_alignment(a - frame.offset_deg, gt, allow_reflection=True).offset_deg
    return {
        "offset_deg": round(frame.offset_deg, 1),
        "agreement": round(frame.agreement, 3),
        "plane_error_deg": round(abs((offset + 90.0) % 180.0 - 90.0), 1),
    }


def regressor_on_renders(
    pose_dir: Path, renders: torch.Tensor, azimuths: np.ndarray, size: int
) -> dict:
    """Error of a trained regressor on GAN renders (N, size * size) at known azimuths."""
    regressor, info = load_regressor(pose_dir, "cpu")
    masks = renders.view(-1, 1, size, size)
    pred = predict_azimuths(
        regressor, masks.split(256), info.input_size, torch.device("cpu"), binarize=True
    )
    e = angle_error_deg(torch.from_numpy(pred), torch.from_numpy(azimuths)).numpy()
    return error_summary(e)


def gan_renders(gan_dir: Path, codes: int, step: float, size: int, camera: LookAtCamera, seed: int):
    """(codes * n_az, size * size) binary renders and their (codes * n_az,) azimuths."""
    G = load_generator(gan_dir, "cpu")
    renders, azimuths = render_azimuth_grid(G, camera, size, codes, step, seed)
    return renders.flatten(1).float(), azimuths


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="data/prepared")
    parser.add_argument("--gan", default="data/gan")
    parser.add_argument("--poses", default="data/poses/poses.parquet")
    parser.add_argument("--pose", default="data/pose", help="train_pose output (regressors)")
    parser.add_argument(
        "--size", type=int, default=None, help="mask side (default: the GAN's image_size)"
    )
    parser.add_argument("--codes", type=int, default=8)
    parser.add_argument("--step", type=float, default=5.0, help="azimuth grid step, degrees")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--prior-epsilon", type=float, default=0.01, help="gan_prior: transport entropy"
    )
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    ds = PreparedDataset(args.dataset)
    groups = read_groups(args.gan, "train_gan")
    # render as the GAN's critic saw its samples: the size and camera train_gan recorded
    gan_size, camera = gan_render_settings(args.gan)
    if args.size is None:
        args.size = gan_size
    table = pd.read_parquet(args.poses) if Path(args.poses).is_file() else None
    manifest = ds.manifest
    rows = []
    for group in groups.names:
        items = manifest if not groups.per_category else manifest[manifest.category == group]
        ids = items.id.tolist()
        gt = items.azimuth_deg.to_numpy(np.float64)
        if not np.isfinite(gt).all():
            raise SystemExit(f"{args.dataset}: {group} items lack ground-truth azimuths")
        real = resize_masks(ds.load(ids).masks.float(), args.size)[:, 0] > 0.5
        real = real.flatten(1).float()
        fake, fake_az = gan_renders(
            Path(args.gan) / group, args.codes, args.step, args.size, camera, args.seed
        )
        to_gan = mask_iou(real, fake)
        to_real = mask_iou(real, real).fill_diagonal_(-1.0)
        gan_az = fake_az[to_gan.argmax(1).numpy()]
        bank = GanRetrieval(fake.view(-1, args.size, args.size) > 0.5, fake_az)
        scores = bank.scores(real.view(-1, 1, args.size, args.size)).numpy()
        choice, match = prior_matched_bins(scores, bank.prior, args.prior_epsilon)
        row = {
            "group": group,
            "n": len(ids),
            "gan_nn": aligned(gan_az, gt)
            | {"best_iou": round(float(to_gan.max(1).values.mean()), 3)}
            | {"mirror": mirror_frame(gan_az, real, fake, fake_az, gt, args.size)},
            "gan_prior": aligned(bank.grid_deg[choice], gt) | {"moved": round(match.moved, 3)},
            "real_nn": aligned(gt[to_real.argmax(1).numpy()], gt)
            | {"best_iou": round(float(to_real.max(1).values.mean()), 3)},
        }
        if table is not None and "error_deg" in table:
            e = table.set_index("id").loc[ids, "error_deg"].to_numpy(np.float64)
            row["regressor"] = error_summary(e)
        if (Path(args.pose) / group).is_dir():
            row["regressor_on_gan"] = regressor_on_renders(
                Path(args.pose) / group, fake, fake_az, args.size
            )
        rows.append(row)
        print(json.dumps(row))
    print(
        "\n| group | regressor median (flip) | regressor on GAN renders "
        "| GAN-render NN median (flip, IoU) | under the GAN's prior (flip, moved) "
        "| mirror plane error (agreement) | real NN median (IoU) |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        reg = r.get("regressor")
        reg = f"{reg['median_deg']} ({reg['flip']})" if reg else "—"
        on_gan = r.get("regressor_on_gan", {}).get("median_deg", "—")
        g, p, q = r["gan_nn"], r["gan_prior"], r["real_nn"]
        m = g["mirror"]
        print(
            f"| {r['group']} | {reg} | {on_gan} | {g['median_deg']} ({g['flip']}, {g['best_iou']}) "
            f"| {p['median_deg']} ({p['flip']}, {p['moved']}) "
            f"| {m['plane_error_deg']} ({m['agreement']}) | {q['median_deg']} ({q['best_iou']}) |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

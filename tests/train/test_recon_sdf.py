"""ShapeClipper / poseless SDF reconstructor end to end on a tiny prepared dataset (CPU)."""

import math

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from poseless.config import PrepareDataConfig, TrainReconConfig
from poseless.data.prepare import write_prepared
from poseless.data.prepared import DatasetError, PreparedDataset
from poseless.data.raw import RawItem
from poseless.errors import PoselessError
from poseless.geometry.cameras import kato_extrinsics
from poseless.geometry.rotations import kato_to_shapeclipper, shapeclipper_extrinsics
from poseless.train.metrics_log import read_metrics
from poseless.train.recon import load_recon_data, load_reconstructor, train_recon
from poseless.train.recon_sdf import (
    on_white,
    read_normal_maps,
    supervision_weight,
    training_camera,
)

SIZE = 32
N_TRAIN = 6
TINY = {
    "iterations": 2,
    "batch_size": 2,
    "log_every": 1,
    "checkpoint_every": 100,
    "render_items": 2,
    "lr": 1e-3,
    "sdf": {
        "encoder": "resnet18",
        "input_size": 0,
        "rays_per_image": 32,
        "n_samples": 8,
        "field_width": 16,
        "sphere_iterations": 1,
        "sphere_points": 64,
        "eikonal_points": 16,
        "d2_image_size": 16,
        "d2_samples": 4,
        "grid_resolution": 12,
    },
}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def disc_items(n: int, n_train: int) -> list[RawItem]:
    yy, xx = np.mgrid[:SIZE, :SIZE]
    g = np.random.default_rng(0)
    items = []
    for k in range(n):
        r = 5 + k % 5
        mask = (((yy - 16) ** 2 + ((xx - 15) * (1 + 0.1 * k)) ** 2) <= r * r).astype(np.uint8) * 255
        rgb = np.full((SIZE, SIZE, 3), 255, np.uint8)
        rgb[mask > 0] = g.integers(0, 200, 3)
        items.append(
            RawItem(
                f"d{k}",
                "disc",
                f"s{k}",
                rgb,
                mask,
                "train" if k < n_train else "test",
                azimuth_deg=30.0 * k,
                elevation_deg=30.0,
                distance=2.732,
            )
        )
    return items


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """Prepared dataset (grey background), fake kNN table, fake normals, fake pseudo poses."""
    root = tmp_path_factory.mktemp("sdf")
    cfg = PrepareDataConfig(
        crop="none", image_size=SIZE, contact_sheet_items=0, background=(0.5, 0.5, 0.5)
    )
    write_prepared(
        disc_items(N_TRAIN + 2, N_TRAIN),
        cfg,
        root / "prepared",
        split_fractions=(1.0, 0.0, 0.0),
        camera={"fov_deg": 30.0, "distance": 2.732},
    )
    ds = PreparedDataset(root / "prepared")
    ids = ds.ids()
    # kNN: the next three items cyclically (test items included: they must be skipped).
    (root / "knn").mkdir()
    pd.DataFrame(
        {
            "id": ids,
            "neighbours": [[ids[(i + j) % len(ids)] for j in (1, 2, 3)] for i in range(len(ids))],
            "similarities": [[0.9, 0.8, 0.7]] * len(ids),
        }
    ).to_parquet(root / "knn" / "neighbours.parquet")
    # Normals: camera-facing (0, 0, -1) inside the mask, in reversed row order.
    batch = ds.load(ids)
    normals = np.zeros((len(ids), 3, SIZE, SIZE), np.float16)
    normals[:, 2] = -(batch.masks[:, 0].numpy() > 0.5).astype(np.float16)
    (root / "normals").mkdir()
    np.save(root / "normals" / "normals.npy", normals[::-1].copy())
    (root / "normals" / "ids.txt").write_text("\n".join(ids[::-1]) + "\n")
    pd.DataFrame(
        {"id": ids, "azimuth_deg": [(37.0 * k) % 360 for k in range(len(ids))]}
    ).to_parquet(root / "poses.parquet")
    return root, ds


def settings(name: str, **experiment):
    return TrainReconConfig(common=TINY, experiments={name: experiment}).resolve(name)


def load(inputs, s):
    root, ds = inputs
    return load_recon_data(
        ds,
        s,
        root / "poses.parquet",
        needs_camera=False,
        knn=root / "knn",
        normals=root / "normals",
    )


def run(inputs, tmp_path, name, tag="run", **experiment):
    s = settings(name, **experiment)
    data = load(inputs, s)
    out, resume = tmp_path / tag / "out", tmp_path / tag / "resume"
    return train_recon(data, s, 5, out, resume, "cpu", progress=False), out, resume


EXPECTED = {
    "shapeclipper": {"ssc_rgb", "ssc_mask", "normal", "ssc_normal"},
    "shapeclipper_no_ssc": {"normal"},
    "shapeclipper_no_normal": {"ssc_rgb", "ssc_mask"},
    "shapeclipper_no_noise_tol": {"ssc_rgb", "ssc_mask", "normal", "ssc_normal"},
    "poseless": {"ssc_rgb", "ssc_mask", "normal", "ssc_normal", "pose_azimuth", "d2", "adv"},
}
COMPARED = ("model.safetensors", "metrics.jsonl", "renders.png")
"""The files a resumed run must reproduce bit for bit."""
FINISHED: dict[str, dict[str, bytes]] = {}
"""The COMPARED files of each finished run, by experiment (the resume test reuses the
uninterrupted one; bytes, not paths: a passed test's tmp_path is deleted)."""
OPTIONAL = {"ssc_rgb", "ssc_mask", "normal", "ssc_normal", "pose_azimuth", "d2", "d2_gp", "adv"}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_experiment_trains_saves_and_predicts(inputs, tmp_path, name):
    extra = {"sdf": {"pose_supervision": {"init_iterations": 1}}} if name == "poseless" else {}
    result, out, resume = run(inputs, tmp_path, name, **extra)
    FINISHED[name] = {f: (out / f).read_bytes() for f in COMPARED}
    assert result.steps == 3 and result.resumed_from is None  # 1 sphere + 2 main
    assert {p.name for p in out.iterdir()} == {
        "model.safetensors",
        "model.json",
        "metrics.jsonl",
        "renders.png",
    }
    assert (resume / "checkpoints").is_dir()
    records = read_metrics(out / "metrics.jsonl")
    assert [r["step"] for r in records] == [1, 2, 3]
    assert "loss/sphere" in records[0] and "loss/rgb" not in records[0], "step 1 is pre-training"
    main = records[1]
    assert {"loss/rgb", "loss/mask", "loss/eikonal", "loss/azimuth_prior"} <= set(main)
    assert {"loss/camera_margin", "loss/camera_symmetry"} <= set(main)
    present = {k[5:] for k in main if k[5:] in OPTIONAL}
    assert present - {"d2_gp"} == EXPECTED[name], f"{name}: loss terms {sorted(present)}"
    if name == "poseless":
        assert "loss/adv" not in records[2], "adversarial term only every 3rd main iteration"
    with Image.open(out / "renders.png") as im:
        assert im.size == (3 * (SIZE + 2) + 2, 2 * (SIZE + 2) + 2)

    rec = load_reconstructor(out, "cpu")
    assert rec.representation == "sdf" and rec.config["camera"]["distance"] == 2.732
    _, ds = inputs
    batch = ds.load(ds.ids("test"))
    pred = rec.predict(batch.images, batch.masks)
    assert len(pred.meshes) == 2
    for vertices, faces in pred.meshes:
        assert vertices.ndim == 2 and vertices.shape[1] == 3 and faces.shape[1] == 3
        assert len(faces) > 0, "a freshly sphere-initialised field must give a mesh"
        assert np.abs(vertices).max() <= 0.6 + 1e-5
    assert pred.azimuth_deg.shape == (2,) and pred.R.shape == (2, 3, 3)
    assert ((pred.azimuth_deg >= 0) & (pred.azimuth_deg < 360)).all()
    np.testing.assert_allclose(
        pred.R @ pred.R.transpose(0, 2, 1), np.eye(3)[None].repeat(2, 0), atol=1e-5
    )


def test_resume_after_kill_is_bitwise_equal(inputs, tmp_path):
    name = "poseless"
    extra = {"sdf": {"pose_supervision": {"init_iterations": 1}}}
    full = FINISHED.get(name)
    if full is None:
        full_dir = run(inputs, tmp_path, name, tag="full", **extra)[1]
        full = {f: (full_dir / f).read_bytes() for f in COMPARED}
    s = settings(name, **extra)
    data = load(inputs, s)
    out, resume = tmp_path / "killed" / "out", tmp_path / "killed" / "resume"
    short = TrainReconConfig(
        common={**TINY, "iterations": 1, "checkpoint_every": 1}, experiments={name: extra}
    ).resolve(name)
    train_recon(data, short, 5, tmp_path / "killed" / "tmp", resume, "cpu", progress=False)
    result = train_recon(data, s, 5, out, resume, "cpu", progress=False)
    assert result.resumed_from == 2 and result.steps == 3
    for f in COMPARED:
        assert (out / f).read_bytes() == full[f], f"{f} differs after resume"


def test_inputs_are_required_exactly_when_used(inputs):
    root, ds = inputs
    s = settings("shapeclipper")
    with pytest.raises(PoselessError, match="--knn"):
        load_recon_data(ds, s, None, needs_camera=False, normals=root / "normals")
    with pytest.raises(PoselessError, match="--normals"):
        load_recon_data(ds, s, None, needs_camera=False, knn=root / "knn")
    with pytest.raises(PoselessError, match="--poses"):
        load_recon_data(ds, settings("poseless"), None, knn=root / "knn", normals=root / "normals")
    data = load_recon_data(ds, settings("shapeclipper_no_ssc"), None, normals=root / "normals")
    assert data.neighbours is None and data.normals is not None and data.azimuth_deg is None
    data = load_recon_data(ds, settings("shapeclipper_no_normal"), None, knn=root / "knn")
    assert data.normals is None and data.neighbours is not None
    assert data.background == (0.5, 0.5, 0.5) and data.camera.distance == 2.732


def test_normal_maps_follow_their_ids(inputs, tmp_path):
    root, ds = inputs
    ids = ds.ids("train")
    maps = read_normal_maps(root / "normals", ids, (SIZE, SIZE))
    got = maps.batch(torch.tensor([0, 3]), "cpu")
    masks = ds.load([ids[0], ids[3]]).masks
    assert torch.equal(got[:, 2], -(masks[:, 0] > 0.5).float())
    with pytest.raises(DatasetError, match=r"expected \(N, 3, 16, 16\)"):
        read_normal_maps(root / "normals", ids, (16, 16))
    with pytest.raises(FileNotFoundError, match="run estimate_normals first"):
        read_normal_maps(tmp_path, ids, (SIZE, SIZE))
    with pytest.raises(DatasetError, match="no normals for 1 training item"):
        read_normal_maps(root / "normals", [*ids, "zz"], (SIZE, SIZE))


def test_white_composite_and_camera(inputs):
    _, ds = inputs
    b = ds.load(ds.ids()[:2])
    white = on_white(b.images, b.masks, (0.5, 0.5, 0.5))
    off = b.masks < 0.5
    assert torch.allclose(white[off.expand_as(white)], torch.ones(()))
    on = b.masks > 0.5
    assert torch.equal(white[on.expand_as(white)], b.images[on.expand_as(b.images)])
    s = settings("shapeclipper")
    data = load_recon_data(ds, settings("bl_unsup"), None, needs_camera=False)
    assert training_camera(data, s.sdf).fov_deg == 30.0
    no_cam = data.__class__(**{**data.__dict__, "camera": None})
    cam = training_camera(no_cam, s.sdf)
    assert cam.distance == 5.0 and math.isclose(math.tan(math.radians(cam.fov_deg) / 2), 1 / 8)


def test_viewpoint_camera_mapping_matches_kato():
    """A ShapeClipper pose (-a, e, 0, 1) at the dataset distance is the Kato camera (a, e)."""
    az, el = torch.tensor([0.3, 2.0]), torch.tensor([0.5, -0.2])
    a, e, r, scale = kato_to_shapeclipper(az, el, 2.732, base_distance=2.732)
    R, t = shapeclipper_extrinsics(a, e, r, scale, base_distance=2.732)
    Rk, tk = kato_extrinsics(az, el, 2.732)
    assert torch.allclose(R, Rk, atol=1e-5) and torch.allclose(t, tk, atol=1e-5)


def test_supervision_weight_decays_linearly():
    s = settings("poseless", sdf={"pose_supervision": {"decay_iterations": 4}}).sdf
    assert [supervision_weight(s, k) for k in (-1, 0, 2, 4, 9)] == [1.0, 1.0, 0.5, 0.0, 0.0]
    assert supervision_weight(settings("poseless").sdf, 10**6) == 1.0

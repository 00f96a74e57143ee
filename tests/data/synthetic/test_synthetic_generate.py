"""The synthetic adapter: items, ground truth, splits, view distributions, determinism, config errors."""

import dataclasses
import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from poseless.config import AzimuthConfig, ElevationConfig, SyntheticConfig
from poseless.data.prepared import GT_KEYS
from poseless.data.synthetic import (
    SHAPE_PARAM_DIM,
    check_config,
    iter_items,
    sample_azimuths,
    sample_elevations,
)
from poseless.geometry.cameras import kato_extrinsics

TINY = SyntheticConfig(
    categories=("chair", "mug"),
    instances_per_category=4,
    views_per_instance=2,
    split_fractions=(0.5, 0.25, 0.25),
    render_size=24,
    voxel_resolution=12,
    n_surface_points=64,
    workers=1,
)


def _cfg(**kw):
    return dataclasses.replace(TINY, **kw)


def _item_bytes(items):
    """Everything an item holds, as one comparable list."""
    out = []
    for it in items:
        out += [it.id, it.category, it.source, it.split, it.instance]
        out += [it.azimuth_deg, it.elevation_deg, it.distance, it.rgb.tobytes(), it.mask.tobytes()]
        out += [(k, it.gt[k].dtype.str, it.gt[k].shape, it.gt[k].tobytes()) for k in sorted(it.gt)]
    return out


@pytest.fixture(scope="module")
def tiny_items():
    return list(iter_items(TINY, seed=7))


def test_ids_order_and_metadata(tiny_items):
    ids = [it.id for it in tiny_items]
    expected = []
    for cat in ("chair", "mug"):
        for k in range(4):
            expected += [f"{cat}_{k:05d}", f"{cat}_{k:05d}_v1"]
    assert ids == expected
    for it in tiny_items:
        k = int(it.instance.split("_")[1])
        assert it.instance == f"{it.category}_{k:05d}"
        assert it.source == f"synthetic:seed=7:{it.category}:{k}"
        assert it.distance == TINY.distance and it.elevation_deg == 30.0
        assert 0.0 <= it.azimuth_deg < 360.0
        assert it.rgb.shape == (24, 24, 3) and it.rgb.dtype == np.uint8
        assert it.mask.shape == (24, 24) and it.mask.dtype == np.uint8
        assert set(np.unique(it.mask)) <= {0, 255} and (it.mask == 255).sum() > 10
    # the two views of an instance differ in pose
    assert tiny_items[0].azimuth_deg != tiny_items[1].azimuth_deg


def test_ground_truth_keys_dtypes_and_consistency(tiny_items):
    for it in tiny_items:
        gt = it.gt
        assert set(gt) == set(GT_KEYS), set(gt) ^ set(GT_KEYS)
        V, F = len(gt["vertices"]), len(gt["faces"])
        assert gt["vertices"].dtype == np.float32 and gt["vertices"].shape == (V, 3)
        assert np.abs(gt["vertices"]).max() <= 0.5 + 1e-6
        assert gt["faces"].dtype == np.int32 and gt["faces"].shape == (F, 3)
        assert gt["faces"].max() < V
        assert gt["voxels"].dtype == bool and gt["voxels"].shape == (12, 12, 12)
        assert gt["voxels"].any()
        assert gt["points"].shape == (64, 3) and gt["points"].dtype == np.float32
        assert gt["point_normals"].shape == (64, 3) and gt["point_normals"].dtype == np.float32
        assert np.allclose(np.linalg.norm(gt["point_normals"], axis=1), 1.0, atol=1e-5)
        assert gt["normals"].dtype == np.float16 and gt["normals"].shape == (3, 24, 24)
        assert gt["depth"].dtype == np.float32 and gt["depth"].shape == (24, 24)
        on = it.mask == 255
        assert np.all((np.abs(gt["normals"]).sum(0) > 0) == on), (
            "normals nonzero exactly on the mask"
        )
        assert np.all((gt["depth"] > 0) == on), "depth positive exactly on the mask"
        assert gt["R"].dtype == np.float32 and gt["R"].shape == (3, 3)
        assert gt["t"].dtype == np.float32 and gt["t"].shape == (3,)
        assert (
            gt["fov_deg"].dtype == np.float32
            and gt["fov_deg"].shape == ()
            and gt["fov_deg"] == 30.0
        )
        assert gt["shape_params"].dtype == np.float32 and gt["shape_params"].shape == (
            SHAPE_PARAM_DIM,
        )
        R, t = kato_extrinsics(
            torch.tensor([math.radians(it.azimuth_deg)], dtype=torch.float64),
            torch.tensor([math.radians(it.elevation_deg)], dtype=torch.float64),
            it.distance,
        )
        assert np.allclose(gt["R"], R[0].numpy(), atol=1e-6), "R does not match the azimuth"
        assert np.allclose(gt["t"], t[0].numpy(), atol=1e-6), "t does not match the pose"
    # views of one instance share the shape ground truth, not the view ground truth
    a, b = tiny_items[0].gt, tiny_items[1].gt
    assert a["vertices"].tobytes() == b["vertices"].tobytes()
    assert a["R"].tobytes() != b["R"].tobytes()


def test_splits_by_instance_exact_fractions(tiny_items):
    per_instance = {}
    for it in tiny_items:
        per_instance.setdefault(it.instance, set()).add(it.split)
    assert all(len(s) == 1 for s in per_instance.values()), "views of one instance split apart"
    for cat in ("chair", "mug"):
        splits = [next(iter(s)) for i, s in per_instance.items() if i.startswith(cat)]
        assert sorted(splits) == ["test", "train", "train", "val"], splits


def test_deterministic_and_independent_of_category_selection(tiny_items):
    again = list(iter_items(TINY, seed=7))
    assert _item_bytes(again) == _item_bytes(tiny_items)
    alone = list(iter_items(_cfg(categories=("mug",)), seed=7))
    assert _item_bytes(alone) == _item_bytes(tiny_items[8:]), "mug items depend on other categories"
    other = list(iter_items(_cfg(instances_per_category=1, views_per_instance=1), seed=8))
    assert other[0].rgb.tobytes() != tiny_items[0].rgb.tobytes(), "seed has no effect"


def test_workers_do_not_change_bytes(tiny_items):
    parallel = list(iter_items(_cfg(workers=2), seed=7))
    assert _item_bytes(parallel) == _item_bytes(tiny_items)


def test_shape_gt_false_skips_only_the_3d_ground_truth(tiny_items):
    cfg = _cfg(categories=("chair",), instances_per_category=2)
    light = list(iter_items(cfg, seed=7, shape_gt=False))
    assert set(light[0].gt) == {"normals", "depth", "R", "t", "fov_deg", "shape_params"}
    assert light[0].rgb.tobytes() == tiny_items[0].rgb.tobytes()
    assert light[1].gt["depth"].tobytes() == tiny_items[1].gt["depth"].tobytes()


def test_discrete_azimuths_only_allowed_values_with_weights():
    az = AzimuthConfig(
        mode="discrete", values_deg=(0.0, 90.0, 315.0, 400.0), weights=(1.0, 0.0, 3.0, 1.0)
    )
    rng = np.random.default_rng(0)
    a = sample_azimuths(az, rng, 4000)
    vals, counts = np.unique(a, return_counts=True)
    assert set(vals) == {0.0, 315.0, 40.0}, vals  # 90 has weight 0; 400 wraps to 40
    share = dict(zip(vals, counts / 4000))
    assert abs(share[315.0] - 0.6) < 0.03 and abs(share[0.0] - 0.2) < 0.03
    jit = AzimuthConfig(mode="discrete", values_deg=(0.0, 180.0), jitter_deg=5.0)
    b = sample_azimuths(jit, rng, 2000)
    off = np.minimum.reduce([np.abs((b - v + 180.0) % 360.0 - 180.0) for v in (0.0, 180.0)])
    assert off.max() <= 5.0 and off.max() > 4.0, "jitter outside +/- jitter_deg"
    assert b.min() >= 0.0 and b.max() < 360.0
    items = list(
        iter_items(
            _cfg(
                categories=("car",),
                instances_per_category=6,
                views_per_instance=1,
                azimuth=AzimuthConfig(mode="discrete", values_deg=(45.0, 135.0)),
            ),
            seed=0,
        )
    )
    assert {it.azimuth_deg for it in items} <= {45.0, 135.0}


def test_uniform_azimuth_and_elevation_ranges():
    rng = np.random.default_rng(1)
    a = sample_azimuths(AzimuthConfig(), rng, 5000)
    assert a.min() >= 0 and a.max() < 360 and abs(a.mean() - 180) < 8
    e = sample_elevations(ElevationConfig(mode="uniform", range_deg=(10.0, 50.0)), rng, 5000)
    assert e.min() >= 10 and e.max() <= 50 and e.std() > 10
    f = sample_elevations(ElevationConfig(mode="fixed", value_deg=12.5), rng, 3)
    assert np.all(f == 12.5)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"categories": ("chair", "horse")},
            r"categories: unknown synthetic category 'horse' \(known: chair, table",
        ),
        ({"categories": ()}, "categories: empty"),
        ({"categories": ("mug", "mug")}, "duplicates"),
        ({"instances_per_category": 0}, "instances_per_category: must be >= 1"),
        ({"views_per_instance": 0}, "views_per_instance"),
        ({"render_size": 0}, "render_size"),
        ({"workers": 0}, "workers"),
        ({"n_surface_points": -1}, "n_surface_points"),
        ({"split_fractions": (0.8, 0.3, 0.1)}, "split_fractions"),
        ({"split_fractions": (1.2, -0.1, -0.1)}, "split_fractions"),
        ({"fov_deg": 180.0}, "fov_deg"),
        ({"distance": 0.5}, "distance"),
        ({"azimuth": AzimuthConfig(mode="discrete")}, "values_deg: discrete mode needs"),
        (
            {"azimuth": AzimuthConfig(mode="discrete", values_deg=(0.0, 90.0), weights=(1.0,))},
            "2 values_deg",
        ),
        (
            {"azimuth": AzimuthConfig(mode="discrete", values_deg=(0.0,), weights=(-1.0,))},
            "non-negative",
        ),
        ({"azimuth": AzimuthConfig(jitter_deg=-1.0)}, "jitter_deg"),
        ({"elevation": ElevationConfig(mode="uniform", range_deg=(40.0, 10.0))}, "low > high"),
        ({"elevation": ElevationConfig(value_deg=95.0)}, r"\(-90, 90\)"),
    ],
)
def test_bad_config_errors(change, message):
    cfg = _cfg(**change)
    with pytest.raises(ValueError, match=message):
        check_config(cfg)
    with pytest.raises(ValueError, match=message):
        next(iter_items(cfg, seed=0))


def test_package_import_does_not_pull_torch():
    """Spawned workers import this package; keeping torch out keeps their start-up cheap."""
    code = "import sys, poseless.data.synthetic; assert 'torch' not in sys.modules"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]

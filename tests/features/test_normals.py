"""Normal maps: GT backend, corruption (deterministic, where it should be), conversion, metrics."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from poseless.config import EstimateNormalsConfig, NormalCorruptionConfig
from poseless.data.prepared import PreparedDataset
from poseless.features.normals import (
    NormalsError,
    angular_error_deg,
    build_omnidata_model,
    contact_sheet,
    corrupt_normals,
    dataset_normals,
    item_rng,
    normals_metrics,
    predict_normals,
    to_normal_image,
)


def sphere_normals(size=32):
    yy, xx = np.meshgrid(np.linspace(-1, 1, size), np.linspace(-1, 1, size), indexing="ij")
    inside = xx**2 + yy**2 < 0.8
    z = -np.sqrt(np.clip(1 - xx**2 - yy**2, 0, None))
    n = np.stack([xx, yy, z]) * inside
    return (n / np.maximum(np.linalg.norm(n, axis=0), 1e-8)).astype(np.float32), inside


def test_dataset_backend_returns_gt(prepared):
    ds = PreparedDataset(prepared)
    ids = ds.ids()[:3]
    b = ds.load(ids)
    n = dataset_normals(ds, ids, b.masks, EstimateNormalsConfig(backend="dataset"), seed=0)
    assert n.shape == (3, 3, 32, 32)
    for r, item in enumerate(ids):
        gt = ds.load_gt(item)["normals"].astype(np.float32)
        np.testing.assert_allclose(n[r].numpy(), gt, atol=2e-3)
    m = normals_metrics(n.numpy().astype(np.float16), ds, ids)
    assert m["gt_angular_error_deg_mean"] < 0.5 and m["facing_camera_fraction"] > 0.99


def test_corruption_is_deterministic_local_and_masked():
    n, inside = sphere_normals()
    cfg = NormalCorruptionConfig(blotches=2, flips=1, radius_range=(0.1, 0.2))
    a = corrupt_normals(n, inside, cfg, item_rng(3, "item7"))
    b = corrupt_normals(n, inside, cfg, item_rng(3, "item7"))
    c = corrupt_normals(n, inside, cfg, item_rng(4, "item7"))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c), "another seed must give other errors"
    assert (a[:, ~inside] == 0).all(), "zero off the mask"
    np.testing.assert_allclose(np.linalg.norm(a[:, inside], axis=0), 1.0, atol=1e-5)
    err = angular_error_deg(a, n, inside)
    changed = (err > 1.0).mean()
    assert 0.0 < changed < 0.9, f"blotches/flips should hit part of the object, hit {changed:.2f}"
    flips_only = corrupt_normals(n, inside, NormalCorruptionConfig(flips=1), item_rng(0, "x"))
    hit = angular_error_deg(flips_only, n, inside) > 1e-3
    np.testing.assert_allclose(
        flips_only[2][inside], n[2][inside], atol=1e-6, err_msg="flips keep z"
    )
    full_hit = np.zeros_like(inside)
    full_hit[inside] = hit
    assert full_hit.any(), "one flipped disc must change some normals"
    np.testing.assert_allclose(flips_only[:2][:, full_hit], -n[:2][:, full_hit], atol=1e-6)
    noisy = corrupt_normals(n, inside, NormalCorruptionConfig(noise_std=0.05), item_rng(0, "x"))
    e = angular_error_deg(noisy, n, inside)
    assert 1.0 < e.mean() < 6.0, f"noise_std 0.05 ~ a few degrees, got {e.mean():.2f}"


def test_to_normal_image_and_prediction_conversion():
    class Constant(torch.nn.Module):
        """Outputs RGB (1, 0.5, 0) everywhere, i.e. direction (+1, 0, -1) after [0,1]->[-1,1]."""

        def __init__(self):
            super().__init__()
            self.p = torch.nn.Parameter(torch.zeros(1))

        def forward(self, x):
            out = torch.empty(x.shape[0], 3, *x.shape[2:])
            out[:, 0], out[:, 1], out[:, 2] = 1.0, 0.5, 0.0
            return out

    images = torch.rand(2, 3, 16, 16)
    masks = torch.zeros(2, 1, 16, 16)
    masks[:, :, 4:12, 4:12] = 1.0
    n = predict_normals(Constant(), images, masks, 32)
    inv = float(1 / np.sqrt(2))
    torch.testing.assert_close(n[0, :, 8, 8], torch.tensor([inv, 0.0, -inv]))
    assert (n[:, :, 0, 0] == 0).all()
    flipped = predict_normals(Constant(), images, masks, 32, axis_signs=(-1.0, 1.0, -1.0))
    torch.testing.assert_close(flipped[0, :, 8, 8], torch.tensor([-inv, 0.0, inv]))
    z = to_normal_image(torch.zeros(1, 3, 2, 2), torch.ones(1, 1, 2, 2))
    assert torch.isfinite(z).all()


def test_errors_and_contact_sheet(tmp_path, prepared):
    with pytest.raises(NormalsError, match="estimate_normals.checkpoint is empty"):
        build_omnidata_model("", "cpu")
    with pytest.raises(
        Exception,
        match=r"missing\.ckpt: normal-model checkpoint not found; set estimate_normals\.checkpoint",
    ):
        build_omnidata_model(tmp_path / "missing.ckpt", "cpu")
    ds = PreparedDataset(prepared)
    b = ds.load(ds.ids()[:2])
    bad = b.masks[:, :, :8, :8]
    with pytest.raises(NormalsError, match=r"expected \(3, 8, 8\)"):
        dataset_normals(ds, b.ids, bad, EstimateNormalsConfig(backend="dataset"), 0)
    n = dataset_normals(ds, b.ids, b.masks, EstimateNormalsConfig(backend="dataset"), 0)
    contact_sheet(b.images, n, b.masks, tmp_path / "sheet.png")
    from PIL import Image

    assert Image.open(tmp_path / "sheet.png").size == (64, 64)

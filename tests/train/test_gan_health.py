"""GAN health checks: statistics against slow references; collapse flagged, diversity passes."""

import itertools
import math

import numpy as np
import pytest
import torch

from poseless.config import GanHealthConfig
from poseless.errors import TrainingError
from poseless.evaluate.metrics import mask_iou
from poseless.geometry.cameras import kato_extrinsics
from poseless.models.mesh_decoder import Generator
from poseless.render.soft_raster import SoftRasterSettings, render_silhouettes
from poseless.train.gan import LookAtCamera
from poseless.train.gan_health import (
    FEATURE_NAMES,
    HealthCheck,
    area_histogram,
    binarize,
    evaluate_gan_health,
    frechet_distance,
    grid_statistics,
    iou_distance_matrix,
    mean_pairwise_distance,
    median_bandwidth,
    mesh_degeneracy,
    mmd_rbf,
    raise_if_unhealthy,
    silhouette_features,
    total_variation,
)

CAMERA = LookAtCamera(30.0, 2.732, 30.0)
RASTER = SoftRasterSettings(image_size=32)
HEALTH = GanHealthConfig(n_codes=6, n_azimuths=4, n_real=24)


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread: on a shared, busy CPU two threads run these tiny nets ~20x slower."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def random_binary(n, size=8, seed=0, p=0.4):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, 1, size, size, generator=g) < p).float()


def test_iou_distance_matrix_matches_mask_iou():
    a, b = random_binary(4, seed=1), random_binary(3, seed=2)
    a[0] = 0.0  # an empty mask
    b[0] = 0.0
    d = iou_distance_matrix(binarize(a), binarize(b))
    for i, j in itertools.product(range(4), range(3)):
        ref = 1.0 - mask_iou(a[i, 0].numpy(), b[j, 0].numpy())
        assert d[i, j].item() == pytest.approx(ref, abs=1e-12), (i, j)


def test_grid_statistics_match_loops():
    n, k = 3, 4
    grid = binarize(random_binary(n * k, seed=3)).view(n, k, -1)
    stats = grid_statistics(grid)

    def dist(i, a, j, b):
        return 1.0 - mask_iou(grid[i, a].view(8, 8).numpy(), grid[j, b].view(8, 8).numpy())

    pairs = list(itertools.product(range(n), range(k), range(n), range(k)))
    shape = [dist(*p) for p in pairs if p[0] != p[2] and p[1] == p[3]]
    view = [dist(*p) for p in pairs if p[0] == p[2] and p[1] != p[3]]
    fake = [dist(*p) for p in pairs if p[0] != p[2]]
    assert stats["shape_diversity"] == pytest.approx(np.mean(shape))
    assert stats["view_variation"] == pytest.approx(np.mean(view))
    assert stats["fake_diversity"] == pytest.approx(np.mean(fake))
    flat = grid.reshape(n * k, -1)
    ref = np.mean([1 - mask_iou(flat[i].view(8, 8), flat[j].view(8, 8)) for i, j in
                   itertools.permutations(range(n * k), 2)])  # fmt: skip
    assert mean_pairwise_distance(flat) == pytest.approx(ref)
    with pytest.raises(ValueError, match="need >= 2 codes and >= 2 azimuths"):
        grid_statistics(grid[:1])


def test_silhouette_features_of_a_rectangle():
    m = torch.zeros(2, 1, 10, 20)
    m[0, 0, 2:6, 4:12] = 1.0  # rows 2..5 (4), columns 4..11 (8)
    f = silhouette_features(m)
    assert f.shape == (2, len(FEATURE_NAMES))
    area, cx, cy, sx, sy, bw, bh, fill = f[0]
    assert area == pytest.approx(32 / 200)
    assert cx == pytest.approx(8.0 / 20) and cy == pytest.approx(4.0 / 10)
    assert sx == pytest.approx(math.sqrt((8**2 - 1) / 12) / 20)
    assert sy == pytest.approx(math.sqrt((4**2 - 1) / 12) / 10)
    assert (bw, bh, fill) == pytest.approx((8 / 20, 4 / 10, 1.0))
    assert (f[1] == 0).all(), "an empty mask has all-zero features"


def slow_frechet(x, y):
    mx, my = x.mean(0), y.mean(0)
    cx, cy = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    # Tr sqrt(Cx Cy) = sum of the square roots of the (real, >= 0) eigenvalues of Cx Cy.
    eig = np.linalg.eigvals(cx @ cy)
    return float(((mx - my) ** 2).sum() + np.trace(cx + cy) - 2 * np.sqrt(eig.real.clip(0)).sum())


def test_frechet_distance_against_eigenvalues_and_shifts():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 4)) @ rng.normal(size=(4, 4))
    y = rng.normal(size=(40, 4)) * 2.0 + 1.0
    assert frechet_distance(x, y) == pytest.approx(slow_frechet(x, y), rel=1e-6)
    assert frechet_distance(x, x) == pytest.approx(0.0, abs=1e-6)
    shift = np.array([1.0, -2.0, 0.5, 0.0])
    assert frechet_distance(x, x + shift) == pytest.approx(float(shift @ shift), rel=1e-6)
    with pytest.raises(ValueError, match="need \\(N, D\\), \\(M, D\\)"):
        frechet_distance(x[:1], y)


def test_mmd_against_double_loop():
    rng = np.random.default_rng(1)
    x, y, h = rng.normal(size=(5, 3)), rng.normal(size=(4, 3)) + 0.5, 1.3

    def k(a, b):
        return math.exp(-((a - b) ** 2).sum() / (2 * h * h))

    ref = (
        np.mean([k(a, b) for a in x for b in x])
        + np.mean([k(a, b) for a in y for b in y])
        - 2 * np.mean([k(a, b) for a in x for b in y])
    )
    assert mmd_rbf(x, y, h) == pytest.approx(ref, rel=1e-10)
    assert mmd_rbf(x, x, h) == pytest.approx(0.0, abs=1e-12)
    d = [np.linalg.norm(a - b) for a, b in itertools.combinations(x, 2)]
    assert median_bandwidth(x) == pytest.approx(float(np.median(d)))
    with pytest.raises(ValueError, match="bandwidth must be > 0"):
        mmd_rbf(x, y, 0.0)


def test_area_histogram_and_total_variation():
    m = torch.zeros(4, 1, 10, 10)
    m[0, 0, :1] = 1  # area 0.1
    m[1, 0, :5] = 1  # 0.5
    m[2, 0] = 1  # 1.0 (last bin is closed)
    hist = area_histogram(m, 10)
    assert hist.sum() == pytest.approx(1.0)
    assert hist[0] == 0.25 and hist[1] == 0.25 and hist[5] == 0.25 and hist[9] == 0.25
    assert total_variation(hist, hist) == 0.0
    assert total_variation(np.array([1.0, 0.0]), np.array([0.0, 1.0])) == 1.0


def test_mesh_degeneracy_flags_points_saturation_and_nan():
    v = torch.rand(4, 10, 3, generator=torch.Generator().manual_seed(0)) - 0.5
    v[1] = 0.01 * v[1]  # collapsed to (nearly) a point
    v[2] = 0.5 * torch.sign(v[2])  # every vertex at a cube corner
    v[3, 0, 0] = float("nan")
    d = mesh_degeneracy(v)
    assert d.nonfinite.tolist() == [False, False, False, True]
    assert d.extent[1] < 0.02 < d.extent[0]
    assert d.bound_fraction[2] == 1.0 and d.bound_fraction[0] < 0.5


def diverse_generator():
    torch.manual_seed(0)
    G = Generator(template_level=1)
    with torch.no_grad():
        G.decoder.fc_bias.weight.mul_(20.0)  # codes now move the vertices a lot
    return G


def renders_at_random_azimuths(G, n, seed):
    rng = torch.Generator().manual_seed(seed)
    z = G.sample_z(n, rng)
    az = torch.rand(n, generator=rng) * 2 * math.pi
    R, t = kato_extrinsics(az, math.radians(30.0), 2.732)
    with torch.no_grad():
        v, f = G(z)
        return render_silhouettes(v, f, R, t, RASTER)


def health(G, real):
    return evaluate_gan_health(
        G, real, HEALTH, camera=CAMERA, raster=RASTER, azimuth_range_deg=(0.0, 360.0), seed=0
    )


def test_diverse_generator_passes_and_collapsed_one_raises(tmp_path):
    G = diverse_generator()
    real = renders_at_random_azimuths(G, 24, seed=5)  # the real data IS G's distribution
    good = health(G, real)
    assert good.passed, [c.describe() for c in good.checks]
    m = good.metrics
    assert m["shape_diversity"] > 0.05 and m["view_variation"] > 0.05
    assert 0.5 < m["fake_diversity_ratio"] < 1.5, m
    assert m["degenerate_fraction"] == 0.0 and m["area_tv"] < 0.5
    assert good.grid.shape == (6, 4, 1, 32, 32)
    raise_if_unhealthy(good, "nowhere")  # no error

    with torch.no_grad():  # every z -> the same shape: the heads ignore the code
        for head in (G.decoder.fc_bias, G.decoder.fc_centroid):
            head.weight.zero_()
            head.bias.zero_()
    bad = health(G, real)
    assert not bad.passed
    failed = {c.name for c in bad.failed}
    assert "shape_diversity_ratio" in failed, failed
    # A coarse sphere looks nearly the same from every azimuth.
    assert bad.metrics["view_variation"] < good.metrics["view_variation"] / 2
    assert bad.metrics["shape_diversity"] == 0.0
    report = bad.to_dict()
    assert report["passed"] is False
    assert report["checks"]["shape_diversity_ratio"] == {
        "value": 0.0,
        "threshold": 0.1,
        "kind": "min",
        "passed": False,
    }
    with pytest.raises(TrainingError) as info:
        raise_if_unhealthy(bad, str(tmp_path / "health.json"))
    msg = str(info.value)
    assert "shape_diversity_ratio = 0 < min 0.1" in msg, msg
    assert "train_gan.iterations" in msg and "contact_sheet.png" in msg and "n_critic" in msg
    assert str(tmp_path / "health.json") in msg and "fail_on_collapse: false" in msg


def test_health_check_pass_rules():
    assert HealthCheck("a", 0.2, 0.1, "min", "").passed
    assert not HealthCheck("a", 0.2, 0.1, "max", "").passed
    assert not HealthCheck("a", float("nan"), 0.1, "min", "").passed
    assert HealthCheck("a", 0.3, 0.5, "max", "").describe() == "a = 0.3 <= max 0.5"


def test_health_refuses_wrong_real_masks():
    G = Generator(template_level=1)
    with pytest.raises(ValueError, match=r"real masks must be \(N, 1, 32, 32\)"):
        health(G, torch.zeros(4, 1, 16, 16))

"""Pseudo poses of prepared masks: prediction, the pose table and its global alignment."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from poseless.config import PredictPosesConfig
from poseless.geometry.cameras import LookAtCamera, kato_extrinsics
from poseless.geometry.rotations import rotation_y
from poseless.models.mesh_decoder import Generator
from poseless.models.pose_regressor import PoseRegressor
from poseless.render.soft_raster import SoftRasterSettings, render_silhouettes
from poseless.train.predict_poses import (
    TABLE_COLUMNS,
    GanRetrieval,
    fit_alignment,
    fit_mirror_frame,
    mask_iou,
    pose_table,
    predict_azimuths,
    predict_azimuths_with_flips,
    prior_matched_bins,
    render_azimuth_grid,
    resize_masks,
)

CFG = PredictPosesConfig()


def items(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    ids = [f"item{k:03d}" for k in range(n)]
    splits = [("train", "val", "test")[k % 3] for k in range(n)]
    cats = ["chair" if k % 2 == 0 else "plane" for k in range(n)]
    gt = rng.uniform(0, 360, n)
    return ids, splits, cats, gt


def test_constant_offset_and_reflection_are_aligned_away_per_category():
    ids, splits, cats, gt = items(41)
    chair = np.array([c == "chair" for c in cats])
    pred = np.where(chair, gt + 77.0, 40.0 - gt)  # chairs: offset; planes: reflection + offset
    table, metrics = pose_table(ids, splits, cats, pred, gt, CFG)
    assert list(table.columns) == list(TABLE_COLUMNS)
    assert table["error_deg"].max() < 1e-6, table["error_deg"].max()
    assert metrics["overall"]["median_error_deg"] < 1e-6
    assert metrics["overall"]["acc@15"] == 1.0 and metrics["overall"]["acc@30"] == 1.0
    c, p = metrics["categories"]["chair"], metrics["categories"]["plane"]
    assert c["reflected"] is False and c["offset_deg"] == pytest.approx(-77.0, abs=1e-6)
    assert p["reflected"] is True and p["offset_deg"] == pytest.approx(40.0, abs=1e-6)
    assert c["n"] + p["n"] == 41 and metrics["n_with_gt"] == 41
    assert metrics["counts"] == {"train": 14, "val": 14, "test": 13}


def test_one_alignment_for_all_items_and_errors_against_a_slow_reference():
    ids, splits, cats, gt = items(30, seed=1)
    rng = np.random.default_rng(2)
    noise = rng.normal(0, 10, len(gt))
    pred = gt + 123.0 + noise
    cfg = PredictPosesConfig(alignment="all", allow_reflection=False)
    table, metrics = pose_table(ids, splits, cats, pred, gt, cfg)
    off = metrics["overall"]["offset_deg"]
    assert metrics["overall"]["reflected"] is False
    assert "offset_deg" not in metrics["categories"]["chair"]
    # slow reference: every offset on a 0.01 deg grid, median wrapped error
    grid = np.arange(-180.0, 180.0, 0.01)
    errs = np.abs((pred[None] % 360 + grid[:, None] - gt[None] + 180.0) % 360.0 - 180.0)
    best = np.median(errs, axis=1).min()
    assert metrics["overall"]["median_error_deg"] == pytest.approx(best, abs=0.02)
    expect = np.abs((pred + off - gt + 180.0) % 360.0 - 180.0)
    assert np.allclose(table["error_deg"], expect, atol=1e-6)
    assert abs(((off + 123.0 + 180.0) % 360.0) - 180.0) < 10.0


def test_table_ranges_without_and_with_partial_ground_truth():
    ids, splits, cats, _ = items(6)
    pred = np.array([360.0, -1e-12, -30.0, 725.0, 0.0, 359.5])
    table, metrics = pose_table(ids, splits, cats, pred, np.full(6, np.nan), CFG)
    assert list(table.columns) == ["id", "split", "category", "azimuth_deg"]
    assert table["azimuth_deg"].between(0.0, 360.0, inclusive="left").all(), table["azimuth_deg"]
    assert table["azimuth_deg"].tolist()[2:4] == pytest.approx([330.0, 5.0])
    assert metrics == {
        "n_items": 6,
        "n_with_gt": 0,
        "counts": {"train": 2, "val": 2, "test": 2},
        "categories": {"chair": {"n_items": 3}, "plane": {"n_items": 3}},
    }
    gt = np.array([10.0, np.nan, 20.0, np.nan, 30.0, 40.0])
    table, metrics = pose_table(ids, splits, cats, pred, gt, CFG)
    assert table["gt_azimuth_deg"].isna().tolist() == [False, True, False, True, False, False]
    assert table["error_deg"].isna().tolist() == [False, True, False, True, False, False]
    assert metrics["n_with_gt"] == 4 and metrics["overall"]["n"] == 4
    assert table["error_deg"].dropna().between(0.0, 180.0).all()


def test_bad_inputs_are_refused():
    ids, splits, cats, gt = items(4)
    with pytest.raises(ValueError, match="lengths differ"):
        pose_table(ids, splits, cats, gt[:3], gt, CFG)
    with pytest.raises(ValueError, match="must be finite"):
        pose_table(ids, splits, cats, np.array([1.0, np.nan, 2.0, 3.0]), gt, CFG)
    with pytest.raises(ValueError, match="square"):
        resize_masks(torch.zeros(1, 1, 32, 48), 32)
    with pytest.raises(ValueError, match=r"\(N, 1, H, W\)"):
        resize_masks(torch.zeros(1, 32, 32), 32)


def test_fit_alignment_single_item_is_exact():
    fit = fit_alignment(np.array([300.0]), np.array([10.0]), allow_reflection=False)
    assert fit.errors_deg[0] == pytest.approx(0.0, abs=1e-9)
    assert fit.offset_deg == pytest.approx(70.0, abs=1e-9)


def test_predict_azimuths_resizes_masks_and_is_batch_independent():
    torch.manual_seed(0)
    reg = PoseRegressor().eval()
    masks = (torch.rand(5, 1, 48, 48) > 0.6).float()
    whole = predict_azimuths(reg, [masks], 32, torch.device("cpu"))
    split = predict_azimuths(reg, [masks[:2], masks[2:]], 32, torch.device("cpu"))
    assert whole.shape == (5,) and np.allclose(whole, split, atol=1e-4)
    assert ((whole >= 0) & (whole < 360)).all()
    small = resize_masks(masks, 32)
    assert small.shape == (5, 1, 32, 32) and 0 <= float(small.min()) <= float(small.max()) <= 1
    # area-like downsampling keeps the covered fraction
    assert math.isclose(float(small.mean()), float(masks.mean()), abs_tol=0.02)
    with torch.no_grad():
        direct = reg(small).double().numpy()
    assert np.allclose(whole, direct, atol=1e-4)
    assert resize_masks(masks, 48) is masks
    assert predict_azimuths(reg, [], 32, torch.device("cpu")).shape == (0,)
    binary = predict_azimuths(reg, [masks], 32, torch.device("cpu"), binarize=True)
    with torch.no_grad():
        thresholded = reg((small > 0.5).float()).double().numpy()
    assert np.allclose(binary, thresholded, atol=1e-4) and not np.allclose(binary, whole, atol=1e-4)


def test_mask_iou_counts_overlap_over_union():
    a = torch.tensor([[1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    b = torch.tensor([[1.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 1.0, 1.0]])
    want = torch.tensor([[0.5, 0.5, 0.0], [0.0, 0.0, 0.0]])
    assert torch.allclose(mask_iou(a, b), want)


def test_gan_retrieval_returns_the_azimuth_of_the_most_similar_render():
    g = torch.Generator().manual_seed(0)
    bank = torch.rand(12, 16, 16, generator=g) > 0.5
    azimuths = np.arange(12) * 30.0
    retrieval = GanRetrieval(bank, azimuths)
    # queries: the bank with 5% of the pixels flipped, soft values either side of 0.5
    flip = torch.rand(12, 16, 16, generator=g) < 0.05
    noisy = (bank ^ flip).float() * 0.4 + 0.3  # 0.3 / 0.7
    order = torch.randperm(12, generator=g)
    out = retrieval(noisy[order, None])
    assert out.dtype == torch.float64
    assert np.array_equal(out.numpy(), azimuths[order.numpy()])
    # through predict_azimuths, 32-px masks resized to the bank's 16 px
    big = noisy[order, None].repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)
    got = predict_azimuths(retrieval, big.split(5), 16, torch.device("cpu"), binarize=True)
    assert np.array_equal(got, azimuths[order.numpy()])
    with pytest.raises(ValueError, match="must be"):
        retrieval(torch.zeros(2, 1, 8, 8))
    with pytest.raises(ValueError, match="azimuths"):
        GanRetrieval(bank, azimuths[:5])
    with pytest.raises(ValueError, match="renders must be"):
        GanRetrieval(torch.zeros(0, 16, 16, dtype=torch.bool), [])


def test_render_azimuth_grid_is_azimuth_major_and_matches_direct_renders():
    torch.manual_seed(0)
    G = Generator(z_dim=8, template_level=1).eval()
    camera = LookAtCamera(30.0, 2.732, 30.0)
    renders, az = render_azimuth_grid(G, camera, 16, codes=2, step_deg=90.0, seed=3)
    assert renders.shape == (8, 16, 16) and renders.dtype == torch.bool
    assert az.tolist() == [0.0, 0.0, 90.0, 90.0, 180.0, 180.0, 270.0, 270.0]
    z = G.sample_z(2, torch.Generator().manual_seed(3))
    with torch.no_grad():
        v, f = G(z)
        R, t = kato_extrinsics(torch.full((2,), math.pi / 2), math.radians(30.0), 2.732)
        direct = render_silhouettes(v, f, R, t, SoftRasterSettings(image_size=16))[:, 0] > 0.5
    assert torch.equal(renders[2:4], direct)
    again, _ = render_azimuth_grid(G, camera, 16, codes=2, step_deg=90.0, seed=3)
    assert torch.equal(renders, again)
    with pytest.raises(ValueError, match="codes >= 1"):
        render_azimuth_grid(G, camera, 16, codes=0, step_deg=90.0, seed=3)


def test_retrieval_settings_are_validated():
    with pytest.raises(ValueError, match="retrieval_codes"):
        PredictPosesConfig(retrieval_codes=0).validate()
    with pytest.raises(ValueError, match="retrieval_step_deg"):
        PredictPosesConfig(retrieval_step_deg=0.0).validate()


@pytest.mark.parametrize("c_true", [37.0, 0.5, 179.0, 121.0])
def test_fit_mirror_frame_finds_the_plane_through_flips_and_front_back_errors(c_true):
    rng = np.random.default_rng(1)
    n = 400
    a = rng.uniform(0, 360, n)
    flipped = 2 * c_true - a + rng.normal(0, 3, n)  # a + a_flipped = 2c
    flipped[: n // 4] += 180.0  # a quarter are front/back flips: 2c + 180
    flipped[n // 4 : n // 4 + 20] = rng.uniform(0, 360, 20)  # and some are noise
    fit = fit_mirror_frame(np.mod(a, 360), np.mod(flipped, 360), tolerance_deg=15.0)
    err = abs((fit.offset_deg - c_true + 90) % 180 - 90)  # c is defined mod 180
    assert err < 1.0 and 0 <= fit.offset_deg < 180
    assert 0.65 < fit.agreement < 0.8 and fit.n == n
    with pytest.raises(ValueError, match="as many"):
        fit_mirror_frame(a, a[:-1])
    with pytest.raises(ValueError, match="finite"):
        fit_mirror_frame(np.array([1.0, np.nan]), np.array([1.0, 2.0]))


def boxes(*specs):
    """Vertices (V, 3) and faces (F, 3) of axis-aligned boxes (centre, half sizes)."""
    corners = torch.tensor(
        [[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], dtype=torch.float32
    )
    quads = [(0, 1, 3, 2), (4, 6, 7, 5), (0, 4, 5, 1), (2, 3, 7, 6), (0, 2, 6, 4), (1, 5, 7, 3)]
    tri = torch.tensor([t for q in quads for t in ((q[0], q[1], q[2]), (q[0], q[2], q[3]))])
    vs, fs = [], []
    for k, (centre, half) in enumerate(specs):
        vs.append(corners * torch.tensor(half) + torch.tensor(centre))
        fs.append(tri + 8 * k)
    return torch.cat(vs), torch.cat(fs)


def test_mirror_frame_of_rendered_flips_is_the_rotation_of_a_symmetric_object():
    # Left-right symmetric about x = 0, not front/back: a body, a back rest at +z and a
    # thin bar at -z; rotated by theta about y, its mirror plane is off x = 0 by theta.
    theta = 50.0
    v, f = boxes(
        ((0.0, 0.0, 0.0), (0.25, 0.05, 0.2)),
        ((0.0, 0.2, 0.18), (0.25, 0.2, 0.03)),
        ((0.0, -0.15, -0.15), (0.05, 0.1, 0.05)),
    )
    v = v @ rotation_y(torch.tensor(math.radians(theta)))[0].T
    settings = SoftRasterSettings(image_size=48, sigma=1e-5)

    def render(az_deg):
        az = torch.tensor(az_deg, dtype=torch.float32)
        R, t = kato_extrinsics(torch.deg2rad(az), math.radians(30.0), 2.732)
        verts = v.expand(len(az), -1, -1)
        return render_silhouettes(verts, f, R, t, settings)[:, 0] > 0.5

    bank_az = np.arange(0.0, 360.0, 2.0)
    retrieval = GanRetrieval(render(bank_az.tolist()), bank_az)
    query = render(np.arange(3.0, 360.0, 24.0).tolist()).float()[:, None]
    a = retrieval(query).numpy()
    a_flipped = retrieval(query.flip(-1)).numpy()
    fit = fit_mirror_frame(a, a_flipped)
    # R_y(theta) v seen at azimuth a is v seen at a + theta (Kato), so c = -theta (mod 180)
    assert abs((fit.offset_deg + theta + 90) % 180 - 90) < 3.0
    assert fit.agreement > 0.9
    # a - c is then the upright object's azimuth, up to the 180 deg c leaves open
    upright = np.arange(3.0, 360.0, 24.0) + theta
    assert np.all(np.abs((a - fit.offset_deg - upright + 90) % 180 - 90) < 4.0)


def test_frame_settings_are_validated():
    with pytest.raises(ValueError, match="frame_tolerance_deg"):
        PredictPosesConfig(frame_tolerance_deg=0.0).validate()


def test_predict_with_flips_equals_two_passes_over_uneven_batches():
    g = torch.Generator().manual_seed(2)
    bank = torch.rand(36, 16, 16, generator=g) > 0.5
    retrieval = GanRetrieval(bank, np.arange(36) * 10.0)
    masks = (torch.rand(11, 1, 32, 32, generator=g) > 0.5).float()
    cpu = torch.device("cpu")
    a, a_flipped = predict_azimuths_with_flips(retrieval, masks.split(4), 16, cpu, True)
    assert np.array_equal(a, predict_azimuths(retrieval, masks.split(4), 16, cpu, True))
    want = predict_azimuths(retrieval, masks.flip(-1).split(4), 16, cpu, True)
    assert np.array_equal(a_flipped, want)
    assert not np.array_equal(a, a_flipped)
    none = predict_azimuths_with_flips(retrieval, [], 16, cpu, True)
    assert none[0].shape == none[1].shape == (0,)


def test_gan_retrieval_scores_are_the_best_iou_per_azimuth_and_the_prior_its_range():
    g = torch.Generator().manual_seed(4)
    bank = torch.rand(12, 16, 16, generator=g) > 0.5
    azimuths = np.repeat(np.arange(4) * 90.0, 3)  # azimuth-major, 3 codes each
    retrieval = GanRetrieval(bank, azimuths, azimuth_range_deg=(0.0, 180.0))
    assert retrieval.grid_deg.tolist() == [0.0, 90.0, 180.0, 270.0]
    assert retrieval.prior.tolist() == [0.5, 0.5, 0.0, 0.0]  # U[0, 180) on the grid
    masks = (torch.rand(5, 1, 16, 16, generator=g) > 0.5).float()
    scores = retrieval.scores(masks)
    iou = mask_iou(masks.flatten(1), bank.flatten(1).float())
    assert scores.shape == (5, 4)
    assert torch.equal(scores, iou.view(5, 4, 3).amax(-1))
    want = retrieval.grid_deg[scores.argmax(1).numpy()]
    assert np.array_equal(retrieval(masks).numpy(), want)
    with pytest.raises(ValueError, match="no bank azimuth lies in the range"):
        GanRetrieval(bank, np.repeat([0.0, 10.0, 20.0, 30.0], 3), azimuth_range_deg=(40.0, 90.0))
    with pytest.raises(ValueError, match="azimuth range"):
        GanRetrieval(bank, azimuths, azimuth_range_deg=(90.0, 90.0))


def _flip_prone_scores(n_bins: int = 36, per_bin: int = 10):
    """Items uniform over the bins; each is most similar to its own bin (0.8) and nearly
    as much to the opposite one (0.75: front and back alike), and the renders of the
    second half of the circle match everything worse (-0.1). So the plain argmax folds
    the second half's items onto the first half, as a GAN whose back views are poor."""
    truth = np.repeat(np.arange(n_bins), per_bin)
    k = np.arange(n_bins)
    half = n_bins // 2
    d_own = np.abs((k[None] - truth[:, None] + half) % n_bins - half)
    d_opp = np.abs((k[None] - truth[:, None]) % n_bins - half)
    rng = np.random.default_rng(0)
    scores = (
        0.8 * np.exp(-(d_own**2) / 2.0)
        + 0.75 * np.exp(-(d_opp**2) / 2.0)
        - 0.1 * (k >= half)[None]
        + rng.normal(0, 1e-3, (len(truth), n_bins))
    )
    return scores, truth


def test_prior_matching_unfolds_a_retrieval_piled_onto_half_the_circle():
    scores, truth = _flip_prone_scores()
    plain = scores.argmax(1)
    assert (plain < 18).all()  # every item retrieved in the first half
    choice, match = prior_matched_bins(scores, np.ones(36), epsilon=0.01)
    # the circle is unfolded: the items that pay least for it (the folded ones) move
    assert (choice == truth).mean() > 0.95
    assert 0.45 < match.moved < 0.55
    assert match.iou_given_up < 0.05
    assert match.marginal_error < 1e-3
    assert np.bincount(choice, minlength=36).min() >= 8


def test_prior_matching_keeps_a_retrieval_that_already_follows_the_prior():
    rng = np.random.default_rng(1)
    truth = np.repeat(np.arange(24), 5)
    scores = rng.uniform(0.0, 0.3, (120, 24))
    scores[np.arange(120), truth] = 0.9
    choice, match = prior_matched_bins(scores, np.ones(24), epsilon=0.01)
    assert np.array_equal(choice, truth)
    assert match.moved == 0.0 and match.iou_given_up == 0.0


def test_prior_matching_strength_interpolates_and_zero_weights_bar_azimuths():
    scores, truth = _flip_prone_scores()
    plain = scores.argmax(1)
    loose, m_loose = prior_matched_bins(scores, np.ones(36), epsilon=0.01, strength=1e-4)
    assert (loose == plain).mean() > 0.95 and m_loose.marginal_error > 0.3
    tight, m_tight = prior_matched_bins(scores, np.ones(36), epsilon=0.01, strength=10.0)
    balanced, _ = prior_matched_bins(scores, np.ones(36), epsilon=0.01)
    assert (tight == balanced).mean() > 0.95 and m_tight.marginal_error < 0.05
    # a prior with zero weight on bins 0-8 never chooses them
    prior = np.ones(36)
    prior[:9] = 0.0
    barred, _ = prior_matched_bins(scores, prior, epsilon=0.01)
    assert barred.min() >= 9


def test_prior_matching_refuses_bad_inputs():
    ok = np.ones((3, 4))
    with pytest.raises(ValueError, match="scores must be"):
        prior_matched_bins(np.ones((3, 5)), np.ones(4), 0.01)
    with pytest.raises(ValueError, match="scores must be"):
        prior_matched_bins(np.ones((0, 4)), np.ones(4), 0.01)
    with pytest.raises(ValueError, match="finite"):
        prior_matched_bins(np.full((3, 4), np.nan), np.ones(4), 0.01)
    with pytest.raises(ValueError, match="not all 0"):
        prior_matched_bins(ok, np.zeros(4), 0.01)
    with pytest.raises(ValueError, match="epsilon > 0"):
        prior_matched_bins(ok, np.ones(4), 0.0)
    with pytest.raises(ValueError, match="strength > 0"):
        prior_matched_bins(ok, np.ones(4), 0.01, strength=-1.0)


def test_retrieval_prior_settings_are_validated():
    with pytest.raises(ValueError, match="needs method: gan_retrieval"):
        PredictPosesConfig(retrieval_prior="gan").validate()
    PredictPosesConfig(method="gan_retrieval", retrieval_prior="gan").validate()
    with pytest.raises(ValueError, match="retrieval_prior_epsilon"):
        PredictPosesConfig(method="gan_retrieval", retrieval_prior_epsilon=0.0).validate()
    with pytest.raises(ValueError, match="retrieval_prior_strength"):
        PredictPosesConfig(method="gan_retrieval", retrieval_prior_strength=0.0).validate()

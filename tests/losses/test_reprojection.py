import pytest
import torch

from poseless.losses.reprojection import iou_loss, silhouette_loss, soft_iou


def slow_iou_loss(pred, target):
    total = 0.0
    for b in range(pred.shape[0]):
        inter = union = 0.0
        for p, t in zip(pred[b].flatten().tolist(), target[b].flatten().tolist()):
            inter += p * t
            union += p + t - p * t
        total += inter / (union + 1e-6)
    return 1.0 - total / pred.shape[0]


def test_matches_slow_reference():
    g = torch.Generator().manual_seed(0)
    pred = torch.rand(3, 1, 6, 5, generator=g, dtype=torch.float64)
    target = (torch.rand(3, 1, 6, 5, generator=g) > 0.5).double()
    assert iou_loss(pred, target).item() == pytest.approx(slow_iou_loss(pred, target), abs=1e-12)


def test_extreme_cases():
    a = torch.zeros(2, 1, 4, 4, dtype=torch.float64)
    a[:, :, :2] = 1.0
    b = 1.0 - a
    assert iou_loss(a, b).item() == pytest.approx(1.0)
    # Identical masks: 1 - 8 / (8 + 1e-6).
    assert iou_loss(a, a).item() == pytest.approx(1.0 - 8.0 / (8.0 + 1e-6), abs=1e-9)
    # Both empty: 0 / 1e-6 = 0, loss 1.
    assert iou_loss(torch.zeros(1, 1, 3, 3), torch.zeros(1, 1, 3, 3)).item() == 1.0
    half = torch.zeros(1, 1, 4, 4, dtype=torch.float64)
    half[..., :1, :] = 1.0  # 4 of the 8 pixels of a
    torch.testing.assert_close(
        soft_iou(half, a[:1]), torch.tensor([4.0 / (8.0 + 1e-6)], dtype=torch.float64)
    )


def test_gradcheck():
    g = torch.Generator().manual_seed(1)
    pred = torch.rand(2, 1, 3, 3, generator=g, dtype=torch.float64, requires_grad=True)
    target = torch.rand(2, 1, 3, 3, generator=g, dtype=torch.float64)
    assert torch.autograd.gradcheck(iou_loss, (pred, target))


def test_other_kinds():
    pred = torch.tensor([[[[0.0, 0.5], [1.0, 0.25]]]])
    target = torch.tensor([[[[1.0, 0.5], [0.0, 0.25]]]])
    assert silhouette_loss(pred, target, "mse").item() == pytest.approx(0.5)
    assert silhouette_loss(pred, target, "l1").item() == pytest.approx(0.5)
    assert silhouette_loss(pred, target).item() == pytest.approx(iou_loss(pred, target).item())


def test_bad_inputs():
    with pytest.raises(ValueError, match="shapes differ"):
        iou_loss(torch.zeros(2, 1, 4, 4), torch.zeros(2, 1, 4, 5))
    with pytest.raises(ValueError, match="kind must be"):
        silhouette_loss(torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 2, 2), "bce")

import json
import random

import numpy as np
import pytest
import torch
from torch import nn

from poseless.train.checkpoint import (
    CheckpointError,
    CheckpointManager,
    get_rng_state,
    latest_checkpoint,
    list_checkpoints,
    load_model,
    save_model,
    set_rng_state,
)


def draw_all():
    return (
        [random.random() for _ in range(3)] + [random.gauss(0, 1)],
        np.random.rand(3).tolist() + [np.random.standard_normal()],
        torch.rand(3).tolist() + torch.randn(1).tolist(),
    )


def test_rng_state_round_trip():
    random.gauss(0, 1)  # leaves a cached gaussian in Python's state
    np.random.standard_normal()
    state = get_rng_state()
    first = draw_all()
    draw_all()
    set_rng_state(state)
    assert draw_all() == first


def make_objects(seed=0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[2, 4], gamma=0.5)
    gen = torch.Generator().manual_seed(seed + 100)
    return {"model": model, "opt": opt, "sched": sched, "data": gen}


def train_steps(objs, n):
    for _ in range(n):
        x = torch.randn(5, 3, generator=objs["data"])
        objs["opt"].zero_grad()
        objs["model"](x).pow(2).mean().backward()
        objs["opt"].step()
        objs["sched"].step()


def test_save_and_load_restore_everything(tmp_path):
    objs = make_objects(0)
    train_steps(objs, 3)
    mgr = CheckpointManager(tmp_path / "ck", keep_last=2)
    config = {"model": {"width": 4}, "lr": 1e-2}
    path = mgr.save(3, objs, config, extra={"note": "x"})
    assert path.name == "step-000000003.pt"
    # Only plain data inside: a weights-only load must succeed.
    payload = torch.load(path, weights_only=True)
    assert json.loads(payload["config_json"]) == config
    expected_draw = torch.randn(2, generator=objs["data"])
    train_steps(objs, 1)

    fresh = make_objects(7)
    info = mgr.load(fresh)
    assert info.step == 3 and info.config == config and info.extra == {"note": "x"}
    assert info.path == path
    # Weights, optimiser moments, scheduler position and the data generator are back.
    saved = torch.load(path, weights_only=True)["state"]
    for k, v in fresh["model"].state_dict().items():
        assert torch.equal(v, saved["model"][k]), k
    assert fresh["sched"].last_epoch == 3
    assert fresh["opt"].param_groups[0]["lr"] == pytest.approx(1e-2 * 0.5)
    assert torch.equal(torch.randn(2, generator=fresh["data"]), expected_draw)


def test_resumed_training_matches_uninterrupted(tmp_path):
    a = make_objects(0)
    train_steps(a, 6)
    b = make_objects(0)
    train_steps(b, 2)
    mgr = CheckpointManager(tmp_path)
    mgr.save(2, b, {})
    c = make_objects(5)
    mgr.load(c)
    train_steps(c, 4)
    for (k, va), vc in zip(a["model"].state_dict().items(), c["model"].state_dict().values()):
        assert torch.equal(va, vc), k


def test_keep_last_and_latest_pointer(tmp_path):
    objs = make_objects()
    mgr = CheckpointManager(tmp_path, keep_last=2)
    for step in (1, 2, 3, 4):
        mgr.save(step, objs, {})
    assert [p.name for p in list_checkpoints(tmp_path)] == [
        "step-000000003.pt",
        "step-000000004.pt",
    ]
    assert (tmp_path / "latest").read_text().strip() == "step-000000004.pt"
    assert mgr.latest() == tmp_path / "step-000000004.pt"
    (tmp_path / "latest").unlink()
    assert latest_checkpoint(tmp_path) == tmp_path / "step-000000004.pt"
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]
    assert CheckpointManager(tmp_path / "empty").load(objs) is None


def test_failed_save_leaves_nothing(tmp_path, monkeypatch):
    objs = make_objects()
    mgr = CheckpointManager(tmp_path)
    mgr.save(1, objs, {})

    def broken_save(obj, f):
        open(f, "wb").write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        mgr.save(2, objs, {})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest", "step-000000001.pt"]
    assert mgr.latest().name == "step-000000001.pt"


def test_load_errors(tmp_path):
    objs = make_objects()
    mgr = CheckpointManager(tmp_path)
    path = mgr.save(1, objs, {})
    with pytest.raises(CheckpointError, match=r"holds .* but the trainer tracks"):
        mgr.load({"model": objs["model"]})
    other = dict(objs, model=nn.Linear(2, 2))
    with pytest.raises(CheckpointError, match="cannot load entry 'model'"):
        mgr.load(other)
    bad = tmp_path / "step-000000009.pt"
    torch.save({"format": 99}, bad)
    with pytest.raises(CheckpointError, match="not a poseless checkpoint"):
        mgr.load(objs, path=bad)
    assert path.exists()
    with pytest.raises(ValueError, match="keep_last"):
        CheckpointManager(tmp_path, keep_last=0)


class Tiny(nn.Module):
    def __init__(self, width):
        super().__init__()
        self.width = width
        self.a = nn.Linear(2, width)
        self.b = self.a  # shared weights must survive safetensors


def test_save_and_load_model(tmp_path):
    torch.manual_seed(0)
    model = Tiny(5)
    path = tmp_path / "out" / "model.safetensors"
    save_model(path, model, {"width": 5})
    side = json.loads((tmp_path / "out" / "model.json").read_text())
    assert side["config"] == {"width": 5} and side["weights"] == "model.safetensors"
    loaded, config = load_model(path, lambda cfg: Tiny(**cfg))
    assert config == {"width": 5} and not loaded.training
    assert torch.equal(loaded.a.weight, model.a.weight) and loaded.b is loaded.a

    with pytest.raises(ValueError, match=r"must end in \.safetensors"):
        save_model(tmp_path / "model.pt", model, {})
    with pytest.raises(CheckpointError, match="do not fit the rebuilt model"):
        load_model(path, lambda cfg: Tiny(3))
    save_model(tmp_path / "other.safetensors", Tiny(5), {"width": 5})
    (tmp_path / "other.safetensors").replace(path)
    with pytest.raises(CheckpointError, match="differs from the sidecar"):
        load_model(path, lambda cfg: Tiny(**cfg))
    (tmp_path / "out" / "model.json").unlink()
    with pytest.raises(CheckpointError, match="config sidecar"):
        load_model(path, lambda cfg: Tiny(**cfg))

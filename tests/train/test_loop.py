import math

import numpy as np
import pytest
import torch
from torch import nn

from poseless.errors import TrainingError
from poseless.train.checkpoint import list_checkpoints
from poseless.train.loop import LoopSettings, TrainLoop
from poseless.train.metrics_log import read_metrics


class Interrupt(Exception):
    pass


def make_run(out_dir, max_steps, interrupt_at=None, config=None, **settings):
    """A toy regression whose randomness comes from three sources, all of which
    must resume: a tracked data generator, the global torch RNG (dropout) and
    NumPy's global RNG (noise)."""
    torch.manual_seed(0)
    np.random.seed(0)
    settings = {"log_every": 4, "checkpoint_every": 5, "progress": False, **settings}
    loop = TrainLoop(
        out_dir,
        LoopSettings(max_steps=max_steps, **settings),
        config=config or {"width": 8},
        device="cpu",
    )
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Dropout(0.3), nn.Linear(8, 1))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[10, 20], gamma=0.5)
    data = torch.Generator().manual_seed(42)
    loop.track(modules={"model": model}, optimizers={"opt": opt}, schedulers={"opt": sched})
    loop.track(generators={"data": data})

    def step_fn(step):
        if step == interrupt_at:
            raise Interrupt(f"killed at step {step}")
        x = torch.randn(16, 4, generator=data)
        y = x.sum(1, keepdim=True) + float(np.random.normal(scale=0.1))
        opt.zero_grad(set_to_none=True)
        with loop.autocast():
            loss = (model(x) - y).pow(2).mean()
        loop.backward(loss)
        loop.step(opt)
        return {"mse": loss, "const": 1.0}

    return loop, model, opt, step_fn


def params_of(model, opt):
    out = [p.detach().clone() for p in model.parameters()]
    for state in opt.state_dict()["state"].values():
        out += [state["exp_avg"], state["exp_avg_sq"]]
    return out


def assert_bitwise_equal(a, b):
    assert len(a) == len(b)
    for i, (x, y) in enumerate(zip(a, b)):
        assert torch.equal(x, y), f"tensor {i} differs (max diff {(x - y).abs().max()})"


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    loop, model, opt, step_fn = make_run(tmp_path_factory.mktemp("ref"), 23)
    result = loop.run(step_fn)
    return params_of(model, opt), result


def test_resume_after_crash_is_bitwise_identical(tmp_path, reference):
    ref_params, _ = reference
    loop, _, _, step_fn = make_run(tmp_path, 23, interrupt_at=13)
    with pytest.raises(Interrupt):
        loop.run(step_fn)
    assert [p.name for p in list_checkpoints(tmp_path / "checkpoints")] == [
        "step-000000005.pt",
        "step-000000010.pt",
    ]
    # A new process: new objects, different initial weights until the checkpoint loads.
    torch.manual_seed(99)
    loop, model, opt, step_fn = make_run(tmp_path, 23)
    result = loop.run(step_fn)
    assert result.resumed_from == 10 and result.step == 23
    assert_bitwise_equal(params_of(model, opt), ref_params)


def test_extending_a_finished_run_is_bitwise_identical(tmp_path, reference):
    ref_params, ref_result = reference
    loop, _, _, step_fn = make_run(tmp_path, 7)
    assert loop.run(step_fn).checkpoint.name == "step-000000007.pt"
    loop, model, opt, step_fn = make_run(tmp_path, 23)
    result = loop.run(step_fn)
    assert result.resumed_from == 7
    assert_bitwise_equal(params_of(model, opt), ref_params)
    assert result.last_losses["mse"] == ref_result.last_losses["mse"]
    # Running again with nothing left to do changes nothing.
    loop, model, opt, step_fn = make_run(tmp_path, 23)
    assert loop.run(step_fn).resumed_from == 23
    assert_bitwise_equal(params_of(model, opt), ref_params)


def test_metrics_log_survives_resume(tmp_path, reference):
    _, ref_result = reference
    loop, _, _, step_fn = make_run(tmp_path, 23, interrupt_at=13)
    with pytest.raises(Interrupt):
        loop.run(step_fn)
    assert [r["step"] for r in read_metrics(loop.metrics.path)] == [4, 8, 12]
    loop, _, _, step_fn = make_run(tmp_path, 23)
    loop.run(step_fn)
    records = read_metrics(loop.metrics.path)
    # Step 12 was logged past the step-10 checkpoint: dropped and logged again once.
    assert [r["step"] for r in records] == [4, 8, 12, 16, 20, 23]
    ref_records = read_metrics(ref_result.metrics_path)
    assert [r["loss/mse"] for r in records] == [r["loss/mse"] for r in ref_records]
    assert all(r["loss/const"] == 1.0 for r in records)
    # lr after the scheduler stepped `step` times: milestones 10 and 20.
    assert [r["lr/opt"] for r in records] == pytest.approx([1e-2, 1e-2, 5e-3, 5e-3, 2.5e-3, 2.5e-3])
    assert all(r["wall_s"] >= 0 for r in records)


def test_nan_loss_stops_with_a_clear_error(tmp_path):
    loop, model, opt, step_fn = make_run(tmp_path, 20)

    def nan_at_7(step):
        out = step_fn(step)
        return {**out, "lap": math.nan} if step == 7 else out

    with pytest.raises(TrainingError, match=r"step 7: loss term 'lap' is nan.*learning rate"):
        loop.run(nan_at_7)
    assert [p.name for p in list_checkpoints(tmp_path / "checkpoints")] == ["step-000000005.pt"]
    assert [r["step"] for r in read_metrics(loop.metrics.path)] == [4]

    loop, _, _, step_fn = make_run(tmp_path / "inf", 3)
    with pytest.raises(TrainingError, match=r"step 0: loss term 'mse' is inf"):
        loop.run(lambda s: {"mse": torch.tensor(float("inf"))})


def test_changed_config_refuses_to_resume(tmp_path):
    loop, _, _, step_fn = make_run(tmp_path, 5)
    loop.run(step_fn)
    loop, _, _, step_fn = make_run(tmp_path, 10, config={"width": 16})
    with pytest.raises(TrainingError, match=r"config changed: width: 8 -> 16"):
        loop.run(step_fn)


def test_cpu_runs_without_mixed_precision(tmp_path):
    loop = TrainLoop(tmp_path, LoopSettings(max_steps=1, mixed_precision="bf16"), {}, "cpu")
    assert loop.amp_dtype is None and loop.scaler is None
    with loop.autocast():
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32


def test_settings_validation():
    with pytest.raises(ValueError, match="log_every"):
        LoopSettings(max_steps=3, log_every=0)
    with pytest.raises(ValueError, match="mixed_precision"):
        LoopSettings(max_steps=3, mixed_precision="fp8")


def test_terms_returned_on_some_steps_average_over_their_own_steps(tmp_path):
    loop = TrainLoop(tmp_path, LoopSettings(max_steps=6, log_every=6, progress=False), {}, "cpu")
    loop.run(lambda step: {"d": float(step), **({"g": 10.0 * step} if step % 3 == 0 else {})})
    (record,) = read_metrics(loop.metrics.path)
    assert record["loss/d"] == pytest.approx(2.5)  # mean of 0..5
    assert record["loss/g"] == pytest.approx(15.0)  # mean of 0 and 30


def test_resume_false_starts_again(tmp_path):
    loop, _, _, step_fn = make_run(tmp_path, 10)
    loop.run(step_fn)
    loop, _, _, step_fn = make_run(tmp_path, 3, resume=False)
    result = loop.run(step_fn)
    assert result.resumed_from is None
    assert [p.name for p in list_checkpoints(tmp_path / "checkpoints")] == ["step-000000003.pt"]
    assert [r["step"] for r in read_metrics(loop.metrics.path)] == [3]

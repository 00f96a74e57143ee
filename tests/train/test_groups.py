"""Per-category model groups of train_gan / train_pose and how predict_poses routes items."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from poseless.config import PredictPosesConfig
from poseless.data.prepared import PreparedDataset
from poseless.train.groups import (
    ALL,
    GROUPS_FILE,
    GroupError,
    Groups,
    make_groups,
    read_groups,
    write_groups,
)
from poseless.train.predict_poses import predict_dataset

ROOT = Path(__file__).resolve().parents[2]


def _fixtures():
    spec = importlib.util.spec_from_file_location(
        "groups_fixtures", ROOT / "tests/features/conftest.py"
    )
    mod = importlib.util.module_from_spec(spec)
    sys.modules["groups_fixtures"] = mod
    spec.loader.exec_module(mod)
    return mod


def test_make_groups_per_category_or_all():
    assert make_groups(["chair", "plane", "chair"], True) == Groups(True, ("chair", "plane"))
    assert make_groups(["chair", "plane"], False) == Groups(False, (ALL,))
    with pytest.raises(GroupError, match="the train split is empty"):
        make_groups([], True)
    with pytest.raises(GroupError, match=r"cannot name a model folder.*per_category: false"):
        make_groups(["chair", "../x"], True)
    with pytest.raises(GroupError, match="cannot name a model folder"):
        make_groups(["all"], True)


def test_group_of_a_category():
    g = Groups(True, ("chair", "plane"))
    assert g.of("plane") == "plane"
    with pytest.raises(GroupError, match="category 'car' has no model"):
        g.of("car")
    assert Groups(False, (ALL,)).of("car") == ALL


def test_groups_file_round_trip_and_errors(tmp_path):
    with pytest.raises(GroupError, match="groups.json: missing; run the train_gan stage first"):
        read_groups(tmp_path, "train_gan")
    g = Groups(True, ("chair", "plane"))
    write_groups(tmp_path, g)
    with pytest.raises(GroupError, match=r"group folders \['chair', 'plane'\] are missing"):
        read_groups(tmp_path, "train_gan")
    (tmp_path / "chair").mkdir()
    (tmp_path / "plane").mkdir()
    assert read_groups(tmp_path, "train_gan") == g
    (tmp_path / GROUPS_FILE).write_text(json.dumps({"per_category": "yes", "groups": ["chair"]}))
    with pytest.raises(GroupError, match="expected per_category"):
        read_groups(tmp_path, "train_gan")
    (tmp_path / GROUPS_FILE).write_text("{not json")
    with pytest.raises(GroupError, match="not a train_gan group index"):
        read_groups(tmp_path, "train_gan")


class Constant(torch.nn.Module):
    """A stand-in regressor: every silhouette gets the same azimuth."""

    def __init__(self, value: float):
        super().__init__()
        self.value = value

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.full((x.shape[0],), self.value)


def test_predict_dataset_uses_each_categorys_regressor(tmp_path):
    root = _fixtures().write_prepared(tmp_path / "prepared", splits={"train": 4, "test": 3})
    ds = PreparedDataset(root)
    cfg = PredictPosesConfig(batch_size=2)
    regs = {"chair": (Constant(10.0), 16), "plane": (Constant(200.0), 16)}
    table, _ = predict_dataset(regs, Groups(True, ("chair", "plane")), ds, cfg, torch.device("cpu"))
    want = np.where(table["category"] == "chair", 10.0, 200.0)
    assert np.allclose(table["azimuth_deg"], want)
    assert set(table["category"]) == {"chair", "plane"}
    table, _ = predict_dataset(
        {ALL: (Constant(33.0), 16)}, Groups(False, (ALL,)), ds, cfg, torch.device("cpu")
    )
    assert np.allclose(table["azimuth_deg"], 33.0)
    with pytest.raises(GroupError, match="category 'plane' has no model"):
        predict_dataset(
            {"chair": regs["chair"]}, Groups(True, ("chair",)), ds, cfg, torch.device("cpu")
        )

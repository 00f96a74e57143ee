"""predict: new images -> meshes and turntables; bad images are listed, not fatal."""

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import trimesh
from PIL import Image

import poseless.train.recon as recon_module
from poseless.predict import PredictSettings, prepare_inputs
from poseless.train.recon import ReconPrediction

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("predict_stage", ROOT / "stages" / "predict.py")
predict_stage = importlib.util.module_from_spec(spec)
spec.loader.exec_module(predict_stage)


class SphereReconstructor:
    """Returns a sphere whose radius is the input's mask coverage (so inputs matter), azimuth 42."""

    representation = "fake"
    config = {"image_size": 24, "camera": {"fov_deg": 30.0, "distance": 2.732}}

    def __init__(self):
        self.seen = []

    def predict(self, images, masks):
        assert images.shape[1:] == (3, 24, 24) and masks.shape[1:] == (1, 24, 24)
        self.seen.append(images.clone())
        sphere = trimesh.creation.icosphere(subdivisions=1)
        meshes = [
            ((sphere.vertices * (0.2 + 0.3 * float(m.mean()))).astype(np.float32), sphere.faces)
            for m in masks
        ]
        return ReconPrediction(meshes, np.full(len(images), 42.0, np.float32), None)


def make_inputs(root: Path) -> tuple[Path, Path]:
    images, masks = root / "images", root / "masks"
    (images / "sub").mkdir(parents=True)
    masks.mkdir()
    rgba = np.zeros((40, 50, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[10:30, 15:35, 3] = 255
    Image.fromarray(rgba, "RGBA").save(images / "a.png")
    Image.fromarray(rgba, "RGBA").save(images / "sub" / "b.png")
    Image.fromarray(np.full((30, 30, 3), 60, np.uint8)).save(images / "d.png")
    m = np.zeros((30, 30), np.uint8)
    m[5:20, 5:25] = 255
    Image.fromarray(m).save(masks / "d.png")
    Image.fromarray(np.zeros((40, 50, 4), np.uint8), "RGBA").save(images / "empty.png")
    (images / "corrupt.png").write_bytes(b"\x89PNG not really")
    return images, masks


def test_prepare_inputs_crops_like_prepare_data_and_rejects_bad_images(tmp_path):
    images, masks = make_inputs(tmp_path)
    good, bad = prepare_inputs(images, masks, PredictSettings(image_size=24, margin=0.0))
    assert [g.id for g in good] == ["a", "d", "sub__b"]
    a = good[0]
    assert a.image.shape == (24, 24, 3) and a.mask.shape == (24, 24)
    assert a.mask.min() == 255  # margin 0: the square box of a square object is all object
    assert sorted(r.id for r in bad) == ["corrupt", "empty"]
    assert any("empty mask" in r.reason for r in bad)


def test_predict_command_writes_meshes_turntables_and_rejected(tmp_path, monkeypatch, capsys):
    images, masks = make_inputs(tmp_path)
    model = tmp_path / "model"
    model.mkdir()
    (model / "model.json").write_text("{}")
    fake = SphereReconstructor()
    monkeypatch.setattr(recon_module, "load_reconstructor", lambda path, device: fake)
    out = tmp_path / "out"
    predict_stage.main(
        ["--model", str(model), "--images", str(images), "--masks", str(masks), "--out", str(out)]
        + ["--turntable-frames", "3", "--render-size", "32", "--device", "cpu"]
    )
    for item in ("a", "d", "sub__b"):
        obj = trimesh.load(out / f"{item}.obj", process=False)
        glb = trimesh.load(out / f"{item}.glb", force="mesh", process=False)
        assert len(obj.faces) == len(glb.faces) == 80
        np.testing.assert_allclose(
            np.sort(glb.vertices, axis=0), np.sort(obj.vertices, axis=0), atol=1e-5
        )
        with Image.open(out / f"{item}.gif") as gif:
            assert gif.n_frames == 3 and gif.size == (32, 32)
            assert np.asarray(gif.convert("RGB")).min() < 200  # the sphere is drawn
    preds = pd.read_csv(out / "predictions.csv")
    assert list(preds["id"]) == ["a", "d", "sub__b"] and (preds["azimuth_deg"] == 42.0).all()
    rejected = pd.read_csv(out / "rejected.csv")
    assert sorted(rejected["id"]) == ["corrupt", "empty"]
    err = capsys.readouterr().err
    assert "rejected" in err and "corrupt.png" in err
    # composited on white like prepare_data: pixels off the mask are background
    assert fake.seen[0][0, :, 0, 0].tolist() == [1.0, 1.0, 1.0]


def test_predict_without_model_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="--model .*no trained model"):
        predict_stage.main(
            ["--model", str(tmp_path), "--images", str(tmp_path), "--out", str(tmp_path / "o")]
        )

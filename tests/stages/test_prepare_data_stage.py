"""Stage prepare_data end to end: synthetic and folder inputs, exit codes, atomicity, determinism."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from poseless.cli import run_stage
from poseless.data.prepare import CONTACT_SHEET_GAP, CONTACT_SHEET_LABEL
from poseless.data.prepared import MANIFEST_COLUMNS, PreparedDataset

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "stages" / "prepare_data.py"
OUTPUT_FILES = {
    "manifest.parquet",
    "meta.json",
    "rejected.csv",
    "contact_sheet.png",
    "config.yaml",
    "images",
    "masks",
}


def _load_stage():
    spec = importlib.util.spec_from_file_location("prepare_data_stage", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


stage = _load_stage()


def write_params(path: Path, prepare_data: dict, seed: int = 0) -> Path:
    path.write_text(yaml.safe_dump({"seed": seed, "prepare_data": prepare_data}))
    return path


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def sheet_size(n: int, s: int, cols: int) -> tuple[int, int]:
    g = CONTACT_SHEET_GAP
    rows = -(-n // cols)
    return cols * (2 * s + g) + g, rows * (s + CONTACT_SHEET_LABEL + g) + g


SYNTHETIC = {
    "crop": "none",
    "image_size": 24,
    "contact_sheet_items": 3,
    "synthetic": {
        "categories": ["chair", "airplane"],
        "instances_per_category": 2,
        "render_size": 32,
        "voxel_resolution": 4,
        "n_surface_points": 8,
        "workers": 1,
        "split_fractions": [0.5, 0.5, 0.0],
    },
}


def test_synthetic_end_to_end_and_deterministic(tmp_path):
    params = write_params(tmp_path / "p.yaml", SYNTHETIC, seed=5)
    out = tmp_path / "prepared"
    stage.main(["--params", str(params), "--out", str(out)])
    assert {p.name for p in out.iterdir()} == OUTPUT_FILES | {"gt"}
    ds = PreparedDataset(out)
    assert len(ds) == 4 and ds.image_size == 24
    assert list(ds.manifest.columns) == list(MANIFEST_COLUMNS)
    assert ds.meta["camera"] == {"fov_deg": 30.0, "distance": 2.732}
    assert ds.meta["adapter"] == "synthetic" and ds.meta["n_rejected"] == 0
    assert ds.meta["categories"] == ["airplane", "chair"]
    assert sum(sum(c.values()) for c in ds.meta["counts"].values()) == 4
    assert set(ds.manifest["split"]) == {"train", "val"}
    assert ds.manifest["azimuth_deg"].notna().all()
    item = ds.ids()[0]
    gt = ds.load_gt(item, ("normals", "depth", "voxels"))
    batch = ds.load([item])
    assert gt["normals"].shape == (3, 24, 24) and gt["normals"].dtype == np.float16
    assert gt["depth"].shape == (24, 24) and gt["voxels"].shape == (4, 4, 4)
    on = batch.masks[0, 0].numpy() == 1.0
    assert on.any() and (gt["depth"][on] > 0).all()
    norms = np.linalg.norm(gt["normals"].astype(np.float32), axis=0)
    np.testing.assert_allclose(norms[on], 1.0, atol=2e-3)
    with Image.open(out / "contact_sheet.png") as im:
        assert im.size == sheet_size(3, 24, 3)
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["stage"] == "prepare_data" and config["config"]["seed"] == 5

    again = tmp_path / "again"
    stage.main(["--params", str(params), "--out", str(again)])
    assert tree_bytes(out) == tree_bytes(again)


def make_folder_dataset(root: Path) -> None:
    rng = np.random.default_rng(0)
    for k in range(3):  # RGBA PNGs
        a = np.zeros((30, 40, 4), np.uint8)
        a[..., :3] = rng.integers(0, 256, (30, 40, 3))
        a[5 + k : 25, 8:30, 3] = 255
        (root / "mugs").mkdir(parents=True, exist_ok=True)
        Image.fromarray(a, "RGBA").save(root / "mugs" / f"m{k}.png")
    mask = np.zeros((30, 40), np.uint8)
    mask[3:20, 2:30] = 255
    (root / "cars").mkdir()
    Image.fromarray(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)).save(root / "cars" / "c.png")
    Image.fromarray(mask).save(root / "cars" / "c_mask.png")
    display = np.full((30, 40, 3), (0, 0, 255), np.uint8)
    display[mask > 0] = (255, 0, 0)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(display).transpose(Image.Transpose.ROTATE_90).save(
        root / "cars" / "photo.jpg", exif=exif, quality=100, subsampling=0
    )
    Image.fromarray(mask).save(root / "cars" / "photo_mask.png")


def test_folder_end_to_end(tmp_path):
    raw = tmp_path / "raw"
    make_folder_dataset(raw)
    (raw / "cars" / "broken.png").write_bytes(b"garbage")
    cfg = {"adapter": "folder", "on_bad_item": "skip", "image_size": 16, "background": [0, 0, 0]}
    cfg["folder"] = {"root": str(raw)}
    params = write_params(tmp_path / "p.yaml", cfg)
    out = tmp_path / "prepared"
    stage.main(["--params", str(params), "--out", str(out)])
    assert {p.name for p in out.iterdir()} == OUTPUT_FILES
    ds = PreparedDataset(out)
    assert ds.ids() == ["cars__c", "cars__photo", "mugs__m0", "mugs__m1", "mugs__m2"]
    assert ds.meta["camera"] is None and ds.meta["categories"] == ["cars", "mugs"]
    assert (ds.manifest["gt"] == "").all() and ds.manifest["distance"].isna().all()
    rej = pd.read_csv(out / "rejected.csv")
    assert list(rej.columns) == ["id", "source", "reason"]
    assert list(rej["source"]) == [str(raw / "cars" / "broken.png")]
    photo = ds.load(["cars__photo"])
    img, msk = photo.images[0].numpy(), photo.masks[0, 0].numpy()
    on, off = msk > 0.99, msk < 0.01
    assert on.sum() > 20 and off.sum() > 0
    assert (img[0][on] > 0.8).mean() > 0.9 and (img[2][on] < 0.2).mean() > 0.9  # red object
    assert (img[:, off] < 0.05).all()  # black background off the mask
    with Image.open(out / "contact_sheet.png") as im:
        assert im.size == sheet_size(5, 16, 5)


def test_bad_item_exits_2_naming_the_file_and_leaves_nothing(tmp_path):
    raw = tmp_path / "raw"
    make_folder_dataset(raw)
    Image.fromarray(np.zeros((30, 40, 3), np.uint8)).save(raw / "mugs" / "zz.png")
    params = write_params(tmp_path / "p.yaml", {"adapter": "folder", "folder": {"root": str(raw)}})
    out = tmp_path / "data" / "prepared"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--params", str(params), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2, proc.stderr
    want = f"error: {raw / 'mugs' / 'zz.png'}: missing mask: no zz_mask.png next to it"
    assert want in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    assert not out.exists() and list(out.parent.iterdir()) == []


def test_failed_run_keeps_the_previous_output(tmp_path, capsys):
    raw = tmp_path / "raw"
    make_folder_dataset(raw)
    params = write_params(
        tmp_path / "p.yaml", {"adapter": "folder", "folder": {"root": str(raw)}, "image_size": 16}
    )
    out = tmp_path / "prepared"
    stage.main(["--params", str(params), "--out", str(out)])
    before = tree_bytes(out)
    (raw / "mugs" / "m1.png").write_bytes(b"\x89PNG\r\n\x1a\ntruncated")
    with pytest.raises(SystemExit) as info:
        run_stage(lambda: stage.main(["--params", str(params), "--out", str(out)]))
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert f"error: {raw / 'mugs' / 'm1.png'}: cannot read image" in err
    assert tree_bytes(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.yaml", "prepared", "raw"]


@pytest.mark.parametrize(
    "prepare_data, message",
    [
        (
            {"adapter": "imagenet"},
            "prepare_data.adapter: 'imagenet' is not one of ['synthetic', 'folder'",
        ),
        (
            {"adapter": "folder", "folder": {"root": "/nonexistent/xyz"}},
            "error: /nonexistent/xyz: folder does not exist",
        ),
    ],
)
def test_user_errors_exit_2(tmp_path, capsys, prepare_data, message):
    params = write_params(tmp_path / "p.yaml", prepare_data)
    with pytest.raises(SystemExit) as info:
        run_stage(lambda: stage.main(["--params", str(params), "--out", str(tmp_path / "o")]))
    assert info.value.code == 2
    assert message in capsys.readouterr().err

"""The report opens in headless Chromium with no broken image and no script error."""

import importlib.util
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import trimesh
import yaml

from poseless.config import ReportConfig
from poseless.data.prepared import PreparedDataset
from poseless.report.html import Page, ReportInputs, build_report

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="`chromium` is not on PATH (Debian: apt-get install -y chromium); the browser check needs it",
)


def _load(name):
    spec = importlib.util.spec_from_file_location(f"{name}_stage_b", ROOT / "stages" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def browser_check(index: Path, profile: Path) -> dict:
    """Load the page headless; return the attributes its inline check script recorded."""
    cmd = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={profile}", "--virtual-time-budget=5000", "--dump-dom", index.as_uri(),
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    head = re.search(r"<html[^>]*>", proc.stdout)
    assert head, f"no <html> in the dumped DOM: {proc.stdout[:500]}"
    attrs = dict(re.findall(r'(data-[a-z-]+)="([^"]*)"', head.group(0)))
    assert attrs.get("data-report-checked") == "yes", f"check script did not run: {head.group(0)}"
    return {
        "broken": json.loads(attrs["data-broken-images"].replace("&quot;", '"')),
        "errors": json.loads(attrs["data-script-errors"].replace("&quot;", '"')),
        "images": int(attrs["data-image-count"]),
    }


def test_report_has_no_broken_image_or_script_error(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text(
        yaml.safe_dump(
            {
                "prepare_data": {
                    "crop": "none",
                    "image_size": 32,
                    "contact_sheet_items": 1,
                    "synthetic": {
                        "categories": ["chair"],
                        "instances_per_category": 2,
                        "render_size": 32,
                        "voxel_resolution": 8,
                        "n_surface_points": 50,
                        "workers": 1,
                        "split_fractions": [0.0, 0.0, 1.0],
                    },
                },
                "evaluate": {
                    "protocols": ["azimuth_search"],
                    "n_points": 200,
                    "azimuth_step_deg": 90.0,
                },
            }
        )
    )
    _load("prepare_data").main(["--params", str(params), "--out", str(tmp_path / "prepared")])
    ds = PreparedDataset(tmp_path / "prepared")
    meshes = tmp_path / "meshes"
    meshes.mkdir()
    for item in ds.ids():
        g = ds.load_gt(item, ("vertices", "faces"))
        trimesh.Trimesh(g["vertices"], g["faces"], process=False).export(meshes / f"{item}.ply")
    _load("evaluate").main(
        ["--params", str(params), "--dataset", str(tmp_path / "prepared"), "--meshes", str(meshes)]
        + ["--out", str(tmp_path / "eval" / "ura" / "seed0"), "--metrics", str(tmp_path / "m.json")]
    )
    out = tmp_path / "report"
    out.mkdir()
    cfg = ReportConfig(sample_items=2, render_size=32, turntable_frames=2)
    build_report(ReportInputs(tmp_path / "prepared", tmp_path / "eval"), cfg, out)
    result = browser_check(out / "index.html", tmp_path / "profile")
    assert result["broken"] == [] and result["errors"] == [], result
    assert result["images"] >= 2 * (
        2 + len(cfg.novel_views_deg) + 1
    )  # per sample: input, views, gif


def test_browser_check_catches_a_broken_image_and_a_script_error(tmp_path):
    page = Page(tmp_path)
    page.add("bad", '<img src="assets/nothing.png" alt="x"><script>undefinedFunction();</script>')
    (tmp_path / "index.html").write_text(page.render("broken"))
    result = browser_check(tmp_path / "index.html", tmp_path / "profile")
    assert result["broken"] == ["assets/nothing.png"]
    assert any("undefinedFunction" in e for e in result["errors"]), result["errors"]
    assert any("nothing.png" in e for e in result["errors"]), result["errors"]

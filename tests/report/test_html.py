"""HTML report pieces: asset naming, escaping, absent inputs, the check script."""

import json

from poseless.config import ReportConfig
from poseless.report.html import CHECK_SCRIPT, Page, ReportInputs, build_report, missing


def test_assets_get_unique_safe_names(tmp_path):
    page = Page(tmp_path)
    a = page.asset("x y/z.png", b"1")
    b = page.asset("x y/z.png", b"2")
    assert a == "assets/x_y_z.png" and b == "assets/x_y_z_1.png"
    assert (tmp_path / b).read_bytes() == b"2"


def test_page_escapes_text_and_has_the_check_script_in_head(tmp_path):
    page = Page(tmp_path)
    page.add("<results>", missing("a <b> & c"))
    text = page.render("T & <x>")
    assert "&lt;results&gt;" in text and "a &lt;b&gt; &amp; c" in text
    assert text.index(CHECK_SCRIPT) < text.index("<body>")
    assert "data-broken-images" in CHECK_SCRIPT and "naturalWidth === 0" in CHECK_SCRIPT


def test_build_report_with_nothing_says_so_in_every_section(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    info = build_report(
        ReportInputs(tmp_path / "no_data", tmp_path / "no_eval"), ReportConfig(), out
    )
    assert info["experiments"] == {}
    assert info["sections"] == [
        "Overview", "Results (headline)", "Claims", "Results", "Samples", "Pseudo poses",
        "Training curves", "GAN samples", "kNN neighbours", "Pseudo-label provenance", "Inputs",
    ]  # fmt: skip
    page = (out / "index.html").read_text()
    assert page.count('class="missing"') >= 9
    assert list((out / "assets").iterdir()) == []


def test_curves_of_every_metrics_file_found(tmp_path):
    recon = tmp_path / "recon"
    for exp in ("ura/seed0", "bl_unsup/seed0"):
        (recon / exp).mkdir(parents=True)
        lines = [json.dumps({"step": s, "loss": 1.0 / (1 + s)}) for s in range(3)]
        (recon / exp / "metrics.jsonl").write_text("\n".join(lines))
    out = tmp_path / "out"
    out.mkdir()
    build_report(ReportInputs(tmp_path, tmp_path / "e", {"recon": recon}), ReportConfig(), out)
    page = (out / "index.html").read_text()
    assert "recon/ura/seed0" in page and "recon/bl_unsup/seed0" in page
    assert len(list((out / "assets").glob("curves_*.png"))) == 2

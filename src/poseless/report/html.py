"""The static HTML report (``index.html`` + ``summary.md``) over every artifact found.

Self-contained: images are files in ``assets/`` next to ``index.html`` with
relative links; no external scripts, styles or fonts. One small inline script
records broken images and script errors into attributes of ``<html>``
(``data-broken-images``, ``data-script-errors``, ``data-report-checked``) so a
headless browser can check the page (``tests/report/test_report_browser.py``).

Each section reads its inputs when present and otherwise says what is missing:

* results: experiments x metric@protocol, mean ± std over seeds, per category,
  and the papers' numbers beside ours (:mod:`poseless.report.tables`);
* samples: input image, reconstruction from the input view and from novel
  views, and a turntable GIF (exact ray casting, :mod:`poseless.report.turntable`);
* poses: predicted vs true azimuth histograms (``predict_poses`` table);
* training curves of every ``metrics.jsonl`` in the gan / pose / recon folders;
* GAN samples, kNN neighbour sheets, and the provenance of the pseudo-labels
  (encoder.json / config.yaml of the embeddings and normals folders).
"""

from __future__ import annotations

import html
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

from poseless.evaluate.align import rotation_y
from poseless.report import claims as C
from poseless.report import tables as T
from poseless.report.turntable import (
    RenderSettings,
    gif_bytes,
    png_bytes,
    render_mesh,
    turntable_frames,
)

CHECK_SCRIPT = """
window.__reportErrors = [];
window.addEventListener('error', function (e) {
  var t = e.target;
  var what = (t && t !== window && (t.src || t.href)) ? 'failed to load ' + (t.src || t.href) : String(e.message);
  window.__reportErrors.push(what);
}, true);
window.addEventListener('load', function () {
  var broken = [];
  var imgs = document.getElementsByTagName('img');
  for (var i = 0; i < imgs.length; i++) {
    if (!imgs[i].complete || imgs[i].naturalWidth === 0) broken.push(imgs[i].getAttribute('src'));
  }
  var root = document.documentElement;
  root.setAttribute('data-broken-images', JSON.stringify(broken));
  root.setAttribute('data-script-errors', JSON.stringify(window.__reportErrors));
  root.setAttribute('data-image-count', String(imgs.length));
  root.setAttribute('data-report-checked', 'yes');
});
"""
"""Inline check recorded into <html> attributes once the page has loaded."""

STYLE = """
body { font-family: sans-serif; margin: 2em; max-width: 1400px; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 13px; }
th, td { border: 1px solid #bbb; padding: 3px 7px; text-align: right; }
th:first-child, td:first-child { text-align: left; }
caption { text-align: left; font-weight: bold; padding: 4px 0; }
.missing { color: #a33; font-style: italic; }
figure { display: inline-block; margin: 4px; text-align: center; font-size: 11px; }
figure img { image-rendering: pixelated; border: 1px solid #ccc; }
pre { background: #f4f4f4; padding: 6px; font-size: 12px; overflow-x: auto; }
"""


@dataclass
class ReportInputs:
    """Where the report looks for its inputs (any may be absent)."""

    dataset: Path
    """Prepared dataset folder."""
    eval_root: Path
    """Root of ``<exp>/seed<k>/`` evaluation folders."""
    folders: dict[str, Path] = field(default_factory=dict)
    """Upstream folders by role: gan, pose, poses, knn, embeddings, normals, recon, or any extra key."""


class Page:
    """Sections of HTML plus the asset files they link."""

    def __init__(self, out_dir: Path):
        self.out = Path(out_dir)
        self.assets = self.out / "assets"
        self.assets.mkdir(parents=True, exist_ok=True)
        self.sections: list[tuple[str, str]] = []
        self._names: set[str] = set()

    def asset(self, name: str, data: bytes) -> str:
        """Write ``assets/<name>`` and return its relative link (names are made unique)."""
        stem, dot, ext = name.rpartition(".")
        safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in stem) or "asset"
        final, k = f"{safe}.{ext}", 1
        while final in self._names:
            final, k = f"{safe}_{k}.{ext}", k + 1
        self._names.add(final)
        (self.assets / final).write_bytes(data)
        return f"assets/{final}"

    def img(self, name: str, data: bytes, caption: str = "", width: int | None = None) -> str:
        """A <figure> with an image asset."""
        src = self.asset(name, data)
        w = f' width="{width}"' if width else ""
        cap = f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""
        return f'<figure><img src="{src}" alt="{html.escape(caption or name)}"{w}>{cap}</figure>'

    def add(self, title: str, body: str) -> None:
        """Append a section."""
        self.sections.append((title, body))

    def render(self, title: str) -> str:
        """The whole page."""
        toc = "".join(
            f'<li><a href="#s{k}">{html.escape(t)}</a></li>'
            for k, (t, _) in enumerate(self.sections)
        )
        body = "".join(
            f'<section id="s{k}"><h2>{html.escape(t)}</h2>{b}</section>'
            for k, (t, b) in enumerate(self.sections)
        )
        return (
            '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>{html.escape(title)}</title><style>{STYLE}</style>"
            f"<script>{CHECK_SCRIPT}</script></head><body><h1>{html.escape(title)}</h1>"
            f"<ul>{toc}</ul>{body}</body></html>\n"
        )


def missing(text: str) -> str:
    """A 'this section has no input' paragraph."""
    return f'<p class="missing">{html.escape(text)}</p>'


def _read_png(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def _load_obj(path: Path) -> tuple[np.ndarray, np.ndarray]:
    from poseless.evaluate.external import load_mesh_file

    return load_mesh_file(path)


# --------------------------------------------------------------------------- sections


def overview_section(page: Page, inputs: ReportInputs, runs: dict) -> dict:
    """Dataset and runs found; returns the dataset's meta.json ({} when absent)."""
    meta_path = inputs.dataset / "meta.json"
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    parts = []
    if meta:
        parts.append(
            f"<p>Dataset <code>{html.escape(str(inputs.dataset))}</code>: adapter "
            f"<b>{html.escape(str(meta.get('adapter')))}</b>, {meta.get('n_items')} items, "
            f"image size {meta.get('image_size')}, categories "
            f"{html.escape(', '.join(meta.get('categories', [])))}.</p>"
        )
        if meta.get("adapter") == "synthetic":
            parts.append(
                "<p><b>Synthetic data:</b> the numbers below are on the embedded procedural "
                "dataset and are not comparable with the papers' (ShapeNet, Pix3D).</p>"
            )
    else:
        parts.append(missing(f"no prepared dataset at {inputs.dataset} (meta.json missing)"))
    if runs:
        items = "".join(
            f"<li>{html.escape(e)}: seeds {', '.join(map(str, s))}</li>" for e, s in runs.items()
        )
        parts.append(f"<p>Evaluated experiments:</p><ul>{items}</ul>")
    else:
        parts.append(missing(f"no evaluation results under {inputs.eval_root}"))
    page.add("Overview", "".join(parts))
    return meta


def results_section(page: Page, runs: dict, metrics, adapter: str) -> str:
    """The tables; returns their Markdown (summary.md)."""
    if not runs:
        page.add("Results", missing("no evaluate outputs found: nothing to tabulate"))
        return "No evaluation results found.\n"
    pose_metrics = ("pose_median_deg", "pose_acc@15", "pose_acc@30")
    main = T.results_table(runs, tuple(metrics) + ("mask_iou",) + pose_metrics)
    md = [T.to_markdown(main)]
    parts = [T.to_html(main)]
    cats = sorted({c for s in runs.values() for r in s.values() for c in r.get("per_category", {})})
    for cat in cats:
        t = T.results_table(runs, metrics, group=cat)
        parts.append(T.to_html(t))
        md.append(T.to_markdown(t))
    comp = T.paper_comparison(runs, adapter)
    parts.append(T.to_html(comp))
    md.append(T.to_markdown(comp))
    skipped = []
    for exp, seeds in runs.items():
        first = next(iter(seeds.values()))
        for proto, reason in sorted(first.get("skipped", {}).items()):
            skipped.append(
                f"<li>{html.escape(exp)} — {html.escape(proto)}: {html.escape(reason)}</li>"
            )
    if skipped:
        parts.append(f"<p>Not scored:</p><ul>{''.join(skipped)}</ul>")
    parts.append(
        "<p>Chamfer means are over non-empty predictions; 'empty' counts empty predictions. "
        "mask_iou: silhouette IoU at the input view (exact ray casting).</p>"
    )
    page.add("Results", "".join(parts))
    return "\n".join(md)


def claims_sections(page: Page, inputs: ReportInputs, runs: dict, cfg) -> tuple[str, list[dict]]:
    """Headline table and the papers' claims on our numbers; returns (Markdown, claims.json rows).

    Pseudo-pose errors come from the ``poses`` folder's poses.parquet, the normals'
    noise condition from the ``normals`` folder's config.yaml (:mod:`poseless.report.claims`).
    """
    agg = T.aggregate_runs(runs)
    headline = C.headline_table(agg)
    poses, normals = inputs.folders.get("poses"), inputs.folders.get("normals")
    results = C.evaluate_claims(agg, C.pose_errors_by_category(poses), C.normals_condition(normals))
    table = C.claims_table(results)
    if runs:
        page.add("Results (headline)", T.to_html(headline))
    else:
        page.add("Results (headline)", missing("no evaluate outputs found: nothing to tabulate"))
    sources = (
        f"<p>Pseudo-pose errors: {html.escape(str(poses))}/poses.parquet; normals: "
        f"{html.escape(str(normals))}/config.yaml. Verdicts compare means over seeds.</p>"
    )
    notes = "".join(f"<p>{html.escape(n)}</p>" for n in cfg.notes)
    page.add("Claims", T.to_html(table) + sources + notes)
    md = ["## Results (headline)\n", T.to_markdown(headline), "## Claims\n", T.to_markdown(table)]
    md += [f"{n}\n" for n in cfg.notes]
    return "\n".join(md) + "\n", C.claims_json(results)


def samples_section(page: Page, inputs: ReportInputs, runs: dict, cfg) -> None:
    """Input | reconstruction at the input view | novel views | turntable, per experiment."""
    parts = []
    settings = RenderSettings(size=cfg.render_size)
    for exp, seeds in runs.items():
        seed = next(iter(seeds))
        folder = inputs.eval_root / exp / f"seed{seed}"
        path = folder / "samples.json"
        samples = json.loads(path.read_text())["samples"] if path.is_file() else []
        parts.append(f"<h3>{html.escape(exp)} (seed {seed})</h3>")
        if not samples:
            parts.append(missing(f"no sample meshes in {folder}"))
            continue
        for s in samples[: cfg.sample_items]:
            parts.append(_sample_row(page, inputs, folder, exp, s, cfg, settings))
    page.add("Samples", "".join(parts) or missing("no evaluation results: no samples"))


def _sample_row(page, inputs, folder, exp, s, cfg, settings) -> str:
    item = s["id"]
    row = [f"<div><b>{html.escape(item)}</b> ({html.escape(s.get('category', ''))})<br>"]
    img_path = inputs.dataset / "images" / f"{item}.png"
    if img_path.is_file():
        row.append(page.img(f"{exp}_{item}_input.png", img_path.read_bytes(), "input", 96))
    try:
        v, f = _load_obj(folder / s["mesh"])
    except (ValueError, OSError) as exc:
        return "".join(row) + missing(f"mesh unreadable: {exc}") + "</div>"
    view = s.get("input_view")
    if view is not None:
        Tm = np.asarray(view["pred_transform"], np.float64)
        v = v @ Tm[:3, :3].T + Tm[:3, 3]
        R, t, fov, src = (
            np.asarray(view["R"]),
            np.asarray(view["t"]),
            view["fov_deg"],
            view["source"],
        )
    else:
        from poseless.report.turntable import kato_pose

        R, t = kato_pose(0.0, settings.elevation_deg, settings.distance)
        fov, src = settings.fov_deg, "default view (no exact input camera)"
    rgb, _ = render_mesh(v, f, R, t, fov, settings)
    row.append(page.img(f"{exp}_{item}_recon.png", png_bytes(rgb), f"input view ({src})", 128))
    for delta in cfg.novel_views_deg:
        A = rotation_y(math.radians(delta))
        rgb, _ = render_mesh(v @ A.T, f, R, t, fov, settings)
        row.append(page.img(f"{exp}_{item}_az{delta:g}.png", png_bytes(rgb), f"+{delta:g}°", 128))
    frames = turntable_frames(v, f, cfg.turntable_frames, settings, R, t)
    gif = gif_bytes(frames, cfg.turntable_ms)
    row.append(page.img(f"{exp}_{item}_turntable.gif", gif, "turntable", 128))
    return "".join(row) + "</div>"


def pose_figure(pred_deg: np.ndarray, true_deg: np.ndarray, bins: int) -> bytes:
    """PNG: histograms of predicted and true azimuths, and predicted vs true where both exist.

    Args:
        pred_deg, true_deg: (N,) azimuths in [0, 360); true may hold nan (unknown).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from poseless.report.figures import png_bytes as fig_png

    known = np.isfinite(true_deg)
    fig, axes = plt.subplots(
        1, 2 if known.any() else 1, figsize=(8 if known.any() else 4, 3), squeeze=False
    )
    edges = np.linspace(0.0, 360.0, bins + 1)
    ax = axes[0, 0]
    ax.hist(pred_deg, edges, histtype="step", label="predicted")
    if known.any():
        ax.hist(true_deg[known], edges, histtype="step", label="true")
        sc = axes[0, 1]
        sc.scatter(true_deg[known], pred_deg[known], s=4)
        sc.set_xlabel("true azimuth (deg)", fontsize=8)
        sc.set_ylabel("predicted azimuth (deg)", fontsize=8)
        sc.set_title("predicted vs true", fontsize=9)
    ax.set_xlabel("azimuth (deg)", fontsize=8)
    ax.set_title("azimuth histograms", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    data = fig_png(fig)
    plt.close(fig)
    return data


def poses_section(page: Page, inputs: ReportInputs, cfg) -> None:
    """Histograms of predicted and true azimuths (predict_poses table)."""
    folder = inputs.folders.get("poses")
    table_path = folder / "poses.parquet" if folder is not None else None
    if table_path is None or not table_path.is_file():
        page.add("Pseudo poses", missing("no predict_poses table (poses.parquet) given or found"))
        return
    import pandas as pd

    poses = pd.read_parquet(table_path)
    if not {"id", "azimuth_deg"} <= set(poses.columns):
        page.add("Pseudo poses", missing(f"{table_path}: needs columns id and azimuth_deg"))
        return
    pred = np.mod(poses["azimuth_deg"].to_numpy(np.float64), 360.0)
    true = np.full(len(pred), np.nan)
    manifest_path = inputs.dataset / "manifest.parquet"
    if manifest_path.is_file():
        gt = pd.read_parquet(manifest_path).set_index("id")["azimuth_deg"]
        true = np.mod(gt.reindex(poses["id"]).to_numpy(np.float64), 360.0)
    body = page.img("poses_hist.png", pose_figure(pred, true, cfg.pose_bins), f"{len(poses)} items")
    if not np.isfinite(true).any():
        body += missing("the dataset has no GT azimuths: predicted histogram only")
    page.add("Pseudo poses", body)


def curves_section(page: Page, inputs: ReportInputs) -> None:
    """Training curves of every metrics.jsonl in the gan, pose and recon folders."""
    from poseless.report.figures import training_curves_png
    from poseless.train.metrics_log import read_metrics

    parts = []
    for role in ("gan", "pose", "recon"):
        folder = inputs.folders.get(role)
        if folder is None or not folder.is_dir():
            parts.append(missing(f"{role}: folder not given or absent"))
            continue
        files = sorted(folder.rglob("metrics.jsonl"))
        if not files:
            parts.append(missing(f"{role}: no metrics.jsonl under {folder}"))
        for path in files:
            records = read_metrics(path)
            keys = sorted(
                {
                    k
                    for r in records
                    for k, v in r.items()
                    if k != "step" and isinstance(v, int | float)
                }
            )[:12]
            if not records or not keys:
                parts.append(missing(f"{path}: no records"))
                continue
            rel = path.parent.relative_to(folder).as_posix()
            name = f"{role}/{rel}" if rel != "." else role
            png = training_curves_png(records, [(k, [k]) for k in keys], title=name, columns=4)
            parts.append(page.img(f"curves_{name}.png", png, name))
    page.add("Training curves", "".join(parts))


def gan_section(page: Page, inputs: ReportInputs) -> None:
    """The samples.png of every GAN group (one generator per category, or ``all``)."""
    folder = inputs.folders.get("gan")
    paths = sorted(folder.rglob("samples.png")) if folder is not None and folder.is_dir() else []
    if not paths:
        page.add("GAN samples", missing("no train_gan samples.png given or found"))
        return
    parts = []
    for path in paths:
        rel = path.parent.relative_to(folder).as_posix()
        name = "gan" if rel == "." else f"gan/{rel}"
        parts.append(page.img(f"{name.replace('/', '_')}_samples.png", path.read_bytes(), name))
    page.add("GAN samples", "".join(parts))


def knn_section(page: Page, inputs: ReportInputs, cfg) -> None:
    """Query image followed by its K neighbours (build_knn table)."""
    folder = inputs.folders.get("knn")
    path = folder / "neighbours.parquet" if folder is not None else None
    if path is None or not path.is_file():
        page.add(
            "kNN neighbours", missing("no build_knn table (neighbours.parquet) given or found")
        )
        return
    import pandas as pd

    from poseless.report.figures import image_grid_png

    table = pd.read_parquet(path).head(cfg.knn_items)
    rows, labels = [], []
    for _, r in table.iterrows():
        ids = [r["id"], *list(r["neighbours"])]
        imgs = []
        for i in ids:
            p = inputs.dataset / "images" / f"{i}.png"
            imgs.append(_read_png(p) if p.is_file() else None)
        if any(im is None for im in imgs) or not imgs:
            continue
        rows.append(np.stack([im.transpose(2, 0, 1) for im in imgs]) / 255.0)
        labels.append(str(r["id"])[:10])
    if not rows:
        page.add("kNN neighbours", missing(f"{path}: no rows whose images are in the dataset"))
        return
    k = min(len(x) for x in rows)
    grid = np.stack([x[:k] for x in rows])
    png = image_grid_png(grid, ["query"] + [f"nn{j}" for j in range(1, k)], labels)
    page.add("kNN neighbours", page.img("knn_sheet.png", png, f"{path}"))


def provenance_section(page: Page, inputs: ReportInputs) -> None:
    """Which encoder / normal backend produced the pseudo-labels."""
    parts = []
    for role, names in (
        ("embeddings", ("encoder.json", "config.yaml")),
        ("normals", ("config.yaml",)),
    ):
        folder = inputs.folders.get(role)
        found = False
        for name in names:
            p = folder / name if folder is not None else None
            if p is not None and p.is_file():
                text = p.read_text()
                if name.endswith(".yaml"):
                    data = yaml.safe_load(text) or {}
                    cfg = data.get("config", data)
                    text = yaml.safe_dump(cfg, sort_keys=False)
                parts.append(f"<h3>{role}: {html.escape(name)}</h3><pre>{html.escape(text)}</pre>")
                found = True
        if not found:
            parts.append(missing(f"{role}: no {' / '.join(names)} given or found"))
    page.add("Pseudo-label provenance", "".join(parts))


def extras_section(page: Page, inputs: ReportInputs) -> None:
    """Every upstream folder given, and whether it exists."""
    rows = "".join(
        f"<tr><td>{html.escape(k)}</td><td>{html.escape(str(p))}</td>"
        f"<td>{'present' if p.exists() else 'absent'}</td></tr>"
        for k, p in sorted(inputs.folders.items())
    )
    body = f"<table><thead><tr><th>role</th><th>path</th><th>status</th></tr></thead>{rows}</table>"
    page.add("Inputs", body if rows else missing("no upstream folders given"))


def build_report(inputs: ReportInputs, cfg, out_dir: str | Path) -> dict:
    """Write ``index.html``, ``summary.md``, ``claims.json`` and ``assets/`` into ``out_dir`` (an existing, empty folder).

    Args:
        inputs: where the artifacts are.
        cfg: the ``report`` section (``poseless.config.ReportConfig``).
    Returns:
        {'experiments': {exp: [seeds]}, 'sections': [titles]}.
    """
    out = Path(out_dir)
    page = Page(out)
    runs = T.collect_runs(inputs.eval_root)
    meta = overview_section(page, inputs, runs)
    adapter = str(meta.get("adapter", "unknown"))
    claims_md, claims = claims_sections(page, inputs, runs, cfg)
    md = results_section(page, runs, cfg.metrics, adapter)
    samples_section(page, inputs, runs, cfg)
    poses_section(page, inputs, cfg)
    curves_section(page, inputs)
    gan_section(page, inputs)
    knn_section(page, inputs, cfg)
    provenance_section(page, inputs)
    extras_section(page, inputs)
    (out / "index.html").write_text(page.render("Poseless report"))
    head = f"# Poseless results\n\nDataset adapter: {adapter}."
    if adapter == "synthetic":
        head += " Synthetic data: not comparable with the papers' numbers."
    (out / "summary.md").write_text(head + "\n\n" + claims_md + "\n## All results\n\n" + md)
    (out / "claims.json").write_text(json.dumps(claims, indent=2, ensure_ascii=False) + "\n")
    return {
        "experiments": {e: list(s) for e, s in runs.items()},
        "sections": [t for t, _ in page.sections],
    }

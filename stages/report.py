"""Stage report: one static HTML page (index.html + assets/) and summary.md over every artifact.

Reads the evaluation folders (``--eval`` root with ``<exp>/seed<k>/``), the
prepared dataset and whichever upstream folders are given (``--gan``, ``--pose``,
``--poses``, ``--knn``, ``--embeddings``, ``--normals``, ``--recon``, or
``--extra key=path``); sections whose inputs are absent say so. The output
folder is written atomically and is self-contained (no external scripts).
"""

from __future__ import annotations

from pathlib import Path

from poseless.cli import run_stage, stage_parser, write_provenance
from poseless.config import load_params
from poseless.report.html import ReportInputs, build_report
from poseless.utils import atomic_path

PARAMS = ("seed", "report")
STAGE = "report"
ROLES = ("gan", "pose", "poses", "knn", "embeddings", "normals", "recon")


def main(argv=None):
    parser = stage_parser(__doc__)
    parser.add_argument("--dataset", required=True, help="prepared dataset folder")
    parser.add_argument("--eval", required=True, help="root of <exp>/seed<k>/ evaluation folders")
    for role in ROLES:
        parser.add_argument(f"--{role}", default=None, help=f"{role} folder (optional)")
    parser.add_argument(
        "--extra", action="append", default=[], metavar="KEY=PATH", help="more upstream folders"
    )
    parser.add_argument("--out", required=True, help="output folder (data/report)")
    args = parser.parse_args(argv)
    cfg = load_params(args.params, sections=PARAMS)
    folders = {r: Path(getattr(args, r)) for r in ROLES if getattr(args, r)}
    for item in args.extra:
        key, sep, path = item.partition("=")
        if not sep or not key or not path:
            parser.error(f"--extra {item!r}: expected KEY=PATH")
        folders[key] = Path(path)
    inputs = ReportInputs(Path(args.dataset), Path(args.eval), folders)
    with atomic_path(args.out) as tmp:
        tmp.mkdir()
        info = build_report(inputs, cfg.report, tmp)
        write_provenance(tmp, STAGE, cfg.to_dict(), {k: str(v) for k, v in folders.items()})
    print(f"report: {len(info['experiments'])} experiments -> {Path(args.out) / 'index.html'}")


if __name__ == "__main__":
    run_stage(main)

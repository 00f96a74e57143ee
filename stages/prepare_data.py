"""Stage prepare_data: read a raw collection through its adapter into the prepared format.

Writes the whole ``--out`` folder atomically: it is built in a temporary folder
next to ``--out`` and renamed at the end, so a killed run leaves nothing that
looks finished (and an earlier complete output stays until the new one is done).
"""

from __future__ import annotations

import sys

from tqdm import tqdm

from poseless.cli import run_stage, stage_parser, write_provenance
from poseless.config import load_params
from poseless.data.adapters import create_adapter, get_adapter
from poseless.data.prepare import write_prepared
from poseless.utils import atomic_path

PARAMS = ("seed", "prepare_data")


def main(argv: list[str] | None = None) -> None:
    parser = stage_parser(__doc__)
    parser.add_argument(
        "--out", default="data/prepared", help="output folder (default: data/prepared)"
    )
    args = parser.parse_args(argv)
    params = load_params(args.params, sections=PARAMS)
    cfg = params.prepare_data
    adapter = get_adapter(cfg.adapter)

    def progress(entries):
        return tqdm(
            entries, total=adapter.total(cfg), desc="prepare_data", unit="item", file=sys.stderr
        )

    with atomic_path(args.out) as tmp:
        summary = write_prepared(
            create_adapter(cfg, params.seed),
            cfg,
            tmp,
            split_fractions=adapter.split_fractions(cfg),
            camera=adapter.camera(cfg),
            progress=progress,
        )
        write_provenance(tmp, "prepare_data", params.to_dict())
    print(
        f"prepare_data: {summary.n_items} items, {summary.n_rejected} rejected -> {args.out}",
        file=sys.stderr,
    )


if __name__ == "__main__":
    run_stage(main)

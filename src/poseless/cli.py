"""What every stage script shares: argument parsing, error reporting, provenance.

A stage script is ``parse -> load config -> call library -> write``::

    PARAMS = ("seed", "embed_images")   # the sections it reads (workflow and dvc.yaml use the same)

    def main(argv=None):
        parser = stage_parser(__doc__)
        parser.add_argument("--dataset", required=True)
        args = parser.parse_args(argv)
        cfg = load_params(args.params, sections=PARAMS)
        ...

    if __name__ == "__main__":
        run_stage(main)
"""

from __future__ import annotations

import argparse
import logging
import platform
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from poseless import __version__
from poseless.config import ConfigError
from poseless.data.prepared import DatasetError
from poseless.errors import PoselessError
from poseless.utils import LOG_FORMAT, write_yaml_atomic

USER_ERRORS = (ConfigError, DatasetError, PoselessError, FileNotFoundError)


def stage_parser(description: str | None) -> argparse.ArgumentParser:
    """Parser with the arguments every stage takes (--params, --device)."""
    parser = argparse.ArgumentParser(
        description=(description or "").strip().splitlines()[0] if description else None
    )
    parser.add_argument(
        "--params", default="params.yaml", help="params file (default: params.yaml)"
    )
    parser.add_argument(
        "--device", default="auto", help="auto (CUDA when present, else CPU), cpu, cuda, cuda:1"
    )
    return parser


def run_stage(main: Callable[[], object]) -> None:
    """Run a stage's ``main``; user errors print one clear line and exit 2."""
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT, stream=sys.stderr)
    try:
        main()
    except USER_ERRORS as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)


def _git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=False
        )
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def write_provenance(
    out_dir: str | Path, stage: str, config: dict, extra: dict | None = None
) -> None:
    """Write ``config.yaml`` (the resolved sections) and provenance into an artifact folder.

    Deliberately free of timestamps, host names and commits: the same inputs and
    config must give byte-identical artifacts (DVC hashes them). Those go to the log.
    """
    logging.getLogger("poseless").info(
        "stage %s: poseless %s, git %s, python %s",
        stage,
        __version__,
        _git_commit(),
        platform.python_version(),
    )
    record = {
        "stage": stage,
        "poseless_version": __version__,
        "config": config,
    }
    if extra:
        record["extra"] = extra
    write_yaml_atomic(Path(out_dir) / "config.yaml", record)

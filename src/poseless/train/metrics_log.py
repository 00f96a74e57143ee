"""Training metrics as JSON lines: one record per logged step.

``metrics.jsonl`` holds one JSON object per line, e.g.
``{"step": 200, "wall_s": 31.2, "lr/g": 0.0001, "loss/d": -0.41, ...}``. Records
are appended and flushed as they come, so a killed run keeps what it logged.
On resume, :meth:`MetricsLog.truncate_after` drops records past the restored
step (they will be logged again) and any half-written last line.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from poseless.utils import write_text_atomic


def _parse_lines(text: str) -> list[dict[str, Any]]:
    records = []
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line cut short by a kill
    return records


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """All complete records of a metrics file, in file order ([] if it does not exist)."""
    path = Path(path)
    if not path.is_file():
        return []
    return _parse_lines(path.read_text())


def _json_value(v: Any) -> Any:
    # JSON has no NaN/Inf; write them as strings so the file stays valid JSON.
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return v


class MetricsLog:
    """Append-only JSON-lines metrics file at ``path``."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def append(self, record: dict[str, Any]) -> None:
        """Append one record (must hold an int ``step``) and flush it to disk."""
        if not isinstance(record.get("step"), int):
            raise ValueError(f"MetricsLog.append: record needs an int 'step', got {record}")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps({k: _json_value(v) for k, v in record.items()}, sort_keys=False)
        with open(self.path, "a") as f:
            f.write(line + "\n")
            f.flush()

    def truncate_after(self, step: int) -> None:
        """Keep only complete records with ``step <= step`` (rewritten atomically)."""
        if not self.path.is_file():
            return
        kept = [r for r in read_metrics(self.path) if int(r.get("step", -1)) <= step]
        write_text_atomic(self.path, "".join(json.dumps(r) + "\n" for r in kept))

    def read(self) -> list[dict[str, Any]]:
        """All complete records."""
        return read_metrics(self.path)


CURVES_FILE = "curves.csv"
"""The artifact copy of the curves as CSV: DVC plots read CSV/JSON, not JSON lines."""


def write_curves_csv(path: str | Path, records: list[dict[str, Any]]) -> None:
    """Write ``records`` as CSV (atomically): ``step`` then every other key, sorted.

    A key a record lacks (a step that did not log it) is an empty cell; ``wall_s``
    is left out so the file is the same for the same run on any machine.
    """
    keys = sorted({k for r in records for k in r} - {"step", "wall_s"})
    rows = [",".join(["step", *keys])]
    for r in records:
        rows.append(",".join(str(_json_value(r.get(k, ""))) for k in ["step", *keys]))
    write_text_atomic(path, "\n".join(rows) + "\n")

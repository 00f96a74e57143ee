"""A throw-away copy of the workflow, so runs never touch the checkout's data/."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
COPY = ["Snakefile", "params.yaml", "dvc.yaml", "workflow", "stages", "src", "config"]


def snakemake_bin() -> str:
    return str(Path(sys.executable).with_name("snakemake"))


@pytest.fixture
def workflow_copy(tmp_path) -> Path:
    dst = tmp_path / "wf"
    dst.mkdir()
    for name in COPY:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dst / name, ignore=shutil.ignore_patterns("__pycache__"))
        elif src.exists():
            shutil.copy2(src, dst / name)
    return dst


def run_snakemake(workdir: Path, *args: str, check: bool = True, timeout: int = 900):
    cmd = [snakemake_bin(), "--cores", "2", *args]
    env_path = str(Path(sys.executable).parent)
    import os

    env = dict(os.environ, PATH=env_path + os.pathsep + os.environ.get("PATH", ""))
    proc = subprocess.run(
        cmd, cwd=workdir, capture_output=True, text=True, timeout=timeout, env=env
    )
    if check and proc.returncode != 0:
        logs = (
            "\n".join(
                f"--- {p}\n{p.read_text()[-3000:]}"
                for p in sorted((workdir / "logs").glob("**/*.log"))
            )
            if (workdir / "logs").is_dir()
            else ""
        )
        raise AssertionError(
            f"snakemake {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}\n{logs}"
        )
    return proc

"""A throw-away copy of the workflow, so runs never touch the checkout's data/.

``tiny_run`` is one finished run of config/tiny.yaml shared by the whole session
(the tiny workflow takes minutes on the 2-core CI machine): tests read it, and
copy it with :func:`copy_run` before changing anything in it.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
COPY = ["Snakefile", "params.yaml", "dvc.yaml", "workflow", "stages", "src", "config"]
# The repository's DVC set-up (no remote configured) and git ignores.
COPY_DVC = [".dvc/config", ".dvc/.gitignore", ".dvcignore", ".gitignore"]


def snakemake_bin() -> str:
    return str(Path(sys.executable).with_name("snakemake"))


def make_workflow_copy(dst: Path, tiny: bool = False) -> Path:
    """Copy the workflow (code, configs, DVC set-up) to ``dst``; ``tiny``: tiny.yaml as params.yaml."""
    dst.mkdir(parents=True)
    for name in COPY + COPY_DVC:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dst / name, ignore=shutil.ignore_patterns("__pycache__"))
        elif src.exists():
            (dst / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / name)
    if tiny:
        # dvc.yaml's stages read params.yaml; the tiny run is the default run of the copy
        shutil.copy2(dst / "config" / "tiny.yaml", dst / "params.yaml")
    return dst


@pytest.fixture
def workflow_copy(tmp_path) -> Path:
    return make_workflow_copy(tmp_path / "wf")


def copy_run(src: Path, dst: Path, code_only: bool = False) -> Path:
    """Copy a finished run, keeping every mtime (Snakemake decides from them).

    The training scratch folder data/.resume (hundreds of MB, not an output) stays
    behind; ``code_only``: also data/, logs/ and .snakemake/ (the same code, no run).
    """
    skip = {".resume"} if not code_only else set()

    def ignore(folder, names):
        if Path(folder) == src:
            return [n for n in names if code_only and n in ("data", "logs", ".snakemake")]
        return [n for n in names if Path(folder) == src / "data" and n in skip]

    shutil.copytree(src, dst, symlinks=True, ignore=ignore)
    return dst


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """One finished tiny run (config/tiny.yaml as params.yaml), shared by the session.

    Read-only for tests: copy it with :func:`copy_run` before changing anything.
    """
    dst = make_workflow_copy(tmp_path_factory.mktemp("tiny_run") / "wf", tiny=True)
    run_snakemake(dst)
    return dst


def venv_env(workdir: Path | None = None) -> dict:
    """The environment with this interpreter's bin folder (snakemake, dvc, python) first on PATH.

    With ``workdir``, its own src/ comes first on PYTHONPATH: the Snakefile and the
    stages of a copy then import the copy's poseless, not the checkout's (which
    other people edit while a long test runs).
    """
    env = dict(os.environ, PATH=str(Path(sys.executable).parent) + os.pathsep + os.environ["PATH"])
    # dvc's usage report is a temp file handed to a daemon that cannot send it offline:
    # every dvc call would leave one behind in /tmp.
    env["DVC_NO_ANALYTICS"] = "1"
    if workdir is not None and (Path(workdir) / "src").is_dir():
        env["PYTHONPATH"] = str(Path(workdir).resolve() / "src")
    return env


def run_snakemake(workdir: Path, *args: str, check: bool = True, timeout: int = 900):
    cmd = [snakemake_bin(), "--cores", "2", *args]
    proc = subprocess.run(
        cmd, cwd=workdir, capture_output=True, text=True, timeout=timeout, env=venv_env(workdir)
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

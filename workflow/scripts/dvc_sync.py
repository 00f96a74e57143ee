"""Record a finished run in DVC and push it (publish); bring a fresh clone up to date (sync).

Snakemake is the runner, DVC the record (DESIGN.md). The two views of "up to
date" differ: DVC compares content hashes with dvc.lock, Snakemake compares file
modification times (``rerun-triggers: [mtime]`` in the default profile; params
changes reach it through the ``data/params/<stage>.json`` stamps that the
Snakefile rewrites at parse time only when their content changes). This script
moves between the two:

``publish`` (``make publish``), after a run:
  1. a DVC remote must be configured (``dvc remote add -d NAME URL``);
  2. dvc.yaml must mirror the Snakemake rules (``sync_dvc_yaml.py --check``);
  3. Snakemake must have nothing to run (the workspace holds a finished run);
  4. ``dvc commit -f``: dvc.lock records the hashes of every stage's deps,
     params and outs; ``dvc status`` must then be clean;
  5. ``dvc push`` to the remote.
  The user then records the run in git: ``git add dvc.lock && git commit``.

``sync`` (``make sync``), on a fresh clone (or after ``git pull``):
  1. ``dvc pull``: every out of dvc.lock, in arbitrary mtime order;
  2. ``dvc status`` must be clean: the checkout's code, params and the pulled
     outs are exactly what dvc.lock recorded (else: the stages that differ);
  3. ``snakemake --touch --forceall``: parses the Snakefile (writing the params
     stamps first) and then touches every output in DAG order, so inputs, code
     and stamps are older than outputs. Only after the content check of step 2
     is this safe: it never hides a real change;
  4. ``snakemake -n`` must have nothing to run.
  The params stamps are not tracked by DVC: they are derived from params.yaml
  (which DVC tracks as ``params:``) and rewritten by the parse of step 3.
  No ``.snakemake`` metadata is needed: reruns are decided from files only.

Usage: ``python workflow/scripts/dvc_sync.py publish [--remote NAME]`` and
``python workflow/scripts/dvc_sync.py sync [--remote NAME]``. Errors print one
line starting ``error:`` and exit 2.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROFILE = "workflow/profiles/default"


class SyncError(Exception):
    """A precondition of publish/sync does not hold; the message says what to do."""


def tool(name: str) -> str:
    """The executable ``name`` next to this interpreter (the project's .venv), else on PATH."""
    local = Path(sys.executable).with_name(name)
    if local.is_file():
        return str(local)
    found = shutil.which(name)
    if found is None:
        raise SyncError(f"`{name}` not found next to {sys.executable} nor on PATH")
    return found


def run(cmd: list[str], root: Path, check: bool = True) -> subprocess.CompletedProcess:
    """Run ``cmd`` in ``root`` with this interpreter's bin folder first on PATH."""
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    print("+ " + " ".join(cmd), flush=True)
    proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True, env=env)
    if check and proc.returncode != 0:
        raise SyncError(
            f"`{' '.join(cmd)}` failed (exit {proc.returncode}):\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}"
        )
    return proc


def snakemake(root: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """``snakemake --profile workflow/profiles/default --cores 1 ARGS`` in ``root``."""
    cmd = [tool("snakemake"), "--profile", PROFILE, "--cores", "1", *args]
    return run(cmd, root, check=check)


def check_remote(root: Path, remote: str | None) -> str:
    """The remote to use: ``remote`` (must exist) or the default one; raises when none."""
    if not (root / ".dvc").is_dir():
        raise SyncError(f"{root} is not a DVC repository (no .dvc/): run `dvc init` first")
    listed = run([tool("dvc"), "remote", "list"], root).stdout.split()
    names = listed[0::2]
    if remote is not None:
        if remote not in names:
            raise SyncError(
                f"--remote {remote}: no such DVC remote (configured: {', '.join(names) or 'none'});"
                f" add it with `dvc remote add {remote} URL`"
            )
        return remote
    default = run([tool("dvc"), "remote", "default"], root, check=False)
    name = default.stdout.strip()
    if default.returncode != 0 or not name:
        raise SyncError(
            "no default DVC remote configured: add one with `dvc remote add -d NAME URL`"
            " (a shared folder, ssh://host/path or s3://bucket/path), or pass --remote NAME"
        )
    return name


def pending_jobs(dry_run_output: str) -> list[str]:
    """Jobs a ``snakemake -n`` output plans, as DVC stage names (``train_recon-ura-seed0``).

    Reads the job blocks (``rule NAME:`` ... ``wildcards: k=v, ...``) that Snakemake
    prints for each planned job; the target rule ``all`` is left out.
    """
    jobs: list[str] = []
    current: list[str] | None = None
    for line in dry_run_output.splitlines():
        head = re.match(r"^(?:local)?(?:checkpoint|rule) (\w+):\s*$", line)
        if head:
            current = [head.group(1)]
            if head.group(1) != "all":
                jobs.append(head.group(1))
            continue
        wild = re.match(r"^\s+wildcards: (.*)$", line)
        if wild and current is not None and current[0] != "all":
            values = []
            for pair in wild.group(1).split(", "):
                key, _, value = pair.partition("=")
                values.append(f"seed{value}" if key == "seed" else value)
            jobs[-1] = "-".join([current[0], *values])
            current = None
    return sorted(jobs)


def snakemake_pending(root: Path) -> list[str]:
    """What ``snakemake -n`` would run now in ``root`` (DVC stage names)."""
    return pending_jobs(snakemake(root, "-n").stdout)


def dvc_status(root: Path) -> dict:
    """``dvc status --json``: {stage: [changes]} of the stages whose deps/outs differ."""
    proc = run([tool("dvc"), "status", "--json"], root)
    text = proc.stdout.strip()
    # dvc may print warnings before the JSON object
    return json.loads(text[text.index("{") :]) if "{" in text else {}


def describe_status(status: dict) -> str:
    """One line per stage of ``dvc status --json``, naming what changed."""
    lines = []
    for stage, changes in sorted(status.items()):
        parts = []
        for change in changes:
            if isinstance(change, dict):
                for kind, items in change.items():
                    what = (
                        ", ".join(f"{k}: {v}" for k, v in items.items())
                        if isinstance(items, dict)
                        else str(items)
                    )
                    parts.append(f"{kind} ({what})")
            else:
                parts.append(str(change))
        lines.append(f"  {stage}: {'; '.join(parts)}")
    return "\n".join(lines)


def publish(root: Path, remote: str | None = None, push: bool = True) -> None:
    """Record the finished run of ``root`` in dvc.lock and push its outs to the remote."""
    name = check_remote(root, remote)
    check = run(
        [sys.executable, str(root / "workflow/scripts/sync_dvc_yaml.py"), "--check"],
        root,
        check=False,
    )
    if check.returncode != 0:
        raise SyncError(
            "dvc.yaml is out of step with the Snakemake rules: run `make dvc-yaml`, then publish"
        )
    pending = snakemake_pending(root)
    if pending:
        raise SyncError(
            f"the workspace does not hold a finished run: Snakemake would run {len(pending)}"
            f" job(s) ({', '.join(pending)}); run `make run` first, then publish"
        )
    run([tool("dvc"), "commit", "--force", "--quiet"], root)
    status = dvc_status(root)
    if status:
        raise SyncError("dvc status is not clean after `dvc commit`:\n" + describe_status(status))
    if push:
        run([tool("dvc"), "push", "--remote", name], root)
    print(
        f"published to DVC remote '{name}'. Record the run in git:\n"
        "  git add dvc.lock && git commit -m 'results of <what you ran>'"
    )


def sync(root: Path, remote: str | None = None, pull: bool = True) -> None:
    """Pull the outs of dvc.lock and make Snakemake see them as up to date, recomputing nothing."""
    if not (root / "dvc.lock").is_file():
        raise SyncError(
            f"{root / 'dvc.lock'} does not exist: nothing was published from this branch"
            " (after a run: `make publish`, then `git add dvc.lock && git commit`)"
        )
    if pull:
        name = check_remote(root, remote)
        run([tool("dvc"), "pull", "--remote", name], root)
    status = dvc_status(root)
    if status:
        raise SyncError(
            "dvc status is not clean after the pull: the checkout differs from what dvc.lock"
            " recorded for these stages (run `make run` to recompute them, or check out the"
            " commit that wrote dvc.lock):\n" + describe_status(status)
        )
    # the stage commands redirect their stderr into logs/ (untracked)
    (root / "logs").mkdir(exist_ok=True)
    snakemake(root, "--touch", "--forceall")
    pending = snakemake_pending(root)
    if pending:
        raise SyncError(
            f"after touching, Snakemake would still run {len(pending)} job(s): {', '.join(pending)}"
        )
    print("in sync: dvc status is clean and `snakemake -n` has nothing to run")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_pub = sub.add_parser("publish", help="dvc commit the finished run and dvc push it")
    p_pub.add_argument("--remote", help="DVC remote name (default: the default remote)")
    p_pub.add_argument("--no-push", action="store_true", help="only update dvc.lock")
    p_sync = sub.add_parser("sync", help="dvc pull, check dvc status, touch in DAG order")
    p_sync.add_argument("--remote", help="DVC remote name (default: the default remote)")
    p_sync.add_argument("--no-pull", action="store_true", help="use the outs already here")
    parser.add_argument(
        "--root", type=Path, default=ROOT, help="project folder (default: this one)"
    )
    args = parser.parse_args(argv)
    try:
        if args.command == "publish":
            publish(args.root, args.remote, push=not args.no_push)
        else:
            sync(args.root, args.remote, pull=not args.no_pull)
    except SyncError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

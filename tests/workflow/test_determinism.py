"""Same seed, same config: bitwise-identical artifacts; a killed stage leaves nothing finished.

Determinism compares the SHA-256 of every file under data/ of two tiny runs in two
folders. Excluded: only ``data/.resume/`` (training scratch, not an output: its
checkpoints record wall-clock seconds and are removed or superseded). No field of
any artifact is excluded: provenance (config.yaml) holds no time, host or path,
and the artifact copies of the training metrics drop ``wall_s``.
"""

import hashlib
import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from conftest import copy_run, run_snakemake, snakemake_bin, venv_env

EXCLUDED_DIRS = ("data/.resume",)


def artifact_hashes(repo: Path) -> dict[str, str]:
    """SHA-256 of every file under ``repo``/data, by relative path (EXCLUDED_DIRS left out)."""
    hashes = {}
    for path in sorted((repo / "data").rglob("*")):
        rel = path.relative_to(repo).as_posix()
        if path.is_file() and not any(rel.startswith(d + "/") for d in EXCLUDED_DIRS):
            hashes[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return hashes


@pytest.mark.slow
def test_two_tiny_runs_give_bitwise_identical_artifacts(tiny_run, tmp_path):
    # the same code as the first run (the checkout may have changed since)
    second = copy_run(tiny_run, tmp_path / "wf", code_only=True)
    run_snakemake(second)
    a, b = artifact_hashes(tiny_run), artifact_hashes(second)
    assert len(a) > 50, sorted(a)
    assert sorted(a) == sorted(b), sorted(set(a) ^ set(b))
    differing = [k for k in a if a[k] != b[k]]
    assert not differing, f"{len(differing)} artifacts differ, first: {differing[:10]}"


def _stage_workers(repo: Path) -> list[int]:
    """Live multiprocessing workers (spawned: ``python -c ...spawn_main...``) in ``repo``."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            cwd = os.readlink(entry / "cwd")
            state = (entry / "stat").read_text().split(")")[-1].split()[0]
        except OSError:
            continue
        if cwd == str(repo) and b"spawn_main" in cmdline and state != "Z":
            pids.append(int(entry.name))
    return pids


def _stage_pids(repo: Path, script: str) -> list[int]:
    """Processes running ``script`` with ``repo`` as working folder (ours, started below)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            cwd = os.readlink(entry / "cwd")
        except OSError:
            continue
        if cwd == str(repo) and script.encode() in cmdline and b"-c" not in cmdline:
            pids.append(int(entry.name))
    return pids


def checkpoints(resume: Path) -> list[int]:
    """Steps of the finished checkpoints under a resume folder (not the temporary files)."""
    return sorted(
        int(p.stem.split("-")[1])
        for p in resume.rglob("step-*.pt")
        if not any(part.startswith(".") for part in p.relative_to(resume).parts)
    )


@pytest.mark.slow
def test_a_stage_killed_mid_run_leaves_no_output_and_resumes(tiny_run, tmp_path):
    repo = copy_run(tiny_run, tmp_path / "wf")
    params = yaml.safe_load((repo / "params.yaml").read_text())
    n = 12
    params["train_pose"].update(iterations=n, checkpoint_every=2, log_every=1)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    # one regressor per GAN group, the groups trained side by side (a process each):
    # the kill lands once the first has a checkpoint, and must take the workers with it
    groups = json.loads((repo / "data/gan/groups.json").read_text())["groups"]
    resume = repo / "data/.resume/train_pose" / groups[0]
    with open(tmp_path / "killed.log", "w") as log:
        proc = subprocess.Popen(
            [snakemake_bin(), "--cores", "2", "data/pose"],
            cwd=repo,
            env=venv_env(repo),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 600
            while not checkpoints(resume):
                assert proc.poll() is None, (tmp_path / "killed.log").read_text()
                assert time.monotonic() < deadline, "no checkpoint within 10 minutes"
                time.sleep(0.2)
            pids = _stage_pids(repo, "stages/train_pose.py")
            assert pids, "train_pose process not found"
            for pid in pids:
                os.kill(pid, signal.SIGKILL)
            proc.wait(timeout=300)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode != 0
    assert not (repo / "data/pose").exists(), "a killed stage must not leave its output"
    time.sleep(2.0)  # an orphaned worker would write more checkpoints meanwhile
    done = {g: checkpoints(repo / "data/.resume/train_pose" / g) for g in groups}
    assert done[groups[0]] and all(not d or d[-1] < n for d in done.values()), done
    assert not _stage_workers(repo), "the group workers must die with the stage"
    # the rerun continues each group from its newest checkpoint (tqdm starts at it, or
    # at 0 for a group without one) and finishes
    run_snakemake(repo, "data/pose")
    log = (repo / "logs/train_pose.log").read_text()
    starts = set()
    for line in log.replace("\r", "\n").splitlines():
        m = re.search(rf"^(\w+):.*\| (\d+)/{n} \[", line)
        if m and m.group(1) not in {k for k, _ in starts}:
            starts.add((m.group(1), int(m.group(2))))
    expected = sorted(d[-1] if d else 0 for d in done.values())
    assert sorted(s for _, s in starts) == expected, (starts, done, log[-2000:])
    for group in groups:
        metrics = repo / "data/pose" / group / "metrics.jsonl"
        steps = [json.loads(line)["step"] for line in metrics.open()]
        assert steps == list(range(1, n + 1)), (group, steps)

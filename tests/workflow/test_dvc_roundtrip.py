"""DVC round trip: publish a tiny run to a real (local-folder) remote, clone, pull, sync.

Then, on both the original and the fresh clone, `snakemake -n` reruns exactly the
stages a change affects; DVC metrics, plots and `dvc exp run -S` work on the outs.
One tiny run (conftest's session-wide ``tiny_run``) feeds every test here.
"""

import contextlib
import importlib.util
import json
import os
import re
import subprocess
import sys
from modulefinder import ModuleFinder
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, copy_run, run_snakemake, venv_env

from poseless.config import load_params

_spec = importlib.util.spec_from_file_location("dvc_sync", ROOT / "workflow/scripts/dvc_sync.py")
dvc_sync = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(dvc_sync)


def run(repo: Path, *cmd: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        list(cmd), cwd=repo, capture_output=True, text=True, env=venv_env(repo), timeout=900
    )
    if check:
        assert proc.returncode == 0, f"{' '.join(cmd)} in {repo}:\n{proc.stdout}\n{proc.stderr}"
    return proc


def dvc(repo: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return run(repo, str(Path(sys.executable).with_name("dvc")), *args, check=check)


def git(repo: Path, *args: str) -> subprocess.CompletedProcess:
    return run(repo, "git", "-c", "user.name=t", "-c", "user.email=t@example.org", *args)


def sync_script(repo: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return run(repo, sys.executable, "workflow/scripts/dvc_sync.py", *args, check=check)


def planned(repo: Path) -> set[str]:
    """Jobs `snakemake -n` plans, as DVC stage names; cross-checked with its job table."""
    proc = run_snakemake(repo, "-n")
    out = proc.stdout + proc.stderr
    jobs = dvc_sync.pending_jobs(out)
    if not jobs:
        assert "Nothing to be done" in out, out
        return set()
    total = re.search(r"^total\s+(\d+)\s*$", out, re.M)
    assert total, out
    # the job table counts the target rule `all` too
    assert int(total.group(1)) == len(jobs) + 1, (jobs, out)
    assert len(set(jobs)) == len(jobs), jobs
    return set(jobs)


@contextlib.contextmanager
def restored(repo: Path, *patterns: str):
    """Give back the bytes and mtimes of the matching files after the block."""
    saved = {}
    for pattern in patterns:
        for path in repo.glob(pattern):
            if path.is_file():
                saved[path] = (path.read_bytes(), path.stat().st_mtime_ns)
    try:
        yield
    finally:
        for path, (data, mtime) in saved.items():
            path.write_bytes(data)
            os.utime(path, ns=(mtime, mtime))


# --- the stage graph and what each change should rerun, computed independently ---


def dvc_stages(repo: Path) -> dict:
    return yaml.safe_load((repo / "dvc.yaml").read_text())["stages"]


def downstream(repo: Path, start: set[str]) -> set[str]:
    """``start`` and every stage that depends (transitively) on one of their outs."""
    stages = dvc_stages(repo)
    outs = {
        name: [
            next(iter(o)) if isinstance(o, dict) else o
            for o in s.get("outs", []) + s.get("metrics", [])
        ]
        for name, s in stages.items()
    }
    found, todo = set(start), list(start)
    while todo:
        produced = outs[todo.pop()]
        for name, stage in stages.items():
            if name not in found and any(
                d == o or d.startswith(o + "/") for d in stage["deps"] for o in produced
            ):
                found.add(name)
                todo.append(name)
    return found


def stages_of_rule(repo: Path, rule: str) -> set[str]:
    return {n for n in dvc_stages(repo) if n == rule or n.startswith(rule + "-")}


def recon_stages(repo: Path, predicate) -> set[str]:
    """train_recon/evaluate stages of the experiments whose settings satisfy ``predicate``."""
    recon = load_params(repo / "params.yaml").train_recon
    names = set()
    for exp in recon.run:
        if predicate(recon.resolve(exp)):
            for seed in recon.seeds:
                names |= {f"train_recon-{exp}-seed{seed}", f"evaluate-{exp}-seed{seed}"}
    return names


def importing_rules(repo: Path, module_file: str) -> set[str]:
    """Stage scripts whose imports reach ``module_file`` (stdlib modulefinder over src/)."""
    target = (repo / module_file).resolve()
    rules = set()
    for script in sorted((repo / "stages").glob("*.py")):
        finder = ModuleFinder(path=[str(repo / "src")])
        finder.run_script(str(script))
        files = {Path(m.__file__).resolve() for m in finder.modules.values() if m.__file__}
        if target in files:
            rules.add(script.stem)
    return rules


def edit_params(repo: Path, section: str, key: str, value) -> None:
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params.setdefault(section, {})[key] = value
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


# --- the round trip ---------------------------------------------------------


@pytest.fixture(scope="module")
def published(tiny_run, tmp_path_factory):
    """(original, fresh clone): the tiny run published to a local remote, cloned and synced."""
    base = tmp_path_factory.mktemp("dvc")
    orig = copy_run(tiny_run, base / "orig")
    # dvc.yaml of the copy mirrors its own default run (config/tiny.yaml as params.yaml)
    run(orig, sys.executable, "workflow/scripts/sync_dvc_yaml.py", "--write")
    git(orig, "init", "-q")
    git(orig, "add", "-A")
    git(orig, "commit", "-q", "-m", "tiny workflow")
    dvc(orig, "remote", "add", "-d", "store", str(base / "remote"))
    sync_script(orig, "publish")
    assert (orig / "dvc.lock").is_file()
    git(orig, "add", "dvc.lock", ".dvc/config")
    git(orig, "commit", "-q", "-m", "tiny results")
    clone = base / "clone"
    git(base, "clone", "-q", str(orig), str(clone))
    assert not (clone / "data").exists()
    sync_script(clone, "sync")
    return {"orig": orig, "clone": clone}


def test_pending_jobs_reads_dry_run_job_blocks():
    out = (
        "Building DAG of jobs...\n[Tue]\nrule train_pose:\n    input: data/gan\n"
        "    output: data/pose\n    jobid: 3\n\n[Tue]\nrule train_recon:\n"
        "    output: data/recon/ura/seed0\n    wildcards: exp=ura, seed=0\n\n"
        "[Tue]\nlocalrule all:\n    input: data/report\n    jobid: 0\n"
    )
    assert dvc_sync.pending_jobs(out) == ["train_pose", "train_recon-ura-seed0"]


def test_publish_without_a_remote_is_a_clear_error(workflow_copy):
    git(workflow_copy, "init", "-q")
    proc = sync_script(workflow_copy, "publish", check=False)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "no default DVC remote" in proc.stderr and "dvc remote add -d" in proc.stderr, (
        proc.stderr
    )
    proc = sync_script(workflow_copy, "publish", "--remote", "nope", check=False)
    assert proc.returncode == 2 and "--remote nope: no such DVC remote" in proc.stderr, proc.stderr


def test_tiny_config_covers_both_sides_of_each_pseudo_label():
    recon = load_params(ROOT / "config/tiny.yaml").train_recon
    settings = [recon.resolve(e) for e in recon.run]
    assert {s.uses_pseudo_poses for s in settings} == {True, False}, recon.run
    assert {s.uses_knn for s in settings} == {True, False}, recon.run


def test_fresh_clone_is_in_sync_and_holds_the_same_outs(published):
    orig, clone = published["orig"], published["clone"]
    for repo in (orig, clone):
        assert planned(repo) == set(), repo
        assert dvc_sync.dvc_status(repo) == {}, repo
    lock = yaml.safe_load((orig / "dvc.lock").read_text())["stages"]
    assert set(lock) == set(dvc_stages(orig)), "dvc.lock records every stage"
    for name in ("data/report", "data/metrics/evaluate", "data/recon"):
        a = sorted(p.relative_to(orig) for p in (orig / name).rglob("*") if p.is_file())
        b = sorted(p.relative_to(clone) for p in (clone / name).rglob("*") if p.is_file())
        assert a == b and a, name
        assert all((orig / p).read_bytes() == (clone / p).read_bytes() for p in a), name


@pytest.mark.parametrize("which", ["orig", "clone"])
def test_train_pose_params_rerun_exactly_the_pseudo_pose_branch(published, which):
    repo = published[which]
    expected = {"train_pose", "predict_poses", "report"} | recon_stages(
        repo, lambda s: s.uses_pseudo_poses
    )
    assert expected == downstream(repo, {"train_pose"})
    iterations = load_params(repo / "params.yaml").train_pose.iterations
    with restored(repo, "params.yaml", "data/params/**/*.json"):
        edit_params(repo, "train_pose", "iterations", iterations + 1)
        assert planned(repo) == expected


@pytest.mark.parametrize("which", ["orig", "clone"])
def test_embed_images_params_rerun_exactly_the_ssc_branch(published, which):
    repo = published[which]
    expected = {"embed_images", "build_knn", "report"} | recon_stages(repo, lambda s: s.uses_knn)
    assert expected == downstream(repo, {"embed_images"})
    orientations = load_params(repo / "params.yaml").embed_images.hog_orientations
    with restored(repo, "params.yaml", "data/params/**/*.json"):
        edit_params(repo, "embed_images", "hog_orientations", orientations + 3)
        assert planned(repo) == expected


@pytest.mark.parametrize(
    "which, module",
    [("orig", "src/poseless/evaluate/metrics.py"), ("clone", "src/poseless/train/pose.py")],
)
def test_editing_a_library_module_reruns_the_stages_that_import_it(published, which, module):
    repo = published[which]
    rules = importing_rules(repo, module)
    assert rules, f"no stage imports {module}"
    direct = set().union(*(stages_of_rule(repo, r) for r in rules))
    expected = downstream(repo, direct)
    assert expected != set(dvc_stages(repo)), f"{module}: pick a module fewer stages import"
    with restored(repo, module):
        with open(repo / module, "a") as f:
            f.write("# an edit\n")
        assert planned(repo) == expected


def test_sync_refuses_a_checkout_that_differs_from_dvc_lock(published):
    clone = published["clone"]
    with restored(clone, "stages/report.py"):
        with open(clone / "stages/report.py", "a") as f:
            f.write("# an edit\n")
        proc = sync_script(clone, "sync", "--no-pull", check=False)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "dvc status is not clean" in proc.stderr and "report:" in proc.stderr, proc.stderr
    assert planned(clone) == set()


def test_dvc_metrics_and_plots_read_the_outs(published):
    clone = published["clone"]
    metrics = json.loads(dvc(clone, "metrics", "show", "--json").stdout)
    (workspace,) = metrics.values()  # keyed by revision; only the workspace here
    files = workspace["data"]
    recon = load_params(clone / "params.yaml").train_recon
    for exp in recon.run:
        for seed in recon.seeds:
            key = f"data/metrics/evaluate/{exp}-seed{seed}.json"
            assert files.get(key, {}).get("data"), (key, sorted(files))
    assert "data/metrics/train_gan.json" in files
    plots = json.loads(dvc(clone, "plots", "show", "--json").stdout)
    assert not plots.get("errors"), plots.get("errors")
    curves = {"train_gan", "train_pose"} | stages_of_rule(clone, "train_recon")
    assert set(plots["data"]) == curves
    for name in curves:
        assert plots["data"][name], name
        content = json.dumps(plots["data"][name])
        assert '"step"' in content and "loss/" in content, name


def test_dvc_exp_run_sweeps_a_param_on_the_cheapest_stage(published):
    # last test of the module: it changes params.yaml and an evaluation of the clone
    clone = published["clone"]
    stage = sorted(stages_of_rule(clone, "evaluate"))[0]
    metrics = dvc_stages(clone)[stage]["metrics"][0]
    n_items = load_params(clone / "params.yaml").evaluate.n_items
    dvc(clone, "exp", "run", "-S", f"evaluate.n_items={n_items - 1}", stage)
    assert load_params(clone / "params.yaml").evaluate.n_items == n_items - 1
    assert dvc(clone, "exp", "list", "--name-only").stdout.strip(), "experiment recorded"
    diff = json.loads(dvc(clone, "metrics", "diff", "--json").stdout)
    assert metrics in diff and diff[metrics], diff
    params = json.loads(dvc(clone, "params", "diff", "--json").stdout)
    assert params["params.yaml"]["evaluate.n_items"]["new"] == n_items - 1, params

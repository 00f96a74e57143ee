"""The workflow itself: lint, dry-run, DVC mirror, and the tiny run end to end."""

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from conftest import ROOT, run_snakemake

from poseless.data.prepared import PreparedDataset


def test_snakemake_lint_is_clean():
    proc = run_snakemake(ROOT, "--lint", check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Lints for" not in proc.stdout + proc.stderr, proc.stdout + proc.stderr


@pytest.mark.parametrize("configfile", [None, "config/tiny.yaml"])
def test_dry_run_plans_every_stage(workflow_copy, configfile):
    args = ["-n", "--quiet", "rules"] + (["--configfile", configfile] if configfile else [])
    proc = run_snakemake(workflow_copy, *args)
    assert "prepare_data" in proc.stdout + proc.stderr


@pytest.mark.parametrize("method", ["regressor", "gan_retrieval"])
def test_train_pose_runs_only_for_the_regressor_method(workflow_copy, method):
    # the bench config (gan_retrieval), or the same with URA's regressor
    text = (workflow_copy / "config" / "bench.yaml").read_text()
    assert "method: gan_retrieval" in text and "retrieval_prior: gan" in text
    if method == "regressor":
        text = text.replace("method: gan_retrieval", "method: regressor", 1)
        text = text.replace("retrieval_prior: gan", "retrieval_prior: none", 1)
    (workflow_copy / "config" / "method.yaml").write_text(text)
    proc = run_snakemake(workflow_copy, "-n", "-p", "--configfile", "config/method.yaml")
    out = proc.stdout + proc.stderr
    cmd = next(line for line in out.splitlines() if "python stages/predict_poses.py" in line)
    assert ("rule train_pose:" in out) == (method == "regressor")
    assert ("--pose data/pose" in cmd) == (method == "regressor")
    report = next(line for line in out.splitlines() if "python stages/report.py" in line)
    assert ("--pose data/pose" in report) == (method == "regressor")


def test_dvc_yaml_mirrors_snakemake_rules():
    proc = subprocess.run(
        [sys.executable, str(ROOT / "workflow/scripts/sync_dvc_yaml.py"), "--check"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_dvc_reads_the_pipeline():
    dvc = str(Path(sys.executable).with_name("dvc"))
    proc = subprocess.run([dvc, "dag", "--md"], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert "prepare_data" in proc.stdout


def test_bad_params_fail_before_any_job(workflow_copy):
    bad = workflow_copy / "config" / "bad.yaml"
    bad.write_text("prepare_data:\n  imgae_size: 32\n")
    proc = run_snakemake(workflow_copy, "-n", "--configfile", "config/bad.yaml", check=False)
    assert proc.returncode != 0
    assert "imgae_size" in proc.stdout + proc.stderr


def test_tiny_workflow_end_to_end(tiny_run):
    # tiny_run (conftest): the tiny workflow run once per session, shared with the DVC tests
    ds = PreparedDataset(tiny_run / "data" / "prepared")
    assert len(ds) > 0 and set(ds.manifest["split"]) <= {"train", "val", "test"}
    assert (tiny_run / "data" / "prepared" / "contact_sheet.png").is_file()
    assert isinstance(ds.manifest, pd.DataFrame)
    # nothing left to do afterwards
    proc = run_snakemake(tiny_run, "-n")
    assert "Nothing to be done" in proc.stdout + proc.stderr


def test_workflow_files_are_snakefmt_formatted():
    snakefmt = str(Path(sys.executable).with_name("snakefmt"))
    proc = subprocess.run(
        [snakefmt, "--check", "Snakefile", "workflow/rules"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_bench_config_plans_three_seeds_of_every_claim_experiment(workflow_copy):
    proc = run_snakemake(
        workflow_copy, "-n", "--quiet", "rules", "--configfile", "config/bench.yaml"
    )
    out = proc.stdout + proc.stderr
    counts = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit():
            counts[parts[0]] = int(parts[1])
    experiments = 9  # bl_gt_pose ... poseless, ura_sparse_azimuth: every claim's experiments
    assert counts["train_recon"] == 3 * experiments, out
    assert counts["evaluate"] == 3 * experiments, out
    for rule in ("train_gan", "predict_poses", "build_knn", "estimate_normals"):
        assert counts[rule] == 1, (rule, out)
    assert "train_pose" not in counts, out  # gan_retrieval: no regressor to train


def _threads_per_rule(dry_run_output: str) -> dict[str, set[int]]:
    """rule -> the thread counts of its jobs in a ``snakemake -n`` printout (1 when unstated)."""
    threads: dict[str, set[int]] = {}
    rule, seen = None, 1
    for line in [*dry_run_output.splitlines(), "rule end:"]:
        head = line.strip()
        if head.startswith(("rule ", "localrule ")) and head.endswith(":"):
            if rule is not None:
                threads.setdefault(rule, set()).add(seen)
            rule, seen = head.split()[1].rstrip(":"), 1
        elif head.startswith("threads:") and rule is not None:
            seen = int(head.split()[1])
    return threads


def test_evaluate_jobs_take_a_thread_per_configured_worker(workflow_copy):
    # params.yaml: evaluate.workers 2; config/bench.yaml: 1, so that evaluations run
    # beside the one-thread training jobs on two cores
    default = _threads_per_rule(run_snakemake(workflow_copy, "-n").stdout)
    bench = _threads_per_rule(
        run_snakemake(workflow_copy, "-n", "--configfile", "config/bench.yaml").stdout
    )
    assert default["evaluate"] == {2}, default
    assert bench["evaluate"] == {1}, bench
    assert bench["train_gan"] == {2}, bench  # one process per category

"""The SLURM profile: GPUs are requested exactly for the GPU stages of common.smk.

Three levels, cheapest first:
- every job of the tiny DAG goes through the plugin's own sbatch/srun command
  builders (fast);
- a run through the real executor plugin against fake sbatch/squeue/sacct
  that record each submission and stand in for its job (fast);
- a run through a real single-node SLURM (slurmctld + slurmd from Debian's
  slurm-wlm) started for the test (slow; skipped where SLURM is not installed).
"""

import ast
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from conftest import ROOT, run_snakemake
from snakemake_executor_plugin_slurm.submit_string import get_submit_command
from snakemake_executor_plugin_slurm.utils import set_gres_string
from snakemake_executor_plugin_slurm_jobstep import get_gpu_setting

PROFILE = ROOT / "workflow" / "profiles" / "slurm"
TINY = "config/tiny.yaml"
# A GPU request in an sbatch or srun command line, in any form the plugin writes.
GPU_FLAG = re.compile(r"--gpus[=\s]|--gres[=\s]\S*gpu|--gpus-per-\w+[=\s]")
# The two jobs of the fake and real runs: one CPU stage, one GPU stage.
TARGET = "data/features/embeddings"
TARGET_RULES = {"prepare_data", "embed_images"}
FAST_STATUS = ["--slurm-init-seconds-before-status-checks", "1", "--latency-wait", "5"]


def gpu_stages() -> frozenset[str]:
    """GPU_STAGES as workflow/rules/common.smk defines it (the single source of truth)."""
    tree = ast.parse((ROOT / "workflow" / "rules" / "common.smk").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "GPU_STAGES" for t in node.targets
        ):
            return frozenset(ast.literal_eval(node.value))
    raise AssertionError("workflow/rules/common.smk: no module-level GPU_STAGES")


def workflow_rules() -> set[str]:
    """Every rule the Snakefile and workflow/rules/*.smk define."""
    files = [ROOT / "Snakefile", *sorted((ROOT / "workflow" / "rules").glob("*.smk"))]
    return {m for f in files for m in re.findall(r"^rule (\w+):", f.read_text(), re.M)}


def asks_for_gpu(command: str) -> bool:
    return GPU_FLAG.search(command) is not None


def clean_env(monkeypatch, path_first: Path | None = None) -> None:
    """PATH with `path_first` in front; no user account/partition leaks into the run."""
    if path_first is not None:
        monkeypatch.setenv("PATH", f"{path_first}{os.pathsep}{os.environ['PATH']}")
    for var in ("POSELESS_SLURM_ACCOUNT", "POSELESS_SLURM_PARTITION", "SNAKEMAKE_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    for var in list(os.environ):
        if var.startswith(("SLURM_", "SBATCH_", "SRUN_")):
            monkeypatch.delenv(var)


def slurm_logs(workdir: Path) -> str:
    logs = sorted((workdir / ".snakemake" / "slurm_logs").glob("**/*.log"))
    return "\n".join(f"--- {p}\n{p.read_text()[-3000:]}" for p in logs)


# --- the profile --------------------------------------------------------------


def test_profile_is_the_slurm_executor_with_the_local_rerun_policy():
    cfg = yaml.safe_load((PROFILE / "config.yaml").read_text())
    local = yaml.safe_load((ROOT / "workflow/profiles/default/config.yaml").read_text())
    assert cfg["executor"] == "slurm", cfg
    assert cfg["rerun-triggers"] == local["rerun-triggers"] == ["mtime"], cfg
    assert cfg["rerun-incomplete"] is True, cfg
    assert cfg["latency-wait"] >= 30, "shared file systems need a latency wait"
    assert isinstance(cfg["jobs"], int) and cfg["jobs"] > 1, cfg
    defaults = cfg["default-resources"]
    assert {"mem_mb", "runtime", "slurm_account", "slurm_partition"} <= set(defaults)
    # GPUs are declared by the rules (common.smk's gpus()), never by the profile.
    declared = json.dumps({k: cfg.get(k) for k in ("default-resources", "set-resources")})
    assert "gpu" not in declared and "gres" not in declared, declared


# --- every job of the DAG through the plugin's command builders ----------------

JOB_HEAD = re.compile(r"^(?:local)?rule (\w+):$")


def dry_run_jobs(text: str) -> list[tuple[str, dict]]:
    """(rule, resources) of each job in `snakemake -n` output."""
    jobs, rule = [], None
    for line in text.splitlines():
        head = JOB_HEAD.match(line.strip())
        if head:
            rule = head.group(1)
        elif rule and line.strip().startswith("resources: "):
            pairs = line.strip()[len("resources: ") :].split(", ")
            res = dict(p.split("=", 1) for p in pairs)
            jobs.append((rule, {k: int(v) if v.isdigit() else v for k, v in res.items()}))
            rule = None
    return jobs


class _Resources(dict):
    """Snakemake's job.resources: a mapping that also reads as attributes."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


def sbatch_command(rule: str, resources: dict) -> str:
    """The plugin's sbatch line (without --wrap) for one job, as run_job builds it."""
    job = SimpleNamespace(name=rule, threads=2, resources=_Resources(resources))
    params = {
        "run_uuid": "run",
        "slurm_logfile": f".snakemake/slurm_logs/rule_{rule}/%j.log",
        "comment_str": f"rule_{rule}",
        "account": "",
        "partition": "",
        "workdir": ".",
    }
    return get_submit_command(job, params) + set_gres_string(job)


def test_every_job_asks_for_gpus_exactly_for_the_gpu_stages(workflow_copy, monkeypatch):
    clean_env(monkeypatch)
    gpu = gpu_stages()
    proc = run_snakemake(
        workflow_copy, "--profile", "workflow/profiles/slurm", "--configfile", TINY,
        "-n", "--forceall",
    )  # fmt: skip
    # `all` has no command: Snakemake finishes it itself, nothing is submitted.
    jobs = [(r, res) for r, res in dry_run_jobs(proc.stdout + proc.stderr) if r != "all"]
    rules = {rule for rule, _ in jobs}
    all_rules = workflow_rules() - {"all"}
    assert rules == all_rules, f"the tiny DAG must hold every rule: {all_rules - rules}"
    assert gpu <= rules, f"GPU_STAGES names no rule: {gpu - rules}"
    for rule, resources in jobs:
        command = sbatch_command(rule, resources)
        srun_gpus = get_gpu_setting(SimpleNamespace(resources=_Resources(resources)))
        want = rule in gpu
        assert asks_for_gpu(command) == want, f"{rule}: sbatch {command}"
        assert asks_for_gpu(srun_gpus) == want, f"{rule}: srun {srun_gpus!r}"
        for flag in ("--mem ", "-t ", "--cpus-per-task="):
            assert flag in command, f"{rule}: no {flag!r} in {command}"


def test_the_check_catches_a_cpu_stage_asking_for_a_gpu():
    cpu = {"mem_mb": 4000, "runtime": 60, "slurm_account": "", "slurm_partition": ""}
    assert not asks_for_gpu(sbatch_command("report", cpu))
    assert asks_for_gpu(sbatch_command("report", cpu | {"gpu": 1}))
    assert asks_for_gpu(sbatch_command("report", cpu | {"gres": "gpu:1"}))
    assert not asks_for_gpu(sbatch_command("report", cpu | {"gpu": 0}))


# --- a run through the plugin against fake SLURM commands ---------------------

FAKE_SBATCH = """\
#!{python}
# Fake sbatch: record the submission; instead of running the job, make the
# output folders of its rule (FAKE_SLURM_OUTPUTS) and call it COMPLETED.
import fcntl, json, os, sys
from pathlib import Path

state = Path(os.environ["FAKE_SLURM_STATE"])
outputs = json.loads(os.environ["FAKE_SLURM_OUTPUTS"])
args = sys.argv[1:]
with open(state / "lock", "a") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    counter = state / "next_id"
    job_id = int(counter.read_text()) if counter.exists() else 1000
    counter.write_text(str(job_id + 1))
wrap = [a[len("--wrap="):] for a in args if a.startswith("--wrap=")]
if len(wrap) != 1 or "--comment" not in args:
    sys.exit(f"fake sbatch: expected --comment and one --wrap=<script>, got {{args}}")
rule = args[args.index("--comment") + 1].removeprefix("rule_").split("_wildcards_")[0]
(state / f"{{job_id}}.json").write_text(json.dumps({{"argv": args, "script": wrap[0]}}))
for folder in outputs.get(rule, []):
    Path(folder).mkdir(parents=True, exist_ok=True)
(state / f"{{job_id}}.state").write_text("COMPLETED" if rule in outputs else "FAILED")
print(job_id)
"""

FAKE_STATUS = """\
#!{python}
# Fake squeue/sacct: "<id>|<state>" for the status query, nothing for other queries.
import os, sys
from pathlib import Path

if "--name" in sys.argv:
    for p in sorted(Path(os.environ["FAKE_SLURM_STATE"]).glob("*.state")):
        print(f"{{p.stem}}|{{p.read_text()}}")
"""


def write_fake_slurm(bin_dir: Path) -> None:
    bin_dir.mkdir()
    scripts = {
        "sbatch": FAKE_SBATCH,
        "squeue": FAKE_STATUS,
        "sacct": FAKE_STATUS,
        "sinfo": "#!/bin/sh\necho PARTITION\necho debug*\n",
        "sacctmgr": "#!/bin/sh\necho mylab\n",  # the accounts of the user
        "scancel": "#!/bin/sh\nexit 0\n",
    }
    for name, text in scripts.items():
        path = bin_dir / name
        path.write_text(text.format(python=sys.executable))
        path.chmod(0o755)


def test_fake_slurm_run_submits_gpu_jobs_only_for_gpu_stages(workflow_copy, tmp_path, monkeypatch):
    bin_dir, state = tmp_path / "fake-slurm", tmp_path / "fake-slurm-state"
    write_fake_slurm(bin_dir)
    state.mkdir()
    clean_env(monkeypatch, bin_dir)
    monkeypatch.setenv("FAKE_SLURM_STATE", str(state))
    # The directory() outputs of the two rules: the workflow moves on as if they ran.
    outputs = {"prepare_data": ["data/prepared"], "embed_images": [TARGET]}
    monkeypatch.setenv("FAKE_SLURM_OUTPUTS", json.dumps(outputs))
    monkeypatch.setenv("POSELESS_SLURM_ACCOUNT", "mylab")
    monkeypatch.setenv("POSELESS_SLURM_PARTITION", "batch")
    proc = run_snakemake(
        workflow_copy, "--profile", "workflow/profiles/slurm", "--configfile", TINY,
        *FAST_STATUS, TARGET, check=False, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    gpu = gpu_stages()
    submitted = {}
    for record in sorted(state.glob("*.json")):
        sub = json.loads(record.read_text())
        comment = sub["argv"][sub["argv"].index("--comment") + 1]
        rule = comment.removeprefix("rule_").split("_wildcards_")[0]
        sbatch = " ".join(a for a in sub["argv"] if not a.startswith("--wrap="))
        submitted[rule] = (sbatch, sub["script"])
    assert set(submitted) == TARGET_RULES == set(outputs), submitted
    for rule, (sbatch, script) in submitted.items():
        assert asks_for_gpu(sbatch) == (rule in gpu), f"{rule}: sbatch {sbatch}"
        assert "-A mylab -p batch" in sbatch, f"{rule}: account/partition from env: {sbatch}"
        # the job script: this rule only, through the jobstep executor (srun)
        assert f"--target-jobs '{rule}:" in script, script
        assert "--executor slurm-jobstep" in script, script
        assert "--rerun-triggers mtime" in script, script


# --- a run through a real single-node SLURM -----------------------------------

SLURM_BINARIES = ("slurmctld", "slurmd", "sbatch", "squeue", "scontrol", "srun")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def slurm_conf(root: Path, host: str) -> str:
    """One node, two CPUs, one (placeholder) GPU; no munge, no accounting database."""
    return textwrap.dedent(f"""\
        ClusterName=poseless
        SlurmctldHost={host}(127.0.0.1)
        SlurmUser=root
        SlurmdUser=root
        SlurmctldPort={_free_port()}
        SlurmdPort={_free_port()}
        AuthType=auth/none
        CredType=cred/none
        StateSaveLocation={root}/state
        SlurmdSpoolDir={root}/spool
        SlurmctldPidFile={root}/slurmctld.pid
        SlurmdPidFile={root}/slurmd.pid
        SlurmctldLogFile={root}/slurmctld.log
        SlurmdLogFile={root}/slurmd.log
        ProctrackType=proctrack/linuxproc
        TaskPlugin=task/none
        SelectType=select/cons_tres
        SelectTypeParameters=CR_Core_Memory
        SlurmdParameters=config_overrides
        GresTypes=gpu
        JobAcctGatherType=jobacct_gather/none
        AccountingStorageType=accounting_storage/none
        JobCompType=jobcomp/none
        MpiDefault=none
        SwitchType=switch/none
        ReturnToService=2
        MinJobAge=600
        NodeName={host} NodeAddr=127.0.0.1 CPUs=2 RealMemory=16000 Gres=gpu:1 State=UNKNOWN
        PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP
        """)


@pytest.fixture
def real_slurm(tmp_path, monkeypatch):
    """slurmctld + slurmd for this test only; yields the slurm.conf path."""
    if os.geteuid() != 0:
        pytest.skip("the single-node SLURM of this test runs its daemons as root")
    missing = [b for b in SLURM_BINARIES if shutil.which(b) is None]
    if missing:
        pytest.skip(f"SLURM not installed ({', '.join(missing)} not on PATH): make system-deps")
    root = tmp_path / "slurm"
    (root / "state").mkdir(parents=True)
    (root / "spool").mkdir()
    host = socket.gethostname().split(".")[0]
    conf = root / "slurm.conf"
    conf.write_text(slurm_conf(root, host))
    # GPU bookkeeping only: jobs see CUDA_VISIBLE_DEVICES but no device, and fall
    # back to the CPU (select_device).
    (root / "gres.conf").write_text(f"NodeName={host} Name=gpu File=/dev/null\n")
    # The jobstep plugin drops SLURM_* (SLURM_CONF too) before its nested srun; on
    # a cluster slurm.conf sits in /etc/slurm, here srun gets it back from a shim.
    shim = root / "bin"
    shim.mkdir()
    (shim / "srun").write_text(f'#!/bin/sh\nSLURM_CONF="{conf}" exec {shutil.which("srun")} "$@"\n')
    (shim / "srun").chmod(0o755)
    clean_env(monkeypatch, shim)
    monkeypatch.setenv("SLURM_CONF", str(conf))
    daemons = [
        subprocess.Popen(["slurmctld", "-D", "-i", "-f", str(conf)], stderr=subprocess.DEVNULL),
        subprocess.Popen(["slurmd", "-D", "-f", str(conf)], stderr=subprocess.DEVNULL),
    ]
    try:
        deadline = time.monotonic() + 60
        state = ""
        while time.monotonic() < deadline:
            probe = subprocess.run(
                ["sinfo", "-h", "-N", "-o", "%t"], capture_output=True, text=True
            )
            state = probe.stdout.strip() or probe.stderr.strip()
            if state == "idle":
                break
            time.sleep(1)
        else:
            logs = "".join(
                (root / f).read_text()[-2000:] for f in ("slurmctld.log", "slurmd.log")
                if (root / f).exists()
            )  # fmt: skip
            pytest.fail(f"single-node SLURM never became idle (last: {state!r}):\n{logs}")
        yield conf
    finally:
        subprocess.run(["scancel", "--user", "root"], capture_output=True)
        for daemon in daemons:
            daemon.terminate()
        for daemon in daemons:
            try:
                daemon.wait(timeout=20)
            except subprocess.TimeoutExpired:
                daemon.kill()
                daemon.wait()


def scheduled_jobs() -> dict[str, str]:
    """rule -> TresPerJob of every job the controller knows ('' for none)."""
    out = subprocess.run(
        ["scontrol", "-o", "show", "job"], capture_output=True, text=True, check=True
    ).stdout
    jobs = {}
    for line in out.splitlines():
        fields = dict(f.split("=", 1) for f in line.split() if "=" in f)
        rule = fields.get("Comment", "").removeprefix("rule_").split("_wildcards_")[0]
        assert fields.get("JobState") == "COMPLETED", line
        jobs[rule] = fields.get("TresPerJob", "")
    return jobs


@pytest.mark.slow
def test_real_slurm_runs_a_cpu_and_a_gpu_stage_of_the_tiny_workflow(workflow_copy, real_slurm):
    # squeue: there is no accounting database for sacct to ask.
    proc = run_snakemake(
        workflow_copy, "--profile", "workflow/profiles/slurm", "--configfile", TINY,
        *FAST_STATUS, "--slurm-status-command", "squeue", TARGET,
        check=False, timeout=900,
    )  # fmt: skip
    assert proc.returncode == 0, (
        proc.stdout[-3000:] + proc.stderr[-5000:] + slurm_logs(workflow_copy)
    )
    assert (workflow_copy / TARGET).is_dir()
    jobs = scheduled_jobs()
    assert set(jobs) == TARGET_RULES, jobs
    gpu = gpu_stages()
    for rule, tres in jobs.items():
        assert ("gpu" in tres) == (rule in gpu), f"{rule}: TresPerJob={tres!r}"

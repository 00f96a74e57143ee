# Named helpers shared by the rules. No computation here: only wiring.
import ast
import json
import os
from pathlib import Path

from poseless.config import load_params, to_dict
from poseless.train.groups import configured_groups

ROOT = Path(workflow.basedir)
# The params file the stage scripts read: the last --configfile, else params.yaml.
# Snakemake merges --configfile over the configfile directive; the stages read one
# file with the dataclass defaults, so the rules use that same resolved view.
PARAMS_FILE = os.path.relpath(
    (
        workflow.overwrite_configfiles[-1]
        if workflow.overwrite_configfiles
        else ROOT / "params.yaml"
    ),
    ROOT,
)
PARAMS = load_params(ROOT / PARAMS_FILE)
RESOLVED = to_dict(PARAMS)
# Stage scripts run with the interpreter on PATH (the project's .venv via `make`).
PYTHON = "python"


def stage_script(name):
    """stages/<name>.py: one name in four places (params section, rule, DVC stage, script)."""
    return f"stages/{name}.py"


def stage_sections(name):
    """The params sections a stage declares in its module-level PARAMS tuple."""
    tree = ast.parse((ROOT / stage_script(name)).read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "PARAMS" for t in node.targets
        ):
            return tuple(ast.literal_eval(node.value))
    raise ValueError(f"{stage_script(name)}: no module-level PARAMS tuple")


def stage_params(name):
    """Values of the sections a stage reads: Snakemake reruns the stage when they change."""
    return {s: RESOLVED[s] for s in stage_sections(name)}


def params_stamp(name, key=None):
    """data/params/<name>.json: the resolved sections of a stage, rewritten only on change.

    Snakemake's params trigger lives in .snakemake/metadata, which a fresh clone
    lacks; this file makes a params change visible through plain mtimes on any
    machine (see `make sync`). DVC tracks the same sections natively (params:).
    """
    content = stage_params(name) if key is None else key
    path = ROOT / "data" / "params" / f"{name}.json"
    text = json.dumps(content, indent=1, sort_keys=True) + "\n"
    if not path.is_file() or path.read_text() != text:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(text)
        os.replace(tmp, path)
    return str(path.relative_to(ROOT))


def _module_file(module):
    base = ROOT / "src" / Path(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imported_modules(path):
    tree = ast.parse(path.read_text())
    package = (
        path.relative_to(ROOT / "src").with_suffix("").parts
        if "src" in path.parts
        else ()
    )
    if package and package[-1] == "__init__":
        package = package[:-1]
    elif package:
        package = package[:-1]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                mod = ".".join((*base, node.module) if node.module else base)
            else:
                mod = node.module or ""
            found.add(mod)
            found.update(f"{mod}.{a.name}" for a in node.names)
    return {m for m in found if m == "poseless" or m.startswith("poseless.")}


def code_deps(name):
    """The stage script and every poseless module it imports, transitively (static).

    Editing a library module reruns exactly the stages whose code imports it.
    """
    files = {ROOT / stage_script(name)}
    todo = [ROOT / stage_script(name)]
    while todo:
        for module in _imported_modules(todo.pop()):
            parts = module.split(".")
            # a package import also pulls in its __init__ files
            for i in range(1, len(parts) + 1):
                f = _module_file(".".join(parts[:i]))
                if f is not None and f not in files:
                    files.add(f)
                    todo.append(f)
    return sorted(str(f.relative_to(ROOT)) for f in files)


def stage_cmd(name, args):
    """The shell command of a stage; dvc.yaml carries the same with params.yaml."""
    return f"{PYTHON} {stage_script(name)} --params {PARAMS_FILE} {args}"


# Stages that use a GPU when one is there; the SLURM profile requests one for them.
GPU_STAGES = (
    "embed_images",
    "estimate_normals",
    "train_gan",
    "train_pose",
    "train_recon",
)


# URA stages (a) and (b) train one model per group (poseless.train.groups) and the
# job trains its groups side by side, a process per thread: a thread per group, when
# the config names the groups (Snakemake caps it at --cores).
_GROUPS = configured_groups(PARAMS)
GROUP_THREADS = len(_GROUPS) if _GROUPS else 2

# evaluate scores items in evaluate.workers processes: a thread each. One worker lets
# evaluations run beside training jobs on a small machine (config/bench.yaml).
EVAL_THREADS = PARAMS.evaluate.workers


# URA's chain (GAN -> pose -> pseudo poses -> ura) is the longest path of the DAG: with
# few cores, start it before the baselines that do not depend on it.
URA_PRIORITY = 10


def gpus(name):
    """GPUs a stage asks for (0 for CPU stages); local runs ignore undeclared limits."""
    return 1 if name in GPU_STAGES else 0


# --- train_recon: one job per experiment and seed --------------------------

RECON = PARAMS.train_recon
RECON_RUNS = [(exp, seed) for exp in RECON.run for seed in RECON.seeds]
RECON_SETTINGS = {exp: RECON.resolve(exp) for exp in RECON.run}


def _recon_section_values(exp):
    """The params keys an experiment's result depends on (finer than the whole section)."""
    values = {
        "seed": RESOLVED["seed"],
        "train_recon.common": RESOLVED["train_recon"]["common"],
    }
    if exp in RESOLVED["train_recon"]["experiments"]:
        values[f"train_recon.experiments.{exp}"] = RESOLVED["train_recon"][
            "experiments"
        ][exp]
    return values


for _exp in RECON.run:
    params_stamp(
        f"train_recon/{_exp}",
        key=to_dict(RECON_SETTINGS[_exp]) | {"seed": RESOLVED["seed"]},
    )


def recon_inputs(wildcards):
    """Inputs of one experiment: only the pseudo-labels its losses use."""
    settings = RECON_SETTINGS[wildcards.exp]
    inputs = {
        "dataset": "data/prepared",
        "params": f"data/params/train_recon/{wildcards.exp}.json",
        "code": code_deps("train_recon"),
    }
    if settings.uses_pseudo_poses:
        inputs["poses"] = "data/poses"
    if settings.uses_knn:
        inputs["knn"] = "data/features/knn"
    if settings.uses_normals:
        inputs["normals"] = "data/features/normals"
    return inputs


def recon_sections(wildcards):
    """Snakemake params (and DVC params) of one experiment."""
    return _recon_section_values(wildcards.exp)


def recon_extra_args(wildcards):
    """CLI arguments for the pseudo-labels an experiment reads."""
    settings = RECON_SETTINGS[wildcards.exp]
    args = []
    if settings.uses_pseudo_poses:
        args.append("--poses data/poses/poses.parquet")
    if settings.uses_knn:
        args.append("--knn data/features/knn")
    if settings.uses_normals:
        args.append("--normals data/features/normals")
    return " ".join(args)


def uses_pose_regressor():
    """Whether predict_poses reads train_pose's regressors (method regressor, URA); with
    gan_retrieval it reads the GANs only, and train_pose does not run."""
    return PARAMS.predict_poses.method == "regressor"


def predict_poses_inputs(wildcards):
    """The GANs, the dataset and, for the regressor method, train_pose's output."""
    inputs = {
        "gan": "data/gan",
        "dataset": "data/prepared",
        "params": params_stamp("predict_poses"),
        "code": code_deps("predict_poses"),
    }
    if uses_pose_regressor():
        inputs["pose"] = "data/pose"
    return inputs


def predict_poses_pose_arg():
    """'--pose data/pose ' for the regressor method, else nothing."""
    return "--pose data/pose " if uses_pose_regressor() else ""


def _upstream():
    """Pseudo-label folders the run's experiments use, by report role."""
    used = {}
    if any(s.uses_pseudo_poses for s in RECON_SETTINGS.values()):
        used.update(gan="data/gan", poses="data/poses")
        if uses_pose_regressor():
            used["pose"] = "data/pose"
    if any(s.uses_knn for s in RECON_SETTINGS.values()):
        used.update(embeddings="data/features/embeddings", knn="data/features/knn")
    if any(s.uses_normals for s in RECON_SETTINGS.values()):
        used.update(normals="data/features/normals")
    return used


def report_inputs(wildcards):
    """Every evaluation of the run, plus the upstream folders the report shows."""
    inputs = {
        "dataset": "data/prepared",
        "params": params_stamp("report"),
        "code": code_deps("report"),
        "evaluations": [f"data/eval/{exp}/seed{seed}" for exp, seed in RECON_RUNS],
        "recon": [f"data/recon/{exp}/seed{seed}" for exp, seed in RECON_RUNS],
    }
    inputs.update(_upstream())
    return inputs


def report_extra_args(wildcards):
    """--<role> <folder> for each upstream folder the report shows."""
    args = [f"--{role} {path}" for role, path in sorted(_upstream().items())]
    return " ".join(args + ["--recon data/recon"])


def get_final_outputs():
    """The targets of the default `all`, i.e. the report (and through it every stage)."""
    return ["data/report"] + [
        f"data/metrics/evaluate/{exp}-seed{seed}.json" for exp, seed in RECON_RUNS
    ]

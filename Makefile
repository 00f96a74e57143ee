# Poseless: every command a user or CI needs. The set-up makes a local virtual
# environment in .venv (never the system Python) with the exact pins of pyproject.toml.
SHELL := /bin/bash
VENV ?= .venv
PYTHON_SYS ?= python3
CORES ?= 2
PARAMS ?= params.yaml
export PATH := $(abspath $(VENV))/bin:$(PATH)
SMK := snakemake --profile workflow/profiles/default --cores $(CORES)
SMK_CONFIG := $(if $(filter params.yaml,$(PARAMS)),,--configfile $(PARAMS))

.PHONY: help setup system-deps run bench test test-fast lint format dryrun schema dvc-yaml clean publish sync

help:  ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

$(VENV)/.installed: pyproject.toml
	$(PYTHON_SYS) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --disable-pip-version-check uv==0.13.9
	$(VENV)/bin/uv pip install --quiet --compile-bytecode --python $(VENV)/bin/python -e ".[dev]"
	touch $@

setup: $(VENV)/.installed  ## create .venv with the pinned dependencies

run: setup  ## quick start 1: run the whole default pipeline (params.yaml) on the embedded dataset
	$(SMK) $(SMK_CONFIG)

bench: setup  ## the benchmark (config/bench.yaml: 3 seeds, every ablation, the papers' claims; 71-95 min on 2 cores)
	$(SMK) --configfile config/bench.yaml

system-deps:  ## Debian packages the tests use (headless Chromium for the report test, single-node SLURM)
	@command -v chromium >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "note: install Debian's chromium (sudo apt-get install chromium) for the report browser test"; fi; }
	@command -v slurmctld >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then \
	    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	      slurmctld slurmd slurm-client >/dev/null; } \
	      || echo "note: could not install SLURM with apt; the real-SLURM test will skip"; \
	  else echo "note: as root, apt-get install slurmctld slurmd slurm-client for the real-SLURM test"; fi; }

test: setup system-deps  ## quick start 2: lint + the whole test suite (what CI runs)
	ruff check src stages tests benchmarks workflow/scripts
	pytest -q

test-fast: setup  ## tests without the slow ones
	pytest -q -m "not slow"

lint: setup  ## ruff, snakefmt and snakemake --lint
	ruff check src stages tests benchmarks workflow/scripts
	ruff format --check src stages tests benchmarks
	snakefmt --check Snakefile workflow/rules
	snakemake --lint

format: setup  ## apply ruff format and snakefmt
	ruff format src stages tests benchmarks
	snakefmt Snakefile workflow/rules

dryrun: setup  ## what would run now
	$(SMK) $(SMK_CONFIG) -n

schema: setup  ## regenerate workflow/schemas/params.schema.yaml from src/poseless/config.py
	python -m poseless.config > workflow/schemas/params.schema.yaml

dvc-yaml: setup  ## regenerate dvc.yaml from the Snakemake rules
	python workflow/scripts/sync_dvc_yaml.py --write

publish: setup  ## after a run: record the outs in dvc.lock and dvc push them (needs `dvc remote add -d NAME URL`); then `git add dvc.lock && git commit`
	python workflow/scripts/dvc_sync.py publish

sync: setup  ## on a fresh clone: dvc pull, check dvc status is clean, touch outputs in DAG order so `snakemake -n` has nothing to run
	python workflow/scripts/dvc_sync.py sync

clean:  ## remove the artifacts of the default run (not the venv)
	rm -rf data logs .snakemake

# adatp-bench — every target installs what it needs first (`make install` is idempotent and fast when nothing changed).
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
export PIP_CONSTRAINT := $(CURDIR)/constraints.txt
export PIP_DISABLE_PIP_VERSION_CHECK := 1
# Nothing in the test suite or demo may reach a hub.
OFFLINE := HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 WANDB_MODE=offline
STAMP := $(VENV)/.installed
LAUNCHER ?= local
ARGS ?=
TABLE1 ?= table1,table1_adatp
WANDB ?=                      # offline | online: also log each cell and the rendered table to W&B
comma := ,

.PHONY: help install demo test test-fast lint flops-table table1 table1-render bench clean

help: ## Show this help
	@grep -E '^[a-zA-Z0-9_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN{FS=":.*?## "}{printf "  %-14s %s\n",$$1,$$2}'

$(STAMP): pyproject.toml constraints.txt scripts/install_torchvision_shim.py
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -U "pip>=24"
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev]"
	$(PY) scripts/install_torchvision_shim.py
	$(PY) -c "import torchvision, lmms_eval.evaluator, adatp_bench" # fail here, not later, if the stack does not import
	@touch $@

install: $(STAMP) ## Create .venv and install the pinned stack (idempotent)

demo: install ## Tiny model × every method × 2 retentions × 3 synthetic benchmarks → results/demo/table1.md
	$(OFFLINE) $(PY) -m adatp_bench.run -m experiment=demo hydra/launcher=$(LAUNCHER) $(ARGS)
	$(OFFLINE) $(PY) -m adatp_bench.report.table1 --experiment demo --out results/demo

test: install ## The whole CPU test suite
	$(OFFLINE) $(PY) -m pytest -n 2 --dist loadfile $(ARGS)

test-fast: install ## Tests without the slow end-to-end ones
	$(OFFLINE) $(PY) -m pytest -n 2 -m "not slow" $(ARGS)

lint: install ## ruff
	$(VENV)/bin/ruff check src tests scripts

table1: install ## Preflight, launch the missing Table 1 cells (LAUNCHER=local|slurm), render results/table1.*
	$(PY) -m adatp_bench.preflight $(TABLE1) $(ARGS)
	for exp in $(subst $(comma), ,$(TABLE1)); do \
	  $(PY) -m adatp_bench.run -m experiment=$$exp hydra/launcher=$(LAUNCHER) \
	    $(if $(WANDB),logger=wandb logger.wandb.mode=$(WANDB)) $(ARGS) || exit 1; done
	$(PY) -m adatp_bench.report.table1 --experiment $(TABLE1) --out results $(if $(WANDB),--wandb $(WANDB)) $(ARGS)

table1-render: install ## Re-render results/table1.* from the records only (no GPU)
	$(PY) -m adatp_bench.report.table1 --experiment $(TABLE1) --out results $(ARGS)

flops-table: install ## Paper-convention FLOPs of the Table 1 grid, checked against FastVID's published TFLOPs
	$(PY) -m adatp_bench.report.flops_table

bench: install ## Prefill latency/overhead benchmark (benchmarks/RESULTS.md)
	$(PY) scripts/bench_prefill.py $(ARGS)

clean: ## Remove caches (keeps results/ and .venv)
	rm -rf .pytest_cache .ruff_cache outputs multirun

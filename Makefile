# adatp-bench — every target installs what it needs first (`make install` is idempotent and fast when nothing changed).
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
APY := $(abspath $(PY))
export PIP_DISABLE_PIP_VERSION_CHECK := 1
# Which lock `make install` builds from: cpu (torch +cpu) or cuda (PyPI's CUDA torch); cuda where nvidia-smi exists.
TORCH ?= $(if $(shell command -v nvidia-smi 2>/dev/null),cuda,cpu)
TORCH_INDEX ?=                # e.g. https://download.pytorch.org/whl/cpu where no +cpu torch is on the pip path
LOCK := requirements/$(TORCH).txt
# Nothing in the test suite or demo may reach a hub.
OFFLINE := HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 WANDB_MODE=offline
STAMP := $(VENV)/.installed-$(TORCH)
LAUNCHER ?= local
WORKDIR ?= $(CURDIR)          # where sweeps write results/, outputs/ and data/ (paths.root is the launch folder)
ARGS ?=
TABLE1 ?= table1,table1_adatp
EXPERIMENT ?= $(TABLE1)        # which sweep(s) `make report` reviews, e.g. EXPERIMENT=demo
LENGTH ?= length              # `make length`'s experiment (and its <name>_vanilla reference); length_demo on CPU
WANDB ?=                      # offline | online: also log each cell and the rendered table to W&B
comma := ,

.PHONY: help install lock demo custom-example tune test test-fast lint check-data flops-table table1 table1-render report notebook length bias bench bench-cache profile clean

help: ## Show this help
	@grep -E '^[a-zA-Z0-9_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN{FS=":.*?## "}{printf "  %-14s %s\n",$$1,$$2}'

$(STAMP): $(LOCK) pyproject.toml scripts/install.py scripts/lockfile.py $(wildcard packaging/torchvision-cpu-fix/*)
	$(PYTHON) scripts/install.py --venv $(VENV) --torch $(TORCH) $(if $(TORCH_INDEX),--torch-index $(TORCH_INDEX))
	@rm -f $(VENV)/.installed-*; touch $@

install: $(STAMP) ## Build .venv exactly from requirements/$(TORCH).txt, then a one-cell smoke test (idempotent)

lock: ## Re-resolve requirements/{cpu,cuda}.txt from pyproject.toml + requirements/constraints.in (on purpose only)
	$(PYTHON) scripts/lock.py $(if $(TORCH_INDEX),--torch-index $(TORCH_INDEX))

# Sweeps exit 1 when any cell failed, after running the rest; the table is rendered either way, then the status is kept.
demo: install ## Tiny model × every method × 2 retentions × 3 synthetic benchmarks → results/demo/table1.md
	@cd $(WORKDIR) && rc=0; \
	$(OFFLINE) $(APY) -m adatp_bench.run -m experiment=demo hydra/launcher=$(LAUNCHER) $(ARGS) || rc=$$?; \
	$(OFFLINE) $(APY) -m adatp_bench.report.table1 --experiment demo --out results/demo $(ARGS) || rc=$$?; \
	exit $$rc

custom-example: install ## Tiny model × every method × 2 retentions on examples/custom → results/custom_example/table1.md
	@cd $(WORKDIR) && rc=0; ex="benchmark.videos=$(CURDIR)/examples/custom/videos \
	  benchmark.questions=$(CURDIR)/examples/custom/questions.jsonl"; \
	$(OFFLINE) $(APY) -m adatp_bench.run -m experiment=custom_example $$ex hydra/launcher=$(LAUNCHER) $(ARGS) || rc=$$?; \
	$(OFFLINE) $(APY) -m adatp_bench.report.table1 --experiment custom_example --out results/custom_example \
	  $$ex $(ARGS) || rc=$$?; \
	exit $$rc

tune: install ## Optuna search of a method's search_space at a fixed FLOPs budget → results/tuned/ (ARGS=overrides)
	cd $(WORKDIR) && $(OFFLINE) $(APY) -m adatp_bench.tune experiment=tune_adatp hydra/launcher=$(LAUNCHER) $(ARGS)

test: install ## The whole CPU test suite
	$(OFFLINE) $(PY) -m pytest -n 2 --dist loadfile $(ARGS)

test-fast: install ## Tests without the slow end-to-end ones
	$(OFFLINE) $(PY) -m pytest -n 2 -m "not slow" $(ARGS)

lint: install ## ruff
	$(VENV)/bin/ruff check src tests scripts

table1: install ## Preflight, launch the missing Table 1 cells (LAUNCHER=local|slurm), render results/table1.*
	cd $(WORKDIR) && $(APY) -m adatp_bench.preflight $(TABLE1) $(ARGS)
	@cd $(WORKDIR) && rc=0; for exp in $(subst $(comma), ,$(TABLE1)); do \
	  $(APY) -m adatp_bench.run -m experiment=$$exp hydra/launcher=$(LAUNCHER) \
	    $(if $(WANDB),logger=wandb logger.wandb.mode=$(WANDB)) $(ARGS) || rc=$$?; done; \
	$(APY) -m adatp_bench.report.table1 --experiment $(TABLE1) --out results $(if $(WANDB),--wandb $(WANDB)) $(ARGS) \
	  || rc=$$?; \
	exit $$rc

table1-render: install ## Re-render results/table1.* from the records only (no GPU)
	$(PY) -m adatp_bench.report.table1 --experiment $(TABLE1) --out results $(ARGS)

report: install ## Review page of a sweep: results/report/report_<experiment>.html (self-contained) + a W&B Report with WANDB=online
	cd $(WORKDIR) && $(APY) -m adatp_bench.report.review --experiment $(EXPERIMENT) --out results/report \
	  $(if $(WANDB),--wandb $(WANDB)) $(ARGS)

notebook: install ## Execute notebooks/explore_results.ipynb on $(WORKDIR)'s records (grid EXPERIMENT=demo) → results/notebooks/ (with outputs)
	cd $(WORKDIR) && $(OFFLINE) $(APY) $(CURDIR)/scripts/run_notebook.py $(CURDIR)/notebooks/explore_results.ipynb \
	  --results results/runs --experiment $(EXPERIMENT) --out results/notebooks/explore_results.ipynb $(ARGS)

length: install ## Length extrapolation: more frames at the same visual-token budget → results/$(LENGTH)/length.{md,csv} + plot
	@cd $(WORKDIR) && rc=0; for exp in $(LENGTH) $(LENGTH)_vanilla; do \
	  $(APY) -m adatp_bench.run -m experiment=$$exp hydra/launcher=$(LAUNCHER) $(ARGS) || rc=$$?; done; \
	$(APY) -m adatp_bench.report.length --experiment $(LENGTH),$(LENGTH)_vanilla --out results/$(LENGTH) $(ARGS) \
	  || rc=$$?; \
	exit $$rc

bias: install ## Attention-bias analysis (global + local, before/after AdaTP) → results/bias/<model>_<benchmark>/ (ARGS=model=... benchmark=...)
	cd $(WORKDIR) && $(APY) -m adatp_bench.report.bias $(ARGS)

check-data: install ## Pre-flight a benchmark's data: schema of every row, every video at its sampled frames (ARGS=benchmark=... model=...)
	cd $(WORKDIR) && $(APY) -m adatp_bench.eval.check_data $(ARGS)

flops-table: install ## Paper-convention FLOPs of the Table 1 grid, checked against FastVID's published TFLOPs
	$(PY) -m adatp_bench.report.flops_table

bench: install ## Latency benchmark: TTFT, prefill, decode, overhead, memory per method × retention (benchmarks/)
	$(PY) scripts/bench.py $(ARGS)

bench-cache: install ## Sweep wall time with and without the per-video cache (benchmarks/cache-*.json)
	$(PY) scripts/bench_cache.py $(ARGS)

profile: install ## torch.profiler trace + per-op FLOPs + the three FLOP counters for one sample (ARGS=model=... method=...)
	cd $(WORKDIR) && $(OFFLINE) $(APY) $(CURDIR)/scripts/profile_cell.py $(ARGS)

clean: ## Remove caches (keeps results/ and .venv)
	rm -rf .pytest_cache .ruff_cache outputs multirun

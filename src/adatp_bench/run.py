"""Hydra entry point: evaluate one cell (model × method at a budget × benchmark) and write its result record.

    python -m adatp_bench.run model=tiny method=fastv budget=r25 benchmark=videomme_synth
    python -m adatp_bench.run -m experiment=demo                      # a sweep (Hydra multirun)

Order of work (:func:`run_cell`): run id (``identity.py``) → skip if its record says done → lock the cell → write
``config.yaml`` → validate every setting against the model's dimensions (no weights loaded yet) → read the samples an
earlier attempt left → data in place and the task rendered → lmms-eval ``simple_evaluate`` with the real task code,
resuming past the finished samples → verify every expected metric → efficiency (tokens, FLOPs, latency, memory) →
atomic record → the configured trackers (``logger=``; their failure never fails the cell). A failure is recorded with
its error and the function returns normally, so the rest of a sweep goes on; :func:`main` turns it into exit status 1
for a single run.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import hydra
from omegaconf import DictConfig, OmegaConf

from adatp_bench.config import CONF_PATH, method_settings
from adatp_bench.errors import AdatpBenchError
from adatp_bench.identity import cell_run_id
from adatp_bench.results import (
    ResultRecord,
    RunDir,
    append_jsonl,
    atomic_write_text,
    environment,
    git_state,
    hardware,
    package_versions,
)

log = logging.getLogger("adatp_bench.run")


@dataclass(frozen=True)
class CellOutcome:
    """What happened to a cell in this job: ``done`` (ran now), ``skipped`` (already done), ``failed``, ``busy``."""

    status: Literal["done", "skipped", "failed", "busy"]
    label: str
    record: ResultRecord | None = None

    def as_status(self) -> dict[str, Any]:
        rec = self.record
        return {
            "label": self.label,
            "status": self.status,
            "run_id": rec.run_id if rec else None,
            "score": rec.score if rec else None,
            "error": f"{rec.error_type}: {rec.error}"
            if rec is not None and rec.error
            else ("another process holds this cell" if self.status == "busy" else None),
        }


def _attempt() -> dict[str, Any]:
    """Which attempt produced a sample: SLURM job id and restart count (a requeued job resumes mid-cell)."""
    return {
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
        "attempt": int(os.environ.get("SLURM_RESTART_COUNT", 0)),
        "rank": int(os.environ.get("RANK", 0)),
    }


def _fmt(settings: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in settings.items())


def run_cell(cfg: DictConfig) -> CellOutcome:
    """Evaluate one cell, or return its existing record when it is already done."""
    from adatp_bench.eval.benchmarks import prepare_benchmark
    from adatp_bench.eval.evaluate import evaluate_cell
    from adatp_bench.models.dims import model_dims
    from adatp_bench.models.specs import get_spec
    from adatp_bench.pruning import build_method

    settings = method_settings(cfg.method)
    rid = cell_run_id(cfg)
    run_dir = RunDir(Path(cfg.paths.results_dir), rid)
    label = f"{cfg.model.name} | {cfg.method.name}({_fmt(settings)}) | {cfg.benchmark.name}"
    if run_dir.is_done() and not cfg.force:
        log.info("[skip] %s already done: %s", label, run_dir.path)
        return CellOutcome("skipped", label, run_dir.record())

    resolved = OmegaConf.to_container(cfg, resolve=True)
    base = {
        "run_id": rid,
        "model": cfg.model.name,
        "method": cfg.method.name,
        "method_settings": settings,
        "benchmark": cfg.benchmark.name,
        "task": cfg.benchmark.task,
        "seed": cfg.seed,
        "config": resolved,
    }
    started = time.time()
    provenance = {
        **git_state(),
        "packages": package_versions(),
        "environment": environment(),
        "hardware": hardware(),
        "started": started,
    }
    # Data-parallel evaluation (torchrun/accelerate, lmms-eval shards documents by rank): every rank runs the cell, only
    # rank 0 holds the lock and writes the record; each rank appends its samples to its own file.
    main_rank = int(os.environ.get("RANK", 0)) == 0
    provenance["world_size"] = int(os.environ.get("WORLD_SIZE", 1))
    try:
        with run_dir.lock() if main_rank else contextlib.nullcontext():
            if main_rank:
                atomic_write_text(run_dir.path / "config.yaml", OmegaConf.to_yaml(resolved))
            # Every setting is checked before any weight is loaded.
            spec = get_spec(cfg.model.name)
            method = build_method(cfg.method.name, **settings)
            dims = model_dims(spec, cfg.model.source)
            method.validate(dims.tokens_per_frame, cfg.model.num_frames or spec.num_frames, dims.num_layers)
            completed = run_dir.completed_samples()
            if completed:
                log.info("[resume] %s: %d samples already answered", label, len(completed))
            log.info("[run] %s → %s", label, run_dir.path)
            bench = prepare_benchmark(cfg.benchmark, Path(cfg.paths.data_dir))
            result = evaluate_cell(
                cfg=cfg,
                spec=spec,
                method=method,
                bench=bench,
                run_dir=run_dir,
                completed=completed,
                on_sample=lambda rec: append_jsonl(run_dir.samples_path, {**rec, **_attempt()}),
            )
            provenance.update(finished=time.time(), wall_s=time.time() - started)
            record = ResultRecord(status="ok", provenance=provenance, **base, **result)
            if not main_rank:
                return CellOutcome("done", label, record)
            run_dir.write_record(record)
    except BlockingIOError:
        log.warning("[busy] %s is being run by another process; skipping", label)
        return CellOutcome("busy", label)
    except Exception as err:
        provenance.update(finished=time.time(), wall_s=time.time() - started, traceback=traceback.format_exc())
        record = ResultRecord(
            status="failed",
            error=str(err),
            error_type=type(err).__name__,
            provenance=provenance,
            **base,
        )
        if main_rank:
            run_dir.write_record(record)
        log.error("[failed] %s: %s: %s", label, type(err).__name__, err)
        if not isinstance(err, AdatpBenchError):
            log.error(provenance["traceback"])
        return CellOutcome("failed", label, record)
    score = "n/a" if record.score is None else f"{record.score:.2f}"
    log.info("[done] %s: score %s in %.1fs", label, score, record.provenance["wall_s"])
    send_to_loggers(cfg, record, run_dir)
    return CellOutcome("done", label, record)


def send_to_loggers(cfg: DictConfig, record: ResultRecord, run_dir: RunDir) -> None:
    """Send a written record to every configured tracker (``cfg.logger``: nodes with a ``_target_``). The record is
    already on disk: a tracker that fails is logged and noted in the record's provenance, never a failed cell."""
    from hydra.utils import instantiate

    for name, node in (cfg.get("logger") or {}).items():
        if node is None:
            continue
        try:
            instantiate(node).log_cell(record, run_dir)
        except Exception as err:  # a tracker must never fail a finished cell
            log.warning("[logger] %s failed for %s: %s: %s", name, record.run_id, type(err).__name__, err)
            record.provenance.setdefault("logger_errors", {})[name] = f"{type(err).__name__}: {err}"
            run_dir.write_record(record)


@hydra.main(config_path=CONF_PATH, config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    """Hydra task function: one cell per job."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    outcome = run_cell(cfg)
    output_dir = Path(HydraConfig.get().runtime.output_dir)
    atomic_write_text(output_dir / "cell_status.json", json.dumps(outcome.as_status(), default=str))
    record = outcome.record
    if HydraConfig.get().mode != RunMode.MULTIRUN:
        # A single run reports its outcome through the exit status; a sweep records it and goes on (sweep.py).
        if outcome.status == "busy":
            raise SystemExit(f"cell not run: another process holds its lock ({outcome.label})")
        if record is not None and record.status == "failed":
            raise SystemExit(f"cell failed: {record.error_type}: {record.error}")
    if record is None:
        return None
    return record.score


if __name__ == "__main__":
    main()

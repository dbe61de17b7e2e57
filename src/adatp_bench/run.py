"""Hydra entry point: evaluate one cell (model × method at a budget × benchmark) and write its result record.

    python -m adatp_bench.run model=tiny method=fastv budget=r25 benchmark=videomme_synth
    python -m adatp_bench.run -m experiment=demo                      # a sweep (Hydra multirun)

Order of work (:func:`run_cell`): check the run settings (seed, limit, frames) → identify the data the cell scores
(``eval/dataset.py``) → run id (``identity.py``) → skip if its record says done (unless ``force=true``) → lock the
cell → write ``config.yaml`` → validate the method against the model's dimensions (no weights loaded yet) → data in
place → **pre-flight**: every scored row follows the schema and every video decodes at the sampled frames
(``eval/check_data.py``) → the task rendered into the cell's own folder → lmms-eval ``simple_evaluate`` with the real
task code, resuming past the finished samples (``force=true`` moves them aside and evaluates every sample again) →
verify every expected metric → efficiency (tokens, FLOPs, latency, memory) → atomic record → the configured trackers
(``logger=``; their failure never fails the cell). A failure is recorded with its root cause (file, row, value) and the
function returns normally, so the rest of a sweep goes on; :func:`main` turns it into exit status 1 for a single run.
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
from adatp_bench.errors import AdatpBenchError, ConfigError, DatasetError, root_cause
from adatp_bench.identity import cell_run_id, cell_settings_id
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

#: What a job can return to a sweeper (``tune.objective``).
OBJECTIVES = ("score", "agreement")


@dataclass(frozen=True)
class CellOutcome:
    """What happened to a cell in this job: ``done`` (ran now), ``skipped`` (already done), ``failed``, ``busy``, or
    ``n/a`` (the method cannot reach this budget on this model: nothing is run, the reason is kept)."""

    status: Literal["done", "skipped", "failed", "busy", "n/a"]
    label: str
    record: ResultRecord | None = None
    error: str | None = None  # a failure before any record could be written (an impossible run setting)

    def as_status(self) -> dict[str, Any]:
        rec = self.record
        if rec is not None and rec.error:
            error: str | None = f"{rec.error_type}: {rec.error}"
        elif self.status == "busy":
            error = "another process holds this cell"
        else:
            error = self.error
        return {
            "label": self.label,
            "status": self.status,
            "run_id": rec.run_id if rec else None,
            "score": rec.score if rec else None,
            "error": error,
        }


def check_run_settings(cfg: DictConfig) -> None:
    """The settings every cell shares, checked before anything else: ``seed`` an integer, ``limit`` null or a
    positive integer, ``model.num_frames`` null or a positive integer, ``force`` a boolean, ``tune.objective`` known
    and ``tune.flops_pct`` null or a percentage."""

    def integer(value: Any) -> bool:
        return isinstance(value, int) and not isinstance(value, bool)

    if not integer(cfg.seed):
        raise ConfigError(f"seed={cfg.seed!r} must be an integer")
    if cfg.limit is not None and not (integer(cfg.limit) and cfg.limit >= 1):
        raise ConfigError(f"limit={cfg.limit!r} must be a positive integer (documents to evaluate) or null (all)")
    frames = cfg.model.get("num_frames")
    if frames is not None and not (integer(frames) and frames >= 1):
        raise ConfigError(f"model.num_frames={frames!r} must be a positive integer or null (the model's default)")
    if not isinstance(cfg.force, bool):
        raise ConfigError(f"force={cfg.force!r} must be true or false")
    if cfg.tune.objective not in OBJECTIVES:
        raise ConfigError(f"tune.objective={cfg.tune.objective!r} is unknown; valid: {', '.join(OBJECTIVES)}")
    pct = cfg.tune.flops_pct
    if pct is not None and not (isinstance(pct, int | float) and not isinstance(pct, bool) and 0 < pct <= 100):
        raise ConfigError(f"tune.flops_pct={pct!r} must be a percentage in (0, 100] or null")


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
    from adatp_bench.eval.dataset import dataset_identity

    label = f"{cfg.model.name} | {cfg.method.name} | {cfg.benchmark.name}"
    try:
        check_run_settings(cfg)
        if cfg.tune.flops_pct is not None:  # a tuning trial: its retention is solved for the FLOPs budget
            from adatp_bench.fixed_flops import hold_cell_flops

            held = hold_cell_flops(cfg)
            log.info("[flops] %s: retention %s costs %.2f%% of vanilla prefill FLOPs (target %s%%)",
                     label, held.retention, held.pct, held.target_pct)  # fmt: skip
        settings = method_settings(cfg.method)
    except ConfigError as err:
        log.error("[failed] %s: ConfigError: %s", label, err)
        return CellOutcome("failed", label, error=f"ConfigError: {err}")
    label = f"{cfg.model.name} | {cfg.method.name}({_fmt(settings)}) | {cfg.benchmark.name}"
    if reason := cell_unreachable(cfg, settings):
        log.warning("[n/a] %s: %s", label, reason)
        return CellOutcome("n/a", label, error=reason)
    settings_id = cell_settings_id(cfg)
    results_dir = Path(cfg.paths.results_dir)
    try:
        data_identity = dataset_identity(cfg.benchmark)
    except ConfigError as err:  # an impossible data setting (n_items=0): nothing to record a cell under
        log.error("[failed] %s: ConfigError: %s", label, err)
        return CellOutcome("failed", label, error=f"ConfigError: {err}")
    except DatasetError as err:  # no data to identify the cell by: its failure is filed under the settings id
        return _failed(cfg, RunDir(results_dir, settings_id), label, settings, settings_id, err, time.time(), {})
    run_dir = RunDir(results_dir, cell_run_id(cfg, data_identity))
    if run_dir.is_done() and not cfg.force:
        log.info("[skip] %s already done: %s", label, run_dir.path)
        return CellOutcome("skipped", label, run_dir.record())
    started = time.time()
    provenance = _provenance(started)
    main_rank = int(os.environ.get("RANK", 0)) == 0
    try:
        # Data-parallel evaluation (torchrun/accelerate, lmms-eval shards documents by rank): every rank runs the
        # cell, only rank 0 holds the lock and writes the record; each rank appends its samples to its own file.
        with run_dir.lock() if main_rank else contextlib.nullcontext():
            record = _evaluate(cfg, run_dir, label, settings, settings_id, data_identity, provenance, main_rank)
            if not main_rank:
                return CellOutcome("done", label, record)
            run_dir.write_record(record)
    except BlockingIOError:
        log.warning("[busy] %s is being run by another process; skipping", label)
        return CellOutcome("busy", label)
    except Exception as err:
        return _failed(cfg, run_dir, label, settings, settings_id, err, started, provenance, write=main_rank)
    if cfg.method.name != "vanilla":
        record.regression = compare_with_vanilla(cfg, run_dir, data_identity)
        run_dir.write_record(record)
    score = "n/a" if record.score is None else f"{record.score:.2f}"
    agreement = record.regression.get("agreement_pct")
    versus = "" if agreement is None else f", {agreement:.1f}% of answers as vanilla's"
    log.info("[done] %s: score %s%s in %.1fs", label, score, versus, record.provenance["wall_s"])
    send_to_loggers(cfg, record, run_dir)
    return CellOutcome("done", label, record)


def cell_unreachable(cfg: DictConfig, settings: dict[str, Any]) -> str | None:
    """Why the cell's method cannot reach its budget on its model (the cell is "n/a": nothing is run or written), or
    None. Checked from the model's dimensions only; an invalid setting is left to fail as a cell."""
    from adatp_bench.models.dims import cell_unreachable as reason

    return reason(cfg.model.name, cfg.model.source, cfg.model.num_frames, cfg.method.name, settings)


def _evaluate(
    cfg: DictConfig,
    run_dir: RunDir,
    label: str,
    settings: dict[str, Any],
    settings_id: str,
    data_identity: dict[str, Any],
    provenance: dict[str, Any],
    main_rank: bool,
) -> ResultRecord:
    """The work inside the cell's lock: validation, pre-flight, evaluation; returns the finished record."""
    from adatp_bench.eval.benchmarks import prepare_benchmark
    from adatp_bench.eval.check_data import check_dataset, require_usable
    from adatp_bench.eval.dataset import dataset_fingerprint, ensure_data
    from adatp_bench.eval.evaluate import evaluate_cell
    from adatp_bench.models.dims import validate_on_model
    from adatp_bench.models.loading import is_constant
    from adatp_bench.models.specs import get_spec
    from adatp_bench.pruning import build_method

    resolved = OmegaConf.to_container(cfg, resolve=True)
    if main_rank:
        atomic_write_text(run_dir.path / "config.yaml", OmegaConf.to_yaml(resolved))
    # Every setting is checked before any weight is loaded.
    spec = get_spec(cfg.model.name)
    if is_constant(spec.name, cfg.model.source) and cfg.method.name != "vanilla":
        raise ConfigError(f"model=constant answers without a model and takes no pruning method, got {cfg.method.name}")
    num_frames = cfg.model.num_frames or spec.num_frames
    method = build_method(cfg.method.name, **settings)
    validate_on_model(method, spec, cfg.model.source, num_frames)
    if cfg.force and main_rank and (moved := run_dir.supersede()):
        log.info("[force] %s: earlier samples and record moved to %s", label, moved)
    ref = ensure_data(cfg.benchmark)
    report = check_dataset(ref, num_frames, limit=cfg.limit)  # pre-flight, before any model loads
    require_usable(report)
    data = {
        "identity": data_identity,
        "annotation": str(ref.annotation),
        "sha256": dataset_fingerprint(ref.annotation),
        "video_dir": str(ref.video_dir),
        "n_docs": report.total_rows,  # in the file; the record's n_samples says how many were scored
        "n_videos": report.videos,
        "videos_with_repeated_frames": sorted(report.warnings),
    }
    if main_rank:  # which samples the record counts is written afresh by this attempt (eval/evaluate.py)
        for stale in run_dir.path.glob("scored.rank*.json"):
            stale.unlink()
    completed = {} if cfg.force else run_dir.completed_samples()
    if completed:
        log.info("[resume] %s: %d samples already answered", label, len(completed))
    log.info("[run] %s → %s", label, run_dir.path)
    bench = prepare_benchmark(cfg.benchmark, ref, run_dir.path / "tasks")
    result = evaluate_cell(
        cfg=cfg,
        spec=spec,
        method=method,
        bench=bench,
        run_dir=run_dir,
        completed=completed,
        on_sample=lambda rec: append_jsonl(run_dir.samples_path, {**rec, **_attempt()}),
    )
    provenance.update(finished=time.time(), wall_s=time.time() - provenance["started"])
    base = _base(cfg, run_dir, settings)
    return ResultRecord(status="ok", provenance=provenance, settings_id=settings_id, data=data, **base, **result)


def _base(cfg: DictConfig, run_dir: RunDir, settings: dict[str, Any]) -> dict[str, Any]:
    return {
        "run_id": run_dir.run_id,
        "model": cfg.model.name,
        "method": cfg.method.name,
        "method_settings": settings,
        "benchmark": cfg.benchmark.name,
        "task": cfg.benchmark.task,
        "seed": cfg.seed,
        "config": OmegaConf.to_container(cfg, resolve=True),
    }


def _provenance(started: float) -> dict[str, Any]:
    return {
        **git_state(),
        "packages": package_versions(),
        "environment": environment(),
        "hardware": hardware(),
        "started": started,
        "world_size": int(os.environ.get("WORLD_SIZE", 1)),
    }


def _failed(
    cfg: DictConfig,
    run_dir: RunDir,
    label: str,
    settings: dict[str, Any],
    settings_id: str,
    err: BaseException,
    started: float,
    provenance: dict[str, Any],
    write: bool = True,
) -> CellOutcome:
    """Record a failure with its root cause (the error that names the file, row or value), chain and traceback."""
    cause = root_cause(err)
    chain, current = [], err
    while current is not None and len(chain) < 10:
        chain.append(f"{type(current).__name__}: {current}")
        current = current.__cause__ or current.__context__
    provenance = {**(provenance or _provenance(started)), "finished": time.time(), "wall_s": time.time() - started}
    provenance.update(traceback=traceback.format_exception(err), error_chain=chain)
    record = ResultRecord(
        status="failed",
        error=str(cause),
        error_type=type(cause).__name__,
        provenance=provenance,
        settings_id=settings_id,
        **_base(cfg, run_dir, settings),
    )
    if write:
        run_dir.write_record(record)
    log.error("[failed] %s: %s: %s", label, record.error_type, record.error)
    if not isinstance(cause, AdatpBenchError):
        log.error("".join(provenance["traceback"]))
    return CellOutcome("failed", label, record)


def compare_with_vanilla(cfg: DictConfig, run_dir: RunDir, data_identity: dict[str, Any]) -> dict[str, Any]:
    """The label-free comparison with the vanilla cell of the same model and data (``regression.py``), or a pending
    block naming that cell when it has not finished yet (the table fills it in later)."""
    from adatp_bench.regression import compare_run_dirs, reference_run_id

    reference = reference_run_id(cfg, data_identity)
    aggregate = compare_run_dirs(RunDir(run_dir.path.parent, reference), run_dir, reference)
    return aggregate if aggregate is not None else {"reference": reference, "n_compared": None}


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
        if outcome.status == "failed":
            raise SystemExit(f"cell failed: {outcome.as_status()['error']}")
        if outcome.status == "n/a":  # asked for by name, so not a success either
            raise SystemExit(f"cell not applicable: {outcome.error}")
    return objective(cfg, record)


def objective(cfg: DictConfig, record: ResultRecord | None) -> float | None:
    """What the job returns to a sweeper (Optuna in ``make tune``): the score, or with ``tune.objective=agreement``
    the % of answers identical to vanilla's; None for a cell without a finished record (the sweeper marks it failed)."""
    if record is None or record.status != "ok":
        return None
    if cfg.tune.objective == "score":
        return record.score
    if cfg.tune.objective == "agreement":
        if cfg.method.name == "vanilla":
            return 100.0
        return record.regression.get("agreement_pct")
    raise ConfigError(f"tune.objective={cfg.tune.objective!r} is unknown; valid: {', '.join(OBJECTIVES)}")


if __name__ == "__main__":
    main()

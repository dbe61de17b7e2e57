"""Weights & Biases logging: one W&B run per cell, one summary run per rendered table.

Offline by default (``conf/logger/wandb.yaml``: ``mode: offline``): files are written under ``wandb/`` and nothing
leaves the machine until the user runs ``wandb sync wandb/offline-run-*``. With ``logger=none`` nothing is imported.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from adatp_bench.results import ResultRecord, RunDir, read_jsonl

SAMPLE_COLUMNS = ("task", "doc_id", "response", "input_tokens", "visual_tokens_in", "output_tokens")


def _init(settings: dict[str, Any], name: str, job_type: str, config: dict[str, Any], group: str | None) -> Any:
    import os

    import wandb

    Path(settings["dir"]).mkdir(parents=True, exist_ok=True)
    # Keep every W&B file (cache, staged artifacts, settings) inside the run directory, not under $HOME.
    for var in ("WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_CONFIG_DIR"):
        os.environ.setdefault(var, str(Path(settings["dir"]) / f".{var.lower()}"))
    return wandb.init(
        project=settings.get("project") or "adatp-bench",
        entity=settings.get("entity"),
        group=group or settings.get("group"),
        mode=settings.get("mode") or "offline",
        dir=settings["dir"],
        name=name,
        job_type=job_type,
        config=config,
        reinit="create_new",
    )


def log_cell(cfg: DictConfig, record: ResultRecord, run_dir: RunDir) -> str | None:
    """Log a finished cell (config, metrics, FLOPs, latency, per-sample table). Returns the W&B run dir, or None."""
    settings = cfg.get("logger", {}).get("wandb") if cfg.get("logger") else None
    if not settings:
        return None
    settings = OmegaConf.to_container(settings, resolve=True)
    run = _init(
        settings,
        name=f"{record.model}/{record.method}/{record.benchmark}/{record.run_id}",
        job_type="cell",
        config={**record.config, "run_id": record.run_id},
        group=settings.get("group"),
    )
    try:
        import wandb

        eff = record.efficiency
        summary = {
            "score": record.score,
            **{f"metrics/{k}": v for k, v in record.metrics.items()},
            "flops/paper_tflops": eff.get("paper_tflops"),
            "flops/pct_of_vanilla": eff.get("pct_flops_of_vanilla"),
            "tokens/visual_tokens_in": eff.get("visual_tokens_in"),
            **{f"latency/{k}": v for k, v in eff.get("latency_ms", {}).items()},
            "n_samples": record.n_samples,
        }
        run.log({k: v for k, v in summary.items() if v is not None})
        rows = read_jsonl(run_dir.samples_path)
        table = wandb.Table(columns=[*SAMPLE_COLUMNS, "prefill_ms"])
        for row in rows:
            table.add_data(*(row.get(c) for c in SAMPLE_COLUMNS), row.get("timings_ms", {}).get("prefill_ms"))
        run.log({"samples": table})
        return str(run.dir)
    finally:
        run.finish()


def log_table(settings: dict[str, Any], experiment: str, table: Any, paths: dict[str, Path]) -> str:
    """Summary run: the rendered Table 1 as a W&B table, its plot, and the Markdown/LaTeX/CSV files."""
    import wandb

    run = _init(
        settings,
        name=f"table1/{experiment}",
        job_type="summary",
        config={"experiment": experiment},
        group=settings.get("group") or experiment,
    )
    try:
        frame = table.astype(object).where(table.notna(), None).astype(str)
        run.log({"table1": wandb.Table(dataframe=frame), "table1_flops": wandb.Image(str(paths["png"]))})
        for key in ("md", "csv", "tex"):
            run.save(str(paths[key]), base_path=str(paths[key].parent), policy="now")
        return str(run.dir)
    finally:
        run.finish()

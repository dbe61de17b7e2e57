"""Weights & Biases: one W&B run per cell, one summary run per rendered table.

A cell is logged after its record is written: ``logger=wandb`` puts a :class:`WandbLogger` node in the config, which
the runner instantiates by its ``_target_`` (it never imports this module), and a failure here never fails the cell.
Offline by default (``conf/logger/wandb.yaml``: ``mode: offline``): files are written under ``<paths.root>/wandb/``
and nothing leaves the machine until ``wandb sync wandb/offline-run-*``. Every W&B file (cache, staged artifacts,
settings) stays inside that folder, never under ``$HOME``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adatp_bench.results import ResultRecord, RunDir, read_jsonl

SAMPLE_COLUMNS = ("task", "doc_id", "response", "input_tokens", "visual_tokens_in", "output_tokens")
#: Job types and summary keys other tools select runs and metrics by (the W&B report, ``report/review.py``).
CELL_JOB, SUMMARY_JOB = "cell", "summary"
METRIC_SCORE, METRIC_FLOPS_PCT, METRIC_PREFILL_MS = "score", "flops/pct_of_vanilla", "latency/prefill_ms"


@dataclass
class WandbLogger:
    """Logs cells and tables to W&B. The fields are ``conf/logger/wandb.yaml``'s keys."""

    dir: str
    mode: str = "offline"  # offline | online | disabled
    project: str = "adatp-bench"
    entity: str | None = None
    group: str | None = None

    def _init(self, name: str, job_type: str, config: dict[str, Any], group: str | None = None) -> Any:
        import wandb

        Path(self.dir).mkdir(parents=True, exist_ok=True)
        for var in ("WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_CONFIG_DIR"):
            os.environ.setdefault(var, str(Path(self.dir) / f".{var.lower()}"))
        return wandb.init(
            project=self.project or "adatp-bench",
            entity=self.entity,
            group=group or self.group,
            mode=self.mode or "offline",
            dir=self.dir,
            name=name,
            job_type=job_type,
            config=config,
            reinit="create_new",
        )

    def log_cell(self, record: ResultRecord, run_dir: RunDir) -> str:
        """One run per finished cell: config, metrics, FLOPs, latency and the per-sample table; returns the run dir."""
        import wandb

        run = self._init(
            name=f"{record.model}/{record.method}/{record.benchmark}/{record.run_id}",
            job_type=CELL_JOB,
            config={**record.config, "run_id": record.run_id},
        )
        try:
            eff = record.efficiency
            summary = {
                METRIC_SCORE: record.score,
                **{f"metrics/{k}": v for k, v in record.metrics.items()},
                "flops/paper_tflops": eff.get("paper_tflops"),
                METRIC_FLOPS_PCT: eff.get("pct_flops_of_vanilla"),
                "tokens/visual_tokens_in": eff.get("visual_tokens_in"),
                **{f"latency/{k}": v for k, v in eff.get("latency_ms", {}).items()},
                "n_samples": record.n_samples,
                **{f"vs_vanilla/{k}": v for k, v in record.regression.items() if isinstance(v, int | float)},
            }
            run.log({k: v for k, v in summary.items() if v is not None})
            table = wandb.Table(columns=[*SAMPLE_COLUMNS, "prefill_ms"])
            for row in read_jsonl(run_dir.samples_path):
                table.add_data(*(row.get(c) for c in SAMPLE_COLUMNS), row.get("timings_ms", {}).get("prefill_ms"))
            run.log({"samples": table})
            return str(run.dir)
        finally:
            run.finish()

    def log_table(self, experiment: str, table: Any, paths: dict[str, Path]) -> str:
        """Summary run: the rendered Table 1 as a W&B table, its plot, and the Markdown/LaTeX/CSV files."""
        import wandb

        run = self._init(
            name=f"table1/{experiment}",
            job_type=SUMMARY_JOB,
            config={"experiment": experiment},
            group=self.group or experiment,
        )
        try:
            frame = table.astype(object).where(table.notna(), None).astype(str)
            images = {"table1_flops": "png", "table1_latency": "latency_png"}
            logged = {key: wandb.Image(str(paths[k])) for key, k in images.items() if k in paths}
            run.log({"table1": wandb.Table(dataframe=frame), **logged})
            for key in ("md", "csv", "tex"):
                run.save(str(paths[key]), base_path=str(paths[key].parent), policy="now")
            return str(run.dir)
        finally:
            run.finish()

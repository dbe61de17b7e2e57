"""End-of-sweep summary: cells done, skipped and failed (with the reason), for local and SLURM multiruns alike.

Each job writes ``cell_status.json`` into its own Hydra output directory (``run.py``). The callback runs in the
launching process after the sweep, reads those files from the sweep directory and prints one table, so it works when
the jobs ran on other machines (submitit) too.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

log = logging.getLogger("adatp_bench.sweep")


def read_statuses(sweep_dir: Path) -> list[dict[str, Any]]:
    """Status of every job of a sweep, in job order."""
    rows = []
    for path in sorted(
        sweep_dir.glob("*/cell_status.json"), key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0
    ):
        try:
            rows.append(json.loads(path.read_text()))
        except json.JSONDecodeError:
            rows.append({"status": "unknown", "label": str(path.parent), "error": "unreadable status file"})
    return rows


def format_summary(rows: list[dict[str, Any]], expected_jobs: int | None = None) -> str:
    """Counts per status plus one line per failed (or silent) cell."""
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["status"]] = counts.get(row["status"], 0) + 1
    lines = ["sweep summary: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))]
    if expected_jobs is not None and expected_jobs > len(rows):
        lines[0] += f", {expected_jobs - len(rows)} without a status (killed or never started)"
    for row in rows:
        if row["status"] in {"failed", "busy", "unknown"}:
            lines.append(f"  {row['status']:>7}  {row['label']}: {row.get('error') or ''}")
    return "\n".join(lines)


class SweepSummary(Callback):
    """Hydra callback printing :func:`format_summary` at the end of a multirun."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        rows = read_statuses(sweep_dir)
        summary = format_summary(rows)
        log.info("%s", summary)
        (sweep_dir / "summary.txt").write_text(summary + "\n")

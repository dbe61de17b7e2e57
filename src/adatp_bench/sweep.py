"""End-of-sweep summary and exit status: cells done, skipped, n/a and failed (with the reason), for local and SLURM
multiruns alike.

Each job writes ``cell_status.json`` into its own Hydra output directory (``run.py``). The callback runs in the
launching process after every job has finished, reads those files from the sweep directory, prints one table, writes
it to ``<sweep dir>/summary.txt`` and then ends the process with exit status 1 when any cell failed, was busy (another
process held it) or left no status: a sweep never reports success for work it did not do. The cells that did finish
are recorded before that, so nothing computed is lost.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

log = logging.getLogger("adatp_bench.sweep")


#: Statuses that make a sweep (or a single cell) exit non-zero.
UNSUCCESSFUL = frozenset({"failed", "busy", "unknown"})
#: A cell the method cannot reach on its model (DyCoke below 25%): listed with its reason, not a failure of the sweep.
NOT_APPLICABLE = "n/a"


def read_statuses(sweep_dir: Path) -> list[dict[str, Any]]:
    """Status of every job of a sweep, in job order. A job that started (Hydra wrote its ``.hydra/`` folder) but left
    no ``cell_status.json`` was killed: it is reported as ``unknown``."""
    rows = []
    jobs = {p.parent for p in sweep_dir.glob("*/.hydra")} | {p.parent for p in sweep_dir.glob("*/cell_status.json")}
    for job in sorted(jobs, key=lambda p: (0, int(p.name)) if p.name.isdigit() else (1, p.name)):
        path = job / "cell_status.json"
        try:
            rows.append(json.loads(path.read_text()))
        except FileNotFoundError:
            rows.append({"status": "unknown", "label": str(job), "error": "the job left no status (killed?)"})
        except json.JSONDecodeError:
            rows.append({"status": "unknown", "label": str(job), "error": "unreadable status file"})
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
        if row["status"] in UNSUCCESSFUL or row["status"] == NOT_APPLICABLE:
            lines.append(f"  {row['status']:>7}  {row['label']}: {row.get('error') or ''}")
    return "\n".join(lines)


def sweep_failed(rows: list[dict[str, Any]]) -> bool:
    """True when any job did not produce its cell (failed, busy or unknown), or when there were no jobs at all."""
    return not rows or any(row["status"] in UNSUCCESSFUL for row in rows)


class SweepSummary(Callback):
    """Hydra callback: print :func:`format_summary` at the end of a multirun, then exit 1 if any cell failed."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        rows = read_statuses(sweep_dir)
        summary = format_summary(rows)
        log.info("%s", summary)
        (sweep_dir / "summary.txt").write_text(summary + "\n")
        if sweep_failed(rows):
            bad = sum(row["status"] in UNSUCCESSFUL for row in rows)
            # SystemExit passes through Hydra's error handling (it catches Exception only) and sets the exit status.
            raise SystemExit(f"sweep incomplete: {bad} of {len(rows)} cells did not finish ({sweep_dir}/summary.txt)")

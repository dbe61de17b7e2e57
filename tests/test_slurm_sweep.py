"""The harness on a real (local, one-node) SLURM cluster: a 2×2 sweep of tiny cells through submitit_slurm, and a job
requeued mid-cell that resumes with no sample lost or duplicated. Skipped without root/apt (see docs/slurm.md)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import slurm_utils
from slurm_utils import read_jsonl, run_multirun, start_multirun, wait_for

slurm_cluster = slurm_utils.slurm_cluster
pytestmark = [pytest.mark.slurm, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[1]


def _records(root: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((root / "results" / "runs").glob("*/record.json"))]


def _two_by_two(cluster, root: Path, sweep: str):
    """vanilla, fastv × two synthetic benchmarks on the tiny model, through submitit_slurm, results under ``root``."""
    return run_multirun(
        "adatp_bench.run",
        ["model=tiny", "method=vanilla,fastv", "benchmark=videomme_synth,mlvu_dev_synth", f"paths.root={root}"],
        timeout=300,
        cluster=cluster,
        sweep_dir=root / sweep,
        cwd=root,
    )


def test_two_by_two_sweep_of_cells(slurm_cluster, tmp_path: Path) -> None:
    run = _two_by_two(slurm_cluster, tmp_path, "sweep")
    assert run.returncode == 0, run.output[-6000:]
    records = _records(tmp_path)
    assert len(records) == 4 and all(r["status"] == "ok" for r in records)
    assert {(r["method"], r["benchmark"]) for r in records} == {
        (m, b) for m in ("vanilla", "fastv") for b in ("videomme_synth", "mlvu_dev_synth")
    }
    assert all(r["provenance"]["hardware"].get("slurm_job_id") for r in records)
    assert "sweep summary: 4 done" in run.output or "4 done" in (tmp_path / "sweep" / "summary.txt").read_text()
    # resubmitting the same sweep runs nothing new
    again = _two_by_two(slurm_cluster, tmp_path, "sweep2")
    assert again.returncode == 0, again.output[-6000:]
    assert "4 skipped" in (tmp_path / "sweep2" / "summary.txt").read_text()


def test_job_requeued_mid_cell_resumes(slurm_cluster, tmp_path: Path) -> None:
    n_items = 300  # 32 frames each: ≈ 30 s of work, so the requeue lands mid-cell even on a loaded machine
    run = start_multirun(
        "adatp_bench.run",
        [
            "model=tiny",
            "method=fastv",
            "benchmark=videomme_synth",
            f"benchmark.n_items={n_items}",
            f"paths.root={tmp_path}",
        ],
        cluster=slurm_cluster,
        sweep_dir=tmp_path / "sweep",
        cwd=tmp_path,
    )
    try:
        samples = lambda: [p for p in (tmp_path / "results" / "runs").glob("*/samples.jsonl")]  # noqa: E731
        wait_for(
            lambda: samples() and len(read_jsonl(samples()[0])) >= 5, timeout=120, what="5 samples", multirun=run
        )
        rows = read_jsonl(samples()[0])
        assert len(rows) < n_items, "the cell finished before it could be interrupted; raise n_items"
        slurm_cluster.requeue(rows[0]["slurm_job_id"])
        run.wait(timeout=480)  # the requeued job waits for the scheduler, then resumes; generous for loaded machines
    finally:
        run.stop()
    assert run.returncode == 0, run.output[-6000:]
    (record,) = _records(tmp_path)
    assert record["status"] == "ok" and record["n_samples"] == n_items
    rows = read_jsonl(samples()[0])
    docs = [r["doc_id"] for r in rows]
    assert sorted(docs) == list(range(n_items))  # none lost, none twice
    attempts = {r["attempt"] for r in rows}
    assert attempts == {0, 1}, f"samples were not split across the two attempts: {attempts}"

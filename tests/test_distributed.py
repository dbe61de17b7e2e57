"""Data-parallel evaluation of one cell: two CPU processes (torchrun, gloo) give the single-process result."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CELL = ["model=tiny", "method=fastv", "benchmark=videomme_synth", "benchmark.n_items=7"]


def _record(root: Path) -> tuple[dict, dict[int, str], list[Path]]:
    run = next((root / "results" / "runs").iterdir())
    record = json.loads((run / "record.json").read_text())
    rows = [json.loads(line) for f in sorted(run.glob("samples*.jsonl")) for line in f.read_text().splitlines()]
    return record, {r["doc_id"]: r["response"] for r in rows}, sorted(run.glob("samples*.jsonl"))


@pytest.mark.slow
def test_two_processes_match_one(tmp_path: Path) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    single, dual = tmp_path / "single", tmp_path / "dual"
    subprocess.run([sys.executable, "-m", "adatp_bench.run", *CELL, f"paths.root={single}"],
                   cwd=ROOT, env=env, check=True, capture_output=True, timeout=300)
    torchrun = Path(sys.executable).with_name("torchrun")
    proc = subprocess.run([str(torchrun), "--nproc_per_node", "2", "--master_port", "29533", "-m", "adatp_bench.run",
                           *CELL, f"paths.root={dual}"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    one, one_answers, _ = _record(single)
    two, two_answers, files = _record(dual)
    assert two["status"] == "ok" and two["provenance"]["world_size"] == 2
    assert len(files) == 2  # each rank wrote its own samples
    assert two["metrics"] == one["metrics"]
    assert two["n_samples"] == one["n_samples"] == 7
    assert two_answers == one_answers  # every document answered once, identically
    assert two["efficiency"]["video_tokens_per_layer"] == one["efficiency"]["video_tokens_per_layer"]

"""Table 1 rendering from records only: missing and failed cells are marked, never filled; published numbers stay in
their own labelled columns; unknown config values list the valid ones."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from adatp_bench.config import compose
from adatp_bench.report import table1
from adatp_bench.report.grid import experiment_cells
from adatp_bench.results import ResultRecord, RunDir
from adatp_bench.run import run_cell

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_demo_table_marks_missing_and_failed_cells(tmp_path: Path) -> None:
    ok_cfg = compose(
        [f"paths.root={tmp_path}", "experiment=demo", "method=fastv", "budget=r25", "benchmark=videomme_synth"]
    )
    done = run_cell(ok_cfg).record
    # A failed cell of the same grid: its record says so, with the error.
    cells = experiment_cells("demo", [f"paths.root={tmp_path}"])
    victim = next(c for c in cells if c.method == "fastv" and c.budget == "25%" and c.benchmark == "mlvu_dev_synth")
    RunDir(tmp_path / "results" / "runs", victim.run_id).write_record(
        ResultRecord(
            run_id=victim.run_id,
            status="failed",
            model="tiny",
            method="fastv",
            method_settings={},
            benchmark="mlvu_dev_synth",
            task="mlvu_dev_synth",
            seed=0,
            error="CUDA out of memory",
            error_type="OutOfMemoryError",
        )
    )
    out = tmp_path / "report"
    with pytest.raises(SystemExit, match="1 failed cell"):  # written first, then a non-zero exit status
        table1.main(["--experiment", "demo", "--results", str(tmp_path / "results" / "runs"), "--out", str(out)])
    csv = pd.read_csv(out / "table1.csv")
    row = csv[(csv.method == "fastv") & (csv.setting == "100%/25%")].iloc[0]
    assert float(row.VideoMME) == pytest.approx(done.score)
    assert row.MLVU == "failed" and row.LongVideoBench == "missing"
    assert row.Avg == "—"  # never averaged over an incomplete row
    assert pd.isna(row["published avg"])  # no published row for the tiny model
    md = (out / "table1.md").read_text()
    assert "CUDA out of memory" in md and "missing" in md
    assert (out / "table1.tex").read_text().startswith("\\begin{table}")
    assert (out / "table1_flops.png").stat().st_size > 1000
    # every demo method has a row, run or not
    assert {c.method for c in cells} == set(csv.method)


def test_unknown_method_lists_the_valid_ones(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "adatp_bench.run", "method=fastvv", f"paths.root={tmp_path}"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0
    assert "Could not find 'method/fastvv'" in proc.stderr and "fastv" in proc.stderr and "adatp" in proc.stderr


def test_unknown_experiment_lists_the_valid_ones() -> None:
    from adatp_bench.errors import ConfigError

    with pytest.raises(ConfigError, match=r"valid: .*demo"):
        experiment_cells("tabel1")


def test_table1_preflight_stops_at_once_without_weights(tmp_path: Path) -> None:
    """No weights or datasets here: the preflight names each missing piece, how to get it, and points to make demo."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    proc = subprocess.run(
        [sys.executable, "-m", "adatp_bench.preflight", "table1,table1_adatp"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env=env,
    )
    assert proc.returncode == 1
    err = proc.stderr
    assert "huggingface-cli download llava-hf/llava-onevision-qwen2-7b-ov-hf" in err
    assert "python -m adatp_bench.models.convert" in err  # LLaVA-Video needs converting
    assert "google/siglip-so400m-patch14-384" in err  # adatp / fastvid relevance encoder
    assert "videomme" in err and "make demo" in err and "Nothing was launched" in err
    assert not (tmp_path / "results").exists()


def test_grid_cache_follows_config_changes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A cached grid is reused only while the configs it reads are unchanged: editing an experiment in a user's
    ``hydra.searchpath`` folder recomposes (new run ids)."""
    from adatp_bench.report import grid

    user_conf = tmp_path / "my_conf"
    (user_conf / "experiment").mkdir(parents=True)
    experiment = user_conf / "experiment" / "mine.yaml"
    experiment.write_text(
        "# @package _global_\nexperiment_name: mine\nmethod:\n  k: 2\nhydra:\n  sweeper:\n    params:\n"
        "      method: fastv\n      budget: r25,r50\n      benchmark: videomme_synth\n"
    )
    monkeypatch.setenv("ADATP_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(grid, "CACHE_MIN_CELLS", 1)
    overrides = [f"hydra.searchpath=[file://{user_conf}]"]
    first = grid.experiment_cells("mine", overrides)
    assert len(first) == 2 and len(list((tmp_path / "cache").glob("grid-*.json"))) == 1
    again = grid.experiment_cells("mine", overrides)  # from the cache
    assert [c.run_id for c in again] == [c.run_id for c in first]
    assert again[0].config.method.k == 2
    experiment.write_text(experiment.read_text().replace("k: 2", "k: 3"))
    changed = grid.experiment_cells("mine", overrides)
    assert {c.config.method.k for c in changed} == {3}
    assert {c.run_id for c in changed}.isdisjoint({c.run_id for c in first})
    assert len(list((tmp_path / "cache").glob("grid-*.json"))) == 2

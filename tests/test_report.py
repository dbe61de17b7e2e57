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
from adatp_bench.errors import ConfigError
from adatp_bench.report import table1
from adatp_bench.report.grid import Cell, experiment_cells
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
    assert pd.isna(row["published Avg"])  # no published row for the tiny model
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


def _hand_record(cell: Cell, score: float, pct_flops: float, tflops: float, prefill_ms: float) -> ResultRecord:
    """A record standing in for a finished full-size cell (this machine has no weights): the numbers are test
    inputs, chosen so that every derived column below has one hand-computed answer."""
    return ResultRecord(
        run_id=cell.settings_id,
        status="ok",
        model=cell.model,
        method=cell.method,
        method_settings=cell.method_settings(),
        benchmark=str(cell.config.benchmark.benchmark),
        task=str(cell.config.benchmark.benchmark),
        seed=0,
        score=score,
        n_samples=10,
        settings_id=cell.settings_id,
        efficiency={
            "paper_tflops": tflops,
            "pct_flops_of_vanilla": pct_flops,
            "latency_ms": {"prefill_ms": prefill_ms},
        },
    )


def test_table1_beside_the_paper_deltas_n_a_and_hollow_published_points(tmp_path: Path) -> None:
    """Full-size rows: per-benchmark published scores of the matching FastVID row, Δ = ours − published, % of
    vanilla on our own vanilla, DyCoke below 25% "n/a" with its reason (never "missing", never run)."""
    from adatp_bench.report.published import published_row

    overrides = ["model=llava_ov_7b", "method=vanilla,fastvid,dycoke", "budget=r20"]
    cells = experiment_cells("table1", overrides)
    assert all(c.run_id is None for c in cells)  # no VideoMME/MLVU/LVB annotations here: found by settings id
    results = tmp_path / "runs"
    ours = {"vanilla": (60.0, 100.0, 48.8, 900.0), "fastvid": (57.0, 17.3, 8.46, 200.0)}
    for cell in cells:
        if cell.method in ours:
            RunDir(results, cell.settings_id).write_record(_hand_record(cell, *ours[cell.method]))
    out = tmp_path / "table"
    table1.main(["--experiment", "table1", "--results", str(results), "--out", str(out), *overrides])
    csv = pd.read_csv(out / "table1.csv", keep_default_na=False, na_values=[""]).set_index("method")  # keep "n/a"
    pub = published_row("llava_ov_7b", "fastvid", "20%")
    assert pub is not None and pub["scores"]  # FastVID Table 1, 19.9%
    fastvid = csv.loc["fastvid"]
    assert float(fastvid["published VideoMME"]) == pub["scores"]["videomme"]
    assert float(fastvid["Δ VideoMME"]) == pytest.approx(57.0 - pub["scores"]["videomme"])
    assert float(fastvid["Δ Avg"]) == pytest.approx(57.0 - pub["avg"])
    assert float(fastvid["% of vanilla"]) == pytest.approx(100 * 57.0 / 60.0)  # our vanilla, not the paper's
    assert float(fastvid["published TFLOPs"]) == pub["tflops"]
    assert fastvid["published source"].startswith("FastVID Table 1")
    dycoke = csv.loc["dycoke"]
    assert {dycoke.VideoMME, dycoke.MLVU, dycoke.LongVideoBench} == {"n/a"}
    assert "(1 + 3(1 − K))/4 ≥ 0.25" in dycoke["n/a because"]
    md = (out / "table1.md").read_text()
    (dycoke_line,) = [line for line in md.splitlines() if line.startswith("| llava_ov_7b | dycoke")]
    assert dycoke_line.count("n/a") == 3 and "missing" not in dycoke_line
    beside = md.split("## Beside the paper", 1)[1]
    assert f"57.00 / {pub['avg']:.2f} ({57.0 - pub['avg']:+.2f})" in beside
    assert "Not applicable (n/a)" in md and "dycoke retention=0.2 is impossible" in md
    assert (out / "table1_flops.png").stat().st_size > 1000 and (out / "table1_latency.png").stat().st_size > 1000
    assert "tab:table1-published" in (out / "table1.tex").read_text()


def test_accuracy_plot_draws_published_rows_as_hollow_markers(tmp_path: Path) -> None:
    from matplotlib.collections import PathCollection

    from adatp_bench.report import plots

    table = pd.DataFrame([
        {"model": "m", "method": "vanilla", "Avg": 60.0, "% FLOPs": 100.0, "agree %": 100.0, "prefill ms": 9.0,
         "published Avg": 61.0, "published % FLOPs": 100.0},
        {"model": "m", "method": "fastv", "Avg": 55.0, "% FLOPs": 30.0, "agree %": 80.0, "prefill ms": 4.0,
         "published Avg": None, "published % FLOPs": None},
    ])  # fmt: skip
    drawn: list[PathCollection] = []
    real = plots.save_figure

    def keep(fig: object, path: Path) -> Path:
        drawn.extend(c for ax in fig.axes for c in ax.collections if isinstance(c, PathCollection))  # type: ignore[attr-defined]
        return real(fig, path)

    import unittest.mock

    with unittest.mock.patch.object(plots, "save_figure", keep):
        plots.accuracy_vs_flops(table, tmp_path / "a.png", "t")
    (published,) = drawn
    assert published.get_offsets().tolist() == [[100.0, 61.0]]
    assert published.get_facecolors().size == 0 or published.get_facecolors()[0][3] == 0  # hollow


def test_hard_subset_scores_only_the_items_downsampling_gets_wrong(tmp_path: Path) -> None:
    """report.subset=hard: each row is scored on the items method=downsample (same model, data, budget) answers
    wrongly; vanilla, which has no budget, is split by report.hard_reference's downsample cell."""
    import json

    from adatp_bench.eval.parsed import CORRECT_FILE

    grid = ["method=vanilla,fastv,downsample", "budget=r25", "benchmark=videomme_synth", f"paths.root={tmp_path}"]
    runs = tmp_path / "results" / "runs"
    for method in ("vanilla", "fastv", "downsample"):
        cfg = compose([f"paths.root={tmp_path}", "experiment=demo", f"method={method}", "budget=r25",
                       "benchmark=videomme_synth"])  # fmt: skip
        record = run_cell(cfg).record
        correct = json.loads((runs / record.run_id / CORRECT_FILE).read_text())
        assert len(correct) == record.n_samples == 3
        assert 100 * sum(correct.values()) / len(correct) == pytest.approx(record.score)  # as lmms-eval scored it
    # Test inputs: which of the three items each cell got right (the tiny model gets most wrong).
    keys = sorted(correct)
    right = {"downsample": [True, False, False], "fastv": [True, True, False], "vanilla": [False, False, True]}
    for path in runs.glob("*/record.json"):
        method = json.loads(path.read_text())["method"]
        (path.parent / CORRECT_FILE).write_text(json.dumps(dict(zip(keys, right[method], strict=True))))
    out = tmp_path / "table"
    table1.main(["--experiment", "demo", "--results", str(runs), "--out", str(out), *grid, "report.subset=hard"])
    csv = pd.read_csv(out / "table1_hard.csv").set_index("method")
    assert float(csv.loc["fastv", "VideoMME"]) == pytest.approx(50.0)  # 1 of the 2 hard items
    assert float(csv.loc["vanilla", "VideoMME"]) == pytest.approx(50.0)  # split by downsample at r25 as well
    assert float(csv.loc["downsample", "VideoMME"]) == 0.0  # by definition
    assert not [c for c in csv.columns if c.startswith("Δ ")]
    assert "hard subset" in (out / "table1_hard.md").read_text()
    with pytest.raises(ConfigError, match=r"report\.subset='easy'"):
        table1.collect(experiment_cells("demo", grid), runs, subset="easy")

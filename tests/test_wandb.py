"""W&B logging is offline by default; the offline run files hold what each cell and the summary run logged."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from adatp_bench.config import compose
from adatp_bench.run import run_cell
from wandb_reader import read_run

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def wandb_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for var in ("WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_CONFIG_DIR"):
        monkeypatch.setenv(var, str(tmp_path / var.lower()))
    monkeypatch.delenv("WANDB_MODE", raising=False)  # the config's own default (offline) must apply
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # nothing may be written under the real home
    return tmp_path


def _runs(root: Path) -> list[Path]:
    return sorted((root / "wandb" / "wandb").glob("offline-run-*/run-*.wandb"))


@pytest.mark.slow
def test_cell_logs_config_metrics_flops_and_samples_offline(wandb_env: Path) -> None:
    cfg = compose([f"paths.root={wandb_env}", "logger=wandb", "method=fastv", "benchmark=videomme_synth"])
    assert cfg.logger.wandb.mode == "offline"
    outcome = run_cell(cfg)
    assert outcome.status == "done"
    (path,) = _runs(wandb_env)
    run = read_run(path)
    assert run.config["run_id"] == outcome.record.run_id
    assert run.config["method"]["name"] == "fastv"
    logged = {k: v for row in run.history for k, v in row.items()}
    assert logged["score"] == pytest.approx(outcome.record.score)
    assert logged["flops/paper_tflops"] == pytest.approx(outcome.record.efficiency["paper_tflops"])
    assert logged["tokens/visual_tokens_in"] == pytest.approx(200.0)
    assert logged["samples/_type"] == "table-file" and logged["samples/nrows"] == 3
    table = json.loads((path.parent / "files" / logged["samples/path"]).read_text())
    assert [row[1] for row in table["data"]] == [0, 1, 2]  # doc ids of the per-sample table
    assert not [p for p in (wandb_env / "home").rglob("*") if "wandb" in p.name]  # nothing of W&B under $HOME


@pytest.mark.slow
def test_table1_summary_run(wandb_env: Path) -> None:
    from adatp_bench.report import table1

    cfg = compose([f"paths.root={wandb_env}", "method=vanilla", "benchmark=videomme_synth"])
    run_cell(cfg)
    out = wandb_env / "report"
    table1.main(
        [
            "--experiment",
            "demo",
            "--results",
            str(wandb_env / "results" / "runs"),
            "--out",
            str(out),
            "--wandb",
            "offline",
            "--wandb-dir",
            str(wandb_env / "wandb"),
        ]
    )
    (path,) = _runs(wandb_env)
    run = read_run(path)
    logged = {k: v for row in run.history for k, v in row.items()}
    assert logged["table1/_type"] == "table-file"
    assert logged["table1_flops/_type"] == "image-file"
    table = json.loads((path.parent / "files" / logged["table1/path"]).read_text())
    vanilla = [row for row in table["data"] if row[table["columns"].index("method")] == "vanilla"]
    assert len(vanilla) == 1 and "missing" in json.dumps(table["data"])  # the demo grid has unrun cells, marked


def test_a_failing_tracker_never_fails_a_written_cell(wandb_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """W&B breaks after the record is on disk: the cell is done, its record ok, and the failure noted in provenance."""
    from adatp_bench.loggers.wandb import WandbLogger
    from adatp_bench.results import RunDir

    def broken(self: WandbLogger, record: object, run_dir: object) -> str:
        raise ConnectionError("api.wandb.ai unreachable")

    monkeypatch.setattr(WandbLogger, "log_cell", broken)
    cfg = compose([f"paths.root={wandb_env}", "logger=wandb", "method=vanilla", "benchmark=videomme_synth", "limit=1"])
    outcome = run_cell(cfg)
    assert outcome.status == "done" and outcome.record.status == "ok"
    on_disk = RunDir(Path(cfg.paths.results_dir), outcome.record.run_id).record()
    assert on_disk.status == "ok"
    assert on_disk.provenance["logger_errors"] == {"wandb": "ConnectionError: api.wandb.ai unreachable"}

"""One cell end to end through Hydra config → model + method → lmms-eval (real task code) → result record.

Also: re-running a finished cell is a no-op, a killed cell resumes without losing or duplicating a sample, failures
are recorded with a clear error, our model works through the real `lmms-eval eval` CLI, and records are atomic.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from adatp_bench.config import compose
from adatp_bench.models.adapter import VideoLLM
from adatp_bench.results import RunDir, append_jsonl, atomic_write_text, read_jsonl
from adatp_bench.run import run_cell

ROOT = Path(__file__).resolve().parents[1]


def cell_config(tmp: Path, *overrides: str):
    return compose([f"paths.root={tmp}", *overrides])


@pytest.fixture(scope="module")
def shared_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A root whose synthetic data is generated once for the module."""
    return tmp_path_factory.mktemp("cell")


def test_cell_end_to_end_record(shared_root: Path) -> None:
    cfg = cell_config(shared_root, "model=tiny", "method=fastv", "budget=r50", "benchmark=videomme_synth")
    outcome = run_cell(cfg)
    assert outcome.status == "done", outcome.record.error if outcome.record else None
    rec = outcome.record
    assert rec.status == "ok" and rec.task == "videomme_synth"
    assert "videomme_perception_score,none" in rec.metrics
    assert 0.0 <= rec.score <= 100.0
    assert rec.method_settings == {"k": 2, "retention": 0.5}
    # reproducibility: resolved config, git SHA, versions, seed, hardware
    assert rec.config["method"]["retention"] == 0.5 and rec.seed == 0
    assert rec.provenance["packages"]["lmms_eval"] == "0.7.3"
    assert rec.provenance["packages"]["transformers"] == "5.23.0"
    assert "git_sha" in rec.provenance and rec.provenance["hardware"]["cpu_count"]
    env = rec.provenance["environment"]
    assert env["install"]["lock"].startswith("requirements/") and len(env["distributions_sha256"]) == 64
    # per-sample predictions and the visual tokens that entered the LLM
    run_dir = RunDir(Path(cfg.paths.results_dir), rec.run_id)
    samples = read_jsonl(run_dir.samples_path)
    assert len(samples) == rec.n_samples == 3
    assert all(s["visual_tokens_in"] == 8 * 25 for s in samples)
    assert rec.efficiency["video_tokens_per_layer"][:2] == [201.0, 201.0]
    assert rec.efficiency["video_tokens_per_layer"][2] == round(200 * 0.5) + 1
    assert 0 < rec.efficiency["pct_flops_of_vanilla"] < 100
    on_disk = json.loads(run_dir.record_path.read_text())
    assert on_disk["run_id"] == rec.run_id == run_dir.path.name


def test_rerun_is_a_noop(shared_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = cell_config(shared_root, "model=tiny", "method=fastv", "budget=r50", "benchmark=videomme_synth")
    monkeypatch.setattr(VideoLLM, "generate", lambda *a, **k: pytest.fail("a finished cell ran the model again"))
    assert run_cell(cfg).status == "skipped"


def test_run_id_ignores_paths_but_not_settings(tmp_path: Path) -> None:
    from adatp_bench.report.grid import experiment_cells

    a = experiment_cells("demo", [f"paths.root={tmp_path}"])
    b = experiment_cells("demo", ["paths.root=/elsewhere"])
    assert [c.run_id for c in a] == [c.run_id for c in b]
    assert len({c.run_id for c in a}) == len(a)


def test_resume_after_kill_loses_and_duplicates_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = cell_config(tmp_path, "model=tiny", "method=vanilla", "benchmark=mlvu_dev_synth")
    first = run_cell(cfg).record
    run_dir = RunDir(Path(cfg.paths.results_dir), first.run_id)
    full = read_jsonl(run_dir.samples_path)
    # Simulate a job killed after two samples: no record, two complete lines and one torn line.
    run_dir.record_path.unlink()
    run_dir.samples_path.write_text("".join(json.dumps(r) + "\n" for r in full[:2]) + '{"task": "mlvu')
    calls: list[str] = []
    real = VideoLLM.generate

    def counting(self, *args, **kwargs):
        calls.append(kwargs.get("sample_id", ""))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(VideoLLM, "generate", counting)
    resumed = run_cell(cfg)
    assert resumed.status == "done"
    assert len(calls) == 1  # only the missing sample ran
    rows = read_jsonl(run_dir.samples_path)
    keys = [(r["task"], r["doc_id"]) for r in rows]
    assert len(keys) == len(set(keys)) == 3
    assert resumed.record.metrics == first.metrics
    assert [r["response"] for r in sorted(rows, key=lambda r: r["doc_id"])] == [r["response"] for r in full]


def test_missing_video_fails_the_cell_with_the_file_named(tmp_path: Path) -> None:
    cfg = cell_config(tmp_path, "model=tiny", "method=vanilla", "benchmark=longvideobench_val_v_synth")
    from adatp_bench.eval.dataset import ensure_data

    data = ensure_data(cfg.benchmark).data_dir
    victim = sorted((data / "datasets" / "longvideobench" / "videos").rglob("*.mp4"))[0]
    victim.unlink()
    outcome = run_cell(cfg)
    assert outcome.status == "failed"
    assert outcome.record.error_type == "DataCheckError"  # found by the pre-flight, before the model loads
    assert victim.name in outcome.record.error


def test_impossible_setting_is_recorded_before_loading(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(VideoLLM, "from_spec", lambda *a, **k: pytest.fail("model loaded despite a bad setting"))
    cfg = cell_config(tmp_path, "model=tiny", "method=fastv", "method.k=9", "benchmark=videomme_synth")
    outcome = run_cell(cfg)
    assert outcome.status == "failed" and outcome.record.error_type == "ConfigError"
    assert "k=9" in outcome.record.error


def test_unreachable_budget_is_n_a_in_a_sweep_and_an_error_when_asked_for(tmp_path: Path) -> None:
    """DyCoke cannot go below 25% (one whole frame in four stays): the cell is "n/a" with that reason, nothing is run
    or written, and a sweep holding it still succeeds; asked for alone, it exits non-zero with the reason."""
    from adatp_bench.sweep import format_summary, sweep_failed

    cfg = cell_config(tmp_path, "model=tiny", "method=dycoke", "budget=r10", "benchmark=videomme_synth")
    outcome = run_cell(cfg)
    assert outcome.status == "n/a" and outcome.record is None
    assert "TTM keeps one whole frame in every four" in outcome.error
    assert not (tmp_path / "results" / "runs").exists() or not any((tmp_path / "results" / "runs").iterdir())
    rows = [{"status": "done", "label": "ok cell"}, outcome.as_status()]
    assert not sweep_failed(rows)
    assert "n/a  tiny | dycoke" in format_summary(rows) and "≥ 0.25" in format_summary(rows)
    assert sweep_failed([*rows, {"status": "failed", "label": "x", "error": "boom"}])
    proc = _run_single(tmp_path, "model=tiny", "method=dycoke", "budget=r10", "benchmark=videomme_synth")
    assert proc.returncode == 1 and "cell not applicable: dycoke retention=0.1 is impossible" in proc.stderr


def test_locked_cell_is_reported_busy(tmp_path: Path) -> None:
    cfg = cell_config(tmp_path, "model=tiny", "method=vanilla", "benchmark=videomme_synth")
    from adatp_bench.identity import cell_run_id
    from adatp_bench.report.grid import experiment_cells  # noqa: F401  (import cost outside the lock)

    rid = cell_run_id(cfg)
    with RunDir(Path(cfg.paths.results_dir), rid).lock():
        assert run_cell(cfg).status == "busy"


def test_atomic_write_keeps_old_file_when_interrupted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "record.json"
    atomic_write_text(target, "old")

    def boom(*args: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(KeyboardInterrupt):
        atomic_write_text(target, "new")
    assert target.read_text() == "old"
    assert not list(tmp_path.glob(".record.json.*"))


def test_torn_jsonl_line_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    append_jsonl(path, {"a": 1})
    with open(path, "a") as fh:
        fh.write('{"a": ')
    assert read_jsonl(path) == [{"a": 1}]


@pytest.mark.slow
def test_lmms_eval_cli_with_our_model(tmp_path: Path) -> None:
    """`lmms-eval eval --model adatp_bench` resolves through the entry point and scores with the real task code."""
    from adatp_bench.eval.dataset import ensure_data
    from adatp_bench.eval.tasks import write_task_dir
    from adatp_bench.eval.verify import load_cli_results, verify_results

    data = ensure_data({"benchmark": "videomme", "variant": "synth", "data_dir": str(tmp_path / "data")}).data_dir
    tasks = write_task_dir(data, tmp_path / "tasks", variant="synth", benchmarks=["videomme"])
    out = tmp_path / "out"
    cmd = [
        str(Path(sys.executable).with_name("lmms-eval")),
        "eval",
        "--model",
        "adatp_bench",
        "--model_args",
        "model=tiny,method=fastv,retention=0.5",
        "--tasks",
        "videomme_synth",
        "--include_path",
        str(tasks),
        "--output_path",
        str(out),
        "--batch_size",
        "1",
        "--device",
        "cpu",
    ]
    proc = subprocess.run(
        cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONUNBUFFERED": "1"}
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = load_cli_results(out)
    assert results["model_name"] in {"adatp_bench", "AdatpBenchLMM"} or "adatp" in json.dumps(results["config"])
    values = verify_results(results, ["videomme_synth"])
    assert 0.0 <= values["videomme_synth"] <= 100.0


@pytest.mark.slow
def test_multirun_records_failures_and_goes_on(tmp_path: Path) -> None:
    """A sweep with one impossible cell: the other cells run, the failure is recorded and summarised, and the sweep
    exits non-zero after all of that."""
    cmd = [
        sys.executable,
        "-m",
        "adatp_bench.run",
        "-m",
        "model=tiny",
        "method=fastv",
        "benchmark=videomme_synth",
        "method.retention=0.5,1.5",
        f"paths.root={tmp_path}",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 1, proc.stderr[-3000:]
    log = proc.stdout + proc.stderr
    assert "sweep summary: 1 done, 1 failed" in log
    assert "sweep incomplete: 1 of 2 cells did not finish" in log
    assert "retention=1.5" in log
    records = [json.loads(p.read_text()) for p in (tmp_path / "results" / "runs").glob("*/record.json")]
    assert sorted(r["status"] for r in records) == ["failed", "ok"]


def _run_single(tmp: Path, *overrides: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "adatp_bench.run", f"paths.root={tmp}", *overrides]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp)


def test_single_failing_cell_exits_non_zero_with_the_message(tmp_path: Path) -> None:
    proc = _run_single(tmp_path, "model=tiny", "method=fastv", "method.retention=1.5", "benchmark=videomme_synth")
    assert proc.returncode == 1
    assert "cell failed: ConfigError: retention=1.5 is impossible" in proc.stderr


def test_single_busy_cell_exits_non_zero(tmp_path: Path) -> None:
    """Another process holds the cell: this command did not produce it, so it does not report success."""
    from adatp_bench.identity import cell_run_id

    cfg = cell_config(tmp_path, "model=tiny", "method=vanilla", "benchmark=videomme_synth")
    with RunDir(Path(cfg.paths.results_dir), cell_run_id(cfg)).lock():
        proc = _run_single(tmp_path, "model=tiny", "method=vanilla", "benchmark=videomme_synth")
    assert proc.returncode == 1
    assert "another process holds its lock" in proc.stderr


def test_sampling_requests_are_refused() -> None:
    from adatp_bench.eval.lmms_model import _check_greedy

    _check_greedy("t", {"max_new_tokens": 16, "temperature": 0, "do_sample": False, "num_beams": 1})
    for bad in ({"do_sample": True}, {"temperature": 0.7}, {"num_beams": 4}):
        with pytest.raises(ValueError, match="greedily"):
            _check_greedy("t", bad)


def test_longvideobench_random_fallbacks_are_counted(tmp_path: Path) -> None:
    from adatp_bench.eval.verify import lvb_random_fallback

    assert lvb_random_fallback("¿qué?") and lvb_random_fallback("The best answer is ")
    assert not lvb_random_fallback("The best answer is C.") and not lvb_random_fallback("B")
    cfg = cell_config(tmp_path, "model=tiny", "method=vanilla", "benchmark=longvideobench_val_v_synth")
    rec = run_cell(cfg).record
    rows = read_jsonl(RunDir(Path(cfg.paths.results_dir), rec.run_id).samples_path)
    assert rec.n_random_fallbacks == sum(lvb_random_fallback(r["response"]) for r in rows)


def test_llava_video_cells_get_lmms_evals_llava_vid_prompts(tmp_path: Path) -> None:
    """lmms-eval picks prompt variants by model name; LLaVA-Video asks for `llava_vid` ("The best answer is:")."""
    cfg = cell_config(tmp_path, "model=tiny_video", "method=vanilla", "benchmark=videomme_synth", "limit=1")
    rec = run_cell(cfg).record
    (row,) = read_jsonl(RunDir(Path(cfg.paths.results_dir), rec.run_id).samples_path)
    assert row["prompt"].rstrip().endswith("The best answer is:")
    ov = cell_config(tmp_path, "model=tiny", "method=vanilla", "benchmark=videomme_synth", "limit=1")
    (ov_row,) = read_jsonl(RunDir(Path(ov.paths.results_dir), run_cell(ov).record.run_id).samples_path)
    assert ov_row["prompt"].rstrip().endswith("Answer with the option's letter from the given choices directly.")

"""No cell may score the wrong data: the data is part of a cell's identity, generated data is keyed by its settings,
samples are resumed only for the very document they answered, ``force=true`` re-evaluates everything, failures carry
their root cause, impossible run settings stop at once, and a constant-answer model scores exactly what the
annotations say it must."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import tenacity

from adatp_bench.config import compose
from adatp_bench.errors import DatasetError, root_cause
from adatp_bench.eval.dataset import dataset_fingerprint, ensure_data, load_rows
from adatp_bench.eval.tasks.docs import MLVU_DEV_TASK_TYPES
from adatp_bench.eval.video import sample_frame_indices
from adatp_bench.identity import cell_run_id
from adatp_bench.models.adapter import VideoLLM
from adatp_bench.results import RunDir, append_jsonl, read_jsonl
from adatp_bench.run import run_cell

VIDEOMME = "videomme/videomme/test-00000-of-00001.parquet"


@pytest.fixture
def data(synthetic_data: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "data"
    shutil.copytree(synthetic_data, copy)
    return copy


def local(root: Path, data_dir: Path, *extra: str):
    return compose([f"paths.root={root}", "model=tiny", "method=vanilla", "benchmark=videomme",
                    f"benchmark.data_dir={data_dir}", *extra])  # fmt: skip


def test_the_data_is_part_of_the_run_id(data: Path, tmp_path: Path) -> None:
    annotation = data / VIDEOMME
    before = cell_run_id(local(tmp_path, data))
    frame = pd.read_parquet(annotation)
    frame.to_parquet(annotation)  # rewritten, same content: same cell
    assert cell_run_id(local(tmp_path, data)) == before
    frame.loc[0, "question"] = "A different question?"
    frame.to_parquet(annotation)
    assert cell_run_id(local(tmp_path, data)) != before, "changed data must be a different cell"
    moved = tmp_path / "moved"
    shutil.copytree(data, moved)
    assert cell_run_id(local(tmp_path, moved)) == cell_run_id(local(tmp_path, data)), "paths are not identity"


def test_a_changed_dataset_is_never_skipped_as_done(data: Path, tmp_path: Path) -> None:
    first = run_cell(local(tmp_path, data, "limit=2"))
    assert first.status == "done"
    frame = pd.read_parquet(data / VIDEOMME)
    frame.loc[0, "question"] = "Which colour appears last?"
    frame.to_parquet(data / VIDEOMME)
    again = run_cell(local(tmp_path, data, "limit=2"))
    assert again.status == "done" and again.record.run_id != first.record.run_id
    assert again.record.data["sha256"] == dataset_fingerprint(data / VIDEOMME) != first.record.data["sha256"]
    assert again.record.data["n_docs"] == len(load_rows(data / VIDEOMME))


def test_synthetic_data_is_keyed_by_its_settings(tmp_path: Path) -> None:
    cfgs = {
        n: compose([f"paths.root={tmp_path}", "benchmark=mlvu_dev_synth", f"benchmark.n_items={n}"]) for n in (3, 5)
    }
    refs = {n: ensure_data(cfg.benchmark) for n, cfg in cfgs.items()}
    assert refs[3].data_dir != refs[5].data_dir
    assert {n: len(load_rows(r.annotation)) for n, r in refs.items()} == {3: 3, 5: 5}
    assert cell_run_id(cfgs[3]) != cell_run_id(cfgs[5])
    seeded = compose([f"paths.root={tmp_path}", "benchmark=mlvu_dev_synth", "benchmark.data_seed=7"])
    assert ensure_data(seeded.benchmark).data_dir != refs[3].data_dir


def _count_generate(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record the sample id of every ``VideoLLM.generate`` call (the model still runs)."""
    calls: list[str] = []
    original = VideoLLM.generate

    def counted(self: VideoLLM, *args: object, **kwargs: object) -> object:
        calls.append(str(kwargs["sample_id"]))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(VideoLLM, "generate", counted)
    return calls


def test_a_sample_is_reused_only_for_the_document_it_answered(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = local(tmp_path, data, "limit=3")
    done = run_cell(cfg).record
    run_dir = RunDir(Path(cfg.paths.results_dir), done.run_id)
    rows = read_jsonl(run_dir.samples_path)
    # An earlier attempt's sample for doc 1 was answered for other content: it must not be reused.
    rows[1] = {**rows[1], "doc_hash": "0" * 16, "response": "a stale answer"}
    run_dir.samples_path.write_text("")
    for row in rows:
        append_jsonl(run_dir.samples_path, row)
    run_dir.record_path.unlink()
    calls = _count_generate(monkeypatch)
    again = run_cell(cfg).record
    assert calls == ["videomme_local/1"], "only the document whose stored answer is for other content is re-run"
    assert again.n_samples == 3, "the stale row stays on disk but is not counted"
    scored = [r for r in run_dir.all_samples() if r["doc_hash"] != "0" * 16]
    assert sorted(r["doc_id"] for r in scored) == [0, 1, 2]


def test_force_re_evaluates_every_sample_and_keeps_the_old_ones(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = local(tmp_path, data, "limit=2")
    first = run_cell(cfg).record
    calls = _count_generate(monkeypatch)
    forced = run_cell(local(tmp_path, data, "limit=2", "force=true"))
    assert forced.status == "done" and len(calls) == 2, "force=true evaluates every sample again"
    run_dir = RunDir(Path(cfg.paths.results_dir), first.run_id)
    (superseded,) = (run_dir.path / "superseded").iterdir()
    assert json.loads((superseded / "record.json").read_text())["run_id"] == first.run_id
    assert len(read_jsonl(superseded / "samples.jsonl")) == 2 and len(read_jsonl(run_dir.samples_path)) == 2


def test_root_cause_unwraps_retry_errors_and_chains() -> None:
    @tenacity.retry(stop=tenacity.stop_after_attempt(2))
    def load() -> None:
        raise DatasetError("x.parquet: row question_id='q1' (index 0): column 'answer' is 'E'")

    with pytest.raises(tenacity.RetryError) as info:
        load()
    assert isinstance(root_cause(info.value), DatasetError) and "question_id='q1'" in str(root_cause(info.value))
    try:
        try:
            raise DatasetError("inner cause")
        except DatasetError as inner:
            raise RuntimeError("outer wrapper") from inner
    except RuntimeError as outer:
        assert str(root_cause(outer)) == "inner cause"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("seed=abc", "seed='abc' must be an integer"),
        ("limit=0", "limit=0 must be a positive integer"),
        ("model.num_frames=0", "model.num_frames=0 must be a positive integer"),
        ("benchmark.n_items=0", "benchmark.n_items=0 must be >= 1"),
    ],
)
def test_impossible_run_settings_stop_at_once_with_a_message(override: str, message: str, tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "adatp_bench.run", f"paths.root={tmp_path}", override],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 1
    assert message in proc.stderr and "Traceback" not in proc.stderr + proc.stdout
    assert not list((tmp_path / "results").rglob("samples*.jsonl"))


def _expected_constant_scores(data_dir: Path, answer: str) -> dict[str, float]:
    """What answering ``answer`` everywhere must score, computed from the annotations as each benchmark aggregates."""
    videomme = load_rows(data_dir / VIDEOMME)
    mlvu = load_rows(data_dir / "mlvu/mlvu/test-00000-of-00001.parquet")
    lvb = load_rows(data_dir / "datasets/longvideobench/lvb_val.json")
    per_type = []
    for task_type in MLVU_DEV_TASK_TYPES:  # macro average over all 7 dev types; an absent type counts 0
        rows = [r for r in mlvu if r["task_type"] == task_type]
        per_type.append(sum(r["answer"] == answer for r in rows) / len(rows) if rows else 0.0)
    return {
        "videomme_synth": 100 * sum(r["answer"] == answer for r in videomme) / len(videomme),
        "mlvu_dev_synth": 100 * sum(per_type) / len(per_type),
        "longvideobench_val_v_synth": 100 * sum(chr(65 + r["correct_choice"]) == answer for r in lvb) / len(lvb),
    }


@pytest.mark.parametrize("answer", ["A", "B"])
def test_a_constant_answer_model_scores_what_the_annotations_say(answer: str, tmp_path: Path) -> None:
    records = {}
    for task in ("videomme_synth", "mlvu_dev_synth", "longvideobench_val_v_synth"):
        cfg = compose([f"paths.root={tmp_path}", "model=constant", f"model.answer={answer}", f"benchmark={task}",
                       "benchmark.n_items=8"])  # fmt: skip
        outcome = run_cell(cfg)
        assert outcome.status == "done", outcome.record.error if outcome.record else outcome.error
        records[task] = outcome.record
    data_dir = Path(records["videomme_synth"].data["annotation"]).parents[2]
    expected = _expected_constant_scores(data_dir, answer)
    assert {t: r.score for t, r in records.items()} == pytest.approx(expected)
    assert len({r.score for r in records.values()}) > 1 or answer == "B"  # the scores are not trivially equal


def test_constant_model_refuses_a_pruning_method(tmp_path: Path) -> None:
    outcome = run_cell(compose([f"paths.root={tmp_path}", "model=constant", "method=fastv"]))
    assert outcome.status == "failed" and "takes no pruning method" in outcome.record.error


def test_each_sample_records_the_frames_it_used(tmp_path: Path) -> None:
    cfg = compose([f"paths.root={tmp_path}", "model=tiny", "method=fastv", "benchmark=mlvu_dev_synth"])
    record = run_cell(cfg).record
    for row in read_jsonl(RunDir(Path(cfg.paths.results_dir), record.run_id).samples_path):
        want = sample_frame_indices(row["video_total_frames"], 8).tolist()
        assert row["frame_indices"] == want and len(row["doc_hash"]) == 16

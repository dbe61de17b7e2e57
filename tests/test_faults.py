"""The fault matrix: every way a benchmark's data can be bad gets a named cause before any model loads, and nothing
fails silently, is lost or is counted twice.

Videos: corrupt, truncated ("faststart" mp4 cut short), zero-byte, fake (text named .mp4), missing, and 1-frame (usable:
frames repeat, reported as a warning). Annotations: missing column, answer outside the options, options not a list,
unknown category, non-letter answer, LongVideoBench's correct_choice on an unused option, unreadable file, no rows.
Runs: two cells scoring different data at the same time, and a cell killed by SIGTERM, its data changed, then resumed.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import av
import numpy as np
import pandas as pd
import pytest

from adatp_bench.config import compose
from adatp_bench.eval.check_data import check_dataset
from adatp_bench.eval.dataset import dataset_ref, ensure_data, load_rows
from adatp_bench.eval.synthetic import Scene, VideoSpec, render_scenes
from adatp_bench.models.adapter import VideoLLM
from adatp_bench.results import RunDir, read_jsonl
from adatp_bench.run import run_cell

NUM_FRAMES = 8  # the tiny model's frames per video


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A synthetic data root (8 items of each benchmark) in the real layout, generated once; tests copy it."""
    root = tmp_path_factory.mktemp("pristine")
    ref = ensure_data({"benchmark": "videomme", "variant": "synth", "data_dir": str(root), "n_items": 8})
    return ref.data_dir


@pytest.fixture
def data(pristine: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "data"
    shutil.copytree(pristine, copy)
    return copy


def local_cell(root: Path, data_dir: Path, benchmark: str = "videomme", *extra: str):
    """A cell over ``data_dir`` read as a real (local) benchmark: its identity is the annotation's content."""
    return compose(
        [f"paths.root={root}", "model=tiny", "method=vanilla", f"benchmark={benchmark}",
         f"benchmark.data_dir={data_dir}", *extra]
    )  # fmt: skip


@pytest.fixture
def no_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if a cell loads a model: data faults must stop a cell before that."""
    monkeypatch.setattr(VideoLLM, "from_spec", lambda *a, **k: pytest.fail("a model was loaded despite bad data"))


# -- video faults -------------------------------------------------------------------------------------------------


def _write_mp4(path: Path, frames: np.ndarray, faststart: bool = False) -> None:
    with av.open(str(path), "w", options={"movflags": "faststart"} if faststart else {}) as container:
        stream = container.add_stream("libx264", rate=8)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        for array in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(array, format="rgb24")))
        container.mux(stream.encode())


def _scenes(n: int) -> np.ndarray:
    spec = VideoSpec(width=64, height=48, num_frames=max(n, 6), fps=8)
    frames = render_scenes([Scene(0, n // 2 or 1, "red", "white"), Scene(n // 2 or 1, n, "blue", "yellow")], spec)
    return frames[:n]


def corrupt(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[: len(data) // 2] = np.random.default_rng(0).integers(0, 255, len(data) // 2, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))


def truncated(path: Path) -> None:
    """A faststart mp4 (its index first) cut at 80%: the header still promises 48 frames."""
    _write_mp4(path, _scenes(48), faststart=True)
    path.write_bytes(path.read_bytes()[: int(path.stat().st_size * 0.8)])


FAULTS: dict[str, tuple[Callable[[Path], None], str]] = {
    "corrupt": (corrupt, "cannot decode video"),
    "truncated": (truncated, "is truncated: its header says 48 frames"),
    "zero_byte": (lambda p: p.write_bytes(b""), "cannot decode video"),
    "fake": (lambda p: p.write_text("this is a text file, not a video\n"), "cannot decode video"),
    "missing": (lambda p: p.unlink(), "not found; tried"),
}


def _first_video(data: Path) -> Path:
    return sorted((data / "videomme" / "data").glob("*.mp4"))[0]


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_bad_video_is_named_by_the_check_and_stops_the_cell_before_the_model(
    fault: str, data: Path, tmp_path: Path, no_model: None
) -> None:
    victim = _first_video(data)
    damage, phrase = FAULTS[fault]
    damage(victim)
    cfg = local_cell(tmp_path, data)
    report = check_dataset(dataset_ref(cfg.benchmark), NUM_FRAMES)
    assert not report.ok and list(report.failures) == [victim.stem]
    assert phrase in report.failures[victim.stem] and victim.name in report.failures[victim.stem]
    outcome = run_cell(cfg)
    assert outcome.status == "failed" and outcome.record.error_type == "DataCheckError"
    assert phrase in outcome.record.error and victim.name in outcome.record.error
    run_dir = RunDir(Path(cfg.paths.results_dir), outcome.record.run_id)
    assert not list(run_dir.path.glob("samples*.jsonl")), "no sample may be scored from bad data"


def test_one_frame_video_works_with_repeated_frames_and_is_reported(data: Path, tmp_path: Path) -> None:
    victim = _first_video(data)
    _write_mp4(victim, _scenes(1))
    cfg = local_cell(tmp_path, data, "videomme", "limit=2")
    report = check_dataset(dataset_ref(cfg.benchmark), NUM_FRAMES, limit=2)
    assert report.ok and "1 frame(s), fewer than the 8 sampled" in report.warnings[victim.stem]
    outcome = run_cell(cfg)
    assert outcome.status == "done", outcome.record.error
    assert outcome.record.data["videos_with_repeated_frames"] == [victim.stem]
    rows = read_jsonl(RunDir(Path(cfg.paths.results_dir), outcome.record.run_id).samples_path)
    by_video = {Path(r["video"]).stem: r for r in rows}
    assert by_video[victim.stem]["frame_indices"] == [0] * NUM_FRAMES
    assert by_video[victim.stem]["video_total_frames"] == 1


# -- annotation faults --------------------------------------------------------------------------------------------


def _rewrite(path: Path, change: Callable[[list[dict]], list[dict]], dest: Path | None = None) -> None:
    rows = change(load_rows(path))
    dest = dest or path
    if dest.suffix == ".parquet":
        pd.DataFrame(rows).to_parquet(dest)
    elif dest.suffix == ".jsonl":
        dest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        dest.write_text(json.dumps(rows))


def _set(index: int, **values: object) -> Callable[[list[dict]], list[dict]]:
    def change(rows: list[dict]) -> list[dict]:
        rows[index].update(values)
        return rows

    return change


VIDEOMME = "videomme/videomme/test-00000-of-00001.parquet"
MLVU = "mlvu/mlvu/test-00000-of-00001.parquet"
LVB = "datasets/longvideobench/lvb_val.json"
SCHEMA_FAULTS: dict[str, tuple[str, str, Callable[[list[dict]], list[dict]], str]] = {
    "missing_column": (
        "videomme", VIDEOMME, lambda rows: [{k: v for k, v in r.items() if k != "options"} for r in rows],
        "missing column(s) ['options']",
    ),
    "answer_outside_options": ("videomme", VIDEOMME, _set(1, answer="E"), "column 'answer' is 'E', outside the 4"),
    "options_not_a_list": ("videomme", VIDEOMME, _set(2, options="A. red B. blue"), "column 'options' is 'A. red B."),
    "unknown_category": ("videomme", VIDEOMME, _set(0, domain="Cooking"), "column 'domain' is 'Cooking'"),
    "answer_not_a_letter": ("mlvu_dev", MLVU, _set(3, answer="Yellow"), "column 'answer' is 'Yellow', not an option"),
    "correct_choice_on_unused_option": (
        "longvideobench_val_v", LVB, _set(1, correct_choice=4), "column 'correct_choice' is 4: it points at an unused",
    ),
    "correct_choice_outside": ("longvideobench_val_v", LVB, _set(1, correct_choice=7), "is 7, outside options 0–4"),
}  # fmt: skip


@pytest.mark.parametrize("fault", sorted(SCHEMA_FAULTS))
def test_bad_annotation_row_is_named_by_file_column_row_and_value(
    fault: str, data: Path, tmp_path: Path, no_model: None
) -> None:
    benchmark, relative, change, phrase = SCHEMA_FAULTS[fault]
    extra = []
    annotation = data / relative
    if fault == "options_not_a_list":  # parquet cannot hold a string beside lists in one column; JSON lines can
        _rewrite(annotation, change, annotation.with_suffix(".jsonl"))
        annotation = annotation.with_suffix(".jsonl")
        extra = [f"benchmark.annotation={annotation}"]
    else:
        _rewrite(annotation, change)
    outcome = run_cell(local_cell(tmp_path, data, benchmark, *extra))
    assert outcome.status == "failed" and outcome.record.error_type == "DataCheckError"
    error = outcome.record.error
    assert phrase in error and str(annotation) in error
    if fault != "missing_column":
        assert "row " in error and "(index " in error  # which row: its id column and position


def test_the_check_names_the_row_id(data: Path) -> None:
    _rewrite(data / LVB, _set(1, correct_choice=4))
    report = check_dataset(dataset_ref({"benchmark": "longvideobench_val_v", "data_dir": str(data)}), NUM_FRAMES)
    (problem,) = report.schema
    assert problem.startswith(f"{data / LVB}: row id=") and "(index 1)" in problem


@pytest.mark.parametrize(
    ("damage", "phrase"),
    [
        (lambda p: p.write_bytes(b"PAR1 not really a parquet file"), "cannot read the annotation file"),
        (lambda p: pd.DataFrame([]).to_parquet(p), "holds no rows"),
        (lambda p: p.unlink(), "does not exist"),
    ],
    ids=["unreadable", "no_rows", "missing"],
)
def test_unusable_annotation_file_fails_with_its_path(
    damage: Callable[[Path], None], phrase: str, data: Path, tmp_path: Path, no_model: None
) -> None:
    annotation = data / VIDEOMME
    damage(annotation)
    outcome = run_cell(local_cell(tmp_path, data))
    assert outcome.status == "failed" and outcome.record.error_type in {"DataCheckError", "DatasetError"}
    assert phrase in outcome.record.error and str(annotation) in outcome.record.error


# -- runs over changing data --------------------------------------------------------------------------------------


def _cell_command(root: Path, data_dir: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "adatp_bench.run", f"paths.root={root}", "model=tiny", "method=vanilla",
        "benchmark=videomme", f"benchmark.data_dir={data_dir}", *extra,
    ]  # fmt: skip


def _records(root: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((root / "results" / "runs").glob("*/record.json"))]


@pytest.mark.slow
def test_concurrent_cells_on_different_data_each_score_their_own(pristine: Path, tmp_path: Path) -> None:
    """Two cells with the same benchmark name but different annotations, at once, in one results folder."""
    small = tmp_path / "small"
    shutil.copytree(pristine, small)
    _rewrite(small / VIDEOMME, lambda rows: rows[:3])
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    procs = [
        subprocess.Popen(_cell_command(tmp_path, d), cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)
        for d in (pristine, small)
    ]  # fmt: skip
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    by_data = {r["data"]["annotation"]: r for r in _records(tmp_path)}
    assert by_data[str(pristine / VIDEOMME)]["n_samples"] == 8 and by_data[str(small / VIDEOMME)]["n_samples"] == 3
    for annotation, record in by_data.items():
        assert record["data"]["n_docs"] == len(load_rows(Path(annotation)))
        rows = read_jsonl(tmp_path / "results" / "runs" / record["run_id"] / "samples.jsonl")
        assert all(str(Path(annotation).parent.parent) in r["video"] for r in rows), "scored another cell's videos"


@pytest.mark.slow
def test_sigterm_then_data_change_then_resume_loses_and_duplicates_nothing(pristine: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(pristine, data)
    _rewrite(data / VIDEOMME, lambda rows: rows * 4)  # 32 documents (videos shared): long enough to interrupt
    for i, row in enumerate(rows := load_rows(data / VIDEOMME)):
        row["question_id"] = f"q{i:03d}"
    _rewrite(data / VIDEOMME, lambda _: rows)
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    proc = subprocess.Popen(_cell_command(tmp_path, data), cwd=tmp_path, **quiet)
    runs = tmp_path / "results" / "runs"
    deadline = time.time() + 300
    while time.time() < deadline and not any(len(read_jsonl(p)) >= 3 for p in runs.glob("*/samples.jsonl")):
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    (first_dir,) = [p.parent for p in runs.glob("*/samples.jsonl")]
    answered = read_jsonl(first_dir / "samples.jsonl")
    assert 3 <= len(answered) < 32 and not (first_dir / "record.json").exists()
    original = (data / VIDEOMME).read_bytes()
    _rewrite(data / VIDEOMME, _set(0, question="A changed question?"))  # the data changes under the killed cell
    changed = subprocess.run(_cell_command(tmp_path, data), cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert changed.returncode == 0, changed.stderr[-3000:]
    new = [r for r in _records(tmp_path) if r["run_id"] != first_dir.name]
    assert len(new) == 1 and new[0]["n_samples"] == 32, "changed data is a new cell, scored in full"
    assert read_jsonl(first_dir / "samples.jsonl") == answered, "the killed cell's samples are kept as they were"
    (data / VIDEOMME).write_bytes(original)  # back to the original data: the killed cell resumes
    resumed = subprocess.run(_cell_command(tmp_path, data), cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    record = json.loads((first_dir / "record.json").read_text())
    rows = read_jsonl(first_dir / "samples.jsonl")
    assert record["status"] == "ok" and record["n_samples"] == 32
    assert sorted(r["doc_id"] for r in rows) == list(range(32)), "none lost, none twice"
    assert rows[: len(answered)] == answered, "the samples answered before the kill were reused, not recomputed"

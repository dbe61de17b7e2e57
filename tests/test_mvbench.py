"""MVBench (benchmark=mvbench / mvbench_synth): lmms-eval's MVBench group as one cell, scored by its own code.

The template mirrors upstream; the synthetic set follows the schema and layout; a real cell's score is the mean over
sub-tasks of the accuracy computed by hand from its samples' parsed answers; a malformed row or a missing video stops
the cell before any model loads, naming file, row and field; the real benchmark without data says where to get it;
the MVBench experiments inherit Table 1's and the demo's axes, and the table shows an MVBench column beside FastVID's.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml

from adatp_bench.config import compose
from adatp_bench.errors import ConfigError, DataCheckError, DatasetError, VideoError
from adatp_bench.eval.check_data import check_dataset, require_usable
from adatp_bench.eval.dataset import dataset_identity, dataset_ref, ensure_data, load_rows
from adatp_bench.eval.schema import validate_annotation
from adatp_bench.eval.synthetic import read_manifest, write_synthetic_benchmarks
from adatp_bench.eval.tasks import expected_metric_keys, load_template, write_task_dir
from adatp_bench.eval.tasks.mvbench import (
    SUBTASKS,
    SYNTH_SUBTASKS,
    data_list,
    parsed_answer,
    select_subtasks,
    video_path,
)
from adatp_bench.models.adapter import VideoLLM
from adatp_bench.report import table1
from adatp_bench.report.grid import Cell, experiment_axes, experiment_cells
from adatp_bench.report.published import published_row
from adatp_bench.results import ResultRecord, RunDir, read_jsonl
from adatp_bench.run import run_cell


def _upstream_dir() -> Path:
    import lmms_eval.tasks

    return Path(lmms_eval.tasks.__file__).parent / "mvbench"


class _Loader(yaml.SafeLoader):
    pass


_Loader.add_constructor("!function", lambda loader, node: f"!function {loader.construct_scalar(node)}")


@pytest.fixture(scope="module")
def mvbench_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = tmp_path_factory.mktemp("mvbench_data")
    write_synthetic_benchmarks(data, n_items=3, seed=0, benchmarks=["mvbench"])
    return data


def _ref(data: Path, **extra):
    return dataset_ref({"benchmark": "mvbench", "variant": "local", "data_dir": str(data), **extra})


def _gold(row: dict) -> str:
    return "ABCDE"[row["candidates"].index(row["answer"])]


# -- upstream definitions ---------------------------------------------------------------------------------------------


def test_subtasks_and_template_mirror_upstream() -> None:
    group = yaml.load((_upstream_dir() / "mvbench.yaml").read_text(), Loader=_Loader)
    assert [t.removeprefix("mvbench_") for t in group["task"]] == list(SUBTASKS)
    assert set(data_list()) == set(SUBTASKS) and set(SYNTH_SUBTASKS) <= set(SUBTASKS)
    upstream = yaml.load((_upstream_dir() / "_default_template_yaml").read_text(), Loader=_Loader)
    upstream = {k: v.replace("!function utils.", "!function lmms_eval.tasks.mvbench.utils.") if isinstance(v, str)
                else v for k, v in upstream.items()}  # fmt: skip
    upstream["metric_list"][0]["aggregation"] = "!function lmms_eval.tasks.mvbench.utils.mvbench_aggregate_results"
    template = load_template("mvbench")
    ours = {k: f"!function {v}" if type(v).__name__ == "FunctionRef" else v for k, v in template.items()}
    ours["metric_list"] = [{**m, "aggregation": f"!function {m['aggregation']}"} for m in ours["metric_list"]]
    replaced = {"dataset_path", "dataset_kwargs", "doc_to_visual", "process_docs"}
    for key, value in upstream.items():
        if key not in replaced:
            assert ours.get(key) == value, f"key {key!r} differs from upstream _default_template_yaml"
    assert set(ours) - set(upstream) <= replaced | {"test_split", "lmms_eval_specific_kwargs"}
    for sub in SUBTASKS:  # what every upstream sub-task YAML adds to the template
        task = yaml.load((_upstream_dir() / f"mvbench_{sub}.yaml").read_text(), Loader=_Loader)
        assert task["test_split"] == ours["test_split"] and task["dataset_name"] == sub
        assert task["lmms_eval_specific_kwargs"]["default"] == {
            "sub_task": sub, **ours["lmms_eval_specific_kwargs"]["default"]
        }
    assert expected_metric_keys(["mvbench_synth", "mvbench_local"]) == {
        "mvbench_synth": ["mvbench_accuracy,none"], "mvbench_local": ["mvbench_accuracy,none"]
    }  # fmt: skip
    with pytest.raises(ConfigError, match="write_mvbench_task_dir"):
        write_task_dir("/nonexistent", "/nonexistent", benchmarks=["mvbench"])


def test_parsed_answer_is_the_letter_upstream_scores() -> None:
    from lmms_eval.tasks.mvbench.utils import mcq_acc

    for response, letter in [("B", "B"), ("(C) red", "C"), ("D. blue", "D"), ("Based on a video", "A"), ("zz", None)]:
        assert parsed_answer(response) == (letter or response)
        assert [L for L in "ABCDE" if mcq_acc(L, response)] == ([letter] if letter else [])


# -- synthetic data, schema, selection, identity ----------------------------------------------------------------------


def test_synthetic_set_passes_the_schema(mvbench_data: Path) -> None:
    ref = _ref(mvbench_data, subtasks=list(SYNTH_SUBTASKS))
    assert validate_annotation("mvbench", ref.annotation) == 3 + 4 + 5
    report = check_dataset(ref, 8)
    assert report.ok and report.rows == report.videos == 12 and not report.warnings, report.summary()
    manifest = read_manifest(mvbench_data)["benchmarks"]["mvbench"]
    for sub, annotation in zip(ref.subtasks, ref.annotation_files(), strict=True):
        rows = load_rows(annotation)
        letters = [_gold(r) for r in rows]
        assert letters == manifest["subtasks"][sub]["answers"] and "A" in letters and set(letters) != {"A"}
        assert all(video_path(ref.video_dir, sub, r["video"]).is_file() for r in rows)
        assert video_path(ref.video_dir, sub, rows[0]["video"]).parent == ref.video_dir / data_list()[sub]
    assert check_dataset(ref, 8, limit=2).rows == 6  # limit applies per sub-task, as lmms-eval's does in a group


def test_subtask_selection_is_checked_and_part_of_the_identity(mvbench_data: Path) -> None:
    assert select_subtasks(None, "local") == SUBTASKS and select_subtasks(None, "synth") == SYNTH_SUBTASKS
    chosen = select_subtasks(["fine_grained_pose", "action_sequence"], "synth")
    assert chosen == ("action_sequence", "fine_grained_pose")  # upstream order, whatever the order asked
    for bad in (["nope"], [], ["action_sequence", "action_sequence"], ["moving_count"]):
        with pytest.raises(ConfigError, match="subtasks"):
            select_subtasks(bad, "synth")
    full = {"benchmark": "mvbench", "variant": "local", "data_dir": str(mvbench_data), "subtasks": list(SYNTH_SUBTASKS)}
    some = {**full, "subtasks": ["object_shuffle"]}
    assert dataset_identity(full)["sha256"] == dataset_identity(some)["sha256"]
    assert dataset_identity(full) != dataset_identity(some)


# -- a real cell -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "n_samples"),
    [
        (["model=tiny", "method=fastv", "budget=r25", "limit=4"], 3 + 4 + 4),
        (["model=constant", "model.answer=A", "method=vanilla"], 3 + 4 + 5),  # a score known from the data alone
    ],
    ids=["tiny-fastv", "constant-A"],
)
def test_cell_score_is_the_mean_of_sub_task_accuracies_from_parsed_answers(
    tmp_path: Path, overrides: list[str], n_samples: int
) -> None:
    cfg = compose([f"paths.root={tmp_path}", "benchmark=mvbench_synth", *overrides])
    outcome = run_cell(cfg)
    assert outcome.status == "done", outcome.record.error if outcome.record else outcome.error
    rec = outcome.record
    assert rec.task == "mvbench_synth" and rec.n_samples == n_samples
    run_dir = RunDir(Path(cfg.paths.results_dir), rec.run_id)
    parsed = json.loads((run_dir.path / "parsed.json").read_text())
    samples = read_jsonl(run_dir.samples_path)
    assert len(parsed) == len(samples) == rec.n_samples
    json_dir = Path(rec.data["annotation"])
    accuracies = {}
    for sub in SYNTH_SUBTASKS:
        task = f"mvbench_{sub}_synth"
        gold = [_gold(r) for r in load_rows(json_dir / f"{sub}.json")]
        mine = [s for s in samples if s["task"] == task and s["response"] != ""]  # upstream skips empty answers
        right = sum(parsed[f"{task}|{s['doc_id']}|{s['doc_hash']}"] == gold[s["doc_id"]] for s in mine)
        accuracies[task] = 100.0 * right / len(mine) if mine else 0.0
        assert rec.metrics[f"{task}/mvbench_accuracy,none"] == pytest.approx(accuracies[task])
    assert rec.score == pytest.approx(sum(accuracies.values()) / len(accuracies))
    if "model=constant" in overrides:  # always "A": a score above 0, and a mean over sub-tasks, not over questions
        golds = [_gold(r) for sub in SYNTH_SUBTASKS for r in load_rows(json_dir / f"{sub}.json")]
        assert 0 < rec.score < 100 and rec.score != pytest.approx(100 * golds.count("A") / len(golds))
        assert set(parsed.values()) == {"A"}
    assert rec.metrics["mvbench_accuracy,none"] == pytest.approx(rec.score)
    correct = json.loads((run_dir.path / "correct.json").read_text())
    assert sum(correct.values()) == sum(p == _gold_of(json_dir, k) for k, p in parsed.items())


def _gold_of(json_dir: Path, key: str) -> str:
    task, doc_id, _ = key.split("|")
    sub = task.removeprefix("mvbench_").removesuffix("_synth")
    return _gold(load_rows(json_dir / f"{sub}.json")[int(doc_id)])


# -- bad data fails before the model loads -----------------------------------------------------------------------------


@pytest.fixture
def broken(mvbench_data: Path, tmp_path: Path) -> Path:
    data = tmp_path / "data"
    shutil.copytree(mvbench_data, data)
    return data


def _rewrite(data: Path, sub: str, index: int, **change) -> Path:
    path = data / "mvbench_video" / "json" / f"{sub}.json"
    rows = json.loads(path.read_text())
    for key, value in change.items():
        if value is None:
            rows[index].pop(key)
        else:
            rows[index][key] = value
    path.write_text(json.dumps(rows))
    return path


def test_malformed_rows_and_missing_videos_are_named(broken: Path) -> None:
    missing_field = _rewrite(broken, "action_sequence", 1, question=None)
    bad_answer = _rewrite(broken, "object_shuffle", 0, answer="B")
    video = broken / "mvbench_video" / data_list()["fine_grained_pose"] / "synth_fine_grained_pose_0002.mp4"
    video.unlink()
    with pytest.raises(DataCheckError) as info:
        require_usable(check_dataset(_ref(broken, subtasks=list(SYNTH_SUBTASKS)), 8))
    text = str(info.value)
    assert f"{missing_field}: row video='synth_action_sequence_0001.mp4' (index 1): column 'question' is None" in text
    assert f"{bad_answer}: row video='synth_object_shuffle_0000.mp4' (index 0): column 'answer' is 'B'" in text
    assert "option text, not a letter" in text
    assert f"mvbench fine_grained_pose: video '{video.name}' not found" in text and str(video) in text
    with pytest.raises(DatasetError, match=r"(?s)action_sequence.json.*object_shuffle.json: 1 schema problem.*index 0"):
        validate_annotation("mvbench", bad_answer.parent)
    with pytest.raises(VideoError, match="not found"):
        video_path(broken / "mvbench_video", "fine_grained_pose", video.name)


def test_unreadable_json_files_are_each_named(broken: Path) -> None:
    json_dir = broken / "mvbench_video" / "json"
    (json_dir / "action_sequence.json").write_text('[{"video": "x.mp4",')
    (json_dir / "object_shuffle.json").write_text('{"video": "x.mp4"}')
    (json_dir / "fine_grained_pose.json").write_text('[{"video": "x.mp4"}, "oops"]')
    report = check_dataset(_ref(broken, subtasks=list(SYNTH_SUBTASKS)), 8)
    assert not report.ok and report.rows == 0
    assert report.schema == [
        f"{json_dir / 'action_sequence.json'}: not valid JSON (Expecting property name enclosed in double quotes: "
        "line 1 column 20 (char 19))",
        f"{json_dir / 'object_shuffle.json'}: a JSON dict, not a list of rows (MVBench's json/<sub_task>.json)",
        f"{json_dir / 'fine_grained_pose.json'}: rows at index [1] are not JSON objects (1 in all)",
    ]
    with pytest.raises(DatasetError, match=r"object_shuffle.json: a JSON dict"):
        validate_annotation("mvbench", json_dir / "object_shuffle.json")


def test_a_bad_row_fails_the_cell_before_the_model_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(VideoLLM, "from_spec", lambda *a, **k: pytest.fail("model loaded despite bad data"))
    cfg = compose([f"paths.root={tmp_path}", "model=tiny", "method=vanilla", "benchmark=mvbench_synth"])
    ref = ensure_data(cfg.benchmark)
    path = _rewrite(ref.data_dir, "fine_grained_pose", 2, candidates=["only one"])
    outcome = run_cell(cfg)
    assert outcome.status == "failed" and outcome.record.error_type == "DataCheckError"
    assert str(path) in outcome.record.error and "index 2" in outcome.record.error
    assert "column 'candidates'" in outcome.record.error


def test_real_mvbench_without_data_says_how_to_get_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(VideoLLM, "from_spec", lambda *a, **k: pytest.fail("model loaded without data"))
    cfg = compose([f"paths.root={tmp_path}", "model=tiny", "method=vanilla", "benchmark=mvbench",
                   f"benchmark.data_dir={tmp_path / 'hf'}"])  # fmt: skip
    for call in (ensure_data, dataset_identity):
        with pytest.raises(DatasetError) as info:
            call(cfg.benchmark)
        message = str(info.value)
        assert "MVBench is not here" in message and str(tmp_path / "hf" / "mvbench_video" / "json") in message
        assert "huggingface-cli download OpenGVLab/MVBench --repo-type dataset --revision video" in message
    outcome = run_cell(cfg)
    assert outcome.status == "failed" and "MVBench is not here" in (outcome.error or outcome.record.error)


# -- experiments and the table -----------------------------------------------------------------------------------------


def test_mvbench_experiments_inherit_table1_and_demo() -> None:
    _, table1_axes = experiment_axes("table1")
    _, demo_axes = experiment_axes("demo")
    assert experiment_axes("mvbench")[1] == [*table1_axes[:-1], ["benchmark=mvbench"]]
    assert experiment_axes("table1_mvbench")[1] == [*table1_axes[:-1], [*table1_axes[-1], "benchmark=mvbench"]]
    assert experiment_axes("mvbench_demo")[1] == [*demo_axes[:-1], ["benchmark=mvbench_synth"]]
    assert compose(["experiment=mvbench_demo"]).experiment_name == "mvbench_demo"


def _record(cell: Cell, score: float) -> ResultRecord:
    """A finished full-size cell standing in for a real run (no weights here): the score is a test input."""
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
        efficiency={"paper_tflops": 8.0, "pct_flops_of_vanilla": 17.0, "latency_ms": {"prefill_ms": 100.0}},
    )


@pytest.mark.parametrize("experiment", ["mvbench", "table1_mvbench"])
def test_table_has_an_mvbench_column_beside_fastvid(tmp_path: Path, experiment: str) -> None:
    """An MVBench column with FastVID's printed MVBench beside it; the published Avg averages the same benchmarks as
    ours (FastVID's printed four-benchmark Avg for all four; the MVBench score alone for MVBench alone)."""
    overrides = ["model=llava_ov_7b", "method=vanilla,fastvid", "budget=r20"]
    cells = experiment_cells(experiment, overrides)
    ours = {"videomme": 57.0, "mlvu_dev": 62.0, "longvideobench_val_v": 55.0, "mvbench": 54.0}
    results = tmp_path / "runs"
    for cell in cells:
        RunDir(results, cell.settings_id).write_record(_record(cell, ours[str(cell.config.benchmark.benchmark)]))
    out = tmp_path / "table"
    table1.main(["--experiment", experiment, "--results", str(results), "--out", str(out), *overrides])
    csv = pd.read_csv(out / "table1.csv").set_index("method")
    pub = published_row("llava_ov_7b", "fastvid", "20%")
    assert pub is not None and pub["scores"]["mvbench"] == 56.3  # FastVID Table 1, 19.9%
    fastvid = csv.loc["fastvid"]
    assert fastvid["MVBench"] == 54.0 and fastvid["published MVBench"] == 56.3
    assert fastvid["Δ MVBench"] == pytest.approx(54.0 - 56.3)
    benches = {str(c.config.benchmark.benchmark) for c in cells}
    mine = sum(ours[b] for b in benches) / len(benches)
    published = pub["avg4"] if len(benches) == 4 else 56.3
    assert fastvid["Avg"] == pytest.approx(mine) and fastvid["published Avg"] == pytest.approx(published)
    assert fastvid["Δ Avg"] == pytest.approx(mine - published)
    assert "MVBench" in (out / "table1.md").read_text().split("## Beside the paper", 1)[0]

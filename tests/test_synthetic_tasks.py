"""Synthetic data, rendered offline tasks, and the real lmms-eval pipeline on them (adatp_bench.eval)."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from adatp_bench.errors import ConfigError, DatasetError, EvaluationError, VideoError
from adatp_bench.eval import visuals
from adatp_bench.eval.synthetic import read_manifest, write_synthetic_benchmarks
from adatp_bench.eval.tasks import (
    BENCHMARKS,
    TEMPLATE_DIR,
    UPSTREAM,
    all_task_names,
    expected_metric_keys,
    load_template,
    write_task_dir,
)
from adatp_bench.eval.tasks.docs import MLVU_DEV_TASK_TYPES, longvideobench_check_docs, mlvu_dev_check_docs
from adatp_bench.eval.verify import count_empty_responses, load_cli_results, to_percent, verify_results
from adatp_bench.eval.video import load_video_frames

SYNTH_TASKS = ["videomme_synth", "mlvu_dev_synth", "longvideobench_val_v_synth"]
LMMS_EVAL_CLI = Path(sys.executable).with_name("lmms-eval")


# -- helpers: ground truth straight from the written files, and the expected scores of an always-"A" model ------------


def _annotations(data_dir: Path, benchmark: str) -> pd.DataFrame:
    path = data_dir / BENCHMARKS[benchmark].annotation
    return pd.DataFrame(json.loads(path.read_text())) if path.suffix == ".json" else pd.read_parquet(path)


def expected_always_a(data_dir: Path) -> dict[str, float]:
    """Scores of a model answering "A" to everything, derived from the ground truth with the upstream definitions."""
    vm = _annotations(data_dir, "videomme")
    videomme = 100.0 * float((vm["answer"] == "A").mean())  # micro accuracy, percent

    mlvu = _annotations(data_dir, "mlvu_dev")
    per_type = {t: 100.0 * float((g["answer"] == "A").mean()) for t, g in mlvu.groupby("task_type")}
    mlvu_score = sum(per_type.get(t, 0.0) for t in MLVU_DEV_TASK_TYPES) / len(MLVU_DEV_TASK_TYPES)  # absent -> 0

    lvb = _annotations(data_dir, "longvideobench_val_v")
    lvb_acc = round(float((lvb["correct_choice"] == 0).mean()), 5)  # fraction; upstream rounds to 5 decimals
    return {"videomme_synth": videomme, "mlvu_dev_synth": mlvu_score, "longvideobench_val_v_synth": lvb_acc}


def _simple_evaluate(include_path: Path, tasks: list[str], **model_args: Any) -> dict[str, Any]:
    from lmms_eval import evaluator
    from lmms_eval.tasks import TaskManager

    manager = TaskManager("WARNING", include_path=str(include_path), include_defaults=False)
    return evaluator.simple_evaluate(
        model="dummy",
        model_args=",".join(f"{k}={v}" for k, v in model_args.items()),
        tasks=tasks,
        task_manager=manager,
        bootstrap_iters=0,
        log_samples=True,
        process_docs_parallel=1,
        random_seed=0,
        numpy_random_seed=1234,
        torch_random_seed=1234,
    )


# -- generator --------------------------------------------------------------------------------------------------------


def test_generator_is_deterministic_and_answers_are_mixed(synthetic_data: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    manifest = write_synthetic_benchmarks(again, n_items=8, seed=0)
    assert manifest == read_manifest(synthetic_data)  # relative paths only, so equal across directories
    for name in UPSTREAM:
        pd.testing.assert_frame_equal(_annotations(again, name), _annotations(synthetic_data, name))
        answers = manifest["benchmarks"][name]["answers"]
        assert "A" in answers and set(answers) != {"A"}, f"{name}: answers must mix A and non-A, got {answers}"
    video = next(iter(manifest["videos"]))
    np.testing.assert_array_equal(load_video_frames(again / video, 4), load_video_frames(synthetic_data / video, 4))
    other = write_synthetic_benchmarks(tmp_path / "seed1", n_items=8, seed=1)
    assert other["benchmarks"] != manifest["benchmarks"]


def test_videos_have_the_scene_changes_the_manifest_records(synthetic_data: Path) -> None:
    manifest = read_manifest(synthetic_data)
    for rel, info in list(manifest["videos"].items())[:4]:
        frames = load_video_frames(synthetic_data / rel, info["num_frames"]).astype(float)  # every frame, in order
        diffs = np.abs(np.diff(frames, axis=0)).mean(axis=(1, 2, 3))
        cuts = sorted(int(i) + 1 for i in np.argsort(diffs)[-(len(info["scene_starts"]) - 1) :])
        assert cuts == info["scene_starts"][1:], rel  # the largest frame differences are the scene cuts


def test_make_synthetic_script(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "make_synthetic", Path(__file__).parents[1] / "scripts/make_synthetic.py"
    )
    assert spec is not None and spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    assert (
        script.main(["--out", str(tmp_path / "d"), "--n-items", "2", "--seed", "3", "--tasks-out", str(tmp_path / "t")])
        == 0
    )
    manifest = read_manifest(tmp_path / "d")
    assert (manifest["seed"], manifest["n_items"]) == (3, 2)
    assert sorted(p.name for p in (tmp_path / "t").glob("*.yaml")) == sorted(f"{t}.yaml" for t in SYNTH_TASKS)
    assert "videomme: 2 items" in capsys.readouterr().out


def test_schemas_match_upstream(synthetic_data: Path) -> None:
    from lmms_eval.tasks.videomme import utils as vm_utils

    vm = _annotations(synthetic_data, "videomme")
    assert set(vm.columns) == {"video_id", "duration", "domain", "sub_category", "url", "videoID", "question_id",
                               "task_type", "question", "options", "answer"}  # fmt: skip
    assert set(vm["duration"]) <= set(vm_utils.VIDEO_TYPE) and set(vm["domain"]) <= set(vm_utils.CATEGORIES)
    assert set(vm["sub_category"]) <= set(vm_utils.SUB_CATEGORIES)
    assert set(vm["task_type"]) <= set(vm_utils.TASK_CATEGORIES)
    assert all(
        opt.startswith(f"{letter}. ") for opts in vm["options"] for letter, opt in zip("ABCD", opts, strict=True)
    )

    mlvu = _annotations(synthetic_data, "mlvu_dev")
    assert set(mlvu.columns) == {
        "video_name",
        "duration",
        "question",
        "candidates",
        "answer",
        "task_type",
        "question_id",
    }
    assert set(mlvu["task_type"]) <= set(MLVU_DEV_TASK_TYPES)
    assert all("\n(A) " in q for q in mlvu["question"])  # options are part of the question, as upstream expects

    lvb = _annotations(synthetic_data, "longvideobench_val_v")
    assert {"video_id", "question", "question_wo_referring_query", "candidates", "correct_choice", "position",
            "topic_category", "question_category", "level", "id", "video_path", "subtitle_path", "duration_group",
            "starting_timestamp_for_subtitles", "duration", "view_count",
            *(f"option{i}" for i in range(5))} == set(lvb.columns)  # fmt: skip


def test_upstream_aggregation_accepts_every_mlvu_dev_type_and_rejects_others() -> None:
    """Documents the KeyError trap that our process_docs check turns into an early DatasetError."""
    from lmms_eval.tasks.mlvu.utils import mlvu_aggregate_results_dev

    rows = [{"task_type": t, "pred_answer": "A", "answer": "A"} for t in MLVU_DEV_TASK_TYPES]
    assert mlvu_aggregate_results_dev(rows) == pytest.approx(100.0)
    with pytest.raises(KeyError):
        mlvu_aggregate_results_dev([{"task_type": "sportsQA", "pred_answer": "A", "answer": "A"}])
    import datasets

    with pytest.raises(DatasetError, match="sportsQA"):
        mlvu_dev_check_docs(datasets.Dataset.from_list([{"video_name": "v.mp4", "question": "q", "answer": "A",
                                                          "task_type": "sportsQA"}]))  # fmt: skip


# -- templates and rendering ------------------------------------------------------------------------------------------


class _UpstreamLoader(yaml.SafeLoader):
    pass


_UpstreamLoader.add_constructor("!function", lambda loader, node: "!function " + loader.construct_scalar(node))


def _normalise(value: Any, module: str) -> Any:
    """Function references as text "!function <absolute module>.<name>", recursively."""
    if isinstance(value, dict):
        return {k: _normalise(v, module) for k, v in value.items()}
    if isinstance(value, list):
        return [_normalise(v, module) for v in value]
    if type(value).__name__ == "FunctionRef":  # ours: already absolute
        return f"!function {value}"
    if isinstance(value, str) and value.startswith("!function utils."):  # upstream: relative to its own directory
        return value.replace("!function utils.", f"!function {module}utils.")
    return value


@pytest.mark.parametrize("benchmark", list(UPSTREAM))
def test_templates_mirror_upstream_yaml(benchmark: str) -> None:
    import lmms_eval.tasks

    subdir = {"videomme": "videomme", "mlvu_dev": "mlvu", "longvideobench_val_v": "longvideobench"}[benchmark]
    upstream_file = Path(lmms_eval.tasks.__file__).parent / subdir / f"{benchmark}.yaml"
    module = f"lmms_eval.tasks.{subdir}."
    upstream = _normalise(yaml.load(upstream_file.read_text(), Loader=_UpstreamLoader), module)  # SafeLoader subclass
    ours = _normalise(load_template(benchmark), module)
    replaced = {"task", "dataset_path", "dataset_kwargs", "doc_to_visual", "process_docs"}
    for key, value in upstream.items():
        if key not in replaced:
            assert ours.get(key) == value, f"{benchmark}: key {key!r} differs from upstream {upstream_file}"
    assert set(ours) - set(upstream) <= replaced, "templates add nothing but the replaced keys"
    assert ours["doc_to_visual"].startswith("!function adatp_bench.eval.visuals.")


def test_rendered_dir_indexes_exactly_our_tasks(synthetic_tasks: Path) -> None:
    from lmms_eval.tasks import TaskManager

    assert sorted(
        TaskManager("WARNING", include_path=str(synthetic_tasks), include_defaults=False).all_tasks
    ) == sorted(SYNTH_TASKS)
    # The templates themselves are not tasks (no `task:` key), so pointing lmms-eval at them finds nothing.
    assert TaskManager("WARNING", include_path=str(TEMPLATE_DIR), include_defaults=False).all_tasks == []
    for task in SYNTH_TASKS:
        text = (synthetic_tasks / f"{task}.yaml").read_text()
        assert "video_dir: /" in text and "data_files:" in text


def test_write_task_dir_reports_missing_files(synthetic_data: Path, tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="videomme annotations"):
        write_task_dir(tmp_path / "empty", tmp_path / "tasks", benchmarks=["videomme"])
    with pytest.raises(ConfigError):
        write_task_dir(synthetic_data, tmp_path / "tasks", benchmarks=["mvbench"])
    with pytest.raises(DatasetError, match="videos"):
        write_task_dir(synthetic_data, tmp_path / "tasks", video_dirs={"mlvu_dev": tmp_path / "nowhere"})


def test_expected_metric_keys_cover_all_tasks() -> None:
    keys = expected_metric_keys()
    assert set(keys) == set(all_task_names())
    assert keys["videomme_local"] == ["videomme_perception_score,none"]
    assert keys["mlvu_dev_synth"] == ["mlvu_percetion_score,none"]
    assert expected_metric_keys(["longvideobench_val_v"]) == {"longvideobench_val_v": ["lvb_acc,none"]}


# -- the real lmms-eval pipeline ---------------------------------------------------------------------------------------


def test_round_trip_dummy_model_exact_scores(synthetic_data: Path, synthetic_tasks: Path) -> None:
    """Real simple_evaluate + upstream scoring; the dummy model decodes 4 frames per video via our doc_to_visual."""
    results = _simple_evaluate(synthetic_tasks, SYNTH_TASKS, decode_num_frames=4)
    scores = verify_results(results, SYNTH_TASKS, max_empty_responses=0)
    expected = expected_always_a(synthetic_data)
    assert scores == pytest.approx(expected, abs=1e-9)
    assert 0 < scores["videomme_synth"] < 100 and 0 < scores["mlvu_dev_synth"] < 100
    assert to_percent("longvideobench_val_v_synth", scores["longvideobench_val_v_synth"]) == pytest.approx(
        100 * expected["longvideobench_val_v_synth"]
    )
    assert count_empty_responses(results) == dict.fromkeys(SYNTH_TASKS, 0)
    n_items = read_manifest(synthetic_data)["n_items"]
    assert {t: len(results["samples"][t]) for t in SYNTH_TASKS} == dict.fromkeys(SYNTH_TASKS, n_items)
    assert "videomme_perception_score_stderr_clustered,none" in results["results"]["videomme_synth"]  # cluster_key


def test_local_variant_accepts_raw_lvb_json_without_option_columns(synthetic_data: Path, tmp_path: Path) -> None:
    """The raw hub lvb_val.json has only `candidates`; our process_docs derives upstream's option0..option4."""
    raw = [
        {k: v for k, v in row.items() if not k.startswith("option")}
        for row in json.loads((synthetic_data / BENCHMARKS["longvideobench_val_v"].annotation).read_text())
    ]
    annotation = tmp_path / "lvb_val.json"
    annotation.write_text(json.dumps(raw))
    include = write_task_dir(
        synthetic_data,
        tmp_path / "tasks",
        benchmarks=["longvideobench_val_v"],
        annotations={"longvideobench_val_v": annotation},
    )
    results = _simple_evaluate(include, ["longvideobench_val_v_local"])
    score = verify_results(results, ["longvideobench_val_v_local"])["longvideobench_val_v_local"]
    assert score == pytest.approx(expected_always_a(synthetic_data)["longvideobench_val_v_synth"], abs=1e-9)


def test_missing_video_raises_video_error_through_lmms_eval(synthetic_data: Path, tmp_path: Path) -> None:
    """No sys.exit, no swallowed error: simple_evaluate propagates our VideoError naming the file."""
    data = tmp_path / "data"
    shutil.copytree(synthetic_data, data)
    row = _annotations(data, "videomme").iloc[0]
    (data / BENCHMARKS["videomme"].video_subdir / f"{row['videoID']}.mp4").unlink()
    include = write_task_dir(data, tmp_path / "tasks", variant="synth", benchmarks=["videomme"])
    with pytest.raises(VideoError, match=row["videoID"]):
        _simple_evaluate(include, ["videomme_synth"], decode_num_frames=4)


# -- our doc_to_visual -------------------------------------------------------------------------------------------------


def _kwargs(tasks_dir: Path, task: str) -> dict[str, Any]:
    class _Loader(yaml.SafeLoader):
        pass

    _Loader.add_constructor("!function", lambda loader, node: loader.construct_scalar(node))
    config = yaml.load((tasks_dir / f"{task}.yaml").read_text(), Loader=_Loader)  # a SafeLoader subclass
    return config["lmms_eval_specific_kwargs"]["default"]


DOC_TO_VISUAL = {
    "videomme": (visuals.videomme_doc_to_visual, "videoID", ".mp4"),
    "mlvu_dev": (visuals.mlvu_dev_doc_to_visual, "video_name", ""),
    "longvideobench_val_v": (visuals.longvideobench_doc_to_visual, "video_path", ""),
}


@pytest.mark.parametrize("benchmark", list(UPSTREAM))
def test_doc_to_visual_resolves_missing_and_corrupt(benchmark: str, synthetic_data: Path, tmp_path: Path) -> None:
    fn, column, suffix = DOC_TO_VISUAL[benchmark]
    bench = BENCHMARKS[benchmark]
    doc = _annotations(synthetic_data, benchmark).iloc[0].to_dict()
    good = fn(doc, {"video_dir": str(synthetic_data / bench.video_subdir)})
    assert good == [str((synthetic_data / bench.video_subdir / f"{doc[column]}{suffix}").resolve())]

    video_dir = tmp_path / "videos"
    video_dir.mkdir()
    with pytest.raises(VideoError, match=str(doc[column])):  # missing
        fn(doc, {"video_dir": str(video_dir)})
    (video_dir / f"{doc[column]}{suffix}").write_bytes(os.urandom(2048))  # corrupt
    with pytest.raises(VideoError) as info:
        fn(doc, {"video_dir": str(video_dir)})
    assert f"{doc[column]}{suffix}" in str(info.value) and "Invalid data" in str(info.value)


def test_doc_to_visual_uses_video_root_env_when_nothing_is_baked(
    synthetic_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    doc = _annotations(synthetic_data, "mlvu_dev").iloc[0].to_dict()
    monkeypatch.delenv(visuals.VIDEO_ROOT_ENV, raising=False)
    with pytest.raises(VideoError, match=visuals.VIDEO_ROOT_ENV):
        visuals.mlvu_dev_doc_to_visual(doc)
    monkeypatch.setenv(visuals.VIDEO_ROOT_ENV, str(synthetic_data))
    assert visuals.mlvu_dev_doc_to_visual(doc) == [str((synthetic_data / "mlvu" / doc["video_name"]).resolve())]
    unbaked = write_task_dir(synthetic_data, tmp_path / "tasks", benchmarks=["mlvu_dev"], bake_video_dirs=False)
    assert "video_dir" not in (unbaked / "mlvu_dev_local.yaml").read_text()
    with pytest.raises(DatasetError, match="video_name"):
        visuals.mlvu_dev_doc_to_visual({"question": "q"})


def test_lvb_process_docs_rejects_out_of_range_choice() -> None:
    import datasets

    row = {"id": "x_0", "video_path": "x.mp4", "question": "q", "correct_choice": 3, "duration_group": 15,
           "question_category": "S2E", "candidates": ["a", "b", "c"]}  # fmt: skip
    with pytest.raises(DatasetError, match="x_0"):
        longvideobench_check_docs(datasets.Dataset.from_list([row]))
    filled = longvideobench_check_docs(datasets.Dataset.from_list([{**row, "correct_choice": 2}]))
    assert [filled[0][f"option{i}"] for i in range(5)] == ["a", "b", "c", "N/A", "N/A"]


# -- verify -----------------------------------------------------------------------------------------------------------


def _fake_results() -> dict[str, Any]:
    return {
        "results": {
            "videomme_synth": {"alias": "videomme_synth", "videomme_perception_score,none": 50.0},
            "longvideobench_val_v_synth": {"lvb_acc,none": 0.25, "submission,none": []},
        },
        "samples": {"videomme_synth": [{"filtered_resps": ["A"]}, {"filtered_resps": [" "]}, {"resps": [[""]]}]},
    }


def test_verify_results_returns_values_and_counts_empty() -> None:
    results = _fake_results()
    assert verify_results(results, ["videomme_synth", "longvideobench_val_v_synth"]) == {
        "videomme_synth": 50.0,
        "longvideobench_val_v_synth": 0.25,
    }
    assert count_empty_responses(results) == {"videomme_synth": 2}
    with pytest.raises(EvaluationError, match="empty responses"):
        verify_results(results, ["videomme_synth"], max_empty_responses=1)
    assert to_percent("longvideobench_val_v", 0.25) == 25.0 and to_percent("mlvu_dev_local", 30.0) == 30.0


@pytest.mark.parametrize(
    ("mutate", "tasks", "match"),
    [
        (lambda r: None, ["mlvu_dev_synth"], "'mlvu_dev_synth' is missing.*videomme_synth"),
        (lambda r: r["results"]["videomme_synth"].pop("videomme_perception_score,none"), ["videomme_synth"],
         "videomme_perception_score,none.*missing.*alias"),
        (lambda r: r["results"]["videomme_synth"].update({"videomme_perception_score,none": math.nan}),
         ["videomme_synth"], "not a finite number"),
        (lambda r: r["results"]["videomme_synth"].update({"videomme_perception_score,none": "N/A"}),
         ["videomme_synth"], "not a finite number"),
        (lambda r: r["results"].update({"egoschema": {"acc,none": 1.0}}), ["egoschema"], "no expected metric"),
        (lambda r: r.pop("results"), ["videomme_synth"], "not an lmms-eval results dict"),
    ],
)  # fmt: skip
def test_verify_results_raises(mutate: Any, tasks: list[str], match: str) -> None:
    results = _fake_results()
    mutate(results)
    with pytest.raises(EvaluationError, match=match):
        verify_results(results, tasks)


# -- the lmms-eval CLI as a subprocess ---------------------------------------------------------------------------------


def _cli(tasks: str, include_path: Path, output: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    command = [str(LMMS_EVAL_CLI), "eval", "--model", "dummy", "--model_args", "decode_num_frames=2",
               "--tasks", tasks, "--include_path", str(include_path), "--output_path", str(output),
               "--log_samples", "--seed", "0"]  # fmt: skip
    return subprocess.run(command, env=env, cwd=output.parent, capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.slow
def test_cli_writes_results_that_verify(synthetic_data: Path, synthetic_tasks: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = _cli("videomme_synth", synthetic_tasks, out)
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = load_cli_results(out)
    scores = verify_results(results, ["videomme_synth"], max_empty_responses=0)
    assert scores["videomme_synth"] == pytest.approx(expected_always_a(synthetic_data)["videomme_synth"], abs=1e-9)
    assert len(results["samples"]["videomme_synth"]) == read_manifest(synthetic_data)["n_items"]


@pytest.mark.slow
def test_cli_bad_task_name_exits_zero_but_verify_catches_it(synthetic_tasks: Path, tmp_path: Path) -> None:
    """The trap: a typo in the task name makes lmms-eval log an error, write nothing, and still exit 0."""
    out = tmp_path / "out"
    proc = _cli("videomme_synht", synthetic_tasks, out)
    assert proc.returncode == 0
    assert "Tasks not found" in proc.stderr + proc.stdout
    with pytest.raises(EvaluationError, match=r"no \*_results\.json"):
        load_cli_results(out)
    with pytest.raises(EvaluationError, match="videomme_synht"):
        verify_results({"results": {}}, ["videomme_synht"])

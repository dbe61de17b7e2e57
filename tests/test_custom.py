"""``benchmark=custom``: your own videos and questions (CSV or JSON lines) through lmms-eval's path, validated first,
scored as multiple choice, free form (exact / token F1) or not at all, with the example set in examples/custom."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from adatp_bench.config import compose
from adatp_bench.eval.check_data import check_dataset
from adatp_bench.eval.custom import normalise_answer, parse_options, question_problems, token_f1
from adatp_bench.eval.dataset import dataset_ref
from adatp_bench.results import RunDir, read_jsonl
from adatp_bench.run import run_cell

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "custom"


@pytest.fixture
def example(tmp_path: Path) -> Path:
    copy = tmp_path / "custom"
    shutil.copytree(EXAMPLE, copy)
    return copy


def custom_cell(root: Path, data: Path, questions: str = "questions.jsonl", *extra: str):
    return compose([f"paths.root={root}", "model=tiny", "benchmark=custom", f"benchmark.videos={data / 'videos'}",
                    f"benchmark.questions={data / questions}", *extra])  # fmt: skip


def test_the_example_set_passes_the_check(example: Path) -> None:
    cfg = custom_cell(example.parent, example)
    report = check_dataset(dataset_ref(cfg.benchmark), 8)
    assert report.ok, report.summary()
    assert report.rows == 6 and report.videos == 4  # spaces and a sub-folder in the names


def test_a_cell_on_the_example_scores_through_lmms_eval(example: Path, tmp_path: Path) -> None:
    outcome = run_cell(custom_cell(tmp_path, example, "questions.jsonl", "method=fastv"))
    assert outcome.status == "done", outcome.record.error if outcome.record else outcome.error
    record = outcome.record
    assert {"custom_score,none", "custom_answered,none"} <= set(record.metrics)
    assert record.n_samples == 6 and 0.0 <= record.score <= 100.0
    rows = read_jsonl(RunDir(Path(record.config["paths"]["results_dir"]), record.run_id).samples_path)
    assert any("red then blue.mp4" in r["video"] for r in rows)
    prompt = next(r["prompt"] for r in rows if r["doc_id"] == 2)
    assert "\nA. red\nB. blue\nC. green\nD. yellow\nE. black\nAnswer with the option's letter" in prompt


def test_a_constant_answer_scores_what_the_rows_say(example: Path, tmp_path: Path) -> None:
    """Answering "B" everywhere: q1 and q2 (answer B) right, q3 and q4 wrong, the free-form q5 ("green") wrong, q6
    unscored: 2 of 5 scored questions, 40.0."""
    outcome = run_cell(custom_cell(tmp_path, example, "questions.jsonl", "model=constant", "model.answer=B"))
    assert outcome.status == "done", outcome.record.error if outcome.record else outcome.error
    assert outcome.record.score == pytest.approx(40.0)
    assert outcome.record.metrics["custom_answered,none"] == pytest.approx(100.0)


def test_csv_questions_with_both_option_forms(example: Path, tmp_path: Path) -> None:
    rows = [json.loads(line) for line in (example / "questions.jsonl").read_text().splitlines()][:4]
    rows[0]["options"] = json.dumps(rows[0]["options"])  # a JSON list in a CSV cell
    for row in rows[1:]:
        row["options"] = " | ".join(row["options"])  # "a | b | c"
    pd.DataFrame(rows).to_csv(example / "questions.csv", index=False)
    outcome = run_cell(custom_cell(tmp_path, example, "questions.csv", "model=constant", "model.answer=B"))
    assert outcome.status == "done", outcome.record.error if outcome.record else outcome.error
    assert outcome.record.n_samples == 4 and outcome.record.score == pytest.approx(50.0)


def test_an_unscored_benchmark_runs_and_reports_no_score(example: Path, tmp_path: Path) -> None:
    lines = [json.loads(line) for line in (example / "questions.jsonl").read_text().splitlines()]
    (example / "unlabelled.jsonl").write_text("".join(json.dumps({**r, "answer": ""}) + "\n" for r in lines))
    outcome = run_cell(custom_cell(tmp_path, example, "unlabelled.jsonl"))
    assert outcome.status == "done", outcome.record.error if outcome.record else outcome.error
    assert outcome.record.score is None and "custom_answered,none" in outcome.record.metrics


@pytest.mark.parametrize(
    ("change", "phrase"),
    [
        (lambda rows: [*rows, dict(rows[0])], "duplicate id 'q1' (first at index 0)"),
        (lambda rows: [{**rows[0], "answer": "D"}, *rows[1:]], "column 'answer' is 'D', not the letter of one of its"),
        (lambda rows: [{**rows[0], "question": ""}, *rows[1:]], "column 'question' is '', not a non-empty value"),
        (lambda rows: [{**rows[0], "options": ["only one"]}, *rows[1:]], "has 1 option(s); 2 to 26 allowed"),
        (lambda rows: [{**rows[0], "video": "nowhere.mp4"}, *rows[1:]], "video 'nowhere.mp4' not found"),
    ],
    ids=["duplicate_id", "answer_outside", "empty_question", "one_option", "missing_video"],
)
def test_bad_rows_and_videos_are_each_named(change, phrase: str, example: Path, tmp_path: Path) -> None:
    path = example / "questions.jsonl"
    rows = change([json.loads(line) for line in path.read_text().splitlines()])
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    outcome = run_cell(custom_cell(tmp_path, example))
    assert outcome.status == "failed" and outcome.record.error_type == "DataCheckError"
    assert phrase in outcome.record.error


def test_an_unreadable_video_is_named(example: Path, tmp_path: Path) -> None:
    (example / "videos" / "green.mp4").write_bytes(b"not a video")
    outcome = run_cell(custom_cell(tmp_path, example))
    assert outcome.status == "failed" and "green.mp4" in outcome.record.error


def test_missing_paths_are_config_errors(tmp_path: Path) -> None:
    outcome = run_cell(compose([f"paths.root={tmp_path}", "model=tiny", "benchmark=custom"]))
    assert outcome.status == "failed" and "benchmark.videos" in (outcome.error or "")


def test_option_parsing_and_free_form_scoring() -> None:
    assert parse_options('["a", "b"]') == ["a", "b"] and parse_options("a | b |c") == ["a", "b", "c"]
    assert parse_options("") is None and parse_options(None) is None
    assert normalise_answer("The Green square!") == "green square"
    assert token_f1("a green square", "green") == pytest.approx(2 / 3)
    assert token_f1("blue", "green") == 0.0 and token_f1("Green.", "green") == 1.0
    assert question_problems([{"id": "x", "video": "v.mp4", "question": "q"}], freeform="bleu") == [
        "benchmark.freeform='bleu': expected one of ('exact', 'f1')"
    ]


def test_table1_renders_a_custom_benchmark_with_the_vanilla_comparison(example: Path, tmp_path: Path) -> None:
    """The example experiment's grid on the example set: its own benchmark column, agreement/flip/KL per row from the
    records, vanilla as the reference, cells not run marked missing."""
    from adatp_bench.report import table1

    data = [f"benchmark.videos={example / 'videos'}", f"benchmark.questions={example / 'questions.jsonl'}"]
    base = [f"paths.root={tmp_path}", "experiment=custom_example", *data]
    pruned = run_cell(compose([*base, "method=fastv", "budget=r25"])).record  # before its reference: pending
    vanilla = run_cell(compose([*base, "method=vanilla"])).record
    assert pruned.regression["n_compared"] is None and vanilla.status == "ok"
    out = tmp_path / "table"
    table1.main(["--experiment", "custom_example", "--results", str(tmp_path / "results" / "runs"),
                 "--out", str(out), *data])  # fmt: skip
    table = pd.read_csv(out / "table1.csv")
    assert "custom" in table.columns and "agree %" in table.columns
    fastv = table[(table.method == "fastv") & (table.setting == "100%/25%")].iloc[0]
    filled = RunDir(tmp_path / "results" / "runs", pruned.run_id).record().regression  # filled in by the table
    assert filled["n_compared"] == 6
    assert fastv["agree %"] == pytest.approx(filled["agreement_pct"])
    assert fastv["flip %"] == pytest.approx(filled["first_token_flip_pct"])
    assert fastv["KL"] == pytest.approx(filled["mean_kl"], rel=1e-3)
    van = table[table.method == "vanilla"].iloc[0]
    assert van["agree %"] == 100.0 and van["flip %"] == 0.0
    assert (table[table.method == "holitom"].custom == "missing").all()

"""``benchmark=custom``: your own videos and questions, through the same lmms-eval path as the paper's benchmarks.

    benchmark=custom benchmark.videos=<folder> benchmark.questions=<file.csv|file.jsonl>

One row per question:

- ``id`` (required): unique id of the question;
- ``video`` (required): the video's path relative to ``benchmark.videos`` (spaces and sub-folders allowed);
- ``question`` (required): the question text;
- ``options`` (multiple choice): a JSON list (``["red", "blue"]``), or in a CSV a JSON list or ``a | b | c``;
- ``answer`` (to be scored): the option's letter (``A``…) for multiple choice, the reference answer for free form;
  absent or empty: unscored;
- ``duration``, ``category`` (optional): kept; categories get per-category breakdowns.

Any other column is kept as text. The prompt and answer parsing are lmms-eval's own where an upstream task fits: a
multiple-choice question is asked as lmms-eval's LongVideoBench does (question, ``A. …`` lines, "Answer with the
option's letter from the given choices directly."), and the letter is read by lmms-eval's ``extract_mcq_answer``.
A free-form answer is scored by exact match after SQuAD's normalisation (lower case, no punctuation or articles, single
spaces) or by token F1 (``benchmark.freeform=exact|f1``). An unscored benchmark still compares every method with vanilla
(agreement, first-token flips and KL: label-free regression checks).

Before evaluation the rows are normalised into a JSON-lines copy in the cell's task folder (``id`` and text as
strings, ``options`` as a list, a ``score_as`` field per row), so lmms-eval always reads clean types.
"""

from __future__ import annotations

import collections
import json
import logging
import re
import string
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from adatp_bench.errors import DatasetError
from adatp_bench.eval.dataset import load_rows

log = logging.getLogger(__name__)
LETTERS = string.ascii_uppercase
REQUIRED = ("id", "video", "question")
FREEFORM = ("exact", "f1")
POST_PROMPT_MC = "Answer with the option's letter from the given choices directly.\n"
POST_PROMPT_FREE = "Answer the question briefly.\n"


def load_questions(path: Path) -> list[dict[str, Any]]:
    """The rows of a CSV or JSON-lines questions file, as read (no normalisation)."""
    if path.suffix.lower() not in {".csv", ".jsonl", ".json"}:
        raise DatasetError(f"{path}: unsupported questions format {path.suffix!r} (csv or jsonl)")
    return load_rows(path)


def parse_options(value: Any) -> list[str] | None:
    """A row's options as a list of strings: a list, a JSON list in a string, or ``a | b | c``; None when absent."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, list):
        return [str(v) for v in value]
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                parsed = json.loads(text)
            except json.JSONDecodeError as err:
                raise ValueError(f"options {value!r} look like a JSON list but do not parse: {err.msg}") from err
            if isinstance(parsed, list):
                return [str(v) for v in parsed]
        return [part.strip() for part in text.split("|")]
    raise ValueError(f"options {value!r} are neither a list nor text")


def score_as(row: Mapping[str, Any], freeform: str) -> str:
    """How a row is scored: ``mc`` (options and a letter answer), ``exact``/``f1`` (free form), or ``none``."""
    answer = row.get("answer")
    if answer is None or str(answer).strip() == "":
        return "none"
    return "mc" if parse_options(row.get("options")) else freeform


def question_problems(rows: Sequence[Mapping[str, Any]], freeform: str = "exact") -> list[str]:
    """Every problem of the rows, naming the row (its id and position), the column and the value."""
    if freeform not in FREEFORM:
        return [f"benchmark.freeform={freeform!r}: expected one of {FREEFORM}"]
    problems: list[str] = []
    seen: dict[str, int] = {}
    for index, row in enumerate(rows):
        where = f"row id={row.get('id')!r} (index {index})"
        for column in REQUIRED:
            value = row.get(column)
            if value is None or not str(value).strip():
                problems.append(f"{where}: column {column!r} is {value!r}, not a non-empty value")
        key = str(row.get("id"))
        if key in seen:
            problems.append(f"{where}: duplicate id {key!r} (first at index {seen[key]})")
        seen.setdefault(key, index)
        try:
            options = parse_options(row.get("options"))
        except ValueError as err:
            problems.append(f"{where}: column 'options': {err}")
            continue
        if options is not None:
            if not 2 <= len(options) <= len(LETTERS):
                problems.append(f"{where}: column 'options' has {len(options)} option(s); 2 to {len(LETTERS)} allowed")
                continue
            answer = str(row.get("answer") or "").strip()
            if answer and (len(answer) != 1 or answer not in LETTERS[: len(options)]):
                problems.append(
                    f"{where}: column 'answer' is {answer!r}, not the letter of one of its {len(options)} options "
                    f"(A–{LETTERS[len(options) - 1]})"
                )
    return problems


def normalise(rows: Sequence[Mapping[str, Any]], freeform: str) -> list[dict[str, Any]]:
    """Rows with clean types for lmms-eval: text columns as strings, ``options`` a list (empty for free form), and
    ``score_as``."""
    out = []
    for row in rows:
        options = parse_options(row.get("options")) or []
        clean = {str(k): "" if v is None else str(v) for k, v in row.items() if k not in {"options"}}
        clean.update(options=options, answer=str(row.get("answer") or "").strip(), score_as=score_as(row, freeform))
        out.append(clean)
    return out


def write_normalised(rows: Sequence[Mapping[str, Any]], freeform: str, dest: Path) -> Path:
    """Write :func:`normalise`'s rows as JSON lines to ``dest``; return it."""
    from adatp_bench.results import atomic_write_text

    atomic_write_text(dest, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in normalise(rows, freeform)))
    return dest


# -- lmms-eval task functions (referenced from eval/tasks/custom.yaml) ------------------------------------------------


def custom_doc_to_visual(doc: Mapping[str, Any], lmms_eval_specific_kwargs: Mapping[str, Any] | None = None) -> list:
    """``[path]`` of ``<videos>/<video>``; VideoError naming the file when it is missing or undecodable."""
    from adatp_bench.eval.visuals import _visual

    return _visual("custom", str(doc["video"]), lmms_eval_specific_kwargs)


def custom_doc_to_text(doc: Mapping[str, Any], lmms_eval_specific_kwargs: Mapping[str, Any] | None = None) -> str:
    """The prompt: multiple choice as lmms-eval's LongVideoBench asks it; free form with a brief-answer request."""
    kwargs = lmms_eval_specific_kwargs or {}
    pre = kwargs.get("pre_prompt", "")
    options = list(doc.get("options") or [])
    if options:
        lines = "\n".join(f"{LETTERS[i]}. {option}" for i, option in enumerate(options))
        return f"{pre}{doc['question']}\n{lines}\n{kwargs.get('post_prompt', POST_PROMPT_MC)}"
    return f"{pre}{doc['question']}\n{kwargs.get('post_prompt_free', POST_PROMPT_FREE)}"


def custom_process_results(doc: Mapping[str, Any], results: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Per-sample score (``None`` when unscored), the parsed answer, and whether anything was answered."""
    from lmms_eval.tasks._task_utils.mcq_extract import extract_mcq_answer

    response = results[0] if results else ""
    kind = doc.get("score_as", "none")
    options = list(doc.get("options") or [])
    parsed = extract_mcq_answer(response, choices=list(LETTERS[: len(options)])) if options else response.strip()
    score: float | None = None
    if kind == "mc":
        score = float(parsed == doc["answer"])
    elif kind == "exact":
        score = float(normalise_answer(response) == normalise_answer(doc["answer"]))
    elif kind == "f1":
        score = token_f1(response, doc["answer"])
    entry: dict[str, Any] = {"id": doc["id"], "category": doc.get("category", ""), "parsed": parsed}
    if score is not None:  # lmms-eval's CLT standard error reads "score"; unscored questions carry none
        entry["score"] = score
    return {"custom_score": entry, "custom_answered": {"answered": bool(response.strip())}}


def custom_aggregate_score(results: Sequence[Mapping[str, Any]]) -> float:
    """Mean score of the scored questions ×100 (per-category means are logged)."""
    scored = [r for r in results if r.get("score") is not None]
    if not scored:
        raise DatasetError("no question of this custom benchmark has an answer to score it by")
    by_category: dict[str, list[float]] = collections.defaultdict(list)
    for r in scored:
        by_category[r["category"] or "all"].append(r["score"])
    for category, scores in sorted(by_category.items()):
        log.info("custom %s: %.2f (%d questions)", category, 100.0 * sum(scores) / len(scores), len(scores))
    return 100.0 * sum(r["score"] for r in scored) / len(scored)


def custom_aggregate_answered(results: Sequence[Mapping[str, Any]]) -> float:
    """Share of questions with a non-empty answer, ×100."""
    return 100.0 * sum(bool(r["answered"]) for r in results) / max(1, len(results))


def normalise_answer(text: str) -> str:
    """SQuAD's answer normalisation: lower case, no punctuation, no articles, single spaces."""
    text = "".join(ch for ch in str(text).lower() if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def token_f1(prediction: str, reference: str) -> float:
    """SQuAD token F1 between the normalised prediction and reference."""
    pred, ref = normalise_answer(prediction).split(), normalise_answer(reference).split()
    if not pred or not ref:
        return float(pred == ref)
    common = sum((collections.Counter(pred) & collections.Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)

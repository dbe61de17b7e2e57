"""The parsed answer of every scored sample, stored beside the cell's samples (``<run_dir>/parsed.json``).

lmms-eval's ``process_results`` extracts each benchmark's answer (``pred_answer``, ``parsed_pred``, or the custom
benchmark's ``parsed``); the label-free regression check (``regression.py``) compares those, not raw text.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from adatp_bench.results import RunDir, atomic_write_text, sample_key

#: The keys lmms-eval's process_results (or ours) give the parsed answer under, per benchmark.
PARSED_KEYS = ("pred_answer", "parsed_pred", "parsed")

PARSED_FILE = "parsed.json"
#: Whether each scored sample was right, as lmms-eval scored it (``parsed_key`` → bool): the easy/hard split.
CORRECT_FILE = "correct.json"


def parsed_key(row: Mapping[str, Any]) -> str:
    task, doc_id, doc_hash = sample_key(row)
    return f"{task}|{doc_id}|{doc_hash}"


def write_parsed(run_dir: RunDir, parsed: Mapping[str, str]) -> None:
    """Store the parsed answer of every scored sample (``parsed_key`` → answer), written after lmms-eval scored them."""
    atomic_write_text(run_dir.path / PARSED_FILE, json.dumps(dict(parsed), indent=1, sort_keys=True))


def samples_with_parsed(run_dir: RunDir) -> list[dict[str, Any]]:
    """The cell's samples, each with its parsed answer (``parsed``) where lmms-eval recorded one."""
    path = run_dir.path / PARSED_FILE
    parsed = json.loads(path.read_text()) if path.exists() else {}
    return [{**row, "parsed": parsed.get(parsed_key(row))} for row in run_dir.all_samples()]


def parsed_from_lmms(sample: Mapping[str, Any]) -> str | None:
    """The parsed answer lmms-eval's ``process_results`` left in one of its logged samples (None if it has none).

    MVBench's ``pred_answer`` is the raw response (upstream parses inside its scorer): the letter its ``mcq_acc``
    reads is recovered instead (:func:`adatp_bench.eval.tasks.mvbench.parsed_answer`).
    """
    for value in sample.values():
        if isinstance(value, Mapping) and _is_mvbench(value):
            from adatp_bench.eval.tasks.mvbench import parsed_answer

            return parsed_answer(str(value["pred_answer"]))
        if isinstance(value, Mapping):
            for key in PARSED_KEYS:
                if key in value and value[key] is not None:
                    return str(value[key])
    return None


def correct_from_lmms(sample: Mapping[str, Any]) -> bool | None:
    """Whether lmms-eval scored one logged sample as right: its ``process_results`` entry's parsed answer against
    the gold ``answer`` it carries (the sample's ``target`` where the entry has none); None without either."""
    for value in sample.values():
        if not isinstance(value, Mapping):
            continue
        if _is_mvbench(value):  # upstream's own 0/1 (its gold is a letter, the sample's target an option text)
            return bool(value["score"])
        answer = next((value[k] for k in PARSED_KEYS if value.get(k) is not None), None)
        gold = value.get("answer", sample.get("target"))
        if answer is not None and gold is not None:
            return str(answer).strip().upper() == str(gold).strip().upper()
    return None


def write_correct(run_dir: RunDir, correct: Mapping[str, bool]) -> None:
    """Store whether each scored sample was right (``parsed_key`` → bool)."""
    atomic_write_text(run_dir.path / CORRECT_FILE, json.dumps(dict(correct), indent=1, sort_keys=True))


def load_correct(run_dir: RunDir) -> dict[str, bool] | None:
    """The cell's per-sample correctness, or None for a cell recorded before it was stored (or unscored)."""
    path = run_dir.path / CORRECT_FILE
    return json.loads(path.read_text()) if path.exists() else None


def _is_mvbench(entry: Mapping[str, Any]) -> bool:
    """An entry of lmms-eval's ``mvbench_process_results``: {pred_answer (raw), gt_answer (letter), score}."""
    return {"pred_answer", "gt_answer", "score"} <= set(entry)

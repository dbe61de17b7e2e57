"""Post-run checks of lmms-eval results, because lmms-eval does not fail loudly.

The ``lmms-eval`` CLI exits 0 when a task name is unknown, a dataset cannot be loaded, the model fails to initialise
or a processor crashes; several model wrappers also catch per-sample generation errors and return ``""``. A run is
therefore only trusted after :func:`verify_results` has found, for every requested task, the expected metric key
(:func:`adatp_bench.eval.tasks.expected_metric_keys`) holding a finite number, and after empty responses have been
counted (:func:`count_empty_responses`).

Scales differ between benchmarks (upstream conventions, kept as is in the raw results):

* VideoMME ``videomme_perception_score``: micro accuracy in percent (0–100);
* MLVU-dev ``mlvu_percetion_score`` (sic): *macro* average over the 7 dev task types of the per-type accuracy in
  percent; a type without any question counts as 0, so a subset of the data is not comparable to the full set;
* LongVideoBench ``lvb_acc``: accuracy in [0, 1], rounded by upstream to 5 decimals.

:func:`to_percent` puts all three on 0–100 for tables and averages.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from adatp_bench.errors import ConfigError, EvaluationError
from adatp_bench.eval.tasks import benchmark_of, expected_metric_keys

log = logging.getLogger(__name__)

FRACTION_SCALE_BENCHMARKS = frozenset({"longvideobench_val_v"})


def verify_results(
    results: Mapping[str, Any],
    tasks: Sequence[str],
    *,
    max_empty_responses: int | None = None,
    expected: Mapping[str, Sequence[str]] | None = None,
) -> dict[str, float]:
    """Check that every task has its expected metric as a finite number; return ``{task: primary metric value}``.

    Values are returned on the task's own scale (see the module docstring; use :func:`to_percent` for 0–100).

    Args:
        results: the dict returned by ``lmms_eval.evaluator.simple_evaluate`` or loaded from ``*_results.json``.
        tasks: task names that were requested.
        max_empty_responses: if given, raise when more responses than this are empty (per task). Empty responses are
            always logged as a warning; they need ``log_samples=True`` (``results["samples"]``) to be counted.
        expected: the metric names per task when they differ from the benchmark's usual ones (a rendered task may
            leave one out, e.g. an unscored custom benchmark's score), primary first.

    Raises:
        EvaluationError: ``results`` is not a results dict, a task or metric key is missing, a value is not a finite
            number, or there are too many empty responses. The message names the task and key and lists what is there.
    """
    if not isinstance(results, Mapping) or not isinstance(results.get("results"), Mapping):
        got = sorted(results) if isinstance(results, Mapping) else type(results).__name__
        raise EvaluationError(f"not an lmms-eval results dict (no 'results' mapping); got {got}")
    if not tasks:
        raise EvaluationError("no tasks to verify")
    per_task = results["results"]
    values: dict[str, float] = {}
    for task in tasks:
        if task not in per_task:
            raise EvaluationError(
                f"task {task!r} is missing from lmms-eval results (it may have failed to load or run; the CLI still "
                f"exits 0); tasks present: {sorted(per_task)}"
            )
        try:
            keys = (
                [f"{m},none" for m in expected[task]]
                if expected and task in expected
                else (expected_metric_keys([task])[task])
            )
        except ConfigError as exc:
            raise EvaluationError(f"task {task!r}: no expected metric is known for it ({exc})") from exc
        entry = per_task[task]
        for key in keys:
            if key not in entry:
                raise EvaluationError(f"task {task!r}: metric {key!r} is missing; keys present: {sorted(entry)}")
            value = entry[key]
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise EvaluationError(f"task {task!r}: metric {key!r} is {value!r}, not a finite number")
        values[task] = float(entry[keys[0]])

    empty = count_empty_responses(results, tasks)
    for task, count in empty.items():
        if count:
            log.warning("task %s: %d empty model responses", task, count)
    if max_empty_responses is not None:
        over = {t: c for t, c in empty.items() if c > max_empty_responses}
        if over:
            raise EvaluationError(f"too many empty responses (limit {max_empty_responses}): {over}")
    return values


def count_empty_responses(results: Mapping[str, Any], tasks: Sequence[str] | None = None) -> dict[str, int]:
    """Per task, the number of logged samples whose every response is empty or whitespace.

    Uses ``results["samples"][task]`` (present when lmms-eval ran with ``log_samples=True``); tasks without samples
    are left out of the returned dict.
    """
    samples = results.get("samples") or {}
    names = list(samples) if tasks is None else [t for t in tasks if t in samples]
    return {task: sum(1 for sample in samples[task] if _is_empty(sample)) for task in names}


def find_results_file(output_dir: str | os.PathLike[str]) -> Path:
    """The newest ``*_results.json`` the lmms-eval CLI wrote under ``output_dir``.

    Searched recursively: the CLI adds a sub-directory named after ``pretrained=`` when that model argument is given.

    Raises:
        EvaluationError: there is none (the CLI writes nothing, and still exits 0, when e.g. a task name is unknown).
    """
    root = Path(output_dir)
    found = sorted(root.rglob("*_results.json"), key=lambda p: (p.stat().st_mtime_ns, p.name)) if root.is_dir() else []
    if not found:
        raise EvaluationError(
            f"no *_results.json under {root}: lmms-eval produced no results (its exit code is 0 "
            "even when the evaluation failed; see its log)"
        )
    return found[-1]


def load_cli_results(output_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """Load the newest CLI results JSON under ``output_dir``.

    ``"samples"`` is filled from its ``*_samples_<task>.jsonl`` files (same timestamp prefix, written with
    ``--log_samples``) so that :func:`verify_results` can count empty responses.
    """
    path = find_results_file(output_dir)
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise EvaluationError(f"cannot read lmms-eval results {path}: {exc}") from exc
    prefix = path.name[: -len("_results.json")]
    samples: dict[str, list[dict[str, Any]]] = {}
    for task in results.get("results", {}):
        sample_file = path.with_name(f"{prefix}_samples_{task}.jsonl")
        if sample_file.is_file():
            lines = sample_file.read_text(encoding="utf-8").splitlines()
            samples[task] = [json.loads(line) for line in lines if line.strip()]
    if samples:
        results["samples"] = samples
    return results


def to_percent(task: str, value: float) -> float:
    """Convert ``value`` of ``task``'s primary metric to 0–100 (LongVideoBench ×100; VideoMME, MLVU-dev unchanged).

    ``task`` may be one of our task names (``longvideobench_val_v_synth`` …) or an upstream name.
    """
    return value * 100.0 if benchmark_of(task).name in FRACTION_SCALE_BENCHMARKS else value


def _is_empty(sample: Mapping[str, Any]) -> bool:
    responses = sample.get("filtered_resps", sample.get("resps"))
    texts = list(_strings(responses))
    return not texts or all(not t.strip() for t in texts)


def _strings(value: Any) -> Iterator[str]:
    """Every response text in a (nested) list of responses."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _strings(item)
    elif value is not None:
        text = getattr(value, "text", None)  # GenerationResult-like objects
        if isinstance(text, str):
            yield text


# The answer prefixes lmms-eval's longvideobench parse_multi_choice_response strips before looking for a letter.
_LVB_PREFIXES = (
    "The best answer is",
    "The correct answer is",
    "The answer is",
    "The answer",
    "The best option is",
    "The correct option is",
    "Best answer:",
    "Best option:",
)


def lvb_random_fallback(response: str) -> bool:
    """Whether lmms-eval's LongVideoBench parser would replace this answer by a random letter (no A–E left in it).

    Upstream assigns ``random.choice`` when parsing fails, which lifts a broken model to about chance; the count of such
    answers is recorded so a reader can see it (docs/upstream.md §3).
    """
    text = response.strip()
    for prefix in _LVB_PREFIXES:
        text = text.replace(prefix, "")
    return re.search(r"[ABCDE]", text) is None

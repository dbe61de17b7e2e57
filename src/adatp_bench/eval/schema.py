"""Schema checks of an annotation file, row by row, before any model loads.

lmms-eval reads the annotations only when a cell starts evaluating, and a bad row surfaces late and wrapped (a
``RetryError`` around a ``KeyError`` in upstream aggregation, after the whole model run). These checks read the file
first and name every problem by file, column, row id and value: a missing column, a missing or malformed ``options``
list, an answer that is not one of the options, a category value upstream aggregation does not know, LongVideoBench's
``correct_choice`` pointing at an unused (``"N/A"``) option, an MVBench answer that is not one of its candidates'
texts. MVBench has one file per sub-task: :func:`validate_annotation` takes its folder and checks every file.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from adatp_bench.errors import DatasetError
from adatp_bench.eval.dataset import load_rows
from adatp_bench.eval.tasks.docs import (
    LVB_COLUMNS,
    LVB_NUM_OPTIONS,
    LVB_UNUSED_OPTION,
    MLVU_DEV_COLUMNS,
    MLVU_DEV_TASK_TYPES,
    VIDEOMME_COLUMNS,
    videomme_categories,
)
from adatp_bench.eval.tasks.mvbench import COLUMNS as MVBENCH_COLUMNS
from adatp_bench.eval.tasks.mvbench import read_subtask as _read_mvbench
from adatp_bench.eval.tasks.mvbench import row_problems as _mvbench_problems

LETTERS = "ABCDE"
#: How many problems an error message lists (the count of all of them is always given).
SHOWN = 10
Row = dict[str, Any]


def validate_annotation(benchmark: str, annotation: Path) -> int:
    """Check every row of ``annotation`` against ``benchmark``'s schema; return the number of rows.

    Raises:
        DatasetError: listing the problems (file, column, row id, value), at most :data:`SHOWN` of them.
    """
    if benchmark == "mvbench" and annotation.is_dir():
        files = sorted(annotation.glob("*.json"))
        if not files:
            raise DatasetError(f"{annotation}: no MVBench <sub_task>.json files")
        counts, errors = [], []
        for file in files:  # every file's problems, not only the first bad file's
            try:
                counts.append(validate_annotation(benchmark, file))
            except DatasetError as err:
                errors.append(str(err))
        if errors:
            raise DatasetError("\n".join(errors))
        return sum(counts)
    rows = _read_mvbench(annotation) if benchmark == "mvbench" else load_rows(annotation)
    problems = schema_problems(benchmark, rows)
    if problems:
        shown = "\n  - ".join(problems[:SHOWN])
        more = f"\n  … and {len(problems) - SHOWN} more" if len(problems) > SHOWN else ""
        raise DatasetError(f"{annotation}: {len(problems)} schema problem(s) for {benchmark}:\n  - {shown}{more}")
    if not rows:
        raise DatasetError(f"{annotation}: no rows")
    return len(rows)


def schema_problems(benchmark: str, rows: Sequence[Row]) -> list[str]:
    """Every schema problem of ``rows`` as a message naming the column, row id and value."""
    checks: dict[str, tuple[Sequence[str], str, Callable[[Row, str], list[str]]]] = {
        "videomme": (VIDEOMME_COLUMNS, "question_id", _videomme_row),
        "mlvu_dev": (MLVU_DEV_COLUMNS, "question_id", _mlvu_row),
        "longvideobench_val_v": (LVB_COLUMNS, "id", _lvb_row),
        "mvbench": (MVBENCH_COLUMNS, "video", _mvbench_row),  # no id column: rows are named by index and video
    }
    if benchmark not in checks:
        raise DatasetError(f"no schema for benchmark {benchmark!r}; known: {sorted(checks)}")
    columns, id_column, check = checks[benchmark]
    present = set().union(*(row.keys() for row in rows)) if rows else set()
    missing = [c for c in columns if c not in present]
    if missing:
        return [f"missing column(s) {missing}; the file has {sorted(present)}"]
    problems: list[str] = []
    for index, row in enumerate(rows):
        problems += [f"row {_row_id(row, id_column, index)}: {p}" for p in check(row, benchmark)]
    return problems


def _row_id(row: Row, column: str, index: int) -> str:
    value = row.get(column)
    return f"{column}={value!r} (index {index})" if value not in (None, "") else f"index {index}"


def _text(row: Row, column: str) -> list[str]:
    value = row.get(column)
    if isinstance(value, str) and value.strip():
        return []
    return [f"column {column!r} is {value!r}, not a non-empty string"]


def _letter_within(row: Row, column: str, n_options: int, what: str) -> list[str]:
    value = row.get(column)
    if not isinstance(value, str) or len(value) != 1 or value not in LETTERS:
        return [f"column {column!r} is {value!r}, not an option letter A–E"]
    if LETTERS.index(value) >= n_options:
        return [f"column {column!r} is {value!r}, outside the {n_options} {what} (A–{LETTERS[n_options - 1]})"]
    return []


def _options(row: Row, column: str) -> list[str] | None:
    value = row.get(column)
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return value
    return None


def _videomme_row(row: Row, benchmark: str) -> list[str]:
    problems = _text(row, "videoID") + _text(row, "question")
    options = _options(row, "options")
    if options is None:
        problems.append(f"column 'options' is {row.get('options')!r}, not a list of option strings")
    else:
        problems += _letter_within(row, "answer", len(options), "options")
    for column, allowed in videomme_categories().items():
        if row.get(column) not in allowed:
            problems.append(f"column {column!r} is {row.get(column)!r}, which lmms-eval's aggregation does not know")
    return problems


def _mlvu_row(row: Row, benchmark: str) -> list[str]:
    problems = _text(row, "video_name") + _text(row, "question")
    if row.get("task_type") not in MLVU_DEV_TASK_TYPES:
        problems.append(f"column 'task_type' is {row.get('task_type')!r}, not one of {list(MLVU_DEV_TASK_TYPES)}")
    candidates = _options(row, "candidates")
    if "candidates" in row and candidates is None:
        problems.append(f"column 'candidates' is {row.get('candidates')!r}, not a list of option strings")
    problems += _letter_within(row, "answer", len(candidates) if candidates else len(LETTERS), "candidates")
    return problems


def _lvb_row(row: Row, benchmark: str) -> list[str]:
    problems = _text(row, "video_path") + _text(row, "question")
    if all(f"option{i}" in row for i in range(LVB_NUM_OPTIONS)):
        options = [row[f"option{i}"] for i in range(LVB_NUM_OPTIONS)]
    elif _options(row, "candidates") is not None:
        options = list(row["candidates"]) + [LVB_UNUSED_OPTION] * (LVB_NUM_OPTIONS - len(row["candidates"]))
        if len(row["candidates"]) > LVB_NUM_OPTIONS:
            problems.append(f"column 'candidates' has {len(row['candidates'])} entries, more than {LVB_NUM_OPTIONS}")
    else:
        return [*problems, "neither option0..option4 nor a 'candidates' list of strings"]
    choice = row.get("correct_choice")
    if isinstance(choice, bool) or not isinstance(choice, int):
        problems.append(f"column 'correct_choice' is {choice!r}, not an integer")
    elif not 0 <= choice < len(options):
        problems.append(f"column 'correct_choice' is {choice}, outside options 0–{len(options) - 1}")
    elif options[choice] == LVB_UNUSED_OPTION:
        problems.append(f"column 'correct_choice' is {choice}: it points at an unused option ({LVB_UNUSED_OPTION!r})")
    elif LVB_UNUSED_OPTION in options[:choice]:
        problems.append(f"column 'correct_choice' is {choice}, after an unused option (upstream stops at N/A)")
    return problems


def _mvbench_row(row: Row, benchmark: str) -> list[str]:
    return _mvbench_problems(row)

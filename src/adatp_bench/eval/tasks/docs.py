"""``process_docs`` hooks of our task templates: schema checks at task-load time, plus one LongVideoBench fix-up.

Why: upstream aggregation raises ``KeyError`` on a category value it does not know (VideoMME's duration / domain /
sub-category / task type, MLVU-dev's task type) — *after* the whole model run. Checking when lmms-eval loads the
dataset turns that into an immediate :class:`DatasetError` naming the column and the bad values.

LongVideoBench: lmms-eval's functions read ``option0``..``option4`` (``"N/A"`` when unused), columns of the hub's
converted dataset; the raw ``lvb_val.json`` has only ``candidates``. :func:`longvideobench_check_docs` derives the
option columns when they are missing, so both files work.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import datasets

from adatp_bench.errors import DatasetError

#: The 7 task types that lmms-eval's ``mlvu_aggregate_results_dev`` averages over (a local set there, not importable).
MLVU_DEV_TASK_TYPES: tuple[str, ...] = ("anomaly_reco", "count", "ego", "needle", "order", "plotQA", "topic_reasoning")
LVB_NUM_OPTIONS = 5
LVB_UNUSED_OPTION = "N/A"

VIDEOMME_COLUMNS = (
    "videoID",
    "question_id",
    "duration",
    "domain",
    "sub_category",
    "task_type",
    "question",
    "options",
    "answer",
)
MLVU_DEV_COLUMNS = ("video_name", "question", "answer", "task_type")
LVB_COLUMNS = ("id", "video_path", "question", "correct_choice", "duration_group", "question_category")


def videomme_categories() -> dict[str, list[str]]:
    """Allowed values per VideoMME column, taken from lmms-eval's ``videomme/utils.py`` (aggregation keys)."""
    from lmms_eval.tasks.videomme import utils as upstream

    return {
        "duration": list(upstream.VIDEO_TYPE),
        "domain": list(upstream.CATEGORIES),
        "sub_category": list(upstream.SUB_CATEGORIES),
        "task_type": list(upstream.TASK_CATEGORIES),
    }


def videomme_check_docs(dataset: datasets.Dataset) -> datasets.Dataset:
    """Check VideoMME columns and category values; return the dataset unchanged."""
    _require_columns(dataset, VIDEOMME_COLUMNS, "videomme")
    for column, allowed in videomme_categories().items():
        _require_values(dataset, column, allowed, "videomme")
    _require_values(dataset, "answer", ["A", "B", "C", "D"], "videomme")
    return dataset


def mlvu_dev_check_docs(dataset: datasets.Dataset) -> datasets.Dataset:
    """Check MLVU-dev columns and that every ``task_type`` is one of the 7 dev types; return it unchanged."""
    _require_columns(dataset, MLVU_DEV_COLUMNS, "mlvu_dev")
    _require_values(dataset, "task_type", MLVU_DEV_TASK_TYPES, "mlvu_dev")
    return dataset


def longvideobench_check_docs(dataset: datasets.Dataset) -> datasets.Dataset:
    """Check LongVideoBench columns; add ``option0..option4`` from ``candidates`` when the file lacks them."""
    _require_columns(dataset, LVB_COLUMNS, "longvideobench_val_v")
    option_columns = [f"option{i}" for i in range(LVB_NUM_OPTIONS)]
    if not all(c in dataset.column_names for c in option_columns):
        _require_columns(dataset, ("candidates",), "longvideobench_val_v (no option0..option4 columns)")
        too_many = [len(c) for c in dataset["candidates"] if len(c) > LVB_NUM_OPTIONS]
        if too_many:
            raise DatasetError(f"longvideobench_val_v: {len(too_many)} rows have > {LVB_NUM_OPTIONS} candidates")
        dataset = dataset.map(_candidates_to_options, desc="LongVideoBench option columns")
    columns = [dataset["id"], dataset["correct_choice"], *(dataset[c] for c in option_columns)]
    bad = [
        doc_id
        for doc_id, choice, *options in zip(*columns, strict=True)
        if not isinstance(choice, int) or not 0 <= choice < _num_used(options)
    ]
    if bad:
        raise DatasetError(f"longvideobench_val_v: correct_choice is not the index of a used option in rows {bad[:5]}")
    return dataset


def _candidates_to_options(doc: dict) -> dict[str, str]:
    candidates = list(doc["candidates"])
    return {
        f"option{i}": str(candidates[i]) if i < len(candidates) else LVB_UNUSED_OPTION for i in range(LVB_NUM_OPTIONS)
    }


def _num_used(options: Sequence[str]) -> int:
    """Number of options before the first "N/A" (upstream's process_results stops there)."""
    for i, option in enumerate(options):
        if option == LVB_UNUSED_OPTION:
            return i
    return len(options)


def _require_columns(dataset: datasets.Dataset, columns: Iterable[str], what: str) -> None:
    missing = [c for c in columns if c not in dataset.column_names]
    if missing:
        raise DatasetError(f"{what}: dataset lacks columns {missing}; it has {dataset.column_names}")


def _require_values(dataset: datasets.Dataset, column: str, allowed: Sequence[str], what: str) -> None:
    unknown = sorted({str(v) for v in dataset.unique(column)} - set(allowed))
    if unknown:
        raise DatasetError(
            f"{what}: column {column!r} has values {unknown} that lmms-eval's aggregation does not know; "
            f"allowed: {list(allowed)}"
        )

"""The hard subset (``report.subset=hard``): scores on the items plain downsampling gets wrong.

VTC-Bench (arXiv 2510.07143, §3) uses the downsampling baseline as a difficulty filter: an item the downsampled model
answers correctly is "easy" (any compressor keeping a coarse view answers it), the rest are "hard", and methods are
compared on the hard items. Here each row's reference is the ``method=downsample`` cell of the same model, benchmark
and data at the row's own budget; rows without a budget (vanilla, FLOPs-matched presets) use
``report.hard_reference`` (a ``budget=`` name). A row's hard-subset score is its plain accuracy (0–100) over the hard
items it answered (both cells' per-sample correctness, as lmms-eval scored it, from ``correct.json``), so macro
averages such as MLVU-dev's per-type mean become micro averages on the subset.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from adatp_bench.eval.parsed import load_correct
from adatp_bench.report.grid import Cell, compose_cells, find_record
from adatp_bench.results import RunDir

REFERENCE_METHOD = "downsample"


@dataclass(frozen=True)
class SubsetScore:
    """A cell's score on the hard items (None with ``why`` when it cannot be computed)."""

    score: float | None
    n_items: int
    reference: str | None  # the downsample cell's run id that split the items
    why: str | None = None


def reference_overrides(cell: Cell, hard_reference: str) -> tuple[str, ...]:
    """The overrides of the downsample cell that splits ``cell``'s items: the same grid point with
    ``method=downsample``, at the cell's budget when its method takes one, else at ``hard_reference``."""
    follows_budget = cell.method_settings().get("retention") == cell.config.budget.get("retention")
    budget = None if follows_budget and cell.method != "vanilla" else f"budget={hard_reference}"
    out = []
    for item in cell.overrides:
        key = item.split("=", 1)[0].lstrip("+~")
        if key == "method":
            item = f"method={REFERENCE_METHOD}"
        elif key.startswith("method.") or key == "setting_label":
            continue  # the row's own hyperparameters do not apply to the reference
        elif key == "budget" and budget:
            item, budget = budget, None
        out.append(item)
    return (*out, *([budget] if budget else []))


def hard_subset_scores(cells: list[Cell], results_dir: Path, hard_reference: str) -> dict[str, SubsetScore]:
    """Each cell's score on its hard items, by ``Cell.key``."""
    wanted = {cell.key: reference_overrides(cell, hard_reference) for cell in cells}
    references = {o: compose_cells([o])[0] for o in dict.fromkeys(wanted.values())}  # a few per model × benchmark
    return {cell.key: _score(cell, references[wanted[cell.key]], results_dir) for cell in cells}


def _score(cell: Cell, ref_cell: Cell, results_dir: Path) -> SubsetScore:
    own, ref = find_record(cell, results_dir).record, find_record(ref_cell, results_dir).record
    if own is None or own.status != "ok":
        return SubsetScore(None, 0, None, "cell not finished")
    if ref is None or ref.status != "ok":
        return SubsetScore(None, 0, None, "no finished downsample cell at this budget (add method=downsample)")
    answers, reference = load_correct(RunDir(results_dir, own.run_id)), load_correct(RunDir(results_dir, ref.run_id))
    if answers is None or reference is None:
        why = "recorded before per-sample correctness was stored: run it again with force=true"
        return SubsetScore(None, 0, ref.run_id, why)
    hard = [key for key, right in reference.items() if not right and key in answers]
    if not hard:
        return SubsetScore(None, 0, ref.run_id, "no hard item: downsampling answers every item correctly")
    return SubsetScore(100 * sum(answers[key] for key in hard) / len(hard), len(hard), ref.run_id)

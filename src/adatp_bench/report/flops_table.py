"""FLOPs table: the paper-convention TFLOPs of every cell of our Table 1 grid, checked against the published numbers.

`python -m adatp_bench.report.flops_table` (`make flops-table`; a few seconds on CPU, no weights) prints

(a) every row of FastVID Table 1 (LLaVA-OV-7B) and Table 2 (LLaVA-Video-7B) whose token schedule is known: our
    TFLOPs (docs/flops.md §1) vs the published value, matched to the printed precision; the two rows that do not match
    (PruneVid 10.1%/3.9%, FastVID+FastV 9.7%/3.6%; docs/flops.md §4) are shown with the explanation of the gap;
(b) every (model, method, budget) cell of conf/experiment/table1.yaml: each method is built from its conf/method YAML,
    validated on the full-size model and asked for `expected_video_tokens` on the full-size layout; the counts are
    converted to the paper convention (docs/flops.md §3) and turned into TFLOPs and % of the same model's vanilla, or
    reported as invalid (the ConfigError) or data-dependent; cells with a FastVID row are compared with it;
(c) the AdaTP operating points of conf/experiment/table1_adatp.yaml next to AdaTP's published % FLOPs targets;
(d) FastVID's settings outside the budget grid (DyCoke 32.5%, PruneVID β = 11%, PDrop and SparseVLM schedules);
(e) the input-only and FastV K = 2 keep ratios that hit AdaTP's published FLOPs ratios (solved numerically);
(f) meta-device cross-checks: full-size LLaVA-OV-7B counted with FlopCounterMode equals 2 × the analytic counts.

It exits 1 if a published row or a compared cell fails to match without a documented reason, or if an AdaTP
operating point misses its target. Rows from real runs go through `method_rows` / `render_method_rows`, which take
`(label, model, tokens_per_layer)` triples (the paper-convention `video_tokens_per_layer` of a result record).

This module renders and runs the command; the work is done by
`report.published` (the reference CSVs), `report.flops_checks` ((a), (f)), `report.flops_rows` (vanilla and method
rows), `report.flops_grid` ((b)-(d)) and `report.flops_keep` ((e)). Their public names are re-exported here.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence

from tabulate import tabulate

from adatp_bench.report.flops_checks import RowCheck, check_published_rows, explain_flagged, meta_cross_check
from adatp_bench.report.flops_grid import (
    DATA_DEPENDENT,
    FASTVID_EQUIVALENTS,
    KNOWN_GAPS,
    NEWLINE_RANKED,
    OUTSIDE_GRID,
    GridRow,
    OperatingPoint,
    OutsideGrid,
    evaluate_cell,
    full_size_layout,
    grid_rows,
    operating_point_rows,
    operating_points,
    outside_grid_rows,
    table1_grid,
)
from adatp_bench.report.flops_keep import (
    SCHEDULE_KINDS,
    KeepSolution,
    adatp_equivalents,
    keep_schedule,
    solve_keep_ratio,
)
from adatp_bench.report.flops_rows import (
    MethodRow,
    compact_schedule,
    method_rows,
    model_config,
    standard_entries,
    vanilla_schedule,
    vanilla_tflops,
)
from adatp_bench.report.published import (
    FLAGGED_ROWS,
    PUBLISHED_TABLES,
    REFERENCE_DIR,
    PublishedRow,
    adatp_targets,
    load_published_rows,
)

__all__ = [
    "DATA_DEPENDENT",
    "FASTVID_EQUIVALENTS",
    "FLAGGED_ROWS",
    "KNOWN_GAPS",
    "NEWLINE_RANKED",
    "OUTSIDE_GRID",
    "PUBLISHED_TABLES",
    "REFERENCE_DIR",
    "SCHEDULE_KINDS",
    "GridRow",
    "KeepSolution",
    "MethodRow",
    "OperatingPoint",
    "OutsideGrid",
    "PublishedRow",
    "RowCheck",
    "adatp_equivalents",
    "adatp_targets",
    "check_published_rows",
    "evaluate_cell",
    "explain_flagged",
    "full_size_layout",
    "grid_rows",
    "grid_table",
    "keep_schedule",
    "load_published_rows",
    "main",
    "meta_cross_check",
    "method_rows",
    "operating_point_rows",
    "operating_points",
    "outside_grid_rows",
    "render_grid",
    "render_method_rows",
    "render_operating_points",
    "render_outside_grid",
    "solve_keep_ratio",
    "standard_entries",
    "table1_grid",
    "vanilla_schedule",
    "vanilla_tflops",
]

# ---------------------------------------------------------------------------------------------------------------------
# rendering: grid cells, operating points, settings outside the grid, method rows
# ---------------------------------------------------------------------------------------------------------------------


def _num(value: float | None, alt: float | None, fmt: str) -> str:
    if value is None:
        return ""
    text = format(value, fmt)
    alt_text = format(alt, fmt) if alt is not None else text
    return text if alt_text == text else f"{text}–{alt_text}"


def _tokens_text(row: GridRow) -> str:
    if row.status == "invalid":
        return f"invalid: {row.message}"
    if row.status == "data-dependent":
        return DATA_DEPENDENT + (f"; {row.message}" if row.message else "")
    text = compact_schedule(row.tokens_per_layer)
    return text if row.tokens_per_layer_alt is None else f"{text} (†)"


def _published_text(row: GridRow) -> str:
    if row.published is None:
        return ""
    p = row.published
    where = f"{p.method} {p.retention}" if p.schedule else p.table
    if row.status == "data-dependent" and p.schedule:
        where += f": {p.schedule}"
    note = f"; {row.published_note}" if row.published_note else ""
    return f"{p.published_text} ({where}{note})"


def _match_text(row: GridRow) -> str:
    if row.published is None:
        return ""
    if row.matches is None:
        return f"n/a ({row.status})"
    if row.matches:
        return "yes"
    return "no (expected, see below)" if row.known_gap else "NO"


def grid_table(rows: Sequence[GridRow]) -> list[list[str]]:
    """The printed columns of each cell: method, budget, tokens per layer (or status), TFLOPs, % of vanilla, FastVID
    printed value, match."""
    return [
        [
            r.method,
            r.budget,
            _tokens_text(r),
            _num(r.tflops, r.tflops_alt, ".2f"),
            _num(r.pct, r.pct_alt, ".2f") + ("%" if r.pct is not None else ""),
            _published_text(r),
            _match_text(r),
        ]
        for r in rows
    ]


def render_grid(rows: Sequence[GridRow]) -> str:
    """Per model: one line per cell (method, budget, tokens per layer, TFLOPs, % of vanilla, FastVID comparison)."""
    out = []
    headers = [
        "method",
        "budget",
        "video tokens per layer (paper convention)",
        "TFLOPs",
        "% of vanilla",
        "FastVID printed",
        "match",
    ]
    for model in dict.fromkeys(r.model for r in rows):
        layout, layers = full_size_layout(model), model_config(model).text_config.num_hidden_layers
        newline = (
            "one trailing newline, not counted"
            if layout.newline_layout == "per_video"
            else f"{layout.num_newlines} row newlines, kept ones counted"
        )
        out.append(
            f"{model}: {layout.num_frames} frames × {layout.grid_h}×{layout.grid_w} tokens, {newline}; "
            f"{layers} layers; vanilla {vanilla_tflops(model):.2f} TFLOPs\n"
        )
        table = grid_table([r for r in rows if r.model == model])
        out.append(tabulate(table, headers=headers, disable_numparse=True) + "\n")
    return "\n".join(out)


def render_method_rows(entries: Iterable[tuple[str, str, Sequence[float]]]) -> str:
    """Text table of `method_rows(entries)`."""
    rows = [
        [r.label, r.model, compact_schedule(r.tokens_per_layer), f"{r.tflops:.2f}", f"{r.pct_of_vanilla:.2f}%"]
        for r in method_rows(entries)
    ]
    headers = ["setting", "model", "video tokens per layer", "TFLOPs", "% of vanilla"]
    return tabulate(rows, headers=headers, disable_numparse=True)


def render_operating_points(pairs: Sequence[tuple[OperatingPoint, GridRow]]) -> str:
    """AdaTP presets: schedule, TFLOPs and % of vanilla next to the published target."""
    table = [
        [
            op.name if op.method == op.name else f"{op.name} (method {op.method})",
            op.model,
            _tokens_text(row),
            _num(row.tflops, row.tflops_alt, ".2f"),
            _num(row.pct, row.pct_alt, ".4f") + "%",
            f"{op.target_pct:.2f}%",
            "yes" if row.pct is not None and f"{row.pct:.2f}" == f"{op.target_pct:.2f}" else "NO",
        ]
        for op, row in pairs
    ]
    headers = [
        "operating point",
        "model",
        "video tokens per layer",
        "TFLOPs",
        "% of vanilla",
        "published target",
        "equal at 2 decimals",
    ]
    return tabulate(table, headers=headers, disable_numparse=True)


def render_outside_grid(pairs: Sequence[tuple[str, GridRow]]) -> str:
    """FastVID settings outside the budget grid, compared with the printed rows."""
    table = [
        [
            label,
            row.method,
            row.model,
            _tokens_text(row),
            _num(row.tflops, row.tflops_alt, ".2f"),
            _published_text(row),
            _match_text(row),
        ]
        for label, row in pairs
    ]
    headers = ["FastVID row", "method", "model", "video tokens per layer", "TFLOPs", "printed", "match"]
    return tabulate(table, headers=headers, disable_numparse=True)


def _notes(rows: Sequence[GridRow]) -> str:
    """Why compared cells do not match, and matching cells whose token counts differ from the printed schedule."""
    gaps = [f"  {r.model} {r.method} {r.budget}: {r.known_gap}." for r in rows if r.matches is False and r.known_gap]
    counts = [
        f"  {r.model} {r.method} {r.budget}: ours {compact_schedule(r.tokens_per_layer)}, "
        f"printed {r.published.schedule}."
        for r in rows
        if r.matches and r.printed_schedule_differs and r.published is not None
    ]
    out = []
    if gaps:
        out.append("Compared rows that are not expected to match:\n" + "\n".join(gaps))
    if counts:
        out.append(
            "Rows whose TFLOPs match with token counts that differ from the printed schedule:\n" + "\n".join(counts)
        )
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------------------------------
# the command: (a)-(f)
# ---------------------------------------------------------------------------------------------------------------------


def main() -> None:
    """Print (a)-(f)."""
    start = time.perf_counter()
    print("FLOPs convention: LLM prefill, video tokens only, multiply-accumulates / 1e12, printed as TFLOPs")
    print("(FastVID App. A.2; docs/flops.md). Published values are for comparison only (report/reference/README.md).\n")

    checks = check_published_rows()
    print("(a) Published rows: ours vs printed (match = equal at the printed precision)\n")
    rows = [
        [
            c.row.table.split(" (")[0],
            c.row.method,
            c.row.retention,
            c.row.schedule.split(" (")[0],
            f"{c.ours:.4f}",
            c.row.published_text,
            "yes" if c.matches else ("NO (flagged, see below)" if c.row.flag else "NO"),
        ]
        for c in checks
    ]
    headers = ["table", "method", "R", "video tokens per layer", "ours", "printed", "match"]
    print(tabulate(rows, headers=headers, disable_numparse=True))
    matched = sum(c.matches for c in checks)
    print(f"\n{matched}/{len(checks)} rows match. Rows the formula does not reproduce (docs/flops.md §4):")
    for c in checks:
        if not c.matches:
            print("\n".join(explain_flagged(c)) if c.row.flag else f"  UNEXPECTED mismatch: {c.row}")

    grid = grid_rows()
    models, methods, budgets = table1_grid()
    print(
        f"\n(b) Table 1 grid (conf/experiment/table1.yaml: {len(models)} models × {len(methods)} methods × budgets "
        f"{', '.join(budgets)}): each method's expected_video_tokens on the full-size layout, % of the same model's "
        "vanilla\n"
    )
    print(render_grid(grid))
    print(
        "(†) pdrop/sparsevlm rank LLaVA-OV's trailing newline with the grid tokens; a–b = newline kept – dropped in "
        "the pruned layers (data-dependent by one token)."
    )
    print(_notes(grid))

    ops = operating_point_rows()
    print("\n(c) AdaTP operating points (conf/experiment/table1_adatp.yaml) vs AdaTP's published targets\n")
    print(render_operating_points(ops))

    outside = outside_grid_rows()
    print("\n(d) FastVID settings outside the budget grid vs FastVID's printed rows\n")
    print(render_outside_grid(outside))
    print(_notes([row for _, row in outside]))

    print("\n(e) Keep ratios equivalent to AdaTP's published FLOPs ratios (solved numerically)\n")
    sol_rows = [
        [
            s.model,
            f"{s.target_pct:.2f}%",
            SCHEDULE_KINDS[s.kind],
            f"{100 * s.keep:.2f}%",
            f"{s.tokens_per_frame:.1f}",
            s.tokens,
            f"{s.tokens_pct:.2f}%",
        ]
        for s in adatp_equivalents()
    ]
    print(
        tabulate(
            sol_rows,
            headers=["model", "AdaTP % FLOPs", "schedule", "keep", "tokens/frame", "kept tokens", "% with kept tokens"],
            disable_numparse=True,
        )
    )

    print("\n(f) Meta-device cross-check (FlopCounterMode, 2 FLOPs per MAC; docs/flops.md §8.2)\n")
    for line in meta_cross_check():
        print(line)
    print(f"\ndone in {time.perf_counter() - start:.1f} s")
    unexpected = [r for r in [*grid, *(row for _, row in outside)] if r.matches is False and not r.known_gap]
    missed = [op.name for op, row in ops if row.pct is None or f"{row.pct:.2f}" != f"{op.target_pct:.2f}"]
    for r in unexpected:
        print(f"UNEXPECTED mismatch: {r.model} {r.method} {r.budget}: {r.tflops} vs printed {r.published}")
    for name in missed:
        print(f"UNEXPECTED: operating point {name} misses its published target")
    if not all(c.matches or c.row.flag for c in checks) or unexpected or missed:
        raise SystemExit(1)


if __name__ == "__main__":
    main()

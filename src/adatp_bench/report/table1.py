"""Render a Table 1-style comparison from result records: Markdown, LaTeX, CSV and an accuracy-vs-FLOPs plot.

    python -m adatp_bench.report.table1 --experiment table1 --out results
    python -m adatp_bench.report.table1 --experiment demo --out results/demo

The grid comes from the experiment (``report/grid.py``); each cell's record is looked up by run id. Missing and failed
cells are printed as such and never filled. Published numbers (``report/reference/*.csv``) appear only in columns named
"published …", beside ours, for the rows whose setting matches a published row.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import sys
from pathlib import Path

import pandas as pd

from adatp_bench.errors import ConfigError
from adatp_bench.models.dims import cell_unreachable
from adatp_bench.models.specs import get_spec
from adatp_bench.regression import update_pending
from adatp_bench.report import plots
from adatp_bench.report.grid import Cell, experiment_cells, find_record, records_by_settings
from adatp_bench.report.published import published_row
from adatp_bench.report.subset import hard_subset_scores
from adatp_bench.results import ResultRecord

SUBSETS = ("all", "hard")
BENCH_ORDER = ["videomme", "mlvu_dev", "longvideobench_val_v", "mvbench"]
BENCH_TITLES = {
    "videomme": "VideoMME",
    "mlvu_dev": "MLVU",
    "longvideobench_val_v": "LongVideoBench",
    "mvbench": "MVBench",
}
#: The benchmarks FastVID's printed Avg covers (its other average, over the three without MVBench, is ``avg``).
FASTVID_AVG4 = frozenset({"videomme", "mlvu_dev", "longvideobench_val_v", "mvbench"})
FOOTNOTE = (
    "Scores on a 0–100 scale (LongVideoBench ×100); MLVU-dev is the macro average over its 7 task types (lmms-eval). "
    "TFLOPs follow FastVID App. A.2: LLM prefill multiply-accumulates over the video tokens entering each layer "
    "(recorded per sample), newline tokens counted where kept (LLaVA-Video), text, vision encoder and decode excluded; "
    "% FLOPs is relative to the same model's vanilla. 'missing' = not run yet, 'failed' = see the record's error, "
    "'n/a' = the method cannot reach that budget on that model (reason listed). '% of vanilla' = Avg / our vanilla "
    "Avg of the same model. Published numbers (report/reference/) are shown beside ours, never measured here. "
    "'agree %', 'flip %' and 'KL' need no labels: the share of parsed answers identical to the same model's vanilla "
    "cell, of first generated tokens that differ, and the mean KL(vanilla ‖ pruned) of the first-token distribution."
)


def setting_label(cell: Cell) -> str:
    """How the papers print a row's budget: "25%", "100%/25%" (FastV-style), or the preset name."""
    if cell.config.get("setting_label"):
        return str(cell.config.setting_label)
    settings = cell.method_settings()
    if "retention" not in settings:
        return "100%" if cell.method == "vanilla" else cell.config.method.get("label", cell.method)
    r = float(settings["retention"]) * 100
    return f"100%/{r:g}%" if cell.method in {"fastv"} else f"{r:g}%"


def unreachable(cell: Cell) -> str | None:
    """Why the cell's method cannot reach its budget on its model ("n/a", never run), or None."""
    return _unreachable(
        cell.model, cell.config.model.get("source"), cell.config.model.get("num_frames"), cell.method,
        json.dumps(cell.method_settings(), sort_keys=True, default=str),
    )  # fmt: skip


@functools.cache
def _unreachable(model: str, source: str | None, frames: int | None, method: str, settings: str) -> str | None:
    return cell_unreachable(model, source, frames, method, json.loads(settings))  # cached: one check per cell


def collect(cells: list[Cell], results_dir: Path, subset: str = "all", hard_reference: str = "r25") -> pd.DataFrame:
    """One row per cell with its status and numbers (long format). Status: ok, failed, missing (not run yet) or n/a
    (the method cannot reach the budget on that model; ``error`` holds the reason). With ``subset="hard"`` each
    score is the cell's accuracy on the items the downsampling baseline gets wrong (``report/subset.py``); a cell
    whose split is unavailable has status "no subset" and the reason."""
    if subset not in SUBSETS:
        raise ConfigError(f"report.subset={subset!r} is unknown; valid: {', '.join(SUBSETS)}")
    hard = hard_subset_scores(cells, results_dir, hard_reference) if subset == "hard" else None
    rows = []
    index = records_by_settings(results_dir) if any(c.run_id is None for c in cells) else None
    for cell in cells:
        match = find_record(cell, results_dir, index)
        rec: ResultRecord | None = match.record
        reason = unreachable(cell)
        if reason is not None:  # whatever an older version of the runner left on disk for it
            rec = None
        eff = rec.efficiency if rec is not None and rec.status == "ok" else {}
        status = "n/a" if reason else "missing" if rec is None else ("ok" if rec.status == "ok" else "failed")
        row = {
                "model": cell.model,
                "method": cell.method,
                "setting": setting_label(cell),
                "benchmark": str(cell.config.benchmark.benchmark),
                "run_id": rec.run_id if rec is not None else cell.run_id,
                "found_by": match.how,
                "status": status,
                "score": rec.score if status == "ok" else None,
                "frames": cell.config.model.get("num_frames") or get_spec(cell.model).num_frames,
                "visual_tokens_in": eff.get("visual_tokens_in"),
                "paper_tflops": eff.get("paper_tflops"),
                "pct_flops": eff.get("pct_flops_of_vanilla"),
                "prefill_ms": eff.get("latency_ms", {}).get("prefill_ms"),
                "error": reason or (rec.error if rec is not None and status == "failed" else None),
                "random_fallbacks": rec.n_random_fallbacks if status == "ok" else None,
                "n_samples": rec.n_samples if status == "ok" else None,
                # label-free comparison with the same model's vanilla cell on the same data (regression.py)
                "agreement_pct": rec.regression.get("agreement_pct") if status == "ok" else None,
                "flip_pct": rec.regression.get("first_token_flip_pct") if status == "ok" else None,
                "mean_kl": rec.regression.get("mean_kl") if status == "ok" else None,
                "n_compared": rec.regression.get("n_compared") if status == "ok" else None,
        }  # fmt: skip
        if hard is not None and status == "ok":  # report.subset=hard: the score on the row's hard items only
            part = hard[cell.key]
            row.update(score=part.score, n_samples=part.n_items, random_fallbacks=None, hard_reference=part.reference)
            if part.score is None:
                row.update(status="no subset", error=part.why)
        rows.append(row)
    return pd.DataFrame(rows)


def pivot(long: pd.DataFrame) -> pd.DataFrame:
    """Rows (model, method, setting): our per-benchmark scores, average, FLOPs, % of our own vanilla and drift from
    vanilla; then the matching published row (per-benchmark scores, average, TFLOPs, % FLOPs, % of its vanilla) and
    Δ = ours − published. Cells that hold no score show their status (missing, failed, n/a)."""
    benches = benchmark_order(long)
    out = []
    for (model, method, setting), group in long.groupby(["model", "method", "setting"], sort=False):
        row: dict[str, object] = {"model": model, "method": method, "setting": setting}
        scores = []
        for bench in benches:
            hit = group[group.benchmark == bench]
            if hit.empty:
                continue
            first = hit.iloc[0]
            row[bench_title(bench)] = first.score if first.status == "ok" else first.status
            if first.status == "ok":
                scores.append(first.score)
        present = [b for b in benches if not group[group.benchmark == b].empty]
        row["Avg"] = sum(scores) / len(scores) if scores and len(scores) == len(present) else "—"
        ok = group[group.status == "ok"]
        row["TFLOPs"] = ok.paper_tflops.mean() if not ok.empty else None
        row["% FLOPs"] = ok.pct_flops.mean() if not ok.empty else None
        row["prefill ms"] = ok.prefill_ms.mean() if not ok.empty else None
        row.update(vs_vanilla(ok, method))
        row.update(published_columns(model, method, setting, present))
        reasons = sorted(set(group[group.status == "n/a"].error.dropna()))
        row["n/a because"] = "; ".join(short_reason(r) for r in reasons) or None
        out.append(row)
    table = pd.DataFrame(out)
    vanilla = table[(table.method == "vanilla") & table.Avg.map(_is_number)]
    base = dict(zip(vanilla.model, vanilla.Avg, strict=False))
    # "% of vanilla" always divides by our own vanilla row of the same model, never by a published one
    pairs = zip(table.model, table.Avg, strict=True)
    pct = [100 * avg / base[m] if _is_number(avg) and base.get(m) else None for m, avg in pairs]
    table.insert(table.columns.get_loc("% FLOPs") + 1, "% of vanilla", pct)
    for bench in [*present_titles(table, benches), "Avg"]:
        if f"published {bench}" in table:
            table[f"Δ {bench}"] = [
                ours - pub if _is_number(ours) and _is_number(pub) else None
                for ours, pub in zip(table[bench], table[f"published {bench}"], strict=True)
            ]
    return table


def bench_title(bench: str) -> str:
    """A benchmark's column title (VideoMME, MLVU, LongVideoBench; others by name)."""
    return BENCH_TITLES.get(bench, bench)


def present_titles(table: pd.DataFrame, benches: list[str]) -> list[str]:
    """The benchmark columns the table has, in order."""
    return [bench_title(b) for b in benches if bench_title(b) in table]


def published_columns(model: str, method: str, setting: str, benches: list[str]) -> dict[str, object]:
    """The published row matching a table row (``report/published.py``), under columns named "published …"."""
    pub = published_row(model, method, setting)
    if pub is None:
        return {"published Avg": None, "published source": None}
    scores: dict[str, float] = pub["scores"]  # type: ignore[assignment]
    out: dict[str, object] = {f"published {bench_title(b)}": scores.get(b) for b in benches if b in BENCH_ORDER}
    out.update({
        "published Avg": pub["avg"],
        "published TFLOPs": pub["tflops"],
        "published % FLOPs": pub["flops_pct"],
        "published % of vanilla": pub["avg_pct"],
        "published source": pub["source"],
    })  # fmt: skip
    if "mvbench" in benches:  # the published Avg must average the benchmarks ours does
        shown = [b for b in benches if b in BENCH_ORDER]
        if set(shown) == FASTVID_AVG4 and pub.get("avg4") is not None:
            out["published Avg"], out["published % of vanilla"] = pub["avg4"], pub.get("avg4_pct")
        else:
            values = [scores.get(b) for b in shown]
            mean = sum(values) / len(values) if values and None not in values else None  # type: ignore[arg-type]
            out["published Avg"], out["published % of vanilla"] = mean, None
    return out


def short_reason(reason: str) -> str:
    """The part of a method's error that says why (after "is impossible:"), for a table cell."""
    return reason.split(" is impossible: ", 1)[-1]


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and not math.isnan(value)


def benchmark_order(long: pd.DataFrame) -> list[str]:
    """Table 1's benchmarks in the paper's order, then any other benchmark in the grid (e.g. ``custom``)."""
    seen = list(dict.fromkeys(long.benchmark))
    return [b for b in BENCH_ORDER if b in seen] + [b for b in seen if b not in BENCH_ORDER]


def vs_vanilla(ok: pd.DataFrame, method: str) -> dict[str, float | None]:
    """A row's label-free drift from vanilla, pooled over its benchmarks (weighted by samples compared): answer
    agreement %, first-token flip %, mean KL(vanilla ‖ pruned). Vanilla itself is the reference (100 / 0 / 0)."""
    if method == "vanilla":
        return {"agree %": 100.0 if not ok.empty else None, "flip %": 0.0 if not ok.empty else None, "KL": None}
    done = ok[ok.n_compared.fillna(0) > 0]
    if done.empty:
        return {"agree %": None, "flip %": None, "KL": None}
    weights = done.n_compared.astype(float)
    columns = {"agree %": "agreement_pct", "flip %": "flip_pct", "KL": "mean_kl"}
    return {shown: float((done[col] * weights).sum() / weights.sum()) for shown, col in columns.items()}


def _fmt(value: object) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.3g}" if 0 < abs(value) < 0.1 else f"{value:.2f}"  # tiny models: keep significant digits
    return str(value)


MEASURED_TAIL = ["Avg", "TFLOPs", "% FLOPs", "% of vanilla", "agree %", "flip %", "KL"]


def measured_view(table: pd.DataFrame) -> pd.DataFrame:
    """Our numbers only: scores (or the cell's status), average, FLOPs, % of our vanilla, drift from vanilla."""
    columns = ["model", "method", "setting", *[c for c in table.columns if c in _bench_titles(table)], *MEASURED_TAIL]
    if table["n/a because"].notna().any():
        columns.append("n/a because")
    return table[columns]


def beside_view(table: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """Rows with a published counterpart: "ours / published (Δ)" per benchmark and average, TFLOPs, % FLOPs and
    % of vanilla side by side, and a numbered source. Returns the view and the sources in number order."""
    rows = table[table["published Avg"].notna()]
    sources = list(dict.fromkeys(rows["published source"]))
    out = []
    for _, r in rows.iterrows():
        shown: dict[str, str] = {"model": r.model, "method": r.method, "setting": r.setting}
        for col in [*_bench_titles(table), "Avg"]:
            if f"published {col}" in table:
                delta = r.get(f"Δ {col}")
                tail = f" ({delta:+.2f})" if _is_number(delta) else ""
                shown[f"{col} ours / published (Δ)"] = f"{_fmt(r[col])} / {_fmt(r.get(f'published {col}'))}{tail}"
        for col in ("TFLOPs", "% FLOPs", "% of vanilla"):
            shown[f"{col} ours / published"] = f"{_fmt(r[col])} / {_fmt(r.get(f'published {col}'))}"
        shown["source"] = f"[{sources.index(r['published source']) + 1}]"
        out.append(shown)
    return pd.DataFrame(out), sources


def _bench_titles(table: pd.DataFrame) -> list[str]:
    fixed = {"model", "method", "setting", "prefill ms", "n/a because", *MEASURED_TAIL}
    return [c for c in table.columns if c not in fixed and not c.startswith(("published ", "Δ "))]


def render(table: pd.DataFrame, long: pd.DataFrame, out_dir: Path, title: str, stem: str = "table1") -> dict[str, Path]:
    """Write <stem>.{md,csv,tex}, <stem>_flops.png (accuracy and agreement vs FLOPs per model, published points
    hollow) and <stem>_latency.png into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {k: out_dir / f"{stem}.{k}" for k in ("md", "csv", "tex")}
    table.to_csv(paths["csv"], index=False)
    measured = measured_view(table).map(_fmt)
    beside, sources = beside_view(table)
    md = [f"# {title}", "", "## Measured", "", measured.to_markdown(index=False), "", f"_{FOOTNOTE}_", ""]
    md += ["## Beside the paper", ""]
    if stem.endswith("_hard"):
        md += ["Published numbers score the full benchmarks, so none stands beside a hard-subset table."]
    elif beside.empty:
        md += ["No row of this grid has a published counterpart (the published tables cover LLaVA-OneVision-7B, "
               "LLaVA-Video-7B and AdaTP's headline rows at their printed settings)."]  # fmt: skip
    else:
        md += [beside.to_markdown(index=False), "", "Δ = ours − published; % of vanilla divides by the same model's "
               "vanilla row (ours by our vanilla, published by the source's). Sources:"]  # fmt: skip
        md += [f"{i}. {src}" for i, src in enumerate(sources, 1)]
    md += _cell_notes(long)
    paths["md"].write_text("\n".join(md) + "\n")
    tex = [measured.to_latex(index=False, caption=f"{title}: measured", label="tab:table1", escape=True)]
    if not beside.empty:
        caption = f"{title} beside the published numbers (" + "; ".join(
            f"[{i}] {src}" for i, src in enumerate(sources, 1)) + ")"  # fmt: skip
        tex.append(beside.to_latex(index=False, caption=caption, label="tab:table1-published", escape=True))
    paths["tex"].write_text("\n".join(tex) + f"% {FOOTNOTE}\n")
    paths["png"] = plots.accuracy_vs_flops(table, out_dir / f"{stem}_flops.png", title)
    paths["latency_png"] = plots.latency_vs_flops(table, out_dir / f"{stem}_latency.png", title)
    return paths


def _cell_notes(long: pd.DataFrame) -> list[str]:
    """Markdown notes under the tables: n/a cells (why), LongVideoBench random fallbacks, failed cells (error)."""
    md: list[str] = []
    unreachable_cells = long[long.status == "n/a"].drop_duplicates(["model", "method", "setting"])
    if not unreachable_cells.empty:
        md += ["", "Not applicable (n/a): the method cannot reach that budget on that model, so the cell is never run:"]
        md += [f"- {r.model} / {r.method} {r.setting}: {r.error}" for r in unreachable_cells.itertuples()]
    unsplit = long[long.status == "no subset"]
    if not unsplit.empty:
        md += ["", "No hard-subset score (report.subset=hard):"]
        md += [f"- {r.model} / {r.method} {r.setting} / {r.benchmark}: {r.error}" for r in unsplit.itertuples()]
    guessed = long[long.random_fallbacks.fillna(0) > 0]
    if not guessed.empty:
        md += ["", "LongVideoBench answers without a parseable letter, which lmms-eval replaces by a random choice:"]
        md += [f"- {r.model} / {r.method} {r.setting}: {int(r.random_fallbacks)} of {int(r.n_samples)}"
               for r in guessed.itertuples()]  # fmt: skip
    failed = long[long.status == "failed"]
    if not failed.empty:
        md += ["", "Failed cells:"]
        md += [
            f"- {r.model} / {r.method} {r.setting} / {r.benchmark} ({r.run_id}): {r.error}"
            for r in failed.itertuples()
        ]
    return md


def build(
    experiment: str, results_dir: Path, out_dir: Path, overrides: list[str]
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Path]]:
    """The grid of one or more experiments (comma-separated) → (table, long, written files)."""
    cells = [c for exp in experiment.split(",") for c in experiment_cells(exp, overrides)]
    update_pending(results_dir)  # pruned cells that finished before their vanilla reference
    report = cells[0].config.get("report") or {} if cells else {}
    subset, reference = str(report.get("subset", "all")), str(report.get("hard_reference", "r25"))
    long = collect(cells, results_dir, subset, reference)
    table = pivot(long)
    if subset == "hard":  # published numbers are full-set scores: nothing to put beside a subset
        table = table.drop(columns=[c for c in table.columns if c.startswith(("published ", "Δ "))])
        table["published Avg"], table["published source"] = None, None
        title, stem = f"Table 1 ({experiment}), hard subset (items method=downsample answers wrongly)", "table1_hard"
        return table, long, render(table, long, out_dir, title, stem=stem)
    return table, long, render(table, long, out_dir, f"Table 1 ({experiment})")


def main(argv: list[str] | None = None) -> None:
    """CLI: render the table of an experiment from ``results/runs``."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--experiment", default="table1", help="one or more experiments, comma-separated")
    parser.add_argument("--results", type=Path, default=Path("results/runs"))
    parser.add_argument("--out", type=Path, default=Path("results"))
    parser.add_argument(
        "--wandb",
        choices=["offline", "online", "disabled"],
        default=None,
        help="also log the table and plot as a W&B summary run (offline: nothing leaves the machine)",
    )
    parser.add_argument("--wandb-project", default="adatp-bench")
    parser.add_argument("--wandb-dir", type=Path, default=Path("wandb"))
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides the sweep used, e.g. model=llava_ov_7b")
    args = parser.parse_args(argv)
    table, long, paths = build(args.experiment, args.results, args.out, args.overrides)
    if args.wandb:
        from adatp_bench.loggers.wandb import WandbLogger

        logger = WandbLogger(dir=str(args.wandb_dir.resolve()), mode=args.wandb, project=args.wandb_project)
        print("W&B summary run:", logger.log_table(args.experiment, table, paths))
    counts = long.status.value_counts().to_dict()
    print(measured_view(table).map(_fmt).to_markdown(index=False))
    print(f"\ncells: {counts}; wrote " + ", ".join(str(p) for p in paths.values()))
    if counts.get("failed"):
        # Everything is written first; the exit status then says the table holds failed cells (listed in table1.md).
        sys.exit(f"{counts['failed']} failed cell(s) in the table; their errors are listed in {paths['md']}")


if __name__ == "__main__":
    main()

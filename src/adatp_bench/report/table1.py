"""Render a Table 1-style comparison from result records: Markdown, LaTeX, CSV and an accuracy-vs-FLOPs plot.

    python -m adatp_bench.report.table1 --experiment table1 --out results
    python -m adatp_bench.report.table1 --experiment demo --out results/demo

The grid comes from the experiment (``report/grid.py``); each cell's record is looked up by run id. Missing and failed
cells are printed as such and never filled. Published numbers (``report/reference/*.csv``) appear only in columns named
"published …", beside ours, for the rows whose setting matches a published row.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import pandas as pd

from adatp_bench.regression import update_pending
from adatp_bench.report.grid import Cell, experiment_cells, find_record, records_by_settings
from adatp_bench.report.published import published_row
from adatp_bench.results import ResultRecord

BENCH_ORDER = ["videomme", "mlvu_dev", "longvideobench_val_v"]
BENCH_TITLES = {"videomme": "VideoMME", "mlvu_dev": "MLVU", "longvideobench_val_v": "LongVideoBench"}
FOOTNOTE = (
    "Scores on a 0–100 scale (LongVideoBench ×100); MLVU-dev is the macro average over its 7 task types (lmms-eval). "
    "TFLOPs follow FastVID App. A.2: LLM prefill multiply-accumulates over the video tokens entering each layer "
    "(recorded per sample), newline tokens counted where kept (LLaVA-Video), text, vision encoder and decode excluded; "
    "% FLOPs is relative to the same model's vanilla. 'missing' = not run yet, 'failed' = see the record's error. "
    "Columns marked 'published' are copied from the papers (report/reference/), not measured here. "
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


def collect(cells: list[Cell], results_dir: Path) -> pd.DataFrame:
    """One row per cell with its status and numbers (long format)."""
    rows = []
    index = records_by_settings(results_dir) if any(c.run_id is None for c in cells) else None
    for cell in cells:
        match = find_record(cell, results_dir, index)
        rec: ResultRecord | None = match.record
        eff = rec.efficiency if rec is not None and rec.status == "ok" else {}
        status = "missing" if rec is None else ("ok" if rec.status == "ok" else "failed")
        rows.append(
            {
                "model": cell.model,
                "method": cell.method,
                "setting": setting_label(cell),
                "benchmark": str(cell.config.benchmark.benchmark),
                "run_id": rec.run_id if rec is not None else cell.run_id,
                "found_by": match.how,
                "status": status,
                "score": rec.score if status == "ok" else None,
                "paper_tflops": eff.get("paper_tflops"),
                "pct_flops": eff.get("pct_flops_of_vanilla"),
                "prefill_ms": eff.get("latency_ms", {}).get("prefill_ms"),
                "error": rec.error if rec is not None and status == "failed" else None,
                "random_fallbacks": rec.n_random_fallbacks if status == "ok" else None,
                "n_samples": rec.n_samples if status == "ok" else None,
                # label-free comparison with the same model's vanilla cell on the same data (regression.py)
                "agreement_pct": rec.regression.get("agreement_pct") if status == "ok" else None,
                "flip_pct": rec.regression.get("first_token_flip_pct") if status == "ok" else None,
                "mean_kl": rec.regression.get("mean_kl") if status == "ok" else None,
                "n_compared": rec.regression.get("n_compared") if status == "ok" else None,
            }
        )
    return pd.DataFrame(rows)


def pivot(long: pd.DataFrame) -> pd.DataFrame:
    """Rows (model, method, setting) × benchmark scores, average, FLOPs, and the published reference columns."""
    out = []
    for (model, method, setting), group in long.groupby(["model", "method", "setting"], sort=False):
        row: dict[str, object] = {"model": model, "method": method, "setting": setting}
        scores = []
        for bench in benchmark_order(long):
            hit = group[group.benchmark == bench]
            if hit.empty:
                continue
            first = hit.iloc[0]
            row[BENCH_TITLES.get(bench, bench)] = first.score if first.status == "ok" else first.status
            if first.status == "ok":
                scores.append(first.score)
        present = [b for b in benchmark_order(long) if not group[group.benchmark == b].empty]
        row["Avg"] = sum(scores) / len(scores) if scores and len(scores) == len(present) else "—"
        ok = group[group.status == "ok"]
        row["TFLOPs"] = ok.paper_tflops.mean() if not ok.empty else None
        row["% FLOPs"] = ok.pct_flops.mean() if not ok.empty else None
        row["prefill ms"] = ok.prefill_ms.mean() if not ok.empty else None
        row.update(vs_vanilla(ok, method))
        pub = published_row(model, method, setting)
        row["published avg"] = pub["avg"] if pub else None
        row["published % FLOPs"] = pub["flops_pct"] if pub else None
        row["published source"] = pub["source"] if pub else None
        out.append(row)
    table = pd.DataFrame(out)
    vanilla = table[(table.method == "vanilla") & table.Avg.map(lambda v: isinstance(v, float))]
    base = dict(zip(vanilla.model, vanilla.Avg, strict=False))
    table["Avg / vanilla %"] = [
        100 * a / base[m] if isinstance(a, float) and base.get(m) else None
        for m, a in zip(table.model, table.Avg, strict=True)
    ]
    return table


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


def render(table: pd.DataFrame, long: pd.DataFrame, out_dir: Path, title: str) -> dict[str, Path]:
    """Write table1.{md,csv,tex} and table1_flops.png into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {k: out_dir / f"table1.{k}" for k in ("md", "csv", "tex")}
    table.to_csv(paths["csv"], index=False)
    shown = table.drop(columns=["published source", "prefill ms"]).map(_fmt)
    sources = sorted({s for s in table["published source"].dropna()})
    md = [f"# {title}", "", shown.to_markdown(index=False), "", f"_{FOOTNOTE}_"]
    if sources:
        md += ["", "Published columns: " + "; ".join(sources)]
    guessed = long[long.random_fallbacks.fillna(0) > 0]
    if not guessed.empty:
        md += ["", "LongVideoBench answers without a parseable letter, which lmms-eval replaces by a random choice:"]
        md += [f"- {r.model} / {r.method} {r.setting}: {int(r.random_fallbacks)} of {int(r.n_samples)}"
               for r in guessed.itertuples()]
    failed = long[long.status == "failed"]
    if not failed.empty:
        md += ["", "Failed cells:"]
        md += [
            f"- {r.model} / {r.method} {r.setting} / {r.benchmark} ({r.run_id}): {r.error}"
            for r in failed.itertuples()
        ]
    paths["md"].write_text("\n".join(md) + "\n")
    latex = shown.to_latex(index=False, caption=title, label="tab:table1", escape=True)
    paths["tex"].write_text(latex + f"% {FOOTNOTE}\n")
    paths["png"] = plot(table, out_dir / "table1_flops.png", title)
    return paths


def plot(table: pd.DataFrame, path: Path, title: str) -> Path:
    """Two panels against % of vanilla FLOPs, one line per (method, model): the average score (published points as
    grey crosses) and the agreement with vanilla's answers (label-free)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), dpi=120)
    for ax, column, label in ((axes[0], "Avg", "average score"), (axes[1], "agree %", "agreement with vanilla (%)")):
        data = table[table[column].map(lambda v: isinstance(v, float) and not math.isnan(v))]
        data = data[data["% FLOPs"].notna()]
        for (model, method), group in data.groupby(["model", "method"]):
            ax.plot(group["% FLOPs"], group[column], marker="o", linestyle="-", label=f"{method} ({model})")
        if column == "Avg":
            pub = table[table["published avg"].notna() & table["published % FLOPs"].notna()]
            if not pub.empty:
                ax.scatter(pub["published % FLOPs"], pub["published avg"], marker="x", color="grey", label="published")
        ax.set_xlabel("% of vanilla FLOPs (paper convention)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=6, ncol=2)
        else:
            ax.text(0.5, 0.5, "no finished rows yet", ha="center", va="center", transform=ax.transAxes)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


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
    cells = [c for exp in args.experiment.split(",") for c in experiment_cells(exp, args.overrides)]
    update_pending(args.results)  # pruned cells that finished before their vanilla reference
    long = collect(cells, args.results)
    table = pivot(long)
    paths = render(table, long, args.out, f"Table 1 ({args.experiment})")
    if args.wandb:
        from adatp_bench.loggers.wandb import WandbLogger

        logger = WandbLogger(dir=str(args.wandb_dir.resolve()), mode=args.wandb, project=args.wandb_project)
        print("W&B summary run:", logger.log_table(args.experiment, table, paths))
    counts = long.status.value_counts().to_dict()
    print(table.drop(columns=["published source"]).map(_fmt).to_markdown(index=False))
    print(f"\ncells: {counts}; wrote " + ", ".join(str(p) for p in paths.values()))
    if counts.get("failed"):
        # Everything is written first; the exit status then says the table holds failed cells (listed in table1.md).
        sys.exit(f"{counts['failed']} failed cell(s) in the table; their errors are listed in {paths['md']}")


if __name__ == "__main__":
    main()

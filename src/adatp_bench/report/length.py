"""Length extrapolation (FastVID Table 10 style): more sampled frames at the same visual-token budget.

    python -m adatp_bench.report.length --experiment length,length_vanilla --out results/length
    python -m adatp_bench.report.length --experiment length_demo,length_demo_vanilla --out results/length_demo

Each row is a method at ``F`` frames and retention ``r`` (``conf/length/``: ``F·r`` = the model's default frame
count), next to vanilla at the default frames. Columns: frames, visual tokens entering the LLM, the average score,
its change against that vanilla row, and the paper-convention FLOPs as a % of that vanilla row's (the cells' own
"% FLOPs" compare with an unpruned run at the same, larger, frame count). The plot draws the score against frames,
one line per method, vanilla as a horizontal reference.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from adatp_bench.report import plots, table1
from adatp_bench.report.grid import experiment_cells


def length_table(long: pd.DataFrame) -> pd.DataFrame:
    """One row per (model, method, frames): frames, visual tokens in, Avg, Δ vs vanilla, % of vanilla's FLOPs."""
    table = table1.pivot(long)
    first = long.drop_duplicates(["model", "method", "setting"]).set_index(["model", "method", "setting"])
    keys = list(zip(table.model, table.method, table.setting, strict=True))
    table.insert(3, "frames", [int(first.loc[k, "frames"]) for k in keys])
    ok = long[long.status == "ok"].groupby(["model", "method", "setting"]).visual_tokens_in.mean()
    table.insert(4, "visual tokens", [ok.get(k) for k in keys])
    vanilla = table[table.method == "vanilla"].set_index("model")
    base_avg = {m: v for m, v in vanilla.Avg.items() if table1._is_number(v)}
    base_tflops = {m: v for m, v in vanilla.TFLOPs.items() if table1._is_number(v)}
    table["Δ Avg vs vanilla"] = [
        a - base_avg[m] if table1._is_number(a) and m in base_avg else None
        for m, a in zip(table.model, table.Avg, strict=True)
    ]
    table["% of vanilla FLOPs"] = [
        100 * t / base_tflops[m] if table1._is_number(t) and base_tflops.get(m) else None
        for m, t in zip(table.model, table.TFLOPs, strict=True)
    ]
    return table.sort_values(["model", "method", "frames"], kind="stable").reset_index(drop=True)


COLUMNS = ["model", "method", "setting", "frames", "visual tokens", "Avg", "Δ Avg vs vanilla", "TFLOPs",
           "% of vanilla FLOPs"]  # fmt: skip


def render(table: pd.DataFrame, long: pd.DataFrame, out_dir: Path, title: str) -> dict[str, Path]:
    """Write length.{md,csv} and length_frames.png into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"md": out_dir / "length.md", "csv": out_dir / "length.csv", "png": out_dir / "length_frames.png"}
    table.to_csv(paths["csv"], index=False)
    benches = [c for c in table1._bench_titles(table) if c not in COLUMNS]
    shown = table[[*COLUMNS[:5], *benches, *COLUMNS[5:]]].map(table1._fmt)
    md = [f"# {title}", "", shown.to_markdown(index=False), "",
          "_Every pruned row keeps about the visual tokens of vanilla at its default frames (frames × retention = the "
          "default frame count); Δ and % FLOPs are against that vanilla row. Scores on a 0–100 scale._"]  # fmt: skip
    missing = long[long.status != "ok"]
    if not missing.empty:
        md += ["", "Cells without a score:"]
        for r in missing.itertuples():
            why = f" ({r.error})" if r.error else ""
            md.append(f"- {r.model} / {r.method} {r.setting} / {r.benchmark}: {r.status}{why}")
    paths["md"].write_text("\n".join(md) + "\n")
    score_vs_frames(table, paths["png"], title)
    return paths


def score_vs_frames(table: pd.DataFrame, path: Path, title: str) -> Path:
    """Per model: the average score against sampled frames at a fixed token budget; vanilla dashed."""
    plt = plots.pyplot()
    colours = plots.method_colours(table)
    models = list(dict.fromkeys(table.model)) or ["(none)"]
    fig, axes = plt.subplots(1, len(models), figsize=(5.2 * len(models), 3.9), dpi=120, squeeze=False)
    fig.suptitle(title)
    for ax, model in zip(axes[0], models, strict=True):
        rows = table[(table.model == model) & table.Avg.map(table1._is_number)]
        for method, group in rows[rows.method != "vanilla"].groupby("method", sort=False):
            ax.plot(group.frames, group.Avg.astype(float), marker="o", color=colours[method], label=method)
        vanilla = rows[rows.method == "vanilla"]
        if not vanilla.empty:
            ax.axhline(float(vanilla.Avg.iloc[0]), linestyle="--", color="grey",
                       label=f"vanilla ({int(vanilla.frames.iloc[0])} frames)")  # fmt: skip
        ax.set_xscale("log", base=2)
        ax.set_title(model, fontsize=9)
        ax.set_xlabel("sampled frames (same visual-token budget)")
        ax.set_ylabel("average score")
        ax.grid(alpha=0.3)
        if rows.empty:
            plots.empty_panel(ax)
        else:
            ax.legend(fontsize=6, ncol=2)
    return plots.save_figure(fig, path)


def main(argv: list[str] | None = None) -> None:
    """CLI: render the length-extrapolation table and plot from ``results/runs``."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--experiment", default="length,length_vanilla", help="experiments, comma-separated")
    parser.add_argument("--results", type=Path, default=Path("results/runs"))
    parser.add_argument("--out", type=Path, default=Path("results/length"))
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides the sweeps used")
    args = parser.parse_args(argv)
    cells = [c for exp in args.experiment.split(",") for c in experiment_cells(exp, args.overrides)]
    long = table1.collect(cells, args.results)
    table = length_table(long)
    paths = render(table, long, args.out, f"Length extrapolation ({args.experiment})")
    print(table[[c for c in COLUMNS if c in table]].map(table1._fmt).to_markdown(index=False))
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    failed = int((long.status == "failed").sum())
    if failed:
        sys.exit(f"{failed} failed cell(s); their status is listed in {paths['md']}")


if __name__ == "__main__":
    main()

"""Table 1's figures, from the pivoted table (``report/table1.py``): one panel per model.

- :func:`accuracy_vs_flops`: average score and agreement with vanilla against % of vanilla FLOPs; our rows are lines
  with filled markers, the matching published rows hollow markers of the same colour (never joined to ours);
- :func:`latency_vs_flops`: measured prefill latency against % FLOPs, with the FLOPs-proportional line through our
  vanilla point (a method on that line turns every FLOP saved into time saved).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd


def pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _numeric(series: pd.Series) -> pd.Series:
    return series.map(lambda v: isinstance(v, int | float) and not isinstance(v, bool) and not math.isnan(v))


def method_colours(table: pd.DataFrame) -> dict[str, Any]:
    """One colour per method, the same in every panel and figure (tab20, in the table's order)."""
    plt = pyplot()
    palette = plt.get_cmap("tab20").colors
    return {m: palette[i % len(palette)] for i, m in enumerate(dict.fromkeys(table.method))}


def _panels(n: int, rows: int, title: str) -> tuple[Any, Any]:
    plt = pyplot()
    fig, axes = plt.subplots(rows, n, figsize=(5.2 * n, 3.9 * rows), dpi=120, squeeze=False)
    fig.suptitle(title)
    return fig, axes


def save_figure(fig: Any, path: Path) -> Path:
    """Lay ``fig`` out tightly, write it to ``path`` and close it."""
    plt = pyplot()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def empty_panel(ax: Any) -> None:
    """Mark a panel that has nothing to draw yet."""
    ax.text(0.5, 0.5, "no finished rows yet", ha="center", va="center", transform=ax.transAxes)


def accuracy_vs_flops(table: pd.DataFrame, path: Path, title: str) -> Path:
    """Per model: the average score vs % FLOPs (published rows as hollow markers) and, below, the agreement with the
    same model's vanilla answers (label-free)."""
    models = list(dict.fromkeys(table.model)) or ["(none)"]
    colours = method_colours(table)
    fig, axes = _panels(len(models), 2, title)
    for col, model in enumerate(models):
        rows = table[table.model == model]
        for ax, column, label in ((axes[0][col], "Avg", "average score"), (axes[1][col], "agree %", "agreement (%)")):
            ours = rows[_numeric(rows[column]) & rows["% FLOPs"].notna()] if column in rows else rows.iloc[0:0]
            for method, group in ours.groupby("method", sort=False):
                group = group.sort_values("% FLOPs")
                ax.plot(group["% FLOPs"], group[column].astype(float), marker="o", color=colours[method], label=method)
            drawn = not ours.empty
            if column == "Avg" and "published % FLOPs" in rows:
                pub = rows[rows["published Avg"].notna() & rows["published % FLOPs"].notna()]
                for method, group in pub.groupby("method", sort=False):
                    ax.scatter(
                        group["published % FLOPs"], group["published Avg"], facecolors="none",
                        edgecolors=colours[method], s=46, linewidths=1.4, label=f"{method} (published)",
                    )  # fmt: skip
                drawn = drawn or not pub.empty
            ax.set_title(model, fontsize=9)
            ax.set_xlabel("% of vanilla FLOPs (paper convention)")
            ax.set_ylabel(label)
            ax.grid(alpha=0.3)
            if drawn:
                ax.legend(fontsize=6, ncol=2)
            else:
                empty_panel(ax)
    return save_figure(fig, path)


def latency_vs_flops(table: pd.DataFrame, path: Path, title: str) -> Path:
    """Per model: measured prefill latency (mean over the row's cells) vs % FLOPs, and the FLOPs-proportional line
    ``vanilla_ms · x / 100`` through our vanilla row."""
    models = list(dict.fromkeys(table.model)) or ["(none)"]
    colours = method_colours(table)
    fig, axes = _panels(len(models), 1, f"{title}: prefill latency")
    for col, model in enumerate(models):
        ax = axes[0][col]
        rows = table[(table.model == model) & table["prefill ms"].notna() & table["% FLOPs"].notna()]
        for method, group in rows.groupby("method", sort=False):
            group = group.sort_values("% FLOPs")
            ax.plot(group["% FLOPs"], group["prefill ms"], marker="o", color=colours[method], label=method)
        vanilla = rows[rows.method == "vanilla"]
        if not vanilla.empty:
            ms = float(vanilla["prefill ms"].iloc[0])
            ax.plot([0, 100], [0, ms], linestyle="--", color="grey", linewidth=1, label="FLOPs-proportional")
        ax.set_title(model, fontsize=9)
        ax.set_xlabel("% of vanilla FLOPs (paper convention)")
        ax.set_ylabel("prefill latency (ms)")
        ax.grid(alpha=0.3)
        if rows.empty:
            empty_panel(ax)
        else:
            ax.legend(fontsize=6, ncol=2)
    return save_figure(fig, path)

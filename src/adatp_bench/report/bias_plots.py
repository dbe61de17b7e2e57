"""Figures of ``make bias`` (``report/bias.py``, docs/bias.md), from its tables, with matplotlib's Agg backend.

- ``bias_frames_layers.png``: attention mass per frame (rows) at every layer (columns), means over samples;
- ``bias_global.png``: per layer, the share of the top-q tokens in the last k frames against the uniform share k/F
  (the paper's global-bias statistic, arXiv 2505.20100 §1), and the attention mass of those frames;
- ``bias_local.png``: the H×W attention map (summed over frames, normalised) of a few layers, titled with max/mean;
- ``bias_before_after.png``: where the kept tokens lie at retention r: uniform, plain attention top-r, AdaTP.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from adatp_bench.report.plots import pyplot, save_figure


def plot_all(out: Path, tables: dict[str, Any], settings: Any) -> dict[str, Path]:
    """Draw every figure into ``out``; return their paths by name."""
    return {
        "fig_frames_layers": frames_by_layer(out / "bias_frames_layers.png", tables["frames"], settings),
        "fig_global": global_share(out / "bias_global.png", tables["per_layer"], settings, tables.get("published", [])),
        "fig_local": local_maps(out / "bias_local.png", tables["positions"], tables["per_layer"], settings),
        "fig_before_after": before_after_bars(out / "bias_before_after.png", tables["before_after"], settings),
    }


def _frames(k: int) -> str:
    return "frame" if k == 1 else f"{k} frames"


def frames_by_layer(path: Path, frames: Any, settings: Any) -> Path:
    """Heatmap of the (frames × layers) attention-mass matrix."""
    plt = pyplot()
    matrix = frames.pivot(index="frame", columns="layer", values="mass").sort_index()
    fig, ax = plt.subplots(figsize=(max(4.0, 0.3 * matrix.shape[1] + 2.5), max(3.0, 0.18 * matrix.shape[0] + 1.5)))
    image = ax.imshow(matrix.to_numpy(), aspect="auto", origin="lower", cmap="viridis")
    ax.set_xlabel("LLM layer (0-based)")
    ax.set_ylabel("frame")
    ax.set_title("attention mass per frame (final prompt token → grid tokens)")
    fig.colorbar(image, ax=ax, label="share of the grid tokens' attention")
    return save_figure(fig, path)


def global_share(path: Path, per_layer: Any, settings: Any, published: list[dict[str, Any]] | None = None) -> Path:
    """Per-layer curves: share of the top-q tokens in the last k frames, the frames' mass, and the uniform share;
    a published value measured under the same settings is a hollow marker at its layer (its index base unknown)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.0, 3.6))
    layers = per_layer.layer.to_numpy()
    q, k, f = settings.top_q, settings.last_k, settings.num_frames
    ax.plot(layers, per_layer.top_share_last_k, "o-", label=f"top {q:.0%} tokens in the last {_frames(k)}")
    ax.plot(layers, per_layer.mass_last_k, "s--", label=f"attention mass of the last {_frames(k)}")
    ax.axhline(k / f, color="grey", linestyle=":", label=f"uniform attention ({k}/{f})")
    for row in published or []:
        ax.plot([row["layer"]], [row["value"]], "o", markersize=10, markerfacecolor="none", color="C0",
                label=f"published (AdaTP), layer {row['layer']}: {row['value']:.1%}")  # fmt: skip
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("LLM layer (0-based)")
    ax.set_ylabel("share")
    ax.set_title("global bias")
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def local_maps(path: Path, positions: Any, per_layer: Any, settings: Any) -> Path:
    """H×W maps of the local bias at ``settings.plot_layers``."""
    plt = pyplot()
    layers = list(settings.plot_layers)
    fig, axes = plt.subplots(1, len(layers), figsize=(3.2 * len(layers), 3.0), squeeze=False)
    ratio = per_layer.set_index("layer").local_max_over_mean
    for ax, layer in zip(axes[0], layers, strict=True):
        grid = positions[positions.layer == layer].pivot(index="h", columns="w", values="share").sort_index()
        image = ax.imshow(grid.to_numpy(), cmap="magma")
        ax.set_title(f"layer {layer}: max/mean {ratio.loc[layer]:.2f}", fontsize=9)
        ax.set_xlabel("w")
        ax.set_ylabel("h")
        fig.colorbar(image, ax=ax, fraction=0.046)
    fig.suptitle("local bias: attention per spatial position, summed over frames", fontsize=10)
    return save_figure(fig, path)


def before_after_bars(path: Path, table: Any, settings: Any) -> Path:
    """Bars per selection: share of kept tokens in the last k frames, and max/mean kept tokens per position."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(8.0, 3.4))
    names = list(table.selection)
    colours = ["#9e9e9e", "#d95f02", "#1b9e77"][: len(names)]
    for ax, column, title in (
        (axes[0], "share_last_k", f"kept tokens in the last {_frames(settings.last_k)}"),
        (axes[1], "position_max_over_mean", "kept tokens per position: max / mean"),
    ):
        ax.bar(names, table[column], color=colours)
        ax.set_title(title, fontsize=9)
        for i, v in enumerate(table[column]):
            ax.text(i, v, f"{v:.2f}", ha="center", va="bottom", fontsize=8)
    fig.suptitle(f"before / after debiasing at retention {settings.retention:.0%}", fontsize=10)
    return save_figure(fig, path)

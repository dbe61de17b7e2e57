"""Uniform spatial pooling — a cheap reference, not from a paper: each frame is pooled to a coarser, evenly spread grid.

Each frame's h×w token grid becomes a ``gh×gw`` grid with ``gh·gw ≤ int(T·r)`` (the per-frame budget of
VisionZip*/FastVID, docs/flops.md §3): the largest near-square grid, ``s×(s+1)`` if it fits, else ``s×s`` with
``s = ⌊√budget⌋`` (49 → 7×7, 42 → 6×7, 39 → 6×6, 19 → 4×4, 16 → 4×4). Region ``(i, j)`` covers rows
``⌊i·h/gh⌋ … ⌈(i+1)·h/gh⌉ − 1`` and likewise columns (``adaptive_avg_pool2d``'s regions); its token sits on the region's
centre cell. ``mode="pool"`` averages the region (spatial pooling), ``mode="sample"`` keeps the centre token itself.
The kept count is fixed by the setting; it can fall a few tokens short of the budget when the budget is not a
near-square product (``retention_prefill`` in ``ctx.stats`` records it). Positions are contiguous; on the per-row
layout the newline of every row with a token is kept.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from adatp_bench.core.context import SampleContext
from adatp_bench.core.layout import VideoLayout, VisualTokens
from adatp_bench.errors import ConfigError, UnreachableSetting
from adatp_bench.pruning.base import PruningMethod, register_method
from adatp_bench.pruning.selection import check_retention, per_frame_budget

MODES = ("pool", "sample")


def pooled_grid(budget: int, grid_h: int, grid_w: int) -> tuple[int, int]:
    """The largest near-square grid (rows, cols) with at most ``budget`` cells that fits in ``grid_h × grid_w``."""
    side = math.isqrt(budget)
    rows, cols = (side, side + 1) if side * (side + 1) <= budget else (side, side)
    return min(rows, grid_h), min(cols, grid_w)


def regions(size: int, parts: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Start and end (exclusive) of each of ``parts`` adaptive-pooling regions over ``size`` cells."""
    i = torch.arange(parts)
    return (i * size) // parts, -((-(i + 1) * size) // parts)  # floor(i·size/parts), ceil((i + 1)·size/parts)


def region_centres(size: int, parts: int) -> torch.Tensor:
    """Centre cell of each region: ``(start + end − 1) // 2``."""
    start, end = regions(size, parts)
    return (start + end - 1) // 2


@register_method("uniform")
@dataclass
class UniformPool(PruningMethod):
    """Args:
    retention: r; at most ``int(T·r)`` tokens per frame.
    mode: ``pool`` (average each region) or ``sample`` (keep each region's centre token).
    """

    retention: float = 0.25
    mode: str = "pool"

    def validate(self, tokens_per_frame: int, num_frames: int, num_layers: int) -> None:
        check_retention("retention", self.retention)
        if per_frame_budget(tokens_per_frame, self.retention) < 1:
            raise UnreachableSetting(
                f"uniform retention={self.retention} keeps int({tokens_per_frame}·r) = 0 tokens per frame"
            )
        if self.mode not in MODES:
            raise ConfigError(f"uniform mode={self.mode!r}; valid: {MODES}")

    def grid(self, layout: VideoLayout) -> tuple[int, int]:
        return pooled_grid(per_frame_budget(layout.tokens_per_frame, self.retention), layout.grid_h, layout.grid_w)

    def expected_video_tokens(self, layout: VideoLayout, num_layers: int) -> list[int]:
        gh, gw = self.grid(layout)
        if (gh, gw) == (layout.grid_h, layout.grid_w):
            return [layout.video_len] * num_layers
        per_frame = [gh * gw] * layout.num_frames
        rows = len(set(region_centres(layout.grid_h, gh).tolist()))  # the rows the kept cells touch, in every frame
        newlines = layout.newline_count("rows_with_kept", per_frame, [rows] * layout.num_frames)
        return [sum(per_frame) + newlines] * num_layers

    def select_visual(self, tokens: VisualTokens, ctx: SampleContext) -> VisualTokens:
        layout = ctx.layout
        gh, gw = self.grid(layout)
        if (gh, gw) == (layout.grid_h, layout.grid_w):
            return tokens
        nf = layout.num_frames
        grid = tokens.features.view(nf, layout.grid_h, layout.grid_w, -1)
        rows, cols = region_centres(layout.grid_h, gh), region_centres(layout.grid_w, gw)
        if self.mode == "pool":
            feats = F.adaptive_avg_pool2d(grid.permute(0, 3, 1, 2).float(), (gh, gw)).permute(0, 2, 3, 1)
            feats = feats.to(grid.dtype)
        else:
            feats = grid[:, rows.to(grid.device)][:, :, cols.to(grid.device)]
        row = rows[:, None].expand(gh, gw)
        col = cols[None, :].expand(gh, gw)
        if self.mode == "pool":  # tokens averaged into each region
            (r0, r1), (c0, c1) = regions(layout.grid_h, gh), regions(layout.grid_w, gw)
            weight = ((r1 - r0)[:, None] * (c1 - c0)[None, :]).float().reshape(-1).repeat(nf)
        else:
            weight = torch.ones(nf * gh * gw)
        ctx.stats["retention_prefill"] = gh * gw / layout.tokens_per_frame
        return VisualTokens(
            features=feats.reshape(nf * gh * gw, -1),
            frame=torch.arange(nf).repeat_interleave(gh * gw),
            row=row.reshape(-1).repeat(nf),
            col=col.reshape(-1).repeat(nf),
            weight=weight,
        )

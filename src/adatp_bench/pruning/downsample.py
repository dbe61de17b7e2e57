"""Downsampling — the plain baseline VTC-Bench (arXiv 2510.07143) finds ahead of many advanced compressors: fewer
frames, coarser frames, or both, at the same visual-token budget ``F·T·r``.

- ``axis="temporal"``: keep ``n = int(F·r)`` frames whole, the centre frame of each of ``n`` equal spans of the
  sampled frames (frame ``⌊(i + ½)·F/n⌋``), i.e. the video sampled at ``r``× the frame rate; every token of a kept
  frame stays, so the count is exactly ``n·T`` (≤ ``F·T·r``).
- ``axis="spatial"``: every frame average-pooled to the largest near-square grid within ``int(T·r)`` tokens
  (the same grid and regions as ``uniform``'s ``mode: pool``, docs/methods/uniform.md), i.e. each frame at a lower
  resolution.
- ``axis="both"``: ``n = max(1, round(F·√r))`` frames, each pooled to the grid within ``int(F·T·r / n)`` tokens
  (the budget split evenly between time and space).

Positions are contiguous; a kept frame keeps its original frame index, so the newline rule of the layout (one per
video, or one per row with a token on LLaVA-Video) applies unchanged. Nothing is data-dependent: the token count is
fixed by the setting (``expected_video_tokens``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from adatp_bench.core.context import SampleContext
from adatp_bench.core.layout import VideoLayout, VisualTokens
from adatp_bench.errors import ConfigError, UnreachableSetting
from adatp_bench.pruning.base import PruningMethod, register_method
from adatp_bench.pruning.selection import check_retention
from adatp_bench.pruning.uniform import UniformPool, region_centres

AXES = ("temporal", "spatial", "both")


def kept_frames(num_frames: int, keep: int) -> torch.Tensor:
    """The centre frame of each of ``keep`` equal spans of ``num_frames`` frames: ``⌊(i + ½)·F/keep⌋``."""
    return ((2 * torch.arange(keep) + 1) * num_frames) // (2 * keep)


@register_method("downsample")
@dataclass
class Downsample(PruningMethod):
    """Args:
    retention: r; at most ``F·T·r`` visual tokens.
    axis: ``temporal`` (fewer frames), ``spatial`` (coarser frames) or ``both``.
    """

    retention: float = 0.25
    axis: str = "temporal"

    def validate(self, tokens_per_frame: int, num_frames: int, num_layers: int) -> None:
        check_retention("retention", self.retention)
        if self.axis not in AXES:
            raise ConfigError(f"downsample axis={self.axis!r}; valid: {AXES}")
        frames, per_frame = self.shape(num_frames, tokens_per_frame)
        if frames < 1 or per_frame < 1:
            raise UnreachableSetting(
                f"downsample retention={self.retention} is impossible: axis={self.axis} keeps {frames} of {num_frames} "
                f"frames at {per_frame} tokens each"
            )

    def shape(self, num_frames: int, tokens_per_frame: int) -> tuple[int, int]:
        """(frames kept, token budget per kept frame)."""
        if self.axis == "temporal":
            return int(num_frames * self.retention), tokens_per_frame
        if self.axis == "spatial":
            return num_frames, int(tokens_per_frame * self.retention)
        frames = min(num_frames, max(1, round(num_frames * math.sqrt(self.retention))))
        return frames, min(tokens_per_frame, int(num_frames * tokens_per_frame * self.retention / frames))

    def _pool(self, tokens_per_frame: int, per_frame: int) -> UniformPool | None:
        """The spatial pooling step (None when frames stay whole)."""
        return None if per_frame >= tokens_per_frame else UniformPool(retention=per_frame / tokens_per_frame)

    def expected_video_tokens(self, layout: VideoLayout, num_layers: int) -> list[int]:
        frames, per_frame = self.shape(layout.num_frames, layout.tokens_per_frame)
        pool = self._pool(layout.tokens_per_frame, per_frame)
        if pool is None and frames == layout.num_frames:
            return [layout.video_len] * num_layers
        if pool is None:
            count, rows = layout.tokens_per_frame, layout.grid_h
        else:
            gh, gw = pool.grid(layout)
            count, rows = gh * gw, len(set(region_centres(layout.grid_h, gh).tolist()))
        keep = set(kept_frames(layout.num_frames, frames).tolist())
        kept = [count if f in keep else 0 for f in range(layout.num_frames)]
        newlines = layout.newline_count("rows_with_kept", kept, [rows if n else 0 for n in kept])
        return [sum(kept) + (newlines or 0)] * num_layers

    def select_visual(self, tokens: VisualTokens, ctx: SampleContext) -> VisualTokens:
        layout = ctx.layout
        frames, per_frame = self.shape(layout.num_frames, layout.tokens_per_frame)
        pool = self._pool(layout.tokens_per_frame, per_frame)
        if pool is not None:
            tokens = pool.select_visual(tokens, ctx)  # per frame, so pooling before dropping frames is the same
        if frames < layout.num_frames:
            keep = kept_frames(layout.num_frames, frames).to(tokens.frame.device)
            tokens = tokens.select(torch.isin(tokens.frame, keep))
        ctx.stats["retention_prefill"] = len(tokens) / layout.num_grid_tokens
        ctx.stats["frames_kept"] = frames
        return tokens

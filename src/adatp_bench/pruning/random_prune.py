"""Random token pruning — a cheap reference, not from a paper: keep visual tokens drawn uniformly at random.

Each sample draws from its own seeded generator (``ctx.generator()``, docs/methods.md §5.5), so a run is reproducible
and two samples never share a draw. By default every frame keeps ``int(T·r)`` tokens (the per-frame budget of
VisionZip*/FastVID, docs/flops.md §3), so token counts match those methods exactly; ``per_frame=False`` draws
``int(F·T·r)`` tokens from the whole video instead. Kept tokens stay in raster order with contiguous positions; on the
per-row layout the newline of every row that keeps a token is kept (the framework's default policy).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from adatp_bench.core.context import SampleContext
from adatp_bench.core.layout import VideoLayout, VisualTokens
from adatp_bench.errors import UnreachableSetting
from adatp_bench.pruning.base import PruningMethod, register_method
from adatp_bench.pruning.selection import check_retention, per_frame_budget


def random_keep(
    num_frames: int, tokens_per_frame: int, retention: float, per_frame: bool, generator: torch.Generator
) -> torch.Tensor:
    """Sorted flat indices (into F·T raster order) of the tokens kept.

    Per frame: ``randperm(T)[:int(T·r)]`` for each frame in order; whole video: ``randperm(F·T)[:int(F·T·r)]``.
    """
    if not per_frame:
        total = num_frames * tokens_per_frame
        return torch.sort(torch.randperm(total, generator=generator)[: int(total * retention)]).values
    budget = per_frame_budget(tokens_per_frame, retention)
    picks = [
        torch.randperm(tokens_per_frame, generator=generator)[:budget] + f * tokens_per_frame for f in range(num_frames)
    ]
    return torch.sort(torch.cat(picks)).values


@register_method("random")
@dataclass
class RandomPrune(PruningMethod):
    """Args:
    retention: r; ``int(T·r)`` tokens per frame (or ``int(F·T·r)`` per video).
    per_frame: draw the same number of tokens in every frame (True) or anywhere in the video (False).
    """

    retention: float = 0.25
    per_frame: bool = True

    def validate(self, tokens_per_frame: int, num_frames: int, num_layers: int) -> None:
        check_retention("retention", self.retention)
        kept = (
            per_frame_budget(tokens_per_frame, self.retention)
            if self.per_frame
            else int(num_frames * tokens_per_frame * self.retention)
        )
        if kept < 1:
            raise UnreachableSetting(f"random retention={self.retention} keeps no token")

    def _count(self, layout: VideoLayout) -> int:
        if self.per_frame:
            return layout.num_frames * per_frame_budget(layout.tokens_per_frame, self.retention)
        return int(layout.num_grid_tokens * self.retention)

    def expected_video_tokens(self, layout: VideoLayout, num_layers: int) -> list[int] | None:
        kept = self._count(layout)
        if kept == layout.num_grid_tokens:
            return [layout.video_len] * num_layers
        if layout.newline_layout == "per_video":
            return [kept + 1] * num_layers
        return None  # per-row newlines depend on the rows the draw touches

    def select_visual(self, tokens: VisualTokens, ctx: SampleContext) -> VisualTokens:
        layout = ctx.layout
        index = random_keep(layout.num_frames, layout.tokens_per_frame, self.retention, self.per_frame, ctx.generator())
        ctx.stats["retention_prefill"] = len(index) / layout.num_grid_tokens
        return tokens.select(index)

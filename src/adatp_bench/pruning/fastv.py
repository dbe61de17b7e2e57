"""FastV (Chen et al., ECCV 2024, arXiv 2403.06764) — port of ``pkunlp-icler/FastV@d165972`` (HF fork,
``LlamaModel.fastv_forward``), with FastVID's LLaVA-OneVision settings (docs/methods/fastv.md).

At prefill, before decoder layer K, rank the video positions by the **last prompt token's** attention in layer K−1,
averaged over heads (the official code's rule; the paper's text says "average attention received from all tokens"),
keep the top R, drop the rest. Kept tokens keep their original RoPE positions (``position_ids = keep_indexs``).

Retention follows the paper's "100%/R" notation: all tokens for K layers, then R. ``R·n`` is rounded as the official
code does: ``topk(round(n·(1−prune)))``. ``n`` counts the grid tokens only, as FastVID's published counts do:
``round(6272·R)`` = 1568, 1254, 941, 627 on LLaVA-OV (FastVID's published schedule has 940 at 15%, i.e. truncation,
while its LLaVA-Video 10% row, 1082 = round(10816·0.1), implies rounding; either gives the printed TFLOPs), and
``round(10816·R)`` visual tokens plus the newlines of the rows that keep a token on LLaVA-Video (2704 + 568.7 at 25%).
Newlines follow that rule (:func:`keep_positions`). Scores come from the attention-row probe, so SDPA/FlashAttention
stay on in every layer.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from adatp_bench.core.context import SampleContext
from adatp_bench.core.layout import VideoLayout
from adatp_bench.core.sequence import SequenceState
from adatp_bench.errors import ConfigError
from adatp_bench.pruning.base import PruningMethod, register_method
from adatp_bench.pruning.selection import check_retention, keep_positions


@register_method("fastv")
@dataclass
class FastV(PruningMethod):
    """Args:
    k: prune before this decoder layer (scores from layer k−1). Paper default 2.
    retention: fraction R of the video span kept from layer k on (0.25 = "100%/25%").
    """

    k: int = 2
    retention: float = 0.25

    def validate(self, tokens_per_frame: int, num_frames: int, num_layers: int) -> None:
        check_retention("retention", self.retention)
        if not 1 <= self.k < num_layers:
            raise ConfigError(f"fastv k={self.k} must lie in [1, {num_layers - 1}] for a {num_layers}-layer LLM")

    def expected_video_tokens(self, layout: VideoLayout, num_layers: int) -> list[int] | None:
        if layout.newline_layout == "per_row":
            return None  # kept row newlines depend on which tokens survive
        kept = round(layout.num_grid_tokens * self.retention) + layout.num_newlines
        return [layout.video_len] * self.k + [kept] * (num_layers - self.k)

    def llm_layers(self, num_layers: int) -> tuple[int, ...]:
        return (self.k - 1, self.k)

    def before_layer(self, state: SequenceState, ctx: SampleContext) -> torch.Tensor | None:
        if state.layer_idx == self.k - 1:
            # Layer K−1's attention on its own input, last query row, mean over heads (fastv_forward ≈L1105).
            ctx.stats["_fastv_scores"] = state.probe()[:, 0].mean(0)
            return None
        scores = ctx.stats.pop("_fastv_scores")
        visual = state.visual_positions
        n_keep = round(len(visual) * self.retention)
        top = torch.topk(scores[visual.to(scores.device)], n_keep).indices.cpu()
        return keep_positions(state, visual[top], ctx.layout)

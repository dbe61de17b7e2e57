"""DyCoke (Tao et al., "DyCoke: Dynamic Compression of Tokens for Fast Video Large Language Models", CVPR 2025,
arXiv 2411.15024) — port of ``KD-TAO/DyCoke@dd74634`` (LLaVA-OV), with FastVID's comparison settings
(docs/methods/dycoke.md).

**Stage 1, TTM** (``llava/model/llava_arch.py::dycole_ttm``), on the pooled post-projector tokens, before the LLM. With
``T`` tokens per frame and pruning ratio ``K``, a pruned frame keeps ``int((1 − K)·T)`` tokens:

1. pairs (0,1), (2,3), …: frame ``i+1`` keeps its tokens **least** cosine-similar to the same position in frame ``i``;
2. windows ``i = 0, 4, 8, …``: frame ``i+2`` keeps its tokens least similar to frame ``i`` (original features).

So each 4-frame window keeps its first frame whole and prunes the other three. Nothing is averaged: the "merge" drops
the similar tokens (``KD-TAO/DyCoke#1``). Kept tokens come out in **ascending-similarity order**
(``topk(largest=False)``), which with contiguous positions is the order the LLM sees on LLaVA-OV (``token_order``).

Upstream's window loop is ``range(0, F − 4, 4)``, so the last window's third frame is never pruned (frame 30 of 32;
upstream ``llava/model/llava_arch.py::dycole_ttm``). FastVID's comparison reports exactly 25% at K = 1, so it pruned
the last window too; that is our default, and ``official_compat=True`` restores the skipped window (and upstream's
other edge cases: an odd last frame is dropped, the stage-2 span misses the last visual token, see below).

**Retention.** ``retention`` is the ideal TTM retention that FastVID's tables print, ``(1 + 3(1 − K))/4``, so
``K = (4 − 4r)/3``: 0.325 ↔ K = 0.9 and 0.25 ↔ K = 1.0 (FastVID Table 1); below 0.25 is impossible. ``ctx.stats``
records ``retention_paper`` (that value, times ``1 − P`` with stage 2 on: DyCoke's "retained ratio (final)") and
``retention_prefill`` (the visual tokens the LLM actually prefills over ``F·T``).

**Stage 2, dynamic KV pruning** (``llava/model/language_model/modeling_qwen2.py::PrunableDynamicCache`` and the decode
branch of ``Qwen2Model.forward``), off by default as in FastVID's prefill-only port (``kv_pruning``). At every decode
step, before layer ``L``: take the new token's attention in layer ``L − 1``, averaged over heads, on the visual
positions; if its cosine with the previous step's vector is below 0.9 (always on the first step), layers ``≥ L`` attend
to the text + newlines + the top ``int(n·(1 − P))`` visual tokens only, for this step; otherwise they attend to the full
cache (the code's behaviour). The cache itself keeps every entry (upstream gathers per step and never shrinks it).
It acts through the decode-layer hook ``on_decode_layer`` (``models/llm.py``). The previous-step vector is reset per
sample (upstream keeps it in a config object across samples, ``DycokeConfigs.attention_score``).

Positions are contiguous (TTM runs before the sequence is built, docs/methods.md §5.3). Newlines on LLaVA-Video's
per-row layout follow ``row_newlines``; the default ``full_frame_rows`` (a whole frame keeps its 13 row newlines, a
pruned frame one) reproduces both of FastVID's Table 2 counts: 208 at K = 1 (16 whole frames) and 256 at K = 0.9
(16 × 13 + 48).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from adatp_bench.core.context import SampleContext
from adatp_bench.core.layout import NEWLINE_POLICIES, VideoLayout, VisualTokens
from adatp_bench.core.sequence import VISUAL, SequenceState
from adatp_bench.errors import ConfigError, UnreachableSetting
from adatp_bench.pruning.base import PruningMethod, register_method
from adatp_bench.pruning.selection import check_retention

TOKEN_ORDERS = ("similarity", "spatial")


def merging_ratio(retention: float) -> float:
    """DyCoke's K for an ideal TTM retention r = (1 + 3(1 − K))/4, rounded to 6 decimals as a config value would be."""
    return round((4.0 - 4.0 * retention) / 3.0, 6)


def pruned_frame_keep(tokens_per_frame: int, k: float) -> int:
    """Tokens a pruned frame keeps: ``int((1 − K)·T)`` (``dycole_ttm``: ``merging_ratio = 1 − K``)."""
    return int((1 - k) * tokens_per_frame)


def ttm_plan(num_frames: int, official_compat: bool) -> dict[int, int]:
    """Which frames TTM prunes, and against which (original) frame: ``{pruned: reference}``.

    Pass 1 pairs ``(i, i+1)``; pass 2 windows ``(i, i+2)`` for ``i`` in ``range(0, F − 4, 4)`` upstream
    (``official_compat``) or ``range(0, F − 2, 4)`` (every window, FastVID's comparison).
    """
    plan = {i + 1: i for i in range(0, num_frames - 1, 2)}
    stop = num_frames - 4 if official_compat else num_frames - 2
    plan.update({i + 2: i for i in range(0, stop, 4)})
    return plan


def ttm_keep_indices(
    frames: torch.Tensor, keep: int, official_compat: bool, token_order: str = "similarity"
) -> list[torch.Tensor | None]:
    """Per frame, the token indices TTM keeps (None = the whole frame).

    Args:
        frames: (F, T, D) pooled post-projector tokens.
        keep: tokens kept in each pruned frame.
        official_compat: upstream's loop bounds (see :func:`ttm_plan`); an odd last frame is then dropped, as upstream's
            pair loop never emits it.
        token_order: ``similarity`` (ascending, upstream) or ``spatial``.

    Returns:
        F entries; entry f is None (frame kept whole) or a (keep,) long tensor of indices into frame f.
    """
    nf = frames.shape[0]
    out: list[torch.Tensor | None] = [None] * nf
    if official_compat and nf % 2 == 1:
        out[-1] = torch.zeros(0, dtype=torch.long)  # never appended by dycole_ttm's pair loop
    x = frames.float()
    for pruned, ref in sorted(ttm_plan(nf, official_compat).items()):
        similarity = F.cosine_similarity(x[ref], x[pruned], dim=1)  # (T,) same-position cosine
        order = torch.sort(similarity, stable=True).indices[:keep]  # == topk(keep, largest=False), ties by index
        out[pruned] = (order if token_order == "similarity" else torch.sort(order).values).cpu()
    return out


@register_method("dycoke")
@dataclass
class DyCoke(PruningMethod):
    """Args:
    retention: ideal TTM retention r = (1 + 3(1 − K))/4 ∈ [0.25, 1] (0.325 ↔ K = 0.9, 0.25 ↔ K = 1.0).
    official_compat: upstream dd74634's loop bounds (last window's third frame never pruned) and stage-2 span.
    token_order: order of a pruned frame's kept tokens: ``similarity`` (ascending, upstream) or ``spatial``.
    kv_pruning: stage 2 (decode-time KV selection); off in FastVID's prefill-only comparison.
    kv_layer: L, the first layer whose attention uses the selected KV (scores from layer L − 1).
    kv_prune_ratio: P, the share of visual KV entries dropped at a pruning step.
    kv_similarity_threshold: re-select when the cosine to the previous step's attention is below this.
    row_newlines: per-row layout (LLaVA-Video) newlines; ignored by the one-newline OneVision layout.
    """

    retention: float = 0.25
    official_compat: bool = False
    token_order: str = "similarity"
    kv_pruning: bool = False
    kv_layer: int = 3
    kv_prune_ratio: float = 0.8
    kv_similarity_threshold: float = 0.9
    row_newlines: str = "full_frame_rows"

    # -- settings ------------------------------------------------------------------------------------------------------
    def validate(self, tokens_per_frame: int, num_frames: int, num_layers: int) -> None:
        check_retention("retention", self.retention)
        if self.retention < 0.25:
            raise UnreachableSetting(
                f"dycoke retention={self.retention} is impossible: TTM keeps one whole frame in every four, so its "
                "retention is (1 + 3(1 − K))/4 ≥ 0.25"
            )
        if self.token_order not in TOKEN_ORDERS:
            raise ConfigError(f"dycoke token_order={self.token_order!r}; valid: {TOKEN_ORDERS}")
        if self.row_newlines not in NEWLINE_POLICIES:
            raise ConfigError(f"dycoke row_newlines={self.row_newlines!r}; valid: {NEWLINE_POLICIES}")
        if self.kv_pruning and not 1 <= self.kv_layer < num_layers:
            raise ConfigError(f"dycoke kv_layer={self.kv_layer} must lie in [1, {num_layers - 1}]")
        if not 0.0 <= self.kv_prune_ratio < 1.0:
            raise ConfigError(f"dycoke kv_prune_ratio={self.kv_prune_ratio} must lie in [0, 1)")

    @property
    def newline_policy(self) -> str:
        """The sequence builder's per-row newline policy (read by the adapter): ``row_newlines``, or every row's
        newline when nothing is pruned (K = 0, the unpruned model)."""
        return self.row_newlines if self.k > 0 else "all"

    @property
    def k(self) -> float:
        """DyCoke's pruning ratio K for this retention."""
        return merging_ratio(self.retention)

    def _frame_counts(self, layout: VideoLayout) -> list[int]:
        """Visual tokens TTM keeps in each frame (fixed by the setting)."""
        t = layout.tokens_per_frame
        if self.k == 0:
            return [t] * layout.num_frames
        keep = pruned_frame_keep(t, self.k)
        counts = [t] * layout.num_frames
        for pruned in ttm_plan(layout.num_frames, self.official_compat):
            counts[pruned] = keep
        if self.official_compat and layout.num_frames % 2 == 1:
            counts[-1] = 0
        return counts

    def expected_video_tokens(self, layout: VideoLayout, num_layers: int) -> list[int] | None:
        counts = self._frame_counts(layout)
        newlines = layout.newline_count(self.newline_policy, counts)
        return None if newlines is None else [sum(counts) + newlines] * num_layers

    # -- stage 1 -------------------------------------------------------------------------------------------------------
    def select_visual(self, tokens: VisualTokens, ctx: SampleContext) -> VisualTokens:
        layout = ctx.layout
        nf, t = layout.num_frames, layout.tokens_per_frame
        ideal = (1 + 3 * (1 - self.k)) / 4
        ctx.stats["k"] = self.k
        ctx.stats["retention_paper"] = ideal * ((1 - self.kv_prune_ratio) if self.kv_pruning else 1.0)
        ctx.stats["retention_ttm_ideal"] = ideal
        if self.k == 0:  # K = 0 prunes nothing; upstream would still permute frames by similarity
            ctx.stats["retention_prefill"] = 1.0
            return tokens
        if len(tokens) != layout.num_grid_tokens:
            raise ValueError(f"dycoke expects the full token grid ({layout.num_grid_tokens}), got {len(tokens)}")
        frames = tokens.features.view(nf, t, -1)
        per_frame = ttm_keep_indices(frames, pruned_frame_keep(t, self.k), self.official_compat, self.token_order)
        index = torch.cat([(torch.arange(t) if keep is None else keep) + f * t for f, keep in enumerate(per_frame)])
        kept = tokens.select(index)  # frames in order; within a pruned frame, the TTM order
        ctx.stats["retention_prefill"] = len(kept) / layout.num_grid_tokens
        return kept

    # -- stage 2 -------------------------------------------------------------------------------------------------------
    def decode_probe_layers(self, num_layers: int) -> tuple[int, ...]:
        return (self.kv_layer - 1,) if self.kv_pruning else ()

    def after_prefill(self, cache: Any, state: SequenceState, ctx: SampleContext) -> None:
        if not self.kv_pruning:
            return
        span = torch.nonzero(state.kind == VISUAL).squeeze(1)
        if self.official_compat:  # image_token_length = len(TTM output) − 1: the last visual token is never a candidate
            span = span[:-1]
        ctx.stats["_kv_span"] = span
        ctx.stats["_kv_previous"] = None
        ctx.stats["_kv_saved"] = {}
        ctx.stats["kv_pruned_steps"] = 0
        ctx.stats["kv_keep"] = int(len(span) * (1 - self.kv_prune_ratio))

    def on_decode_layer(
        self, step: int, layer_idx: int, cache: Any, ctx: SampleContext, attention: dict[int, torch.Tensor]
    ) -> None:
        """After layer L − 1: maybe swap layers ≥ L to the selected KV for this step; after the last: restore."""
        if not self.kv_pruning:
            return
        saved: dict[int, tuple[torch.Tensor, torch.Tensor]] = ctx.stats["_kv_saved"]
        if layer_idx == self.kv_layer - 1:
            keep = self._select(attention[layer_idx], ctx)
            if keep is not None:
                ctx.stats["kv_pruned_steps"] += 1
                for layer in range(self.kv_layer, len(cache.layers)):
                    entry = cache.layers[layer]
                    saved[layer] = (entry.keys, entry.values)
                    index = keep.to(entry.keys.device)
                    entry.keys, entry.values = entry.keys[:, :, index], entry.values[:, :, index]
        elif layer_idx == len(cache.layers) - 1 and saved:
            for layer, (keys, values) in saved.items():  # full cache + this step's new entry
                entry = cache.layers[layer]
                entry.keys = torch.cat([keys, entry.keys[:, :, -1:]], dim=2)
                entry.values = torch.cat([values, entry.values[:, :, -1:]], dim=2)
            saved.clear()

    def _select(self, attention: torch.Tensor, ctx: SampleContext) -> torch.Tensor | None:
        """``PrunableDynamicCache.dycoke_pruning`` + ``update_cache``: cache positions to attend to, or None (all).

        Args:
            attention: (H, S) layer L − 1's attention of the new token over its cache (the new token last).
        """
        span: torch.Tensor = ctx.stats["_kv_span"]
        scores = attention.mean(0)[span.to(attention.device)]  # head mean, visual positions
        previous = ctx.stats["_kv_previous"]
        similarity = 0.0 if previous is None else float(F.cosine_similarity(scores, previous, dim=0))
        ctx.stats["_kv_previous"] = scores
        if similarity >= self.kv_similarity_threshold:
            return None  # the code leaves kv_cache = None: this step uses the full cache
        top = torch.topk(scores, ctx.stats["kv_keep"]).indices.cpu()
        cached = attention.shape[1] - 1  # layers ≥ L have not stored the new token yet
        drop = torch.zeros(cached, dtype=torch.bool)
        drop[span] = True
        drop[span[top]] = False  # prefix + top visual + rest, sorted (order is irrelevant to attention)
        return torch.nonzero(~drop).squeeze(1)

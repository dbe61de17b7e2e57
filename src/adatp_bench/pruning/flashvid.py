"""FlashVID (Fan et al., "FlashVID: Efficient Video Large Language Models via Training-free Tree-based Spatiotemporal
Token Merging", ICLR 2026, arXiv 2602.08024) — port of ``Fanziyang-v/FlashVID@1d37422`` (docs/methods/flashvid.md).

Official code: ``flashvid/utils.py`` (``flashvid_compression``, ``segment``/``additional_segment``,
``segment_compression``, ``spatiotemporal_compression``, ``dpc_knn``, ``fastv_prune``),
``flashvid/token_selection.py::attn_div_v2_based_token_selection`` (ADTS), ``flashvid/llava_arch.py`` (placement on
the pooled tokens, newlines), ``flashvid/modeling_qwen2.py::Qwen2Model_forward`` (inner prune), settings from
``scripts/llava_ov.sh`` / ``scripts/llava_vid.sh``.

Before the LLM, on the F × T pooled post-projector tokens (``cls`` = SigLIP attention received per patch, mean over
heads and queries, pooled like the tokens):

1. **DySeg**: cut after frame i where the cosine of consecutive frames' mean tokens is < ``segment_threshold``; with
   fewer than ``min_segment_num`` segments, add the lowest remaining transitions.
2. **Budget**: ``B = ceil(T·r·expansion)`` per frame, ``A = ceil(B·α)`` from ADTS, ``S = B − A`` for TSTM.
3. **ADTS** (per frame): calibrated distances ``d_ij = (1 − cos(x_i, x_j))·(1e6·cls_j)·mean_c⟨x_j, x̄_c⟩`` (x̄_c the
   segment's frame means); greedy max–min selection of A tokens, seeded by the largest second-smallest column distance.
4. **TSTM** (segments of ≥ 2 frames): each non-ADTS token links to its most similar non-ADTS token of the previous
   frame; links with cosine > ``temporal_threshold`` (or above a soft threshold so that ≥ (A + S)·P tokens stay) are
   merged from the last frame back to the first (a tree rooted in the earliest frame: sums pass down, each root is
   divided by its count — upstream's counts grow by one per merged child, not by the child's subtree, kept as is).
5. **Spatial merge**: with M tokens left, ratio ``ρ = S·P / M``; each frame's n tokens become ``ceil(n·ρ)`` DPC-kNN
   clusters (k = min(c, 7), density noise per sample, mean of members, the centre's cell), unless ρ ≥ 1.
   A one-frame segment clusters all T of its tokens, the ADTS ones included (upstream).
6. Tokens sorted by original cell, positions **contiguous**; LLaVA-OV keeps its trailing newline, LLaVA-Video gets one
   newline per frame (``mm_newline_position=frame``: the ``frame_ends`` policy).

Inside the LLM (``fastv_prune``): before ``pruning_layer`` (20 of 28, scaled with depth) keep the top
``ceil(V·llm_retention_ratio)`` of the V visual positions by the last query row's attention in the layer before, mean
over heads; on LLaVA-Video the per-frame newlines are in V (upstream's visual span), on LLaVA-OV the newline is not and
stays. Kept tokens keep their positions (``position_ids = keep_indices``). ``retention`` is ``retention_ratio``;
``expansion`` and the inner prune bring the layer-average back to ≈ r (docs/methods/flashvid.md).

Deviations (docs/methods/flashvid.md): DySeg and ADTS in fp32 (upstream: model dtype for DySeg); duplicate DySeg cuts
(only possible when the top-up picks already-cut transitions) are dropped instead of giving empty segments; ADTS v2
excludes already-chosen tokens as v1 does (upstream v2 does not, so it could re-pick one, a duplicate token, once every
unchosen calibrated distance is ≤ 0); a one-frame segment's cluster centre on an ADTS token's cell sorts after that
token (stable sort; upstream's ``argsort`` leaves the tie order unspecified); density noise from the per-sample
generator; ``pruning_layer`` scales with depth; ``retention = 1.0`` is the identity.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from adatp_bench.core.context import SampleContext
from adatp_bench.core.layout import VideoLayout, VisualTokens
from adatp_bench.core.sequence import NEWLINE, SequenceState
from adatp_bench.errors import ConfigError, UnreachableSetting
from adatp_bench.pruning.base import PruningMethod, register_method
from adatp_bench.pruning.dpc import dpc_knn
from adatp_bench.pruning.schedule import check_reference_depth, scale_layers
from adatp_bench.pruning.selection import check_retention, keep_with_text

SELECTIONS = ("attn_div_v2", "attn_div")
ATTN_SCALE = 1e6  # `cls_attention.float() * 1e6`
MAX_DENSITY_K = 7  # `k=min(num_clusters, 7)`
SCORES_KEY = "_flashvid_scores"


def segment(frame_means: torch.Tensor, threshold: float, min_segments: int, complementary: bool) -> list[int]:
    """Segment sizes (``segment`` + ``additional_segment``); duplicate cuts (ties at 1.0) are removed."""
    unit = F.normalize(frame_means.float(), dim=-1)
    sims = (unit[:-1] * unit[1:]).sum(dim=-1)
    cuts = torch.nonzero(sims < threshold).squeeze(1)
    if cuts.numel() + 1 < min_segments and complementary:
        rest = torch.where(sims < threshold, torch.ones_like(sims), sims)
        extra = torch.topk(rest, min(min_segments - cuts.numel() - 1, rest.numel()), largest=False).indices
        cuts = torch.unique(torch.cat([cuts, extra]))
    bounds = torch.cat([torch.tensor([-1]), cuts.cpu(), torch.tensor([frame_means.shape[0] - 1])])
    return bounds.diff().tolist()


def adts(features: torch.Tensor, cls: torch.Tensor, k: int, v2: bool = True) -> torch.Tensor:
    """(P, k) sorted indices chosen per frame by calibrated max–min diversity (``attn_div[_v2]_based_token_selection``).

    Args:
        features: (P, T, D) the segment's tokens; cls: (P, T) their vision attention; k: tokens per frame.
    """
    x = features.float()
    unit = F.normalize(x, dim=-1)
    dist = (1.0 - unit @ unit.transpose(1, 2)) * (cls.float() * ATTN_SCALE)[:, None, :]
    if v2:  # event-relevance term: mean over the segment's frames of ⟨x_j, frame mean⟩
        dist = dist * torch.einsum("bnd,cd->bcn", x, x.mean(1)).mean(1)[:, None, :]
    rows = torch.arange(x.shape[0], device=x.device)
    chosen = [torch.topk(dist, k=min(2, dist.shape[1]), dim=1, largest=False).values[:, -1, :].argmax(dim=-1)]
    running = dist[rows, chosen[0]]  # (P, T): min distance to the chosen set, kept incrementally
    taken = torch.zeros_like(running, dtype=torch.bool)
    for _ in range(1, k):
        taken[rows, chosen[-1]] = True
        chosen.append(running.masked_fill(taken, -math.inf).argmax(dim=-1))
        running = torch.minimum(running, dist[rows, chosen[-1]])
    return torch.sort(torch.stack(chosen, dim=1), dim=1).values


def tstm(features: torch.Tensor, free: torch.Tensor, threshold: float, lower_bound: int) -> list[torch.Tensor]:
    """Tree-based temporal merging of a ≥ 2-frame segment (``spatiotemporal_compression``), in place on ``features``.

    Args:
        features: (P, T, D) fp32 tokens (overwritten); free: (P, T) bool, False for ADTS tokens; threshold: τ;
            lower_bound: tokens that must stay, ADTS ones included.

    Returns:
        per frame, the (sorted) cells of the non-ADTS tokens that stay; their features are in ``features``.
    """
    p, t, _ = features.shape
    unit = F.normalize(features, dim=-1)
    sims = unit[1:] @ unit[:-1].transpose(1, 2)  # [f−1, n, m] = cos(frame f token n, frame f−1 token m)
    sims = sims.masked_fill(~free[1:, :, None], -1.0).masked_fill(~free[:-1, None, :], -1.0)
    best, parent = sims.max(dim=-1)
    best = torch.cat([torch.full((1, t), -1.0, device=best.device), best])
    parent = torch.cat([torch.zeros(1, t, dtype=torch.long, device=parent.device), parent])
    merged = best > threshold
    if int((~merged).sum()) < lower_bound:  # soft threshold: keep at least lower_bound tokens
        drop = p * t - lower_bound
        soft = torch.topk(best.flatten(), drop).values[-1].item() if drop > 0 else math.inf
        merged = best > max(soft, -1.0 + 1e-6)
    counts = torch.ones(p, t, device=features.device)
    for f in range(p - 1, -1, -1):
        stay = ~merged[f]
        features[f, stay] = features[f, stay] / counts[f, stay, None]
        counts[f, stay] = 1
        if bool(merged[f].any()):  # children pass their (summed) features to their parent in frame f − 1
            features[f - 1].index_add_(0, parent[f, merged[f]], features[f, merged[f]])
            counts[f - 1].index_add_(0, parent[f, merged[f]], torch.ones(int(merged[f].sum()), device=counts.device))
            counts[f, merged[f]] = 0
    return [torch.nonzero(~merged[f] & free[f]).squeeze(1) for f in range(p)]


@register_method("flashvid")
@dataclass
class FlashVID(PruningMethod):
    """Args:
    retention: ``retention_ratio`` r (scripts: 0.10–0.25).
    alpha: α, ADTS share of each frame's budget. expansion: budget factor before the inner prune (1.25).
    token_selection: ``attn_div_v2`` (scripts) or ``attn_div``. temporal_threshold: TSTM τ (0.8).
    segment_threshold, min_segments, complementary_segment: DySeg (0.9, 8, true).
    pruning_layer: inner prune before this layer of a ``reference_depth``-layer LLM (20 of 28; null: no inner prune).
    llm_retention: share of the visual span kept from ``pruning_layer`` (0.3).
    """

    retention: float = 0.25
    alpha: float = 0.7
    expansion: float = 1.25
    token_selection: str = "attn_div_v2"
    temporal_threshold: float = 0.8
    segment_threshold: float = 0.9
    min_segments: int = 8
    complementary_segment: bool = True
    pruning_layer: int | None = 20
    llm_retention: float = 0.3
    reference_depth: int | None = 28

    needs_vision_attention = True

    def budgets(self, tokens_per_frame: int) -> tuple[int, int]:
        """(A, S): ADTS and TSTM tokens per frame (``flashvid_compression``)."""
        budget = math.ceil(tokens_per_frame * self.retention * self.expansion)
        adts_n = math.ceil(budget * self.alpha)
        return adts_n, budget - adts_n

    def validate(self, tokens_per_frame: int, num_frames: int, num_layers: int) -> None:
        check_retention("retention", self.retention)
        check_retention("llm_retention", self.llm_retention)
        check_reference_depth("flashvid", self.reference_depth)
        if not 0.0 <= self.alpha <= 1.0 or self.expansion <= 0:
            raise ConfigError(f"flashvid alpha={self.alpha} must lie in [0, 1] and expansion={self.expansion} be > 0")
        if self.token_selection not in SELECTIONS:
            raise ConfigError(f"flashvid token_selection={self.token_selection!r}; valid: {SELECTIONS}")
        if not -1.0 <= self.temporal_threshold < 1.0 or self.min_segments < 1:
            raise ConfigError("flashvid temporal_threshold must lie in [-1, 1) and min_segments be ≥ 1")
        if self.retention < 1.0 and sum(self.budgets(tokens_per_frame)) >= tokens_per_frame:
            raise UnreachableSetting(
                f"flashvid retention={self.retention} × expansion={self.expansion} keeps ceil(T·r·e) ≥ T = "
                f"{tokens_per_frame} tokens per frame: nothing to compress"
            )
        layer = self.inner_layer(num_layers)
        if layer is not None and not 1 <= layer < num_layers:
            raise ConfigError(
                f"flashvid pruning_layer={self.pruning_layer} maps to {layer}, not in [1, {num_layers - 1}]"
            )

    def inner_layer(self, num_layers: int) -> int | None:
        if self.pruning_layer is None or self.retention >= 1.0 or self.llm_retention >= 1.0:
            return None
        return scale_layers([self.pruning_layer], num_layers, self.reference_depth)[0]

    @property
    def newline_policy(self) -> str:
        """Per-row layout: one newline after every frame (``mm_newline_position=frame``); all of them unpruned."""
        return "all" if self.retention >= 1.0 else "frame_ends"

    def expected_video_tokens(self, layout: VideoLayout, num_layers: int) -> list[int] | None:
        return [layout.video_len] * num_layers if self.retention >= 1.0 else None  # ceil(n·ρ) per frame: data

    # -- before the LLM ------------------------------------------------------------------------------------------------
    def compress(
        self, feats: torch.Tensor, cls: torch.Tensor, generator: torch.Generator | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict]:
        """``flashvid_compression`` on (F, T, D) tokens with (F, T) vision attention ``cls``.

        Returns:
            flat indices ``f·T + cell`` (M,) sorted, their (M, D) fp32 features, (M,) merge weights, and the recorded
            decisions (``segments``, ``adts_per_frame``, ``sttm_per_frame``, ``merge_inputs``).
        """
        t = feats.shape[1]
        feats = feats.float()
        sizes = segment(feats.mean(1), self.segment_threshold, self.min_segments, self.complementary_segment)
        adts_n, sttm_n = self.budgets(t)
        index, out, weight, start = [], [], [], 0
        merge_inputs: list[list[int]] = []  # per segment, tokens per frame entering the spatial merge
        for size in sizes:
            seg, seg_cls = feats[start : start + size].clone(), cls[start : start + size]
            free = torch.ones(size, t, dtype=torch.bool, device=seg.device)
            if adts_n > 0:  # `if flashvid_config.alpha > 0` (A = ceil(B·α) = 0 only at α = 0)
                chosen = adts(seg, seg_cls, adts_n, self.token_selection == "attn_div_v2")
                offsets = (torch.arange(start, start + size, device=seg.device) * t)[:, None]
                index.append((chosen + offsets).flatten())
                out.append(torch.gather(seg, 1, chosen[..., None].expand(-1, -1, seg.shape[2])).flatten(0, 1))
                weight.append(torch.ones(chosen.numel()))
                free.scatter_(1, chosen, False)
            if sttm_n > 0:
                if size > 1:
                    cells = tstm(seg, free, self.temporal_threshold, (adts_n + sttm_n) * size)
                else:  # one-frame segment: every token of the frame goes to the spatial merge (upstream)
                    cells = [torch.arange(t, device=seg.device)]
                merge_inputs.append([len(c) for c in cells])
                ratio = sttm_n * size / sum(len(c) for c in cells)  # adaptive contextual ratio ρ
                for f, cell in enumerate(cells):
                    x, n = seg[f, cell], len(cell)
                    clusters = math.ceil(n * ratio)
                    if clusters > 0 and ratio < 1.0:  # DPC-kNN spatial merging, mean of each cluster
                        centres, member = dpc_knn(x[None], clusters, min(clusters, MAX_DENSITY_K), generator)
                        one_hot = F.one_hot(member[0], clusters).to(x.dtype)
                        x, cell = (one_hot.T @ x) / one_hot.sum(0)[:, None], cell[centres[0]]
                        counts = one_hot.sum(0).cpu()
                    else:
                        counts = torch.ones(n)
                    index.append(cell + (start + f) * t)
                    out.append(x)
                    weight.append(counts)
            start += size
        index_all = torch.cat(index).cpu()
        order = torch.sort(index_all, stable=True).indices  # upstream `final_global_indices.argsort()`
        stats = {"segments": sizes, "adts_per_frame": adts_n, "sttm_per_frame": sttm_n, "merge_inputs": merge_inputs}
        return index_all[order], torch.cat(out)[order.to(feats.device)], torch.cat(weight)[order], stats

    def select_visual(self, tokens: VisualTokens, ctx: SampleContext) -> VisualTokens:
        if self.retention >= 1.0:  # the unpruned reference
            return tokens
        layout = ctx.layout
        nf, t = layout.num_frames, layout.tokens_per_frame
        if len(tokens) != layout.num_grid_tokens:
            raise ValueError(f"flashvid expects the full token grid ({layout.num_grid_tokens}), got {len(tokens)}")
        feats = tokens.features.view(nf, t, -1)
        cls = ctx.pool_map(ctx.vision_attention().received).reshape(nf, t).to(feats.device)
        flat, features, weight, stats = self.compress(feats, cls, ctx.generator())
        ctx.stats.update(stats)
        ctx.stats["retention_prefill"] = len(flat) / layout.num_grid_tokens
        return VisualTokens(
            features=features.to(tokens.features.dtype),
            frame=flat // t,
            row=(flat % t) // layout.grid_w,
            col=flat % layout.grid_w,
            weight=weight,
        )

    # -- inside the LLM ------------------------------------------------------------------------------------------------
    def llm_layers(self, num_layers: int) -> tuple[int, ...]:
        layer = self.inner_layer(num_layers)
        return () if layer is None else (layer - 1, layer)

    def before_layer(self, state: SequenceState, ctx: SampleContext) -> torch.Tensor | None:
        if state.layer_idx == self.inner_layer(ctx.num_layers) - 1:
            ctx.stats[SCORES_KEY] = state.probe()[:, 0].mean(0).cpu()  # last query row, head mean
            return None
        scores = ctx.stats.pop(SCORES_KEY)
        per_row = state.newline_layout == "per_row"
        span = state.video_positions if per_row else state.visual_positions  # upstream's visual_token_length
        keep = torch.topk(scores[span], math.ceil(len(span) * self.llm_retention)).indices
        kept = span[keep]
        if not per_row:
            kept = torch.cat([kept, torch.nonzero(state.kind == NEWLINE).squeeze(1)])
        ctx.stats["inner_kept"] = len(kept)
        return keep_with_text(state, kept)

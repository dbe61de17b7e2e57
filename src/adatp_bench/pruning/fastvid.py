"""FastVID (Shen et al., "FastVID: Dynamic Density Pruning for Fast Video Large Language Models", NeurIPS 2025,
arXiv 2503.11187) — port of ``LunarShen/FastVID@a40a109`` (docs/methods/fastvid.md).

Official code: ``fastvid_llavaonevision/LLaVA-NeXT/llava/model/language_model/modeling_qwen2.py::Qwen2Model.forward``
(blocks "DySeg", "STPrune", "Compute Anchor Token Distribution", "ATS", "Parallel Density Score Computation", "DTM for
Single-Frame Segment", "DTM for Multi-Frame Segment") and its LLaVA-Video twin in ``fastvid_llavavideo/`` (same file,
one loop per segment). The two differ in how a segment's budget is split and which tokens DTM merges; ``variant``
picks one (``auto``: the OneVision code for the one-newline layout, the LLaVA-Video code for the per-row layout).

1. **DySeg.** ``t_i = cos(f_i, f_{i+1})`` on the SigLIP MAP-head global feature of each frame
   (``ctx.frame_global_features()``). Cut after frame i for the ``c − 1`` lowest ``t_i`` and for every ``t_i < τ``.
2. **STPrune budget.** ``retain = int(T·r)`` tokens per frame (docs/flops.md §3); ``d`` of them from DTM.
   - OneVision code: every frame keeps ``retain − int(retain·d)`` salient tokens; a segment of P frames has
     ``⌈P/p⌉`` anchor frames — every p-th **counted from the segment's end** — each with ``int(retain·d)·P // ⌈P/p⌉``
     anchors (so a segment may keep a few tokens fewer than ``retain·P``).
   - LLaVA-Video code: a segment keeps exactly ``retain·P``: ``int(retain·P·d)`` anchors split over the anchor frames
     (remainder to the last ones) and the salient rest split over all frames (remainder to the first ones).
3. **ATS.** Salient tokens: each frame's top tokens by the MAP head's attention, pooled like the tokens
   (``ctx.head_attention()``; upstream ``get_attn_2dPool``).
4. **DTM.** On each anchor frame's non-salient tokens, density-peak scores ρ·δ (k = 4 neighbours, ``rand·1e-6`` noise
   seeded per sample; ``pruning/dpc.py``); the top scores become anchors. Tokens are assigned to the most
   cosine-similar anchor and each anchor becomes ``w·a + (1 − w)·mean(assigned)``, ``w = max(β, 1/(n + 1))``.
   - OneVision code: the assigned set is every non-salient token of the segment, the anchors themselves included (each
     anchor is counted in its own n); in a multi-frame segment every anchor frame merges the whole segment.
   - LLaVA-Video code: the assigned set excludes the segment's salient tokens and the anchor frame's own anchors.
5. Kept tokens stay in original order with their **original RoPE positions** (``position_ids = keep_indexs``); a
   merged token takes its anchor's position. On LLaVA-Video, the newline of every row that keeps a token is kept
   (the framework's ``rows_with_kept`` policy).

Upstream prunes inside ``Qwen2Model.forward`` after the sequence is built; the sequence and positions are the same when
done here before the LLM (``pre_llm_positions = "original"``). Deviations (docs/methods/fastvid.md): merging arithmetic
in fp32 (upstream: model dtype); counts that upstream cannot satisfy (``c − 1 > F − 1``, more anchors than candidates at
high retention) are clamped where upstream would raise; retention 1.0 returns the tokens untouched.
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
from adatp_bench.pruning.dpc import density_peaks
from adatp_bench.pruning.selection import check_retention, per_frame_budget

DENSITY_K = 4  # `torch.topk(dist_matrix, k=4, ...)` in both upstream variants
VARIANTS = ("auto", "onevision", "llava_video")


# -- DySeg -----------------------------------------------------------------------------------------------------------
def dyseg(global_features: torch.Tensor, c: int, tau: float) -> list[int]:
    """Segment sizes from DySeg (block "DySeg").

    Args:
        global_features: (F, Dg) one global feature per frame.
        c: segments wanted from the ranking rule (``c − 1`` cuts at the lowest similarities; clamped to ``F − 1``).
        tau: also cut wherever the adjacent-frame cosine is below ``tau``.

    Returns:
        Sizes of the consecutive segments (they sum to F).
    """
    nf = global_features.shape[0]
    feats = global_features.float()
    feats = feats / feats.norm(dim=1, keepdim=True)
    similarity = (feats[:-1] * feats[1:]).sum(dim=1)  # (F − 1,): t_i = cos(f_i, f_{i+1})
    lowest = torch.topk(similarity, min(c - 1, nf - 1), largest=False).indices
    below = torch.nonzero(similarity < tau).squeeze(1)
    cuts = torch.unique(torch.cat([lowest, below]))  # sorted; a cut at i ends a segment after frame i
    bounds = torch.cat([torch.tensor([-1]), cuts.cpu(), torch.tensor([nf - 1])])
    return bounds.diff().tolist()


# -- budgets ---------------------------------------------------------------------------------------------------------
def anchor_counts_onevision(sizes: list[int], context: int, p: int) -> list[int]:
    """Anchors per frame in the OneVision code (block "Compute Anchor Token Distribution").

    A P-frame segment gives ``context·P // ⌈P/p⌉`` anchors to each frame ``j`` with ``(P − 1 − j) % p == 0``.
    """
    counts: list[int] = []
    for size in sizes:
        per_anchor = context * size // math.ceil(size / p)
        counts += [per_anchor if (size - 1 - j) % p == 0 else 0 for j in range(size)]
    return counts


def budgets_llava_video(sizes: list[int], retain: int, d: float, p: int) -> tuple[list[int], list[int]]:
    """(salient, anchors) per frame in the LLaVA-Video code (per-segment ``frm_salient_num`` / ``frm_context_num``)."""
    salient: list[int] = []
    anchors: list[int] = []
    for size in sizes:
        seg_retain = retain * size
        seg_context = int(seg_retain * d)
        seg_salient = seg_retain - seg_context
        salient += [seg_salient // size + (1 if i < seg_salient % size else 0) for i in range(size)]
        slots = math.ceil(size / p)
        chunks = [seg_context // slots + (1 if i < seg_context % slots else 0) for i in range(slots)]
        forward = [chunks[i // p] if i % p == 0 else 0 for i in range(size)]
        anchors += forward[::-1]  # counted from the segment's end (`frm_context_num.reverse()`)
    return salient, anchors


# -- DTM -------------------------------------------------------------------------------------------------------------
def dtm_update(anchors: torch.Tensor, pool: torch.Tensor, beta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Assign ``pool`` tokens to their most cosine-similar anchor and update each anchor (DTM).

    ``a* = w·a + (1 − w)·mean(assigned)``, ``w = max(β, 1/(n + 1))`` (``avg_weights ... .clamp(min=beta)``); an anchor
    with no assigned token is unchanged.

    Args:
        anchors: (B, m, D) fp32 anchor tokens.
        pool: (B, n, D) fp32 tokens to assign.
        beta: the minimum anchor weight β.

    Returns:
        updated anchors (B, m, D) and assigned counts n (B, m).
    """
    pool_n = pool / pool.norm(dim=-1, keepdim=True)
    anchors_n = anchors / anchors.norm(dim=-1, keepdim=True)
    assign = (pool_n @ anchors_n.transpose(1, 2)).argmax(dim=2)  # (B, n)
    one_hot = F.one_hot(assign, anchors.shape[1]).to(pool.dtype)
    counts = one_hot.sum(dim=1)  # (B, m)
    weight = (1 / (counts + 1)).clamp(min=beta)[..., None]
    mean = (one_hot.transpose(1, 2) @ pool) / counts.clamp(min=1)[..., None]
    return weight * anchors + (1 - weight) * mean, counts


@dataclass
class Kept:
    """STPrune output over F frames of N tokens: ``index`` (M,) flat ``f·N + cell``; ``features`` (M, D); ``weight``."""

    index: torch.Tensor
    features: torch.Tensor
    weight: torch.Tensor


def _top_density(x: torch.Tensor, count: int, generator: torch.Generator) -> torch.Tensor:
    """Indices of the ``count`` highest density-peak scores of each row of ``x`` (B, n, D) → (B, count)."""
    score = density_peaks(x, DENSITY_K, generator=generator).score
    return torch.topk(score, min(count, x.shape[1]), dim=-1).indices


def stprune_onevision(
    feats: torch.Tensor,
    attn: torch.Tensor,
    sizes: list[int],
    retain: int,
    d: float,
    p: int,
    beta: float,
    generator: torch.Generator,
) -> Kept:
    """STPrune as in ``fastvid_llavaonevision`` (all frames in parallel, then the multi-frame segments).

    Args:
        feats: (F, N, D) pooled tokens; attn: (F, N) pooled MAP-head attention; sizes: DySeg segments;
        retain: tokens per frame; d, p, beta: FastVID's hyperparameters; generator: density noise.
    """
    nf, n, dim = feats.shape
    x = feats.float()
    context = int(retain * d)
    salient_n = retain - context
    plan = anchor_counts_onevision(sizes, context, p)
    # ATS: top salient tokens per frame.
    salient = torch.topk(attn.float(), salient_n, dim=1).indices  # (F, s)
    kept = [Kept(_flat(salient, n), _rows(x, salient).reshape(-1, dim), torch.ones(salient.numel()))]
    # Parallel density scores on every frame's non-salient tokens (one noise draw of shape (F, N − s), as upstream).
    is_salient = torch.zeros(nf, n, dtype=torch.bool, device=x.device).scatter_(1, salient, True)
    filtered = torch.arange(n, device=x.device).expand(nf, n)[~is_salient].view(nf, n - salient_n)
    xf = _rows(x, filtered)  # (F, n_f, D)
    score = density_peaks(xf, DENSITY_K, generator=generator).score if context > 0 else None
    start = 0
    for size in sizes:
        frames = list(range(start, start + size))
        start += size
        if score is None:
            continue
        if size == 1:  # "DTM for Single-Frame Segment": merge the frame's non-salient tokens into its own anchors
            f = frames[0]
            top = torch.topk(score[f], min(context, xf.shape[1])).indices
            merged, counts = dtm_update(xf[f, top][None], xf[f][None], beta)
            kept.append(Kept(filtered[f, top] + f * n, merged[0], counts[0].float()))
            continue
        # "DTM for Multi-Frame Segment": each anchor frame merges every non-salient token of the segment.
        pool = xf[frames].reshape(1, -1, dim)
        for f in frames:
            if plan[f] == 0:
                continue
            top = torch.topk(score[f], min(plan[f], xf.shape[1])).indices
            merged, counts = dtm_update(xf[f, top][None], pool, beta)
            kept.append(Kept(filtered[f, top] + f * n, merged[0], counts[0].float()))
    return _concat(kept)


def stprune_llava_video(
    feats: torch.Tensor,
    attn: torch.Tensor,
    sizes: list[int],
    retain: int,
    d: float,
    p: int,
    beta: float,
    generator: torch.Generator,
) -> Kept:
    """STPrune as in ``fastvid_llavavideo`` (one segment, then one frame at a time). Arguments as
    :func:`stprune_onevision`."""
    _nf, n, dim = feats.shape
    x = feats.float()
    salient_plan, anchor_plan = budgets_llava_video(sizes, retain, d, p)
    kept: list[Kept] = []
    start = 0
    for size in sizes:
        seg = x[start : start + size].reshape(size * n, dim)  # segment tokens, flat index i·N + cell
        salient, anchors = [], []
        for i in range(size):
            f = start + i
            top = torch.topk(attn[f].float(), salient_plan[f]).indices
            salient.append(top + i * n)
            if anchor_plan[f] > 0:
                rest = torch.ones(n, dtype=torch.bool, device=x.device)
                rest[top] = False
                remaining = torch.nonzero(rest).squeeze(1)
                chosen = _top_density(x[f, remaining][None], anchor_plan[f], generator)[0]
                anchors.append(torch.sort(remaining[chosen]).values + i * n)
        salient_idx = torch.cat(salient)
        kept.append(Kept(salient_idx + start * n, seg[salient_idx], torch.ones(len(salient_idx))))
        for anchor_idx in anchors:  # merge the segment's other tokens into this anchor frame's anchors
            pool_mask = torch.ones(size * n, dtype=torch.bool, device=x.device)
            pool_mask[salient_idx] = False
            pool_mask[anchor_idx] = False
            merged, counts = dtm_update(seg[anchor_idx][None], seg[pool_mask][None], beta)
            kept.append(Kept(anchor_idx + start * n, merged[0], counts[0].float() + 1))
        start += size
    return _concat(kept)


def _rows(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Gather tokens of (F, N, D) ``x`` at per-frame indices (F, k) → (F, k, D)."""
    return torch.gather(x, 1, index[..., None].expand(-1, -1, x.shape[2]))


def _flat(index: torch.Tensor, n: int) -> torch.Tensor:
    """Per-frame indices (F, k) → flat ``f·N + cell`` (F·k,)."""
    return (index + torch.arange(index.shape[0], device=index.device)[:, None] * n).reshape(-1)


def _concat(parts: list[Kept]) -> Kept:
    """Concatenate STPrune outputs and sort them by original index."""
    index = torch.cat([k.index.cpu() for k in parts])
    features = torch.cat([k.features for k in parts])
    weight = torch.cat([k.weight.cpu() for k in parts])
    order = torch.argsort(index)
    return Kept(index[order], features[order.to(features.device)], weight[order])


@register_method("fastvid")
@dataclass
class FastVID(PruningMethod):
    """Args:
    retention: r; ``int(T·r)`` tokens per frame (T = 196 on LLaVA-OV, 169 on LLaVA-Video).
    c: DySeg segments from the ranking rule (``fastvid_DySeg_c``).
    tau: DySeg similarity threshold τ (``fastvid_DySeg_tau``).
    d: share of each budget from DTM (``fastvid_STPrune_d``).
    p: anchor-frame stride in a segment (``fastvid_DTM_p``).
    beta: minimum anchor weight β in the anchor update (``fastvid_DTM_beta``).
    variant: ``auto`` | ``onevision`` | ``llava_video`` (which upstream STPrune code; auto follows the layout).
    """

    retention: float = 0.25
    c: int = 8
    tau: float = 0.9
    d: float = 0.4
    p: int = 4
    beta: float = 0.6
    variant: str = "auto"

    needs_relevance = True
    pre_llm_positions = "original"

    def validate(self, tokens_per_frame: int, num_frames: int, num_layers: int) -> None:
        check_retention("retention", self.retention)
        if per_frame_budget(tokens_per_frame, self.retention) < 1:
            raise UnreachableSetting(
                f"fastvid retention={self.retention} keeps int({tokens_per_frame}·r) = 0 tokens per frame"
            )
        if self.c < 1 or self.p < 1:
            raise ConfigError(f"fastvid c={self.c} and p={self.p} must be ≥ 1")
        if not 0.0 <= self.d <= 1.0 or not 0.0 <= self.beta <= 1.0:
            raise ConfigError(f"fastvid d={self.d} and beta={self.beta} must lie in [0, 1]")
        if self.variant not in VARIANTS:
            raise ConfigError(f"fastvid variant={self.variant!r}; valid: {VARIANTS}")

    def expected_video_tokens(self, layout: VideoLayout, num_layers: int) -> list[int] | None:
        if per_frame_budget(layout.tokens_per_frame, self.retention) >= layout.tokens_per_frame:
            return [layout.video_len] * num_layers
        return None  # depends on the segmentation (and on LLaVA-Video, on the rows touched)

    def resolve_variant(self, layout: VideoLayout) -> str:
        if self.variant != "auto":
            return self.variant
        return "onevision" if layout.newline_layout == "per_video" else "llava_video"

    def select_visual(self, tokens: VisualTokens, ctx: SampleContext) -> VisualTokens:
        layout = ctx.layout
        nf, n = layout.num_frames, layout.tokens_per_frame
        retain = per_frame_budget(n, self.retention)
        if retain >= n:
            return tokens
        if len(tokens) != layout.num_grid_tokens:
            raise ValueError(f"fastvid expects the full token grid ({layout.num_grid_tokens}), got {len(tokens)}")
        sizes = dyseg(ctx.frame_global_features(), self.c, self.tau)
        variant = self.resolve_variant(layout)
        stprune = stprune_onevision if variant == "onevision" else stprune_llava_video
        feats = tokens.features.view(nf, n, -1)
        attn = ctx.head_attention().reshape(nf, n).to(feats.device)
        kept = stprune(feats, attn, sizes, retain, self.d, self.p, self.beta, ctx.generator())
        ctx.stats["segments"] = sizes
        ctx.stats["variant"] = variant
        ctx.stats["retention_prefill"] = len(kept.index) / layout.num_grid_tokens
        cell = kept.index % n
        return VisualTokens(
            features=kept.features.to(feats.dtype),
            frame=kept.index // n,
            row=cell // layout.grid_w,
            col=cell % layout.grid_w,
            weight=kept.weight,
        )

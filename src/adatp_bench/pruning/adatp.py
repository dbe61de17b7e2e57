"""AdaTP — Attention-Debiased Token Pruning for Video LLMs (arXiv 2505.20100, Findings of EMNLP 2025).

No official code exists (docs/adatp.md §9). This is the reconstruction documented in ``docs/adatp.md``: every step the
paper's public text states is marked [V] below (sources: docs/adatp.md §9), every gap we filled is marked [H] and is a
config key.

Pipeline for one sample (F frames of h×w grid tokens, N = F·h·w; budget unit = grid tokens, newlines excluded):

1. **Segmentation** [V rule, themoonlight review]. Frames i, i+1 stay in one segment iff
   ``cos(v_p^i, v_p^{i+1}) ≥ τs``, with ``v_p`` the SigLIP MAP-head global feature of each frame
   (``ctx.frame_global_features()``, as FastVID, docs/methods/fastvid.md).
2. **Global debiasing** [V "boost token retention in text-relevant segments using the text encoder", argminai]. Segment
   relevance ``ρ_j = cos(t, v̄_j)`` with ``t`` the SigLIP text embedding of the question; text-relevant segments get a
   boosted, capped share of every stage's budget (τt, α_boost, γ_cap). Every segment gets a budget regardless of its
   position, and attention ranking happens only *within* segments — so retention no longer follows the attention bias
   towards the ends of the sequence (the global bias of the abstract).
3. **Local debiasing** [V "remove repeated spatial tokens inside each segment", argminai]. Within a segment, tokens at
   the same (h, w) whose features are near-duplicates (cos > τ_dup) of the run's first token form one group; a stage
   keeps one token per group (the best-scored) before any second member, then fills the segment's budget by score, so
   the token counts stay exact.
4. **Segment-aware progressive pruning** [V the term, sciencestack; schedule H]. Stages at ``prune_layers`` (0 = before
   the LLM); stage s of S keeps ``r_s = min(1, retention / p^(S−1−s))`` of the N grid tokens, so each stage keeps a
   fraction p of the previous one and the last keeps ``retention``. The pre-LLM stage ranks by the MAP-head attention
   (``ctx.head_attention()``, FastVID's ATS); in-LLM stage K ranks by the LLM's attention from the probe
   (``state.probe``), by default layer K−1's last-row attention as FastV (docs/methods/fastv.md) — the scores whose bias
   AdaTP measured at layer 1 (86.8% of the top-10% in the last 4 of 32 frames, argminai).

Token counts per layer are fixed by the setting (``expected_video_tokens``), so FLOPs are known in advance;
``scripts/solve_adatp_schedule.py`` solves ``retention`` (and p) for the published FLOPs points.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F

from adatp_bench.core.context import SampleContext
from adatp_bench.core.layout import NewlinePolicy, VideoLayout, VisualTokens
from adatp_bench.core.sequence import VISUAL, SequenceState
from adatp_bench.errors import ConfigError
from adatp_bench.pruning.base import PruningMethod, register_method
from adatp_bench.pruning.segments import Segments, allocate, segment_frames, segment_of_frame, waterfill
from adatp_bench.pruning.selection import check_retention, keep_positions

PLAN_KEY = "_adatp_plan"  # scratch keys in ctx.stats (not recorded)
SCORES_KEY = "_adatp_scores"
CHOICES: dict[str, tuple[str, ...]] = {
    "score_layer": ("previous", "current"),
    "query": ("last", "question"),
    "relevance_agg": ("mean", "max"),
    "relevance_norm": ("minmax", "raw"),
    "newlines": ("per_frame", "keep"),
    "positions": ("original", "contiguous"),
}
#: The ``newlines`` setting as a newline policy of the in-LLM stages (core/layout.py): the closing newline of every
#: frame (FastVID*; OV's single newline too), or every newline that entered the LLM.
IN_LLM_NEWLINES: dict[str, str] = {"per_frame": "frame_ends", "keep": "all"}


# ---------------------------------------------------------------------------------------------------------------------
# Global debiasing: text relevance and segment shares (docs/adatp.md §2)
# ---------------------------------------------------------------------------------------------------------------------


def segment_relevance(
    global_features: torch.Tensor, segments: Segments, question: torch.Tensor, agg: str = "mean"
) -> torch.Tensor:
    """Text relevance of each segment, ``ρ_j`` [H: aggregation].

    Args:
        global_features: (F, Dg) per-frame global features.
        segments: half-open frame ranges.
        question: (Dg,) text embedding in the same space.
        agg: ``mean`` → cos(t, mean of the segment's unit features); ``max`` → max over its frames of cos(t, v_p^i).

    Returns:
        (m,) fp32 cosine relevance per segment.
    """
    v = F.normalize(global_features.float(), dim=-1)
    t = F.normalize(question.float().flatten(), dim=0)
    rel = []
    for start, end in segments:
        if agg == "mean":
            rel.append(F.normalize(v[start:end].mean(0), dim=0) @ t)
        else:
            rel.append((v[start:end] @ t).max())
    return torch.stack(rel)


def boosted_segments(relevance: torch.Tensor, tau_t: float, norm: str = "minmax") -> torch.Tensor:
    """(m,) bool: the text-relevant segments [H: normalisation and threshold].

    ``minmax``: ``(ρ_j − min ρ)/(max ρ − min ρ) ≥ τt`` (no segment when all ρ are equal: nothing is relatively
    relevant). ``raw``: ``ρ_j ≥ τt`` on the cosine itself.
    """
    if norm == "raw":
        return relevance >= tau_t
    span = relevance.max() - relevance.min()
    if float(span) <= 1e-8:
        return torch.zeros_like(relevance, dtype=torch.bool)
    return (relevance - relevance.min()) / span >= tau_t


def segment_shares(lengths: torch.Tensor, boosted: torch.Tensor, alpha_boost: float, gamma_cap: float) -> torch.Tensor:
    """Share of every stage's budget per segment [H: the rule; V: "boost text-relevant segments"].

    ``b_j = |s_j| / F`` (length-proportional: every segment gets a budget regardless of position);
    ``w_j = b_j · (1 + α_boost · 1[boosted_j])``; shares ``∝ w_j`` renormalised to 1 with ``share_j ≤ γ_cap · b_j``
    (water-filling: what a capped segment cannot take goes to the others in proportion to ``w``).

    Args:
        lengths: (m,) frames per segment.
        boosted: (m,) bool.

    Returns:
        (m,) float64 shares summing to 1.
    """
    base = lengths.double() / lengths.sum()
    weights = base * (1.0 + alpha_boost * boosted.double())
    return waterfill(1.0, weights, gamma_cap * base)


# ---------------------------------------------------------------------------------------------------------------------
# Local debiasing: repeated spatial tokens inside a segment (docs/adatp.md §2, step 3)
# ---------------------------------------------------------------------------------------------------------------------


def duplicate_groups(grid: torch.Tensor, segments: Segments, tau_dup: float) -> torch.Tensor:
    """Group the tokens at each spatial cell of each segment into runs of near-duplicates [H: the rule].

    Walking a segment's frames in order, the token at cell (h, w) joins the current run of that cell iff its cosine
    similarity to the run's first token (the anchor) is > τ_dup; otherwise it starts a new run. Runs never cross
    segment boundaries. A static segment thus has one group per cell; a changed cell starts a new group.

    Args:
        grid: (F, h, w, D) token features (the LLM's input embeddings).
        segments: half-open frame ranges.
        tau_dup: duplicate threshold (≥ 1 disables deduplication).

    Returns:
        (F, h, w) long group ids, unique over the whole video.
    """
    f, h, w, d = grid.shape
    x = F.normalize(grid.float().reshape(f, h * w, d), dim=-1)
    group = torch.empty(f, h * w, dtype=torch.long, device=x.device)
    next_id = 0
    for start, end in segments:
        anchor = x[start]
        ids = torch.arange(h * w, device=x.device) + next_id
        next_id += h * w
        group[start] = ids
        for frame in range(start + 1, end):
            new = (x[frame] * anchor).sum(-1) <= tau_dup
            n_new = int(new.sum())
            if n_new:
                ids = ids.clone()
                ids[new] = torch.arange(n_new, device=x.device) + next_id
                next_id += n_new
                anchor = torch.where(new[:, None], x[frame], anchor)
            group[frame] = ids
    return group.reshape(f, h, w).cpu()


def rank_within_segments(
    segment: torch.Tensor, group: torch.Tensor, score: torch.Tensor, budgets: torch.Tensor
) -> torch.Tensor:
    """Keep ``budgets[j]`` candidates of each segment j: one per duplicate group first, then the rest, each by score.

    Inside a segment the order is: the best-scored member of every group (by descending score), then the other
    members (by descending score); ties go to the lower index. This removes repeated spatial tokens whenever the
    budget allows and fills the budget exactly otherwise.

    Args:
        segment: (n,) long segment id of each candidate.
        group: (n,) long duplicate-group id of each candidate.
        score: (n,) float, higher is better.
        budgets: (m,) long, ``budgets[j] ≤`` candidates of segment j.

    Returns:
        (n,) bool keep mask with exactly ``budgets[j]`` True entries in segment j.
    """
    n = score.numel()
    if n == 0:
        return torch.zeros(0, dtype=torch.bool)
    by_score = torch.sort(-score.double(), stable=True).indices
    rank = torch.empty(n, dtype=torch.long)
    rank[by_score] = torch.arange(n)
    first = torch.full((int(group.max()) + 1,), n, dtype=torch.long)
    first = first.scatter_reduce(0, group, rank, reduce="amin")
    secondary = (first[group] != rank).long()
    order = torch.sort(segment * (2 * n) + secondary * n + rank).indices  # (segment, secondary, rank), all unique
    seg_sorted = segment[order]
    starts = torch.searchsorted(seg_sorted, torch.arange(len(budgets)))
    position = torch.arange(n) - starts[seg_sorted]
    keep = torch.zeros(n, dtype=torch.bool)
    keep[order[position < budgets[seg_sorted]]] = True
    return keep


# ---------------------------------------------------------------------------------------------------------------------
# The per-sample plan, computed once before the LLM
# ---------------------------------------------------------------------------------------------------------------------


@dataclass
class SegmentPlan:
    """What every stage of one sample needs: segments, their budget shares and the duplicate groups.

    Attributes:
        segments: half-open frame ranges.
        frame_segment: (F,) long segment of each frame.
        shares: (m,) float64 budget share per segment (sums to 1).
        group: (F, h, w) long duplicate-group id of each grid cell.
    """

    segments: Segments
    frame_segment: torch.Tensor
    shares: torch.Tensor
    group: torch.Tensor

    def budgets(self, total: int, segment: torch.Tensor) -> torch.Tensor:
        """(m,) long per-segment budgets summing to ``total``, for candidates with segment ids ``segment`` (n,)."""
        capacity = torch.bincount(segment, minlength=len(self.segments))
        return allocate(total, self.shares, capacity)


# ---------------------------------------------------------------------------------------------------------------------
# The method
# ---------------------------------------------------------------------------------------------------------------------


@register_method("adatp")
@dataclass
class AdaTP(PruningMethod):
    """AdaTP (reconstruction; docs/adatp.md). Every field is a key of ``conf/method/adatp.yaml``.

    Args:
        retention: fraction of the N grid tokens kept by the last stage (1.0 = no pruning anywhere).
        p: progressive fraction: each stage keeps p of the previous stage's tokens [H].
        prune_layers: stage layers, increasing; 0 = before the LLM, K ≥ 1 = before decoder layer K [H].
        score_layer: in-LLM scores from layer K−1's attention on its own input (``previous``, FastV) or from layer
            K's attention on its input (``current``, PDrop-style) [H].
        query: attention rows: the last prompt token (``last``, FastV) or the mean over the question rows [H].
        tau_s: segmentation threshold τs [V rule; H value 0.9, FastVID's τ].
        relevance_agg: segment relevance from the mean global feature or the best frame [H].
        relevance_norm: threshold τt on min-max normalised relevance or on the raw cosine [H].
        tau_t: text-relevance threshold τt [H].
        alpha_boost: weight boost α of text-relevant segments [H].
        gamma_cap: a segment's share is at most γ times its length-proportional share [H].
        tau_dup: same-cell cosine above which tokens of a segment are duplicates [H].
        newlines: newline positions at in-LLM stages: keep one per frame (``per_frame``, FastVID*) or all (``keep``);
            newlines never count towards budgets [H].
        positions: RoPE positions after pruning: ``original`` (gaps, FastV/FastVID) or ``contiguous`` [H].
    """

    needs_relevance: ClassVar[bool] = True
    #: every newline enters the LLM (count fixed by the layout); in-LLM stages reduce them per ``newlines``.
    newline_policy: ClassVar[NewlinePolicy] = "all"

    retention: float = 0.25
    p: float = 0.5
    prune_layers: tuple[int, ...] = field(default=(0, 2))
    score_layer: str = "previous"
    query: str = "last"
    tau_s: float = 0.9
    relevance_agg: str = "mean"
    relevance_norm: str = "minmax"
    tau_t: float = 0.5
    alpha_boost: float = 1.0
    gamma_cap: float = 1.5
    tau_dup: float = 0.9
    newlines: str = "per_frame"
    positions: str = "original"

    def __post_init__(self) -> None:
        self.prune_layers = tuple(int(k) for k in self.prune_layers)  # Hydra hands lists

    # -- position semantics (docs/methods.md §5.3) ------------------------------------------------------------------
    @property
    def pre_llm_positions(self) -> Literal["contiguous", "original"]:  # type: ignore[override]
        return "original" if self.positions == "original" else "contiguous"

    @property
    def in_llm_positions(self) -> Literal["original", "renumber"]:  # type: ignore[override]
        return "original" if self.positions == "original" else "renumber"

    # -- schedule ----------------------------------------------------------------------------------------------------
    def stage_retentions(self) -> list[float]:
        """``r_s = min(1, retention / p^(S−1−s))`` for the S stages, in ``prune_layers`` order."""
        n = len(self.prune_layers)
        return [min(1.0, self.retention / self.p ** (n - 1 - s)) for s in range(n)]

    def stage_budgets(self, num_grid_tokens: int) -> list[int]:
        """Grid tokens kept by each stage: ``round(r_s · N)`` (Python's round, as FastV)."""
        return [round(r * num_grid_tokens) for r in self.stage_retentions()]

    def _active_llm_stages(self) -> dict[int, int]:
        """{layer K: stage index} for the in-LLM stages that prune (r_s < 1)."""
        return {
            k: s
            for s, (k, r) in enumerate(zip(self.prune_layers, self.stage_retentions(), strict=True))
            if k > 0 and r < 1.0
        }

    def expected_video_tokens(self, layout: VideoLayout, num_layers: int) -> list[int]:
        """Video positions entering each layer: the stage budget (grid tokens) plus the newlines left (docs/adatp.md
        §3)."""
        n = layout.num_grid_tokens
        budgets = self.stage_budgets(n)
        visual = budgets[0] if self.prune_layers[0] == 0 else n
        newline = layout.num_newlines  # newline_policy "all"
        stages = self._active_llm_stages()
        out = []
        for layer in range(num_layers):
            if layer in stages:
                visual = budgets[stages[layer]]
                newline = layout.newline_count(IN_LLM_NEWLINES[self.newlines], [])
            out.append(visual + newline)
        return out

    # -- validation --------------------------------------------------------------------------------------------------
    def validate(self, tokens_per_frame: int, num_frames: int, num_layers: int) -> None:
        check_retention("retention", self.retention)
        if not 0.0 < self.p <= 1.0:
            raise ConfigError(f"adatp p={self.p} is impossible: the progressive fraction must lie in (0, 1]")
        for key, valid in CHOICES.items():
            if getattr(self, key) not in valid:
                raise ConfigError(f"adatp {key}={getattr(self, key)!r} is unknown; valid: {list(valid)}")
        self._validate_layers(num_layers)
        if not -1.0 <= self.tau_s <= 1.0:
            raise ConfigError(f"adatp tau_s={self.tau_s} must lie in [-1, 1] (a cosine similarity)")
        if self.relevance_norm == "minmax" and not 0.0 <= self.tau_t <= 1.0:
            raise ConfigError(f"adatp tau_t={self.tau_t} must lie in [0, 1] with relevance_norm=minmax")
        if self.alpha_boost < 0:
            raise ConfigError(f"adatp alpha_boost={self.alpha_boost} must be ≥ 0")
        if self.gamma_cap < 1:
            raise ConfigError(f"adatp gamma_cap={self.gamma_cap} must be ≥ 1 (shares must still sum to 1)")

    def _validate_layers(self, num_layers: int) -> None:
        layers = self.prune_layers
        if not layers or any(b <= a for a, b in itertools.pairwise(layers)):
            raise ConfigError(f"adatp prune_layers={list(layers)} must be a non-empty, strictly increasing list")
        if layers[0] < 0 or layers[-1] >= num_layers:
            raise ConfigError(
                f"adatp prune_layers={list(layers)} must lie in [0, {num_layers - 1}] for a {num_layers}-layer LLM"
            )
        if layers[-1] == 0:
            raise ConfigError(
                "adatp prune_layers needs at least one in-LLM stage (a layer ≥ 1): AdaTP ranks by LLM attention"
            )
        if self.score_layer == "previous":
            clash = [k for k in layers if k > 1 and k - 1 in layers]
            if clash:
                raise ConfigError(
                    f"adatp prune_layers={list(layers)}: with score_layer=previous, stage {clash[0]} "
                    f"scores with layer {clash[0] - 1}, which is itself a stage; leave a gap or use "
                    "score_layer=current"
                )

    # -- before the LLM: plan + pre-LLM stage --------------------------------------------------------------------------
    def select_visual(self, tokens: VisualTokens, ctx: SampleContext) -> VisualTokens:
        """Segment, score relevance, find duplicates (always); keep stage 0's budget if ``prune_layers`` starts at 0."""
        plan = self._plan(tokens, ctx)
        ctx.stats[PLAN_KEY] = plan
        if self.prune_layers[0] != 0 or self.stage_retentions()[0] >= 1.0:
            return tokens
        total = self.stage_budgets(ctx.layout.num_grid_tokens)[0]
        # Pre-LLM score: the SigLIP MAP head's attention over the frame (FastVID's ATS) [H]; it has no temporal bias.
        score = ctx.head_attention().float().cpu()[tokens.frame, tokens.row, tokens.col]
        keep = self._keep(plan, tokens.frame, tokens.row, tokens.col, score, total, ctx, "pre_llm")
        return tokens.select(torch.nonzero(keep).squeeze(1))

    def _plan(self, tokens: VisualTokens, ctx: SampleContext) -> SegmentPlan:
        layout = ctx.layout
        global_features = ctx.frame_global_features().float().cpu()
        # step 1: a new segment where cos(v_p^i, v_p^{i+1}) < τs (docs/adatp.md §2, step 1)
        segments = segment_frames(global_features, self.tau_s)
        # step 2: text relevance from the SigLIP text tower → boosted, capped budget shares (docs/adatp.md §2, step 2)
        relevance = segment_relevance(global_features, segments, ctx.question_embedding().cpu(), self.relevance_agg)
        boosted = boosted_segments(relevance, self.tau_t, self.relevance_norm)
        lengths = torch.tensor([end - start for start, end in segments])
        shares = segment_shares(lengths, boosted, self.alpha_boost, self.gamma_cap)
        # step 3: runs of near-duplicate tokens at one cell inside a segment (docs/adatp.md §2, step 3)
        grid = tokens.features.new_zeros(layout.num_frames, layout.grid_h, layout.grid_w, tokens.features.shape[-1])
        grid[tokens.frame, tokens.row, tokens.col] = tokens.features
        group = duplicate_groups(grid, segments, self.tau_dup)
        ctx.stats.update(
            segments=[list(s) for s in segments],
            segment_relevance=[round(float(x), 4) for x in relevance],
            segment_boosted=[bool(b) for b in boosted],
            segment_shares=[round(float(x), 4) for x in shares],
            duplicate_tokens=int(group.numel() - torch.unique(group).numel()),
            segment_budgets={},
        )
        return SegmentPlan(segments, segment_of_frame(segments, layout.num_frames), shares, group)

    def _keep(
        self,
        plan: SegmentPlan,
        frame: torch.Tensor,
        row: torch.Tensor,
        col: torch.Tensor,
        score: torch.Tensor,
        total: int,
        ctx: SampleContext,
        stage: str,
    ) -> torch.Tensor:
        """(n,) keep mask over candidates at cells (frame, row, col): per-segment budgets, dedup-first ranking."""
        segment = plan.frame_segment[frame]
        budgets = plan.budgets(total, segment)
        ctx.stats["segment_budgets"][stage] = budgets.tolist()
        return rank_within_segments(segment, plan.group[frame, row, col], score, budgets)

    # -- inside the LLM: segment-aware progressive stages --------------------------------------------------------------
    def llm_layers(self, num_layers: int) -> tuple[int, ...]:
        stages = self._active_llm_stages()
        probes = {k - 1 for k in stages} if self.score_layer == "previous" else set()
        return tuple(sorted(set(stages) | probes))

    def before_layer(self, state: SequenceState, ctx: SampleContext) -> torch.Tensor | None:
        stages = self._active_llm_stages()
        layer = state.layer_idx
        if layer not in stages:  # a probe layer (score_layer=previous): scores of this layer on its own input
            ctx.stats[SCORES_KEY] = self._attention_scores(state)
            return None
        score = ctx.stats.pop(SCORES_KEY) if self.score_layer == "previous" else self._attention_scores(state)
        return self._prune(state, ctx, stages[layer], score)

    def _attention_scores(self, state: SequenceState) -> torch.Tensor:
        """(L,) attention each position receives: head mean of the probe rows (last prompt row or question rows).

        The row probe recomputes only those rows, so SDPA/FlashAttention stay on (docs/methods.md §5.2); FastV's rule is
        the last row, head mean (docs/methods/fastv.md).
        """
        rows = None if self.query == "last" else torch.nonzero(state.question_mask).squeeze(1)
        return state.probe(rows).mean(dim=(0, 1)).float().cpu()

    def _prune(self, state: SequenceState, ctx: SampleContext, stage: int, score: torch.Tensor) -> torch.Tensor:
        """Step 4 (docs/adatp.md §2, step 4): per-segment budgets, dedup-first ranking by LLM attention; all text
        stays, newlines per ``newlines``. Returns the sorted positions of ``state`` to keep."""
        plan: SegmentPlan = ctx.stats[PLAN_KEY]
        total = self.stage_budgets(ctx.layout.num_grid_tokens)[stage]
        visual = torch.nonzero(state.kind == VISUAL).squeeze(1)
        f, r, c = state.frame[visual], state.row[visual], state.col[visual]
        keep = self._keep(plan, f, r, c, score[visual], total, ctx, f"layer{self.prune_layers[stage]}")
        # ``per_frame``: the last row's newline closes each frame (FastVID*), OV's single one too; ``keep``: all.
        return keep_positions(state, visual[keep], ctx.layout, IN_LLM_NEWLINES[self.newlines])

"""PruneVid (Huang, Zhou, Han, "PruneVid: Visual Token Pruning for Efficient Video Large Language Models", ACL 2025
Findings, arXiv 2412.16117) — port of ``Visual-AI/PruneVid@b12600c`` (PLLaVA only; its LLaVA-OV code was never released,
``Visual-AI/PruneVid#7``), with FastVID's LLaVA-OV settings τ = 0.8, γ = 0.25, α = 0.4, layer 10
(docs/methods/prunevid.md, docs/methods.md §5.1).

**Stage 1** (before the LLM, ``models/pllava/modeling_pllava.py::PllavaForConditionalGeneration.merge_frames_dynamic``)
on the pooled post-projector tokens, F frames × P cells:

1. Temporal segments: DPC-KNN (k = 7) over frame-mean features into ``int(F·γ)`` clusters (``cluster_dpc_knn``),
   made contiguous by ``refine_clusters`` (each cluster keeps its longest run; other runs join their longer
   neighbour), window sizes by ``segment_lengths``.
2. Per window of W frames, a cell is **static** when its mean pairwise cosine over the window's frames exceeds τ
   (W = 1 gives 0/0 = NaN upstream, so every cell is dynamic). Static cells are averaged over time; dynamic cells stay
   per frame.
3. Static tokens of a window, and the dynamic tokens of each frame, are each DPC-KNN-clustered into ``int(n·β)`` means
   when there are more than 14 (``spatial_merge_tokens`` / ``compute_cluster_vectors``), β = ``retention`` (the cluster
   ratio: FastVID's β = 11% gives "PruneVID* 10.1%"). Output order ``[static_w1, dynamic_w1 frame by frame, static_w2,
   …]``; positions **contiguous** (the sequence is assembled after the reduction).

**Stage 2** (inside the LLM, ``models/pllava/elastic_cache.py::VTPWindowCache.process_attention`` / ``prompt_prefill``,
called after decoder layer ``selected_layer``): layer ``layer``'s attention from every token after the video (question +
answer prompt; our probe on the question rows), **max over heads, then max over queries**; per window keep
``int(static_size·α)`` static tokens and, per frame, ``int(n_dynamic·α)`` dynamic tokens; tokens entering layer
``layer + 1`` are the kept ones with their **original positions**; the KV cache of layers ``0..layer`` is sliced the
same way (``after_prefill``), so decoding sees pruned KV everywhere as upstream.

Density noise (``rand·1e-6``) comes from ``ctx.generator()`` (docs/methods.md §5.5). ``retention = 1.0`` is the unpruned
reference (upstream has no such setting: β = 1 would still average static cells over time). Deviations and per-model
settings: ``docs/methods/prunevid.md``. ``prunevid_stage1`` is stage 1 alone (FastVID's "PruneVID*").
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from adatp_bench.core.context import SampleContext
from adatp_bench.core.layout import VisualTokens
from adatp_bench.core.sequence import VISUAL, SequenceState
from adatp_bench.errors import ConfigError
from adatp_bench.pruning.base import PruningMethod, register_method
from adatp_bench.pruning.dpc import dpc_knn
from adatp_bench.pruning.schedule import check_reference_depth, scale_layers
from adatp_bench.pruning.selection import check_retention, keep_positions

MIN_TOKENS_TO_CLUSTER = 14  # merge_frames_dynamic: `if static_feat.shape[1] > 14` (same for dynamic tokens)
GROUPS_KEY, SCORES_KEY, KEEP_KEY = "_prunevid_groups", "_prunevid_scores", "_prunevid_keep"


# -- temporal segmentation ---------------------------------------------------------------------------------------------


def refine_clusters(labels: list[int]) -> list[int]:
    """``modeling_pllava.py::refine_clusters`` for one video: make temporal clusters contiguous.

    Each cluster keeps its longest run(s) (all runs of the maximal length); a cluster whose longest run is 1 frame
    loses all of them. Freed runs, left to right, join the neighbouring run (in the current labelling) that is longer,
    the left one on ties, cluster 0 when there is neither.

    Args:
        labels: cluster label of each frame.

    Returns:
        The refined labels.
    """
    n = len(labels)
    refined = list(labels)
    for label in sorted(set(labels)):
        runs = _runs([i for i in range(n) if labels[i] == label])
        longest = max(end - start + 1 for start, end in runs)
        for start, end in runs:
            if longest == 1 or end - start + 1 != longest:
                refined[start : end + 1] = [-1] * (end - start + 1)
    i = 0
    while i < n:
        if refined[i] != -1:
            i += 1
            continue
        start = i
        while i < n and refined[i] == -1:
            i += 1
        end = i - 1
        left, left_len = _neighbour_run(refined, start - 1, -1)
        right, right_len = _neighbour_run(refined, end + 1, +1)
        if left_len > right_len:
            new = left
        elif right_len > left_len:
            new = right
        else:
            new = left if left is not None else right
        refined[start : end + 1] = [0 if new is None else new] * (end - start + 1)
    return refined


def _runs(indices: list[int]) -> list[tuple[int, int]]:
    """Maximal runs of consecutive integers in a sorted list, as (first, last)."""
    runs, start, prev = [], indices[0], indices[0]
    for idx in indices[1:]:
        if idx != prev + 1:
            runs.append((start, prev))
            start = idx
        prev = idx
    runs.append((start, prev))
    return runs


def _neighbour_run(labels: list[int], at: int, step: int) -> tuple[int | None, int]:
    """Label at ``at`` and the length of its run going in direction ``step`` (None, 0 outside the video)."""
    if not 0 <= at < len(labels):
        return None, 0
    label, length = labels[at], 0
    while 0 <= at < len(labels) and labels[at] == label:
        length += 1
        at += step
    return label, length


def segment_lengths(labels: list[int]) -> list[int]:
    """``modeling_pllava.py::segment_lengths``: lengths of the runs of equal labels, in order."""
    lengths = [1]
    for prev, cur in itertools.pairwise(labels):
        if cur == prev:
            lengths[-1] += 1
        else:
            lengths.append(1)
    return lengths


def temporal_windows(frames: torch.Tensor, num_clusters: int, k: int, generator: torch.Generator | None) -> list[int]:
    """Window sizes of the temporal segmentation (``merge_frames_dynamic`` lines 1–3).

    Args:
        frames: (F, P, D) tokens per frame.
        num_clusters: ``int(F·γ)``.
        k: DPC-KNN neighbours (upstream 7).
        generator: density-noise source.

    Returns:
        Window sizes summing to F.
    """
    _, labels = dpc_knn(frames.float().mean(dim=1)[None], num_clusters, k=k, generator=generator)
    return segment_lengths(refine_clusters(labels[0].tolist()))


def static_cells(window: torch.Tensor, tau: float) -> torch.Tensor:
    """(P,) bool: cells whose mean pairwise cosine over the window's frames exceeds τ.

    Upstream ``(Σ_{w,t} cos − W) / (W(W−1))``; a one-frame window divides 0 by 0 (NaN > τ is False), so nothing is
    static.

    Args:
        window: (W, P, D) tokens of one window.
    """
    w = window.shape[0]
    if w == 1:
        return torch.zeros(window.shape[1], dtype=torch.bool, device=window.device)
    unit = F.normalize(window.float(), dim=-1)
    sim = torch.einsum("wpc,tpc->wtp", unit, unit)  # (W, W, P)
    mean_pairwise = (sim.sum(dim=1) - 1).sum(dim=0) / (w * (w - 1))
    return mean_pairwise > tau


def spatial_merge(
    feats: torch.Tensor, ratio: float, k: int, generator: torch.Generator | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``spatial_merge_tokens``: DPC-KNN into ``int(n·ratio)`` clusters (at least 1), each replaced by its mean.

    Args:
        feats: (n, D) tokens, n > 14.

    Returns:
        means (m, D) in centre order (descending DPC score), centres (m,) indices into ``feats``, sizes (m,) members.
    """
    m = max(1, int(feats.shape[0] * ratio))
    centres, cluster = dpc_knn(feats[None], m, k=k, generator=generator)
    cluster = cluster[0]
    sizes = torch.bincount(cluster, minlength=m)
    sums = torch.zeros(m, feats.shape[1], dtype=torch.float32, device=feats.device).index_add_(
        0, cluster, feats.float()
    )
    return (sums / sizes[:, None].clamp(min=1)).to(feats.dtype), centres[0], sizes


# -- stage 1 -----------------------------------------------------------------------------------------------------------


@dataclass
class _Group:
    """Tokens that stage 2 ranks together: one window's static tokens, or one frame's dynamic tokens."""

    features: torch.Tensor  # (n, D)
    frame: int
    cells: torch.Tensor  # (n,) flat cell index row·w + col carried by each token
    weight: torch.Tensor  # (n,) original tokens each token stands for
    cells_in: int = 0  # cells the group held before clustering (static: the window's static cells)


def _reduce(
    feats: torch.Tensor, cells: torch.Tensor, times: int, ratio: float, k: int, gen: torch.Generator | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Cluster a token set when it has more than 14 tokens (upstream), else keep it as is.

    Args:
        feats: (n, D) tokens; cells: (n,) their cells; times: frames each token already averages (W for static).

    Returns:
        tokens (m, D), the cell each carries (m,), and how many original tokens each stands for (m,).
    """
    if feats.shape[0] <= MIN_TOKENS_TO_CLUSTER:
        return feats, cells, torch.full((feats.shape[0],), float(times))
    means, centres, sizes = spatial_merge(feats, ratio, k, gen)
    return means, cells[centres.cpu()], sizes.cpu().float() * times


def merge_window(
    window: torch.Tensor, start: int, tau: float, ratio: float, k: int, generator: torch.Generator | None
) -> list[_Group]:
    """One window of ``merge_frames_dynamic``: the static group, then one dynamic group per frame.

    Args:
        window: (W, P, D) tokens of frames ``start .. start+W−1``.

    Returns:
        The window's groups in output order; static tokens carry frame ``start``.
    """
    static = static_cells(window, tau).cpu()
    cells = torch.arange(window.shape[1])
    groups = []
    feats, kept_cells, weight = _reduce(
        window[:, static].mean(dim=0), cells[static], window.shape[0], ratio, k, generator
    )
    groups.append(_Group(feats, start, kept_cells, weight, int(static.sum())))
    for i in range(window.shape[0]):
        feats, kept_cells, weight = _reduce(window[i, ~static], cells[~static], 1, ratio, k, generator)
        groups.append(_Group(feats, start + i, kept_cells, weight, int((~static).sum())))
    return groups


def stage1_groups(
    frames: torch.Tensor, tau: float, gamma: float, ratio: float, k: int, generator: torch.Generator | None
) -> tuple[list[int], list[list[_Group]]]:
    """PruneVid stage 1 on (F, P, D) tokens: window sizes and, per window, its groups in output order."""
    num_frames = frames.shape[0]
    windows = temporal_windows(frames, int(num_frames * gamma), k, generator)
    out, start = [], 0
    for size in windows:
        out.append(merge_window(frames[start : start + size], start, tau, ratio, k, generator))
        start += size
    return windows, out


def groups_to_tokens(groups: list[_Group], grid_w: int) -> tuple[VisualTokens, torch.Tensor]:
    """Concatenate groups into :class:`VisualTokens` (in order) and the (n,) group id of every token."""
    feats = torch.cat([g.features for g in groups])
    frame = torch.cat([torch.full((len(g.cells),), g.frame, dtype=torch.long) for g in groups])
    cells = torch.cat([g.cells for g in groups])
    weight = torch.cat([g.weight for g in groups])
    group_id = torch.cat([torch.full((len(g.cells),), i, dtype=torch.long) for i, g in enumerate(groups)])
    tokens = VisualTokens(features=feats, frame=frame, row=cells // grid_w, col=cells % grid_w, weight=weight)
    return tokens, group_id


# -- stage 2 -----------------------------------------------------------------------------------------------------------


def question_max_scores(attention: torch.Tensor) -> torch.Tensor:
    """``VTPWindowCache.process_attention``: (H, R, L) attention → (L,) max over heads, then max over query rows."""
    return attention.max(dim=0).values.max(dim=0).values


def keep_per_group(scores: torch.Tensor, group: torch.Tensor, alpha: float) -> torch.Tensor:
    """Indices (sorted) of the top ``int(n_g·α)`` scores within every group g.

    Args:
        scores: (n,) scores of the grouped tokens.
        group: (n,) group id of each token.
    """
    kept = []
    for g in torch.unique(group).tolist():
        members = torch.nonzero(group == g).squeeze(1)
        n_keep = int(len(members) * alpha)
        if n_keep:
            kept.append(members[torch.topk(scores[members], n_keep).indices])
    return torch.sort(torch.cat(kept)).values if kept else torch.zeros(0, dtype=torch.long)


# -- the methods -------------------------------------------------------------------------------------------------------


@register_method("prunevid_stage1")
@dataclass
class PruneVidStage1(PruningMethod):
    """PruneVid's first stage only (FastVID's "PruneVID*").

    Args:
        retention: β, the spatial cluster ratio (upstream ``cluster_ratio``; PLLaVA 0.5, FastVID's OV port 0.11). The
            achieved retention is data-dependent and below β (static cells are also merged over time). 1.0 = unpruned.
        tau: static-cell threshold τ on the mean pairwise cosine (upstream ``tau`` 0.8).
        gamma: temporal segment ratio γ: ``int(F·γ)`` DPC-KNN clusters over frames (upstream 0.25).
        k: DPC-KNN neighbours for the density (upstream ``k=7`` in both clusterings).
    """

    retention: float = 0.11
    tau: float = 0.8
    gamma: float = 0.25
    k: int = 7

    def validate(self, tokens_per_frame: int, num_frames: int, num_layers: int) -> None:
        check_retention(f"{self.name} retention", self.retention)
        if not 0.0 < self.gamma <= 1.0 or int(num_frames * self.gamma) < 1:
            raise ConfigError(
                f"{self.name} gamma={self.gamma} must lie in (0, 1] and give int(F·γ) ≥ 1 temporal clusters for "
                f"F={num_frames} frames"
            )
        if self.k < 1:
            raise ConfigError(f"{self.name} k={self.k} must be ≥ 1")

    def select_visual(self, tokens: VisualTokens, ctx: SampleContext) -> VisualTokens:
        if self.retention >= 1.0:
            return tokens
        layout = ctx.layout
        if len(tokens) != layout.num_grid_tokens:
            raise ValueError(f"{self.name} expects the full grid ({layout.num_grid_tokens} tokens), got {len(tokens)}")
        frames = tokens.features.view(layout.num_frames, layout.tokens_per_frame, -1)
        windows, groups = stage1_groups(frames, self.tau, self.gamma, self.retention, self.k, ctx.generator())
        flat = [g for window in groups for g in window]
        out, group_id = groups_to_tokens(flat, layout.grid_w)
        ctx.stats["window_sizes"] = windows
        ctx.stats["static_cells"] = [window[0].cells_in for window in groups]  # per window, before clustering
        ctx.stats["static_sizes"] = [len(window[0].cells) for window in groups]
        ctx.stats["dynamic_sizes"] = [sum(len(g.cells) for g in window[1:]) for window in groups]
        positions = layout.grid_position(out.frame, out.row, out.col)
        if len(torch.unique(positions)) != len(positions):  # stage 2 finds a token's group by its cell
            raise AssertionError("prunevid stage 1 produced two tokens carrying the same grid cell")
        ctx.stats[GROUPS_KEY] = (positions, group_id)
        return out


@register_method("prunevid")
@dataclass
class PruneVid(PruneVidStage1):
    """Both stages (FastVID's "PruneVID 10.1%/3.9%").

    Args:
        alpha: α, fraction of each group kept at stage 2 (upstream ``alpha`` 0.4 in ``scripts/eval.sh``).
        layer: ``selected_layer`` for a ``reference_depth``-layer LLM: its attention ranks, tokens entering ``layer+1``
            are pruned (upstream 10).
        reference_depth: depth ``layer`` is written for (28 = Qwen2-7B, where FastVID ran it); null = absolute.
        prune_early_kv: also slice the KV cache of layers ``0..layer`` to the kept tokens (upstream ``prompt_prefill``);
            only decode steps after the first generated token see the difference.
    """

    alpha: float = 0.4
    layer: int = 10
    reference_depth: int | None = 28
    prune_early_kv: bool = True

    def score_layer(self, num_layers: int) -> int:
        return scale_layers([self.layer], num_layers, self.reference_depth)[0]

    def validate(self, tokens_per_frame: int, num_frames: int, num_layers: int) -> None:
        super().validate(tokens_per_frame, num_frames, num_layers)
        check_reference_depth("prunevid", self.reference_depth)
        if not 0.0 < self.alpha <= 1.0:
            raise ConfigError(f"prunevid alpha={self.alpha} must lie in (0, 1]")
        layer = self.score_layer(num_layers)
        if not 0 <= layer <= num_layers - 2:
            raise ConfigError(
                f"prunevid layer={self.layer} (reference_depth={self.reference_depth}) maps to {layer}; it must lie in "
                f"[0, {num_layers - 2}] (tokens entering layer+1 are pruned) for a {num_layers}-layer LLM"
            )

    def llm_layers(self, num_layers: int) -> tuple[int, ...]:
        if self.retention >= 1.0:
            return ()
        layer = self.score_layer(num_layers)
        return (layer, layer + 1)

    def before_layer(self, state: SequenceState, ctx: SampleContext) -> torch.Tensor | None:
        if SCORES_KEY not in ctx.stats:  # the selected layer: score with its own attention
            question = torch.nonzero(state.question_mask).squeeze(1)
            ctx.stats[SCORES_KEY] = question_max_scores(state.probe(question))
            return None
        scores = ctx.stats.pop(SCORES_KEY).cpu()
        visual = torch.nonzero(state.kind == VISUAL).squeeze(1)
        group = _group_of(state, ctx, visual)
        kept = visual[keep_per_group(scores[visual], group, self.alpha)]
        keep = keep_positions(state, kept, ctx.layout, "all")  # newlines stay (no PLLaVA counterpart)
        ctx.stats[KEEP_KEY] = keep
        return keep

    def after_prefill(self, cache: Any, state: SequenceState, ctx: SampleContext) -> None:
        keep = ctx.stats.pop(KEEP_KEY, None)
        if keep is None or not self.prune_early_kv:
            return
        for layer in cache.layers[: self.score_layer(len(cache.layers)) + 1]:
            idx = keep.to(layer.keys.device)
            layer.keys = layer.keys[:, :, idx]
            layer.values = layer.values[:, :, idx]


def _group_of(state: SequenceState, ctx: SampleContext, visual: torch.Tensor) -> torch.Tensor:
    """(n,) stage-1 group of each visual position, found by the grid cell its token carries (cells are unique)."""
    positions, group_id = ctx.stats[GROUPS_KEY]
    lookup = dict(zip(positions.tolist(), group_id.tolist(), strict=True))
    cell = ctx.layout.grid_position(state.frame[visual], state.row[visual], state.col[visual])
    return torch.tensor([lookup[c] for c in cell.tolist()], dtype=torch.long)

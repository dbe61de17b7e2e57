"""HoliTom (Shao et al., "HoliTom: Holistic Token Merging for Fast Video Large Language Models", NeurIPS 2025,
arXiv 2505.21334) — port of the official LLaVA-OV / LLaVA-Video code ``cokeshao/HoliTom@e9b2972``
(docs/methods/holitom.md).

**Outer stage** (before the LLM;
``holitom/llava_arch.py::LlavaMetaForCausalLM_holitom.prepare_inputs_labels_for_multimodal``) on the pooled
post-projector tokens (F frames × P cells):

1. ``feature_sim`` (F−1, P): cosine of each cell between consecutive frames.
2. ``select_static_windows``: dynamic programming over frames maximising the tokens removed by merging static cells,
   where a window [s, e] removes ``(e−s)·#{cells with sim > T on every transition in it}``.
3. The budget is rescaled to what is left: ``r' = min(r / ((N − removed)/N), 1)``.
4. ``get_static_dynamic_features``: per window, a cell is static when its similarity exceeds T on every transition;
   static cells are averaged over the window, the others stay per frame.
5. ``holitom``: each frame's dynamic tokens keep the top ``ceil(n·r')`` by the SigLIP attention they receive
   (``merge_tokens_by_attention_density``, D = 0: no contextual clusters); static tokens are DPC-KNN-clustered into
   ``round(n·r')`` tokens (``merge_tokens_by_density``), each centre becoming ``β·centre + (1−β)·mean(members)``
   (``merge_tokens_by_clustering`` with ``NO_BETA`` unset). Output per window: static, then each frame's dynamic tokens;
   positions **contiguous**.

**Inner stage** (``holitom/modeling_qwen2.py::Qwen2Model_holitom.forward``, ``HOLITOM_k``/``HOLITOM_r``): before LLM
layer K, rank the video span by layer K−1's last-token attention (mean over heads, as FastV), keep
``round(n·(1−r))``, and merge every other token into its most cosine-similar kept token by sequential pairwise averaging
``(a+b)/2`` in sequence order (``official_compat``; a plain group mean otherwise); **original positions** kept.

The SigLIP attention is the official vision tower's ``attentions[-1].mean(heads).mean(queries)`` — the attention each
patch receives in the last encoder layer used — recomputed here from that layer's weights on its stored input and pooled
onto the token grid like the features (``ctx.pool_map``). Density noise comes from ``ctx.generator()``
(docs/methods.md §5.5).
``retention = 1.0`` is the unpruned reference (upstream would still merge static cells). Deviations and per-model
settings: ``docs/methods/holitom.md``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from adatp_bench.core.context import SampleContext
from adatp_bench.core.layout import VisualTokens
from adatp_bench.core.sequence import SequenceState
from adatp_bench.errors import ConfigError
from adatp_bench.pruning.base import PruningMethod, register_method
from adatp_bench.pruning.dpc import density_peaks
from adatp_bench.pruning.schedule import check_reference_depth, scale_layers
from adatp_bench.pruning.selection import check_retention, keep_with_text

MAX_WINDOW_SIZE = 1024  # MAX_WINDOW_SIZE env default: no limit for ≤ 64 frames
SCORES_KEY = "_holitom_scores"


# -- outer stage: temporal windows -------------------------------------------------------------------------------------


def consecutive_similarity(frames: torch.Tensor) -> torch.Tensor:
    """(F−1, P) cosine similarity of every cell between frames i and i+1. ``frames``: (F, P, D)."""
    unit = F.normalize(frames.float(), dim=-1)
    return F.cosine_similarity(unit[:-1], unit[1:], dim=-1)


def static_window_gain(sim: torch.Tensor, tau: float) -> list[list[float]]:
    """``select_static_windows.get_pruned_static_count_vectorized``: tokens removed by merging window [s, e].

    ``gain[s][e] = (e − s) · #{cells p : sim[t, p] > τ for all t in [s, e−1]}`` (0 for e ≤ s).

    Args:
        sim: (F−1, P) consecutive-frame similarity.
    """
    num_frames = sim.shape[0] + 1
    gain = [[0.0] * num_frames for _ in range(num_frames)]
    above = (sim > tau).to(torch.int64)
    for start in range(num_frames - 1):
        static_counts = torch.cumprod(above[start:], dim=0).sum(dim=1).tolist()  # windows [start, start+1 ..]
        for offset, count in enumerate(static_counts, start=1):
            gain[start][start + offset] = float(count * offset)
    return gain


def select_static_windows(
    sim: torch.Tensor, tau: float, max_window_size: int = MAX_WINDOW_SIZE
) -> tuple[list[tuple[int, int]], float]:
    """``select_static_windows``: the frame partition maximising removed tokens (DP, strict improvements only).

    Returns:
        Inclusive (start, end) windows in order, and the total tokens removed.
    """
    gain = static_window_gain(sim, tau)
    num_frames = len(gain)
    best, prev = [0.0] * num_frames, [0] * num_frames
    for i in range(num_frames):
        max_val, best_j = (best[i - 1] if i > 0 else 0.0), i
        for size in range(2, min(i + 1, max_window_size) + 1):
            j = i - size
            value = (best[j] if j >= 0 else 0.0) + gain[j + 1][i]
            if value > max_val:
                max_val, best_j = value, j + 1
        best[i], prev[i] = max_val, best_j
    windows, i = [], num_frames - 1
    while i >= 0:
        windows.append((prev[i], i))
        i = prev[i] - 1
    return windows[::-1], best[-1]


# -- outer stage: merging ----------------------------------------------------------------------------------------------


def merge_into_centres(
    feats: torch.Tensor, centres: torch.Tensor, dist: torch.Tensor, beta: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """``merge_tokens_by_clustering`` for one token set.

    Every non-centre joins its nearest centre; a centre with members becomes ``β·centre + (1−β)·mean(members)``.

    Args:
        feats: (n, D) tokens; centres: (m,) sorted indices; dist: (n, n) pairwise distances.

    Returns:
        (m, D) merged tokens in centre order and (m,) tokens each stands for.
    """
    is_centre = torch.zeros(feats.shape[0], dtype=torch.bool, device=feats.device)
    is_centre[centres] = True
    others = torch.nonzero(~is_centre).squeeze(1)
    nearest = dist[others][:, centres].argmin(dim=1)  # (n−m,) index into centres
    m = len(centres)
    counts = torch.bincount(nearest, minlength=m)
    sums = torch.zeros(m, feats.shape[1], dtype=torch.float32, device=feats.device)
    sums.index_add_(0, nearest, feats[others].float())
    centre_feats = feats[centres].float()
    means = sums / counts[:, None].clamp(min=1)
    merged = torch.where(counts[:, None] > 0, beta * centre_feats + (1 - beta) * means, centre_feats)
    return merged.to(feats.dtype), counts + 1


def merge_by_density(
    feats: torch.Tensor, m: int, beta: float, k: int, generator: torch.Generator | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``merge_tokens_by_density``: ``m`` DPC-KNN centres (``k = min(K, m)``, sorted by index), others merged in.

    Returns:
        (m, D) tokens, (m,) centre indices into ``feats``, (m,) tokens each stands for (empty when m ≤ 0).
    """
    if m <= 0:
        empty = torch.zeros(0, dtype=torch.long)
        return feats[:0], empty, empty
    peaks = density_peaks(feats[None], k=min(k, m), generator=generator)
    centres = torch.sort(torch.topk(peaks.score[0], m).indices).values
    merged, weight = merge_into_centres(feats, centres, peaks.dist[0], beta)
    return merged, centres.cpu(), weight.cpu()


def merge_by_attention_density(
    feats: torch.Tensor,
    attn: torch.Tensor,
    ratio: float,
    d: float,
    beta: float,
    k: int,
    generator: torch.Generator | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``merge_tokens_by_attention_density`` for one frame's dynamic tokens.

    Keeps the ``round(ceil(n·r)·(1−D))`` most-attended tokens (in cell order) and, when D > 0, ``ceil(n·r) −`` that many
    DPC-KNN contextual clusters of the rest (centres sorted, merged as :func:`merge_into_centres`).

    Args:
        feats: (n, D) tokens; attn: (n,) SigLIP attention received.

    Returns:
        (m, D) tokens [dominant, contextual], (m,) indices into ``feats`` of the token each one sits at, (m,) weights.
    """
    n = feats.shape[0]
    total = math.ceil(n * ratio)
    n_dominant = round(total * (1 - d))
    dominant = torch.sort(torch.topk(attn, n_dominant).indices).values.cpu()
    out_feats, out_index, out_weight = [feats[dominant]], [dominant], [torch.ones(len(dominant), dtype=torch.long)]
    n_context = total - n_dominant
    if n_context > 0:
        rest_mask = torch.ones(n, dtype=torch.bool)
        rest_mask[dominant] = False
        rest = torch.nonzero(rest_mask).squeeze(1)
        merged, centres, weight = merge_by_density(feats[rest], n_context, beta, k, generator)
        out_feats.append(merged)
        out_index.append(rest[centres])
        out_weight.append(weight)
    return torch.cat(out_feats), torch.cat(out_index), torch.cat(out_weight)


@dataclass
class _Piece:
    """Tokens of one frame (or one window's static tokens, carried by its first frame), in output order."""

    features: torch.Tensor  # (n, D)
    frame: int
    cells: torch.Tensor  # (n,) flat cell index
    weight: torch.Tensor  # (n,)


def outer_stage(
    frames: torch.Tensor,
    attention: torch.Tensor,
    retention: float,
    tau: float,
    beta: float,
    d: float,
    k: int,
    generator: torch.Generator | None,
    stats: dict[str, Any] | None = None,
) -> list[_Piece]:
    """HoliTom's outer stage on (F, P, D) tokens with (F, P) received attention; pieces in output order."""
    num_frames, cells = frames.shape[0], frames.shape[1]
    sim = consecutive_similarity(frames)
    windows, removed = select_static_windows(sim, tau)
    total = num_frames * cells
    ratio = min(retention / ((total - removed) / total), 1.0)
    if stats is not None:
        stats.update(windows=[[s, e] for s, e in windows], static_removed=removed, window_retention=ratio)
    pieces: list[_Piece] = []
    all_cells = torch.arange(cells)
    static_counts: list[int] = []
    for start, end in windows:
        static = torch.zeros(cells, dtype=torch.bool)
        if end > start:
            static = (sim[start:end] > tau).all(dim=0).cpu()
            static_feats = frames[start : end + 1, static].mean(dim=0)
            merged, centres, weight = merge_by_density(
                static_feats, round(len(static_feats) * ratio), beta, k, generator
            )
            pieces.append(_Piece(merged, start, all_cells[static][centres], weight * (end - start + 1)))
        static_counts.append(int(static.sum()))
        dynamic = all_cells[~static]
        for f in range(start, end + 1):
            feats, index, weight = merge_by_attention_density(
                frames[f, ~static], attention[f, ~static], ratio, d, beta, k, generator
            )
            pieces.append(_Piece(feats, f, dynamic[index], weight))
    if stats is not None:
        stats["static_cells"] = static_counts  # per window: cells static on all its transitions (0 for one frame)
    return pieces


def pieces_to_tokens(pieces: list[_Piece], grid_w: int) -> VisualTokens:
    """Concatenate pieces into :class:`VisualTokens` in order."""
    cells = torch.cat([p.cells for p in pieces])
    return VisualTokens(
        features=torch.cat([p.features for p in pieces]),
        frame=torch.cat([torch.full((len(p.cells),), p.frame, dtype=torch.long) for p in pieces]),
        row=cells // grid_w,
        col=cells % grid_w,
        weight=torch.cat([p.weight for p in pieces]).float(),
    )


# -- inner stage -------------------------------------------------------------------------------------------------------


def merge_dropped_into_kept(
    hidden: torch.Tensor, kept: torch.Tensor, dropped: torch.Tensor, sequential: bool = True
) -> torch.Tensor:
    """HoliTom's inner merge: every dropped token joins its most cosine-similar kept token.

    Upstream loops over dropped tokens in sequence order and sets ``h[t] = (h[t] + h[d]) / 2``. For a kept token t with
    dropped tokens d_1 < … < d_m assigned, that is ``t/2^m + Σ_j d_j/2^(m−j+1)``, computed here in closed form (fp32).
    With ``sequential=False`` the kept token becomes the plain mean of itself and its members.

    Args:
        hidden: (L, D) hidden states entering the layer.
        kept: (K,) sequence indices kept, in upstream's attention order (ties in similarity go to the earlier one).
        dropped: (M,) sequence indices dropped, ascending.

    Returns:
        (K, D) new hidden states of the kept tokens (in ``kept`` order), in ``hidden``'s dtype.
    """
    h = hidden.float()
    sim = F.normalize(h[dropped], dim=-1) @ F.normalize(h[kept], dim=-1).T  # (M, K)
    target = sim.argmax(dim=1)  # (M,) index into kept
    counts = torch.bincount(target, minlength=len(kept))
    if sequential:
        order = torch.argsort(target * len(dropped) + torch.arange(len(dropped), device=target.device))
        rank = torch.empty_like(target)
        start = torch.cumsum(counts, 0) - counts
        rank[order] = torch.arange(len(dropped), device=target.device) - start[target[order]]  # 0-based in its group
        weight = torch.pow(2.0, -(counts[target] - rank).float())  # d_j weighs 2^-(m−j+1) with j = rank + 1
        own = torch.pow(2.0, -counts.float())
    else:
        weight = 1.0 / (counts[target] + 1).float()
        own = 1.0 / (counts + 1).float()
    merged = own[:, None] * h[kept]
    merged.index_add_(0, target, weight[:, None] * h[dropped])
    return merged.to(hidden.dtype)


# -- the method --------------------------------------------------------------------------------------------------------


@register_method("holitom")
@dataclass
class HoliTom(PruningMethod):
    """Args:
    retention: r, upstream ``RETAIN_RATIO`` (share of the F·P pooled tokens kept by the outer stage); 1.0 = unpruned.
    tau: T, static threshold on the consecutive-frame cosine; null = the official scripts' choice, 0.65 for r ≤ 0.10
        and 0.80 above.
    beta: ``BETA``, centre weight when static (or contextual) tokens are merged into their centre.
    d: ``D``, share of each frame's budget given to DPC-KNN contextual clusters instead of attention top-k.
    k: ``K``, DPC-KNN density neighbours (capped at the cluster count, as upstream).
    inner: run the inner stage (``HOLITOM_k``/``HOLITOM_r`` set); false = upstream's "HoliTom (w/o M)".
    inner_layer: ``HOLITOM_k`` on a ``reference_depth``-layer LLM: tokens entering it are merged, ranked by the layer
        before (official scripts: 18).
    inner_ratio: ``HOLITOM_r``, share of the video span merged away at ``inner_layer``.
    reference_depth: depth ``inner_layer`` is written for (28 = Qwen2-7B); null = absolute.
    official_compat: sequential pairwise averaging at the inner stage (upstream); false = plain group mean.
    """

    needs_vision_attention: ClassVar[bool] = True

    retention: float = 0.25
    tau: float | None = None
    beta: float = 0.6
    d: float = 0.0
    k: int = 7
    inner: bool = True
    inner_layer: int = 18
    inner_ratio: float = 0.5
    reference_depth: int | None = 28
    official_compat: bool = True

    def effective_tau(self) -> float:
        """T: as given, else the official scripts' per-budget value."""
        if self.tau is not None:
            return self.tau
        return 0.65 if self.retention <= 0.10 + 1e-9 else 0.80

    def merge_layer(self, num_layers: int) -> int:
        return scale_layers([self.inner_layer], num_layers, self.reference_depth)[0]

    def validate(self, tokens_per_frame: int, num_frames: int, num_layers: int) -> None:
        check_retention("holitom retention", self.retention)
        check_reference_depth("holitom", self.reference_depth)
        for name, value in (("beta", self.beta), ("d", self.d)):
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"holitom {name}={value} must lie in [0, 1]")
        if self.k < 1:
            raise ConfigError(f"holitom k={self.k} must be ≥ 1")
        if not 0.0 <= self.inner_ratio < 1.0:
            raise ConfigError(f"holitom inner_ratio={self.inner_ratio} must lie in [0, 1)")
        layer = self.merge_layer(num_layers)
        if self.inner and not 1 <= layer <= num_layers - 1:
            raise ConfigError(
                f"holitom inner_layer={self.inner_layer} (reference_depth={self.reference_depth}) maps to {layer}, "
                f"outside [1, {num_layers - 1}] for a {num_layers}-layer LLM"
            )

    def _active(self) -> bool:
        return self.retention < 1.0

    # -- outer stage -------------------------------------------------------------------------------------------------
    def select_visual(self, tokens: VisualTokens, ctx: SampleContext) -> VisualTokens:
        if not self._active():
            return tokens
        layout = ctx.layout
        if len(tokens) != layout.num_grid_tokens:
            raise ValueError(f"holitom expects the full grid ({layout.num_grid_tokens} tokens), got {len(tokens)}")
        frames = tokens.features.view(layout.num_frames, layout.tokens_per_frame, -1)
        # Official SigLipVisionTower.forward (WRAPPER=holitom): attentions[-1].mean(dim=1).mean(dim=1), the attention
        # each patch receives in the vision layer that feeds the projector, mean over heads and queries.
        attention = ctx.pool_map(ctx.vision_attention().received).reshape(layout.num_frames, -1)
        pieces = outer_stage(
            frames,
            attention.to(frames.device),
            self.retention,
            self.effective_tau(),
            self.beta,
            self.d,
            self.k,
            ctx.generator(),
            ctx.stats,
        )
        return pieces_to_tokens(pieces, layout.grid_w)

    # -- inner stage -------------------------------------------------------------------------------------------------
    def llm_layers(self, num_layers: int) -> tuple[int, ...]:
        if not (self._active() and self.inner):
            return ()
        layer = self.merge_layer(num_layers)
        return (layer - 1, layer)

    def before_layer(self, state: SequenceState, ctx: SampleContext) -> torch.Tensor | None:
        if SCORES_KEY not in ctx.stats:  # layer K−1: its own last-row attention, mean over heads (as FastV)
            ctx.stats[SCORES_KEY] = state.probe()[:, 0].mean(0)
            return None
        scores = ctx.stats.pop(SCORES_KEY)
        video = state.video_positions
        n_keep = round(len(video) * (1 - self.inner_ratio))
        if n_keep >= len(video):
            return None
        top = torch.topk(scores[video.to(scores.device)], n_keep).indices.cpu()  # attention order, as upstream
        dropped_mask = torch.ones(len(video), dtype=torch.bool)
        dropped_mask[top] = False
        kept, dropped = video[top], video[dropped_mask]
        device = state.hidden.device
        merged = merge_dropped_into_kept(state.hidden[0], kept.to(device), dropped.to(device), self.official_compat)
        state.hidden = state.hidden.index_copy(1, kept.to(device), merged[None])  # the runner keeps these rows
        return keep_with_text(state, torch.sort(kept).values)

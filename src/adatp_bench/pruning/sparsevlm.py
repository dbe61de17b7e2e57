"""SparseVLM v1 (Zhang et al., "SparseVLM: Visual Token Sparsification for Efficient Vision-Language Model Inference",
ICML 2025, arXiv 2410.04417) — port of ``Gumpest/SparseVLMs@26a5f48`` (``USE_VERSION=1_0``:
``llava/model/language_model/modelling_sparse_llama.py::LlamaDynamicvitModel.forward``,
``score.py::attn_postprocess_topk``, ``utils.py::cluster_and_merge``), with FastVID's LLaVA-OV schedule
(docs/methods/sparsevlm.md; FastVID Table 11). No official Qwen2 port exists; this module is the harness's own port.

Rule, for one sample:

1. **Text raters** (``forward`` ≈L199–204): on the LLM *input embeddings*, ``m = softmax_text(V·Tᵀ).mean_V`` over the
   video span V and the text after it T; the raters are the text tokens with ``m > mean(m)``.
2. **Scores** at each pruning layer ``l`` (``pruning_loc``; LLaVA 2/6/15): layer ``l``'s own attention on its input
   (our probe at layer ``l``, rows = raters), mean over heads, then over raters, restricted to the current video span.
3. **Drop** before layer ``l+1``: keep the top ``int(n0 · ratio_s)`` video positions (``attn_postprocess_topk``), in
   order; RoPE positions **renumbered** (v1 truncates ``position_ids[:, :len(kept)]``; ``in_llm_positions="renumber"``).
4. **Recycling** (v1, ``recycle``): the top 30% (``int(0.3·n_del)+1``) of the deleted tokens by score are clustered by
   DPC-KNN into ``int(n/10)+1`` means (``cluster_and_merge``: density over k = #clusters neighbours, ``rand·1e-6``
   density noise from ``ctx.generator()``, docs/methods.md §5.5) which are placed after the kept video tokens.

``retention`` follows the published schedule ``reference_ratios`` through
:func:`~adatp_bench.pruning.pdrop.pyramid_ratios` (r = ρ_1 reproduces it; r = 1 is the identity); layers scale with
depth through :func:`~adatp_bench.pruning.pdrop.scale_layers`. Deviations from upstream are listed in
``docs/methods/sparsevlm.md``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

import torch

from adatp_bench.core.context import SampleContext
from adatp_bench.core.layout import VideoLayout
from adatp_bench.core.sequence import VISUAL, SequenceState
from adatp_bench.errors import UnreachableSetting
from adatp_bench.pruning.base import PruningMethod, register_method
from adatp_bench.pruning.dpc import dpc_knn
from adatp_bench.pruning.schedule import (
    check_reference_depth,
    check_reference_ratios,
    check_stage_layers,
    pyramid_ratios,
    scale_layers,
)
from adatp_bench.pruning.selection import check_retention, keep_with_text, topk_sorted

RECYCLE_FRACTION = 0.3  # modelling_sparse_llama.py: merge_token_num_stage1 = int(n_deleted * 0.3) + 1  ("Top 30%")
CLUSTER_DIVISOR = 10  # cluster_num = int(n_recycled / 10) + 1
MERGE_EPS = 1e-6  # utils.py::cluster_and_merge: all_weight + 1e-6

RATERS_KEY, SCORES_KEY, STAGE_KEY = "_sparsevlm_raters", "_sparsevlm_scores", "_sparsevlm_stage"
GEN_KEY = "_sparsevlm_generator"


# -- the three rules -----------------------------------------------------------------------------------------------


def select_raters(video: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    """Text raters (SparseVLM §3.2; ``forward`` ≈L199–204).

    Args:
        video: (V, D) input embeddings of the video span.
        text: (T, D) input embeddings of the text after the video.

    Returns:
        (R,) indices into ``text`` of the tokens whose mean (over video tokens) softmax-over-text score exceeds the
        mean.
    """
    relevance = (video.float() @ text.float().T).softmax(dim=1).mean(dim=0)  # (T,)
    return torch.nonzero(relevance > relevance.mean()).squeeze(1).cpu()


def rater_scores(attention: torch.Tensor, video: torch.Tensor) -> torch.Tensor:
    """Video-token scores (``attn_postprocess_topk``): mean over heads, then over raters.

    Args:
        attention: (H, R, L) attention rows of the raters.
        video: (V,) sequence indices of the video span.

    Returns:
        (V,) fp32 scores.
    """
    return attention.mean(0)[:, video.to(attention.device)].mean(0)


def cluster_and_merge(
    x: torch.Tensor, num_clusters: int, generator: torch.Generator | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``utils.py::cluster_and_merge``: DPC-KNN with ``k = num_clusters`` neighbours, members averaged per centre.

    Args:
        x: (N, D) token features.
        num_clusters: m ≤ N.
        generator: density-noise source.

    Returns:
        (m, D) cluster means in centre order (descending DPC score), in ``x``'s dtype, and the (m,) centre indices.
    """
    centres, cluster = dpc_knn(x[None], num_clusters, k=num_clusters, generator=generator)
    cluster = cluster[0]
    counts = torch.bincount(cluster, minlength=num_clusters).to(torch.float32)
    sums = torch.zeros(num_clusters, x.shape[1], dtype=torch.float32, device=x.device).index_add_(0, cluster, x.float())
    return (sums / (counts[:, None] + MERGE_EPS)).to(x.dtype), centres[0]


def recycled_counts(n_deleted: int) -> tuple[int, int]:
    """(tokens recycled, clusters they form) for ``n_deleted`` deleted video tokens (0, 0 when nothing was deleted)."""
    if n_deleted <= 0:
        return 0, 0
    n_recycled = min(n_deleted, int(n_deleted * RECYCLE_FRACTION) + 1)
    return n_recycled, int(n_recycled / CLUSTER_DIVISOR) + 1


# -- the method --------------------------------------------------------------------------------------------------------


@register_method("sparsevlm")
@dataclass
class SparseVLM(PruningMethod):
    """Args:
    retention: r; stage s keeps ``int(n0 · r^(ln ρ_s / ln ρ_1))`` video positions (ρ = ``reference_ratios``); 1.0 keeps
        everything. r = 0.104 is FastVID's OV-7B row.
    layers: scoring layers (upstream ``pruning_loc``) for a ``reference_depth``-layer LLM; tokens entering layer l+1 are
        pruned. FastVID's "layers 3/7/16" counts the first pruned layers, i.e. these 2/6/15.
    reference_depth: depth the layers are written for (28 = Qwen2-7B); null = absolute layer indices.
    reference_ratios: the published per-stage keep ratios (FastVID OV-7B: 10.4/5.3/2.9% of the video span).
    recycle: v1 token recycling (upstream default on; FastVID's FLOPs row matches it off, see docs).
    """

    in_llm_positions: ClassVar[Literal["original", "renumber"]] = "renumber"

    retention: float = 0.104
    layers: list[int] = field(default_factory=lambda: [2, 6, 15])
    reference_depth: int | None = 28
    reference_ratios: list[float] = field(default_factory=lambda: [0.104, 0.053, 0.029])
    recycle: bool = True

    # -- schedule ----------------------------------------------------------------------------------------------------
    def score_layers(self, num_layers: int) -> tuple[int, ...]:
        return scale_layers(self.layers, num_layers, self.reference_depth)

    def stage_ratios(self) -> list[float]:
        return pyramid_ratios(self.retention, self.reference_ratios)

    def stage_counts(self, n0: int) -> list[int]:
        """Video positions after each stage: ``int(n0·ratio_s)`` kept (no drop if that is not fewer than the current
        span), plus the recycled clusters."""
        counts, current = [], n0
        for ratio in self.stage_ratios():
            budget = int(n0 * ratio)
            if budget < current:
                clusters = recycled_counts(current - budget)[1] if self.recycle else 0
                current = budget + clusters
            counts.append(current)
        return counts

    def validate(self, tokens_per_frame: int, num_frames: int, num_layers: int) -> None:
        check_retention("sparsevlm retention", self.retention)
        check_reference_depth("sparsevlm", self.reference_depth)
        check_reference_ratios("sparsevlm", self.reference_ratios, len(self.layers))
        # scoring layer l prunes the tokens entering layer l + 1, so the last layer cannot score
        check_stage_layers("sparsevlm", self.layers, self.score_layers(num_layers), 0, num_layers - 2, num_layers)
        if int(num_frames * tokens_per_frame * self.stage_ratios()[-1]) < 1:
            raise UnreachableSetting(f"sparsevlm retention={self.retention} keeps no video token at its last stage")

    def expected_video_tokens(self, layout: VideoLayout, num_layers: int) -> list[int]:
        n0 = layout.video_len
        prune_at = {
            layer + 1: count for layer, count in zip(self.score_layers(num_layers), self.stage_counts(n0), strict=True)
        }
        per_layer, current = [], n0
        for layer in range(num_layers):
            current = prune_at.get(layer, current)
            per_layer.append(current)
        return per_layer

    # -- in-LLM hooks --------------------------------------------------------------------------------------------------
    def llm_layers(self, num_layers: int) -> tuple[int, ...]:
        scoring = self.score_layers(num_layers)
        return tuple(sorted({0, *scoring, *(layer + 1 for layer in scoring)}))

    def before_layer(self, state: SequenceState, ctx: SampleContext) -> torch.Tensor | None:
        if RATERS_KEY not in ctx.stats:  # layer 0: the input embeddings
            question = torch.nonzero(state.question_mask).squeeze(1)
            video = state.video_positions
            raters = select_raters(state.hidden[0, video], state.hidden[0, question])
            if len(raters) == 0:  # every text token equally relevant (upstream: NaN scores); rate with all of them
                raters = torch.arange(len(question))
            ctx.stats[RATERS_KEY] = raters
            ctx.stats["raters"] = len(raters)
        keep = None
        if SCORES_KEY in ctx.stats:  # a prune point: the layer before scored the span
            keep = self._drop(state, ctx)
        if state.layer_idx in self.score_layers(ctx.num_layers):
            ctx.stats[SCORES_KEY] = self._score(state, ctx, keep)
        return keep

    def _score(self, state: SequenceState, ctx: SampleContext, keep: torch.Tensor | None) -> torch.Tensor:
        """Rater scores of the video span of the sequence that will enter this layer (after ``keep``, if any)."""
        if keep is not None:  # this layer is both a prune point and a scoring layer (shallow models only)
            state = state.keep(keep)
            state.position_ids = torch.arange(len(state), device=state.hidden.device)[None]

            def attention_of(rows: torch.Tensor | None = None, pruned: SequenceState = state) -> torch.Tensor:
                return ctx.probe(pruned, rows)  # this layer on the pruned, renumbered sequence

        else:
            attention_of = state.probe
        question = torch.nonzero(state.question_mask).squeeze(1)
        rows = question[ctx.stats[RATERS_KEY]]
        return rater_scores(attention_of(rows), state.video_positions)

    def _drop(self, state: SequenceState, ctx: SampleContext) -> torch.Tensor | None:
        """Keep the top ``int(n0·ratio_s)`` of the scored span; recycle the best deleted ones into clusters."""
        scores = ctx.stats.pop(SCORES_KEY)
        stage = ctx.stats.get(STAGE_KEY, 0)
        ctx.stats[STAGE_KEY] = stage + 1
        video = state.video_positions
        budget = int(ctx.layout.video_len * self.stage_ratios()[stage])
        if budget >= len(video):
            return None  # upstream would still drop one token (min(budget, V−1)); see docs
        kept_local = topk_sorted(scores, budget).cpu()
        if not self.recycle:
            return keep_with_text(state, video[kept_local])
        return keep_with_text(state, self._recycle(state, ctx, scores, kept_local))

    def _recycle(
        self, state: SequenceState, ctx: SampleContext, scores: torch.Tensor, kept_local: torch.Tensor
    ) -> torch.Tensor:
        """Cluster the best deleted tokens and write [kept..., clusters...] into the video span; returns its positions.

        Upstream inserts the cluster means right after the kept video tokens. Positions are renumbered afterwards, so
        only the order matters: we take the kept positions plus one deleted position per cluster (its centre), sort
        them, and write the kept tokens then the clusters into them in that order (features and metadata together).
        """
        video = state.video_positions
        deleted_mask = torch.ones(len(video), dtype=torch.bool)
        deleted_mask[kept_local] = False
        deleted_local = torch.nonzero(deleted_mask).squeeze(1)
        n_recycled, n_clusters = recycled_counts(len(deleted_local))
        if n_recycled == 0:
            return video[kept_local]
        order = torch.topk(scores[deleted_local.to(scores.device)], n_recycled).indices.cpu()  # descending score
        recycled = video[deleted_local[order]]
        generator = ctx.stats.setdefault(GEN_KEY, ctx.generator())  # one noise stream per sample (docs/methods.md §5.5)
        merged, centres = cluster_and_merge(state.hidden[0, recycled.to(state.hidden.device)], n_clusters, generator)
        centre_positions = recycled[centres.cpu()]
        slots = torch.sort(torch.cat([video[kept_local], centre_positions])).values
        _write_video(state, slots, torch.cat([video[kept_local], centre_positions]), merged)
        ctx.stats.setdefault("recycled_clusters", []).append(n_clusters)
        return slots


def _write_video(state: SequenceState, slots: torch.Tensor, sources: torch.Tensor, merged: torch.Tensor) -> None:
    """Write the tokens at ``sources`` (then ``merged`` features for the trailing cluster entries) into ``slots``.

    Args:
        slots: (K,) sorted sequence positions that stay.
        sources: (K,) sequence positions whose metadata fills the slots, in the new order; the last ``len(merged)``
            entries are cluster centres whose features are replaced by ``merged``.
        merged: (m, D) cluster means.
    """
    n_kept = len(sources) - len(merged)
    device = state.hidden.device
    feats = torch.cat([state.hidden[0, sources[:n_kept].to(device)], merged.to(state.hidden.dtype)])
    state.hidden = state.hidden.index_copy(1, slots.to(device), feats[None])
    kind = state.kind[sources].clone()
    kind[n_kept:] = VISUAL
    state.kind = state.kind.index_copy(0, slots, kind)
    for name in ("frame", "row", "col", "original_index"):
        values = getattr(state, name)
        setattr(state, name, values.index_copy(0, slots, values[sources]))

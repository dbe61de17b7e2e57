"""FrameFusion (Fu et al., "FrameFusion: Combining Similarity and Importance for Video Token Reduction on Large Vision
Language Models", ICCV 2025, arXiv 2501.01986) — port of ``thu-nics/FrameFusion@fbec1d2`` (docs/methods/framefusion.md).

Official code: ``framefusion/main.py::FrameFusion`` (``forward``, ``compute_similarity_and_token_index_by_patch``,
``merge_tokens_and_get_mask``, ``_compute_pruning_ratio``, ``find_contigious_latter_index``), called from the patched
decoder layer of ``framefusion/models/qwen2/modeling_qwen2.py`` before attention at layer 0 and after attention in
every layer, at prefill. ``retention`` is FrameFusion's ``cost``: the average share of the video tokens each decoder
layer processes (paper §3; README ``cost=0.3``).

1. **Patch types.** A video token's spatial index (same cell = same patch in every frame); text is −1. On LLaVA-Video's
   per-row layout the row newlines are patches of their own (upstream
   ``framefusion/models/llava_video/modeling_llava_video.py``: ``patch_num = p·(p+1)``), so same-row newlines merge
   across frames. Upstream types only that layout; on LLaVA-OV's one-newline layout (and Qwen's, which has none) the
   trailing newline is typed as text and the grid cells as patches [our choice].
2. **Merge** (a call per layer while merging): tokens sorted by (patch, position); ``sim`` = cosine between consecutive
   tokens of the same patch (−2 otherwise). With ``N`` typed tokens and the budget bound
   ``u = _compute_pruning_ratio(sparsities, cost)``: if ``#{sim ≥ S} / N < u`` every such token merges and the share is
   recorded (merging stops once it is below ``ratio_lower_bound``); otherwise exactly the ``int(u·N)`` most similar
   merge and both merging and pruning end. A run of merged tokens is averaged into the token just before it (the run's
   earliest frame), which keeps its **original position** (cos/sin indexed by the keep mask).
3. **Prune** once, at the call after merging ended: the last query row's attention in that layer, mean over heads, ranks
   the video span; ``round(n·(1 − u))`` stay, ``u`` from the recorded sparsities. Original positions kept.

``_compute_pruning_ratio``: with ``σ_i = Π_{j≤i}(1 − s_j)`` over the ``m`` recorded sparsities,
``u = 1 − (L·cost − Σ σ_i) / ((L − m)·σ_m)`` (0 when that quotient exceeds 1).

Hook mapping. Upstream's calls are: layer 0 before attention, then after the attention of layers 0, 1, ...; call i's
sparsity is what its accounting charges to layer i. Here call i runs before layer i, so layer i computes exactly the
tokens the formula charges it (upstream runs the MLP of layer i − 1 on them too). The prune scores are layer m's
attention on the merged sequence entering it (row probe on the merged state), as upstream scores layer m's attention
after merging ended at call m; the drop applies from layer m + 1 (upstream: from layer m's MLP). Deviations
(docs/methods/framefusion.md): merge similarities on the hidden states entering a layer (upstream: after its attention
residual, before the MLP); fp32 averaging; ``L`` = the model's depth (``official_compat``: upstream's hard-coded 28);
an overspent budget (``L·cost < Σ σ_i``; shallow models) gives ``u = 1`` where upstream raises; when the budget binds,
at most the tokens with a same-patch predecessor merge (upstream's top-k could reach the −2 entries);
``retention = 1.0`` is the identity (upstream's path merges 0 tokens, which is the identity too).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from adatp_bench.core.context import SampleContext
from adatp_bench.core.sequence import NEWLINE, TEXT, SequenceState
from adatp_bench.errors import ConfigError
from adatp_bench.pruning.base import PruningMethod, register_method
from adatp_bench.pruning.selection import check_retention, keep_with_text

UPSTREAM_LAYERS = 28  # `_compute_pruning_ratio(sparsity_list, cost, num_layers=28)`
STATE_KEY = "_framefusion"


def pruning_ratio(sparsities: list[float], cost: float, num_layers: int) -> float:
    """``_compute_pruning_ratio``: the sparsity the remaining layers need for an average relative cost ``cost``."""
    kept, spent = 1.0, 0.0
    for s in sparsities:
        kept *= 1 - s
        spent += kept
    remain = num_layers * cost - spent
    if remain < 0:  # the budget is already overspent (upstream raises "The cost is too small"): drop everything left
        return 1.0
    left = (num_layers - len(sparsities)) * kept
    if left <= 0 or remain / left > 1:
        return 0.0
    return 1 - remain / left


def patch_types(state: SequenceState, grid_w: int) -> torch.Tensor:
    """(L,) patch index per position (−1 for text; the one-per-video newline is text, row newlines are patches)."""
    per_row = state.newline_layout == "per_row"
    types = state.row * (grid_w + 1 if per_row else grid_w) + state.col
    text = (state.kind == TEXT) | ((state.kind == NEWLINE) & (not per_row))
    return torch.where(text, torch.full_like(types, -1), types)


def patch_order_similarity(hidden: torch.Tensor, types: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(order, sim): positions sorted by (patch, position) and the cosine of each to its predecessor of the same patch
    (−2 for the first of a patch), as ``compute_similarity_and_token_index_by_patch``.

    Args:
        hidden: (L, D) hidden states; types: (L,) patch types (−1 = text, excluded).
    """
    typed = torch.nonzero(types >= 0).squeeze(1)
    order = typed[torch.argsort(types[typed], stable=True)]
    x = hidden[order.to(hidden.device)].float()
    sim = torch.nn.functional.cosine_similarity(x[:-1], x[1:], dim=-1, eps=0.0).cpu()
    same = types[order[:-1]] == types[order[1:]]
    sim = torch.cat([torch.tensor([-2.0]), torch.where(same, sim, torch.full_like(sim, -2.0))])
    return order, sim


def merge_runs(hidden: torch.Tensor, order: torch.Tensor, merge: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Average every run of merged tokens (consecutive in patch order) into the token before it
    (``merge_tokens_and_get_mask``): ``h_a ← (h_a + Σ_run h) / (n + 1)``.

    Args:
        hidden: (L, D) hidden states; order: (N,) positions in patch order; merge: (N,) bool, never True at index 0.

    Returns:
        the new (L, D) hidden states and the (L,) bool keep mask (False for merged-away positions).
    """
    idx = torch.arange(len(merge))
    anchor_slot = torch.cummax(torch.where(merge, torch.zeros_like(idx), idx), dim=0).values  # last unmerged slot
    src, dst = order[merge], order[anchor_slot[merge]]
    out = hidden.float().clone()
    dev = hidden.device
    out.index_add_(0, dst.to(dev), hidden[src.to(dev)].float())
    counts = torch.ones(hidden.shape[0]).index_add_(0, dst, torch.ones(len(dst)))
    out = out / counts.to(dev)[:, None]
    keep = torch.ones(hidden.shape[0], dtype=torch.bool)
    keep[src] = False
    return out.to(hidden.dtype), keep


@register_method("framefusion")
@dataclass
class FrameFusion(PruningMethod):
    """Args:
    retention: ``cost``, the average share of the video tokens per decoder layer (README 0.3).
    similarity_lower_bound: S, the merge threshold on the same-patch cosine (README example 0.6).
    ratio_lower_bound: stop merging once a layer's mergeable share falls below this (README 0.1).
    official_compat: budget over upstream's hard-coded 28 layers instead of the model's depth.
    """

    retention: float = 0.3
    similarity_lower_bound: float = 0.6
    ratio_lower_bound: float = 0.1
    official_compat: bool = False

    def validate(self, tokens_per_frame: int, num_frames: int, num_layers: int) -> None:
        check_retention("retention", self.retention)
        if not -1.0 < self.similarity_lower_bound <= 1.0:
            raise ConfigError(f"framefusion similarity_lower_bound={self.similarity_lower_bound} must lie in (−1, 1]")
        if not 0.0 <= self.ratio_lower_bound <= 1.0:
            raise ConfigError(f"framefusion ratio_lower_bound={self.ratio_lower_bound} must lie in [0, 1]")
        if self.official_compat and num_layers > UPSTREAM_LAYERS:
            raise ConfigError(f"framefusion official_compat budgets over 28 layers; this LLM has {num_layers}")

    def llm_layers(self, num_layers: int) -> tuple[int, ...]:
        return tuple(range(num_layers)) if self.retention < 1.0 else ()

    def _ratio(self, sparsities: list[float], ctx: SampleContext) -> float:
        layers = UPSTREAM_LAYERS if self.official_compat else ctx.num_layers
        return pruning_ratio(sparsities, self.retention, layers)

    def before_layer(self, state: SequenceState, ctx: SampleContext) -> torch.Tensor | None:
        if state.layer_idx == 0:
            ctx.stats[STATE_KEY] = {"merging": True, "pruning": True, "scores": None}
            ctx.stats.update(merge_sparsity=[], merged=[], prune_layer=None, prune_ratio=None)
        run: dict[str, Any] = ctx.stats[STATE_KEY]
        if run["scores"] is not None:
            return self._prune(state, ctx, run)
        if not run["merging"]:
            return None
        return self._merge(state, ctx, run)

    def _merge(self, state: SequenceState, ctx: SampleContext, run: dict[str, Any]) -> torch.Tensor | None:
        upper = self._ratio(ctx.stats["merge_sparsity"], ctx)
        order, sim = patch_order_similarity(state.hidden[0], patch_types(state, ctx.layout.grid_w))
        n = len(order)
        merge = sim >= self.similarity_lower_bound
        share = int(merge.sum()) / max(n, 1)
        if share < upper:
            ctx.stats["merge_sparsity"].append(share)
            run["merging"] = share >= self.ratio_lower_bound
        else:  # the budget binds: merge exactly the int(u·N) most similar, then neither merge nor prune again
            merge = torch.zeros(n, dtype=torch.bool)
            count = min(int(upper * n), int((sim > -2).sum()))  # never a patch's first token (a cross-patch merge)
            merge[torch.topk(sim, count).indices] = True
            run["merging"] = run["pruning"] = False
        ctx.stats["merged"].append(int(merge.sum()))
        keep = None
        if bool(merge.any()):
            hidden, mask = merge_runs(state.hidden[0], order, merge)
            state.hidden = hidden[None]
            keep = torch.nonzero(mask).squeeze(1)
        if not run["merging"] and run["pruning"]:  # score this layer on the merged sequence (prune before the next)
            merged = state if keep is None else state.keep(keep)
            run["scores"] = ctx.probe(merged)[:, 0].mean(0).cpu()
        return keep

    def _prune(self, state: SequenceState, ctx: SampleContext, run: dict[str, Any]) -> torch.Tensor:
        scores, run["scores"] = run["scores"], None
        ratio = self._ratio(ctx.stats["merge_sparsity"], ctx)
        video = state.video_positions  # upstream ranks the whole image span (the OV newline included)
        top = torch.topk(scores[video], round(len(video) * (1 - ratio))).indices
        ctx.stats.update(prune_layer=state.layer_idx, prune_ratio=ratio)
        return keep_with_text(state, video[top])

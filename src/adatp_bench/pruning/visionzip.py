"""VisionZip (Yang et al., "VisionZip: Longer is Better but Not Necessary in Vision Language Models", CVPR 2025,
arXiv 2412.04467), per frame, in the two variants of FastVID's Table 1 (docs/methods/visionzip.md,
docs/methods.md §5.1).

Official code ``dvlab-research/VisionZip@3151f6d`` (CLIP/LLaVA only: ``visionzip/clip_encoder.py::
CLIPVisionTower_VisionZip.forward``, ``visionzip/utils.py::CLIPAttention_forward``). The only public SigLIP/LLaVA-OV
port is HoliTom's, which we follow for every SigLIP-specific rule: ``cokeshao/HoliTom@e9b2972:visionzip/llava_arch.py``
(nested ``visionzip``) and ``LLaVA-NeXT/llava/model/multimodal_encoder/siglip_encoder.py`` (L196–246, L610–617).

Per frame, with a budget of ``S = int(tokens_per_frame · r)`` tokens (docs/flops.md §3) split ``D = int(S · 54/64)``
dominant + ``C = S − D`` contextual (HoliTom ``DOMINANT_RATIO = 54/64``; FastVID App. A.1 "54:10"):

1. **Dominance** = the mean attention each token *receives* in the last vision layer the LLM reads, averaged over heads
   and queries (SigLIP has no CLS token; ``siglip_encoder.py`` L617 ``attn.mean(1).mean(1)``).
   ``ctx.vision_attention()`` recomputes that layer's softmax(q kᵀ/√d) in fp32 from its own weights on its input, one
   frame at a time, so the tower itself keeps running with SDPA (docs/upstream.md §8; ``models/attention.py``).
2. **Dominant tokens**: the top-D by dominance, emitted in spatial order (``masked_select`` upstream).
3. **Contextual tokens**: the other tokens, in spatial order, are compared by the cosine of their **key averaged over
   heads** (``raw_key_states.mean(1)``, the "metric"). Targets are every ``step = max(1, R // C)``-th of the ``R``
   remaining tokens (the first C of them); every other remaining token joins its most similar target. A contextual
   token is ``target + mean(assigned)`` — the official arithmetic (``llava_arch.py`` "contextual_tokens = target_hidden
   + aggregated_hidden"; the CLIP code ``visionzip/clip_encoder.py`` at ``dvlab-research/VisionZip@3151f6d`` has the
   same sum). ``official_compat=False`` uses the plain mean ``(target + Σ assigned) / (1 + n)`` instead.
4. Output per frame: ``[dominant..., contextual...]`` (HoliTom's ``one_token`` layout); each contextual token carries
   the grid cell of its target. On LLaVA-Video's per-row layout the sequence builder re-sorts tokens by cell and adds
   newlines per ``row_newlines``: FastVID's Table 2 counts 64 newlines for both VisionZip rows, one per frame
   (``per_frame``; HoliTom's port re-inserts all 13 per frame, ``all``).

Variants (two registered methods, one algorithm):

- ``visionzip`` — FastVID's **VisionZip\\*** (= HoliTom's port): after the projector and pooling. Features, dominance
  and metric are all pooled to the token grid like the tokens (``get_2dPool`` on each; here ``ctx.pool_map``).
- ``visionzip_pre`` — FastVID's plain **VisionZip**, the original pre-projector semantics: select among the P vision
  patches (729 at full size) *before* pooling and the projector, merge in vision-feature space (as the CLIP code does),
  then run the LLM's own ``multi_modal_projector`` on the S kept tokens; no pooling. Each kept patch takes the pooled
  grid cell that covers it (average pooling: ``row // 2``; bilinear: the cell whose sample point is nearest,
  ``floor((2p+1)·h / 2s)``), which fixes its newline row on LLaVA-Video; two patches may share a cell. FastVID does not
  publish this variant's code; "before pooling" is our reading [H] (its VisionZip* is the after-pooling variant).

Positions are contiguous (the sequence is built after reduction, docs/methods.md §5.3). Retention 1.0 returns the pooled
tokens untouched (the unpruned model), so it is exactly vanilla in both variants.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F

from adatp_bench.core.context import SampleContext
from adatp_bench.core.layout import NEWLINE_POLICIES, VideoLayout, VisualTokens
from adatp_bench.errors import ConfigError, UnreachableSetting
from adatp_bench.pruning.base import PruningMethod, register_method
from adatp_bench.pruning.selection import check_retention, per_frame_budget

DOMINANT_RATIO = 54 / 64  # HoliTom `DOMINANT_RATIO` default; FastVID App. A.1 "dominant:contextual 54:10"


def split_budget(budget: int, dominant_ratio: float) -> tuple[int, int]:
    """(dominant, contextual) for a per-frame budget: ``int(S·ratio)`` and the rest (HoliTom ``dominant_num``)."""
    dominant = int(budget * dominant_ratio)
    return dominant, budget - dominant


@dataclass
class ZipResult:
    """VisionZip's output for F frames of N candidate tokens.

    Attributes:
        features: (F, S, D) fp32 tokens per frame, ``[dominant (spatial order), contextual (target order)]``.
        index: (F, S) long index in [0, N) of the candidate each output token sits on (a contextual token: its target).
        weight: (F, S) fp32 number of candidates each output token stands for.
    """

    features: torch.Tensor
    index: torch.Tensor
    weight: torch.Tensor


@torch.no_grad()
def visionzip_select(
    features: torch.Tensor,
    dominance: torch.Tensor,
    metric: torch.Tensor,
    dominant: int,
    contextual: int,
    official_compat: bool = True,
) -> ZipResult:
    """Dominant selection + contextual merging, every frame at once (HoliTom ``visionzip`` with batch = frames).

    Args:
        features: (F, N, D) candidate tokens.
        dominance: (F, N) attention received (higher = more dominant).
        metric: (F, N, Dm) per-token key used for the contextual cosine.
        dominant, contextual: tokens of each kind per frame (``dominant + contextual ≤ N``).
        official_compat: ``target + mean(assigned)`` (True, official) or ``mean(target ∪ assigned)`` (False).
    """
    nf, n, _ = features.shape
    x = features.float()
    # 1-2. top-D by received attention, kept in spatial order (boolean-mask gather upstream).
    dom_idx = torch.sort(torch.topk(dominance.float(), dominant, dim=1).indices, dim=1).values  # (F, D)
    is_dom = torch.zeros(nf, n, dtype=torch.bool, device=x.device).scatter_(1, dom_idx, True)
    rest_idx = torch.arange(n, device=x.device).expand(nf, n)[~is_dom].view(nf, n - dominant)  # (F, R) spatial order
    out_feat = [torch.gather(x, 1, dom_idx[..., None].expand(-1, -1, x.shape[2]))]
    out_idx, out_w = [dom_idx], [torch.ones(nf, dominant, device=x.device)]
    if contextual > 0:
        feat, idx, w = _contextual_merge(x, metric.float(), rest_idx, contextual, official_compat)
        out_feat.append(feat)
        out_idx.append(idx)
        out_w.append(w)
    return ZipResult(torch.cat(out_feat, 1), torch.cat(out_idx, 1), torch.cat(out_w, 1))


def _contextual_merge(
    x: torch.Tensor, metric: torch.Tensor, rest_idx: torch.Tensor, contextual: int, official_compat: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Merge the R remaining tokens into C uniformly strided targets (HoliTom ``visionzip`` "Contextual Visual Tokens").

    Args:
        x: (F, N, D) fp32 features; metric: (F, N, Dm) fp32 keys; rest_idx: (F, R) remaining token indices.

    Returns:
        (F, C, D) contextual tokens, (F, C) their target indices, (F, C) their weights (1 + assigned).
    """
    r = rest_idx.shape[1]
    d = x.shape[2]
    rest_x = torch.gather(x, 1, rest_idx[..., None].expand(-1, -1, d))  # (F, R, D)
    rest_m = torch.gather(metric, 1, rest_idx[..., None].expand(-1, -1, metric.shape[2]))
    rest_m = rest_m / rest_m.norm(dim=-1, keepdim=True)
    step = max(1, r // contextual)
    targets = torch.arange(0, r, step, device=x.device)[:contextual]  # positions within the remaining tokens
    is_target = torch.zeros(r, dtype=torch.bool, device=x.device)
    is_target[targets] = True
    merge_m, merge_x = rest_m[:, ~is_target], rest_x[:, ~is_target]
    similarity = merge_m @ rest_m[:, targets].transpose(1, 2)  # (F, R − C, C)
    one_hot = F.one_hot(similarity.argmax(dim=2), contextual).to(x.dtype)  # assign each to its most similar target
    counts = one_hot.sum(dim=1)[..., None]  # (F, C, 1)
    summed = one_hot.transpose(1, 2) @ merge_x  # (F, C, D)
    target_x = rest_x[:, targets]
    # official "sum" quirk: target + mean(assigned); otherwise the plain mean of the group
    merged = target_x + summed / counts.clamp(min=1) if official_compat else (target_x + summed) / (counts + 1)
    return merged, rest_idx[:, targets], counts[..., 0] + 1


# -- the methods -----------------------------------------------------------------------------------------------------
@dataclass
class _VisionZipBase(PruningMethod):
    """Args:
    retention: pre-LLM retention r; ``int(tokens_per_frame · r)`` tokens per frame.
    dominant_ratio: share of the per-frame budget taken by dominant tokens (54/64).
    official_compat: contextual token = target + mean(assigned) (True, official) or the plain group mean (False).
    row_newlines: per-row layout (LLaVA-Video) newlines: ``per_frame`` (FastVID Table 2: 64), ``all`` (HoliTom),
        ``rows_with_kept`` or ``none``. Ignored by the one-newline OneVision layout.
    """

    needs_vision_attention: ClassVar[bool] = True

    retention: float = 0.25
    dominant_ratio: float = DOMINANT_RATIO
    official_compat: bool = True
    row_newlines: str = "per_frame"

    def validate(self, tokens_per_frame: int, num_frames: int, num_layers: int) -> None:
        check_retention("retention", self.retention)
        if per_frame_budget(tokens_per_frame, self.retention) < 1:
            raise UnreachableSetting(
                f"{self.name} retention={self.retention} keeps int({tokens_per_frame}·r) = 0 tokens per frame"
            )
        if not 0.0 <= self.dominant_ratio <= 1.0:
            raise ConfigError(f"{self.name} dominant_ratio={self.dominant_ratio} must lie in [0, 1]")
        if self.row_newlines not in NEWLINE_POLICIES:
            raise ConfigError(f"{self.name} row_newlines={self.row_newlines!r}; valid: {NEWLINE_POLICIES}")

    @property
    def newline_policy(self) -> str:
        """The sequence builder's per-row newline policy (read by the adapter): ``row_newlines`` when pruning, every
        row's newline at retention 1.0 (the unpruned model)."""
        return self.row_newlines if self.retention < 1.0 else "all"

    def expected_video_tokens(self, layout: VideoLayout, num_layers: int) -> list[int] | None:
        budget = per_frame_budget(layout.tokens_per_frame, self.retention)
        if budget >= layout.tokens_per_frame:
            return [layout.video_len] * num_layers
        newlines = layout.newline_count(self.newline_policy, [budget] * layout.num_frames)
        return None if newlines is None else [layout.num_frames * budget + newlines] * num_layers

    def _split(self, tokens_per_frame: int, ctx: SampleContext) -> tuple[int, int]:
        budget = per_frame_budget(tokens_per_frame, self.retention)
        dominant, contextual = split_budget(budget, self.dominant_ratio)
        ctx.stats["dominant_per_frame"] = dominant
        ctx.stats["contextual_per_frame"] = contextual
        return dominant, contextual


def _grid_features(tokens: VisualTokens, layout: VideoLayout) -> torch.Tensor:
    """(F, N, D) view of the full pooled grid in raster order (what ``select_visual`` receives)."""
    if len(tokens) != layout.num_grid_tokens:
        raise ValueError(f"visionzip expects the full token grid ({layout.num_grid_tokens}), got {len(tokens)}")
    return tokens.features.view(layout.num_frames, layout.tokens_per_frame, -1)


def _to_tokens(
    features: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, weight: torch.Tensor, dtype: torch.dtype
) -> VisualTokens:
    """Flatten per-frame (F, S, ·) outputs into :class:`VisualTokens`, frames in order."""
    nf, s = rows.shape
    return VisualTokens(
        features=features.reshape(nf * s, -1).to(dtype),
        frame=torch.arange(nf).repeat_interleave(s),
        row=rows.reshape(-1).cpu(),
        col=cols.reshape(-1).cpu(),
        weight=weight.reshape(-1).float().cpu(),
    )


@register_method("visionzip")
@dataclass
class VisionZip(_VisionZipBase):
    """FastVID's VisionZip* / HoliTom's SigLIP port: per frame, after projector and pooling (module docstring)."""

    def select_visual(self, tokens: VisualTokens, ctx: SampleContext) -> VisualTokens:
        layout = ctx.layout
        n = layout.tokens_per_frame
        if per_frame_budget(n, self.retention) >= n:
            return tokens
        dominant, contextual = self._split(n, ctx)
        vision = ctx.vision_attention()  # received attention and key means of the layer the LLM reads
        grid_shape = (layout.num_frames, n)
        dominance = ctx.pool_map(vision.received).reshape(grid_shape)  # get_2dPool on attn_weights
        metric = ctx.pool_map(vision.keys).reshape(*grid_shape, -1)  # get_2dPool on metric
        feats = _grid_features(tokens, layout)
        out = visionzip_select(feats, dominance, metric.to(feats.device), dominant, contextual, self.official_compat)
        rows, cols = out.index // layout.grid_w, out.index % layout.grid_w
        return _to_tokens(out.features, rows, cols, out.weight, feats.dtype)


@register_method("visionzip_pre")
@dataclass
class VisionZipPre(_VisionZipBase):
    """FastVID's plain VisionZip: per frame, on the vision patches before pooling and the projector (module docstring).

    ``weight`` counts vision patches here (a dominant token stands for one patch).
    """

    def select_visual(self, tokens: VisualTokens, ctx: SampleContext) -> VisualTokens:
        layout = ctx.layout
        if per_frame_budget(layout.tokens_per_frame, self.retention) >= layout.tokens_per_frame:
            return tokens
        dominant, contextual = self._split(layout.tokens_per_frame, ctx)
        vision = ctx.vision_attention()
        hidden = ctx.vision_hidden  # (F, P, Dv): the features the projector would read
        out = visionzip_select(hidden, vision.received, vision.keys, dominant, contextual, self.official_compat)
        projected = ctx.project(out.features.to(hidden.dtype))  # (F, S, D): projector after the merge, no pooling
        rows, cols = ctx.patch_cells(out.index)  # the pooled cell covering each kept patch
        return _to_tokens(projected, rows, cols, out.weight, tokens.features.dtype)

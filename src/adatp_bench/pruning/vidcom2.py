"""VidCom2 (Liu et al., "Video Compression Commander: Plug-and-Play Inference Acceleration for Video Large Language
Models", EMNLP 2025, arXiv 2505.14454) — port of ``xuyang-liu16/VidCom2@944a17d`` (docs/methods/vidcom2.md).

Official code: ``token_compressor/vidcom2/vidcom2.py::vidcom2_compression`` and its helpers, called from
``token_compressor/vidcom2/models/llava.py::cus_prepare_inputs_labels_for_multimodal`` on the pooled post-projector
tokens of the video, before the newline(s) are added and the sequence is built. Attention-free; no randomness.

1. ``select_low_var_channels``: keep the half of the channels (``int(C·0.5)``) with the **lowest** variance over all
   F·T tokens of the video.
2. ``compute_gaussian_scores``: L2-normalise every token on those channels; with the video mean ``v`` (over all tokens)
   and the frame mean ``m_f``, score each token by the multi-scale Gaussian similarity
   ``g(x, c) = Σ_{a ∈ {1/8, 1/4, 1/2, 1, 2}} exp(−‖x − c‖² / 2a)`` to ``v`` and to ``m_f``.
3. ``compute_scales`` (frame uniqueness): ``u_f = −mean_tokens g(x, v)``; ``p = softmax((u − max u)/0.01)`` over frames;
   frame f keeps ``s_f = min(r·(1 + p_f − mean p), 1)`` of its tokens, i.e. ``k_f = max(round(s_f·T), 1)``
   (``select_outlier_indices``; ``torch.round``, halves to even). The ``s_f`` sum to ``r·F`` before clamping, so the
   video keeps ≈ ``r·F·T`` tokens; the exact count depends on the data through the rounding.
4. Per frame, keep the ``k_f`` tokens with the **lowest** ``g(x, v) + g(x, m_f)`` (the most distinctive), in cell order.

Positions are contiguous (the reduction happens before the sequence is built). Newlines: the single trailing
``image_newline`` on LLaVA-OV (``one_token``); on LLaVA-Video (``grid``, ``_map_grid_vid``) every frame keeps **all**
its row newlines whatever it keeps, i.e. the ``all`` policy. Deviations (docs/methods/vidcom2.md): fp32 arithmetic;
LLaVA-Video's kept tokens and newlines in raster order (upstream puts a frame's 13 newlines after its kept tokens);
``retention = 1.0`` returns the tokens untouched (upstream would still drop tokens in the less unique frames).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from adatp_bench.core.context import SampleContext
from adatp_bench.core.layout import VideoLayout, VisualTokens
from adatp_bench.errors import ConfigError
from adatp_bench.pruning.base import PruningMethod, register_method
from adatp_bench.pruning.selection import check_retention

GAUSSIAN_SCALES = tuple(2.0**k for k in range(-3, 2))  # `alphas = [2**k for k in range(-3, 2)]`
CHANNEL_RATIO = 0.5  # `select_low_var_channels(x, ratio=0.5)`
TEMPERATURE = 0.01  # `compute_scales(..., temp=0.01)`


def low_variance_channels(x: torch.Tensor, ratio: float = CHANNEL_RATIO) -> torch.Tensor:
    """(N, C) tokens restricted to the ``int(C·ratio)`` channels of lowest (biased) variance over the N tokens."""
    k = int(x.shape[-1] * ratio)
    index = torch.topk(x.var(dim=0, unbiased=False), k=k, largest=False).indices
    return x[:, index]


def multi_scale_gaussian(x: torch.Tensor, centre: torch.Tensor) -> torch.Tensor:
    """``Σ_a exp(−‖x − c‖² / 2a)`` over the last dimension (``_multi_scale_gaussian``)."""
    dist_sq = ((x - centre) ** 2).sum(dim=-1)
    return sum(torch.exp(-dist_sq / (2 * a)) for a in GAUSSIAN_SCALES)


def gaussian_scores(frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(video score, frame score), each (F, T): similarity of every normalised token to the video and frame means.

    Args:
        frames: (F, T, C') tokens on the selected channels.
    """
    unit = F.normalize(frames.float(), dim=-1)
    video_centre = unit.mean(dim=(0, 1), keepdim=True)
    frame_centre = unit.mean(dim=1, keepdim=True)
    return multi_scale_gaussian(unit, video_centre), multi_scale_gaussian(unit, frame_centre)


def frame_scales(video_score: torch.Tensor, retention: float) -> torch.Tensor:
    """(F,) per-frame keep ratios from frame uniqueness ``−mean g(x, v)`` (``compute_scales``)."""
    uniqueness = -video_score.mean(dim=-1)
    probs = F.softmax((uniqueness - uniqueness.max()) / TEMPERATURE, dim=0)
    return (retention * (1 + probs - probs.mean())).clamp(max=1.0)


def frame_budgets(scales: torch.Tensor, tokens_per_frame: int) -> list[int]:
    """Tokens kept per frame: ``max(round(s_f·T), 1)`` (``select_outlier_indices``)."""
    return (scales * tokens_per_frame).round().long().clamp(min=1).tolist()


def vidcom2_keep(
    features: torch.Tensor, tokens_per_frame: int, retention: float
) -> tuple[list[torch.Tensor], list[int]]:
    """Per frame, the sorted cell indices VidCom2 keeps, and the budgets.

    Args:
        features: (F·T, C) the video's pooled post-projector tokens in frame-major raster order.
        tokens_per_frame: T.
        retention: ``base_scale``.
    """
    selected = low_variance_channels(features.float())
    video_score, frame_score = gaussian_scores(selected.view(-1, tokens_per_frame, selected.shape[-1]))
    budgets = frame_budgets(frame_scales(video_score, retention), tokens_per_frame)
    scores = video_score + frame_score
    keep = [torch.sort(torch.topk(scores[f], k, largest=False).indices).values for f, k in enumerate(budgets)]
    return keep, budgets


@register_method("vidcom2")
@dataclass
class VidCom2(PruningMethod):
    """Args:
    retention: ``base_scale`` (``R_RATIO``), the average share of each frame's tokens kept (0.25 in the README).
    """

    retention: float = 0.25

    def validate(self, tokens_per_frame: int, num_frames: int, num_layers: int) -> None:
        check_retention("retention", self.retention)
        if tokens_per_frame < 2:
            raise ConfigError(f"vidcom2 needs at least 2 tokens per frame, got {tokens_per_frame}")

    @property
    def newline_policy(self) -> str:
        """Per-row layout: every frame keeps all its row newlines (upstream ``_map_grid_vid``)."""
        return "all"

    def expected_video_tokens(self, layout: VideoLayout, num_layers: int) -> list[int] | None:
        if self.retention >= 1.0:
            return [layout.video_len] * num_layers
        return None  # Σ_f round(s_f·T): the rounding of data-dependent frame scales fixes the total

    def select_visual(self, tokens: VisualTokens, ctx: SampleContext) -> VisualTokens:
        if self.retention >= 1.0:  # the unpruned reference
            return tokens
        layout = ctx.layout
        t = layout.tokens_per_frame
        if len(tokens) != layout.num_grid_tokens:
            raise ValueError(f"vidcom2 expects the full token grid ({layout.num_grid_tokens}), got {len(tokens)}")
        keep, budgets = vidcom2_keep(tokens.features, t, self.retention)
        index = torch.cat([cells.cpu() + f * t for f, cells in enumerate(keep)])  # `_map_linear_offset`
        ctx.stats["frame_budgets"] = budgets
        ctx.stats["retention_prefill"] = len(index) / layout.num_grid_tokens
        return tokens.select(index)

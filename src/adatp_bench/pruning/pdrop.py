"""PyramidDrop / PDrop (Xing et al., "PyramidDrop: Accelerating Your Large Vision-Language Models via Pyramid Visual
Redundancy Reduction", CVPR 2025, arXiv 2410.17247) — port of ``Cooperx521/PyramidDrop@6444f30``
(``llava/model/modeling_llama_pdrop.py::LlamaModel.pdrop_forward`` / ``pdrop_rank_drop``), with FastVID's LLaVA-OV layer
schedule (docs/methods/pdrop.md; FastVID Table 11). No official Qwen2 or video port exists; this module is the
harness's own port.
Rule (upstream ``pdrop_rank_drop``): the forward is split into stages at the layers of ``layer_list``. Before stage
layer ``l`` the video span is ranked by the attention of the **last instruction token**, previewed with layer ``l``'s
own ``input_layernorm``, q/k projections and RoPE on the hidden states that enter layer ``l`` (= our probe at the layer
about to run, docs/methods.md §5.2), fp32 softmax, mean over heads. Stage ``s`` keeps ``int(n0 · ratio_s)`` of the
``n0`` video positions that entered the LLM (upstream ``int(image_tokens · image_token_ratio_list[s])``), in their
original order, and **renumbers** RoPE positions ``0..len−1`` (``in_llm_positions = "renumber"``; decode continues each
layer at its own pruned length, which is upstream's "shift by the number dropped per stage", docs/upstream.md §9).
Upstream never calls ``repeat_kv`` and so cannot run GQA models; the probe repeats the KV heads (Qwen2-7B: 28/4,
Qwen2-0.5B: 14/2).

Settings, and the two rules this module shares with the other in-LLM ports (``sparsevlm``, ``prunevid``, ``holitom``;
they live in ``pruning/schedule.py``):

- :func:`scale_layers` — layer schedules are written for a ``reference_depth``-layer LLM (28 = Qwen2-7B, where
  FastVID's schedules were run) and mapped to other depths by ``round(l·L/L_ref)``, half up. The defaults are therefore
  exactly FastVID's on the 28-layer models, proportionally placed on Qwen2-0.5B (24 layers) and on the 4-layer test
  models. ``reference_depth: null`` makes the layers absolute (validated against the depth).
- :func:`pyramid_ratios` — ``retention`` r maps to per-stage keep ratios ``r^(ln ρ_s / ln ρ_1)`` of a published schedule
  ρ (``reference_ratios``): r = ρ_1 reproduces it exactly, r = 1 keeps everything (the identity), and PDrop's default
  ρ = (λ, λ², λ³) gives upstream's ``int(n0·λ^s)`` with λ = r. FastVID's OV-7B row "100%/4.1%/2.0%/1.0% at 8/16/24" is
  ``retention=0.041, reference_ratios=[0.041, 0.020, 0.010]``.

Deviations from upstream are listed in ``docs/methods/pdrop.md``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

import torch

from adatp_bench.core.context import SampleContext
from adatp_bench.core.layout import VideoLayout
from adatp_bench.core.sequence import SequenceState
from adatp_bench.errors import UnreachableSetting
from adatp_bench.pruning.base import PruningMethod, register_method
from adatp_bench.pruning.schedule import (
    check_reference_depth,
    check_reference_ratios,
    check_stage_layers,
    next_stage,
    pyramid_ratios,
    scale_layers,
)
from adatp_bench.pruning.selection import check_retention, keep_with_text, topk_sorted

# -- the method --------------------------------------------------------------------------------------------------------


@register_method("pdrop", "pyramiddrop")
@dataclass
class PDrop(PruningMethod):
    """Args:
    retention: r; stage s keeps ``int(n0 · r^(ln ρ_s / ln ρ_1))`` video positions (ρ = ``reference_ratios``). With the
        default ρ = (0.5, 0.25, 0.125) this is upstream's ``int(n0·λ^s)`` with λ = r; 1.0 keeps everything.
    layers: stage layers, for a ``reference_depth``-layer LLM: tokens entering these layers are pruned (upstream
        ``layer_list``, "the layers after which we apply rank & drop" counted as ``rank_layer = layer_idx + 1``).
    reference_depth: depth the layers are written for (28 = Qwen2-7B); null = absolute layer indices.
    reference_ratios: the published per-stage keep ratios whose shape ``retention`` follows
        (see :func:`pyramid_ratios`).
    """

    in_llm_positions: ClassVar[Literal["original", "renumber"]] = "renumber"

    retention: float = 0.5
    layers: list[int] = field(default_factory=lambda: [8, 16, 24])
    reference_depth: int | None = 28
    reference_ratios: list[float] = field(default_factory=lambda: [0.5, 0.25, 0.125])

    # -- schedule ----------------------------------------------------------------------------------------------------
    def stage_layers(self, num_layers: int) -> tuple[int, ...]:
        """The stage layers for a ``num_layers``-layer LLM."""
        return scale_layers(self.layers, num_layers, self.reference_depth)

    def stage_ratios(self) -> list[float]:
        """Keep ratio of each stage, relative to the ``n0`` video positions entering the LLM."""
        return pyramid_ratios(self.retention, self.reference_ratios)

    def stage_counts(self, n0: int) -> list[int]:
        """Video positions kept by each stage: ``int(n0 · ratio_s)``, never more than the previous stage."""
        counts, current = [], n0
        for ratio in self.stage_ratios():
            current = min(current, int(n0 * ratio))
            counts.append(current)
        return counts

    def validate(self, tokens_per_frame: int, num_frames: int, num_layers: int) -> None:
        check_retention("pdrop retention", self.retention)
        check_reference_depth("pdrop", self.reference_depth)
        check_reference_ratios("pdrop", self.reference_ratios, len(self.layers))
        # a stage layer previews its own attention on the previous layer's output: layer 0 has nothing to preview
        check_stage_layers("pdrop", self.layers, self.stage_layers(num_layers), 1, num_layers - 1, num_layers)
        counts = self.stage_counts(num_frames * tokens_per_frame)
        if counts[-1] < 1:
            raise UnreachableSetting(
                f"pdrop retention={self.retention} keeps no video token at its last stage "
                f"({num_frames}×{tokens_per_frame} tokens, ratios {self.stage_ratios()})"
            )

    def expected_video_tokens(self, layout: VideoLayout, num_layers: int) -> list[int]:
        n0 = layout.video_len
        per_layer, current = [], n0
        stages = dict(zip(self.stage_layers(num_layers), self.stage_counts(n0), strict=True))
        for layer in range(num_layers):
            current = stages.get(layer, current)
            per_layer.append(current)
        return per_layer

    # -- in-LLM hook -----------------------------------------------------------------------------------------------
    def llm_layers(self, num_layers: int) -> tuple[int, ...]:
        return self.stage_layers(num_layers)

    def before_layer(self, state: SequenceState, ctx: SampleContext) -> torch.Tensor | None:
        stage = next_stage(ctx, "_pdrop_stage")
        n_keep = self.stage_counts(ctx.layout.video_len)[stage]
        video = state.video_positions
        if n_keep >= len(video):
            return None  # nothing to drop (retention 1.0): no renumbering either, so logits equal vanilla exactly
        scores = last_token_scores(state)
        kept = video[topk_sorted(scores[video.to(scores.device)], n_keep).cpu()]
        return keep_with_text(state, kept)


def last_token_scores(state: SequenceState) -> torch.Tensor:
    """(L,) attention of the last prompt token at the layer about to run, fp32, mean over (query) heads.

    Upstream ``pdrop_rank_drop``: ``softmax(q_last·Kᵀ/√d + causal)`` with layer ``rank_layer``'s norm, projections and
    RoPE on the features entering it, ``mean(dim=0)`` over heads (the probe repeats GQA's KV heads first).
    """
    return state.probe()[:, 0].mean(0)

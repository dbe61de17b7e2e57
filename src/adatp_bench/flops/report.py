"""Per-sample FLOPs report: the paper column (`flops.paper`) and % of vanilla, plus the labelled extras
(`flops.extras`) when their inputs are given."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from adatp_bench.errors import ConfigError
from adatp_bench.flops.extras import decode_macs, full_prefill_macs, relevance_encoder_macs, vision_encoder_macs
from adatp_bench.flops.paper import TERA, _get, paper_tflops


@dataclass(frozen=True)
class FlopsReport:
    """FLOPs of one sample. All values are in the paper's unit: 1e12 MACs, printed as "TFLOPs".

    `paper_tflops` is the FastVID/AdaTP column (LLM prefill, video tokens only; docs/flops.md §1) and `pct_of_vanilla`
    its ratio to the same model's vanilla count. The `extra_*` fields are separately-labelled secondary numbers
    (docs/flops.md §7) and are never added to the paper column; None means "not requested".
    """

    paper_tflops: float
    pct_of_vanilla: float | None
    video_tokens_per_layer: tuple[float, ...]
    extra_full_prefill_tflops: float | None = None  # all positions (video + newline + text) + LM head (1 position)
    extra_vision_encoder_tflops: float | None = None  # SigLIP tower + projector for the sampled frames
    extra_decode_tflops: float | None = None  # `new_tokens` decode steps
    extra_relevance_encoder_tflops: float | None = None  # e.g. SigLIP so400m scoring frames against the query
    inputs: dict[str, Any] = field(default_factory=dict)  # what the extras were computed from

    def as_dict(self) -> dict[str, Any]:
        """Plain dict (JSON-serialisable) for result records."""
        d = asdict(self)
        d["video_tokens_per_layer"] = list(self.video_tokens_per_layer)
        return d


def make_flops_report(
    config: Any,
    video_tokens_per_layer: Sequence[float],
    *,
    vanilla_tflops: float | None = None,
    available_video_tokens: float | None = None,
    text_tokens: int | None = None,
    newline_tokens_per_layer: Sequence[float] | None = None,
    frames: int | None = None,
    new_tokens: int | None = None,
    relevance_config: Any = None,
    relevance_frames: int | None = None,
    relevance_text_tokens: int = 64,
) -> FlopsReport:
    """Build a `FlopsReport` for one sample.

    `config` is the model config (`LlavaOnevisionConfig`, or a Qwen2 config when only LLM numbers are wanted).
    Extras are computed only when their inputs are given: `text_tokens` → full prefill (and, with `new_tokens`,
    decode over the kept cache); `frames` → vision encoder (needs a LLaVA config); `relevance_config` +
    `relevance_frames` → relevance encoder.
    """
    paper = paper_tflops(config, video_tokens_per_layer, available=available_video_tokens)
    if vanilla_tflops is not None and vanilla_tflops <= 0:
        raise ConfigError(f"vanilla_tflops = {vanilla_tflops} must be positive")
    pct = None if vanilla_tflops is None else 100.0 * paper / vanilla_tflops
    inputs: dict[str, Any] = {}
    full = decode = vision = relevance = None
    if text_tokens is not None:
        inputs.update(text_tokens=text_tokens)
        full = full_prefill_macs(
            config, video_tokens_per_layer, text_tokens, newline_tokens_per_layer=newline_tokens_per_layer
        )
        full /= TERA
        if new_tokens is not None:
            inputs.update(new_tokens=new_tokens)
            newline = newline_tokens_per_layer or [0.0] * len(video_tokens_per_layer)
            ctx = [v + nl + text_tokens for v, nl in zip(video_tokens_per_layer, newline, strict=True)]
            decode = decode_macs(config, ctx, new_tokens) / TERA
    elif new_tokens is not None:
        raise ConfigError("new_tokens needs text_tokens (the decode cache holds the text tokens too)")
    if frames is not None:
        if _get(config, "vision_config") is None:
            raise ConfigError("frames given but the config has no vision_config (pass the LLaVA config)")
        inputs.update(frames=frames)
        vision = vision_encoder_macs(config, frames) / TERA
    if (relevance_config is None) != (relevance_frames is None):
        raise ConfigError("relevance_config and relevance_frames must be given together")
    if relevance_config is not None and relevance_frames is not None:
        inputs.update(relevance_frames=relevance_frames, relevance_text_tokens=relevance_text_tokens)
        relevance = relevance_encoder_macs(relevance_config, relevance_frames, text_tokens=relevance_text_tokens)
        relevance /= TERA
    return FlopsReport(
        paper_tflops=paper,
        pct_of_vanilla=pct,
        video_tokens_per_layer=tuple(float(n) for n in video_tokens_per_layer),
        extra_full_prefill_tflops=full,
        extra_vision_encoder_tflops=vision,
        extra_decode_tflops=decode,
        extra_relevance_encoder_tflops=relevance,
        inputs=inputs,
    )

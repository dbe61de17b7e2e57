"""FLOPs accounting in two halves (docs/flops.md).

1. The paper convention (FastVID App. A.2, used by AdaTP): the theoretical LLM prefill cost of the video tokens, in
   multiply-accumulates / 1e12, printed as "TFLOPs".
   - `flops.paper`: LLM dimensions, the per-layer formula (`layer_macs`, `llm_prefill_macs`, `paper_tflops`),
     token-count validation and token schedules (`uniform_schedule`, `two_stage`, `multi_stage`, `parse_schedule`);
   - `flops.extras`: separately-labelled extras that are never added to the paper column (LM head, full prefill,
     decode, SigLIP vision tower + projector, relevance encoder);
   - `flops.report`: the per-sample `FlopsReport` (`make_flops_report`).
2. `flops.counters`: counter cross-checks of the formula: FlopCounterMode (with the CPU SDPA formula registered),
   fvcore with alignment handles, and meta-device counting of full-size models.

Every public name is re-exported here, so `from adatp_bench import flops; flops.paper_tflops(...)` works.
"""

from __future__ import annotations

from adatp_bench.flops.counters import (
    FVCORE_ALIGNMENT_HANDLES,
    META_ATTENTION_MASK,
    FlopCount,
    FvcoreCount,
    LlavaMetaCount,
    build_llm_on_meta,
    count_llava_on_meta,
    count_llm_on_meta,
    count_with_flop_counter,
    count_with_fvcore,
    register_cpu_sdpa_flop_formula,
    skip_placeholder_check,
)
from adatp_bench.flops.extras import (
    decode_macs,
    full_prefill_macs,
    lm_head_macs,
    projector_macs,
    relevance_encoder_macs,
    siglip_text_macs,
    siglip_vision_macs,
    vision_encoder_macs,
)
from adatp_bench.flops.paper import (
    QWEN2_STYLE_MODEL_TYPES,
    TERA,
    LLMDims,
    UnsupportedArchitectureError,
    layer_macs,
    llm_dims,
    llm_dims_from_module,
    llm_prefill_macs,
    multi_stage,
    paper_counts,
    paper_tflops,
    parse_schedule,
    two_stage,
    uniform_schedule,
    validate_tokens_per_layer,
)
from adatp_bench.flops.report import FlopsReport, make_flops_report

__all__ = [
    "FVCORE_ALIGNMENT_HANDLES",
    "META_ATTENTION_MASK",
    "QWEN2_STYLE_MODEL_TYPES",
    "TERA",
    "FlopCount",
    "FlopsReport",
    "FvcoreCount",
    "LLMDims",
    "LlavaMetaCount",
    "UnsupportedArchitectureError",
    "build_llm_on_meta",
    "count_llava_on_meta",
    "count_llm_on_meta",
    "count_with_flop_counter",
    "count_with_fvcore",
    "decode_macs",
    "full_prefill_macs",
    "layer_macs",
    "llm_dims",
    "llm_dims_from_module",
    "llm_prefill_macs",
    "lm_head_macs",
    "make_flops_report",
    "multi_stage",
    "paper_counts",
    "paper_tflops",
    "parse_schedule",
    "projector_macs",
    "register_cpu_sdpa_flop_formula",
    "relevance_encoder_macs",
    "siglip_text_macs",
    "siglip_vision_macs",
    "skip_placeholder_check",
    "two_stage",
    "uniform_schedule",
    "validate_tokens_per_layer",
    "vision_encoder_macs",
]

"""FLOPs accounting in the paper convention, plus counter cross-checks.

The paper column (FastVID, arXiv 2503.11187, App. A.2; used by AdaTP [H]) is the *theoretical LLM prefill cost of the
video tokens*, counted in multiply-accumulates (MACs) and printed as "TFLOPs" (docs/flops.md §1):

    FLOPs_layer(n) = 2·n·D²          Q and O projections
                   + 2·n·D·h_kv·d     K and V projections (GQA: h_kv KV heads of size d)
                   + 2·n²·D           QKᵀ and A·V, full square (no causal halving)
                   + 3·n·D·D'         SwiGLU FFN: gate, up, down
    TFLOPs = Σ_layers FLOPs_layer(n_layer) / 1e12

n is the number of *video* positions entering the layer: text tokens are excluded; LLaVA-OV's single trailing newline
is excluded; LLaVA-Video's kept row newlines are included (docs/flops.md §3). The vision encoder, projector, decode, LM
head, biases, norms, softmax and RoPE are not in the paper column. They are available here as separately-labelled
extras (`FlopsReport`) and are never added to it.

"% FLOPs" (AdaTP) = TFLOPs / vanilla TFLOPs of the *same* model (docs/flops.md §1.3: never transfer a % between models).

Counters (docs/flops.md §8): `torch.utils.flop_counter.FlopCounterMode` counts 2 FLOPs per MAC; for decoder layers it
equals exactly 2 × the formula once the CPU SDPA kernel is registered (`register_cpu_sdpa_flop_formula`). fvcore counts
MACs and misses SDPA and `padding="valid"` convolutions; `count_with_fvcore` adds handles for those and drops the ops
that FlopCounterMode does not count (norms, upsampling), so the aligned fvcore number equals FlopCounterMode / 2.
Full-size models are counted on the `meta` device (docs/flops.md §8.2) by `count_llm_on_meta` / `count_llava_on_meta`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from adatp_bench.errors import ConfigError

TERA = 1e12


class UnsupportedArchitectureError(ConfigError):
    """The model is not a Qwen2-style decoder (GQA attention with q/k/v/o projections + SwiGLU gate/up/down), so the
    docs/flops.md §1.1 formula does not apply."""


# ---------------------------------------------------------------------------------------------------------------------
# LLM dimensions
# ---------------------------------------------------------------------------------------------------------------------

#: Decoder families whose layers have exactly the docs/flops.md §1.1 structure (Qwen2; Llama/Mistral share it, minus the
#: q/k/v biases, which the convention ignores anyway).
QWEN2_STYLE_MODEL_TYPES = frozenset({"qwen2", "llama", "mistral"})
_ATTN_PROJ = ("q_proj", "k_proj", "v_proj", "o_proj")
_MLP_PROJ = ("gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class LLMDims:
    """The numbers the docs/flops.md §1.1 formula needs (table in docs/flops.md §2)."""

    num_layers: int  # L
    hidden: int  # D
    ffn: int  # D'
    num_heads: int  # query heads
    num_kv_heads: int  # h_kv
    head_dim: int  # d
    vocab: int  # LM head width (extras only)

    @property
    def kv_dim(self) -> int:
        """h_kv · d: width of the K and V projections."""
        return self.num_kv_heads * self.head_dim


def _get(cfg: Any, key: str, default: Any = None) -> Any:
    if isinstance(cfg, Mapping):
        return cfg.get(key, default)
    return getattr(cfg, key, default)


def llm_dims(text_cfg: Any) -> LLMDims:
    """Read `LLMDims` from a Qwen2-style text config (a `Qwen2Config`, a dict, or a composite config such as
    `LlavaOnevisionConfig`, whose `text_config` is used). Raises `UnsupportedArchitectureError` for other decoders."""
    sub = _get(text_cfg, "text_config")
    if sub is not None:
        text_cfg = sub
    model_type = _get(text_cfg, "model_type")
    name = type(text_cfg).__name__
    if model_type not in QWEN2_STYLE_MODEL_TYPES:
        raise UnsupportedArchitectureError(
            f"cannot count the LLM of model_type {model_type!r} ({name}): the paper formula (docs/flops.md) covers "
            f"Qwen2-style decoders only ({', '.join(sorted(QWEN2_STYLE_MODEL_TYPES))})"
        )
    hidden = int(_get(text_cfg, "hidden_size"))
    heads = int(_get(text_cfg, "num_attention_heads"))
    kv_heads = int(_get(text_cfg, "num_key_value_heads") or heads)
    head_dim = int(_get(text_cfg, "head_dim") or hidden // heads)
    act = _get(text_cfg, "hidden_act", "silu")
    if heads * head_dim != hidden:
        raise UnsupportedArchitectureError(
            f"cannot count {name}: num_attention_heads·head_dim = {heads}·{head_dim} ≠ hidden_size {hidden}; the Q/O "
            "terms 2·n·D² of the paper formula (docs/flops.md) assume they are equal"
        )
    if act != "silu":
        raise UnsupportedArchitectureError(
            f"cannot count {name}: hidden_act {act!r} is not the SwiGLU (silu) FFN that docs/flops.md assumes"
        )
    return LLMDims(
        num_layers=int(_get(text_cfg, "num_hidden_layers")),
        hidden=hidden,
        ffn=int(_get(text_cfg, "intermediate_size")),
        num_heads=heads,
        num_kv_heads=kv_heads,
        head_dim=head_dim,
        vocab=int(_get(text_cfg, "vocab_size")),
    )


def llm_dims_from_module(model: nn.Module) -> LLMDims:
    """Read `LLMDims` from a built decoder (any module containing `layers.N` decoder layers), checking every layer has
    the Qwen2 structure. Raises `UnsupportedArchitectureError` naming the first module it cannot count."""
    inner = getattr(getattr(model, "model", None), "language_model", None)  # LLaVA: look at the LLM only
    if isinstance(inner, nn.Module):
        model = inner
    layers = [(name, mod) for name, mod in model.named_modules() if re.fullmatch(r"(.*\.)?layers\.\d+", name)]
    if not layers:
        raise UnsupportedArchitectureError(
            f"cannot count {type(model).__name__}: no decoder layers named 'layers.N' found"
        )
    for name, layer in layers:
        for sub, projs in (("self_attn", _ATTN_PROJ), ("mlp", _MLP_PROJ)):
            block = getattr(layer, sub, None)
            for proj in projs:
                if not isinstance(getattr(block, proj, None), nn.Linear):
                    where = f"{name}.{sub}" if block is not None else name
                    what = type(block).__name__ if block is not None else type(layer).__name__
                    raise UnsupportedArchitectureError(
                        f"cannot count module {where!r} ({what}): no nn.Linear {proj!r}; the paper formula "
                        "(docs/flops.md) covers Qwen2-style decoders (q/k/v/o_proj attention, gate/up/down_proj SwiGLU)"
                    )
    first = layers[0][1]
    config = getattr(model, "config", None)
    if config is not None:
        return llm_dims(config)
    attn, mlp = first.self_attn, first.mlp
    hidden = attn.q_proj.in_features
    head_dim = int(getattr(attn, "head_dim", 0)) or hidden // int(attn.num_heads)
    return LLMDims(
        num_layers=len(layers),
        hidden=hidden,
        ffn=mlp.gate_proj.out_features,
        num_heads=attn.q_proj.out_features // head_dim,
        num_kv_heads=attn.k_proj.out_features // head_dim,
        head_dim=head_dim,
        vocab=0,
    )


# ---------------------------------------------------------------------------------------------------------------------
# The paper formula (docs/flops.md §1.1)
# ---------------------------------------------------------------------------------------------------------------------


def validate_tokens_per_layer(
    dims: LLMDims, tokens_per_layer: Sequence[float], available: float | None = None, what: str = "tokens_per_layer"
) -> list[float]:
    """Check one count per decoder layer, each finite, ≥ 0 and (if given) ≤ `available`; raise `ConfigError`."""
    if isinstance(tokens_per_layer, str | bytes) or not isinstance(tokens_per_layer, Sequence):
        raise ConfigError(f"{what} must be a sequence of numbers, got {type(tokens_per_layer).__name__}")
    counts = list(tokens_per_layer)
    if len(counts) != dims.num_layers:
        raise ConfigError(
            f"{what} has {len(counts)} entries but the LLM has {dims.num_layers} decoder layers "
            f"(hidden {dims.hidden}); give one count per layer"
        )
    for i, n in enumerate(counts):
        if isinstance(n, bool) or not isinstance(n, int | float) or not math.isfinite(n):
            raise ConfigError(f"{what}[{i}] = {n!r} is not a finite number")
        if n < 0:
            raise ConfigError(f"{what}[{i}] = {n} is negative")
        if available is not None and n > available:
            raise ConfigError(f"{what}[{i}] = {n} exceeds the {available} tokens that exist")
    return counts


def layer_macs(dims: LLMDims, n: float) -> float:
    """MACs of one decoder layer on n tokens (docs/flops.md §1.1; FastVID App. A.2)."""
    d, d_ffn = dims.hidden, dims.ffn
    return (
        2 * n * d * d  # Q and O projections
        + 2 * n * d * dims.kv_dim  # K and V projections (GQA)
        + 2 * n * n * d  # QKᵀ and A·V, full n×n (not causally halved)
        + 3 * n * d * d_ffn  # SwiGLU: gate, up, down
    )


def llm_prefill_macs(text_cfg: Any, tokens_per_layer: Sequence[float], *, available: float | None = None) -> float:
    """Paper-convention LLM prefill MACs: Σ over decoder layers of `layer_macs(n_layer)` (docs/flops.md §1.1).

    `tokens_per_layer[l]` = video positions entering layer l (floats allowed for averaged counts such as 635.6).
    `available` (optional) = how many video tokens exist; a larger count raises `ConfigError`.
    """
    dims = llm_dims(text_cfg)
    counts = validate_tokens_per_layer(dims, tokens_per_layer, available)
    return float(sum(layer_macs(dims, n) for n in counts))


def paper_tflops(text_cfg: Any, tokens_per_layer: Sequence[float], *, available: float | None = None) -> float:
    """`llm_prefill_macs` / 1e12: the number printed in FastVID's TFLOPs column."""
    return llm_prefill_macs(text_cfg, tokens_per_layer, available=available) / TERA


# ---------------------------------------------------------------------------------------------------------------------
# Extras (never part of the paper column; docs/flops.md §7)
# ---------------------------------------------------------------------------------------------------------------------


def lm_head_macs(text_cfg: Any, tokens: int = 1) -> float:
    """LM head MACs for `tokens` positions (D·V each); prefill with `logits_to_keep=1` computes one."""
    dims = llm_dims(text_cfg)
    return float(tokens * dims.hidden * dims.vocab)


def full_prefill_macs(
    text_cfg: Any,
    video_tokens_per_layer: Sequence[float],
    text_tokens: int,
    *,
    newline_tokens_per_layer: Sequence[float] | None = None,
    lm_head_tokens: int = 1,
) -> float:
    """Whole-sequence prefill MACs: every layer on video + newline + text positions, plus the LM head for
    `lm_head_tokens` positions. Same per-layer formula as the paper column, different n (an extra, not the paper's)."""
    dims = llm_dims(text_cfg)
    video = validate_tokens_per_layer(dims, video_tokens_per_layer, what="video_tokens_per_layer")
    newline = (
        [0.0] * dims.num_layers
        if newline_tokens_per_layer is None
        else validate_tokens_per_layer(dims, newline_tokens_per_layer, what="newline_tokens_per_layer")
    )
    if text_tokens < 0:
        raise ConfigError(f"text_tokens = {text_tokens} is negative")
    stack = sum(layer_macs(dims, v + nl + text_tokens) for v, nl in zip(video, newline, strict=True))
    return float(stack + lm_head_tokens * dims.hidden * dims.vocab)


def decode_macs(text_cfg: Any, context_per_layer: Sequence[float], new_tokens: int, *, lm_head: bool = True) -> float:
    """MACs of `new_tokens` one-token decode steps after a prefill that left `context_per_layer[l]` positions in layer
    l's KV cache (pruned layers keep shorter caches). Step s attends over context + s + 1 keys: 2·D·keys MACs, plus the
    n = 1 linear terms and (optionally) the LM head. HF `generate(max_new_tokens=t)` runs t − 1 such steps."""
    dims = llm_dims(text_cfg)
    ctx = validate_tokens_per_layer(dims, context_per_layer, what="context_per_layer")
    if new_tokens < 0:
        raise ConfigError(f"new_tokens = {new_tokens} is negative")
    d = dims.hidden
    linear = 2 * d * d + 2 * d * dims.kv_dim + 3 * d * dims.ffn  # the n = 1 linear terms of layer_macs
    total = 0.0
    for s in range(new_tokens):
        total += sum(linear + 2 * d * (c + s + 1) for c in ctx)
        if lm_head:
            total += d * dims.vocab
    return total


def _vision_cfg(cfg: Any) -> Any:
    sub = _get(cfg, "vision_config")
    return sub if sub is not None else cfg


def siglip_vision_macs(vision_cfg: Any, images: int, *, include_head: bool | None = None) -> float:
    """SigLIP vision tower MACs for `images` images at the config's resolution: patch-embedding convolution plus the
    encoder layers (Q/K/V/O 4·P·H², attention 2·P²·H, GELU MLP 2·P·H·I), plus the attention-pooling head when the
    config has one (`vision_use_head`). `vision_cfg` may be a `SiglipVisionConfig` or a config holding one."""
    v = _vision_cfg(vision_cfg)
    h, inter = int(_get(v, "hidden_size")), int(_get(v, "intermediate_size"))
    size, patch, chans = int(_get(v, "image_size")), int(_get(v, "patch_size")), int(_get(v, "num_channels", 3))
    p = (size // patch) ** 2  # patches per image (729 at 384 px / patch 14); SigLIP has no CLS token
    per_image = p * chans * patch * patch * h  # patch embedding (a strided convolution)
    per_image += int(_get(v, "num_hidden_layers")) * (4 * p * h * h + 2 * p * p * h + 2 * p * h * inter)
    if include_head if include_head is not None else bool(_get(v, "vision_use_head", True)):
        # SiglipMultiheadAttentionPoolingHead: one probe query; K/V over P patches; out proj; MLP on the probe
        per_image += h * h + 2 * p * h * h + 2 * p * h + h * h + 2 * h * inter
    return float(images * per_image)


def projector_macs(llava_cfg: Any, images: int) -> float:
    """LLaVA-OV projector MACs (Linear vision→D, GELU, Linear D→D) on all P patches of each image; it runs before the
    2× pooling (docs/upstream.md §6)."""
    v = _vision_cfg(llava_cfg)
    hv = int(_get(v, "hidden_size"))
    p = (int(_get(v, "image_size")) // int(_get(v, "patch_size"))) ** 2
    d = llm_dims(llava_cfg).hidden
    return float(images * p * (hv * d + d * d))


def vision_encoder_macs(llava_cfg: Any, frames: int) -> float:
    """SigLIP tower + projector MACs for `frames` frames of a LLaVA-OV-style model (an extra, docs/flops.md §7)."""
    return siglip_vision_macs(llava_cfg, frames) + projector_macs(llava_cfg, frames)


def siglip_text_macs(siglip_cfg: Any, tokens: int = 64, *, texts: int = 1) -> float:
    """SigLIP text tower MACs for `texts` texts padded to `tokens` (SigLIP pads to 64): encoder layers plus the
    projection head on the pooled (last) token."""
    t = _get(siglip_cfg, "text_config") or siglip_cfg
    h, inter = int(_get(t, "hidden_size")), int(_get(t, "intermediate_size"))
    proj = int(_get(t, "projection_size") or h)
    n = tokens
    per_text = int(_get(t, "num_hidden_layers")) * (4 * n * h * h + 2 * n * n * h + 2 * n * h * inter) + h * proj
    return float(texts * per_text)


def relevance_encoder_macs(siglip_cfg: Any, frames: int, *, text_tokens: int = 64, texts: int = 1) -> float:
    """Full SigLIP (both towers + pooling heads + the frames×texts similarity logits) scoring `frames` frames against
    `texts` queries: the cost of a relevance encoder such as `siglip_so400m` (an extra)."""
    t = _get(siglip_cfg, "text_config") or siglip_cfg
    proj = int(_get(t, "projection_size") or _get(t, "hidden_size"))
    return (
        siglip_vision_macs(siglip_cfg, frames)
        + siglip_text_macs(siglip_cfg, text_tokens, texts=texts)
        + float(frames * texts * proj)
    )


# ---------------------------------------------------------------------------------------------------------------------
# Per-sample report
# ---------------------------------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------------------------------
# Token schedules (docs/flops.md §1.1 notation: "2x6272+26x1568" = 2 layers at 6272 tokens, then 26 at 1568)
# ---------------------------------------------------------------------------------------------------------------------


def _check_count(n: float, what: str) -> None:
    if isinstance(n, bool) or not isinstance(n, int | float) or not math.isfinite(n) or n < 0:
        raise ConfigError(f"{what} = {n!r} must be a finite number ≥ 0")


def uniform_schedule(n: float, layers: int) -> list[float]:
    """n tokens in every layer: input-only pruning (VisionZip, FastVID, DyCoke TTM, ...)."""
    return multi_stage(n, [], layers)


def two_stage(n0: float, k: int, n1: float, layers: int) -> list[float]:
    """n0 tokens in layers [0, k), n1 from layer k on: FastV with K = k (`two_stage(6272, 2, 1568, 28)`)."""
    return multi_stage(n0, [(k, n1)], layers)


def multi_stage(n0: float, stages: Sequence[tuple[int, float]], layers: int) -> list[float]:
    """n0 tokens from layer 0; each `(start_layer, n)` in `stages` (ascending) switches to n from that layer on
    (PDrop, SparseVLM: `multi_stage(6272, [(8, 257), (16, 125), (24, 63)], 28)`)."""
    if isinstance(layers, bool) or not isinstance(layers, int) or layers <= 0:
        raise ConfigError(f"layers = {layers!r} must be a positive integer")
    _check_count(n0, "n0")
    out = [n0] * layers
    previous = 0
    for start, n in stages:
        if not isinstance(start, int) or not previous <= start <= layers:
            raise ConfigError(
                f"stage start {start!r} must be an integer in [{previous}, {layers}] (stages ascending, ≤ layers)"
            )
        _check_count(n, f"tokens of the stage starting at layer {start}")
        out[start:] = [n] * (layers - start)
        previous = start
    return out


_TERM = re.compile(r"^(\d+)x(?:\((.+)\)|([^()]+))$")


def parse_schedule(text: str) -> list[float]:
    """Parse the `n_schedule_derived` notation of the reference CSVs: "28x6272", "2x6272+26x1568",
    "2x11648+26x(2704+568.7)", "28x(~3471+256)"; a trailing " (note)" is ignored. Returns one count per layer."""
    body = re.split(r"\s+\(", text.strip(), maxsplit=1)[0].replace(" ", "").replace("~", "")
    terms, depth, start = [], 0, 0
    for i, ch in enumerate(body):  # split on '+' outside parentheses
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if ch == "+" and depth == 0:
            terms.append(body[start:i])
            start = i + 1
    terms.append(body[start:])
    out: list[float] = []
    for term in terms:
        m = _TERM.match(term)
        if not m:
            raise ConfigError(
                f"cannot parse schedule term {term!r} in {text!r} (expected 'LAYERSxN' or 'LAYERSx(A+B)')"
            )
        try:
            n = sum(float(x) for x in (m.group(2) or m.group(3)).split("+"))
        except ValueError as exc:
            raise ConfigError(f"cannot parse token count in {term!r} of schedule {text!r}") from exc
        out.extend([n] * int(m.group(1)))
    return out


# ---------------------------------------------------------------------------------------------------------------------
# FlopCounterMode (docs/flops.md §8.1): 2 FLOPs per MAC
# ---------------------------------------------------------------------------------------------------------------------


def register_cpu_sdpa_flop_formula() -> bool:
    """Register `aten._scaled_dot_product_flash_attention_for_cpu` in torch's flop registry, reusing torch's
    `sdpa_flop_count` (torch 2.13 lacks it, so SDPA attention vanishes on CPU: docs/flops.md, pytorch/pytorch#195460).
    Idempotent; does nothing if torch (or an earlier call) already has it. Returns True if this call registered it."""
    from torch.utils import flop_counter

    packet = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
    if packet in flop_counter.flop_registry:
        return False

    def cpu_sdpa_flop(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
        # same formula as torch's CUDA flash/efficient entries; not causally halved
        return flop_counter.sdpa_flop_count(query_shape, key_shape, value_shape)

    try:
        flop_counter.register_flop_formula(packet)(cpu_sdpa_flop)
    except RuntimeError:  # "duplicate registrations": registered concurrently
        return False
    return True


@dataclass(frozen=True)
class FlopCount:
    """A FlopCounterMode result: `total` FLOPs (2 per MAC), per-module totals keyed by module path (as
    `FlopCounterMode.get_flop_counts()`, e.g. "Qwen2ForCausalLM.model.layers.0"), and the global per-op split."""

    total: int
    per_module: dict[str, int]
    per_op: dict[str, int]

    @property
    def macs(self) -> float:
        """total / 2: comparable with the paper formula (docs/flops.md §1.1)."""
        return self.total / 2

    def matching(self, pattern: str) -> int:
        """Sum of the modules whose path fully matches the regex `pattern` (do not overlap parents and children)."""
        return sum(v for k, v in self.per_module.items() if re.fullmatch(pattern, k))

    def decoder_layers(self) -> list[int]:
        """FLOPs of each LLM decoder layer `...layers.N` (the modules the paper formula covers), in layer order.
        Vision-encoder layers (`...vision...` or `...encoder.layers.N`) are left out."""
        found = {}
        for k, v in self.per_module.items():
            m = re.fullmatch(r".*\.layers\.(\d+)", k)
            if m and "vision" not in k.lower() and not k.endswith(f"encoder.layers.{m.group(1)}"):
                found[int(m.group(1))] = v
        return [found[i] for i in sorted(found)]


def count_with_flop_counter(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> FlopCount:
    """Run `fn(*args, **kwargs)` under `FlopCounterMode` (CPU SDPA registered first) and return its `FlopCount`."""
    from torch.utils.flop_counter import FlopCounterMode

    register_cpu_sdpa_flop_formula()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        fn(*args, **kwargs)
    counts = counter.get_flop_counts()
    per_op = {str(op): int(v) for op, v in counts.get("Global", {}).items()}
    per_module = {name: int(sum(ops.values())) for name, ops in counts.items() if name != "Global"}
    return FlopCount(total=int(counter.get_total_flops()), per_module=per_module, per_op=per_op)


# ---------------------------------------------------------------------------------------------------------------------
# fvcore (second opinion; docs/flops.md §8.3). fvcore counts MACs by tracing with torch.jit.
# ---------------------------------------------------------------------------------------------------------------------


def _shape(value: Any) -> list[int]:
    from fvcore.nn.jit_handles import get_shape

    shape = get_shape(value)
    if shape is None:
        raise ConfigError("fvcore handle: an input has no static shape in the traced graph")
    return shape


def _fvcore_sdpa(inputs: list[Any], outputs: list[Any]) -> int:
    # aten::scaled_dot_product_attention(q, k, v, ...): QKᵀ + A·V = b·h_q·s_q·s_k·(d + d_v) MACs. fvcore has no handle
    # (MzeroMiko/VMamba#296); this equals torch's sdpa_flop_count / 2, GQA included (heads taken from the query).
    q, k, v = _shape(inputs[0]), _shape(inputs[1]), _shape(inputs[2])
    batch_heads = math.prod(q[:-2])
    return batch_heads * q[-2] * k[-2] * (q[-1] + v[-1])


def _fvcore_conv_out(inputs: list[Any], outputs: list[Any]) -> int:
    # aten::_convolution_mode (Conv2d with padding="valid"/"same", e.g. SigLIP's patch embedding): fvcore only knows
    # aten::_convolution. MACs = output elements × (C_in / groups) × kernel area = torch conv_flop / 2.
    w, out = _shape(inputs[1]), _shape(outputs[0])
    return math.prod(out) * math.prod(w[1:])


def _fvcore_baddbmm(inputs: list[Any], outputs: list[Any]) -> int:
    # aten::baddbmm(bias, a, b): the batched matmul part, b·n·k·m MACs (nn.MultiheadAttention's QKᵀ; FlopCounterMode
    # counts it as baddbmm). fvcore has no handle.
    a, b = _shape(inputs[1]), _shape(inputs[2])
    return a[0] * a[1] * a[2] * b[2]


def _fvcore_not_counted(inputs: list[Any], outputs: list[Any]) -> int:
    # ops fvcore prices as elementwise work but FlopCounterMode does not count at all. (A None handle would not do:
    # fvcore's own default handles take precedence over its ignore list.)
    return 0


#: Handles that make fvcore count what FlopCounterMode counts (and nothing else). fvcore misses
#: `aten::scaled_dot_product_attention` (all SDPA attention), `aten::_convolution_mode` (SigLIP's patch embedding) and
#: `aten::baddbmm` (nn.MultiheadAttention in SigLIP's pooling head): handles added. fvcore counts norms, upsampling
#: (LLaVA-OV's bilinear pooling) and adaptive pooling, which FlopCounterMode ignores: set to 0.
FVCORE_ALIGNMENT_HANDLES: dict[str, Callable[[list[Any], list[Any]], int]] = {
    "aten::scaled_dot_product_attention": _fvcore_sdpa,
    "aten::_convolution_mode": _fvcore_conv_out,
    "aten::baddbmm": _fvcore_baddbmm,
    **{
        op: _fvcore_not_counted
        for op in (
            "aten::layer_norm",
            "aten::group_norm",
            "aten::batch_norm",
            "aten::instance_norm",
            "aten::upsample_nearest2d",
            "aten::upsample_bilinear2d",
            "aten::adaptive_avg_pool2d",
            "aten::grid_sampler",
        )
    },
}


class _KwargsWrapper(nn.Module):
    """Positional-args adapter for jit tracing: calls `module(*args, **kwargs)` and returns plain tensors."""

    def __init__(self, module: nn.Module, kwargs: Mapping[str, Any], input_names: Sequence[str] | None) -> None:
        super().__init__()
        self.module = module
        self.kwargs = dict(kwargs)
        self.input_names = None if input_names is None else tuple(input_names)

    def forward(self, *args: Any) -> Any:
        if self.input_names is None:
            out = self.module(*args, **self.kwargs)
        else:
            out = self.module(**dict(zip(self.input_names, args, strict=True)), **self.kwargs)
        if hasattr(out, "to_tuple"):  # transformers ModelOutput
            out = out.to_tuple()
        return out


@dataclass(frozen=True)
class FvcoreCount:
    """fvcore result in MACs. `aligned` says whether `FVCORE_ALIGNMENT_HANDLES` were installed."""

    macs: int
    by_operator: dict[str, int]
    by_module: dict[str, int]
    unsupported_ops: dict[str, int]
    aligned: bool


def count_with_fvcore(
    module: nn.Module,
    inputs: tuple[torch.Tensor, ...],
    *,
    input_names: Sequence[str] | None = None,
    kwargs: Mapping[str, Any] | None = None,
    align: bool = True,
) -> FvcoreCount:
    """Count `module(*inputs, **kwargs)` with `fvcore.nn.FlopCountAnalysis` (MACs; torch.jit trace). The traced
    tensors are `inputs`; `input_names` passes them as keyword arguments instead (e.g. `("inputs_embeds",)`), and
    `kwargs` holds non-tensor options (`use_cache=False`, `logits_to_keep=1` for HF models). With `align=True` (default)
    `FVCORE_ALIGNMENT_HANDLES` are installed, so the result equals `count_with_flop_counter` / 2. Ops left
    unsupported (elementwise ops, which neither counter prices) are listed in `unsupported_ops`."""
    from fvcore.nn import FlopCountAnalysis

    wrapped = _KwargsWrapper(module, kwargs or {}, input_names)
    analysis = FlopCountAnalysis(wrapped, inputs)
    analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    if align:
        analysis.set_op_handle(**FVCORE_ALIGNMENT_HANDLES)
    with torch.no_grad():
        total = int(analysis.total())
    by_module = {k.removeprefix("module."): int(v) for k, v in analysis.by_module().items() if k}
    return FvcoreCount(
        macs=total,
        by_operator={k: int(v) for k, v in analysis.by_operator().items()},
        by_module=by_module,
        unsupported_ops=dict(analysis.unsupported_ops()),
        aligned=align,
    )


# ---------------------------------------------------------------------------------------------------------------------
# Meta-device counting of full-size models (docs/flops.md §8.2; transformers 5.23)
# ---------------------------------------------------------------------------------------------------------------------

#: Workaround 1: a pre-built mask mapping. Without it `create_causal_mask` → `find_packed_sequence_indices` calls
#: `.item()` on a meta tensor. With batch 1 and no padding, SDPA runs causal with mask None, so counts are unchanged.
META_ATTENTION_MASK: dict[str, None] = {"full_attention": None}


@contextmanager
def skip_placeholder_check() -> Iterator[None]:
    """Workaround 2 (only needed for a *full* LLaVA-OV forward on meta): the placeholder-count check in
    `get_placeholder_mask` (`torch_compilable_check`) calls `.item()`. Disabled inside this block, restored after.
    `count_llava_on_meta` avoids it by running the vision features and the language model separately."""
    from transformers.models.llava_onevision import modeling_llava_onevision as mod

    original = mod.torch_compilable_check
    mod.torch_compilable_check = lambda *args, **kwargs: None
    try:
        yield
    finally:
        mod.torch_compilable_check = original


def _text_config(cfg: Any) -> Any:
    sub = _get(cfg, "text_config")
    return sub if sub is not None else cfg


def build_llm_on_meta(text_cfg: Any) -> nn.Module:
    """`Qwen2ForCausalLM` (or the matching causal LM) for a text config, on the meta device, eval mode."""
    from transformers import AutoModelForCausalLM

    cfg = _text_config(text_cfg)
    llm_dims(cfg)  # fail early on unsupported architectures
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(cfg, attn_implementation="sdpa")
    return model.eval()


def count_llm_on_meta(
    text_cfg: Any, seq_len: int, *, logits_to_keep: int = 1, model: nn.Module | None = None
) -> FlopCount:
    """Count a full-size LLM prefill of `seq_len` positions on the meta device (no memory; ≈ 0.2 s for Qwen2-7B).
    `total` = 2 × (Σ `layer_macs(seq_len)` + LM head for `logits_to_keep` positions)."""
    model = model if model is not None else build_llm_on_meta(text_cfg)
    hidden = llm_dims(text_cfg).hidden
    embeds = torch.empty(1, seq_len, hidden, device="meta")
    return count_with_flop_counter(
        model,
        inputs_embeds=embeds,
        attention_mask=META_ATTENTION_MASK,
        use_cache=False,
        logits_to_keep=logits_to_keep,
    )


@dataclass(frozen=True)
class LlavaMetaCount:
    """Full-size LLaVA-OV counts on meta (FLOPs, 2 per MAC): vision tower, projector, LLM prefill, LM head."""

    vision_tower: int
    projector: int
    llm_decoder_layers: int
    lm_head: int
    llm_total: int
    sequence_length: int
    count: dict[str, FlopCount]

    @property
    def total(self) -> int:
        """Vision tower + projector + LLM prefill (incl. LM head)."""
        return self.vision_tower + self.projector + self.llm_total


def count_llava_on_meta(
    model: nn.Module, frames: int, *, video_tokens: int | None = None, text_tokens: int = 64, newline_tokens: int = 1
) -> LlavaMetaCount:
    """Count a full-size LLaVA-OV model (from `models.full_size.build_on_meta`) on meta: `get_video_features` on
    `frames` frames, then the language model on `video_tokens` (default all pooled tokens) + `newline_tokens` +
    `text_tokens` positions with `logits_to_keep=1`. Runs the two parts separately (docs/flops.md §8.2)."""
    cfg = model.config
    v = cfg.vision_config
    pixel_values = torch.empty(1, frames, v.num_channels, v.image_size, v.image_size, device="meta")
    vision = count_with_flop_counter(model.model.get_video_features, pixel_values)
    # FlopCounterMode names modules from the first module called: here the tower and the projector are roots
    vision_tower = vision.per_module.get(type(model.model.vision_tower).__name__, 0)
    projector = vision.per_module.get(type(model.model.multi_modal_projector).__name__, 0)
    if video_tokens is None:
        grid = math.ceil(v.image_size // v.patch_size / 2)
        video_tokens = frames * grid * grid
    seq = video_tokens + newline_tokens + text_tokens
    embeds = torch.empty(1, seq, cfg.text_config.hidden_size, device="meta")

    def llm_forward() -> Any:
        hidden = model.model.language_model(
            inputs_embeds=embeds, attention_mask=META_ATTENTION_MASK, use_cache=False
        ).last_hidden_state
        return model.lm_head(hidden[:, -1:, :])

    llm = count_with_flop_counter(llm_forward)
    stack = llm.per_module.get(type(model.model.language_model).__name__, 0)
    return LlavaMetaCount(
        vision_tower=vision_tower,
        projector=projector,
        llm_decoder_layers=sum(llm.decoder_layers()),
        lm_head=llm.total - stack,
        llm_total=llm.total,
        sequence_length=seq,
        count={"vision": vision, "llm": llm},
    )

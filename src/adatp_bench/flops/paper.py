"""FLOPs in the paper convention: the LLM formula and token schedules.

The paper column (FastVID, arXiv 2503.11187, App. A.2; used by AdaTP [H]) is the *theoretical LLM prefill cost of the
video tokens*, counted in multiply-accumulates (MACs) and printed as "TFLOPs" (docs/flops.md §1):

    FLOPs_layer(n) = 2·n·D²          Q and O projections
                   + 2·n·D·h_kv·d     K and V projections (GQA: h_kv KV heads of size d)
                   + 2·n²·D           QKᵀ and A·V, full square (no causal halving)
                   + 3·n·D·D'         SwiGLU FFN: gate, up, down
    TFLOPs = Σ_layers FLOPs_layer(n_layer) / 1e12

n is the number of *video* positions entering the layer: text tokens are excluded; LLaVA-OV's single trailing newline
is excluded; LLaVA-Video's kept row newlines are included (docs/flops.md §3). The vision encoder, projector, decode, LM
head, biases, norms, softmax and RoPE are not in the paper column. They are available as separately-labelled extras
(`flops.extras`, collected per sample by `flops.report.FlopsReport`) and are never added to it.

"% FLOPs" (AdaTP) = TFLOPs / vanilla TFLOPs of the *same* model (docs/flops.md §1.3: never transfer a % between models).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from torch import nn

from adatp_bench.errors import ConfigError

if TYPE_CHECKING:
    from adatp_bench.core.layout import VideoLayout

TERA = 1e12


class UnsupportedArchitectureError(ConfigError):
    """The model is not a Qwen2-style decoder (GQA attention with q/k/v/o projections + SwiGLU gate/up/down), so the
    docs/flops.md §1.1 formula does not apply."""


# ---------------------------------------------------------------------------------------------------------------------
# LLM dimensions
# ---------------------------------------------------------------------------------------------------------------------

#: Decoder families whose layers have exactly the docs/flops.md §1.1 structure (Qwen2; Llama/Mistral share it, minus the
#: q/k/v biases, which the convention ignores anyway; the Qwen2-VL / Qwen2.5-VL decoders are Qwen2 layers with M-RoPE,
#: whose rotation the convention does not count).
QWEN2_STYLE_MODEL_TYPES = frozenset({"qwen2", "llama", "mistral", "qwen2_vl_text", "qwen2_5_vl_text"})
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


def paper_counts(layout: VideoLayout, counts: Sequence[int], *, newline_ranked: bool, newlines: int) -> list[int]:
    """Video positions per layer → the paper convention (docs/flops.md §3): LLaVA-Video's kept row newlines count, the
    LLaVA-OV trailing newline does not. `newlines` = OV newlines the method keeps (1, or 0 with a "none" policy); with
    `newline_ranked` the newline is taken as dropped in every pruned layer."""
    if layout.newline_layout == "per_row":
        return list(counts)
    return [n if newline_ranked and n < layout.video_len else n - newlines for n in counts]

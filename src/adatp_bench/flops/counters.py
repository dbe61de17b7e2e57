"""Counter cross-checks of the paper formula (docs/flops.md §8).

`torch.utils.flop_counter.FlopCounterMode` counts 2 FLOPs per MAC; for decoder layers it equals exactly 2 × the formula
(`flops.paper.layer_macs`) once the CPU SDPA kernel is registered (`register_cpu_sdpa_flop_formula`). fvcore counts
MACs and misses SDPA and `padding="valid"` convolutions; `count_with_fvcore` adds handles for those and drops the ops
that FlopCounterMode does not count (norms, upsampling), so the aligned fvcore number equals FlopCounterMode / 2.
Full-size models are counted on the `meta` device (docs/flops.md §8.2) by `count_llm_on_meta` / `count_llava_on_meta`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from adatp_bench.errors import ConfigError
from adatp_bench.flops.paper import _get, llm_dims

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

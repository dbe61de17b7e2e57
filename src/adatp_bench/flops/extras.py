"""Separately-labelled FLOPs extras (docs/flops.md §7): LM head, full prefill, decode, vision encoder, projector,
relevance encoder. Same unit as the paper column (MACs), never added to it (`flops.paper`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from adatp_bench.errors import ConfigError
from adatp_bench.flops.paper import _get, layer_macs, llm_dims, validate_tokens_per_layer


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
    if str(_get(_vision_cfg(llava_cfg), "model_type", "")).startswith("qwen"):
        raise ConfigError(
            "a Qwen2-VL / Qwen2.5-VL ViT's cost depends on each video's patch grid (dynamic resolution): use "
            "qwen_vision_macs(config, (t, H, W)) with the sample's video_grid_thw"
        )
    return siglip_vision_macs(llava_cfg, frames) + projector_macs(llava_cfg, frames)


def _window_sizes(side: int, window: int) -> list[int]:
    return [min(window, side - i) for i in range(0, side, window)]


def qwen_vision_macs(cfg: Any, grid_thw: Sequence[int]) -> float:
    """Qwen2-VL / Qwen2.5-VL ViT + 2×2 merger MACs for one video of ``grid_thw`` = (t, H, W) patches (an extra).

    Patch embedding (3-D convolution over C·2·14·14 voxels), per block Q/K/V/O 4·P·H², attention 2·n²·H within each
    attention unit (a temporal patch's H·W patches in full-attention blocks; in Qwen2.5-VL's other blocks, windows of
    ``window_size``/14 patches a side, arXiv 2502.13923 §2.1.1), the MLP (Qwen2.5-VL SwiGLU 3·P·H·I; Qwen2-VL
    2·P·H·mlp_ratio·H), and the merger (LN, Linear 4H→4H, GELU, Linear 4H→D) on the P/4 merged tokens.
    """
    v = _vision_cfg(cfg)
    t, big_h, big_w = (int(x) for x in grid_thw)
    patch, tps = int(_get(v, "patch_size")), int(_get(v, "temporal_patch_size", 2))
    merge, chans = int(_get(v, "spatial_merge_size", 2)), int(_get(v, "in_chans", _get(v, "in_channels", 3)))
    qwen25 = _get(v, "fullatt_block_indexes") is not None
    hv = int(_get(v, "hidden_size") if qwen25 else _get(v, "embed_dim"))
    out = int(_get(v, "out_hidden_size") if qwen25 else _get(v, "hidden_size"))
    p_frame = big_h * big_w
    p = t * p_frame
    total = p * chans * tps * patch * patch * hv  # patch embedding
    full = t * p_frame * p_frame * 2 * hv
    if qwen25:
        win = int(_get(v, "window_size")) // patch  # patches per window side (112 px / 14 = 8)
        units = [a * b for a in _window_sizes(big_h, win) for b in _window_sizes(big_w, win)]
        windowed = t * sum(n * n for n in units) * 2 * hv
        mlp = 3 * p * hv * int(_get(v, "intermediate_size"))
        full_blocks = set(int(i) for i in _get(v, "fullatt_block_indexes"))
    else:
        windowed = full
        mlp = 2 * p * hv * int(float(_get(v, "mlp_ratio", 4)) * hv)
        full_blocks = set(range(int(_get(v, "depth"))))
    for block in range(int(_get(v, "depth"))):
        total += 4 * p * hv * hv + mlp + (full if block in full_blocks else windowed)
    wide = hv * merge * merge
    total += (p // (merge * merge)) * (wide * wide + wide * out)
    return float(total)


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

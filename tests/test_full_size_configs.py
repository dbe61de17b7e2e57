"""Full-size configs: every number against the published values, meta builds, parameter counts from the configs."""

from __future__ import annotations

import pytest
import torch

from adatp_bench.errors import ConfigError
from adatp_bench.models.full_size import (
    FULL_SIZE_NAMES,
    build_on_meta,
    config_file,
    load_full_size_config,
    video_path,
)

# Published values. Sources:
# - SigLIP so400m: google/siglip-so400m-patch14-384 config.json (vision and text towers), plus SiglipTextConfig defaults
#   for the fields that file leaves out (vocab 32000, max_position_embeddings 64).
# - Qwen2-7B / Qwen2-0.5B: Qwen/Qwen2-7B-Instruct and Qwen/Qwen2-0.5B-Instruct config.json (docs/flops.md §2 table).
# - LLaVA-OV: transformers LlavaOnevisionConfig defaults and convert_llava_onevision_weights_to_hf.py (vision tower
#   with 26 layers, no head; vocab + 2 added tokens padded to a multiple of 64).
SIGLIP_SO400M_VISION = {
    "hidden_size": 1152,
    "intermediate_size": 4304,
    "num_hidden_layers": 27,
    "num_attention_heads": 16,
    "image_size": 384,
    "patch_size": 14,
    "num_channels": 3,
    "hidden_act": "gelu_pytorch_tanh",
}
SIGLIP_SO400M_TEXT = {
    "hidden_size": 1152,
    "intermediate_size": 4304,
    "num_hidden_layers": 27,
    "num_attention_heads": 16,
    "vocab_size": 32000,
    "max_position_embeddings": 64,
}
QWEN2_7B = {
    "hidden_size": 3584,
    "intermediate_size": 18944,
    "num_hidden_layers": 28,
    "num_attention_heads": 28,
    "num_key_value_heads": 4,
    "vocab_size": 152064,
    "rope_theta": 1_000_000.0,
    "rms_norm_eps": 1e-6,
    "hidden_act": "silu",
    "tie_word_embeddings": False,
}
QWEN2_0_5B = {
    "hidden_size": 896,
    "intermediate_size": 4864,
    "num_hidden_layers": 24,
    "num_attention_heads": 14,
    "num_key_value_heads": 2,
    "vocab_size": 151936,
    "rope_theta": 1_000_000.0,
    "rms_norm_eps": 1e-6,
    "hidden_act": "silu",
    "tie_word_embeddings": True,
}
LLAVA_OV = {
    "image_token_index": 151646,
    "video_token_index": 151647,
    "vision_feature_layer": -1,
    "vision_feature_select_strategy": "full",
    "projector_hidden_act": "gelu",
    "multimodal_projector_bias": True,
    "vision_aspect_ratio": "anyres_max_9",
}
# LLaVA-NeXT drops SigLIP's last layer and its pooling head (docs/upstream.md §6, HF conversion script)
LLAVA_VISION = {**SIGLIP_SO400M_VISION, "num_hidden_layers": 26, "vision_use_head": False}
LLM_OF = {"llava_ov_7b": QWEN2_7B, "llava_video_7b": QWEN2_7B, "llava_ov_0.5b": QWEN2_0_5B}


def _check(cfg, expected: dict) -> None:
    for key, value in expected.items():
        got = cfg.rope_parameters["rope_theta"] if key == "rope_theta" else getattr(cfg, key)
        assert got == value, f"{key}: {got!r} != {value!r}"


def _padded_vocab(vocab: int) -> int:
    # the HF conversion adds <image> and <video> and pads to a multiple of 64
    return -(-(vocab + 2) // 64) * 64


@pytest.mark.parametrize("name", ["llava_ov_0.5b", "llava_ov_7b", "llava_video_7b"])
def test_llava_configs_match_published(name: str) -> None:
    cfg = load_full_size_config(name)
    assert type(cfg).__name__ == "LlavaOnevisionConfig"
    _check(cfg, LLAVA_OV)
    _check(cfg.vision_config, LLAVA_VISION)
    llm = LLM_OF[name]
    _check(cfg.text_config, {k: v for k, v in llm.items() if k != "vocab_size"})
    assert cfg.text_config.vocab_size == _padded_vocab(llm["vocab_size"])
    assert cfg.tie_word_embeddings == llm["tie_word_embeddings"]
    assert len(cfg.image_grid_pinpoints) == 36  # anyres_max_9: 384·{1..6} squared grid


def test_llava_vision_config_equals_transformers_default() -> None:
    from transformers import LlavaOnevisionConfig

    default = LlavaOnevisionConfig().vision_config.to_dict()
    ours = load_full_size_config("llava_ov_7b").vision_config.to_dict()
    for key in (
        "hidden_size",
        "intermediate_size",
        "num_hidden_layers",
        "num_attention_heads",
        "image_size",
        "patch_size",
        "vision_use_head",
    ):
        assert ours[key] == default[key], key


def test_siglip_config_matches_published() -> None:
    cfg = load_full_size_config("siglip_so400m")
    assert type(cfg).__name__ == "SiglipConfig"
    _check(cfg.vision_config, {**SIGLIP_SO400M_VISION, "vision_use_head": True})
    _check(cfg.text_config, SIGLIP_SO400M_TEXT)


def test_every_config_file_documents_its_sources() -> None:
    for name in FULL_SIZE_NAMES:
        data = config_file(name)
        assert data["name"] == name and data["hub_id"] and data["sources"] and data["notes"], name
    assert "num_hidden_layers" in " ".join(config_file("llava_ov_7b")["notes"])


def test_video_paths() -> None:
    ov, vid = video_path("llava_ov_7b"), video_path("llava_video_7b")
    assert (ov.frames, ov.tokens_per_frame, ov.visual_tokens, ov.newline_tokens, ov.paper_video_tokens) == (
        32,
        196,
        6272,
        1,
        6272,
    )
    assert (vid.frames, vid.tokens_per_frame, vid.visual_tokens, vid.newline_tokens, vid.paper_video_tokens) == (
        64,
        169,
        10816,
        832,
        11648,
    )
    assert video_path("llava_ov_0.5b").paper_video_tokens == 6272
    with pytest.raises(ConfigError, match="no video path"):
        video_path("siglip_so400m")


def test_unknown_name() -> None:
    with pytest.raises(ConfigError, match="llava_ov_13b"):
        load_full_size_config("llava_ov_13b")


# ---- parameter counts, computed from the config (not typed in) ------------------------------------------------------


def _qwen2_params(t) -> int:
    d, kv = t.hidden_size, t.num_key_value_heads * (t.hidden_size // t.num_attention_heads)
    attn = (d * d + d) + 2 * (d * kv + kv) + d * d  # q/k/v with bias, o without
    layer = attn + 3 * d * t.intermediate_size + 2 * d  # SwiGLU + two RMSNorms
    embed = t.vocab_size * d
    return embed + t.num_hidden_layers * layer + d + (0 if t.tie_word_embeddings else embed)


def _siglip_layers(h: int, inter: int, layers: int) -> int:
    return layers * (4 * (h * h + h) + (h * inter + inter) + (inter * h + h) + 4 * h)


def _siglip_vision_params(v) -> int:
    h, patches = v.hidden_size, (v.image_size // v.patch_size) ** 2
    n = v.num_channels * v.patch_size**2 * h + h + patches * h  # patch conv + position embedding
    n += _siglip_layers(h, v.intermediate_size, v.num_hidden_layers) + 2 * h  # + post_layernorm
    if v.vision_use_head:  # probe + nn.MultiheadAttention + layernorm + MLP
        n += (
            h
            + (3 * h * h + 3 * h)
            + (h * h + h)
            + 2 * h
            + (h * v.intermediate_size + v.intermediate_size)
            + (v.intermediate_size * h + h)
        )
    return n


def _meta_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("name", ["llava_ov_0.5b", "llava_ov_7b", "llava_video_7b"])
def test_meta_build_parameter_counts(name: str) -> None:
    model = build_on_meta(name)
    assert next(model.parameters()).device.type == "meta"
    cfg = model.config
    t, v = cfg.text_config, cfg.vision_config
    llm = _meta_params(model.model.language_model) + (0 if cfg.tie_word_embeddings else model.lm_head.weight.numel())
    assert llm == _qwen2_params(t)
    assert _meta_params(model.model.vision_tower) == _siglip_vision_params(v)
    projector = (v.hidden_size * t.hidden_size + t.hidden_size) + (t.hidden_size**2 + t.hidden_size)
    assert _meta_params(model.model.multi_modal_projector) == projector
    assert _meta_params(model) == llm + _siglip_vision_params(v) + projector + t.hidden_size  # + image_newline
    # sanity against the published sizes: Qwen2-7B ≈ 7.6 B, Qwen2-0.5B ≈ 0.49 B, SigLIP so400m tower ≈ 0.4 B
    expected_llm = 7.6e9 if t.hidden_size == 3584 else 0.494e9
    assert abs(llm / expected_llm - 1) < 0.01
    assert abs(_siglip_vision_params(v) / 0.4e9 - 1) < 0.01


def test_meta_build_siglip() -> None:
    model = build_on_meta("siglip_so400m")
    cfg = model.config
    v, t = cfg.vision_config, cfg.text_config
    assert _meta_params(model.vision_model) == _siglip_vision_params(v)
    text = t.vocab_size * t.hidden_size + t.max_position_embeddings * t.hidden_size
    text += _siglip_layers(t.hidden_size, t.intermediate_size, t.num_hidden_layers) + 2 * t.hidden_size
    text += t.hidden_size * t.projection_size + t.projection_size  # head on the pooled token
    assert _meta_params(model.text_model) == text
    assert _meta_params(model) == text + _siglip_vision_params(v) + 2  # + logit_scale, logit_bias

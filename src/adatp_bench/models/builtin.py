"""The models built offline from a config with random weights, named by ``source: builtin:<name>``.

- ``builtin:tiny``: the tests' and the demo's model (``models/tiny.py``): SigLIP 2×64 at 126 px, Qwen2 4×64.
- ``builtin:mid``: a mid-size model for CPU benchmarks and sweep timings: SigLIP 4×384 at 224 px (16×16 patches →
  8×8 = 64 tokens per frame) and Qwen2 8×768 with GQA 12/2. Its vision tower costs about as much against its LLM as
  LLaVA-OneVision-7B's does at 25% retention, so a sweep spends its time where a real one does.

Weights are a deterministic function of the seed; the relevance encoder (``builtin:<name>``) is a random SigLIP with
a head and a text tower of the same vision width.
"""

from __future__ import annotations

import torch
from transformers import (
    LlavaOnevisionConfig,
    LlavaOnevisionForConditionalGeneration,
    LlavaOnevisionProcessor,
    PreTrainedTokenizerFast,
    Qwen2Config,
    SiglipModel,
    SiglipVisionConfig,
)

from adatp_bench.errors import ConfigError
from adatp_bench.models.tiny import (
    build_random_siglip,
    build_tiny_config,
    build_tiny_processor,
    build_tiny_siglip,
    build_tiny_tokenizer,
)

MID_IMAGE_SIZE = 224


def mid_config(tokenizer: PreTrainedTokenizerFast) -> LlavaOnevisionConfig:
    """A CPU-sized LLaVA-OneVision: SigLIP 4×384 at 224 px and Qwen2 8×768 (GQA 12/2)."""
    vision = SiglipVisionConfig(
        hidden_size=384,
        intermediate_size=1536,
        num_hidden_layers=4,
        num_attention_heads=6,
        image_size=MID_IMAGE_SIZE,
        patch_size=14,
        vision_use_head=False,
    )
    text = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=768,
        intermediate_size=2048,
        num_hidden_layers=8,
        num_attention_heads=12,
        num_key_value_heads=2,
        max_position_embeddings=8192,
        tie_word_embeddings=False,
        eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"),
    )
    return LlavaOnevisionConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        video_token_index=tokenizer.convert_tokens_to_ids("<video>"),
        vision_feature_select_strategy="full",
        vision_feature_layer=-1,
        image_grid_pinpoints=[[MID_IMAGE_SIZE, MID_IMAGE_SIZE]],
    )


def _image_size(source: str) -> int:
    return {"builtin:tiny": 126, "builtin:mid": MID_IMAGE_SIZE}[source]


def builtin_config(source: str) -> LlavaOnevisionConfig:
    """The architecture of a builtin model."""
    tok = build_tiny_tokenizer()
    if source == "builtin:tiny":
        return build_tiny_config(tok)
    if source == "builtin:mid":
        return mid_config(tok)
    raise ConfigError(f"unknown builtin model {source!r}; known: builtin:tiny, builtin:mid")


def build_builtin(
    source: str, seed: int = 0
) -> tuple[LlavaOnevisionForConditionalGeneration, LlavaOnevisionProcessor]:
    """A builtin model (fp32, eval mode, SDPA) and its processor."""
    cfg = builtin_config(source)
    cfg._attn_implementation = "sdpa"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlavaOnevisionForConditionalGeneration(cfg)
        with torch.no_grad():  # image_newline is created with torch.empty upstream: give it defined values
            model.model.image_newline.normal_(0, 1.0 / cfg.text_config.hidden_size**0.5)
    return model.eval(), build_tiny_processor(build_tiny_tokenizer(), image_size=_image_size(source))


def builtin_relevance(source: str) -> tuple[SiglipModel, PreTrainedTokenizerFast]:
    """The random SigLIP relevance encoder that goes with a builtin model."""
    if source == "builtin:tiny":
        return build_tiny_siglip(), build_tiny_tokenizer()
    return build_random_siglip(builtin_config(source).vision_config, text_layers=4), build_tiny_tokenizer()

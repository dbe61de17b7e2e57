"""Offline tiny Qwen2.5-VL: random weights from a config, a byte-level tokenizer, Qwen's chat template, a processor.

``model=tiny_qwen2_5_vl`` (tests, demo). Nothing is downloaded. The tiny model keeps the real architecture
(Qwen2.5-VL report, arXiv 2502.13923 §2.1; Qwen2-VL paper, arXiv 2409.12191 §2.1):

- ViT with 2-frame 3-D patches (14 px, temporal patch 2), 2-D rotary embeddings, window attention in every block but
  the last (``fullatt_block_indexes=[1]``; window 112 px = 4×4 merged tokens) → RMSNorm + 2-layer MLP merger of each
  2×2 patch group (the "2×2 spatial merge");
- Qwen2.5 decoder with GQA and M-RoPE (``mrope_section`` [2, 3, 3] of a 16-wide head, as [16, 24, 24] of 128).

Dynamic resolution is kept: the video processor's ``smart_resize`` (min/max pixels) picks the patch grid from the
frames' size (48×64 test frames → 112×140 px → 8×10 patches → 4×5 merged tokens per temporal patch).
"""

from __future__ import annotations

import torch
from transformers import (
    PreTrainedTokenizerFast,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
)

from adatp_bench.models.tiny import byte_tokenizer

TINY_QWEN_SOURCE = "builtin:tiny_qwen2_5_vl"
#: smart_resize bounds of the tiny processor (multiples of 28 = patch 14 × merge 2).
TINY_QWEN_MIN_PIXELS = 112 * 112
TINY_QWEN_MAX_PIXELS = 112 * 168
QWEN_SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
]

# The structure of Qwen2.5-VL-Instruct's chat template for one video and one text part: a system turn (Qwen's default
# "You are a helpful assistant." unless given), the video as <|vision_start|><|video_pad|><|vision_end|>, then the text.
QWEN_CHAT_TEMPLATE = (
    "{% if messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{% endif %}"
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{% for content in message['content'] %}"
    "{% if content['type'] == 'video' %}{{ '<|vision_start|><|video_pad|><|vision_end|>' }}"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}"
    "{% endfor %}{{ '<|im_end|>\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def build_tiny_qwen_tokenizer() -> PreTrainedTokenizerFast:
    """Byte-level BPE (256 byte symbols, no merges) plus Qwen's chat and vision special tokens."""
    extra = [t for t in QWEN_SPECIAL_TOKENS if t not in ("<|endoftext|>", "<|im_end|>")]
    return byte_tokenizer(extra, QWEN_CHAT_TEMPLATE)


def build_tiny_qwen_config(tokenizer: PreTrainedTokenizerFast | None = None, num_layers: int = 4) -> Qwen2_5_VLConfig:
    """Qwen2.5-VL config: ViT 2×32 (window attention in block 0) and a ``num_layers`` × 64 decoder (GQA 4/2)."""
    tok = tokenizer or build_tiny_qwen_tokenizer()
    ids = {t: tok.convert_tokens_to_ids(t) for t in QWEN_SPECIAL_TOKENS}
    vision = {
        "depth": 2,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_heads": 2,
        "out_hidden_size": 64,
        "patch_size": 14,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "window_size": 112,
        "fullatt_block_indexes": [1],
        "tokens_per_second": 2,  # as Qwen2.5-VL-3B/7B: temporal ids advance 2 per second of video
    }
    text = {
        "vocab_size": len(tok),
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": num_layers,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 4096,
        "rope_parameters": {"rope_type": "default", "rope_theta": 1_000_000.0, "mrope_section": [2, 3, 3]},
        "tie_word_embeddings": False,
        "bos_token_id": None,
        "eos_token_id": ids["<|im_end|>"],
        "pad_token_id": ids["<|endoftext|>"],
    }
    return Qwen2_5_VLConfig(
        vision_config=vision,
        text_config=text,
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=False,
    )


def build_tiny_qwen_processor(tokenizer: PreTrainedTokenizerFast | None = None):
    """Qwen2.5-VL processor for the tiny model (Qwen2-VL image/video processors, tiny pixel bounds); no files."""
    from transformers import Qwen2_5_VLProcessor, Qwen2VLImageProcessor
    from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

    tok = tokenizer or build_tiny_qwen_tokenizer()
    bounds = {"min_pixels": TINY_QWEN_MIN_PIXELS, "max_pixels": TINY_QWEN_MAX_PIXELS}
    return Qwen2_5_VLProcessor(
        image_processor=Qwen2VLImageProcessor(**bounds),
        tokenizer=tok,
        video_processor=Qwen2VLVideoProcessor(**bounds, cap_pixels_per_frame=False),
        chat_template=QWEN_CHAT_TEMPLATE,
    )


def build_tiny_qwen(seed: int = 0, num_layers: int = 4) -> tuple[Qwen2_5_VLForConditionalGeneration, object]:
    """Random tiny Qwen2.5-VL (fp32, eval, SDPA) and its processor; identical weights for identical seeds."""
    tok = build_tiny_qwen_tokenizer()
    cfg = build_tiny_qwen_config(tok, num_layers=num_layers)
    cfg._attn_implementation = "sdpa"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen2_5_VLForConditionalGeneration(cfg)
    return model.eval(), build_tiny_qwen_processor(tok)

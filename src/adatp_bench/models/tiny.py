"""Offline tiny LLaVA-OneVision: random weights from a config, a byte-level tokenizer, a chat template, a processor.

Used by every test and by ``make demo``. Nothing is downloaded (docs/upstream.md §10). The tiny model keeps the real
architecture (SigLIP tower → 2-layer GELU projector → pooling → Qwen2 with GQA), only smaller:

- SigLIP: hidden 64, 2 layers, 4 heads, 126 px, patch 14 → 9×9 = 81 patches per frame. An odd grid makes the two
  pooling rules differ exactly as at full size (27→14 bilinear/ceil vs 27→13 average/floor): 9→5 vs 9→4.
- Qwen2: hidden 64, FFN 128, 4 layers, 4 query heads, 2 KV heads (GQA as in Qwen2-0.5B/7B).

The weights are a deterministic function of ``seed``: two builds give identical tensors.
"""

from __future__ import annotations

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import (
    LlavaOnevisionConfig,
    LlavaOnevisionForConditionalGeneration,
    LlavaOnevisionProcessor,
    PreTrainedTokenizerFast,
    Qwen2Config,
    SiglipConfig,
    SiglipModel,
    SiglipTextConfig,
    SiglipVisionConfig,
)
from transformers.convert_slow_tokenizer import bytes_to_unicode

TINY_IMAGE_SIZE = 126
TINY_PATCH_SIZE = 14
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>", "<video>"]

# Same structure as the llava-hf OneVision chat template: "<|im_start|>user <video>\n\n{text}<|im_end|>..."; a system
# turn is rendered when given (LLaVA-Video's qwen_1_5 convention uses one).
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}"
    "{{ '<|im_start|>system\\n' + message['content'][0]['text'] + '<|im_end|>\\n' }}"
    "{% else %}{{ '<|im_start|>' + message['role'] + ' ' }}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'video') %}{{ '<video>\\n' }}{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ '\\n' + content['text'] }}"
    "{% endfor %}{{ '<|im_end|>\\n' }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def byte_tokenizer(special_tokens: list[str], chat_template: str) -> PreTrainedTokenizerFast:
    """Byte-level BPE with the 256 GPT-2 byte symbols and no merges (any UTF-8 text round-trips), eos
    ``<|im_end|>``, pad ``<|endoftext|>`` and ``special_tokens`` as the additional special tokens."""
    vocab = {sym: i for i, sym in enumerate(bytes_to_unicode().values())}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=list(special_tokens),
        model_input_names=["input_ids", "attention_mask"],  # no token_type_ids (breaks generate on 4.57)
    )
    tok.chat_template = chat_template
    return tok


def build_tiny_tokenizer() -> PreTrainedTokenizerFast:
    """The tiny LLaVA-OneVision's tokenizer: :func:`byte_tokenizer` with its special tokens and chat template."""
    return byte_tokenizer(SPECIAL_TOKENS[1:], CHAT_TEMPLATE)


def build_tiny_config(tokenizer: PreTrainedTokenizerFast, num_layers: int = 4) -> LlavaOnevisionConfig:
    """LLaVA-OneVision config with a 2-layer SigLIP and a ``num_layers`` Qwen2 (GQA 4/2)."""
    vision = SiglipVisionConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=TINY_IMAGE_SIZE,
        patch_size=TINY_PATCH_SIZE,
        vision_use_head=False,  # as in the HF OneVision checkpoints; the MAP head lives in the relevance encoder
    )
    text = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        tie_word_embeddings=False,
        eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"),
    )
    side = TINY_IMAGE_SIZE
    return LlavaOnevisionConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        video_token_index=tokenizer.convert_tokens_to_ids("<video>"),
        vision_feature_select_strategy="full",
        vision_feature_layer=-1,
        image_grid_pinpoints=[[side, side], [side, 2 * side], [2 * side, side], [2 * side, 2 * side]],
    )


def build_tiny_model(seed: int = 0, num_layers: int = 4) -> LlavaOnevisionForConditionalGeneration:
    """Random tiny LLaVA-OneVision in fp32, eval mode, SDPA attention; identical weights for identical seeds."""
    tok = build_tiny_tokenizer()
    cfg = build_tiny_config(tok, num_layers=num_layers)
    cfg._attn_implementation = "sdpa"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlavaOnevisionForConditionalGeneration(cfg)
        # image_newline is created with torch.empty upstream; give it defined values.
        with torch.no_grad():
            model.model.image_newline.normal_(0, 1.0 / cfg.text_config.hidden_size**0.5)
    return model.eval()


def build_tiny_processor(
    tokenizer: PreTrainedTokenizerFast | None = None, image_size: int = TINY_IMAGE_SIZE
) -> LlavaOnevisionProcessor:
    """Processor for the tiny model (SigLIP normalisation, ``image_size`` px); no files needed."""
    from transformers import LlavaOnevisionImageProcessor, LlavaOnevisionVideoProcessor

    tok = tokenizer or build_tiny_tokenizer()
    size = {"height": image_size, "width": image_size}
    side = image_size
    pinpoints = [[side, side], [side, 2 * side], [2 * side, side], [2 * side, 2 * side]]
    return LlavaOnevisionProcessor(
        image_processor=LlavaOnevisionImageProcessor(size=size, image_grid_pinpoints=pinpoints),
        tokenizer=tok,
        video_processor=LlavaOnevisionVideoProcessor(size=size),
        num_image_tokens=(image_size // TINY_PATCH_SIZE) ** 2,
        vision_feature_select_strategy="full",
        chat_template=CHAT_TEMPLATE,
    )


def build_random_siglip(vision: SiglipVisionConfig, text_layers: int = 2, seed: int = 1) -> SiglipModel:
    """Random SigLIP (MAP head + text tower) for a vision tower of the given config; text width = vision width.

    Its text tower reads the byte-level token ids of :func:`build_tiny_tokenizer`. Used as a stand-in for
    ``google/siglip-so400m-patch14-384`` wherever no weights exist (tests, benchmarks with random weights).
    """
    tok = build_tiny_tokenizer()
    width = vision.hidden_size
    text = SiglipTextConfig(
        vocab_size=len(tok),
        hidden_size=width,
        intermediate_size=2 * width,
        num_hidden_layers=text_layers,
        num_attention_heads=vision.num_attention_heads,
        max_position_embeddings=64,
        projection_size=width,
        pad_token_id=tok.pad_token_id,
    )
    vision_cfg = vision.to_dict() | {"vision_use_head": True}
    cfg = SiglipConfig(text_config=text.to_dict(), vision_config=vision_cfg)
    cfg._attn_implementation = "sdpa"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = SiglipModel(cfg)
    return model.eval()


def build_tiny_siglip(seed: int = 1) -> SiglipModel:
    """Tiny SigLIP whose vision width matches the tiny LLaVA's vision tower (the tests' relevance encoder)."""
    vision = SiglipVisionConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=TINY_IMAGE_SIZE,
        patch_size=TINY_PATCH_SIZE,
    )
    return build_random_siglip(vision, seed=seed)

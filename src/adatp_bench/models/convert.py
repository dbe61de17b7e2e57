"""Convert a LLaVA-NeXT checkpoint (``lmms-lab/LLaVA-Video-7B-Qwen2``) into the transformers LLaVA-OneVision format.

    python -m adatp_bench.models.convert --src /ckpt/LLaVA-Video-7B-Qwen2 --dst checkpoints/llava-video-7b-qwen2-hf

LLaVA-Video-7B ships for the LLaVA-NeXT codebase (``LlavaQwenForCausalLM``), not for transformers (docs/upstream.md §7).
Its modules are exactly LLaVA-OneVision's — SigLIP so400m trunk (LLaVA-NeXT deletes SigLIP's last layer and its head, so
the checkpoint holds 26 layers and the features are ``hidden_states[-1]``), a 2-layer GELU projector, an
``image_newline`` vector and Qwen2-7B — so the weights map one to one:

| LLaVA-NeXT name | transformers LLaVA-OneVision name |
|---|---|
| ``model.embed_tokens``, ``model.layers.*``, ``model.norm`` | ``model.language_model.*`` |
| ``lm_head`` | ``lm_head`` |
| ``model.mm_projector.0`` / ``.2`` | ``model.multi_modal_projector.linear_1`` / ``linear_2`` |
| ``model.image_newline`` | ``model.image_newline`` |
| ``model.vision_tower.vision_tower.vision_model.*`` | ``model.vision_tower.*`` |

What differs is the *video path*, which transformers' OneVision code does not implement: 2×2 average pooling to 13×13
and one newline per row. That lives in our adapter (``model=llava_video_7b``; ``models/specs.py``), not in the weights.

The tokenizer gains the ``<image>`` and ``<video>`` placeholder tokens (LLaVA-NeXT uses the index -200 instead); their
embedding rows are initialised to the mean embedding, as transformers' own OneVision conversion does, and are never
looked up (the placeholder is replaced by visual features). The chat template is LLaVA-NeXT's ``qwen_1_5`` conversation
("You are a helpful assistant." system turn), which lmms-eval's ``llava_vid`` model uses for LLaVA-Video.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import torch
from safetensors.torch import load_file

from adatp_bench.errors import ModelLoadError

# LLaVA-NeXT conv_templates["qwen_1_5"]: "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n
# <image>\n{question}<|im_end|>\n<|im_start|>assistant\n" — the visual placeholder first, then a newline and the text.
QWEN_1_5_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'video') %}{{ '<video>\\n' }}{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ content['text'] }}{% endfor %}"
    "{{ '<|im_end|>\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
NEXT_ARCHITECTURES = {"LlavaQwenForCausalLM", "LlavaQwenMoeForCausalLM"}
_RULES: list[tuple[re.Pattern[str], str]] = [
    (
        re.compile(r"^model\.vision_tower\.vision_tower\.vision_model\.(embeddings|encoder|post_layernorm)\."),
        r"model.vision_tower.\1.",
    ),
    (re.compile(r"^model\.mm_projector\.0\."), "model.multi_modal_projector.linear_1."),
    (re.compile(r"^model\.mm_projector\.2\."), "model.multi_modal_projector.linear_2."),
    (re.compile(r"^model\.image_newline$"), "model.image_newline"),
    (re.compile(r"^model\.(embed_tokens|layers|norm)\b"), r"model.language_model.\1"),
    (re.compile(r"^lm_head\."), "lm_head."),
]
_DROPPED = re.compile(r"^model\.vision_tower\.vision_tower\.vision_model\.head\.|rotary_emb\.inv_freq$")


def map_key(name: str) -> str | None:
    """Target name of a LLaVA-NeXT weight; None for weights the HF model does not have (SigLIP head, RoPE buffers)."""
    if _DROPPED.search(name):
        return None
    for pattern, repl in _RULES:
        if pattern.search(name):
            return pattern.sub(repl, name)
    raise ModelLoadError(f"unexpected weight {name!r}: not a LLaVA-NeXT Qwen checkpoint this converter knows")


def read_next_checkpoint(src: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """Config and state dict of a LLaVA-NeXT checkpoint directory (single file or sharded safetensors)."""
    cfg_path = src / "config.json"
    if not cfg_path.exists():
        raise ModelLoadError(f"{src} has no config.json")
    config = json.loads(cfg_path.read_text())
    archs = set(config.get("architectures") or [])
    if not archs & NEXT_ARCHITECTURES:
        raise ModelLoadError(
            f"{src} is a {sorted(archs) or config.get('model_type')} checkpoint, not LLaVA-NeXT Qwen "
            f"({sorted(NEXT_ARCHITECTURES)})"
        )
    files = sorted(src.glob("*.safetensors"))
    if not files:
        raise ModelLoadError(f"{src} holds no *.safetensors weights")
    state: dict[str, torch.Tensor] = {}
    for file in files:
        state.update(load_file(str(file)))
    return config, state


def vision_config_for(next_config: dict, state: dict[str, torch.Tensor], vision_config: Path | None):
    """SigLIP vision config matching the checkpoint's tower (layer count and widths read from the weights)."""
    from transformers import SiglipVisionConfig

    if vision_config is not None:
        raw = json.loads(vision_config.read_text())
        base = SiglipVisionConfig(**raw.get("vision_config", raw))
    else:
        from adatp_bench.models.full_size import load_full_size_config

        base = load_full_size_config(
            "siglip_so400m"
        ).vision_config  # offline copy of google/siglip-so400m-patch14-384
    prefix = "model.vision_tower.vision_tower.vision_model."
    layers = {int(m.group(1)) for k in state if (m := re.match(re.escape(prefix) + r"encoder\.layers\.(\d+)\.", k))}
    patch = state[prefix + "embeddings.patch_embedding.weight"]
    fc1 = state[prefix + "encoder.layers.0.mlp.fc1.weight"]
    cfg = base.to_dict()
    cfg.update(
        hidden_size=patch.shape[0],
        patch_size=patch.shape[-1],
        num_hidden_layers=len(layers),  # LLaVA-NeXT removed SigLIP's last layer: use what is there
        intermediate_size=fc1.shape[0],
        vision_use_head=False,
    )
    side = round(state[prefix + "embeddings.position_embedding.weight"].shape[0] ** 0.5)
    if cfg["image_size"] // cfg["patch_size"] != side:
        cfg["image_size"] = side * cfg["patch_size"]
    if cfg["hidden_size"] % cfg["num_attention_heads"]:
        raise ModelLoadError(
            f"vision width {cfg['hidden_size']} is not divisible by {cfg['num_attention_heads']} heads; "
            "pass --vision-config with the tower's config.json"
        )
    return SiglipVisionConfig(**{k: v for k, v in cfg.items() if k not in {"model_type", "transformers_version"}})


def convert(src: Path, dst: Path, vision_config: Path | None = None, dtype: str = "bfloat16") -> Path:
    """Convert ``src`` (LLaVA-NeXT) into an HF LLaVA-OneVision checkpoint with processor at ``dst``."""
    from transformers import (
        AutoTokenizer,
        LlavaOnevisionConfig,
        LlavaOnevisionForConditionalGeneration,
        LlavaOnevisionImageProcessor,
        LlavaOnevisionProcessor,
        LlavaOnevisionVideoProcessor,
        Qwen2Config,
    )

    next_config, state = read_next_checkpoint(src)
    tokenizer = AutoTokenizer.from_pretrained(src)
    added = tokenizer.add_special_tokens({"additional_special_tokens": ["<image>", "<video>"]})
    vision = vision_config_for(next_config, state, vision_config)
    text_keys = (
        "vocab_size",
        "hidden_size",
        "intermediate_size",
        "num_hidden_layers",
        "num_attention_heads",
        "num_key_value_heads",
        "rms_norm_eps",
        "rope_theta",
        "max_position_embeddings",
        "hidden_act",
        "tie_word_embeddings",
        "sliding_window",
        "use_sliding_window",
        "max_window_layers",
        "bos_token_id",
        "eos_token_id",
    )
    text = Qwen2Config(**{k: next_config[k] for k in text_keys if k in next_config})
    side = vision.image_size
    config = LlavaOnevisionConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        video_token_index=tokenizer.convert_tokens_to_ids("<video>"),
        vision_feature_select_strategy="full",  # SigLIP has no CLS token; NeXT's mm_vision_select_feature="patch"
        vision_feature_layer=-1,  # the last of the kept (26) layers, = NeXT's hidden_states[-1]
        image_grid_pinpoints=next_config.get("image_grid_pinpoints") or [[side, side]],
        projector_hidden_act="gelu",
    )
    mapped = {}
    for name, tensor in state.items():
        target = map_key(name)
        if target is not None:
            mapped[target] = tensor
    with torch.device("meta"):
        model = LlavaOnevisionForConditionalGeneration(config)
    expected = set(model.state_dict())
    if text.tie_word_embeddings:
        expected.discard("lm_head.weight")
    missing, unexpected = sorted(expected - set(mapped)), sorted(set(mapped) - expected)
    if missing or unexpected:
        raise ModelLoadError(
            f"weights do not fit LLaVA-OneVision: missing {missing[:8]}, unexpected {unexpected[:8]}"
        )
    model.load_state_dict(mapped, strict=False, assign=True)
    if text.tie_word_embeddings:
        model.tie_weights()
    if added:  # new placeholder rows: mean embedding (never looked up; the placeholder is replaced by features)
        old = model.get_input_embeddings().weight.shape[0]
        model.resize_token_embeddings(max(old, len(tokenizer)), pad_to_multiple_of=64, mean_resizing=True)
    model = model.to(getattr(torch, dtype))
    dst.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(dst)
    size = {"height": vision.image_size, "width": vision.image_size}
    siglip_norm = {"image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]}
    processor = LlavaOnevisionProcessor(
        image_processor=LlavaOnevisionImageProcessor(
            size=size, image_grid_pinpoints=config.image_grid_pinpoints, **siglip_norm
        ),
        tokenizer=tokenizer,
        video_processor=LlavaOnevisionVideoProcessor(size=size, **siglip_norm),
        num_image_tokens=(vision.image_size // vision.patch_size) ** 2,
        vision_feature_select_strategy="full",
        chat_template=QWEN_1_5_TEMPLATE,
    )
    processor.save_pretrained(dst)
    (dst / "adatp_bench_conversion.json").write_text(
        json.dumps(
            {
                "source": str(src),
                "source_architectures": next_config.get("architectures"),
                "mm_spatial_pool_mode": next_config.get("mm_spatial_pool_mode"),
                "mm_newline_position": next_config.get("mm_newline_position"),
                "note": "use with model=llava_video_7b model.source=<this dir> (average pooling, per-row newlines)",
            },
            indent=2,
        )
    )
    return dst


def main(argv: list[str] | None = None) -> None:
    """CLI entry point."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--src", type=Path, required=True, help="LLaVA-NeXT checkpoint directory")
    parser.add_argument("--dst", type=Path, required=True, help="output directory (transformers format)")
    parser.add_argument(
        "--vision-config", type=Path, default=None, help="SigLIP config.json (default: the shipped so400m config)"
    )
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    args = parser.parse_args(argv)
    out = convert(args.src, args.dst, args.vision_config, args.dtype)
    print(f"converted {args.src} -> {out}")


if __name__ == "__main__":
    main()

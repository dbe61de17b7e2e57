"""Model layer: equivalence with stock transformers, LLaVA-Video layout, checkpoint conversion, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from adatp_bench.core.layout import VideoLayout, VisualTokens
from adatp_bench.errors import ConfigError, ModelLoadError
from adatp_bench.models.adapter import VideoLLM
from adatp_bench.models.sequence import video_block
from adatp_bench.models.specs import get_spec
from adatp_bench.models.tiny import build_tiny_config, build_tiny_model, build_tiny_tokenizer

QUESTION = "What happens at the end?\nA. a cut\nB. nothing"


def test_unpruned_logits_equal_stock_transformers(tiny_llm: VideoLLM, scene_frames: np.ndarray) -> None:
    """Our sequence assembly + decoder loop == LlavaOnevisionForConditionalGeneration.forward, exactly (fp32)."""
    ours = tiny_llm.prompt_logits(scene_frames, QUESTION)
    inputs = tiny_llm.processor(text=tiny_llm.prompt(QUESTION), videos=[scene_frames], return_tensors="pt")
    with torch.no_grad():
        stock = tiny_llm.model(**inputs).logits[0]
    assert ours.shape == stock.shape
    assert torch.equal(ours, stock)


def test_onevision_layout(tiny_llm: VideoLLM) -> None:
    ids = tiny_llm.prompt_ids(QUESTION)
    lay = tiny_llm.layout(ids, 8)
    assert (lay.grid_h, lay.tokens_per_frame, lay.num_newlines, lay.video_len) == (5, 25, 1, 201)
    assert lay.newline_positions().tolist() == [lay.video_start + 200]
    assert lay.seq_len == ids.shape[1] - 1 + 201


def test_llava_video_layout_counts(tiny_video_llm: VideoLLM) -> None:
    lay = tiny_video_llm.layout(tiny_video_llm.prompt_ids(QUESTION), 8)
    # 9×9 patches → 2×2 average pool → 4×4 = 16 tokens, + a newline per row → 20 positions per frame
    assert (lay.grid_h, lay.tokens_per_frame, lay.num_newlines, lay.video_len) == (4, 16, 32, 160)
    full = get_spec("llava_video_7b")
    assert full.pooled_side(27) ** 2 == 169 and full.num_frames * 13 * 14 == 11648  # docs/upstream.md §7


def _next_grid_reference(feats: torch.Tensor, newline: torch.Tensor) -> torch.Tensor:
    """LLaVA-NeXT's definition, written independently: get_2dPool("average") then the "grid" newline layout.

    llava_arch.get_2dPool: view (F, h, w, C) → permute to NCHW → avg_pool2d(2) → back to (F, h·w, C).
    "grid": reshape (F, h', w', C), append image_newline as one more column, flatten frames.
    """
    f, p, c = feats.shape
    s = int(p**0.5)
    x = feats.view(f, s, s, c).permute(0, 3, 1, 2)
    x = torch.nn.functional.avg_pool2d(x, 2).permute(0, 2, 3, 1)  # (F, h', w', C)
    col = newline.view(1, 1, 1, c).expand(f, x.shape[1], 1, c)
    return torch.cat([x, col], dim=2).reshape(-1, c)


def test_llava_video_pooling_and_newlines_match_llava_next(tiny_video_llm: VideoLLM) -> None:
    torch.manual_seed(0)
    feats = torch.randn(3, 81, 6)  # hand-made post-projector features: 3 frames of 9×9 patches
    newline = torch.randn(6)
    grid = tiny_video_llm.pool(feats)
    lay = VideoLayout(video_start=0, num_frames=3, grid_h=4, grid_w=4, newline_layout="per_row", seq_len=60)
    ours, kind, *_ = video_block(VisualTokens.from_grid(grid), lay, newline, policy="all")
    assert torch.allclose(ours, _next_grid_reference(feats, newline), atol=1e-6)
    assert kind.tolist() == ([1] * 4 + [2]) * 12


def test_onevision_pooling_matches_transformers(tiny_llm: VideoLLM) -> None:
    feats = torch.randn(2, 81, 64)
    assert torch.equal(tiny_llm.pool(feats).reshape(2, 25, 64), tiny_llm.model.model.apply_pooling(feats))


# -- checkpoint conversion (LLaVA-NeXT → transformers) --------------------------------------------------------
def _write_next_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    """A tiny random checkpoint in LLaVA-NeXT naming (LlavaQwenForCausalLM), as lmms-lab ships LLaVA-Video."""
    hf = build_tiny_model(seed=3)
    tok = build_tiny_tokenizer()
    next_names = {
        "model.vision_tower.": "model.vision_tower.vision_tower.vision_model.",
        "model.multi_modal_projector.linear_1.": "model.mm_projector.0.",
        "model.multi_modal_projector.linear_2.": "model.mm_projector.2.",
        "model.language_model.": "model.",
    }
    state = {}
    for name, tensor in hf.state_dict().items():
        for old, new in next_names.items():
            if name.startswith(old):
                name = new + name[len(old) :]
                break
        state[name] = tensor.clone().contiguous()
    state["model.vision_tower.vision_tower.vision_model.head.probe"] = torch.zeros(1, 1, 64)  # deleted in NeXT
    path.mkdir(parents=True)
    save_file(state, str(path / "model.safetensors"))
    text = hf.config.text_config.to_dict()
    cfg = {
        k: text[k]
        for k in (
            "vocab_size",
            "hidden_size",
            "intermediate_size",
            "num_hidden_layers",
            "num_attention_heads",
            "num_key_value_heads",
            "rms_norm_eps",
            "max_position_embeddings",
            "tie_word_embeddings",
        )
    }
    cfg["rope_theta"] = text["rope_parameters"]["rope_theta"]  # NeXT configs carry the legacy flat key
    cfg.update(
        architectures=["LlavaQwenForCausalLM"],
        model_type="llava",
        mm_projector_type="mlp2x_gelu",
        mm_vision_tower="google/siglip-so400m-patch14-384",
        mm_spatial_pool_mode="average",
        mm_newline_position="grid",
        mm_vision_select_layer=-2,
    )
    (path / "config.json").write_text(json.dumps(cfg))
    tok.save_pretrained(path)
    vis = hf.config.vision_config.to_dict()
    (path / "siglip_config.json").write_text(json.dumps(vis))
    return hf.state_dict()


def test_convert_llava_next_checkpoint_and_run(tmp_path: Path, scene_frames: np.ndarray) -> None:
    from adatp_bench.models.convert import convert

    src, dst = tmp_path / "next", tmp_path / "hf"
    original = _write_next_checkpoint(src)
    convert(src, dst, vision_config=src / "siglip_config.json", dtype="float32")
    llm = VideoLLM.from_spec("llava_video_7b", source=str(dst), dtype="float32", device="cpu")
    converted = llm.model.state_dict()
    for name, tensor in original.items():
        got = converted[name]
        if name.endswith("embed_tokens.weight") or name == "lm_head.weight":
            got = got[: tensor.shape[0]]  # placeholder rows may have been appended
        assert torch.equal(got, tensor), name
    out = llm.generate(scene_frames, QUESTION, max_new_tokens=3)
    assert out.video_tokens_per_layer[0] == 8 * (16 + 4)  # LLaVA-Video layout from the converted weights
    assert llm.prompt(QUESTION).startswith("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n")


def test_convert_rejects_other_architectures(tmp_path: Path) -> None:
    from adatp_bench.models.convert import convert

    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"]}))
    with pytest.raises(ModelLoadError, match="not LLaVA-NeXT"):
        convert(tmp_path / "x", tmp_path / "y")


# -- bad input ----------------------------------------------------------------------------------------------
def test_unknown_model_lists_valid_ones() -> None:
    with pytest.raises(ConfigError, match=r"valid models: .*llava_ov_7b"):
        VideoLLM.from_spec("llava_13b")


def test_local_path_without_weights(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ModelLoadError, match="no weights"):
        VideoLLM.from_spec("llava_ov_7b", source=str(tmp_path))


def test_checkpoint_of_wrong_architecture(tmp_path: Path) -> None:
    from transformers import Qwen2Config, Qwen2ForCausalLM

    Qwen2ForCausalLM(
        Qwen2Config(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=1,
            vocab_size=64,
        )
    ).save_pretrained(tmp_path)
    with pytest.raises(ModelLoadError, match=r"'qwen2' checkpoint, expected 'llava_onevision'"):
        VideoLLM.from_spec("llava_ov_7b", source=str(tmp_path))


def test_unreachable_hub_id_names_the_fix() -> None:
    with pytest.raises(ModelLoadError, match="huggingface-cli download"):
        VideoLLM.from_spec("llava_ov_0.5b")  # HF_HUB_OFFLINE=1 in tests: nothing can be fetched


def test_wrong_frame_shape(tiny_llm: VideoLLM) -> None:
    with pytest.raises(ValueError, match=r"\(F, H, W, 3\)"):
        tiny_llm.generate(np.zeros((8, 32, 32), dtype=np.uint8), QUESTION)


def test_tiny_build_is_deterministic_and_offline() -> None:
    a, b = build_tiny_model(seed=5), build_tiny_model(seed=5)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))
    assert build_tiny_config(build_tiny_tokenizer()).text_config.num_key_value_heads == 2


def test_relevance_encoder_shapes(tiny_llm: VideoLLM, scene_frames: np.ndarray) -> None:
    enc = tiny_llm.ensure_relevance_encoder()
    pv = tiny_llm.pixel_values(scene_frames)
    _, hidden, _ = tiny_llm.encode_video(pv)
    global_feats, attn = enc.pool_frames(hidden)
    assert global_feats.shape == (8, 64) and attn.shape == (8, 81)
    assert torch.allclose(attn.sum(-1), torch.ones(8), atol=1e-5)
    # The MAP head applied here equals SigLIP's own head on the same (post-layernorm) features.
    want = enc.head(enc.post_layernorm(hidden))
    assert torch.allclose(global_feats, want, atol=1e-5)
    q = enc.embed_text("a red ball")
    assert q.shape == (64,)
    assert enc.elapsed_ms > 0


def test_full_frame_rows_newline_policy() -> None:
    """Whole frames keep every row newline, partly kept frames one, empty frames none (DyCoke in FastVID Table 2)."""
    lay = VideoLayout(video_start=0, num_frames=3, grid_h=2, grid_w=2, newline_layout="per_row", seq_len=0)
    grid = VisualTokens.from_grid(torch.randn(3, 2, 2, 4))
    kept = grid.select(torch.tensor([0, 1, 2, 3, 5]))  # frame 0 whole, frame 1 one token, frame 2 nothing
    _, kind, frame, row, _ = video_block(kept, lay, torch.zeros(4), policy="full_frame_rows")
    newlines = [(int(f), int(r)) for f, r, k in zip(frame, row, kind, strict=True) if k == 2]
    assert newlines == [(0, 0), (0, 1), (1, 1)]
    assert kind.tolist() == [1, 1, 2, 1, 1, 2, 1, 2]


def test_greedy_decode_equals_stock_generate(tiny_llm: VideoLLM, scene_frames: np.ndarray) -> None:
    """Our prefill + decode loop produces the same tokens as transformers' generate() (no pruning, fp32)."""
    out = tiny_llm.generate(scene_frames, QUESTION, max_new_tokens=12)
    inputs = tiny_llm.processor(text=tiny_llm.prompt(QUESTION), videos=[scene_frames], return_tensors="pt")
    with torch.no_grad():
        ref = tiny_llm.model.generate(**inputs, max_new_tokens=12, do_sample=False)
    ref_ids = ref[0, inputs["input_ids"].shape[1] :].tolist()
    stops = tiny_llm.stop_token_ids
    ref_ids = ref_ids[: next((i for i, t in enumerate(ref_ids) if t in stops), len(ref_ids))]
    assert out.text == tiny_llm.tokenizer.decode(ref_ids, skip_special_tokens=True)
    assert out.output_tokens == len(ref_ids)


def test_decode_positions_after_in_llm_pruning(tiny_llm: VideoLLM, scene_frames: np.ndarray) -> None:
    """Original positions (FastV): every layer decodes on from the unpruned length. Renumbered (PDrop): a pruned layer
    continues at its own shorter length, upstream's "shift by the number dropped"."""
    from adatp_bench.config import method_defaults
    from adatp_bench.pruning import build_method

    full = tiny_llm.layout(tiny_llm.prompt_ids(QUESTION), 8).seq_len
    for name, renumbered in (("fastv", False), ("pdrop", True)):
        with build_method(name, **method_defaults(name))(tiny_llm):
            state, ctx, _, _ = tiny_llm.prepare(scene_frames, QUESTION)
            result = tiny_llm.runner.prefill(state, tiny_llm.method, ctx)
        lengths = [v + result.text_tokens for v in result.video_tokens_per_layer]
        assert result.next_position[0] == full
        if renumbered:
            assert result.next_position == lengths and lengths[-1] < full
        else:
            assert result.next_position == [full] * tiny_llm.num_layers and lengths[-1] < full

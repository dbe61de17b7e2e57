"""Qwen2.5-VL through the project's adapter (models/qwen_vl.py): equal to transformers' own generate when nothing is
pruned, every surviving token keeps its original 3-D M-RoPE ids, dynamic resolution, refused methods, loading, and the
full-size configs (Qwen2-VL paper arXiv 2409.12191 §2.1; Qwen2.5-VL report arXiv 2502.13923 §2.1)."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import numpy as np
import pytest
import torch

import adatp_bench.models.llm as llm_mod
from adatp_bench.config import method_defaults
from adatp_bench.core.layout import VisualTokens
from adatp_bench.core.sequence import TEXT, VISUAL, SequenceState
from adatp_bench.errors import ConfigError, ModelLoadError
from adatp_bench.models.adapter import VideoLLM
from adatp_bench.models.dims import model_dims, unreachable_reason
from adatp_bench.models.loading import load_model
from adatp_bench.models.qwen_vl import NOT_APPLICABLE, QwenVideoLLM
from adatp_bench.models.specs import QwenVLSpec, get_spec
from adatp_bench.pruning import build_method, method_names
from adatp_bench.pruning.base import PruningMethod

QUESTION = "Which scene comes first?\nA. red\nB. blue\nC. green\nD. none"


def make(name: str, **overrides: Any) -> PruningMethod:
    return build_method(name, **(method_defaults(name) | overrides))


@pytest.fixture
def qwen(tiny_qwen2_5_vl_llm: QwenVideoLLM) -> QwenVideoLLM:
    return tiny_qwen2_5_vl_llm


def hf_inputs(llm: QwenVideoLLM, frames: np.ndarray) -> dict[str, torch.Tensor]:
    """transformers' own inputs for the prompt: the placeholder expanded, grid, time per temporal patch, token types."""
    ids = llm.prompt_ids(QUESTION)
    pixels, thw = llm.pixel_values(frames)
    start = int(torch.nonzero(ids[0] == llm.video_token_id)[0, 0])
    n = int(thw.prod()) // 4
    expanded = torch.cat([ids[0, :start], torch.full((n,), llm.video_token_id), ids[0, start + 1 :]])[None]
    return {
        "input_ids": expanded,
        "attention_mask": torch.ones_like(expanded),
        "pixel_values_videos": pixels,
        "video_grid_thw": thw,
        "second_per_grid_ts": torch.tensor([2 / llm.spec.fps]),
        "mm_token_type_ids": (expanded == llm.video_token_id).int() * 2,
    }


def our_ids(llm: QwenVideoLLM, frames: np.ndarray, max_new_tokens: int) -> list[int]:
    state, ctx, _, _ = llm.prepare(frames, QUESTION)
    pre = llm.runner.prefill(state, None, ctx)
    return llm.runner.decode(pre, max_new_tokens, llm.stop_token_ids)


# fps 2 (qwen-vl-utils' default): the last text token holds the largest id. fps 0.1: 20 s per temporal patch, so the
# temporal ids of the last frames exceed every text id and decode must continue from the video's max (rope_deltas).
@pytest.mark.parametrize("fps", [2.0, 0.1])
def test_vanilla_equals_transformers_generate(
    fps: float, qwen: QwenVideoLLM, scene_frames: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(qwen, "spec", dataclasses.replace(qwen.spec, fps=fps))
    inputs = hf_inputs(qwen, scene_frames)
    max_new = 12
    with torch.no_grad():
        gen = qwen.model.generate(
            **inputs, max_new_tokens=max_new, do_sample=False, eos_token_id=sorted(qwen.stop_token_ids), pad_token_id=0
        )
        hf_logits = qwen.model(**inputs).logits[0]
    hf = gen[0, inputs["input_ids"].shape[1] :].tolist()
    ours = our_ids(qwen, scene_frames, max_new)
    # decode positions: transformers continues at prompt length + rope_deltas (= max id + 1) in every layer
    state, ctx, _, _ = qwen.prepare(scene_frames, QUESTION)
    want = inputs["input_ids"].shape[1] + int(qwen.model.model.rope_deltas)
    assert qwen.runner.prefill(state, None, ctx).next_position == [want] * qwen.num_layers
    assert ours == [t for t in hf if t not in qwen.stop_token_ids][: len(ours)]
    assert len(ours) == max_new or hf[len(ours)] in qwen.stop_token_ids
    got = qwen.prompt_logits(scene_frames, QUESTION)
    torch.testing.assert_close(got, hf_logits, rtol=1e-4, atol=1e-4)
    # the generated text through the public entry point
    out = qwen.generate(scene_frames, QUESTION, max_new_tokens=max_new)
    assert out.text == qwen.tokenizer.decode(ours, skip_special_tokens=True)
    if fps == 0.1:
        ids = qwen.prompt_ids(QUESTION)
        rope = qwen.mrope_ids(ids, qwen.layout(ids, 8), inputs["video_grid_thw"])
        video = rope[:, inputs["mm_token_type_ids"][0].bool()]
        assert int(video.max()) > int(rope[:, -1].max())  # the case this parameter is for


def test_token_grid_layout_and_dims(qwen: QwenVideoLLM, scene_frames: np.ndarray) -> None:
    """8 frames of 48×64 px → smart_resize 112×140 → 4 temporal patches × (8×10 patches → 4×5 merged tokens)."""
    state, ctx, _, n_visual = qwen.prepare(scene_frames, QUESTION)
    layout = ctx.layout
    assert (layout.num_frames, layout.grid_h, layout.grid_w, layout.newline_layout) == (4, 4, 5, "none")
    assert n_visual == layout.num_grid_tokens == layout.video_len == 80 and layout.num_newlines == 0
    assert state.num_video() == 80 and state.num_newlines() == 0
    assert qwen.tokens_per_frame == 20 and qwen.num_frames == 4
    assert model_dims(get_spec("tiny_qwen2_5_vl")) == model_dims(qwen.spec)
    assert (model_dims(qwen.spec).tokens_per_frame, model_dims(qwen.spec).num_layers) == (20, 4)
    # the pre-merger patches pool onto the token grid like the merger groups them
    assert ctx.vision_hidden.shape[:2] == (4, 80)  # 8×10 patches per temporal patch
    assert ctx.pool_map(ctx.vision_hidden).shape[:3] == (4, 4, 5)
    rows, cols = ctx.model.patch_cells(torch.tensor([0, 3, 4, 19, 20]))
    assert rows.tolist() == [0, 0, 0, 0, 1] and cols.tolist() == [0, 0, 1, 4, 0]


def test_dynamic_resolution(qwen: QwenVideoLLM) -> None:
    """A taller video gets another grid (smart_resize), and the layout follows the video, not the nominal size."""
    frames = np.random.default_rng(1).integers(0, 255, (6, 128, 64, 3)).astype(np.uint8)
    state, ctx, _, _ = qwen.prepare(frames, QUESTION)
    h, w = qwen.spec.token_grid(128, 64)
    assert (ctx.layout.num_frames, ctx.layout.grid_h, ctx.layout.grid_w) == (3, h, w)
    assert (h, w) != qwen.spec.token_grid()
    assert state.num_video() == 3 * h * w


class KeepHalf(PruningMethod):
    """Test method: every other grid token before the LLM, every other surviving one before layer 2."""

    name = "keep_half_test"

    def select_visual(self, tokens: VisualTokens, ctx) -> VisualTokens:
        return tokens.select(torch.arange(0, len(tokens), 2))

    def llm_layers(self, num_layers: int) -> tuple[int, ...]:
        return (2,)

    def before_layer(self, state: SequenceState, ctx) -> torch.Tensor:
        visual = state.visual_positions
        return torch.sort(torch.cat([torch.nonzero(state.kind == TEXT).squeeze(1), visual[::2]])).values


@pytest.mark.parametrize("name", ["keep_half", "vanilla", "fastv", "random", "dycoke", "prunevid", "uniform"])
def test_pruning_keeps_original_mrope_ids(
    name: str, qwen: QwenVideoLLM, scene_frames: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every surviving token's (t, h, w) ids equal its unpruned ids: for a grid token at (frame f, row r, col c) after
    s text tokens, (s + f·interval, s + r, s + c) with interval = tokens_per_second · temporal_patch / fps
    (arXiv 2502.13923 §2.1.3); for text, the model's own ids of the unpruned sequence."""
    seen: list[SequenceState] = []
    apply_keep = llm_mod._apply_keep

    def watch(state: SequenceState, keep: torch.Tensor, renumber: bool) -> SequenceState:
        new = apply_keep(state, keep, renumber)
        seen.append(new)
        return new

    monkeypatch.setattr(llm_mod, "_apply_keep", watch)
    method = KeepHalf() if name == "keep_half" else make(name)
    ids = qwen.prompt_ids(QUESTION)
    with method(qwen):
        state, ctx, _, _ = qwen.prepare(scene_frames, QUESTION)
        seen.append(state)
        pre = qwen.runner.prefill(state, method, ctx)
    _, thw = qwen.pixel_values(scene_frames)
    full = qwen.mrope_ids(ids, ctx.layout, thw)
    s = ctx.layout.video_start
    interval = qwen.config.vision_config.tokens_per_second * 2 / qwen.spec.fps
    for st in seen:
        vis = st.kind == VISUAL
        want = torch.stack([s + (st.frame * interval).long(), s + st.row, s + st.col])
        assert torch.equal(st.position_ids[:, vis].cpu(), want[:, vis])
        assert torch.equal(st.position_ids.cpu(), full[:, st.original_index])
    assert pre.next_position == [int(full.max()) + 1] * qwen.num_layers
    if name in ("keep_half", "fastv"):
        assert len(seen) == 2 and len(seen[1]) < len(seen[0])  # an in-LLM drop happened
    if name == "keep_half":
        assert pre.video_tokens_per_layer == [40, 40, 20, 20]


@pytest.mark.parametrize("name", sorted(NOT_APPLICABLE))
def test_methods_not_meaningful_are_refused(name: str, qwen: QwenVideoLLM) -> None:
    with pytest.raises(ConfigError, match=r"not available on model|no relevance encoder"), make(name)(qwen):
        pass
    assert qwen.method is None
    reason = unreachable_reason(make(name), qwen.spec, None, None)  # before any load: the cell is n/a
    assert reason and ("not available" in reason or "SigLIP" in reason)


def test_every_other_method_runs(qwen: QwenVideoLLM, scene_frames: np.ndarray) -> None:
    for name in method_names():
        if name in NOT_APPLICABLE:
            continue
        assert unreachable_reason(make(name), qwen.spec, None, None) is None, name
        with make(name)(qwen):
            out = qwen.generate(scene_frames, QUESTION, max_new_tokens=2)
        assert len(out.video_tokens_per_layer) == qwen.num_layers and out.newline_tokens_per_layer == [0] * 4


def test_vision_cache_round_trip(qwen: QwenVideoLLM, scene_frames: np.ndarray, tmp_path) -> None:
    from adatp_bench.cache import ContentCache
    from adatp_bench.core.video import VideoInput

    ref = qwen.prompt_logits(scene_frames, QUESTION)
    qwen.cache = ContentCache(tmp_path, max_bytes=1 << 28)
    try:
        video = VideoInput(key="clip", loader=lambda: (scene_frames, list(range(8)), 8))
        miss = qwen.generate(video, QUESTION, max_new_tokens=3)
        hit = qwen.generate(VideoInput(key="clip", loader=lambda: pytest.fail("decoded")), QUESTION, max_new_tokens=3)
    finally:
        qwen.cache = None
    assert (miss.cache["vision"], hit.cache["vision"]) == ("miss", "hit")
    assert miss.text == hit.text
    assert torch.equal(qwen.prompt_logits(scene_frames, QUESTION), ref)


def test_load_pretrained_round_trip_and_errors(qwen: QwenVideoLLM, scene_frames: np.ndarray, tmp_path) -> None:
    """The real-weight path (from_pretrained on a checkpoint directory, as for a hub id) gives the same model."""
    ckpt = tmp_path / "qwen"
    qwen.model.save_pretrained(ckpt)
    qwen.processor.save_pretrained(ckpt)
    loaded = load_model("tiny_qwen2_5_vl", source=str(ckpt))
    assert isinstance(loaded, QwenVideoLLM)
    assert torch.equal(loaded.prompt_logits(scene_frames, QUESTION), qwen.prompt_logits(scene_frames, QUESTION))
    with pytest.raises(ModelLoadError, match="expected 'qwen2_vl'"):
        load_model("qwen2_vl_7b", source=str(ckpt))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelLoadError, match=r"no config\.json"):
        load_model("qwen2_5_vl_7b", source=str(empty))
    (empty / "config.json").write_text(json.dumps({"model_type": "qwen2_5_vl"}))
    with pytest.raises(ModelLoadError, match="no weights"):
        load_model("qwen2_5_vl_7b", source=str(empty))
    with pytest.raises(ModelLoadError, match="huggingface-cli download"):
        load_model("qwen2_5_vl_3b")  # HF_HUB_OFFLINE=1 in tests: nothing can be fetched
    with pytest.raises(ConfigError, match="load_model"):
        VideoLLM.from_spec("tiny_qwen2_5_vl")  # the LLaVA adapter refuses Qwen specs


# -- full-size configs and FLOPs -----------------------------------------------------------------------------------
# Published config.json values (https://huggingface.co/Qwen/<model>/blob/main/config.json): LLM and ViT dimensions.
PUBLISHED = {
    "qwen2_5_vl_3b": {"hidden_size": 2048, "intermediate_size": 11008, "num_hidden_layers": 36,
                      "num_attention_heads": 16, "num_key_value_heads": 2, "vocab_size": 151936, "out": 2048},
    "qwen2_5_vl_7b": {"hidden_size": 3584, "intermediate_size": 18944, "num_hidden_layers": 28,
                      "num_attention_heads": 28, "num_key_value_heads": 4, "vocab_size": 152064, "out": 3584},
    "qwen2_vl_7b": {"hidden_size": 3584, "intermediate_size": 18944, "num_hidden_layers": 28,
                    "num_attention_heads": 28, "num_key_value_heads": 4, "vocab_size": 152064, "out": 3584},
}
# Parameter counts shown on the hub model pages (safetensors metadata): 3.75B, 8.29B, 8.29B.
PUBLISHED_PARAMS_B = {"qwen2_5_vl_3b": 3.75, "qwen2_5_vl_7b": 8.29, "qwen2_vl_7b": 8.29}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_full_size_configs_and_meta_builds(name: str) -> None:
    from adatp_bench.models.full_size import build_on_meta, config_file, load_full_size_config, video_path

    cfg = load_full_size_config(name)
    want = PUBLISHED[name]
    text = cfg.text_config
    for key in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
                "vocab_size"):
        assert getattr(text, key) == want[key], key
    assert text.rope_parameters["mrope_section"] == [16, 24, 24]
    vision = cfg.vision_config
    assert (vision.depth, vision.patch_size, vision.spatial_merge_size, vision.temporal_patch_size) == (32, 14, 2, 2)
    assert (vision.out_hidden_size if name.startswith("qwen2_5") else vision.hidden_size) == want["out"]
    if name.startswith("qwen2_5"):
        assert list(vision.fullatt_block_indexes) == [7, 15, 23, 31] and vision.window_size == 112
    data = config_file(name)
    assert data["hub_id"] == get_spec(name).source and any("huggingface.co" in s for s in data["sources"])
    model = build_on_meta(name)
    assert type(model).__name__ == ("Qwen2_5_VLForConditionalGeneration" if "2_5" in name else
                                    "Qwen2VLForConditionalGeneration")
    params = sum(p.numel() for p in model.parameters()) / 1e9
    assert round(params, 2) == PUBLISHED_PARAMS_B[name]
    vp = video_path(name)
    assert (vp.frames, vp.tokens_per_frame, vp.newline_tokens, vp.paper_video_tokens) == (16, 256, 0, 4096)
    assert model_dims(get_spec(name)).num_layers == want["num_hidden_layers"]


def test_paper_flops_convention_on_qwen() -> None:
    """The paper column counts the video positions entering each decoder layer (docs/flops.md §1); Qwen has no
    newlines, so n is the merged visual tokens: 16 temporal patches × 256 = 4096 at 32 frames of 448×448 px."""
    from adatp_bench import flops
    from adatp_bench.models.full_size import load_full_size_config

    n = 4096
    for name, layers in (("qwen2_5_vl_7b", 28), ("qwen2_vl_7b", 28), ("qwen2_5_vl_3b", 36)):
        d, ffn, kv = PUBLISHED[name]["hidden_size"], PUBLISHED[name]["intermediate_size"], 128 * (
            PUBLISHED[name]["num_key_value_heads"])
        by_hand = layers * (2 * n * d * d + 2 * n * d * kv + 2 * n * n * d + 3 * n * d * ffn) / 1e12
        assert flops.paper_tflops(load_full_size_config(name), [n] * layers) == pytest.approx(by_hand, rel=1e-12)
    # same LLM dimensions as LLaVA-OV-7B's Qwen2-7B: the same TFLOPs for the same token counts
    ov = flops.paper_tflops(load_full_size_config("llava_ov_7b"), [n] * 28)
    assert flops.paper_tflops(load_full_size_config("qwen2_5_vl_7b"), [n] * 28) == pytest.approx(ov)


def test_sample_flops_report_and_vision_extra(qwen: QwenVideoLLM, scene_frames: np.ndarray) -> None:
    from adatp_bench import flops
    from adatp_bench.flops.extras import qwen_vision_macs, vision_encoder_macs

    with make("fastv")(qwen):
        out = qwen.generate(scene_frames, QUESTION, max_new_tokens=2)
    assert out.newline_tokens_per_layer == [0] * 4
    vanilla = flops.paper_tflops(qwen.config, [80] * 4)
    report = flops.make_flops_report(qwen.config, out.video_tokens_per_layer, vanilla_tflops=vanilla)
    assert 0 < report.pct_of_vanilla < 100
    full = qwen_vision_macs(qwen.config, (4, 8, 10))
    assert full > qwen_vision_macs(qwen.config, (2, 8, 10)) > 0
    with pytest.raises(ConfigError, match="video_grid_thw"):
        vision_encoder_macs(qwen.config, 8)



def test_a_qwen_cell_records_each_samples_own_vanilla_and_vision_cost(qwen: QwenVideoLLM, tmp_path) -> None:
    """A sweep cell on model=tiny_qwen2_5_vl: each sample's vanilla is its own unpruned grid (dynamic resolution),
    FastV's paper FLOPs are below it, and the ViT extra is costed on each sample's own patch grid."""
    from adatp_bench import flops
    from adatp_bench.config import compose
    from adatp_bench.flops.extras import qwen_vision_macs
    from adatp_bench.results import RunDir, read_jsonl
    from adatp_bench.run import run_cell

    cfg = compose(["model=tiny_qwen2_5_vl", "method=fastv", "budget=r25", "benchmark=videomme_synth", "limit=2",
                   f"paths.root={tmp_path}"])  # fmt: skip
    outcome = run_cell(cfg)
    assert outcome.status == "done", outcome.error
    run = RunDir(tmp_path / "results" / "runs", outcome.record.run_id)
    eff = json.loads(run.record_path.read_text())["efficiency"]
    samples = read_jsonl(run.samples_path)
    assert len(samples) == 2
    for rec in samples:
        t, h, w = rec["video_grid_thw"]
        assert rec["grid_tokens"] == t * h * w // 4  # the 2×2 merger
    vanillas = [flops.paper_tflops(qwen.config, [rec["grid_tokens"]] * 4) for rec in samples]
    assert eff["vanilla_paper_tflops"] == pytest.approx(float(np.mean(vanillas)))
    assert 0 < eff["pct_flops_of_vanilla"] < 100
    vision = [qwen_vision_macs(qwen.config, rec["video_grid_thw"]) / flops.TERA for rec in samples]
    assert eff["extra_vision_encoder_tflops"] == pytest.approx(float(np.mean(vision)))


@pytest.mark.parametrize("experiment", ["qwen", "qwen_demo"])
def test_the_qwen_experiments_list_only_methods_meaningful_on_qwen(experiment: str) -> None:
    """The Qwen grids sweep Qwen models only, with every method that runs there and none that is n/a there (the
    random, uniform and downsampling references included)."""
    from adatp_bench.report.grid import experiment_axes

    _, axes = experiment_axes(experiment)
    values = {axis[0].split("=", 1)[0]: [o.split("=", 1)[1] for o in axis] for axis in axes}
    assert all(isinstance(get_spec(m), QwenVLSpec) for m in values["model"])
    methods = set(values["method"])
    assert not methods & set(NOT_APPLICABLE)
    assert {"vanilla", "random", "uniform", "downsample"} <= methods
    assert methods | set(NOT_APPLICABLE) >= set(method_names()) - {n for n in method_names() if n.startswith("adatp_")}

"""Tests every registered pruning method gets automatically (kvpress style): add a method, it is tested here.

On both token layouts (tiny: one newline per video; tiny_video: one per row): generation works, recorded counts match
the method's promised budget, retention 1.0 is the identity, runs are deterministic, no eager attention runs, and
installing a method leaves nothing behind.
"""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pytest
import torch
import transformers.models.qwen2.modeling_qwen2 as qwen2_mod
import transformers.models.siglip.modeling_siglip as siglip_mod

from adatp_bench.config import method_defaults
from adatp_bench.errors import ConfigError
from adatp_bench.models.adapter import VideoLLM
from adatp_bench.pruning import METHODS, build_method, method_names

QUESTION = "Which scene comes first?\nA. red\nB. blue\nC. green\nD. none"
ALL = method_names()
PRUNING = [m for m in ALL if "retention" in {f.name for f in dataclasses.fields(METHODS[m])}]


def make(name: str, retention: float | None = None) -> object:
    settings = method_defaults(name)
    if retention is not None:
        settings["retention"] = retention
    return build_method(name, **settings)


@pytest.fixture(params=["tiny", "tiny_video"])
def llm(request: pytest.FixtureRequest) -> VideoLLM:
    return request.getfixturevalue(f"{request.param}_llm")


def test_every_method_has_a_config_file_matching_its_fields() -> None:
    for name in ALL:
        settings = method_defaults(name)
        fields = {f.name for f in dataclasses.fields(METHODS[name])}
        assert set(settings) == fields, f"conf/method/{name}.yaml keys differ from {METHODS[name].__name__} fields"


@pytest.mark.parametrize("name", ALL)
def test_generate_and_budget(name: str, llm: VideoLLM, scene_frames: np.ndarray) -> None:
    method = make(name)
    with method(llm):
        out = llm.generate(scene_frames, QUESTION, max_new_tokens=4, sample_id="s0")
    layout = llm.layout(llm.prompt_ids(QUESTION), llm.spec.num_frames)
    counts = out.video_tokens_per_layer
    assert len(counts) == llm.num_layers
    assert all(a >= b for a, b in itertools.pairwise(counts)), "in-LLM pruning never adds tokens"
    assert 0 < counts[0] <= layout.video_len
    assert out.output_tokens <= 4
    expected = method.expected_video_tokens(layout, llm.num_layers)
    if expected is not None:
        assert counts == expected


@pytest.mark.parametrize("name", PRUNING)
def test_retention_one_is_identity(name: str, llm: VideoLLM, scene_frames: np.ndarray) -> None:
    ref = llm.prompt_logits(scene_frames, QUESTION)
    with make(name, retention=1.0)(llm):
        got = llm.prompt_logits(scene_frames, QUESTION)
    assert got.shape == ref.shape
    assert torch.equal(got, ref)


@pytest.mark.parametrize("name", ALL)
def test_deterministic(name: str, tiny_llm: VideoLLM, scene_frames: np.ndarray) -> None:
    outs = []
    for _ in range(2):
        with make(name)(tiny_llm):
            o = tiny_llm.generate(scene_frames, QUESTION, max_new_tokens=3, sample_id="d", seed=7)
        outs.append((o.text, o.video_tokens_per_layer))
    assert outs[0] == outs[1]


@pytest.mark.parametrize("name", ALL)
def test_no_eager_attention(
    name: str, llm: VideoLLM, scene_frames: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    def forbidden(*args, **kwargs):
        raise AssertionError("eager attention ran")

    monkeypatch.setattr(qwen2_mod, "eager_attention_forward", forbidden)
    monkeypatch.setattr(siglip_mod, "eager_attention_forward", forbidden)
    with make(name)(llm):
        llm.generate(scene_frames, QUESTION, max_new_tokens=2)
    assert llm.config.text_config._attn_implementation == "sdpa"


def test_install_leaves_nothing_behind(tiny_llm: VideoLLM, scene_frames: np.ndarray) -> None:
    def hooks() -> dict[str, tuple[int, int]]:  # transformers registers some of its own; ours must add none
        return {n: (len(m._forward_hooks), len(m._forward_pre_hooks)) for n, m in tiny_llm.model.named_modules()}

    before = tiny_llm.prompt_logits(scene_frames, QUESTION)
    hooks_before = hooks()
    state = {k: v.clone() for k, v in tiny_llm.model.state_dict().items()}
    for name in ALL:  # every method, one after another, in one process
        with make(name)(tiny_llm):
            tiny_llm.generate(scene_frames, QUESTION, max_new_tokens=2)
        assert tiny_llm.method is None
    assert hooks() == hooks_before
    assert all(torch.equal(state[k], v) for k, v in tiny_llm.model.state_dict().items())
    assert torch.equal(tiny_llm.prompt_logits(scene_frames, QUESTION), before)


def test_nested_install_is_refused(tiny_llm: VideoLLM) -> None:
    with make("fastv")(tiny_llm), pytest.raises(RuntimeError, match="already installed"), make("vanilla")(tiny_llm):
        pass
    assert tiny_llm.method is None


def test_batch_larger_than_one_is_refused(tiny_llm: VideoLLM) -> None:
    pv = torch.zeros(2, 8, 3, 126, 126)
    with pytest.raises(ValueError, match="batch size must be 1"):
        tiny_llm.encode_video(pv)


@pytest.mark.parametrize("name", PRUNING)
@pytest.mark.parametrize("retention", [0.0, -0.5, 1.5])
def test_impossible_retention_rejected_before_forward(name: str, retention: float, tiny_llm: VideoLLM) -> None:
    method = make(name, retention=retention)
    with pytest.raises(ConfigError), method(tiny_llm):
        pass
    assert tiny_llm.method is None


def test_unknown_method_and_setting() -> None:
    with pytest.raises(ConfigError, match="valid methods"):
        build_method("nope")
    with pytest.raises(ConfigError, match="no setting"):
        build_method("fastv", kk=3)


def test_fastv_keeps_exactly_the_probe_top_r(tiny_llm: VideoLLM, scene_frames: np.ndarray) -> None:
    """FastV keeps the top-R video positions of layer K−1's last-row, head-mean attention (computed here by hand)."""
    from adatp_bench.models.attention import probe_attention

    method = build_method("fastv", k=2, retention=0.3)
    with method(tiny_llm):
        state, ctx, _, _ = tiny_llm.prepare(scene_frames, QUESTION)
        lm = tiny_llm.runner.lm
        h = state.hidden
        rope = lm.rotary_emb(h, state.position_ids)
        with torch.no_grad():
            h1 = lm.layers[0](h, attention_mask=None, position_embeddings=rope)
        scores = probe_attention(lm.layers[1], h1, rope)[:, 0].mean(0)
        visual = state.visual_positions
        want = set(visual[torch.topk(scores[visual], round(len(visual) * 0.3)).indices].tolist())
        state.layer_idx, state.probe = 1, lambda rows=None: probe_attention(lm.layers[1], h1, rope, rows)
        method.before_layer(state, ctx)
        state.layer_idx = 2
        keep = method.before_layer(state, ctx)
    kept_visual = {int(i) for i in keep if state.kind[i] == 1}
    assert kept_visual == want
    assert int((state.kind[keep] == 2).sum()) == 1  # the one-per-video newline stays


@pytest.fixture(scope="module")
def bf16_llm() -> VideoLLM:
    return VideoLLM.from_spec("tiny_video", dtype="bfloat16")


@pytest.mark.parametrize("name", ALL)
def test_runs_in_bfloat16(name: str, bf16_llm: VideoLLM, scene_frames: np.ndarray) -> None:
    """The real models run in bf16: no method may mix dtypes (probe and scores are fp32, features bf16)."""
    with make(name)(bf16_llm):
        out = bf16_llm.generate(scene_frames, QUESTION, max_new_tokens=2)
    assert len(out.video_tokens_per_layer) == bf16_llm.num_layers

"""PDrop's defining behaviour: stage s keeps int(n0·λ^s) video positions ranked by the last token's attention previewed
with the stage layer's own projections, positions are renumbered, and decoding continues from the pruned lengths.
Also the two shared schedule rules (depth scaling, pyramid ratios) that SparseVLM, PruneVid and HoliTom use."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from adatp_bench.core.layout import VideoLayout
from adatp_bench.errors import ConfigError
from adatp_bench.models.adapter import VideoLLM
from adatp_bench.models.attention import probe_attention
from adatp_bench.pruning import build_method
from adatp_bench.pruning.schedule import pyramid_ratios, scale_layers
from llm_layers import layer_inputs, run_layer

QUESTION = "Which scene comes first?\nA. red\nB. blue"
OV_7B = VideoLayout(video_start=14, num_frames=32, grid_h=14, grid_w=14, newline_layout="per_video", seq_len=6350)


def test_scale_layers_keeps_relative_depth() -> None:
    assert scale_layers([8, 16, 24], 28, 28) == (8, 16, 24)  # FastVID's Qwen2-7B schedule, unchanged
    assert scale_layers([8, 16, 24], 24, 28) == (7, 14, 21)  # Qwen2-0.5B: 6.86, 13.7, 20.6
    assert scale_layers([8, 16, 24], 4, 28) == (1, 2, 3)  # tiny: 1.14, 2.29, 3.43
    assert scale_layers([7], 4, 8) == (4,)  # 3.5 rounds half up
    assert scale_layers([8, 16, 24], 4, None) == (8, 16, 24)  # absolute


def test_pyramid_ratios_reproduce_the_published_schedule() -> None:
    assert pyramid_ratios(0.5, [0.5, 0.25, 0.125]) == [0.5, 0.25, 0.125]  # upstream λ = 0.5
    assert pyramid_ratios(0.25, [0.5, 0.25, 0.125]) == [0.25, 0.0625, 0.015625]  # λ = r
    assert pyramid_ratios(0.041, [0.041, 0.020, 0.010]) == [0.041, 0.02, 0.01]  # FastVID's OV-7B row
    assert pyramid_ratios(1.0, [0.041, 0.020, 0.010]) == [1.0, 1.0, 1.0]  # identity


def test_stage_counts_are_int_n0_lambda_s() -> None:
    assert build_method("pdrop", retention=0.5).stage_counts(6273) == [3136, 1568, 784]
    fastvid = build_method("pdrop", retention=0.041, reference_ratios=[0.041, 0.020, 0.010])
    assert fastvid.stage_counts(6273) == [257, 125, 62]
    # docs/flops.md §4: 8 layers at 6272(+1 newline), 8 at 257, 8 at 125, 4 at ~63 on the 28-layer OV-7B.
    assert fastvid.expected_video_tokens(OV_7B, 28) == [6273] * 8 + [257] * 8 + [125] * 8 + [62] * 4


@pytest.mark.parametrize(
    ("settings", "match"),
    [
        (dict(layers=[8, 16, 24], reference_depth=None), "outside"),  # absolute layers beyond a 4-layer depth
        (dict(layers=[1, 1, 2], reference_depth=None), "strictly increasing"),
        (dict(layers=[0, 1, 2], reference_depth=None), "outside"),  # layer 0 has nothing to preview from
        (dict(reference_ratios=[0.5, 0.5, 0.25]), "decreasing"),
        (dict(reference_ratios=[0.5, 0.25]), "one ratio per layer"),
        (dict(reference_depth=0), "reference_depth"),
    ],
)
def test_impossible_schedules_are_config_errors(settings: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        build_method("pdrop", retention=0.5, **settings).validate(25, 8, 4)


def test_collapsing_depth_scale_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="strictly increasing"):
        build_method("pdrop", retention=0.5, layers=[1, 2, 3], reference_depth=8).validate(25, 8, 4)  # → 1, 1, 2


def test_stages_keep_the_previewed_top_tokens_with_renumbered_positions(
    tiny_llm: VideoLLM, scene_frames: np.ndarray
) -> None:
    method = build_method("pdrop", retention=0.5, layers=[1, 2, 3], reference_depth=None)
    lm = tiny_llm.runner.lm
    with method(tiny_llm), layer_inputs(tiny_llm, [1, 2, 3]) as seen:
        state, ctx, _, _ = tiny_llm.prepare(scene_frames, QUESTION)
        n0 = ctx.layout.video_len
        hidden, positions, kind = state.hidden.clone(), state.position_ids.clone(), state.kind.clone()
        text = int((kind == 0).sum())
        prefill = tiny_llm.runner.prefill(state, method, ctx)  # (the runner advances `state` in place)
        generated = tiny_llm.runner.decode(prefill, 3, set(), method, ctx)

    hidden = run_layer(tiny_llm, 0, hidden, positions)
    for stage, layer in enumerate([1, 2, 3], start=1):
        # the stage layer's own norm + q/k + RoPE on what enters it, last row, mean over heads (pdrop_rank_drop)
        rope = lm.rotary_emb(hidden, positions)
        scores = probe_attention(lm.layers[layer], hidden, rope)[:, 0].mean(0)
        video = torch.nonzero(kind != 0).squeeze(1)
        n_keep = int(n0 * 0.5**stage)
        top = video[torch.topk(scores[video], n_keep).indices]
        keep = torch.sort(torch.cat([torch.nonzero(kind == 0).squeeze(1), top])).values
        hidden, kind = hidden[:, keep], kind[keep]
        positions = torch.arange(len(keep))[None]  # renumbered 0..len−1
        got_hidden, got_cos = seen[layer]
        assert int((kind != 0).sum()) == n_keep
        torch.testing.assert_close(got_hidden, hidden, rtol=0, atol=1e-6)
        torch.testing.assert_close(got_cos, lm.rotary_emb(hidden, positions)[0], rtol=0, atol=0)
        if layer < 3:
            hidden = run_layer(tiny_llm, layer, hidden, positions)

    # decode continues every layer from its own pruned length (upstream's per-stage position shift)
    assert prefill.next_position == [text + n0] + [text + int(n0 * 0.5**s) for s in (1, 2, 3)]
    assert prefill.video_tokens_per_layer == method.expected_video_tokens(ctx.layout, 4)
    assert len(generated) == 3


def test_gqa_ranking_equals_mha_with_repeated_kv_heads(tiny_llm: VideoLLM, scene_frames: np.ndarray) -> None:
    """Upstream ranks with MHA only; with GQA the probe must equal MHA on K heads repeated per query group."""
    layer = tiny_llm.runner.lm.layers[1]
    attn = layer.self_attn
    with build_method("vanilla")(tiny_llm):
        state, _, _, _ = tiny_llm.prepare(scene_frames, QUESTION)
    rope = tiny_llm.runner.lm.rotary_emb(state.hidden, state.position_ids)
    got = probe_attention(layer, state.hidden, rope)[:, 0]
    with torch.no_grad():
        x = layer.input_layernorm(state.hidden)[0]
        q = attn.q_proj(x[-1:]).view(1, -1, attn.head_dim).transpose(0, 1)  # (H, 1, d)
        k = attn.k_proj(x).view(len(x), -1, attn.head_dim).transpose(0, 1)  # (Hkv, L, d)
        cos, sin = rope[0][0], rope[1][0]
        half = attn.head_dim // 2
        rot = lambda t: torch.cat((-t[..., half:], t[..., :half]), -1)  # noqa: E731
        q, k = q * cos[-1:] + rot(q) * sin[-1:], k * cos + rot(k) * sin
        group = q.shape[0] // k.shape[0]
        want = torch.stack([torch.softmax(q[h] @ k[h // group].T * attn.scaling, -1)[0] for h in range(q.shape[0])])
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)

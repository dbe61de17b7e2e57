"""HoliTom's defining behaviour: DP temporal windows maximising merged static tokens, static cells merged into DPC-KNN
centres with weight β, per-frame top-k by the SigLIP attention received, and the inner stage merging every dropped token
into its most similar kept token by sequential (a+b)/2, with original positions."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import transformers.models.siglip.modeling_siglip as siglip_mod

from adatp_bench.models.adapter import VideoLLM
from adatp_bench.models.attention import probe_attention
from adatp_bench.pruning import build_method
from adatp_bench.pruning.holitom import (
    merge_by_attention_density,
    merge_dropped_into_kept,
    merge_into_centres,
    outer_stage,
    select_static_windows,
    static_window_gain,
)
from llm_layers import layer_inputs

QUESTION = "Which scene comes first?\nA. red\nB. blue"


def test_static_windows_by_dynamic_programming() -> None:
    # transitions 0→1: both cells similar; 1→2: only cell 0; 2→3: none (τ = 0.8)
    sim = torch.tensor([[0.9, 0.9], [0.9, 0.5], [0.1, 0.1]])
    gain = static_window_gain(sim, 0.8)
    assert (gain[0][1], gain[0][2], gain[1][2], gain[0][3]) == (2.0, 2.0, 1.0, 0.0)  # (e − s) · static cells
    windows, removed = select_static_windows(sim, 0.8)
    assert windows == [(0, 1), (2, 2), (3, 3)]  # [0, 2] ties [0, 1] at 2 removed; strict improvements only
    assert removed == 2.0
    assert select_static_windows(sim, 0.8, max_window_size=1) == ([(0, 0), (1, 1), (2, 2), (3, 3)], 0.0)


def test_merge_into_centres_weights_the_centre_by_beta() -> None:
    feats = torch.tensor([[1.0, 0.0], [1.2, 0.0], [0.0, 1.0], [0.8, 0.0], [0.0, 3.0]])
    centres = torch.tensor([0, 2])
    dist = torch.cdist(feats, feats)
    merged, weight = merge_into_centres(feats, centres, dist, beta=0.6)
    # centre 0 gets tokens 1 and 3 (mean (1.0, 0)); centre 2 gets token 4 (mean (0, 3))
    torch.testing.assert_close(merged, torch.tensor([[0.6 + 0.4, 0.0], [0.0, 0.6 + 1.2]]))
    assert weight.tolist() == [3, 2]


def test_dynamic_tokens_keep_the_ceil_top_attention_in_cell_order() -> None:
    feats = torch.arange(10.0).view(5, 2)
    attn = torch.tensor([0.1, 0.5, 0.2, 0.9, 0.3])
    out, index, weight = merge_by_attention_density(feats, attn, ratio=0.5, d=0.0, beta=0.6, k=7, generator=None)
    assert index.tolist() == [1, 3, 4]  # ceil(5·0.5) = 3 most attended, in cell order
    torch.testing.assert_close(out, feats[[1, 3, 4]])
    assert weight.tolist() == [1, 1, 1]


def test_outer_stage_on_hand_made_frames() -> None:
    # 3 frames × 4 cells: cells 0, 1 never change (static over the whole video), cells 2, 3 do
    a, b = torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 1.0, 0.0])
    frames = torch.stack([torch.stack([a, b, torch.zeros(3), torch.zeros(3)]) for _ in range(3)])
    frames[:, 2] = torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, -1.0], [1.0, 0.0, 1.0]])
    frames[:, 3] = torch.tensor([[0.0, 1.0, -1.0], [1.0, 1.0, 0.0], [-1.0, 0.0, 0.0]])
    attention = torch.tensor([[0.1, 0.1, 0.2, 0.7], [0.1, 0.1, 0.8, 0.1], [0.1, 0.1, 0.3, 0.3001]])
    stats: dict = {}
    pieces = outer_stage(
        frames,
        attention,
        retention=0.25,
        tau=0.8,
        beta=0.6,
        d=0.0,
        k=7,
        generator=torch.Generator().manual_seed(0),
        stats=stats,
    )
    assert stats["windows"] == [[0, 2]] and stats["static_removed"] == 4.0  # 2 static cells × 2 removed copies
    assert stats["window_retention"] == pytest.approx(0.25 / (8 / 12))  # budget rescaled to what is left
    static, f0, f1, f2 = pieces
    # static: round(2 · 0.375) = 1 centre; the other static cell is merged in with weight 1 − β
    centre = int(static.cells[0])
    other = 1 - centre
    torch.testing.assert_close(static.features[0], 0.6 * frames[0, centre] + 0.4 * frames[0, other])
    assert static.frame == 0 and static.weight.tolist() == [6]
    # dynamic: ceil(2 · 0.375) = 1 per frame, the most attended of cells 2, 3
    assert [p.cells.tolist() for p in (f0, f1, f2)] == [[3], [2], [3]]
    assert [p.frame for p in (f0, f1, f2)] == [0, 1, 2]


def loop_merge(hidden: torch.Tensor, kept: torch.Tensor, dropped: torch.Tensor) -> torch.Tensor:
    """Upstream ``Qwen2Model_holitom.forward``'s merge loop, literally (sequence order, (a+b)/2 in place)."""
    h = hidden.clone()
    sim = F.normalize(hidden[dropped], dim=-1) @ F.normalize(hidden[kept], dim=-1).T
    target = sim.argmax(dim=1)
    for i, d in enumerate(dropped.tolist()):
        t = int(kept[target[i]])
        h[t] = (h[t] + h[d]) / 2
    return h[kept]


def test_inner_merge_assigns_each_dropped_token_to_its_most_similar_kept_token() -> None:
    hidden = torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 0.1], [0.1, 3.0], [4.0, -0.1], [1.0, 1.1]])
    kept, dropped = torch.tensor([1, 0]), torch.tensor([2, 3, 4, 5])
    # 2 → 0, 3 → 1, 4 → 0, 5 → 1 (cos to (0,1) beats cos to (1,0)); token 0 = ((h0 + h2)/2 + h4)/2
    want = torch.stack([((hidden[1] + hidden[3]) / 2 + hidden[5]) / 2, ((hidden[0] + hidden[2]) / 2 + hidden[4]) / 2])
    got = merge_dropped_into_kept(hidden, kept, dropped)
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(got, loop_merge(hidden, kept, dropped))
    mean = merge_dropped_into_kept(hidden, kept, dropped, sequential=False)
    torch.testing.assert_close(mean[1], (hidden[0] + hidden[2] + hidden[4]) / 3)


def test_inner_merge_matches_the_upstream_loop_on_random_states() -> None:
    gen = torch.Generator().manual_seed(3)
    hidden = torch.randn(40, 8, generator=gen)
    perm = torch.randperm(40, generator=gen)
    kept, dropped = perm[:9], torch.sort(perm[9:]).values
    torch.testing.assert_close(merge_dropped_into_kept(hidden, kept, dropped), loop_merge(hidden, kept, dropped))


def test_siglip_attention_equals_eager_mean_received(tiny_llm: VideoLLM, scene_frames: np.ndarray) -> None:
    """``ctx.vision_attention()`` (what HoliTom scores with) equals eager SigLIP's mean received attention of the layer
    feeding the projector."""
    with build_method("vanilla")(tiny_llm):
        _, ctx, _, _ = tiny_llm.prepare(scene_frames, QUESTION)
    got = ctx.vision_attention().received
    layer = tiny_llm.model.model.vision_tower.encoder.layers[-1]  # vision_feature_layer −1: the last layer's attention
    attn = layer.self_attn
    pixels = tiny_llm.pixel_values(scene_frames).flatten(0, 1)
    with torch.no_grad():
        states = tiny_llm.model.model.vision_tower(pixels, output_hidden_states=True).hidden_states
    x = layer.layer_norm1(states[-2])
    shape = (*x.shape[:2], -1, attn.head_dim)
    with torch.no_grad():
        q, k, v = (proj(x).view(shape).transpose(1, 2) for proj in (attn.q_proj, attn.k_proj, attn.v_proj))
        _, weights = siglip_mod.eager_attention_forward(attn, q, k, v, None, scaling=attn.scale)
    torch.testing.assert_close(got, weights.mean(dim=1).mean(dim=1), rtol=1e-5, atol=1e-6)
    assert got.shape == (8, 81)


def test_tau_follows_the_official_scripts() -> None:
    assert build_method("holitom", retention=0.10).effective_tau() == 0.65
    assert build_method("holitom", retention=0.15).effective_tau() == 0.80
    assert build_method("holitom", retention=0.10, tau=0.9).effective_tau() == 0.9


def test_inner_stage_on_the_tiny_model(tiny_llm: VideoLLM, scene_frames: np.ndarray) -> None:
    method = build_method("holitom", retention=0.25, inner_layer=2, reference_depth=None)
    lm = tiny_llm.runner.lm
    with method(tiny_llm), layer_inputs(tiny_llm, [1, 2]) as seen:
        state, ctx, _, _ = tiny_llm.prepare(scene_frames, QUESTION)
        positions, kind = state.position_ids.clone(), state.kind.clone()
        out = tiny_llm.runner.prefill(state, method, ctx)
        tiny_llm.runner.decode(out, 2, set(), method, ctx)

    h1, _ = seen[1]
    scores = probe_attention(lm.layers[1], h1, lm.rotary_emb(h1, positions))[:, 0].mean(0)  # layer K−1, last row
    with torch.no_grad():
        h2 = lm.layers[1](h1, attention_mask=None, position_embeddings=lm.rotary_emb(h1, positions))
    video = torch.nonzero(kind != 0).squeeze(1)
    top = torch.topk(scores[video], round(len(video) * 0.5)).indices
    dropped_mask = torch.ones(len(video), dtype=torch.bool)
    dropped_mask[top] = False
    kept, dropped = video[top], video[dropped_mask]
    merged = h2[0].clone()
    merged[kept] = loop_merge(h2[0], kept, dropped)
    keep = torch.sort(torch.cat([torch.nonzero(kind == 0).squeeze(1), kept])).values

    got_hidden, got_cos = seen[2]
    torch.testing.assert_close(got_hidden, merged[None, keep], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(
        got_cos, lm.rotary_emb(h2, positions[:, keep])[0], rtol=0, atol=0
    )  # original positions
    assert out.video_tokens_per_layer[2] == round(len(video) * 0.5)

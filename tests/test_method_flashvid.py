"""FlashVID's defining behaviour: DySeg on frame-mean cosines (threshold cuts, topped up to ``min_segments``), ADTS
max–min selection on attention-calibrated cosine distances, tree-based temporal merging into the earliest frame,
DPC-kNN spatial merging to the budget, contiguous positions, and a FastV-style inner prune."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from adatp_bench.core.sequence import NEWLINE, VISUAL
from adatp_bench.errors import ConfigError, UnreachableSetting
from adatp_bench.models.adapter import VideoLLM
from adatp_bench.pruning import build_method
from adatp_bench.pruning.flashvid import adts, segment, tstm

QUESTION = "What happens?"


def at_angles(degrees: list[float]) -> torch.Tensor:
    """Unit 2-D vectors at the given angles."""
    rad = torch.deg2rad(torch.tensor(degrees))
    return torch.stack([rad.cos(), rad.sin()], dim=-1)


def test_segment_cuts_below_threshold_then_tops_up_with_the_lowest() -> None:
    means = at_angles([0, 5, 30, 32, 90, 91]) * 2.0  # steps 5°, 25°, 2°, 58°, 1° → cos .996, .906, .999, .530, .9998
    assert segment(means, threshold=0.9, min_segments=1, complementary=True) == [4, 2]  # 0.530 only
    assert segment(means, threshold=0.95, min_segments=1, complementary=True) == [2, 2, 2]  # + 0.906
    # Two cuts below 0.95, min 4 segments: one more at the lowest remaining transition (0.996 after frame 0).
    assert segment(means, threshold=0.95, min_segments=4, complementary=True) == [1, 1, 2, 2]
    assert segment(means, threshold=0.95, min_segments=4, complementary=False) == [2, 2, 2]


def test_budgets_per_frame() -> None:
    m = build_method("flashvid", retention=0.25)
    assert m.budgets(196) == (44, 18)  # B = ceil(196·0.25·1.25) = 62, A = ceil(62·0.7) = 44
    assert build_method("flashvid", retention=0.1).budgets(169) == (16, 6)  # B = ceil(21.125) = 22, A = ceil(15.4)


def test_adts_is_max_min_on_calibrated_distances() -> None:
    # One frame, tokens at 0°, 10°, 90°, 180°. Cosine distances: d(0,10) = 0.015, d(0,90) = 1, d(0,180) = 2,
    # d(10,90) = 0.826, d(10,180) = 1.985, d(90,180) = 1.
    x = at_angles([0, 10, 90, 180])[None]
    flat = torch.full((1, 4), 1e-6)
    # First: the column whose second-smallest distance is largest (180°: 1), then the farthest from it (0°: 2),
    # then the farthest from both (90°: min(1, 1) = 1).
    assert adts(x, flat, 3, v2=False).tolist() == [[0, 2, 3]]
    # Calibration multiplies column j by 1e6·cls_j: 0° at a tenth of the attention is no longer the farthest from 180°.
    weak = torch.tensor([[1e-7, 1e-6, 1e-6, 1e-6]])
    assert adts(x, weak, 2, v2=False).tolist() == [[1, 3]]  # d(180, 10) = 1.985 > 0.1·d(180, 0) = 0.2


def test_adts_v2_event_term_avoids_tokens_against_the_segment_mean() -> None:
    # v2 also multiplies column j by ⟨x_j, mean of the frame means⟩: 180° points against the mean (0.25, 0.29) and
    # its calibrated distances turn negative, so it is the last token v2 would pick (v1 picks it first).
    x = at_angles([0, 10, 90, 180])[None]
    flat = torch.full((1, 4), 1e-6)
    assert adts(x, flat, 1, v2=False).tolist() == [[3]]
    assert 3 not in adts(x, flat, 3, v2=True)[0].tolist()


def test_tstm_merges_down_the_tree_with_upstream_counts() -> None:
    # 3 frames × 2 tokens. Token 0 is nearly constant (a chain 2 → 1 → 0); token 1 turns away at every frame.
    f0 = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    f1 = torch.tensor([[0.96, 0.28, 0.0], [0.0, 0.0, 1.0]])
    f2 = torch.tensor([[0.99, 0.141, 0.0], [0.0, -1.0, 0.0]])  # cos(f2[0], f1[0]) = 0.99
    feats = torch.stack([f0, f1, f2])
    free = torch.ones(3, 2, dtype=torch.bool)
    cells = tstm(feats, free, threshold=0.9, lower_bound=0)
    assert [c.tolist() for c in cells] == [[0, 1], [1], [1]]
    # Frame 1's token 0 collects frame 2's (sum, count 2), then passes the sum to frame 0's root, whose count grows by
    # one per child (upstream): root = (f0 + f1 + f2) / 2, not / 3.
    torch.testing.assert_close(feats[0, 0], (f0[0] + f1[0] + f2[0]) / 2)
    torch.testing.assert_close(feats[0, 1], f0[1])
    torch.testing.assert_close(feats[2, 1], f2[1])


def test_tstm_soft_threshold_keeps_at_least_the_lower_bound() -> None:
    f0 = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    f1 = torch.tensor([[0.96, 0.28, 0.0], [0.6, 0.8, 0.0], [0.0, 0.0, -1.0]])  # best links 0.96, 0.8, −1 (to 0, 0, 2)
    free = torch.ones(2, 3, dtype=torch.bool)
    assert [len(c) for c in tstm(torch.stack([f0, f1]), free, threshold=0.5, lower_bound=0)] == [3, 1]
    # At least 5 must stay: the soft threshold is the largest link (0.96) and only links above it merge: none.
    assert [len(c) for c in tstm(torch.stack([f0, f1]), free, threshold=0.5, lower_bound=5)] == [3, 3]
    # ADTS tokens (not free) never link or receive links: with frame 0's token 0 taken, frame 1's token 0 can only
    # link to token 1 (cos 0.28 < τ) and stays; the ADTS token itself is not returned.
    free[0, 0] = False
    assert [c.tolist() for c in tstm(torch.stack([f0, f1]), free, threshold=0.5, lower_bound=0)] == [[1, 2], [0, 2]]


def _prepare(llm: VideoLLM, frames: np.ndarray, **settings):
    method = build_method("flashvid", **settings)
    with method(llm):
        state, ctx, _, n_visual = llm.prepare(frames, QUESTION)
        grid, _, _ = llm.encode_video(llm.pixel_values(frames))
    return state, ctx, grid, n_visual


@pytest.mark.parametrize("spec", ["tiny", "tiny_video"])
def test_adts_only_keeps_original_tokens_in_cell_order(spec: str, request: pytest.FixtureRequest) -> None:
    """α = 1: no merging, so every kept token is an original pooled token at its cell; A per frame, contiguous
    positions, cells in raster order, newlines: OV's one, one per frame on LLaVA-Video."""
    llm: VideoLLM = request.getfixturevalue(f"{spec}_llm")
    frames = request.getfixturevalue("scene_frames")
    state, ctx, grid, n_visual = _prepare(llm, frames, retention=0.25, alpha=1.0)
    nf, h, w, _ = grid.shape
    budget = math.ceil(h * w * 0.25 * 1.25)
    assert ctx.stats["adts_per_frame"] == budget and ctx.stats["sttm_per_frame"] == 0
    assert n_visual == nf * budget
    visual = state.kind == VISUAL
    cells = state.frame[visual] * h * w + state.row[visual] * w + state.col[visual]
    assert bool((cells.diff() > 0).all())
    torch.testing.assert_close(state.hidden[0, visual], grid.reshape(nf * h * w, -1)[cells])
    assert torch.equal(state.position_ids[0].cpu(), torch.arange(len(state)))  # contiguous by construction
    assert state.num_newlines() == (1 if ctx.layout.newline_layout == "per_video" else nf)


def test_inner_prune_keeps_top_last_row_attention(tiny_llm: VideoLLM, scene_frames: np.ndarray) -> None:
    method = build_method("flashvid", retention=0.25)
    with method(tiny_llm):
        state, ctx, _, _ = tiny_llm.prepare(scene_frames, QUESTION)
        layer = method.inner_layer(tiny_llm.num_layers)
        assert method.llm_layers(tiny_llm.num_layers) == (layer - 1, layer) == (2, 3)  # round(20·4/28) = 3
        state.layer_idx = layer - 1
        scores = ctx.probe(state)[:, 0].mean(0).cpu()
        state.probe = lambda rows=None: ctx.probe(state, rows)
        assert method.before_layer(state, ctx) is None
        state.layer_idx = layer
        keep = method.before_layer(state, ctx)
    visual = state.visual_positions  # OV: the newline is outside FlashVID's visual span and stays
    want = set(visual[torch.topk(scores[visual], math.ceil(len(visual) * 0.3)).indices].tolist())
    assert {int(i) for i in keep if state.kind[i] == VISUAL} == want
    assert int((state.kind[keep] == NEWLINE).sum()) == 1


def test_end_to_end_counts_with_two_segments(tiny_llm: VideoLLM, scene_frames: np.ndarray) -> None:
    """The scene cut gives two 4-frame segments; at τ = 0.5 TSTM merges every free token of frames 1–3 into frame 0
    (19 = 25 − 6 left there), so ρ = 2·4/19 and frame 0 keeps ceil(19·ρ) = 8 clusters: 6·8 + 8 per segment."""
    settings = {"retention": 0.25, "min_segments": 1, "temporal_threshold": 0.5}
    with build_method("flashvid", **settings)(tiny_llm):
        out = tiny_llm.generate(scene_frames, QUESTION, max_new_tokens=2, sample_id="s0")
    assert out.method_stats["segments"] == [4, 4]
    assert out.method_stats["merge_inputs"] == [[19, 0, 0, 0], [19, 0, 0, 0]]
    grid = 2 * (6 * 4 + 8)
    assert out.video_tokens_per_layer == [grid + 1] * 3 + [math.ceil(grid * 0.3) + 1]


def test_impossible_settings_name_the_key(tiny_llm: VideoLLM) -> None:
    # ceil(25·0.8·1.25) = 25 = T: nothing to compress.
    with pytest.raises(UnreachableSetting, match="retention"), build_method("flashvid", retention=0.8)(tiny_llm):
        pass
    with pytest.raises(ConfigError, match="pruning_layer"), build_method("flashvid", pruning_layer=40)(tiny_llm):
        pass
    with pytest.raises(ConfigError, match="alpha"), build_method("flashvid", alpha=1.5)(tiny_llm):
        pass
    with pytest.raises(ConfigError, match="token_selection"), build_method("flashvid", token_selection="x")(tiny_llm):
        pass

"""FastVID's defining behaviour: DySeg cuts at the c−1 lowest adjacent-frame similarities plus every one below τ; ATS
keeps the MAP-head top tokens; DTM anchors are density peaks updated with weight max(β, 1/(n+1)); positions stay
original."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from adatp_bench.core.layout import VisualTokens
from adatp_bench.core.sequence import VISUAL
from adatp_bench.models.adapter import VideoLLM
from adatp_bench.pruning import build_method
from adatp_bench.pruning.fastvid import anchor_counts_onevision, budgets_llava_video, dtm_update, dyseg

QUESTION = "What happens?"


def frames_at(degrees: list[float]) -> torch.Tensor:
    """Unit 2-D global features at the given angles: cos(f_i, f_{i+1}) = cos of the angle step."""
    rad = torch.deg2rad(torch.tensor(degrees))
    return torch.stack([rad.cos(), rad.sin()], dim=1) * 3.0  # any norm: DySeg normalises


def test_dyseg_cuts_lowest_c_minus_one_and_below_tau() -> None:
    feats = frames_at([0, 5, 30, 32, 90, 91])  # steps 5°, 25°, 2°, 58°, 1° → cos .996, .906, .999, .530, .9998
    assert dyseg(feats, c=2, tau=0.5) == [4, 2]  # the lowest (58°) only
    assert dyseg(feats, c=2, tau=0.95) == [2, 2, 2]  # + 25° (0.906 < τ)
    assert dyseg(feats, c=3, tau=0.0) == [2, 2, 2]  # the two lowest
    assert dyseg(feats, c=4, tau=0.0) == [1, 1, 2, 2]  # + 5° (0.996)
    assert dyseg(feats, c=1, tau=0.5) == [6]  # no cut
    assert dyseg(feats, c=8, tau=0.9) == [1] * 6  # c − 1 > F − 1 is clamped: every frame its own segment


def test_anchor_counts_onevision_from_segment_end() -> None:
    # context 6, p = 4: P = 1 → 6; P = 5 → ⌈5/4⌉ = 2 anchor frames (the last, and 4 before it) with 30 // 2 = 15;
    # P = 4 → the last frame alone with 24.
    assert anchor_counts_onevision([1, 5, 4], context=6, p=4) == [6, 15, 0, 0, 0, 15, 0, 0, 0, 24]


def test_budgets_llava_video_split_a_segment_exactly() -> None:
    salient, anchors = budgets_llava_video([1, 6], retain=16, d=0.4, p=4)
    # P = 1: int(16·0.4) = 6 anchors, 10 salient. P = 6: 96 tokens, int(38.4) = 38 anchors over ⌈6/4⌉ = 2 anchor
    # frames counted from the end (19 + 19), 58 salient spread 10,10,10,10,9,9.
    assert salient == [10, 10, 10, 10, 10, 9, 9]
    assert anchors == [6, 0, 19, 0, 0, 0, 19]
    assert sum(salient[1:]) + sum(anchors[1:]) == 96


@pytest.mark.parametrize(("beta", "want"), [(0.6, [[1.2, 0.02], [0.0, 1.8]]), (0.2, [[4 / 3, 0.1 / 3], [0.0, 2.0]])])
def test_dtm_anchor_update_by_hand(beta: float, want: list[list[float]]) -> None:
    anchors = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    pool = torch.tensor([[[2.0, 0.0], [1.0, 0.1], [0.0, 3.0]]])  # two join anchor 0, one joins anchor 1
    merged, counts = dtm_update(anchors, pool, beta)
    # anchor 0: w = max(β, 1/3), mean (1.5, 0.05); anchor 1: w = max(β, 1/2), mean (0, 3).
    assert counts.tolist() == [[2.0, 1.0]]
    torch.testing.assert_close(merged[0], torch.tensor(want))


def _prepare(llm: VideoLLM, frames: np.ndarray, sample_id: str = "0", **settings):
    method = build_method("fastvid", **settings)
    with method(llm):
        state, ctx, _, n_visual = llm.prepare(frames, QUESTION, sample_id=sample_id)
        grid, _, _ = llm.encode_video(llm.pixel_values(frames))
    return state, ctx, grid, n_visual


def test_ats_only_keeps_top_head_attention_at_original_positions(tiny_llm: VideoLLM, scene_frames: np.ndarray) -> None:
    state, ctx, grid, n_visual = _prepare(tiny_llm, scene_frames, retention=0.25, d=0.0)
    nf, h, w, _ = grid.shape
    retain = int(h * w * 0.25)
    assert n_visual == nf * retain
    visual = state.kind == VISUAL
    head = ctx.head_attention().reshape(nf, h * w)
    for f in range(nf):
        want = torch.sort(torch.topk(head[f], retain).indices).values
        cells = (state.row * w + state.col)[visual & (state.frame == f)]
        assert cells.tolist() == want.tolist()
    torch.testing.assert_close(state.hidden[0, visual], grid.reshape(nf * h * w, -1)[_flat_cells(state, h, w)])
    assert torch.equal(state.position_ids[0].cpu(), state.original_index)  # original RoPE positions, gaps included


def _flat_cells(state, h: int, w: int) -> torch.Tensor:
    visual = state.kind == VISUAL
    return (state.frame * h * w + state.row * w + state.col)[visual]


def test_dtm_on_tiny_merges_into_anchor_positions(tiny_llm: VideoLLM, scene_frames: np.ndarray) -> None:
    state, ctx, grid, n_visual = _prepare(tiny_llm, scene_frames, retention=0.5, d=0.4, c=2, tau=0.0)
    nf, h, w, _ = grid.shape
    retain = int(h * w * 0.5)  # 12: 5 anchors + 7 salient per frame
    sizes = ctx.stats["segments"]
    assert len(sizes) == 2 and sum(sizes) == nf  # c = 2, τ = 0: exactly one cut
    context = int(retain * 0.4)
    anchors = sum(context * s // math.ceil(s / 4) * math.ceil(s / 4) for s in sizes)
    assert n_visual == nf * (retain - context) + anchors
    assert torch.equal(state.position_ids[0].cpu(), state.original_index)
    assert bool((state.original_index.diff() > 0).all())  # raster order, unique cells
    cells = _flat_cells(state, h, w)
    changed = (state.hidden[0, state.kind == VISUAL] - grid.reshape(nf * h * w, -1)[cells]).abs().amax(1) > 0
    assert 0 < int(changed.sum()) <= anchors  # only anchors are merged


def test_density_noise_is_seeded_per_sample(tiny_llm: VideoLLM, scene_frames: np.ndarray) -> None:
    a, *_ = _prepare(tiny_llm, scene_frames, "s1", retention=0.5)
    b, *_ = _prepare(tiny_llm, scene_frames, "s1", retention=0.5)
    assert torch.equal(a.hidden, b.hidden) and torch.equal(a.original_index, b.original_index)


def test_llava_video_variant_keeps_row_newlines(tiny_video_llm: VideoLLM, scene_frames: np.ndarray) -> None:
    state, ctx, grid, n_visual = _prepare(tiny_video_llm, scene_frames, retention=0.5)
    nf, h, w, _ = grid.shape
    assert ctx.stats["variant"] == "llava_video"
    assert n_visual == nf * int(h * w * 0.5)  # the LLaVA-Video code keeps exactly retain·P per segment
    visual = state.kind == VISUAL
    rows_with_tokens = set(zip(state.frame[visual].tolist(), state.row[visual].tolist(), strict=True))
    assert state.num_newlines() == len(rows_with_tokens)
    assert torch.equal(state.position_ids[0].cpu(), state.original_index)


def test_full_grid_layout_of_selection(tiny_llm: VideoLLM, scene_frames: np.ndarray) -> None:
    method = build_method("fastvid", retention=0.25)
    with method(tiny_llm):
        _, ctx, _, _ = tiny_llm.prepare(scene_frames, QUESTION)
        grid, _, _ = tiny_llm.encode_video(tiny_llm.pixel_values(scene_frames))
        kept = method.select_visual(VisualTokens.from_grid(grid), ctx)
    key = kept.frame * 25 + kept.row * 5 + kept.col
    assert bool((key.diff() > 0).all())  # sorted by original index, as upstream (argsort of keep_indexs)

"""DyCoke's defining behaviour: TTM drops tokens equal to the same position in the reference frame and keeps changed
ones, over 4-frame windows (last window included unless official_compat); stage 2 selects KV per decode step."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from adatp_bench.core.layout import VideoLayout
from adatp_bench.errors import ConfigError
from adatp_bench.models.adapter import VideoLLM
from adatp_bench.pruning import build_method
from adatp_bench.pruning.dycoke import merging_ratio, pruned_frame_keep, ttm_keep_indices, ttm_plan

QUESTION = "What happens?"


def static_video(num_frames: int = 8, tokens: int = 4) -> torch.Tensor:
    """A static scene in which every pruned frame differs from its TTM reference frame at exactly one position."""
    base = torch.randn(1, tokens, 3, generator=torch.Generator().manual_seed(0)).expand(num_frames, -1, -1).clone()
    changes = {1: 2, 2: 0, 3: 1, 5: 3, 6: 1, 7: 2}  # frame: changed position (3 and 7 carry over 2's and 6's change)
    for frame, pos in changes.items():
        if frame in (3, 7):
            base[frame] = base[frame - 1]
        base[frame, pos] = torch.tensor([5.0, -1.0, 0.5]) * (frame + 1)
    return base


def test_drops_identical_tokens_keeps_changed_ones() -> None:
    keep = ttm_keep_indices(static_video(), keep=1, official_compat=False)
    # Window 0-3: frame 0 whole; 1 and 2 against frame 0; 3 against the original frame 2. Window 4-7 likewise.
    # Each pruned frame keeps exactly the token that differs from its reference and drops the identical ones.
    assert keep[0] is None and keep[4] is None
    assert [keep[f].tolist() for f in (1, 2, 3, 5, 6, 7)] == [[2], [0], [1], [3], [1], [2]]


def test_official_compat_skips_the_last_window() -> None:
    assert 30 not in ttm_plan(32, official_compat=True) and ttm_plan(32, official_compat=False)[30] == 28
    keep = ttm_keep_indices(static_video(), keep=1, official_compat=True)
    assert keep[6] is None  # upstream's range(0, F − 4, 4) stops before window 4-7's third frame
    assert keep[7].tolist() == [2]


def test_similarity_order_is_ascending_and_spatial_order_is_sorted() -> None:
    frames = torch.zeros(4, 4, 2)
    frames[:, :, 0] = 1.0  # every token points along x
    angles = torch.deg2rad(torch.tensor([10.0, 80.0, 0.0, 45.0]))  # frame 1: cosines 0.98, 0.17, 1, 0.71 to frame 0
    frames[1] = torch.stack([angles.cos(), angles.sin()], dim=1)
    assert ttm_keep_indices(frames, keep=3, official_compat=False)[1].tolist() == [1, 3, 0]  # least similar first
    assert ttm_keep_indices(frames, keep=3, official_compat=False, token_order="spatial")[1].tolist() == [0, 1, 3]


def test_retention_maps_to_k_and_per_frame_keep() -> None:
    assert merging_ratio(0.325) == 0.9 and merging_ratio(0.25) == 1.0 and merging_ratio(1.0) == 0.0
    assert merging_ratio(0.475) == 0.7
    assert [pruned_frame_keep(196, k) for k in (0.9, 1.0, 0.7)] == [19, 0, 58]
    assert pruned_frame_keep(169, 0.9) == 16
    with pytest.raises(ConfigError, match=r"≥ 0\.25"):
        build_method("dycoke", retention=0.2).validate(196, 32, 28)


def layout(newline: str, frames: int, side: int) -> VideoLayout:
    return VideoLayout(video_start=14, num_frames=frames, grid_h=side, grid_w=side, newline_layout=newline, seq_len=0)


def test_expected_counts_match_published_numbers() -> None:
    ov, vid = layout("per_video", 32, 14), layout("per_row", 64, 13)
    counts = {
        (0.25, False): 8 * 196,  # 25% exactly (FastVID Table 1)
        (0.325, False): 8 * 196 + 24 * 19,  # 2024 = 32.3% (FastVID prints the ideal 32.5%)
        (0.475, True): 9 * 196 + 23 * 58,  # upstream K = 0.7: 3098 = 49.4% (docs/methods/dycoke.md)
        (0.25, True): 9 * 196,  # upstream K = 1.0: 28.1%
    }
    for (retention, compat), visual in counts.items():
        method = build_method("dycoke", retention=retention, official_compat=compat)
        assert method.expected_video_tokens(ov, 28) == [visual + 1] * 28
    # LLaVA-Video at K = 1: 2704 video + 208 newlines (FastVID Table 2, DyCoke 25% row).
    assert build_method("dycoke", retention=0.25).expected_video_tokens(vid, 28) == [2704 + 208] * 28
    # At K = 0.9: 16 whole frames keep 13 newlines each, the 48 pruned frames one each: FastVID's 256 newlines.
    assert build_method("dycoke", retention=0.325).expected_video_tokens(vid, 28) == [2704 + 48 * 16 + 256] * 28
    rows = build_method("dycoke", retention=0.325, row_newlines="rows_with_kept")
    assert rows.expected_video_tokens(vid, 28) is None  # the rows its kept tokens touch vary with the data


def test_stats_record_paper_and_prefill_retention(tiny_llm: VideoLLM, scene_frames: np.ndarray) -> None:
    for retention, kv, paper, prefill in [(0.25, False, 0.25, 0.25), (0.325, True, 0.325 * 0.2, (50 + 6 * 2) / 200)]:
        with build_method("dycoke", retention=retention, kv_pruning=kv, kv_layer=2)(tiny_llm):
            out = tiny_llm.generate(scene_frames, QUESTION, max_new_tokens=2)
        assert out.method_stats["retention_paper"] == pytest.approx(paper)
        assert out.method_stats["retention_prefill"] == pytest.approx(prefill)
        assert out.visual_tokens_in == round(prefill * 200)


def _decode(llm: VideoLLM, frames: np.ndarray, method, steps: int) -> tuple[list[int], object, object]:
    with method(llm):
        state, ctx, _, _ = llm.prepare(frames, QUESTION)
        pre = llm.runner.prefill(state, method, ctx)
        out = llm.runner.decode(pre, steps, set(), method, ctx)
    return out, pre, ctx


def test_stage2_selects_kv_per_step_and_restores_the_cache(tiny_llm: VideoLLM, scene_frames: np.ndarray) -> None:
    method = build_method("dycoke", retention=0.25, kv_pruning=True, kv_layer=2, kv_prune_ratio=0.8)
    seen: list[tuple[int, int]] = []  # (step, keys that layer L attends to during the step)
    original = method.on_decode_layer

    def spy(step, layer_idx, cache, ctx, attention):
        original(step, layer_idx, cache, ctx, attention)
        if layer_idx == 1:
            seen.append((step, cache.layers[2].keys.shape[2]))

    method.on_decode_layer = spy
    tokens, pre, ctx = _decode(tiny_llm, scene_frames, method, steps=4)
    prefill_len = pre.cache.layers[0].keys.shape[2] - 3  # three decode forwards happened
    visual = len(ctx.stats["_kv_span"])
    assert ctx.stats["kv_keep"] == int(visual * (1 - 0.8))  # upstream arithmetic: int(50 · 0.19999…) = 9
    assert seen[0] == (0, prefill_len - visual + ctx.stats["kv_keep"])  # step 0 always selects (no previous vector)
    assert ctx.stats["kv_pruned_steps"] >= 1
    assert all(layer.keys.shape[2] == prefill_len + 3 for layer in pre.cache.layers)  # nothing lost from the cache
    plain, _, _ = _decode(tiny_llm, scene_frames, build_method("dycoke", retention=0.25), steps=4)
    assert tokens[0] == plain[0]  # stage 2 never touches prefill, so the first token is unchanged


def test_stage2_keeping_everything_is_exact(tiny_llm: VideoLLM, scene_frames: np.ndarray) -> None:
    keep_all = build_method("dycoke", retention=0.25, kv_pruning=True, kv_layer=2, kv_prune_ratio=0.0)
    got, _, _ = _decode(tiny_llm, scene_frames, keep_all, steps=5)
    want, _, _ = _decode(tiny_llm, scene_frames, build_method("dycoke", retention=0.25), steps=5)
    assert got == want

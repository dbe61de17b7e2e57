"""FrameFusion's defining behaviour: consecutive same-patch tokens above the similarity threshold merge into the
earliest one (which keeps its original position), the merge share is capped by the cost budget, and once merging stops
one last-row-attention prune brings the layer average to ``cost`` (``_compute_pruning_ratio``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from adatp_bench.core.sequence import TEXT
from adatp_bench.errors import ConfigError
from adatp_bench.models.adapter import VideoLLM
from adatp_bench.pruning import build_method
from adatp_bench.pruning.framefusion import merge_runs, patch_order_similarity, patch_types, pruning_ratio

QUESTION = "What happens?"


def test_pruning_ratio_by_hand() -> None:
    # No layer spent yet: every layer must keep cost, so u = 1 − cost.
    assert pruning_ratio([], 0.3, 28) == pytest.approx(0.7)
    # One layer merged 30%: σ = 0.7 spent; the 27 others keep (28·0.3 − 0.7) / (27·0.7) = 7.7 / 18.9 of the 70% left.
    assert pruning_ratio([0.3], 0.3, 28) == pytest.approx(1 - 7.7 / 18.9)
    # Two layers merged 50% then 40%: σ = 0.5, 0.3; (28·0.3 − 0.8) / (26·0.3) = 7.6 / 7.8 < 1.
    assert pruning_ratio([0.5, 0.4], 0.3, 28) == pytest.approx(1 - 7.6 / 7.8)
    # Merging already saved more than needed: the quotient exceeds 1, nothing more to prune.
    assert pruning_ratio([0.5, 0.4, 0.05], 0.3, 28) == 0.0
    # Overspent (shallow model): 4·0.1 − 1 < 0 → drop every remaining video token (upstream raises).
    assert pruning_ratio([0.0], 0.1, 4) == 1.0


def test_patch_order_similarity_and_run_merge_by_hand() -> None:
    # Sequence: text, then 3 frames × 2 patches (frame-major), then text. Patch 0 is constant across frames 0 and 1
    # and turns at frame 2; patch 1 changes at frame 1 and stays.
    e0, e1 = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    frames = [[e0, e1], [e0 * 2, e0], [e1, e0 * 3]]  # cos along patch 0: 1, 0; along patch 1: 0, 1
    hidden = torch.stack([e1, *[t for f in frames for t in f], e0])
    types = torch.tensor([-1, 0, 1, 0, 1, 0, 1, -1])
    order, sim = patch_order_similarity(hidden, types)
    assert order.tolist() == [1, 3, 5, 2, 4, 6]  # by patch, then by position
    assert sim.tolist() == [-2.0, 1.0, 0.0, -2.0, 0.0, 1.0]  # −2 opens each patch
    merge = sim >= 0.6
    out, keep = merge_runs(hidden, order, merge)
    assert keep.tolist() == [True, True, True, False, True, True, False, True]
    torch.testing.assert_close(out[1], (e0 + 2 * e0) / 2)  # (h_a + h_b) / 2 into the earlier frame
    torch.testing.assert_close(out[4], (e0 + 3 * e0) / 2)
    torch.testing.assert_close(out[[0, 2, 5, 7]], hidden[[0, 2, 5, 7]])  # untouched tokens


def test_a_run_of_three_averages_into_its_first_token() -> None:
    hidden = torch.tensor([[1.0, 0.0], [3.0, 0.0], [8.0, 0.0]])
    order = torch.tensor([0, 1, 2])
    out, keep = merge_runs(hidden, order, torch.tensor([False, True, True]))
    assert keep.tolist() == [True, False, False]
    torch.testing.assert_close(out[0], torch.tensor([4.0, 0.0]))  # (1 + 3 + 8) / 3


def _prepare(llm: VideoLLM, frames: np.ndarray, **settings):
    method = build_method("framefusion", **settings)
    with method(llm):
        state, ctx, _, _ = llm.prepare(frames, QUESTION)
    return method, state, ctx


def test_budget_bound_merge_at_layer_zero(tiny_llm: VideoLLM, scene_frames: np.ndarray) -> None:
    """Static scenes: almost every token matches its predecessor, so the budget binds at the first call: exactly
    int(u·N) merge with u = 1 − cost, and neither merging nor pruning happens again."""
    method, state, ctx = _prepare(tiny_llm, scene_frames, retention=0.5)
    state.layer_idx = 0
    with method(tiny_llm):
        keep = method.before_layer(state, ctx)
    layout = ctx.layout
    typed = layout.num_grid_tokens  # the OV newline is typed as text
    assert ctx.stats["merged"] == [int(0.5 * typed)] and ctx.stats["merge_sparsity"] == []
    kept = state.keep(keep)
    assert kept.num_video() == layout.video_len - int(0.5 * typed)
    assert bool((kept.kind == TEXT).sum() == (state.kind == TEXT).sum())  # text never merges
    assert torch.equal(kept.position_ids[0].cpu(), kept.original_index)  # original RoPE positions, gaps included
    types = patch_types(kept, layout.grid_w)
    grid = types >= 0
    # A merged-away token's patch keeps an earlier frame: each kept token is the first of its run.
    assert bool((kept.frame[grid] >= 0).all())
    with method(tiny_llm):
        kept.layer_idx = 1
        assert method.before_layer(kept, ctx) is None  # merging and pruning are over


def test_prune_after_merging_stops_keeps_top_last_row_attention(tiny_llm: VideoLLM) -> None:
    """Noise frames: nothing reaches S = 1, merging stops at call 0 (share 0 < 0.1), layer 0's last-row attention on
    that sequence ranks the video span, and before layer 1 round(v·(1 − u)) stay, u over 28 layers (official_compat)."""
    rng = np.random.default_rng(1)
    frames = rng.integers(0, 255, (8, 48, 64, 3)).astype(np.uint8)
    method, state, ctx = _prepare(tiny_llm, frames, retention=0.3, similarity_lower_bound=1.0, official_compat=True)
    with method(tiny_llm):
        state.layer_idx = 0
        assert method.before_layer(state, ctx) is None
        scores = ctx.probe(state)[:, 0].mean(0).cpu()
        state.layer_idx = 1
        keep = method.before_layer(state, ctx)
    u = 1 - (28 * 0.3 - 1.0) / 27
    video = state.video_positions
    n_keep = round(len(video) * (1 - u))
    want = set(video[torch.topk(scores[video], n_keep).indices].tolist())
    kept_video = {int(i) for i in keep if state.kind[i] != TEXT}
    assert kept_video == want and len(kept_video) == n_keep
    assert ctx.stats["prune_layer"] == 1 and ctx.stats["prune_ratio"] == pytest.approx(u)
    assert torch.equal(state.keep(keep).position_ids[0].cpu(), state.keep(keep).original_index)


def test_end_to_end_counts_on_the_tiny_model(tiny_llm: VideoLLM, tiny_video_llm: VideoLLM) -> None:
    """Noise frames, S = 1, budget over 28 layers. One-newline layout: nothing merges, layer 1 prunes with
    u = 1 − (28·0.3 − 1)/27. Per-row layout: the row newlines are patches of their own (upstream ``patch_num =
    p·(p + 1)``) and identical across frames, so the (F − 1)·H later ones merge at call 0 (share ≥ 0.1, merging goes
    on), nothing at call 1, and layer 2 prunes with u from both shares."""
    rng = np.random.default_rng(1)
    frames = rng.integers(0, 255, (8, 48, 64, 3)).astype(np.uint8)
    settings = {"retention": 0.3, "similarity_lower_bound": 1.0, "official_compat": True}
    for llm in (tiny_llm, tiny_video_llm):
        with build_method("framefusion", **settings)(llm):
            out = llm.generate(frames, QUESTION, max_new_tokens=2)
        layout = llm.layout(llm.prompt_ids(QUESTION), llm.spec.num_frames)
        if layout.newline_layout == "per_video":
            kept = round(layout.video_len * (28 * 0.3 - 1.0) / 27)  # 1 − u
            assert out.video_tokens_per_layer == [layout.video_len] + [kept] * (llm.num_layers - 1)
        else:
            merged = (layout.num_frames - 1) * layout.grid_h
            after = layout.video_len - merged
            share = merged / layout.video_len  # every video position is typed on this layout
            sigma = 1 - share
            u = 1 - (28 * 0.3 - 2 * sigma) / (26 * sigma)
            assert out.video_tokens_per_layer == [after, after] + [round(after * (1 - u))] * (llm.num_layers - 2)


@pytest.mark.parametrize(
    ("settings", "key"),
    [({"similarity_lower_bound": 1.5}, "similarity_lower_bound"), ({"ratio_lower_bound": -0.1}, "ratio_lower_bound")],
)
def test_impossible_settings_name_the_key(settings: dict, key: str, tiny_llm: VideoLLM) -> None:
    with pytest.raises(ConfigError, match=key), build_method("framefusion", **settings)(tiny_llm):
        pass

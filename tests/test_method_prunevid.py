"""PruneVid's defining behaviour: contiguous temporal windows from DPC-KNN labels, static cells averaged over a window,
spatial clustering above 14 tokens, and stage 2 keeping int(n·α) per group by the max-over-heads, max-over-question
attention, with original positions and the KV cache of the earlier layers sliced alike."""

from __future__ import annotations

import numpy as np
import torch

from adatp_bench.core.context import SampleContext
from adatp_bench.core.layout import VisualTokens
from adatp_bench.models.adapter import VideoLLM
from adatp_bench.models.attention import probe_attention
from adatp_bench.pruning import build_method
from adatp_bench.pruning.prunevid import (
    GROUPS_KEY,
    keep_per_group,
    merge_window,
    question_max_scores,
    refine_clusters,
    segment_lengths,
    spatial_merge,
    static_cells,
)
from llm_layers import layer_inputs, run_layer

QUESTION = "Which scene comes first?\nA. red\nB. blue"


def test_refine_clusters_makes_windows_contiguous() -> None:
    # cluster 0 has two runs of length 2 (both kept: a tie), cluster 1 a single frame (freed); the freed frame joins
    # the left neighbour on a tie of run lengths.
    assert refine_clusters([0, 0, 1, 0, 0, 2, 2, 2]) == [0, 0, 0, 0, 0, 2, 2, 2]
    assert segment_lengths([0, 0, 0, 0, 0, 2, 2, 2]) == [5, 3]
    # shorter runs are freed and join their longer neighbour; with no left neighbour the right one is taken.
    assert refine_clusters([1, 0, 1, 1, 2, 2, 0, 0]) == [1, 1, 1, 1, 2, 2, 0, 0]
    assert segment_lengths([1, 1, 1, 1, 2, 2, 0, 0]) == [4, 2, 2]
    assert refine_clusters([3, 3, 3]) == [3, 3, 3]


def test_static_cells_use_the_mean_pairwise_cosine() -> None:
    window = torch.tensor(
        [
            [[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]],
            [[2.0, 0.0], [0.0, 1.0], [0.9, 0.436]],  # cos: 1, 0, 0.9
        ]
    )
    assert static_cells(window, 0.8).tolist() == [True, False, True]
    assert static_cells(window, 0.95).tolist() == [True, False, False]
    assert static_cells(window[:1], -1.0).tolist() == [False, False, False]  # one frame: 0/0 upstream, never static


def test_static_tokens_are_averaged_and_dynamic_tokens_stay_per_frame() -> None:
    # 2 frames × 4 cells: cells 0 and 1 are the same direction in both frames (static), cells 2 and 3 change.
    f0 = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0], [3.0, 0.0]])
    f1 = torch.tensor([[3.0, 0.0], [0.0, 4.0], [-1.0, 1.0], [0.0, 5.0]])
    groups = merge_window(torch.stack([f0, f1]), start=6, tau=0.8, ratio=0.5, k=7, generator=None)
    static, dyn0, dyn1 = groups
    torch.testing.assert_close(static.features, torch.tensor([[2.0, 0.0], [0.0, 3.0]]))  # (f0 + f1) / 2
    assert (static.frame, static.cells.tolist(), static.weight.tolist()) == (6, [0, 1], [2.0, 2.0])
    torch.testing.assert_close(dyn0.features, f0[2:])
    torch.testing.assert_close(dyn1.features, f1[2:])
    assert (dyn0.frame, dyn1.frame, dyn1.cells.tolist()) == (6, 7, [2, 3])


def test_more_than_14_tokens_are_clustered_into_int_n_beta_means() -> None:
    gen = torch.Generator().manual_seed(0)
    blobs = [torch.tensor([10.0 * i, 0.0]) + 0.01 * torch.randn(4, 2, generator=gen) for i in range(4)]
    feats = torch.cat(blobs)  # 16 tokens in 4 tight blobs
    means, _centres, sizes = spatial_merge(feats, 0.25, k=3, generator=gen)
    assert len(means) == int(16 * 0.25) == 4
    assert sorted(sizes.tolist()) == [4, 4, 4, 4]
    torch.testing.assert_close(torch.sort(means[:, 0]).values, torch.stack([b[:, 0].mean() for b in blobs]))
    window = feats.view(1, 16, 2)  # one frame (all dynamic), 16 > 14 tokens: clustered
    _static, dynamic = merge_window(window, start=0, tau=0.8, ratio=0.25, k=3, generator=gen)
    assert len(dynamic.features) == 4 and dynamic.weight.sum() == 16


def test_stage2_scores_and_per_group_top_alpha() -> None:
    attention = torch.tensor([[[0.1, 0.5, 0.0], [0.2, 0.0, 0.0]], [[0.0, 0.1, 0.9], [0.3, 0.0, 0.0]]])
    torch.testing.assert_close(question_max_scores(attention), torch.tensor([0.3, 0.5, 0.9]))
    scores = torch.tensor([0.9, 0.1, 0.5, 0.7, 0.2, 0.8, 0.3])
    group = torch.tensor([0, 0, 0, 1, 1, 2, 2])
    # α = 0.5: int(3·0.5) = 1 of group 0, int(2·0.5) = 1 of groups 1 and 2
    assert keep_per_group(scores, group, 0.5).tolist() == [0, 3, 5]
    assert keep_per_group(scores, group, 0.4).tolist() == [0]  # int(2·0.4) = 0 for the pairs


def test_retention_one_returns_the_tokens_untouched() -> None:
    tokens = VisualTokens.from_grid(torch.randn(2, 2, 2, 3))
    assert build_method("prunevid_stage1", retention=1.0).select_visual(tokens, None) is tokens  # type: ignore[arg-type]


def test_stage2_on_the_tiny_model(tiny_llm: VideoLLM, scene_frames: np.ndarray) -> None:
    method = build_method("prunevid", retention=0.25, alpha=0.4, layer=1, reference_depth=None)
    lm = tiny_llm.runner.lm
    with method(tiny_llm), layer_inputs(tiny_llm, [1, 2]) as seen:
        state, ctx, _, _ = tiny_llm.prepare(scene_frames, QUESTION)
        positions, kind = state.position_ids.clone(), state.kind.clone()
        question = torch.nonzero(state.question_mask).squeeze(1)
        cells = ctx.layout.grid_position(state.frame, state.row, state.col)
        out = tiny_llm.runner.prefill(state, method, ctx)
        tiny_llm.runner.decode(out, 2, set(), method, ctx)

    # stage 1: positions are contiguous after the reduction
    assert torch.equal(positions[0], torch.arange(positions.shape[1]))
    h1, _ = seen[1]
    scores = question_max_scores(probe_attention(lm.layers[1], h1, lm.rotary_emb(h1, positions), question))
    grid_positions, group_id = _groups(ctx)
    visual = torch.nonzero(kind == 1).squeeze(1)
    group = torch.tensor([group_id[grid_positions.tolist().index(int(c))] for c in cells[visual]])
    kept = visual[keep_per_group(scores[visual], group, 0.4)]
    keep = torch.sort(torch.cat([torch.nonzero(kind != 1).squeeze(1), kept])).values  # text and newlines stay

    h2 = run_layer(tiny_llm, 1, h1, positions)
    got_hidden, got_cos = seen[2]
    torch.testing.assert_close(got_hidden, h2[:, keep], rtol=0, atol=1e-6)
    torch.testing.assert_close(
        got_cos, lm.rotary_emb(h2, positions[:, keep])[0], rtol=0, atol=0
    )  # original positions
    # every layer's KV holds the kept tokens (layers 0..1 sliced after prefill) + the one decoded token fed back
    assert [layer.keys.shape[2] for layer in out.cache.layers] == [len(keep) + 1] * 4


def test_stage2_kv_slicing_can_be_turned_off(tiny_llm: VideoLLM, scene_frames: np.ndarray) -> None:
    method = build_method("prunevid", retention=0.25, layer=1, reference_depth=None, prune_early_kv=False)
    with method(tiny_llm):
        state, ctx, _, _ = tiny_llm.prepare(scene_frames, QUESTION)
        full = len(state)
        out = tiny_llm.runner.prefill(state, method, ctx)
    lengths = [layer.keys.shape[2] for layer in out.cache.layers]
    assert lengths[:2] == [full, full] and lengths[2] == lengths[3] < full


def _groups(ctx: SampleContext) -> tuple[torch.Tensor, list[int]]:
    positions, group_id = ctx.stats[GROUPS_KEY]
    return positions, group_id.tolist()

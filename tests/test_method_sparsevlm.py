"""SparseVLM's defining behaviour: raters are the text tokens whose (softmax-over-text) relevance to the video exceeds
the mean; video tokens are ranked by the raters' head-mean attention at the scoring layer; v1 recycles the best deleted
tokens into DPC-KNN cluster means placed after the kept tokens; positions are renumbered."""

from __future__ import annotations

import numpy as np
import torch

from adatp_bench.core.layout import VideoLayout
from adatp_bench.models.adapter import VideoLLM
from adatp_bench.models.attention import probe_attention
from adatp_bench.pruning import build_method
from adatp_bench.pruning.sparsevlm import cluster_and_merge, rater_scores, recycled_counts, select_raters
from llm_layers import layer_inputs, run_layer

QUESTION = "Which scene comes first?\nA. red\nB. blue"
OV_7B = VideoLayout(video_start=14, num_frames=32, grid_h=14, grid_w=14, newline_layout="per_video", seq_len=6350)


def test_raters_are_text_tokens_above_the_mean_relevance() -> None:
    video = torch.tensor([[1.0, 0.0], [2.0, 0.0]])
    text = torch.tensor([[3.0, 0.0], [0.0, 1.0], [1.0, 0.0], [-1.0, 0.0]])
    # v·tᵀ rows: [3, 0, 1, −1] and [6, 0, 2, −2]; softmax over text, then mean over the two video tokens.
    logits = torch.tensor([[3.0, 0.0, 1.0, -1.0], [6.0, 0.0, 2.0, -2.0]])
    relevance = logits.softmax(1).mean(0)  # ≈ [0.921, 0.022, 0.056, 0.002]; mean 0.25
    assert relevance[0] > 0.25 > relevance[1:].max()
    assert select_raters(video, text).tolist() == [0]
    flat = torch.tensor([[1.0, 0.0]] * 3)  # all text tokens equally relevant: nobody exceeds the mean
    assert select_raters(video, flat).tolist() == []


def test_scores_are_head_then_rater_means_over_the_video_span() -> None:
    attention = torch.zeros(2, 2, 5)  # (heads, raters, keys); video at 1..3
    attention[0, 0, 1:4] = torch.tensor([0.1, 0.2, 0.3])
    attention[1, 0, 1:4] = torch.tensor([0.3, 0.2, 0.1])
    attention[0, 1, 1:4] = torch.tensor([0.0, 0.4, 0.0])
    attention[1, 1, 1:4] = torch.tensor([0.0, 0.0, 0.4])
    got = rater_scores(attention, torch.tensor([1, 2, 3]))
    torch.testing.assert_close(got, torch.tensor([0.1, 0.2, 0.2]))


def test_cluster_and_merge_averages_each_cluster() -> None:
    a = torch.tensor([[10.0, 0.0], [10.2, 0.0], [9.8, 0.0]])
    b = torch.tensor([[0.0, 10.0], [0.0, 10.4]])
    merged, centres = cluster_and_merge(torch.cat([a, b]), 2, torch.Generator().manual_seed(0))
    assert len(set(centres.tolist())) == 2
    got = sorted(merged.tolist())
    torch.testing.assert_close(torch.tensor(got), torch.tensor([[0.0, 10.2], [10.0, 0.0]]), rtol=1e-5, atol=1e-5)


def test_recycled_counts_follow_upstream() -> None:
    assert recycled_counts(5621) == (1687, 169)  # int(0.3·5621)+1, int(1687/10)+1
    assert recycled_counts(3) == (1, 1)
    assert recycled_counts(0) == (0, 0)


def test_fastvid_schedule_counts() -> None:
    """FastVID's OV-7B row: 3 layers at 6272(+1), 4 at 10.4%, 9 at 5.3%, 12 at 2.9% (docs/flops.md §4)."""
    plain = build_method("sparsevlm", retention=0.104, recycle=False)
    assert plain.stage_counts(6273) == [652, 332, 181]
    assert plain.expected_video_tokens(OV_7B, 28) == [6273] * 3 + [652] * 4 + [332] * 9 + [181] * 12
    # with v1 recycling: +169 clusters, then 489 deleted → 147 recycled → +15, then 166 → 50 → +6
    assert build_method("sparsevlm", retention=0.104).stage_counts(6273) == [821, 347, 187]


def test_prune_and_recycle_on_the_tiny_model(tiny_llm: VideoLLM, scene_frames: np.ndarray) -> None:
    method = build_method(
        "sparsevlm", retention=0.25, layers=[1, 2], reference_depth=None, reference_ratios=[0.25, 0.1], recycle=True
    )
    lm = tiny_llm.runner.lm
    with method(tiny_llm), layer_inputs(tiny_llm, [2, 3]) as seen:
        state, ctx, _, _ = tiny_llm.prepare(scene_frames, QUESTION)
        embeds, positions, kind = state.hidden.clone(), state.position_ids.clone(), state.kind.clone()
        question_mask = state.question_mask.clone()
        out = tiny_llm.runner.prefill(state, method, ctx)
        tiny_llm.runner.decode(out, 2, set(), method, ctx)

    video = torch.nonzero(kind != 0).squeeze(1)
    question = torch.nonzero(question_mask).squeeze(1)
    raters = question[select_raters(embeds[0, video], embeds[0, question])]
    h1 = run_layer(tiny_llm, 0, embeds, positions)
    h2 = run_layer(tiny_llm, 1, h1, positions)
    scores = rater_scores(probe_attention(lm.layers[1], h1, lm.rotary_emb(h1, positions), raters), video)

    budget = int(ctx.layout.video_len * 0.25)
    kept = torch.sort(torch.topk(scores, budget).indices).values
    deleted = torch.tensor(sorted(set(range(len(video))) - set(kept.tolist())))
    n_recycled, n_clusters = recycled_counts(len(deleted))
    recycled = deleted[torch.topk(scores[deleted], n_recycled).indices]
    merged, _ = cluster_and_merge(h2[0, video[recycled]], n_clusters, torch.Generator().manual_seed(ctx.seed))
    start, end = int(video[0]), int(video[-1]) + 1
    want = torch.cat([h2[0, :start], h2[0, video[kept]], merged, h2[0, end:]])[None]

    got_hidden, got_cos = seen[2]
    torch.testing.assert_close(got_hidden, want, rtol=0, atol=1e-6)  # [text, kept in order, clusters, text]
    renumbered = torch.arange(want.shape[1])[None]
    torch.testing.assert_close(got_cos, lm.rotary_emb(want, renumbered)[0], rtol=0, atol=0)
    assert out.video_tokens_per_layer == method.expected_video_tokens(ctx.layout, 4)
    assert out.video_tokens_per_layer[2] == budget + n_clusters

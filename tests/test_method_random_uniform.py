"""The cheap references: random is seeded per sample; uniform keeps an evenly spread spatial grid."""

from __future__ import annotations

import torch

from adatp_bench.core.context import SampleContext
from adatp_bench.core.layout import VideoLayout, VisualTokens
from adatp_bench.pruning import build_method
from adatp_bench.pruning.random_prune import random_keep
from adatp_bench.pruning.uniform import pooled_grid, region_centres


def context(frames: int, side: int, seed: int = 0, newline: str = "per_video") -> SampleContext:
    layout = VideoLayout(video_start=3, num_frames=frames, grid_h=side, grid_w=side, newline_layout=newline, seq_len=0)
    return SampleContext(layout=layout, question="q", seed=seed, vision_hidden=torch.zeros(0), pool_map=lambda x: x)


def grid_tokens(frames: int, side: int) -> VisualTokens:
    """Token (f, r, c) has features (f, r, c) so selections can be read off the features."""
    f, r, c = torch.meshgrid(torch.arange(frames), torch.arange(side), torch.arange(side), indexing="ij")
    return VisualTokens.from_grid(torch.stack([f, r, c], dim=-1).float())


def test_random_is_seeded_per_sample() -> None:
    method = build_method("random", retention=0.25)
    picks = {}
    for seed in (1, 1, 2):
        kept = method.select_visual(grid_tokens(4, 14), context(4, 14, seed))
        picks.setdefault(seed, []).append(kept.features)
    assert torch.equal(picks[1][0], picks[1][1])  # same seed, same tokens
    assert not torch.equal(picks[1][0], picks[2][0])  # another seed, other tokens


def test_random_per_frame_budget_and_raster_order() -> None:
    kept = build_method("random", retention=0.25).select_visual(grid_tokens(4, 14), context(4, 14))
    assert kept.counts_per_frame(4).tolist() == [49] * 4  # int(196·0.25) per frame
    key = kept.frame * 196 + kept.row * 14 + kept.col
    assert bool((key.diff() > 0).all())
    whole = random_keep(4, 196, 0.1, per_frame=False, generator=torch.Generator().manual_seed(0))
    assert len(whole) == int(4 * 196 * 0.1) and bool((whole.diff() > 0).all())


def test_uniform_grid_sizes() -> None:
    # Largest near-square grid within the per-frame budget int(T·r).
    assert [pooled_grid(b, 14, 14) for b in (49, 39, 29, 19)] == [(7, 7), (6, 6), (5, 5), (4, 4)]
    assert [pooled_grid(b, 13, 13) for b in (42, 16)] == [(6, 7), (4, 4)]
    assert region_centres(14, 7).tolist() == [0, 2, 4, 6, 8, 10, 12]  # every other row
    assert region_centres(13, 6).tolist() == [1, 3, 5, 7, 9, 11]  # regions [0,3) [2,5) [4,7) [6,9) [8,11) [10,13)


def test_uniform_sample_keeps_an_evenly_spread_grid() -> None:
    kept = build_method("uniform", retention=0.25, mode="sample").select_visual(grid_tokens(2, 4), context(2, 4))
    # 4×4 grid, budget 4 → 2×2 regions [0,2)×[0,2) …; their centre cells (0,0) (0,2) (2,0) (2,2) in every frame.
    cells = [(int(r), int(c)) for r, c in zip(kept.row, kept.col, strict=True)]
    assert cells == [(0, 0), (0, 2), (2, 0), (2, 2)] * 2
    assert torch.equal(kept.features[:, 1:], torch.tensor(cells, dtype=torch.float32))


def test_uniform_pool_averages_each_region() -> None:
    tokens = grid_tokens(1, 4)
    kept = build_method("uniform", retention=0.25).select_visual(tokens, context(1, 4))
    blocks = tokens.features.view(4, 4, 3).unfold(0, 2, 2).unfold(1, 2, 2).mean((-1, -2)).reshape(4, 3)
    torch.testing.assert_close(kept.features, blocks)  # rows/cols 0.5 and 2.5: the 2×2 block means
    assert kept.weight.tolist() == [4.0] * 4
    layout = context(8, 4, newline="per_row").layout
    assert build_method("uniform", retention=0.25).expected_video_tokens(layout, 2) == [8 * 4 + 8 * 2] * 2

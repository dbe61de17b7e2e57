"""VidCom2's defining behaviour: frame budgets scaled by frame uniqueness, and per frame the tokens least similar to the
video and frame means; reduced before the sequence is built (contiguous positions).

The oracle test runs the official ``vidcom2_compression`` (``xuyang-liu16/VidCom2@944a17d``,
``token_compressor/vidcom2/vidcom2.py``, imports only torch) from a checkout at ``$ADATP_ORACLE_SRC/VidCom2``.
"""

from __future__ import annotations

import importlib.util
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from adatp_bench.core.sequence import NEWLINE, VISUAL
from adatp_bench.models.adapter import VideoLLM
from adatp_bench.pruning import build_method
from adatp_bench.pruning.vidcom2 import (
    frame_budgets,
    frame_scales,
    low_variance_channels,
    multi_scale_gaussian,
    vidcom2_keep,
)

QUESTION = "What happens?"
ORACLE = Path(os.environ.get("ADATP_ORACLE_SRC", "/nonexistent")) / "VidCom2/token_compressor/vidcom2/vidcom2.py"


def test_frame_budgets_follow_uniqueness_and_round_half_to_even() -> None:
    # Frame 2 is far from the video mean (low Gaussian similarity): softmax at T = 0.01 gives it p ≈ 1.
    video_score = torch.tensor([[5.0, 5.0], [5.0, 5.0], [1.0, 1.0], [5.0, 5.0]])
    scales = frame_scales(video_score, 0.25)
    assert torch.allclose(scales, torch.tensor([0.1875, 0.1875, 0.4375, 0.1875]))  # r(1 + p − 1/4)
    # 0.4375·8 = 3.5 → 4 and 0.1875·8 = 1.5 → 2 (torch.round, halves to even): 10 tokens, not r·F·T = 8.
    assert frame_budgets(scales, 8) == [2, 2, 4, 2]
    assert frame_budgets(torch.tensor([0.01, 1.0]), 8) == [1, 8]  # at least one token per frame


def test_low_variance_channels_are_kept() -> None:
    x = torch.tensor([[0.0, 10.0, 1.0, -5.0], [0.5, -10.0, 1.0, 5.0]])  # variances 0.0625, 100, 0, 25 (exact)
    assert low_variance_channels(x).tolist() == [[1.0, 0.0], [1.0, 0.5]]  # channels 2 then 0


def test_multi_scale_gaussian_by_hand() -> None:
    x = torch.tensor([[0.0, 0.0], [1.0, 0.0]])
    got = multi_scale_gaussian(x, torch.zeros(1, 2))
    # ‖x − c‖² = 0 → five scales of 1; ‖x − c‖² = 1 → Σ_a exp(−1/2a), a = 1/8, 1/4, 1/2, 1, 2.
    want = torch.tensor([5.0, sum(math.exp(-1 / (2 * a)) for a in (0.125, 0.25, 0.5, 1.0, 2.0))])
    torch.testing.assert_close(got, want)


def test_equally_unique_frames_keep_round_r_t_each() -> None:
    # Identical frames: uniform softmax, s_f = r, so every frame keeps round(r·T) = round(0.3·10) = 3: 3·F in all.
    g = torch.Generator().manual_seed(1)
    frame = torch.randn(10, 6, generator=g)
    keep, budgets = vidcom2_keep(frame.repeat(4, 1), 10, retention=0.3)
    assert budgets == [3, 3, 3, 3]
    assert all(k.tolist() == keep[0].tolist() for k in keep)  # same scores in every frame


def test_keeps_the_most_distinctive_token_of_each_frame() -> None:
    g = torch.Generator().manual_seed(0)
    base = torch.randn(8, generator=g)
    frames = base.repeat(4, 6, 1) + 0.01 * torch.randn(4, 6, 8, generator=g)
    outliers = {0: 3, 1: 0, 2: 5, 3: 2}
    for f, cell in outliers.items():
        frames[f, cell] = torch.randn(8, generator=g) * 3
    keep, budgets = vidcom2_keep(frames.reshape(24, 8), 6, retention=1 / 6)
    assert all(k >= 1 for k in budgets)
    for f, cell in outliers.items():  # the outlier is the least similar token, so it is always among those kept
        assert cell in keep[f].tolist()
        assert keep[f].tolist() == sorted(keep[f].tolist())


@pytest.mark.skipif(not ORACLE.exists(), reason="set ADATP_ORACLE_SRC to a directory with VidCom2 at 944a17d")
def test_matches_the_official_compression() -> None:
    spec = importlib.util.spec_from_file_location("vidcom2_official", ORACLE)
    official = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(official)
    g = torch.Generator().manual_seed(3)
    flat = torch.randn(32 * 196, 64, generator=g) + torch.randn(32, 64, generator=g).repeat_interleave(196, 0)
    for r in (0.25, 0.1):
        want = official.vidcom2_compression(flat, "llava_ov", base_scale=r)
        keep, _ = vidcom2_keep(flat, 196, r)
        ours = torch.cat([cells + f * 196 for f, cells in enumerate(keep)])
        assert torch.equal(flat[ours], want)


@pytest.mark.parametrize("spec", ["tiny", "tiny_video"])
def test_counts_positions_and_newlines_on_the_model(spec: str, request: pytest.FixtureRequest) -> None:
    llm: VideoLLM = request.getfixturevalue(f"{spec}_llm")
    frames = request.getfixturevalue("scene_frames")
    method = build_method("vidcom2", retention=0.25)
    with method(llm):
        state, ctx, _, _ = llm.prepare(frames, QUESTION)
    layout = ctx.layout
    budgets = ctx.stats["frame_budgets"]
    assert len(budgets) == layout.num_frames
    # Budget accounting: Σ_f k_f grid tokens; newlines: OV's single one, LLaVA-Video's every row of every frame.
    assert int((state.kind == VISUAL).sum()) == sum(budgets)
    newlines = 1 if layout.newline_layout == "per_video" else layout.num_frames * layout.grid_h
    assert int((state.kind == NEWLINE).sum()) == newlines
    assert torch.bincount(state.frame[state.kind == VISUAL], minlength=layout.num_frames).tolist() == budgets
    assert torch.equal(state.position_ids[0].cpu(), torch.arange(len(state)))  # contiguous by construction
    # Kept tokens are the original pooled tokens, at their cells, in raster order.
    grid, _, _ = llm.encode_video(llm.pixel_values(frames))
    visual = state.kind == VISUAL
    cells = (state.frame * layout.tokens_per_frame + state.row * layout.grid_w + state.col)[visual]
    assert bool((cells.diff() > 0).all())
    torch.testing.assert_close(state.hidden[0, visual], grid.reshape(layout.num_grid_tokens, -1)[cells])


def test_retention_one_keeps_everything(tiny_llm: VideoLLM, scene_frames: np.ndarray) -> None:
    with build_method("vidcom2", retention=1.0)(tiny_llm):
        state, ctx, _, _ = tiny_llm.prepare(scene_frames, QUESTION)
    assert state.num_video() == ctx.layout.video_len

"""Downsampling at the same visual-token budget: which frames stay, how many tokens each layout gets, and when a
budget cannot be reached."""

from __future__ import annotations

import pytest
import torch

from adatp_bench.core.layout import VideoLayout
from adatp_bench.errors import ConfigError, UnreachableSetting
from adatp_bench.pruning import build_method
from adatp_bench.pruning.downsample import kept_frames

OV = VideoLayout(video_start=10, num_frames=32, grid_h=14, grid_w=14, newline_layout="per_video",
                 seq_len=10 + 6273 + 20)
VIDEO = VideoLayout(
    video_start=10, num_frames=64, grid_h=13, grid_w=13, newline_layout="per_row", seq_len=10 + 64 * 182 + 20
)


def test_kept_frames_are_the_centres_of_equal_spans() -> None:
    assert kept_frames(32, 8).tolist() == [2, 6, 10, 14, 18, 22, 26, 30]
    assert kept_frames(10, 3).tolist() == [1, 5, 8]  # ⌊(i + ½)·10/3⌋
    assert kept_frames(4, 4).tolist() == [0, 1, 2, 3]


@pytest.mark.parametrize(
    ("layout", "axis", "retention", "tokens"),
    [
        (OV, "temporal", 0.25, 8 * 196 + 1),  # 8 whole frames + the video's one newline
        (OV, "spatial", 0.25, 32 * 49 + 1),  # every frame 7×7
        (OV, "both", 0.25, 16 * 90 + 1),  # 16 frames of ≤ 98 tokens → 9×10
        (OV, "temporal", 0.10, 3 * 196 + 1),  # int(3.2) frames
        (VIDEO, "temporal", 0.25, 16 * (169 + 13)),  # whole frames keep all 13 row newlines
        (VIDEO, "spatial", 0.25, 64 * (42 + 6)),  # 6×7 grid, one newline per coarse row
    ],
)
def test_token_counts_stay_within_the_budget(layout: VideoLayout, axis: str, retention: float, tokens: int) -> None:
    method = build_method("downsample", retention=retention, axis=axis)
    method.validate(layout.tokens_per_frame, layout.num_frames, 28)
    counts = method.expected_video_tokens(layout, 28)
    assert counts == [tokens] * 28


def test_unreachable_and_invalid_settings_are_named() -> None:
    with pytest.raises(UnreachableSetting, match="keeps 0 of 8 frames"):
        build_method("downsample", retention=0.1, axis="temporal").validate(196, 8, 28)
    with pytest.raises(ConfigError, match="axis='frames'"):
        build_method("downsample", axis="frames").validate(196, 8, 28)


def test_temporal_downsampling_keeps_whole_frames_in_order() -> None:
    from types import SimpleNamespace

    from adatp_bench.core.layout import VisualTokens

    layout = VideoLayout(video_start=0, num_frames=8, grid_h=2, grid_w=2, newline_layout="per_video", seq_len=33)
    tokens = VisualTokens.from_grid(torch.arange(8 * 4, dtype=torch.float32).view(8, 2, 2, 1))
    ctx = SimpleNamespace(layout=layout, stats={})
    kept = build_method("downsample", retention=0.5, axis="temporal").select_visual(tokens, ctx)  # type: ignore[arg-type]
    assert kept.frame.unique().tolist() == [1, 3, 5, 7]
    assert kept.features.squeeze(1).tolist() == [float(v) for f in (1, 3, 5, 7) for v in range(4 * f, 4 * f + 4)]
    assert ctx.stats == {"retention_prefill": 0.5, "frames_kept": 4}

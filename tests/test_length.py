"""Length extrapolation: more sampled frames at the same visual-token budget, rendered against vanilla at the
model's default frames."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from adatp_bench.config import compose
from adatp_bench.report import length
from adatp_bench.run import run_cell


def test_four_times_the_frames_at_a_quarter_of_the_tokens_matches_vanilla_tokens(tmp_path: Path) -> None:
    """Temporal downsampling of 32 frames to 8 sees as many tokens as vanilla's 8 frames: the row's visual tokens and
    FLOPs equal vanilla's; the table and the score-vs-frames plot are written."""
    grid = ["+length=f32_r25", "method=downsample", f"paths.root={tmp_path}"]
    for overrides in (["experiment=length_demo", *grid], ["experiment=length_demo_vanilla", f"paths.root={tmp_path}"]):
        assert run_cell(compose([*overrides, f"paths.root={tmp_path}"])).status == "done"
    out = tmp_path / "length"
    length.main(["--experiment", "length_demo,length_demo_vanilla", "--results", str(tmp_path / "results" / "runs"),
                 "--out", str(out), f"paths.root={tmp_path}"])  # fmt: skip
    table = pd.read_csv(out / "length.csv")
    table = table[table.Avg.notna() & (table.Avg != "—")].set_index("method")  # the cells run here
    assert table.loc["downsample", "frames"] == 32 and table.loc["vanilla", "frames"] == 8
    assert table.loc["downsample", "visual tokens"] == table.loc["vanilla", "visual tokens"]
    assert table.loc["downsample", "% of vanilla FLOPs"] == pytest.approx(100.0)
    assert table.loc["downsample", "setting"] == "32 frames × 25%"
    assert (out / "length_frames.png").stat().st_size > 1000
    assert "32 frames × 25%" in (out / "length.md").read_text()

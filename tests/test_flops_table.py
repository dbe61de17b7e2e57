"""`make flops-table`: every cell of the Table 1 grid from the real methods, compared with FastVID's printed TFLOPs
(read from report/reference/*.csv, never typed here), and the AdaTP operating points on their published targets."""

from __future__ import annotations

import csv
import subprocess
import sys

import pytest

from adatp_bench import flops
from adatp_bench.report import flops_grid, flops_table
from adatp_bench.report import published as reference

GRID = flops_grid.grid_rows()
CELLS = {(r.model, r.method, r.budget): r for r in GRID}


def published(csv_name: str, method: str, retention: str) -> tuple[str, str]:
    """(printed TFLOPs, token schedule) of one row of a reference CSV."""
    with (reference.REFERENCE_DIR / csv_name).open(newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["method"] == method and r["retention"] == retention]
    assert len(rows) == 1, (csv_name, method, retention)
    column = "tflops" if "tflops" in rows[0] else "tflops_incl_newlines"  # Table 2 counts the kept newlines
    return rows[0][column], rows[0]["n_schedule_derived"]


def test_grid_covers_every_cell_of_table1_yaml() -> None:
    models, methods, budgets = flops_grid.table1_grid()
    assert set(models) == {"llava_ov_0.5b", "llava_ov_7b", "llava_video_7b"}
    for model in models:
        for method in methods:
            keys = ["all"] if method == "vanilla" else budgets
            for budget in keys:
                assert (model, method, budget) in CELLS, (model, method, budget)
    assert len(GRID) == len(models) * (1 + (len(methods) - 1) * len(budgets))


@pytest.mark.parametrize(
    ("method", "row"),
    [("fastv", ("FastV", "100%/25%")), ("visionzip", ("VisionZip*", "25%"))]
    + [(m, ("VisionZip*", "25%")) for m in ("random", "uniform")],  # same int(196·0.25) = 49 tokens per frame
)
def test_r25_cells_on_ov7b_reproduce_fastvid_printed_tflops(method: str, row: tuple[str, str]) -> None:
    printed, schedule = published("fastvid_table1_llava_ov_7b.csv", *row)
    cell = CELLS["llava_ov_7b", method, "r25"]
    assert cell.status == "ok"
    decimals = len(printed.partition(".")[2])
    assert f"{cell.tflops:.{decimals}f}" == printed
    assert list(cell.tokens_per_layer) == flops.parse_schedule(schedule)  # paper convention: no trailing newline
    assert cell.published is not None and cell.published.published_text == printed and cell.matches


def test_vanilla_cells_count_paper_positions() -> None:
    assert CELLS["llava_ov_7b", "vanilla", "all"].tokens_per_layer == (6272,) * 28  # OV newline not counted
    assert CELLS["llava_ov_0.5b", "vanilla", "all"].tokens_per_layer == (6272,) * 24
    assert CELLS["llava_video_7b", "vanilla", "all"].tokens_per_layer == (11648,) * 28  # 832 row newlines counted
    printed, _ = published("fastvid_table1_llava_ov_7b.csv", "Vanilla", "100%")
    assert f"{CELLS['llava_ov_7b', 'vanilla', 'all'].tflops:.2f}" == printed


def test_adatp_operating_points_land_on_published_targets() -> None:
    with (reference.REFERENCE_DIR / "adatp_headline.csv").open(newline="") as fh:
        targets = sorted(float(r["flops_pct"]) for r in csv.DictReader(fh) if r["method"] == "AdaTP")
    pairs = flops_grid.operating_point_rows()
    assert sorted(op.target_pct for op, _ in pairs) == targets
    for op, row in pairs:
        assert row.status == "ok"
        assert round(row.pct, 2) == pytest.approx(op.target_pct, abs=1e-9), op


@pytest.mark.parametrize(
    "key",
    [(m, method, "r25") for m in ("llava_ov_7b", "llava_video_7b") for method in ("fastvid", "holitom", "prunevid")]
    + [
        ("llava_video_7b", "fastv", "r25"),
        ("llava_video_7b", "random", "r10"),
        ("llava_ov_0.5b", "prunevid_stage1", "r10"),
    ],
)
def test_data_dependent_cells_are_reported_as_such(key: tuple[str, str, str]) -> None:
    cell = CELLS[key]
    assert cell.status == "data-dependent"
    assert cell.tflops is None and cell.pct is None and cell.matches is None
    _, _, tokens, tflops, pct, _, _ = flops_table.grid_table([cell])[0]
    assert tokens.startswith(flops_grid.DATA_DEPENDENT) and tflops == pct == ""  # a status, never a number
    assert flops_grid.DATA_DEPENDENT in flops_table.render_grid([cell])


def test_fastv_on_llava_video_fixes_the_grid_part_only() -> None:
    cell = CELLS["llava_video_7b", "fastv", "r25"]
    _, schedule = published("fastvid_table2_llava_video_7b.csv", "FastV", "100%/25%")
    assert "2704" in cell.message and "(2704+" in schedule  # round(10816·0.25) grid tokens, as FastVID


def test_invalid_settings_print_the_config_error() -> None:
    cell = CELLS["llava_ov_7b", "dycoke", "r10"]
    assert cell.status == "invalid" and "dycoke retention=0.1" in cell.message
    assert f"invalid: {cell.message}" in flops_table.render_grid([cell])


def test_ov_newline_ranked_methods_show_both_counts() -> None:
    cell = CELLS["llava_ov_7b", "pdrop", "r25"]
    assert cell.tokens_per_layer_alt is not None
    assert [b - a for a, b in zip(cell.tokens_per_layer, cell.tokens_per_layer_alt, strict=True)] == [0] * 8 + [1] * 20
    assert cell.tflops < cell.tflops_alt


def test_command_exits_zero_and_prints_the_grid() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "adatp_bench.report.flops_table"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    out = done.stdout
    assert "(b) Table 1 grid" in out and "(c) AdaTP operating points" in out
    assert out.count(flops_grid.DATA_DEPENDENT) >= 4 * 3 * 4  # 4 methods × 3 models × 4 budgets
    assert "40/43 rows match" in out


def test_fastvid_settings_outside_the_grid() -> None:
    rows = {label: row for label, row in flops_grid.outside_grid_rows()}
    assert rows["PyramidDrop 100%/4.1%/2.0%/1.0%"].matches  # FastVID Table 11, 14.7
    assert rows["SparseVLM 10.4/5.3/2.9%, no recycling"].matches  # 7.06
    dycoke = rows["DyCoke 32.5% (K = 0.9)"]
    printed, _ = published("fastvid_table1_llava_ov_7b.csv", "DyCoke", "32.5%")
    assert dycoke.published.published_text == printed
    assert dycoke.tokens_per_layer == (2024,) * 28 and dycoke.matches is False and dycoke.known_gap
    assert rows["PruneVID* 10.1% (β = 0.11)"].status == "data-dependent"

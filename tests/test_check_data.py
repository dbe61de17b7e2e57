"""`python -m adatp_bench.eval.check_data`: clean data passes; every missing and undecodable video is reported, each
by name, with exit status 1; the check decodes the frames a cell samples, not just the first one."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from adatp_bench.eval.check_data import check_dataset, main
from adatp_bench.eval.dataset import dataset_ref


@pytest.fixture
def data(synthetic_data: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "data"
    shutil.copytree(synthetic_data, copy)
    return copy


def test_clean_data_passes(data: Path) -> None:
    for bench in ("videomme", "mlvu_dev", "longvideobench_val_v"):
        report = check_dataset(dataset_ref({"benchmark": bench, "data_dir": str(data)}), 8)
        assert report.ok and report.rows == report.videos > 0 and not report.warnings, report.summary()


def test_missing_and_corrupt_videos_are_all_reported(data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    videos = sorted((data / "videomme" / "data").glob("*.mp4"))
    videos[0].unlink()
    videos[1].write_bytes(b"this is not an mp4")
    report = check_dataset(dataset_ref({"benchmark": "videomme", "data_dir": str(data)}), 8)
    assert set(report.failures) == {videos[0].stem, videos[1].stem}
    assert videos[0].name in report.failures[videos[0].stem] and videos[1].name in report.failures[videos[1].stem]
    with pytest.raises(SystemExit) as exit_info:
        main(["benchmark=videomme", f"benchmark.data_dir={data}", "model=tiny"])
    assert exit_info.value.code == 1
    assert "2 videos missing or undecodable" in capsys.readouterr().out


def test_the_cli_takes_a_cells_overrides(data: Path, tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "adatp_bench.eval.check_data", "benchmark=mlvu_dev", f"benchmark.data_dir={data}",
         "model=tiny_video"],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "mlvu_dev: 8 questions, 8 videos" in proc.stdout and "8 frames sampled): all usable" in proc.stdout


def test_missing_annotation_exits_with_its_path(data: Path) -> None:
    with pytest.raises(SystemExit, match=r"nope\.parquet does not exist"):
        main(["benchmark=mlvu_dev", f"benchmark.data_dir={data}", f"benchmark.annotation={data / 'nope.parquet'}"])

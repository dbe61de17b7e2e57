"""The data check finds every missing and every undecodable video of a benchmark, naming each."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from adatp_bench.errors import DatasetError
from adatp_bench.eval.check_data import check_benchmark, main


@pytest.fixture
def data(synthetic_data: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "data"
    shutil.copytree(synthetic_data, copy)
    return copy


def test_clean_data_passes(data: Path) -> None:
    for bench in ("videomme", "mlvu_dev", "longvideobench_val_v"):
        report = check_benchmark(bench, data)
        assert report.ok and report.rows == report.videos > 0, report.summary()


def test_missing_and_corrupt_videos_are_all_reported(data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    videos = sorted((data / "videomme" / "data").glob("*.mp4"))
    videos[0].unlink()
    videos[1].write_bytes(b"this is not an mp4")
    report = check_benchmark("videomme", data)
    assert set(report.failures) == {videos[0].stem, videos[1].stem}
    assert videos[0].name in report.failures[videos[0].stem] and videos[1].name in report.failures[videos[1].stem]
    with pytest.raises(SystemExit) as exit_info:
        main(["videomme", "--data-dir", str(data)])
    assert exit_info.value.code == 1
    assert "2 missing or undecodable" in capsys.readouterr().out


def test_bad_annotation_file(data: Path) -> None:
    with pytest.raises(DatasetError, match="does not exist"):
        check_benchmark("mlvu_dev", data, annotation=data / "nope.parquet")

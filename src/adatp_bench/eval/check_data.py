"""Check a benchmark's data before a sweep: every annotation row's video resolves and decodes.

    python -m adatp_bench.eval.check_data videomme --data-dir $HF_HOME
    python -m adatp_bench.preflight table1 --videos          # the same for every benchmark of a grid

Real downloads have missing and unreadable videos (docs/upstream.md §4.1: LongVideoBench, MLVU, VideoMME threads); found
mid-sweep, each one fails a cell after its model time is spent. This walks the annotation file once, resolves each video
with the same ``doc_to_visual`` the tasks use (which opens the file and decodes its first frame), and reports every
failure with the file named. Unique videos are probed once (benchmarks ask several questions per video).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from adatp_bench.errors import DatasetError, VideoError
from adatp_bench.eval import visuals
from adatp_bench.eval.tasks import BENCHMARKS, VIDEO_DIR_KEY

DOC_TO_VISUAL: dict[str, Callable] = {
    "videomme": visuals.videomme_doc_to_visual,
    "mlvu_dev": visuals.mlvu_dev_doc_to_visual,
    "longvideobench_val_v": visuals.longvideobench_doc_to_visual,
}
VIDEO_KEY = {"videomme": "videoID", "mlvu_dev": "video_name", "longvideobench_val_v": "video_path"}


@dataclass
class DataReport:
    """What a data check found for one benchmark."""

    benchmark: str
    annotation: Path
    video_dir: Path
    rows: int = 0
    videos: int = 0
    failures: dict[str, str] = field(default_factory=dict)  # video key → error message

    @property
    def ok(self) -> bool:
        return not self.failures

    def summary(self, show: int = 10) -> str:
        head = f"{self.benchmark}: {self.rows} questions, {self.videos} videos under {self.video_dir}"
        if self.ok:
            return head + ": all decodable"
        lines = [head + f": {len(self.failures)} missing or undecodable"]
        lines += [f"  - {msg}" for msg in list(self.failures.values())[:show]]
        if len(self.failures) > show:
            lines.append(f"  … and {len(self.failures) - show} more")
        return "\n".join(lines)


def read_annotation(path: Path) -> pd.DataFrame:
    """Rows of a parquet, JSON or JSON-lines annotation file."""
    if not path.exists():
        raise DatasetError(f"annotation file {path} does not exist")
    if path.suffix == ".parquet":
        return pd.read_parquet(path)
    if path.suffix in {".json", ".jsonl"}:
        return pd.read_json(path, lines=path.suffix == ".jsonl")
    raise DatasetError(f"{path}: unsupported annotation format (parquet, json or jsonl)")


def check_benchmark(
    benchmark: str, data_dir: Path, annotation: Path | None = None, video_dir: Path | None = None
) -> DataReport:
    """Resolve and probe every video of ``benchmark`` in the data layout of ``eval/tasks``."""
    if benchmark not in BENCHMARKS:
        raise DatasetError(f"unknown benchmark {benchmark!r}; valid: {sorted(BENCHMARKS)}")
    spec = BENCHMARKS[benchmark]
    annotation = annotation or data_dir / spec.annotation
    video_dir = video_dir or data_dir / spec.video_subdir
    rows = read_annotation(annotation)
    key = VIDEO_KEY[benchmark]
    if key not in rows.columns:
        raise DatasetError(f"{annotation}: no {key!r} column (columns: {list(rows.columns)})")
    report = DataReport(benchmark, annotation, video_dir, rows=len(rows))
    first_rows = rows.drop_duplicates(subset=key)
    report.videos = len(first_rows)
    kwargs = {VIDEO_DIR_KEY: str(video_dir)}
    for doc in tqdm(first_rows.to_dict("records"), desc=f"{benchmark} videos", leave=False, disable=len(rows) < 50):
        try:
            DOC_TO_VISUAL[benchmark](doc, kwargs)
        except (VideoError, DatasetError) as err:
            report.failures[str(doc[key])] = str(err)
    return report


def main(argv: list[str] | None = None) -> None:
    """CLI: exit 1 if any video is missing or undecodable."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("benchmark", choices=sorted(BENCHMARKS))
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--annotation", type=Path, default=None)
    parser.add_argument("--video-dir", type=Path, default=None)
    args = parser.parse_args(argv)
    report = check_benchmark(args.benchmark, args.data_dir, args.annotation, args.video_dir)
    print(report.summary())
    sys.exit(0 if report.ok else 1)


if __name__ == "__main__":
    main()

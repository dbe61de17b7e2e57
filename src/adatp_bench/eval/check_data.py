"""Pre-flight of a benchmark's data: every row follows the schema, and every video decodes at the frames a cell samples.

    python -m adatp_bench.eval.check_data benchmark=videomme model=llava_ov_7b     # Hydra overrides, as for a cell
    python -m adatp_bench.eval.check_data benchmark=mlvu_dev benchmark.data_dir=/data/hf

Every cell runs the same check on the documents it scores before any model loads (``run.py``), so a missing,
corrupt, zero-byte, fake or truncated video and a malformed row stop the cell at once, with the file, row and reason
named, instead of surfacing mid-run. A video is checked by decoding exactly the frames the cell will feed the model
(:func:`adatp_bench.eval.video.read_sampled`: uniform indices, seeking on long videos), which catches a truncated
"faststart" mp4 whose header still promises every frame. Results are cached per file content (size, mtime) and frame
count, so a sweep checks each video once. Videos with fewer frames than are sampled work (frames repeat, as LLaVA
does) and are reported as warnings.

Exit status 1 when anything is wrong.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from adatp_bench.errors import DataCheckError, DatasetError, VideoError
from adatp_bench.eval.custom import question_problems
from adatp_bench.eval.dataset import DatasetRef, load_rows
from adatp_bench.eval.schema import SHOWN, schema_problems
from adatp_bench.eval.video import read_sampled, resolve_video

#: The column naming each document's video, per benchmark.
VIDEO_KEY = {
    "videomme": "videoID",
    "mlvu_dev": "video_name",
    "longvideobench_val_v": "video_path",
    "custom": "video",
    "mvbench": "video",
}


@dataclass
class DataReport:
    """What a data check found for one benchmark."""

    benchmark: str
    annotation: Path
    video_dir: Path
    num_frames: int
    rows: int = 0  # rows checked (the first ``limit`` of the file)
    total_rows: int = 0  # rows in the file
    videos: int = 0
    schema: list[str] = field(default_factory=list)  # row problems (file, column, row id, value)
    failures: dict[str, str] = field(default_factory=dict)  # video name → why it cannot be used
    warnings: dict[str, str] = field(default_factory=dict)  # video name → usable, but worth knowing
    total_frames: dict[str, int] = field(default_factory=dict)  # video name → decodable frames

    @property
    def ok(self) -> bool:
        return not self.schema and not self.failures

    def summary(self, show: int = SHOWN) -> str:
        head = (
            f"{self.benchmark}: {self.rows} questions, {self.videos} videos under {self.video_dir} "
            f"(annotation {self.annotation}, {self.num_frames} frames sampled)"
        )
        lines = [head + (": all usable" if self.ok else "")]
        for title, problems in (
            ("schema problems", self.schema),
            ("videos missing or undecodable", list(self.failures.values())),
            ("warnings", list(self.warnings.values())),
        ):
            if problems:
                lines.append(f"  {len(problems)} {title}:")
                lines += [f"    - {p}" for p in problems[:show]]
                if len(problems) > show:
                    lines.append(f"    … and {len(problems) - show} more")
        return "\n".join(lines)


def check_dataset(ref: DatasetRef, num_frames: int, limit: int | None = None, progress: bool = True) -> DataReport:
    """Check the schema of the first ``limit`` rows (all by default) and every video they name, at ``num_frames``.

    MVBench: the first ``limit`` rows *of each selected sub-task* (lmms-eval applies ``limit`` per task of a group),
    each file's problems named by that file, each video looked up in its sub-task's folder.
    """
    if ref.benchmark == "mvbench":
        return _check_mvbench(ref, num_frames, limit, progress)
    all_rows = load_rows(ref.annotation)
    rows = all_rows[:limit] if limit is not None else all_rows
    report = DataReport(ref.benchmark, ref.annotation, ref.video_dir, num_frames, len(rows), len(all_rows))
    if not rows:
        report.schema.append(f"{ref.annotation} holds no rows")
        return report
    if ref.benchmark == "custom":
        problems = question_problems(rows, ref.freeform)
    else:
        problems = schema_problems(ref.benchmark, rows)
    report.schema = [f"{ref.annotation}: {p}" for p in problems]
    key = VIDEO_KEY[ref.benchmark]
    names = list(dict.fromkeys(str(r[key]) for r in rows if isinstance(r.get(key), str) and r.get(key)))
    report.videos = len(names)
    for name in tqdm(names, desc=f"{ref.benchmark} videos", leave=False, disable=not progress or len(names) < 20):
        _check_video(report, name, lambda name=name: resolve_video(ref.video_dir, name), num_frames)
    return report


def _check_video(report: DataReport, name: str, locate: Callable[[], Path], num_frames: int) -> None:
    """Decode one video at the sampled frames into ``report``: a failure (missing, unreadable), or its frame count
    and, when it has fewer frames than are sampled, a warning."""
    try:
        total = _checked_frames(locate(), num_frames)
    except VideoError as err:
        report.failures[name] = str(err)
        return
    report.total_frames[name] = total
    if total < num_frames:
        report.warnings[name] = (
            f"{name}: {total} frame(s), fewer than the {num_frames} sampled: frames repeat (LLaVA's convention)"
        )


def _check_mvbench(ref: DatasetRef, num_frames: int, limit: int | None, progress: bool) -> DataReport:
    from adatp_bench.eval.tasks.mvbench import read_subtask, video_path

    report = DataReport(ref.benchmark, ref.annotation, ref.video_dir, num_frames)
    videos: dict[str, tuple[str, str]] = {}  # "<sub_task>/<video>" → (sub_task, video)
    for sub_task, annotation in zip(ref.subtasks, ref.annotation_files(), strict=True):
        try:
            all_rows = read_subtask(annotation)
        except DatasetError as err:  # every unreadable file is named, not only the first
            report.schema.append(str(err))
            continue
        rows = all_rows[:limit] if limit is not None else all_rows
        report.rows += len(rows)
        report.total_rows += len(all_rows)
        if not rows:
            report.schema.append(f"{annotation} holds no rows")
        report.schema += [f"{annotation}: {p}" for p in schema_problems(ref.benchmark, rows)]
        for row in rows:
            if isinstance(row.get("video"), str) and row["video"]:
                videos.setdefault(f"{sub_task}/{row['video']}", (sub_task, row["video"]))
    report.videos = len(videos)
    for name, (sub_task, video) in tqdm(
        videos.items(), desc="mvbench videos", leave=False, disable=not progress or len(videos) < 20
    ):
        _check_video(report, name, lambda s=sub_task, v=video: video_path(ref.video_dir, s, v), num_frames)
    return report


def require_usable(report: DataReport) -> None:
    """Raise :class:`DataCheckError` with the report's summary unless every row and video is usable."""
    if not report.ok:
        raise DataCheckError(report.summary())


def _checked_frames(path: Path, num_frames: int) -> int:
    """Decodable frames of ``path`` after decoding its sampled frames; cached on disk per file content."""
    stat = path.stat()
    key = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{num_frames}|{_decoder_version()}"
    cache = _cache_dir() / f"{hashlib.sha1(key.encode()).hexdigest()}.json"
    if cache.exists():
        entry = json.loads(cache.read_text())
        if "error" in entry:
            raise VideoError(entry["error"])
        return int(entry["total_frames"])
    try:
        total = read_sampled(path, num_frames).total_frames
    except VideoError as err:
        _write(cache, {"error": str(err)})
        raise
    _write(cache, {"total_frames": total})
    return total


def _cache_dir() -> Path:
    root = Path(os.environ.get("ADATP_CACHE_DIR", Path.home() / ".cache" / "adatp_bench"))
    return root / "video-checks"


def _decoder_version() -> str:
    from importlib import metadata

    return metadata.version("av")


def _write(path: Path, entry: dict[str, object]) -> None:
    from adatp_bench.results import atomic_write_text

    atomic_write_text(path, json.dumps(entry))


def main(argv: list[str] | None = None) -> None:
    """CLI: Hydra overrides as for a cell (benchmark=, model=, benchmark.data_dir=, ...); exit 1 on any problem."""
    from adatp_bench.config import compose
    from adatp_bench.eval.dataset import ensure_data
    from adatp_bench.models.specs import get_spec

    overrides = sys.argv[1:] if argv is None else argv
    if any(a in {"-h", "--help"} for a in overrides):
        print(__doc__)
        return
    cfg = compose(overrides)
    try:
        ref = ensure_data(cfg.benchmark)
        report = check_dataset(ref, cfg.model.num_frames or get_spec(cfg.model.name).num_frames, limit=cfg.limit)
    except DatasetError as err:
        sys.exit(f"check_data: {err}")
    print(report.summary())
    sys.exit(0 if report.ok else 1)


if __name__ == "__main__":
    main()

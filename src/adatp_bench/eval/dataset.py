"""Which data a cell scores: where its files are, what identifies them, and a stable hash of every document.

A cell's run id includes its data (``identity.py``), so a changed dataset is a different cell and is never "skipped
as done", and resumed samples are matched by the content of their document, never by position alone:

- **Real benchmarks** are identified by the content of their annotation file: :func:`dataset_fingerprint`, a sha256
  over the canonical JSON of every row (independent of the file format and of how pandas or pyarrow lay it out).
- **Synthetic benchmarks** are identified by the settings that generate them (``n_items``, ``data_seed``, the
  generator's version) and live in a folder named after those settings, so changing a setting generates new data
  instead of reusing stale files.
- :func:`doc_hash` identifies one document; samples are stored and resumed under (task, doc id, doc hash).
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import json
import math
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from adatp_bench.errors import ConfigError, DatasetError

#: Bump when the synthetic generator's output changes: every synthetic cell then becomes a new cell.
SYNTHETIC_VERSION = 1


@dataclass(frozen=True)
class DatasetRef:
    """Where one benchmark's data lives.

    Attributes:
        benchmark: upstream benchmark (``videomme``, ``mlvu_dev``, ``longvideobench_val_v``, ``mvbench``).
        variant: ``synth`` or ``local``.
        data_dir: the data root (the layout of ``eval/tasks``).
        annotation: the annotation file (parquet, json or jsonl); for MVBench the folder of ``<sub_task>.json``.
        video_dir: the folder the videos are looked up in (MVBench: the root of its per-sub-task folders).
        subtasks: MVBench: the sub-tasks the cell scores (``benchmark.subtasks``), in upstream order; else empty.
    """

    benchmark: str
    variant: str
    data_dir: Path
    annotation: Path
    video_dir: Path
    freeform: str = "exact"  # benchmark=custom: how free-form answers are scored
    subtasks: tuple[str, ...] = ()

    def annotation_files(self) -> list[Path]:
        """The annotation file(s) the cell reads: one, or MVBench's one per selected sub-task."""
        if self.benchmark == "mvbench":
            return [self.annotation / f"{s}.json" for s in self.subtasks]
        return [self.annotation]


#: Optional ``conf/benchmark`` keys of a synthetic benchmark that set the videos' geometry (null: the generator's).
VIDEO_KEYS = {"video_width": "width", "video_height": "height", "video_frames": "num_frames", "video_fps": "fps"}


def synthetic_settings(bench: DictConfig | Mapping[str, Any]) -> dict[str, Any]:
    """The settings that fix a synthetic dataset's content (the video geometry only where set)."""
    n_items, seed = bench.get("n_items", 3), bench.get("data_seed", 0)
    video = {field: bench.get(key) for key, field in VIDEO_KEYS.items() if bench.get(key) is not None}
    for key, value in (("n_items", n_items), ("data_seed", seed), *((f"video.{k}", v) for k, v in video.items())):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"benchmark.{key}={value!r} must be an integer")
    if n_items < 1:
        raise ConfigError(f"benchmark.n_items={n_items} must be >= 1")
    settings: dict[str, Any] = {"n_items": n_items, "data_seed": seed, "generator_version": SYNTHETIC_VERSION}
    if video:
        settings["video"] = video
    return settings


def synthetic_dir(bench: DictConfig | Mapping[str, Any]) -> Path:
    """The folder of the synthetic data these settings generate: ``<data_dir>/n<items>-seed<seed>-v<version>`` (plus
    a short hash of the video geometry when it is set)."""
    s = synthetic_settings(bench)
    name = f"n{s['n_items']}-seed{s['data_seed']}-v{s['generator_version']}"
    if str(bench.get("benchmark")) == "mvbench":  # generated on its own, so never behind another set's marker
        name = f"mvbench-{name}"
    if "video" in s:
        name += "-" + hashlib.sha1(canonical_json(s["video"]).encode()).hexdigest()[:8]
    return Path(str(bench["data_dir"])) / name


def dataset_ref(bench: DictConfig | Mapping[str, Any]) -> DatasetRef:
    """Where the data of a ``conf/benchmark`` entry lives (nothing is generated or read)."""
    from adatp_bench.eval.tasks import BENCHMARKS

    name = str(bench["benchmark"])
    if name not in BENCHMARKS:
        raise ConfigError(f"unknown benchmark {name!r}; valid: {', '.join(sorted(BENCHMARKS))}")
    spec = BENCHMARKS[name]
    variant = str(bench.get("variant", "local"))
    if name == "custom":
        missing = [k for k in ("videos", "questions") if not _given(bench, k)]
        if missing:
            raise ConfigError(
                "benchmark=custom needs benchmark.videos=<folder of the videos> and benchmark.questions=<CSV or "
                f"JSON-lines file>; missing: {', '.join(f'benchmark.{k}' for k in missing)}"
            )
        questions = Path(str(bench["questions"])).expanduser()
        videos = Path(str(bench["videos"])).expanduser()
        return DatasetRef(name, variant, questions.parent, questions, videos, str(bench.get("freeform", "exact")))
    data_dir = synthetic_dir(bench) if variant == "synth" else Path(str(bench["data_dir"]))
    annotation = bench.get("annotation") if variant != "synth" else None
    video_dir = bench.get("video_dir") if variant != "synth" else None
    subtasks: tuple[str, ...] = ()
    if name == "mvbench":
        from adatp_bench.eval.tasks.mvbench import select_subtasks

        chosen = bench.get("subtasks")
        subtasks = select_subtasks(list(chosen) if chosen is not None else None, variant)
    return DatasetRef(
        benchmark=name,
        variant=variant,
        data_dir=data_dir,
        annotation=Path(str(annotation)).expanduser() if annotation else data_dir / spec.annotation,
        video_dir=Path(str(video_dir)).expanduser() if video_dir else data_dir / spec.video_subdir,
        subtasks=subtasks,
    )


def _given(bench: DictConfig | Mapping[str, Any], key: str) -> bool:
    """A setting is present and not Hydra's ``???`` (mandatory, unset)."""
    if isinstance(bench, DictConfig) and (key not in bench or OmegaConf.is_missing(bench, key)):
        return False
    return bool(bench.get(key))


def ensure_data(bench: DictConfig | Mapping[str, Any]) -> DatasetRef:
    """The benchmark's data in place: synthetic data generated on first use (once, under a lock, into a temporary
    folder renamed into place, so a killed job never leaves half a dataset); real data checked to exist."""
    ref = dataset_ref(bench)
    if ref.variant == "synth":
        _generate_once(ref.data_dir, synthetic_settings(bench), ["mvbench"] if ref.benchmark == "mvbench" else None)
    elif ref.benchmark == "mvbench":
        _require_mvbench(bench, ref)
    elif not ref.annotation.is_file():
        raise DatasetError(
            f"benchmark {bench.get('name', ref.benchmark)!r}: annotation file {ref.annotation} does not exist. "
            "Download the dataset (README, 'Benchmarks') or set benchmark.data_dir / benchmark.annotation."
        )
    return ref


def dataset_identity(bench: DictConfig | Mapping[str, Any]) -> dict[str, Any]:
    """What identifies the data of a benchmark entry in a run id: the generating settings (synthetic) or the content
    fingerprint of the annotation file (real). Raises :class:`DatasetError` when a real annotation file is absent."""
    ref = dataset_ref(bench)
    extra = {"subtasks": list(ref.subtasks)} if ref.subtasks else {}  # MVBench: which sub-tasks are averaged
    if ref.variant == "synth":
        return {"synthetic": synthetic_settings(bench), **extra}
    if ref.benchmark == "mvbench":
        _require_mvbench(bench, ref)  # what is missing, and how to get it
    elif not ref.annotation.is_file():
        raise DatasetError(f"annotation file {ref.annotation} does not exist: the cell's data cannot be identified")
    return {"sha256": dataset_fingerprint(ref.annotation), **extra}


def dataset_fingerprint(annotation: Path) -> str:
    """sha256 of the canonical JSON of every row of an annotation file (cached per path, size and mtime).

    A folder (MVBench's ``json/``) is hashed over its ``*.json`` files in name order, each file's name then its rows.
    """
    if annotation.is_dir():
        files = sorted(annotation.glob("*.json"))
        stamp = tuple((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files)
        return _fingerprint(str(annotation.resolve()), stamp)
    stat = annotation.stat()
    return _fingerprint(str(annotation.resolve()), (stat.st_size, stat.st_mtime_ns))


@functools.lru_cache(maxsize=256)
def _fingerprint(path: str, stamp: tuple[Any, ...]) -> str:
    del stamp  # cache key only: a rewritten file is hashed again
    digest = hashlib.sha256()
    files = sorted(Path(path).glob("*.json")) if Path(path).is_dir() else [Path(path)]
    for file in files:
        if len(files) > 1 or file != Path(path):
            digest.update(f"file:{file.name}\n".encode())
        for row in load_rows(file):
            digest.update(canonical_json(row).encode())
            digest.update(b"\n")
    return digest.hexdigest()


def load_rows(annotation: Path) -> list[dict[str, Any]]:
    """Every row of a parquet, JSON or JSON-lines annotation file, as plain Python values."""
    import pandas as pd

    if not annotation.is_file():
        raise DatasetError(f"annotation file {annotation} does not exist")
    suffix = annotation.suffix.lower()
    try:
        if suffix == ".parquet":
            frame = pd.read_parquet(annotation)
        elif suffix == ".csv":
            frame = pd.read_csv(annotation, dtype=str, keep_default_na=False)
        elif suffix in {".json", ".jsonl"}:
            frame = pd.read_json(annotation, lines=suffix == ".jsonl", dtype=False)
        else:
            raise DatasetError(f"{annotation}: unsupported annotation format {suffix!r} (parquet, json, jsonl or csv)")
    except DatasetError:
        raise
    except Exception as err:  # pyarrow/pandas raise many types for a damaged file; name the file and the reason
        raise DatasetError(f"{annotation}: cannot read the annotation file: {type(err).__name__}: {err}") from err
    return [{str(k): _plain(v) for k, v in row.items()} for row in frame.to_dict("records")]


def doc_hash(doc: Mapping[str, Any]) -> str:
    """16 hex digits of sha256 over a document's canonical JSON: the key a finished sample is stored and resumed
    under (with its task and doc id), so a sample is reused only for the very document it answered."""
    return hashlib.sha256(canonical_json(doc).encode()).hexdigest()[:16]


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and plain types (numpy arrays and scalars, NaN → null)."""
    return json.dumps(_plain(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        return [_plain(v) for v in value.tolist()]
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def _require_mvbench(bench: DictConfig | Mapping[str, Any], ref: DatasetRef) -> None:
    """Real MVBench present: every selected sub-task's JSON file and the video root; else how to get them."""
    missing = [str(p) for p in ref.annotation_files() if not p.is_file()]
    if not ref.video_dir.is_dir():
        missing.append(f"video folder {ref.video_dir}")
    if missing:
        shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        raise DatasetError(
            f"benchmark {bench.get('name', ref.benchmark)!r}: MVBench is not here: missing {shown}. Get it with "
            "`huggingface-cli download OpenGVLab/MVBench --repo-type dataset --revision video --local-dir "
            f"{ref.data_dir / 'mvbench_video'}` (that revision holds the mp4s unpacked; extract any .zip in place; "
            "docs/upstream.md, 'MVBench'), or set benchmark.data_dir / benchmark.annotation (the json folder) / "
            "benchmark.video_dir."
        )


def _generate_once(data_dir: Path, settings: dict[str, Any], benchmarks: list[str] | None = None) -> None:
    from adatp_bench.eval.synthetic import VideoSpec, write_synthetic_benchmarks

    marker = data_dir / ".complete"
    if marker.exists():
        return
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    with open(data_dir.parent / f".{data_dir.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if marker.exists():  # another job finished it while we waited
            return
        tmp = Path(tempfile.mkdtemp(dir=data_dir.parent, prefix=f".{data_dir.name}."))
        try:
            video = VideoSpec(**settings["video"]) if "video" in settings else None
            write_synthetic_benchmarks(
                tmp, n_items=settings["n_items"], seed=settings["data_seed"], video=video, benchmarks=benchmarks
            )
            (tmp / ".complete").write_text(json.dumps(settings) + "\n")
            if data_dir.exists():
                shutil.rmtree(data_dir)
            tmp.rename(data_dir)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

"""Turn a ``conf/benchmark/*.yaml`` entry into an lmms-eval task: data in place, task YAML rendered.

Synthetic data is generated on first use, under a file lock so that parallel jobs of a sweep generate it once, into a
temporary folder renamed into place (a killed job never leaves half a dataset). Each cell renders its own task
directory, so concurrent cells never share a file.
"""

from __future__ import annotations

import fcntl
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig

from adatp_bench.errors import DatasetError


@dataclass(frozen=True)
class PreparedBenchmark:
    name: str
    task: str  # lmms-eval task name
    include_path: Path  # directory for TaskManager(include_path=...)
    data_dir: Path


def ensure_synthetic(data_dir: Path, n_items: int, seed: int) -> Path:
    """Generate the synthetic benchmarks into ``data_dir`` unless a complete copy is already there."""
    from adatp_bench.eval.synthetic import write_synthetic_benchmarks

    marker = data_dir / ".complete"
    if marker.exists():
        return data_dir
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    with open(data_dir.parent / f".{data_dir.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if marker.exists():  # another job finished it while we waited
            return data_dir
        tmp = Path(tempfile.mkdtemp(dir=data_dir.parent, prefix=f".{data_dir.name}."))
        try:
            write_synthetic_benchmarks(tmp, n_items=n_items, seed=seed)
            (tmp / ".complete").write_text("ok\n")
            if data_dir.exists():
                shutil.rmtree(data_dir)
            tmp.rename(data_dir)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return data_dir


def prepare_benchmark(cfg: DictConfig, work_dir: Path) -> PreparedBenchmark:
    """Data in place and the task YAML rendered into ``work_dir/tasks``."""
    from adatp_bench.eval.tasks import write_task_dir

    data_dir = Path(cfg.data_dir)
    if cfg.variant == "synth":
        ensure_synthetic(data_dir, n_items=cfg.get("n_items", 3), seed=cfg.get("data_seed", 0))
    elif not data_dir.exists():
        raise DatasetError(
            f"benchmark {cfg.name!r}: data directory {data_dir} does not exist. Download the dataset "
            "(see README, 'Benchmarks') or set benchmark.data_dir=<path>."
        )
    overrides = {"annotations": cfg.get("annotation"), "video_dirs": cfg.get("video_dir")}
    include = write_task_dir(
        data_dir,
        work_dir / "tasks",
        variant=cfg.variant,
        benchmarks=[cfg.benchmark],
        **{k: {cfg.benchmark: v} for k, v in overrides.items() if v},
    )
    return PreparedBenchmark(name=cfg.name, task=cfg.task, include_path=include, data_dir=data_dir)

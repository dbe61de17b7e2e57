"""Turn a ``conf/benchmark/*.yaml`` entry into an lmms-eval task for one cell: its task YAML rendered into the cell's
own folder.

Every cell renders its task into its run directory (``<run_dir>/tasks/``), written into a temporary folder and renamed
into place, so two cells running at once never read each other's task file, even when both are called
``videomme_synth`` and point at different annotations. The ``datasets`` cache lives in that folder too, so a cell never
reads another cell's converted annotations.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig

from adatp_bench.eval.dataset import DatasetRef


@dataclass(frozen=True)
class PreparedBenchmark:
    name: str
    task: str  # lmms-eval task name
    include_path: Path  # directory for TaskManager(include_path=...)
    data: DatasetRef
    metrics: tuple[str, ...] = ()  # the task's metrics, primary first (empty: the benchmark's usual ones)
    subtasks: tuple[str, ...] = ()  # a group (MVBench): the task names of its sub-tasks, which hold the samples


def prepare_benchmark(cfg: DictConfig, ref: DatasetRef, tasks_dir: Path) -> PreparedBenchmark:
    """Render the task of benchmark entry ``cfg`` over the data ``ref`` into ``tasks_dir`` (replaced atomically)."""
    from adatp_bench.eval.tasks import BENCHMARKS, write_task_dir

    tasks_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=tasks_dir.parent, prefix=f".{tasks_dir.name}.{os.getpid()}."))
    metrics = BENCHMARKS[ref.benchmark].metrics
    try:
        annotation, drop, subtasks = ref.annotation, (), ()
        if ref.benchmark == "mvbench":  # a group: one task per sub-task plus the group that averages them
            from adatp_bench.eval.tasks.mvbench import write_mvbench_task_dir

            _, subtasks = write_mvbench_task_dir(
                ref.annotation,
                ref.video_dir,
                tmp,
                variant=cfg.variant,
                subtasks=ref.subtasks,
                datasets_cache_dir=tasks_dir / "_datasets_cache",
            )
        elif ref.benchmark == "custom":  # lmms-eval reads a normalised copy; without answers there is no score
            from adatp_bench.eval.custom import normalise, write_normalised
            from adatp_bench.eval.dataset import load_rows

            rows = load_rows(ref.annotation)
            annotation = write_normalised(rows, ref.freeform, tasks_dir.parent / "questions.normalised.jsonl")
            if all(r["score_as"] == "none" for r in normalise(rows, ref.freeform)):
                drop = ("custom_score",)
                metrics = tuple(m for m in metrics if m not in drop)
        if ref.benchmark != "mvbench":
            write_task_dir(
                ref.data_dir,
                tmp,
                variant=cfg.variant,
                benchmarks=[ref.benchmark],
                annotations={ref.benchmark: annotation},
                video_dirs={ref.benchmark: ref.video_dir},
                datasets_cache_dir=tasks_dir / "_datasets_cache",
                drop_metrics=drop,
            )
        if tasks_dir.exists():
            shutil.rmtree(tasks_dir)
        tmp.rename(tasks_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return PreparedBenchmark(
        name=cfg.name, task=cfg.task, include_path=tasks_dir, data=ref, metrics=metrics, subtasks=tuple(subtasks)
    )

"""Offline lmms-eval tasks for VideoMME, MLVU-dev and LongVideoBench (val, video only), rendered per machine.

Why rendering: the upstream tasks (``videomme``, ``mlvu_dev``, ``longvideobench_val_v``) download from the Hugging
Face hub and look videos up under ``$HF_HOME`` (read at *import* time; videomme and mlvu ``sys.exit()`` on a missing
video). We keep everything that defines the benchmark — prompts (``doc_to_text``), answer extraction and scoring
(``process_results``), aggregation, generation kwargs, metric names, ``cluster_key`` — by importing the upstream
functions by absolute module path, and replace only (a) the data source, with local parquet/json files, and (b)
``doc_to_visual``, with :mod:`adatp_bench.eval.visuals` (configurable video directory, :class:`VideoError` instead of
``sys.exit``). Data paths differ per machine, so the YAML files in this directory are *templates* (no ``task:`` key,
hence ignored by lmms-eval's indexer) and :func:`write_task_dir` renders them into a directory for
``TaskManager(include_path=...)`` / ``lmms-eval --include_path``. A rendered YAML is self-contained: the template's
keys plus ``task``, ``dataset_path``/``dataset_kwargs`` (absolute paths), a private ``datasets`` cache directory, and
``lmms_eval_specific_kwargs.<entry>.video_dir`` (absolute path) that our ``doc_to_visual`` reads.

Importing the upstream utils (checked for lmms-eval 0.7.3): ``videomme/utils.py`` and ``mlvu/utils.py`` read
``$HF_HOME`` into module globals and read their own YAML at import; ``longvideobench/utils.py`` imports decord and
torch and reads ``$HF_HOME`` only when its own ``doc_to_visual`` runs. None of them downloads, creates directories or
exits at import, and the ``$HF_HOME``-derived paths are used only by the upstream ``doc_to_visual`` / subtitle
functions, which our tasks do not reference — so nothing needs neutralising, and ``$HF_HOME`` does not matter for
these tasks. Because the rendered ``dataset_kwargs`` have no ``video``/``token`` keys, lmms-eval attempts no hub
download either.

Task names: ``<benchmark>_synth`` (synthetic data, :mod:`adatp_bench.eval.synthetic`) and ``<benchmark>_local`` (real
downloaded data), for ``benchmark`` in ``videomme``, ``mlvu_dev``, ``longvideobench_val_v``. Metric keys are the
upstream ones (:func:`expected_metric_keys`).

Data directory layout (the synthetic generator writes exactly this; for real data it is what you get by downloading
each hub dataset repository into the directory lmms-eval itself would use under ``$HF_HOME`` and extracting the video
archives there, so ``data_dir=$HF_HOME`` works after such a download)::

    <data_dir>/videomme/videomme/test-00000-of-00001.parquet   # hub lmms-eval/Video-MME
    <data_dir>/videomme/data/<videoID>.mp4
    <data_dir>/mlvu/mlvu/test-00000-of-00001.parquet           # hub sy1998/MLVU_dev
    <data_dir>/mlvu/<video_name>
    <data_dir>/datasets/longvideobench/lvb_val.json            # hub longvideobench/LongVideoBench
    <data_dir>/datasets/longvideobench/videos/<video_path>

Any annotation file or video directory can be overridden (``annotations=`` / ``video_dirs=``).

Usage::

    from adatp_bench.eval.synthetic import write_synthetic_benchmarks
    from adatp_bench.eval.tasks import write_task_dir
    write_synthetic_benchmarks(data_dir)                                   # tiny mp4s + datasets
    include = write_task_dir(data_dir, tmp / "tasks", variant="synth")     # -> tmp/tasks
    TaskManager("WARNING", include_path=str(include), include_defaults=False)

Video directory at run time: the ``video_dir`` baked into the rendered YAML wins. Render with
``bake_video_dirs=False`` to leave it out; our ``doc_to_visual`` then uses ``$ADATP_VIDEO_ROOT/<video subdir>`` (the
same layout as above), so one rendered directory can be used on machines that mount the videos elsewhere.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from adatp_bench.errors import ConfigError, DatasetError

Variant = Literal["synth", "local"]
VARIANTS: tuple[str, ...] = ("synth", "local")
TEMPLATE_DIR = Path(__file__).resolve().parent
VIDEO_DIR_KEY = "video_dir"  # key in lmms_eval_specific_kwargs read by adatp_bench.eval.visuals
DATASETS_CACHE_SUBDIR = "_datasets_cache"


@dataclass(frozen=True)
class Benchmark:
    """One upstream benchmark and where its files live in a data directory."""

    name: str  # upstream lmms-eval task name
    template: str  # template file in this directory
    split: str  # upstream test split name
    annotation: str  # annotation file, relative to the data directory
    video_subdir: str  # video directory, relative to the data directory (or to $ADATP_VIDEO_ROOT)
    metrics: tuple[str, ...]  # upstream metric names (lmms-eval reports them as "<metric>,none")


BENCHMARKS: dict[str, Benchmark] = {
    b.name: b
    for b in (
        Benchmark(
            name="videomme",
            template="videomme.yaml",
            split="test",
            annotation="videomme/videomme/test-00000-of-00001.parquet",
            video_subdir="videomme/data",
            metrics=("videomme_perception_score",),
        ),
        Benchmark(
            name="mlvu_dev",
            template="mlvu_dev.yaml",
            split="test",
            annotation="mlvu/mlvu/test-00000-of-00001.parquet",
            video_subdir="mlvu",
            metrics=("mlvu_percetion_score",),  # (sic) upstream spelling
        ),
        Benchmark(
            name="longvideobench_val_v",
            template="longvideobench_val_v.yaml",
            split="validation",
            annotation="datasets/longvideobench/lvb_val.json",
            video_subdir="datasets/longvideobench/videos",
            metrics=("lvb_acc",),
        ),
        Benchmark(
            name="mvbench",  # a group of 20 sub-tasks, one JSON file each: rendered by tasks/mvbench.py
            template="mvbench.yaml",
            split="train",
            annotation="mvbench_video/json",  # the folder of <sub_task>.json files
            video_subdir="mvbench_video",  # the root of upstream's DATA_LIST folders
            metrics=("mvbench_accuracy",),
        ),
        Benchmark(
            name="custom",  # benchmark=custom: your own videos and questions (eval/custom.py); paths are given
            template="custom.yaml",
            split="test",
            annotation="questions.jsonl",
            video_subdir="videos",
            metrics=("custom_score", "custom_answered"),
        ),
    )
}


#: The paper's benchmarks (upstream lmms-eval tasks): the ones with a synthetic version and a data layout.
UPSTREAM: tuple[str, ...] = ("videomme", "mlvu_dev", "longvideobench_val_v")
#: Upstream benchmarks that are lmms-eval *groups* of sub-tasks (rendered by ``eval/tasks/mvbench.py``, not by
#: :func:`write_task_dir`); each has a synthetic version and a data layout too.
GROUPS: tuple[str, ...] = ("mvbench",)


def task_name(benchmark: str, variant: Variant) -> str:
    """Our task name for ``benchmark`` (an upstream name) and ``variant`` (``"synth"`` or ``"local"``)."""
    _check_benchmark(benchmark)
    if variant not in VARIANTS:
        raise ConfigError(f"unknown task variant {variant!r}; expected one of {VARIANTS}")
    return f"{benchmark}_{variant}"


def all_task_names() -> list[str]:
    """Every task name this package can render."""
    names = [task_name(b, v) for v in VARIANTS for b in (*UPSTREAM, *GROUPS)]  # type: ignore[arg-type]
    return [*names, "custom_local"]


def benchmark_of(task: str) -> Benchmark:
    """The :class:`Benchmark` behind one of our task names or an upstream task name."""
    if task in BENCHMARKS:
        return BENCHMARKS[task]
    for variant in VARIANTS:
        suffix = f"_{variant}"
        if task.endswith(suffix) and task[: -len(suffix)] in BENCHMARKS:
            return BENCHMARKS[task[: -len(suffix)]]
        for group in GROUPS:  # a sub-task of a group: mvbench_<sub_task>_<variant>
            if task.startswith(f"{group}_") and task.endswith(suffix):
                return BENCHMARKS[group]
    raise ConfigError(f"unknown task {task!r}; known: {sorted([*BENCHMARKS, *all_task_names()])}")


def expected_metric_keys(tasks: Iterable[str] | None = None) -> dict[str, list[str]]:
    """Metric keys that must appear in ``results["results"][task]`` (e.g. ``"videomme_perception_score,none"``).

    Defaults to all our task names; upstream task names (``videomme`` …) are accepted too.
    """
    names = all_task_names() if tasks is None else list(tasks)
    return {t: [f"{m},none" for m in benchmark_of(t).metrics] for t in names}


def template_path(benchmark: str) -> Path:
    """Absolute path of the template YAML of ``benchmark``."""
    return TEMPLATE_DIR / _check_benchmark(benchmark).template


def load_template(benchmark: str) -> dict[str, Any]:
    """The template as a dict; ``!function x`` values become :class:`FunctionRef` strings."""
    path = template_path(benchmark)
    with path.open(encoding="utf-8") as f:
        config = yaml.load(f, Loader=_TemplateLoader)  # a SafeLoader subclass
    if not isinstance(config, dict) or "task" in config:
        raise DatasetError(f"{path}: a task template must be a mapping without a 'task' key")
    return config


def write_task_dir(
    data_dir: str | os.PathLike[str],
    dest_dir: str | os.PathLike[str],
    *,
    variant: Variant = "local",
    benchmarks: Sequence[str] | None = None,
    annotations: Mapping[str, str | os.PathLike[str]] | None = None,
    video_dirs: Mapping[str, str | os.PathLike[str]] | None = None,
    bake_video_dirs: bool = True,
    datasets_cache_dir: str | os.PathLike[str] | None = None,
    drop_metrics: Sequence[str] = (),
) -> Path:
    """Render task YAMLs with absolute paths into ``dest_dir`` and return it (for ``include_path``).

    Args:
        data_dir: directory in the layout of the module docstring.
        dest_dir: output directory (created; existing files of the same names are overwritten). Point
            ``TaskManager(include_path=...)`` / ``--include_path`` at it.
        variant: ``"synth"`` (task names ``*_synth``) or ``"local"`` (``*_local``). Only the names differ.
        benchmarks: subset of ``videomme``, ``mlvu_dev``, ``longvideobench_val_v`` (default: all three).
        annotations: per-benchmark annotation file overriding the layout (``.parquet``, ``.json`` or ``.jsonl``).
        video_dirs: per-benchmark video directory overriding the layout.
        bake_video_dirs: write the video directory into the YAML (default). If False, videos are found at run time
            under ``$ADATP_VIDEO_ROOT`` (see :mod:`adatp_bench.eval.visuals`).
        datasets_cache_dir: where ``datasets`` caches the converted annotations (default ``dest_dir/_datasets_cache``;
            kept out of ``~/.cache`` so a regenerated file is never served stale).
        drop_metrics: metrics of the templates to leave out (a custom benchmark without answers has no score).

    Raises:
        DatasetError: an annotation file (or, when baked, a video directory) does not exist.
        ConfigError: an unknown benchmark name.
    """
    data_root = Path(data_dir).expanduser().resolve()
    dest = Path(dest_dir).expanduser().resolve()
    selected = list(UPSTREAM) if benchmarks is None else [_check_benchmark(b).name for b in benchmarks]
    grouped = [b for b in selected if b in GROUPS]
    if grouped:
        raise ConfigError(
            f"{grouped} are lmms-eval groups of sub-tasks: render them with "
            "adatp_bench.eval.tasks.mvbench.write_mvbench_task_dir"
        )
    for mapping in (annotations or {}), (video_dirs or {}):
        for key in mapping:
            _check_benchmark(key)
    cache_dir = Path(datasets_cache_dir).expanduser().resolve() if datasets_cache_dir else dest / DATASETS_CACHE_SUBDIR

    rendered: dict[str, dict[str, Any]] = {}
    missing: list[str] = []
    for name in selected:
        bench = BENCHMARKS[name]
        annotation = _absolute((annotations or {}).get(name), data_root / bench.annotation)
        video_dir = _absolute((video_dirs or {}).get(name), data_root / bench.video_subdir)
        if not annotation.is_file():
            missing.append(f"{name} annotations: {annotation}")
        if bake_video_dirs and not video_dir.is_dir():
            missing.append(f"{name} videos: {video_dir}")
        rendered[name] = _render(bench, variant, annotation, video_dir if bake_video_dirs else None, cache_dir)
        if drop_metrics:
            metrics = [m for m in rendered[name]["metric_list"] if m["metric"] not in set(drop_metrics)]
            rendered[name]["metric_list"] = metrics
    if missing:
        raise DatasetError("cannot render tasks, missing: " + "; ".join(missing))

    dest.mkdir(parents=True, exist_ok=True)
    for name, config in rendered.items():
        out = dest / f"{config['task']}.yaml"
        header = (
            f"# Rendered by adatp_bench.eval.tasks.write_task_dir from {template_path(name)}.\n"
            "# Machine-specific (absolute paths); re-render instead of editing.\n"
        )
        text = yaml.dump(config, Dumper=_TemplateDumper, sort_keys=False, allow_unicode=True, width=4096)
        out.write_text(header + text, encoding="utf-8")
    return dest


def write_synthetic_task_dir(data_dir: str | os.PathLike[str], dest_dir: str | os.PathLike[str]) -> Path:
    """Render the three ``*_synth`` tasks for data written by ``synthetic.write_synthetic_benchmarks``."""
    return write_task_dir(data_dir, dest_dir, variant="synth")


# --------------------------------------------------------------------------------------------------------------------
# internals


class FunctionRef(str):
    """A ``!function module.attr`` reference kept as text while rendering."""

    __slots__ = ()


class _TemplateLoader(yaml.SafeLoader):
    pass


class _TemplateDumper(yaml.SafeDumper):
    pass


_TemplateLoader.add_constructor("!function", lambda loader, node: FunctionRef(loader.construct_scalar(node)))
_TemplateDumper.add_representer(FunctionRef, lambda dumper, data: dumper.represent_scalar("!function", str(data)))


def _represent_str(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
    """Keep prompts with newlines on one readable line (``"\\nAnswer ..."``)."""
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style='"' if "\n" in data else None)


_TemplateDumper.add_representer(str, _represent_str)


def _check_benchmark(name: str) -> Benchmark:
    if name not in BENCHMARKS:
        raise ConfigError(f"unknown benchmark {name!r}; expected one of {sorted(BENCHMARKS)}")
    return BENCHMARKS[name]


def _absolute(override: str | os.PathLike[str] | None, default: Path) -> Path:
    return Path(override).expanduser().resolve() if override is not None else default


def _dataset_source(annotation: Path) -> str:
    suffix = annotation.suffix.lower()
    if suffix == ".parquet":
        return "parquet"
    if suffix in (".json", ".jsonl"):
        return "json"
    if suffix == ".csv":
        return "csv"
    raise DatasetError(f"{annotation}: unsupported annotation format {suffix!r}; use .parquet, .json or .jsonl")


def _render(
    bench: Benchmark, variant: Variant, annotation: Path, video_dir: Path | None, cache_dir: Path
) -> dict[str, Any]:
    template = load_template(bench.name)
    config: dict[str, Any] = {
        "task": task_name(bench.name, variant),
        "dataset_path": _dataset_source(annotation),
        "dataset_kwargs": {"data_files": {bench.split: str(annotation)}, "cache_dir": str(cache_dir)},
    }
    config.update(template)
    if template.get("test_split") != bench.split:
        raise DatasetError(f"{template_path(bench.name)}: test_split must be {bench.split!r}")
    if video_dir is not None:
        prompt_kwargs = config.get("lmms_eval_specific_kwargs") or {"default": {}}
        # lmms-eval hands doc_to_visual the entry for the model's name, or the merged "default" entry: add to each.
        config["lmms_eval_specific_kwargs"] = {
            key: {**(entry or {}), VIDEO_DIR_KEY: str(video_dir)} for key, entry in prompt_kwargs.items()
        }
    return config

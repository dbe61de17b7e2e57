"""MVBench as one cell: lmms-eval's 20 MVBench sub-tasks rendered as one group, scored by lmms-eval's own code.

Upstream (lmms-eval 0.7.3, ``lmms_eval/tasks/mvbench/``): ``mvbench.yaml`` is a *group* of 20 sub-tasks
(``mvbench_action_sequence`` …), each reading its own hub subset (``OpenGVLab/MVBench``, config = sub-task name, split
``train``, revision ``video``) and its own video folder (``utils.DATA_LIST``). Every sub-task shares
``_default_template_yaml``: ``mvbench_doc_to_text`` (``"Question:" + question + "\\nOption:\\n(A) …\\n"`` + the post
prompt ``"Only give the best option.\\n"``), ``mvbench_process_results`` (the gold letter is the position of
``answer`` — the option *text* — in ``candidates``; the prediction is matched by ``mcq_acc``) and
``mvbench_aggregate_results`` (per sub-task accuracy ×100 over the *answered* samples: an empty prediction is left
out of the denominator). The upstream group defines **no** ``aggregate_metric_list``, so lmms-eval reports the 20
sub-task accuracies and no MVBench number.

What one cell is here: the group ``mvbench_<variant>`` over the selected sub-tasks (``benchmark.subtasks``; default
all 20), rendered by :func:`write_mvbench_task_dir` — one task YAML per sub-task (template ``mvbench.yaml`` in this
directory: upstream's keys and functions, our ``doc_to_visual`` and local JSON files) plus one group YAML that adds
``aggregate_metric_list: mvbench_accuracy, mean, weight_by_size: false``. lmms-eval's own group aggregation
(``evaluator_utils.consolidate_group_results``) then reports ``mvbench_accuracy,none`` for the group: the unweighted
mean of the sub-task accuracies, on 0–100. That is MVBench's published "Avg" (each of the 20 sub-tasks has 200
questions, so on the full set it equals the micro accuracy too), the number FastVID and AdaTP report per row.

Data layout (what ``huggingface-cli download OpenGVLab/MVBench --repo-type dataset --revision video --local-dir
<data_dir>/mvbench_video`` gives once the video archives are unzipped in that folder; the synthetic generator writes
the same)::

    <data_dir>/mvbench_video/json/<sub_task>.json            # a JSON list: video, question, candidates, answer
    <data_dir>/mvbench_video/<DATA_LIST[sub_task]>/<video>   # e.g. star/Charades_segment/XYZ.mp4

Videos are looked up as upstream intends: ``<root>/<folder>/<video>``, then ``<root>/data0613/<folder>/<video>``
(upstream's fallback for the STAR and CLEVRER clips is guarded by a folder-name test that never matches, so it never
fires there; here it does). A folder of frames instead of a video file is reported as unsupported.
"""

from __future__ import annotations

import json
import os
import string
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from adatp_bench.errors import ConfigError, DatasetError, VideoError
from adatp_bench.eval.tasks import (
    BENCHMARKS,
    DATASETS_CACHE_SUBDIR,
    VARIANTS,
    VIDEO_DIR_KEY,
    Variant,
    _TemplateDumper,
    load_template,
    task_name,
    template_path,
)
from adatp_bench.eval.video import resolve_video

NAME = "mvbench"
#: The 20 sub-tasks, in the order of lmms-eval 0.7.3's ``mvbench.yaml`` group.
SUBTASKS: tuple[str, ...] = (
    "action_sequence",
    "moving_count",
    "action_prediction",
    "episodic_reasoning",
    "action_antonym",
    "action_count",
    "scene_transition",
    "object_shuffle",
    "object_existence",
    "fine_grained_pose",
    "unexpected_action",
    "moving_direction",
    "state_change",
    "object_interaction",
    "character_order",
    "action_localization",
    "counterfactual_inference",
    "fine_grained_action",
    "moving_attribute",
    "egocentric_navigation",
)
#: The sub-tasks the synthetic set holds (three video folders, 3-5 options): the group path is the real one.
SYNTH_SUBTASKS: tuple[str, ...] = ("action_sequence", "object_shuffle", "fine_grained_pose")
COLUMNS: tuple[str, ...] = ("video", "question", "candidates", "answer")
#: mcq_acc recognises the letters A-E only: an option beyond E could never be scored correct.
MAX_OPTIONS = 5
ALT_ROOT = "data0613"  # where the MVBench repository keeps some STAR / CLEVRER clips
GROUP_METRIC = "mvbench_accuracy"
SHOWN_INDEXES = 5  # how many bad row indexes a message lists


def data_list() -> dict[str, str]:
    """Sub-task → video folder (relative to the video root): lmms-eval's own ``DATA_LIST``."""
    from lmms_eval.tasks.mvbench.utils import DATA_LIST

    return dict(DATA_LIST)


def select_subtasks(selected: Sequence[str] | None, variant: str) -> tuple[str, ...]:
    """The sub-tasks a cell scores (``benchmark.subtasks``; None: all of the variant's), in upstream order.

    Raises:
        ConfigError: an unknown or repeated sub-task, or an empty list.
    """
    available = SYNTH_SUBTASKS if variant == "synth" else SUBTASKS
    if selected is None:
        return available
    if isinstance(selected, str) or not all(isinstance(s, str) for s in selected):
        raise ConfigError(f"benchmark.subtasks={selected!r} must be a list of MVBench sub-task names or null")
    unknown = [s for s in selected if s not in available]
    if unknown or not selected or len(set(selected)) != len(selected):
        raise ConfigError(
            f"benchmark.subtasks={list(selected)!r}: unknown, repeated or none"
            + (f" ({unknown} unknown)" if unknown else "")
            + f"; the {variant} MVBench has: {', '.join(available)}"
        )
    return tuple(s for s in available if s in selected)


def subtask_task(sub_task: str, variant: Variant) -> str:
    """Our task name of one sub-task: ``mvbench_<sub_task>_<variant>`` (upstream's name plus our suffix)."""
    if variant not in VARIANTS:
        raise ConfigError(f"unknown task variant {variant!r}; expected one of {VARIANTS}")
    return f"{NAME}_{sub_task}_{variant}"


def annotation_file(json_dir: Path, sub_task: str) -> Path:
    return Path(json_dir) / f"{sub_task}.json"


def video_path(video_root: str | os.PathLike[str], sub_task: str, video: str) -> Path:
    """The file of one document's video: ``<root>/<DATA_LIST folder>/<video>``, else under ``data0613/``.

    Raises:
        VideoError: not found (every path tried is named), or a folder of frames.
    """
    folder = data_list()[sub_task]
    roots = [Path(video_root) / folder, Path(video_root) / ALT_ROOT / folder]
    for root in roots:
        if (root / video).is_dir():
            raise VideoError(
                f"mvbench {sub_task}: {root / video} is a folder of frames, not a video file; frame folders are "
                "not supported (lmms-eval 0.7.3 reads MVBench's `video` revision)"
            )
    errors = []
    for root in roots:
        try:
            return resolve_video(root, video)
        except VideoError as err:
            errors.append(str(err))
    raise VideoError(f"mvbench {sub_task}: " + "; ".join(errors))


def parsed_answer(response: str) -> str:
    """The option letter lmms-eval's ``mcq_acc`` reads in ``response`` (the letter it would score correct), or the
    stripped response when it reads none. Upstream returns no parsed answer, only a 0/1 score; this recovers it with
    upstream's own matcher, so at most one letter qualifies."""
    from lmms_eval.tasks.mvbench.utils import mcq_acc

    for letter in string.ascii_uppercase[:MAX_OPTIONS]:
        if mcq_acc(letter, response) == 1:
            return letter
    return response.strip()


def read_subtask(path: Path) -> list[dict[str, Any]]:
    """The rows of one ``<sub_task>.json``, a JSON list of objects, as parsed (plain Python values).

    Raises:
        DatasetError: naming the file: missing, not valid JSON (line and column), or not a list of objects.
    """
    if not path.is_file():
        raise DatasetError(f"{path}: MVBench annotation file does not exist")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DatasetError(f"{path}: not valid JSON ({err})") from err
    if not isinstance(data, list):
        raise DatasetError(f"{path}: a JSON {type(data).__name__}, not a list of rows (MVBench's json/<sub_task>.json)")
    bad = [i for i, row in enumerate(data) if not isinstance(row, dict)]
    if bad:
        raise DatasetError(f"{path}: rows at index {bad[:SHOWN_INDEXES]} are not JSON objects ({len(bad)} in all)")
    return data


def row_problems(row: Mapping[str, Any]) -> list[str]:
    """Schema problems of one MVBench row (column, value), for ``eval/schema.py`` and the task's ``process_docs``."""
    problems = []
    for column in ("video", "question"):
        value = row.get(column)
        if not isinstance(value, str) or not value.strip():
            problems.append(f"column {column!r} is {value!r}, not a non-empty string")
    candidates = row.get("candidates")
    if not isinstance(candidates, list) or len(candidates) < 2 or not all(isinstance(c, str) for c in candidates):
        return [*problems, f"column 'candidates' is {candidates!r}, not a list of at least 2 option strings"]
    if len(candidates) > MAX_OPTIONS:
        problems.append(f"column 'candidates' has {len(candidates)} options; lmms-eval's mcq_acc reads A–E only")
    answer = row.get("answer")
    if not isinstance(answer, str) or answer not in candidates:
        hint = " (MVBench answers are the option text, not a letter)" if answer in tuple("ABCDE") else ""
        problems.append(f"column 'answer' is {answer!r}, not one of the candidates {candidates}{hint}")
    elif candidates.count(answer) > 1:
        problems.append(f"column 'answer' {answer!r} appears {candidates.count(answer)} times in 'candidates'")
    return problems


def mvbench_check_docs(dataset: Any) -> Any:
    """``process_docs``: the sub-task's rows follow the schema (else DatasetError naming row and column)."""
    missing = [c for c in COLUMNS if c not in dataset.column_names]
    if missing:
        raise DatasetError(f"mvbench: dataset lacks columns {missing}; it has {dataset.column_names}")
    for index, row in enumerate(dataset):
        problems = row_problems(row)
        if problems:
            raise DatasetError(f"mvbench: row index {index} (video={row.get('video')!r}): {'; '.join(problems)}")
    return dataset


def write_mvbench_task_dir(
    json_dir: str | os.PathLike[str],
    video_root: str | os.PathLike[str],
    dest_dir: str | os.PathLike[str],
    *,
    variant: Variant = "local",
    subtasks: Sequence[str] | None = None,
    datasets_cache_dir: str | os.PathLike[str] | None = None,
) -> tuple[Path, tuple[str, ...]]:
    """Render one task YAML per selected sub-task plus the group ``mvbench_<variant>`` into ``dest_dir``.

    Returns ``(dest_dir, sub-task task names)``. Raises DatasetError naming every missing annotation file (or a
    missing video root) and ConfigError for an unknown sub-task.
    """
    selected = select_subtasks(subtasks, variant)
    json_root = Path(json_dir).expanduser().resolve()
    videos = Path(video_root).expanduser().resolve()
    dest = Path(dest_dir).expanduser().resolve()
    cache_dir = Path(datasets_cache_dir).expanduser().resolve() if datasets_cache_dir else dest / DATASETS_CACHE_SUBDIR
    missing = [str(annotation_file(json_root, s)) for s in selected if not annotation_file(json_root, s).is_file()]
    if not videos.is_dir():
        missing.append(f"videos: {videos}")
    if missing:
        raise DatasetError("cannot render mvbench, missing: " + "; ".join(missing))
    template = load_template(NAME)
    bench = BENCHMARKS[NAME]
    if template.get("test_split") != bench.split:
        raise DatasetError(f"{template_path(NAME)}: test_split must be {bench.split!r}")
    dest.mkdir(parents=True, exist_ok=True)
    header = (
        f"# Rendered by adatp_bench.eval.tasks.mvbench.write_mvbench_task_dir from {template_path(NAME)}.\n"
        "# Machine-specific (absolute paths); re-render instead of editing.\n"
    )
    names = []
    for sub_task in selected:
        config: dict[str, Any] = {
            "task": subtask_task(sub_task, variant),
            "dataset_path": "json",
            "dataset_kwargs": {
                "data_files": {bench.split: str(annotation_file(json_root, sub_task))},
                "cache_dir": str(cache_dir),
            },
        }
        config.update(template)
        kwargs = config.get("lmms_eval_specific_kwargs") or {"default": {}}
        config["lmms_eval_specific_kwargs"] = {
            key: {**(entry or {}), "sub_task": sub_task, VIDEO_DIR_KEY: str(videos)} for key, entry in kwargs.items()
        }
        names.append(config["task"])
        _dump(dest / f"{config['task']}.yaml", header, config)
    group = {
        "group": task_name(NAME, variant),
        "task": names,
        # Upstream's group has none (no MVBench number); this is lmms-eval's own mean over the sub-task accuracies.
        "aggregate_metric_list": [{"metric": GROUP_METRIC, "aggregation": "mean", "weight_by_size": False}],
        "metadata": {"version": 0.0},
    }
    _dump(dest / f"{group['group']}.yaml", header, group)
    return dest, tuple(names)


def _dump(path: Path, header: str, config: Mapping[str, Any]) -> None:
    text = yaml.dump(dict(config), Dumper=_TemplateDumper, sort_keys=False, allow_unicode=True, width=4096)
    path.write_text(header + text, encoding="utf-8")

"""Our ``doc_to_visual`` functions for VideoMME, MLVU-dev, LongVideoBench and MVBench (from ``eval/tasks/*.yaml``).

They replace the upstream ones, which compute the video root from ``$HF_HOME`` when their module is first imported and
call ``sys.exit()`` when a video is missing (videomme, mlvu) or do not check at all (longvideobench). Ours:

* find the video directory, in this order:

  1. ``lmms_eval_specific_kwargs["video_dir"]`` — written into rendered task YAMLs by
     :func:`adatp_bench.eval.tasks.write_task_dir` (absolute path);
  2. ``$ADATP_VIDEO_ROOT/<subdir>`` with the ``$HF_HOME``-style layout of :mod:`adatp_bench.eval.tasks`
     (``videomme/data``, ``mlvu``, ``datasets/longvideobench/videos``), read at call time, not import time;

* resolve the file like upstream (VideoMME: ``<videoID>`` + ``.mp4`` / ``.MP4`` / ``.mkv``; MLVU: ``video_name``;
  LongVideoBench: ``video_path``);
* check that it opens and decodes its first frame (:func:`adatp_bench.eval.video.probe_video`, cached), so a missing
  *or* corrupt video fails here with :class:`VideoError` naming the file, before any model time is spent;
* return ``[absolute path]``, the contract of lmms-eval's video tasks (the model decodes frames itself).

lmms-eval passes ``lmms_eval_specific_kwargs`` only to functions with exactly two parameters, hence the signatures.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from adatp_bench.errors import DatasetError, VideoError
from adatp_bench.eval.tasks import BENCHMARKS, VIDEO_DIR_KEY
from adatp_bench.eval.video import probe_video, resolve_video

VIDEO_ROOT_ENV = "ADATP_VIDEO_ROOT"
Doc = Mapping[str, Any]
PromptKwargs = Mapping[str, Any] | None


def video_dir_for(benchmark: str, lmms_eval_specific_kwargs: Mapping[str, Any] | None = None) -> Path:
    """The directory holding ``benchmark``'s videos (see the module docstring for the lookup order).

    Raises:
        VideoError: neither a baked ``video_dir`` nor ``$ADATP_VIDEO_ROOT`` is set.
    """
    baked = (lmms_eval_specific_kwargs or {}).get(VIDEO_DIR_KEY)
    if baked:
        return Path(baked)
    root = os.environ.get(VIDEO_ROOT_ENV, "").strip()
    if root:
        return Path(root).expanduser() / BENCHMARKS[benchmark].video_subdir
    raise VideoError(
        f"no video directory for {benchmark}: the task YAML has no lmms_eval_specific_kwargs.{VIDEO_DIR_KEY} "
        f"(render it with adatp_bench.eval.tasks.write_task_dir) and ${VIDEO_ROOT_ENV} is not set"
    )


def videomme_doc_to_visual(doc: Doc, lmms_eval_specific_kwargs: PromptKwargs = None) -> list[str]:
    """``[path]`` of ``<video_dir>/<videoID>.mp4`` (or ``.MP4`` / ``.mkv``); VideoError if missing or undecodable."""
    return _visual("videomme", _field(doc, "videoID", "videomme"), lmms_eval_specific_kwargs)


def mlvu_dev_doc_to_visual(doc: Doc, lmms_eval_specific_kwargs: PromptKwargs = None) -> list[str]:
    """``[path]`` of ``<video_dir>/<video_name>``; VideoError if missing or undecodable."""
    return _visual("mlvu_dev", _field(doc, "video_name", "mlvu_dev"), lmms_eval_specific_kwargs)


def longvideobench_doc_to_visual(doc: Doc, lmms_eval_specific_kwargs: PromptKwargs = None) -> list[str]:
    """``[path]`` of ``<video_dir>/<video_path>``; VideoError if missing or undecodable."""
    return _visual("longvideobench_val_v", _field(doc, "video_path", "longvideobench_val_v"), lmms_eval_specific_kwargs)


def mvbench_doc_to_visual(doc: Doc, lmms_eval_specific_kwargs: PromptKwargs = None) -> list[str]:
    """``[path]`` of ``<video_dir>/<DATA_LIST[sub_task]>/<video>`` (or under ``data0613/``), the sub-task named by
    ``lmms_eval_specific_kwargs["sub_task"]`` as upstream; VideoError if missing, a frame folder or undecodable."""
    from adatp_bench.eval.tasks.mvbench import video_path

    sub_task = (lmms_eval_specific_kwargs or {}).get("sub_task")
    if not sub_task:
        raise DatasetError("mvbench: the task YAML has no lmms_eval_specific_kwargs.sub_task (render it with "
                           "adatp_bench.eval.tasks.mvbench.write_mvbench_task_dir)")
    path = video_path(video_dir_for("mvbench", lmms_eval_specific_kwargs), sub_task, _field(doc, "video", "mvbench"))
    probe_video(path)
    return [str(path.resolve())]


def _field(doc: Mapping[str, Any], key: str, benchmark: str) -> str:
    value = doc.get(key)
    if not isinstance(value, str) or not value:
        raise DatasetError(f"{benchmark}: document has no usable {key!r} (got {value!r}); keys: {sorted(doc)}")
    return value


def _visual(benchmark: str, name: str, kwargs: Mapping[str, Any] | None) -> list[str]:
    path = resolve_video(video_dir_for(benchmark, kwargs), name)
    probe_video(path)
    return [str(path.resolve())]

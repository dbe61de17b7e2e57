"""Tiny synthetic VideoMME / MLVU-dev / LongVideoBench (and, on request, MVBench) sets in the upstream schemas, as mp4s.

Why: the real benchmarks are hundreds of GB behind the Hugging Face hub. These datasets let the whole chain (our task
YAMLs, lmms-eval's upstream prompt/scoring/aggregation functions, our model wrapper, frame decoding) run offline in
seconds, with scores that are known exactly in advance (a model that always answers "A" scores the fraction of "A"
ground truths; ground truths are never all "A", and contain at least one "A").

What is written (``out_dir`` follows the data layout of :mod:`adatp_bench.eval.tasks`, so
``write_task_dir(out_dir, dest, variant="synth")`` renders tasks for it):

* one mp4 per item (PyAV, libx264, yuv420p; default 112×112, 32 frames at 8 fps). Each video has 2–3 *scenes*: a
  scene is a solid background colour with a horizontal gradient plus a square of another colour moving across it, so
  frame-similarity segmentation (FastVID, AdaTP, PruneVid …) has real boundaries to find and tokens are not all equal;
* the annotation file of each benchmark with every column of its upstream schema and category values from the
  upstream lists (unknown values make upstream aggregation raise ``KeyError``). Questions are answerable from the
  video (colours of scenes / of the moving square), answers are drawn per item from a seeded generator;
* MVBench (``benchmarks=["mvbench"]`` only; not in the default set): ``n_items``, ``n_items + 1`` and ``n_items + 2``
  questions for the sub-tasks of :data:`~adatp_bench.eval.tasks.mvbench.SYNTH_SUBTASKS` (4, 3 and 5 options; sizes
  unequal on purpose: the score is a mean over sub-tasks, not over questions), one JSON list per sub-task with the
  answer as the option *text*, videos in each sub-task's upstream folder (``DATA_LIST``);
* ``manifest.json``: settings, per-benchmark files and answers, and per-video scene boundaries (first frame of each
  scene) and colours — ground truth for segmentation tests.

Deterministic given ``seed`` (numpy ``default_rng`` seeded per benchmark, so a subset generates the same items).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from adatp_bench.errors import ConfigError
from adatp_bench.eval.tasks import BENCHMARKS, GROUPS, UPSTREAM, task_name
from adatp_bench.eval.tasks.docs import LVB_NUM_OPTIONS, LVB_UNUSED_OPTION, MLVU_DEV_TASK_TYPES

MANIFEST_NAME = "manifest.json"
MANIFEST_VERSION = 1
LETTERS = "ABCDE"

#: name -> RGB. Backgrounds and squares are drawn from here; names appear in questions and options.
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 180, 60),
    "blue": (40, 70, 220),
    "yellow": (235, 215, 40),
    "magenta": (200, 50, 200),
    "cyan": (40, 200, 210),
    "orange": (240, 140, 30),
    "white": (240, 240, 240),
    "black": (15, 15, 15),
}

#: (domain, sub_category) pairs as in the real Video-MME; both values are in lmms-eval's lists (checked by tests).
VIDEOMME_DOMAINS: tuple[tuple[str, str], ...] = (
    ("Knowledge", "Humanity & History"),
    ("Knowledge", "Technology"),
    ("Film & Television", "Animation"),
    ("Sports Competition", "Football"),
    ("Artistic Performance", "Magic Show"),
    ("Life Record", "Daily Life"),
    ("Multilingual", "Multilingual"),
)
#: LongVideoBench's 17 question categories (the paper's taxonomy) and a few topic categories / levels.
LVB_QUESTION_CATEGORIES: tuple[str, ...] = (
    "E2O",
    "E3E",
    "O2E",
    "O3O",
    "S2A",
    "S2E",
    "S2O",
    "SAA",
    "SOS",
    "SSS",
    "T2A",
    "T2E",
    "T2O",
    "T3E",
    "T3O",
    "TAA",
    "TOS",
)
LVB_TOPICS: tuple[str, ...] = ("NP-News-Programs", "KS-Knowledge-Science", "LT-Life-Tips", "MV-Movie-Recaps")
LVB_LEVELS: tuple[str, ...] = ("L1-Perception", "L2-Relation")


@dataclass(frozen=True)
class VideoSpec:
    """Geometry and timing of every synthetic video."""

    width: int = 112
    height: int = 112
    num_frames: int = 32
    fps: int = 8

    def check(self) -> None:
        """Raise ConfigError on settings libx264/yuv420p cannot encode or that leave no room for 2 scenes."""
        if self.width < 16 or self.height < 16 or self.width % 2 or self.height % 2:
            raise ConfigError(f"video size must be even and >= 16, got {self.width}x{self.height}")
        if self.num_frames < 6:
            raise ConfigError(f"num_frames must be >= 6 (2-3 scenes), got {self.num_frames}")
        if self.fps < 1:
            raise ConfigError(f"fps must be >= 1, got {self.fps}")


@dataclass(frozen=True)
class Scene:
    """One scene of a synthetic video: frames ``[start, end)``, background and square colour names."""

    start: int
    end: int
    background: str
    square: str


def write_synthetic_benchmarks(
    out_dir: str | os.PathLike[str],
    n_items: int = 3,
    seed: int = 0,
    *,
    benchmarks: Sequence[str] | None = None,
    video: VideoSpec | None = None,
) -> dict[str, Any]:
    """Write videos + annotation files for ``benchmarks`` (default: all three) under ``out_dir``; return the manifest.

    Args:
        out_dir: data directory (created). Files of a previous run with the same names are overwritten.
        n_items: questions per benchmark (one video each). ``>= 2`` guarantees both "A" and non-"A" answers.
        seed: generator seed; the same seed gives the same questions, answers and frames.
        benchmarks: subset of ``videomme``, ``mlvu_dev``, ``longvideobench_val_v``.
        video: video geometry (:class:`VideoSpec`).
    """
    if n_items < 1:
        raise ConfigError(f"n_items must be >= 1, got {n_items}")
    spec = video or VideoSpec()
    spec.check()
    selected = list(UPSTREAM) if benchmarks is None else list(benchmarks)
    for name in selected:
        if name not in (*UPSTREAM, *GROUPS):
            raise ConfigError(
                f"no synthetic version of benchmark {name!r}; there are: {', '.join((*UPSTREAM, *GROUPS))}"
            )
    root = Path(out_dir).expanduser().resolve()

    writers = {"videomme": _videomme, "mlvu_dev": _mlvu_dev, "longvideobench_val_v": _longvideobench}
    manifest: dict[str, Any] = {
        "generator": __name__,
        "version": MANIFEST_VERSION,
        "seed": seed,
        "n_items": n_items,
        "video": {**spec.__dict__, "codec": "libx264", "pix_fmt": "yuv420p"},
        "benchmarks": {},
        "videos": {},
    }
    for index, name in enumerate(UPSTREAM):  # the index seeds each benchmark's generator: keep this order
        if name not in selected:
            continue
        rng = np.random.default_rng([seed, index])  # per benchmark: a subset generates the same items
        bench = BENCHMARKS[name]
        video_dir = root / bench.video_subdir
        video_dir.mkdir(parents=True, exist_ok=True)
        rows, videos = writers[name](rng, n_items, spec, video_dir)
        annotation = root / bench.annotation
        annotation.parent.mkdir(parents=True, exist_ok=True)
        _write_annotation(rows, annotation)
        manifest["benchmarks"][name] = {
            "task": task_name(name, "synth"),
            "annotation": bench.annotation,
            "video_dir": bench.video_subdir,
            "n_items": len(rows),
            "answers": [_answer_letter(name, row) for row in rows],
        }
        for file_name, scenes in videos.items():
            manifest["videos"][f"{bench.video_subdir}/{file_name}"] = {
                "num_frames": spec.num_frames,
                "scene_starts": [s.start for s in scenes],
                "scenes": [s.__dict__ for s in scenes],
            }
    if "mvbench" in selected:
        _mvbench(np.random.default_rng([seed, len(UPSTREAM)]), n_items, spec, root, manifest)
    (root / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return manifest


def read_manifest(data_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The manifest written by :func:`write_synthetic_benchmarks` in ``data_dir``."""
    return json.loads((Path(data_dir) / MANIFEST_NAME).read_text(encoding="utf-8"))


def answer_letters(rng: np.random.Generator, n_items: int, n_options: Sequence[int]) -> list[str]:
    """Seeded ground-truth letters, one per item (item ``i`` has ``n_options[i]`` options).

    Uniform per item, then repaired so that (for ``n_items >= 2``) at least one answer is "A" and at least one is not:
    an always-"A" model then gets a score strictly between 0 and 100 %.
    """
    letters = [LETTERS[int(rng.integers(n_options[i]))] for i in range(n_items)]
    if n_items >= 2:
        if "A" not in letters:
            letters[int(rng.integers(n_items))] = "A"
        if all(letter == "A" for letter in letters):
            i = int(rng.integers(n_items))
            letters[i] = LETTERS[1 + int(rng.integers(n_options[i] - 1))]
    return letters


def render_scenes(scenes: Sequence[Scene], spec: VideoSpec) -> np.ndarray:
    """Frames ``(num_frames, H, W, 3)`` uint8 for ``scenes``: gradient background + a square moving left to right."""
    h, w = spec.height, spec.width
    frames = np.empty((spec.num_frames, h, w, 3), dtype=np.uint8)
    ramp = np.linspace(0.75, 1.0, w, dtype=np.float32)[None, :, None]  # horizontal gradient
    side = max(4, min(h, w) // 4)
    for scene in scenes:
        background = np.clip(np.asarray(PALETTE[scene.background], np.float32)[None, None, :] * ramp, 0, 255)
        length = scene.end - scene.start
        for offset, t in enumerate(range(scene.start, scene.end)):
            frame = np.broadcast_to(background, (h, w, 3)).astype(np.uint8)
            x = round((w - side) * offset / max(1, length - 1))
            y = (h - side) // 2
            frame[y : y + side, x : x + side] = PALETTE[scene.square]
            frames[t] = frame
    return frames


def write_mp4(frames: np.ndarray, path: str | os.PathLike[str], fps: int) -> None:
    """Encode ``(N, H, W, 3)`` uint8 RGB frames to ``path`` with libx264 / yuv420p."""
    import av

    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width = int(frames.shape[2])
        stream.height = int(frames.shape[1])
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "18", "preset": "veryfast"}
        for array in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(array), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


# --------------------------------------------------------------------------------------------------------------------
# internals: one question generator shared by the three schemas


@dataclass(frozen=True)
class _Item:
    scenes: list[Scene]
    question: str
    options: list[str]  # option texts, correct one at `answer_index`
    answer_index: int


def _make_scenes(rng: np.random.Generator, spec: VideoSpec) -> list[Scene]:
    count = int(rng.integers(2, 4))  # 2 or 3 scenes
    cuts = np.linspace(0, spec.num_frames, count + 1).round().astype(int)
    names = list(PALETTE)
    backgrounds = [str(c) for c in rng.choice(names, size=count, replace=False)]  # consecutive scenes differ
    scenes = []
    for k in range(count):
        square = str(rng.choice([n for n in names if n != backgrounds[k]]))
        scenes.append(Scene(int(cuts[k]), int(cuts[k + 1]), backgrounds[k], square))
    return scenes


def _make_item(rng: np.random.Generator, spec: VideoSpec, letter: str, n_options: int) -> _Item:
    scenes = _make_scenes(rng, spec)
    kind = int(rng.integers(3))
    if kind == 0:
        question, truth = "What is the background colour at the beginning of the video?", scenes[0].background
    elif kind == 1:
        question, truth = "What is the background colour at the end of the video?", scenes[-1].background
    else:
        question, truth = "What colour is the square that moves across the first scene?", scenes[0].square
    distractors = [str(c) for c in rng.choice([n for n in PALETTE if n != truth], size=n_options - 1, replace=False)]
    answer_index = LETTERS.index(letter)
    options = [*distractors[:answer_index], truth, *distractors[answer_index:]]
    return _Item(scenes, question, options, answer_index)


def _write_video(scenes: list[Scene], spec: VideoSpec, path: Path) -> None:
    write_mp4(render_scenes(scenes, spec), path, spec.fps)


def _videomme(
    rng: np.random.Generator, n: int, spec: VideoSpec, video_dir: Path
) -> tuple[list[dict[str, Any]], dict[str, list[Scene]]]:
    from adatp_bench.eval.tasks.docs import videomme_categories

    task_types = videomme_categories()["task_type"]
    letters = answer_letters(rng, n, [4] * n)
    rows, videos = [], {}
    for i, letter in enumerate(letters):
        item = _make_item(rng, spec, letter, 4)
        video_id = f"{i + 1:03d}"
        video_key = f"synthVM{i:04d}"  # stands in for the YouTube id
        domain, sub_category = VIDEOMME_DOMAINS[int(rng.integers(len(VIDEOMME_DOMAINS)))]
        _write_video(item.scenes, spec, video_dir / f"{video_key}.mp4")
        videos[f"{video_key}.mp4"] = item.scenes
        rows.append(
            {
                "video_id": video_id,
                "duration": "short",  # Video-MME's bucket for videos under 2 minutes
                "domain": domain,
                "sub_category": sub_category,
                "url": f"synthetic://videomme/{video_key}",
                "videoID": video_key,
                "question_id": f"{video_id}-1",
                "task_type": str(task_types[int(rng.integers(len(task_types)))]),
                "question": item.question,
                "options": [f"{LETTERS[k]}. {text}" for k, text in enumerate(item.options)],
                "answer": letter,
            }
        )
    return rows, videos


def _mlvu_dev(
    rng: np.random.Generator, n: int, spec: VideoSpec, video_dir: Path
) -> tuple[list[dict[str, Any]], dict[str, list[Scene]]]:
    letters = answer_letters(rng, n, [4] * n)
    order = [str(t) for t in rng.permutation(MLVU_DEV_TASK_TYPES)]  # n < 7 leaves types absent (they count 0)
    rows, videos = [], {}
    for i, letter in enumerate(letters):
        item = _make_item(rng, spec, letter, 4)
        video_name = f"synth_mlvu_{i:04d}.mp4"
        _write_video(item.scenes, spec, video_dir / video_name)
        videos[video_name] = item.scenes
        task_type = order[i % len(order)]
        rows.append(
            {
                "video_name": video_name,
                "duration": spec.num_frames / spec.fps,
                "question": item.question + "".join(f"\n({LETTERS[k]}) {t}" for k, t in enumerate(item.options)),
                "candidates": item.options,
                "answer": letter,
                "task_type": task_type,
                "question_id": f"{task_type}_{i}",
            }
        )
    return rows, videos


def _longvideobench(
    rng: np.random.Generator, n: int, spec: VideoSpec, video_dir: Path
) -> tuple[list[dict[str, Any]], dict[str, list[Scene]]]:
    n_options = [int(rng.integers(4, LVB_NUM_OPTIONS + 1)) for _ in range(n)]  # 4 or 5 candidates
    letters = answer_letters(rng, n, n_options)
    duration = spec.num_frames / spec.fps
    rows, videos = [], {}
    for i, letter in enumerate(letters):
        item = _make_item(rng, spec, letter, n_options[i])
        video_id = f"synthLVB{i:04d}"
        _write_video(item.scenes, spec, video_dir / f"{video_id}.mp4")
        videos[f"{video_id}.mp4"] = item.scenes
        row: dict[str, Any] = {
            "video_id": video_id,
            "question": item.question,
            "question_wo_referring_query": item.question,
            "candidates": item.options,
            "correct_choice": item.answer_index,
            "position": [s.start for s in item.scenes],
            "topic_category": LVB_TOPICS[int(rng.integers(len(LVB_TOPICS)))],
            "question_category": LVB_QUESTION_CATEGORIES[int(rng.integers(len(LVB_QUESTION_CATEGORIES)))],
            "level": LVB_LEVELS[int(rng.integers(len(LVB_LEVELS)))],
            "id": f"{video_id}_0",
            "video_path": f"{video_id}.mp4",
            "subtitle_path": f"{video_id}_en.json",
            "duration_group": 15,  # LongVideoBench's shortest bucket (8-15 s)
            "starting_timestamp_for_subtitles": 0.0,
            "duration": duration,
            "view_count": int(rng.integers(1_000, 1_000_000)),
        }
        for k in range(LVB_NUM_OPTIONS):
            row[f"option{k}"] = item.options[k] if k < len(item.options) else LVB_UNUSED_OPTION
        rows.append(row)
    return rows, videos


#: Options per synthetic MVBench sub-task (the real ones have 2-5).
MVBENCH_OPTIONS = {"action_sequence": 4, "object_shuffle": 3, "fine_grained_pose": 5}


def _mvbench(rng: np.random.Generator, n: int, spec: VideoSpec, root: Path, manifest: dict[str, Any]) -> None:
    """MVBench's layout and schema: ``mvbench_video/json/<sub_task>.json`` (video, question, candidates, answer as
    option text) and the videos in each sub-task's upstream folder."""
    from adatp_bench.eval.tasks.mvbench import SYNTH_SUBTASKS, annotation_file, data_list

    bench = BENCHMARKS["mvbench"]
    folders = data_list()
    entry: dict[str, Any] = {
        "task": task_name("mvbench", "synth"),
        "annotation": bench.annotation,
        "video_dir": bench.video_subdir,
        "n_items": 0,
        "answers": [],
        "subtasks": {},
    }
    for k, sub_task in enumerate(SYNTH_SUBTASKS):
        n_options = MVBENCH_OPTIONS[sub_task]
        letters = answer_letters(rng, n + k, [n_options] * (n + k))
        video_dir = root / bench.video_subdir / folders[sub_task]
        video_dir.mkdir(parents=True, exist_ok=True)
        rows = []
        for i, letter in enumerate(letters):
            item = _make_item(rng, spec, letter, n_options)
            name = f"synth_{sub_task}_{i:04d}.mp4"
            _write_video(item.scenes, spec, video_dir / name)
            manifest["videos"][f"{bench.video_subdir}/{folders[sub_task]}/{name}"] = {
                "num_frames": spec.num_frames,
                "scene_starts": [s.start for s in item.scenes],
                "scenes": [s.__dict__ for s in item.scenes],
            }
            rows.append(
                {
                    "video": name,
                    "question": item.question,
                    "candidates": item.options,
                    "answer": item.options[item.answer_index],  # MVBench: the option text, not its letter
                }
            )
        annotation = annotation_file(root / bench.annotation, sub_task)
        annotation.parent.mkdir(parents=True, exist_ok=True)
        _write_annotation(rows, annotation)
        entry["subtasks"][sub_task] = {
            "annotation": f"{bench.annotation}/{annotation.name}",
            "video_dir": f"{bench.video_subdir}/{folders[sub_task]}",
            "answers": letters,
        }
        entry["n_items"] += len(rows)
        entry["answers"] += letters
    manifest["benchmarks"]["mvbench"] = entry


def _write_annotation(rows: list[dict[str, Any]], path: Path) -> None:
    if path.suffix == ".json":
        path.write_text(json.dumps(rows, indent=1) + "\n", encoding="utf-8")  # a JSON list, like lvb_val.json
    else:
        pd.DataFrame(rows).to_parquet(path, index=False)


def _answer_letter(benchmark: str, row: dict[str, Any]) -> str:
    if benchmark == "longvideobench_val_v":
        return LETTERS[row["correct_choice"]]
    return str(row["answer"])

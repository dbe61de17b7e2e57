"""Preflight for a sweep: are the weights and datasets every cell needs on this machine? Checked before launching.

    python -m adatp_bench.preflight table1            # exit 0 when everything is there; else lists what is missing

A Table 1 sweep on a machine without the checkpoints would otherwise start dozens of jobs that all fail the same way.
Weights count as present when ``model.source`` is a local directory with a config and weights, or when the hub id is
in the local Hugging Face cache (nothing is downloaded here). Datasets count as present when the annotation file and
video folder of the layout in ``eval/tasks`` exist under ``benchmark.data_dir``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from adatp_bench.models.specs import get_spec
from adatp_bench.report.grid import Cell, axis_representatives


def weights_present(source: str) -> bool:
    """Local checkpoint directory with weights, or a hub id already in the HF cache."""
    path = Path(source)
    if path.is_dir():
        return (path / "config.json").exists() and any(path.glob("*.safetensors"))
    if source.startswith("builtin:"):
        return True
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(source, "config.json"), str)


def model_problem(cell: Cell) -> str | None:
    m = cell.config.model
    spec = get_spec(m.name)
    source = m.source or spec.source
    if weights_present(source):
        return None
    if m.name == "llava_video_7b":
        return (
            f"{m.name}: no converted checkpoint at {source}. Download lmms-lab/LLaVA-Video-7B-Qwen2 "
            "(huggingface-cli download lmms-lab/LLaVA-Video-7B-Qwen2 --local-dir <dir>) and convert it: "
            f"python -m adatp_bench.models.convert --src <dir> --dst {source}"
        )
    return f"{m.name}: weights of {source} are not in the local HF cache; run `huggingface-cli download {source}`"


def relevance_problem(cell: Cell) -> str | None:
    from adatp_bench.pruning import METHODS

    if not METHODS[cell.method].needs_relevance:
        return None
    source = cell.config.model.relevance_encoder or get_spec(cell.model).relevance_encoder
    if weights_present(source):
        return None
    return f"{cell.method} needs the SigLIP relevance encoder {source}; run `huggingface-cli download {source}`"


def data_problem(cell: Cell) -> str | None:
    b = cell.config.benchmark
    if b.variant == "synth":
        return None  # generated on first use
    from adatp_bench.eval.dataset import dataset_ref

    ref = dataset_ref(b)
    missing = [str(p) for p in (*ref.annotation_files(), ref.video_dir) if not p.exists()]  # MVBench: every sub-task's
    if not missing:
        return None
    shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
    return f"{b.name}: missing {shown} (see README 'Benchmarks'; or set benchmark.data_dir=...)"


def video_problems(cells: list[Cell]) -> list[str]:
    """Every row of each real benchmark follows the schema and every video decodes at the frames each model of the
    grid samples (``--videos``; reads whole annotation files, decodes each video's sampled frames once, cached)."""
    from adatp_bench.eval.check_data import check_dataset
    from adatp_bench.eval.dataset import dataset_ref

    benchmarks = {c.benchmark: c.config.benchmark for c in cells if c.config.benchmark.variant != "synth"}
    frame_counts = sorted({c.config.model.num_frames or get_spec(c.model).num_frames for c in cells})
    problems = []
    for name, bench in benchmarks.items():
        if any(data_problem(c) for c in cells if c.benchmark == name):
            continue  # reported as missing already
        for num_frames in frame_counts:
            report = check_dataset(dataset_ref(bench), num_frames)
            if not report.ok:
                problems.append(report.summary())
    return problems


def check(experiments: list[str], overrides: list[str] | None = None, videos: bool = False) -> list[str]:
    """Every distinct problem of the experiments' cells (empty when ready)."""
    problems: dict[str, None] = {}
    for exp in experiments:
        cells = axis_representatives(exp, overrides)
        for cell in cells:
            for problem in (model_problem(cell), relevance_problem(cell), data_problem(cell)):
                if problem:
                    problems[problem] = None
        if videos:
            problems.update(dict.fromkeys(video_problems(cells)))
    return list(problems)


def main(argv: list[str] | None = None) -> None:
    """CLI: exit 1 with the list of missing weights/datasets."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("experiments", help="comma-separated experiment names, e.g. table1")
    parser.add_argument("--videos", action="store_true", help="also open every video of the real benchmarks")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args(argv)
    problems = check(args.experiments.split(","), args.overrides, videos=args.videos)
    if problems:
        print("Not ready to run " + args.experiments + ":", file=sys.stderr)
        for p in problems:
            print("  - " + p, file=sys.stderr)
        print(
            "Nothing was launched. To see the whole pipeline without weights or data, run `make demo` "
            "(tiny random model, synthetic videos).",
            file=sys.stderr,
        )
        sys.exit(1)
    print(f"preflight ok: {args.experiments}")


if __name__ == "__main__":
    main()

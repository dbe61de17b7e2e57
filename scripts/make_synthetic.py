"""Write the synthetic VideoMME / MLVU-dev / LongVideoBench data (and optionally rendered task YAMLs).

Thin CLI over :func:`adatp_bench.eval.synthetic.write_synthetic_benchmarks`; see that module for what is written.

    python scripts/make_synthetic.py --out data/synth --n-items 3 --seed 0 [--tasks-out data/synth_tasks]
    lmms-eval eval --model dummy --tasks videomme_synth --include_path data/synth_tasks --output_path out/
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from adatp_bench.eval.synthetic import write_synthetic_benchmarks
from adatp_bench.eval.tasks import write_synthetic_task_dir


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, write the data, print a one-line summary per benchmark."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="data directory to write")
    parser.add_argument("--n-items", type=int, default=3, help="questions (= videos) per benchmark (default 3)")
    parser.add_argument("--seed", type=int, default=0, help="generator seed (default 0)")
    parser.add_argument("--tasks-out", type=Path, default=None, help="also render the *_synth task YAMLs here")
    args = parser.parse_args(argv)

    manifest = write_synthetic_benchmarks(args.out, n_items=args.n_items, seed=args.seed)
    for name, info in manifest["benchmarks"].items():
        print(f"{name}: {info['n_items']} items, answers {''.join(info['answers'])} -> {args.out / info['annotation']}")
    if args.tasks_out is not None:
        print(f"tasks: {write_synthetic_task_dir(args.out, args.tasks_out)}")
    print(json.dumps({"manifest": str(args.out / "manifest.json")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

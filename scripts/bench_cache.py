"""Sweep wall time with and without the per-video cache (``make bench-cache``), and proof that records are identical.

    python scripts/bench_cache.py                  # the demo sweep and a 10-method × 2-budget sweep on model=mid
    python scripts/bench_cache.py --sweeps mid

Each sweep runs twice as a real Hydra multirun (``python -m adatp_bench.run -m ...``), first with
``cache.enabled=false`` then with the cache on and empty, each into its own results folder over the same
pre-generated data. Reported: wall time of each, the speed-up, the cache's hits, and whether every record's numbers
(score, metrics, tokens per layer, FLOPs) and every sample's answer are the same in both runs. Results go to
``benchmarks/cache.json`` and ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import OUT, command_line, machine, rebuild_index

MID_METHODS = "vanilla,fastv,visionzip,dycoke,prunevid,pdrop,fastvid,holitom,random,adatp"
SWEEPS: dict[str, list[str]] = {
    "demo": ["experiment=demo"],
    "mid": [
        "model=mid", f"method={MID_METHODS}", "budget=r25,r50", "benchmark=videomme_synth", "benchmark.n_items=8",
        "benchmark.video_width=320", "benchmark.video_height=240", "benchmark.video_frames=240",
        "benchmark.video_fps=24",
    ],
}  # fmt: skip
COMPARED = ("status", "score", "metrics", "n_samples")


def _run(overrides: list[str], root: Path, data: Path, cache: bool) -> float:
    cmd = [sys.executable, "-m", "adatp_bench.run", "-m", *overrides, f"paths.root={root}", f"paths.data_dir={data}",
           f"cache.enabled={str(cache).lower()}", "hydra/launcher=local"]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "WANDB_MODE": "offline"}
    started = time.perf_counter()
    proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-5000:])
        sys.exit(f"the sweep failed: {' '.join(cmd)}")
    return wall


def _records(root: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in (root / "results" / "runs").glob("*/record.json")}


def _answers(root: Path, run_id: str) -> list[tuple]:
    rows = []
    for line in (root / "results" / "runs" / run_id / "samples.jsonl").read_text().splitlines():
        row = json.loads(line)
        rows.append((row["doc_id"], row["response"], row.get("video_tokens_per_layer"), row.get("frame_indices")))
    return sorted(rows)


def compare(off: Path, on: Path) -> tuple[int, list[str]]:
    """(cells compared, differences) between the two runs' records and samples."""
    a, b = _records(off), _records(on)
    problems = [f"{rid}: only in one run" for rid in sorted(set(a) ^ set(b))]
    for rid in sorted(set(a) & set(b)):
        for key in COMPARED:
            if a[rid][key] != b[rid][key]:
                problems.append(f"{rid}: {key} differs ({a[rid][key]} vs {b[rid][key]})")
        for key in ("video_tokens_per_layer", "paper_tflops", "pct_flops_of_vanilla"):
            if a[rid]["efficiency"].get(key) != b[rid]["efficiency"].get(key):
                problems.append(f"{rid}: efficiency.{key} differs")
        if _answers(off, rid) != _answers(on, rid):
            problems.append(f"{rid}: a sample's answer, counts or frames differ")
    return len(set(a) & set(b)), problems


def _hits(root: Path) -> dict[str, dict[str, int]]:
    total: dict[str, dict[str, int]] = {}
    for record in _records(root).values():
        for kind, counts in (record["efficiency"].get("cache") or {}).items():
            entry = total.setdefault(kind, {"hits": 0, "misses": 0})
            entry["hits"] += counts["hits"]
            entry["misses"] += counts["misses"]
    return total


def _prepare_data(overrides: list[str], work: Path, data: Path) -> None:
    """Generate the sweep's synthetic data once (outside the timing), with a 1-document sweep over the same data."""
    first = {o.partition("=")[0]: o.split(",")[0] for o in overrides}  # one value per axis
    first.update({"limit": "limit=1", "method": "method=vanilla"})
    _run(list(first.values()), work / "prepare", data, cache=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sweeps", default="demo,mid")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory(prefix="adatp-bench-cache-") as tmp:
        work = Path(tmp)
        for name in args.sweeps.split(","):
            overrides = SWEEPS[name]
            data = work / name / "data"
            for sub in ("prepare", "off", "on"):
                (work / name / sub).mkdir(parents=True)
            _prepare_data(overrides, work / name, data)
            off = _run(overrides, work / name / "off", data, cache=False)
            on = _run(overrides, work / name / "on", data, cache=True)
            cells, problems = compare(work / name / "off", work / name / "on")
            hits = _hits(work / name / "on")
            results.append(
                {"sweep": name, "overrides": overrides, "cells": cells, "wall_s_off": off, "wall_s_on": on,
                 "speedup": off / on, "identical": not problems, "differences": problems[:20], "hits": hits,
                 "cache_mib": sum(f.stat().st_size for f in (work / name / "on" / "cache").rglob("*") if f.is_file())
                 / 2**20}
            )  # fmt: skip
            print(f"[bench-cache] {name}: {cells} cells, {off:.0f} s without the cache, {on:.0f} s with it "
                  f"({off / on:.2f}×), records identical: {not problems}", flush=True)  # fmt: skip
            shutil.rmtree(work / name, ignore_errors=True)
    lines = ["| sweep | cells | wall s, cache off | wall s, cache on (cold) | speed-up | records identical | "
             "cache hits (frames / vision / vision attention / relevance) | cache size MiB |",
             "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in results:
        h = r["hits"]
        counts = " / ".join(
            f"{h.get(k, {}).get('hits', 0)}:{h.get(k, {}).get('misses', 0)}"
            for k in ("frames", "vision", "vision_attention", "relevance_frames")
        )
        same = "yes" if r["identical"] else "NO"
        lines.append(f"| {r['sweep']} | {r['cells']} | {r['wall_s_off']:.0f} | {r['wall_s_on']:.0f} | "
                     f"{r['speedup']:.2f}× | {same} | {counts} | {r['cache_mib']:.0f} |")  # fmt: skip
    markdown = "\n".join(lines) + "\n\nHits are `hits:misses` summed over the cells' samples.\n"
    meta = {
        "title": "Sweeps with and without the per-video cache",
        "command": command_line("scripts/bench_cache.py"),
        "date": f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "machine": machine("cpu"),
        "load_before": None,
        "load_after": round(os.getloadavg()[0], 2),
        "reps": 1,
        "warmup": 0,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "cache.json").write_text(json.dumps({"meta": meta, "markdown": markdown, "sweeps": results}, indent=1))
    print(markdown)
    print(f"wrote {args.out / 'cache.json'} and {rebuild_index(args.out)}")
    if any(not r["identical"] for r in results):
        sys.exit("records differ with and without the cache")


if __name__ == "__main__":
    main()

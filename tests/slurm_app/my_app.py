"""Tiny self-contained Hydra app for the SLURM tests (tests/test_slurm_cluster.py).

Each job (one sweep cell) works through ``num_items`` items and appends one JSON line per finished item to
``<output_dir>/items.jsonl`` — its checkpoint. When SLURM requeues the job it starts again FROM SCRATCH (same overrides,
same output dir); it then reads the checkpoint and skips every item already written, so no item is lost or done twice.
This is the resume pattern the real harness must follow.

Files per job, all in ``HydraConfig.get().runtime.output_dir`` (= <sweep dir>/<job num>):
  job.json      written at every (re)start: SLURM ids, restart count, pid — tests read the job id from it
  items.jsonl   {"item": i, "restart": n, "slurm_id": "<array>_<task>"} per finished item (append-only)
  result.json   written last: overrides, SLURM environment, CUDA_VISIBLE_DEVICES, the items done

Run it like the real harness:  python tests/slurm_app/my_app.py --multirun +x=1,2 +y=a,b
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

PROJECT_CONF = Path(__file__).resolve().parents[2] / "conf"


def _write_json_atomic(path: Path, data: dict) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
    os.replace(tmp, path)


def load_checkpoint(path: Path) -> set[int]:
    """Items already done. A line torn by a kill in the middle of a write (no trailing newline) is cut off first."""
    if not path.exists():
        return set()
    raw = path.read_bytes()
    if raw and not raw.endswith(b"\n"):
        raw = raw[: raw.rfind(b"\n") + 1]
        with path.open("r+b") as f:
            f.truncate(len(raw))
    return {json.loads(line)["item"] for line in raw.decode().splitlines() if line.strip()}


def slurm_env() -> dict:
    env = os.environ
    array_id, task_id = env.get("SLURM_ARRAY_JOB_ID"), env.get("SLURM_ARRAY_TASK_ID")
    return {
        # How to address THIS job with scancel/scontrol: <array id>_<task id> for an array task. The task's own
        # SLURM_JOB_ID is not safe: for one task of the array it equals the array id, which addresses the whole array.
        "slurm_id": f"{array_id}_{task_id}" if array_id and task_id else env.get("SLURM_JOB_ID"),
        "slurm_job_id": env.get("SLURM_JOB_ID"),
        "slurm_array_job_id": env.get("SLURM_ARRAY_JOB_ID"),
        "slurm_array_task_id": env.get("SLURM_ARRAY_TASK_ID"),
        # Set by SLURM only after a requeue (absent on the first run).
        "restart": int(env.get("SLURM_RESTART_COUNT", "0")),
        "submitit_executor": env.get("SUBMITIT_EXECUTOR"),
        "cuda_visible_devices": env.get("CUDA_VISIBLE_DEVICES"),
        "pid": os.getpid(),
    }


@hydra.main(version_base=None, config_path="conf", config_name="config")
def main(cfg: DictConfig) -> dict:
    out = Path(HydraConfig.get().runtime.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    info = slurm_env()
    _write_json_atomic(out / "job.json", info)

    checkpoint = out / "items.jsonl"
    done = load_checkpoint(checkpoint)
    for item in range(int(cfg.num_items)):
        if item in done:
            continue  # finished before a requeue
        time.sleep(float(cfg.sleep_s))
        line = json.dumps({"item": item, "restart": info["restart"], "slurm_id": info["slurm_id"]}) + "\n"
        # One write of one whole line, flushed and synced before the next item starts: after a kill at most the line
        # being written is lost (and cut off by load_checkpoint), never an item reported as done.
        with checkpoint.open("a") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())

    result = {
        "overrides": list(HydraConfig.get().overrides.task),
        "cfg": OmegaConf.to_container(cfg, resolve=True),
        "output_dir": str(out),
        "items_done": sorted(load_checkpoint(checkpoint)),
        **info,
    }
    _write_json_atomic(out / "result.json", result)
    return result


if __name__ == "__main__":
    # Make the project's launcher configs (conf/hydra/launcher/*.yaml) visible, unless the caller chose a search path.
    if not any(arg.startswith(("hydra.searchpath=", "++hydra.searchpath=")) for arg in sys.argv[1:]):
        sys.argv.append(f"hydra.searchpath=[file://{PROJECT_CONF}]")
    main()

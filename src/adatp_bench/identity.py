"""Run identity, as dora defines it: a cell is the settings that change its numbers, and its run id is their hash.

The run id is also the cell's results folder (``results/runs/<run_id>/``), so resubmitting a sweep only runs the cells
whose folder holds no finished record, and a table looks each of its cells up by id. Paths, loggers and launchers are
not part of the identity: moving results or switching to SLURM never re-runs anything.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from omegaconf import DictConfig

from adatp_bench.config import method_settings


def cell_identity(cfg: DictConfig) -> dict[str, Any]:
    """The settings of ``cfg`` that change the numbers: model, method + hyperparameters, benchmark, seed, limit."""
    m = cfg.model
    return {
        "model": {
            "name": m.name,
            "source": m.source,
            "dtype": m.dtype,
            "attn_implementation": m.attn_implementation,
            "num_frames": m.num_frames,
            "relevance_encoder": m.relevance_encoder,
        },
        "method": {"name": cfg.method.name, **method_settings(cfg.method)},
        "benchmark": {"name": cfg.benchmark.name, "task": cfg.benchmark.task},
        "seed": cfg.seed,
        "limit": cfg.limit,
    }


def run_id(identity: dict[str, Any]) -> str:
    """12 hex digits of sha1 over the canonical JSON of an identity."""
    blob = json.dumps(identity, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:12]


def cell_run_id(cfg: DictConfig) -> str:
    """The run id of the cell ``cfg`` describes."""
    return run_id(cell_identity(cfg))

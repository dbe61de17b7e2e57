"""Run identity, as dora defines it: a cell is the settings that change its numbers, and its run id is their hash.

The run id is also the cell's results folder (``results/runs/<run_id>/``), so resubmitting a sweep only runs the cells
whose folder holds no finished record, and a table looks each of its cells up by id. The data a cell scores is part of
its identity (``eval/dataset.py``: the annotation file's content hash, or a synthetic dataset's generating settings),
so a changed dataset is a new cell, never a cell "already done". Paths, loggers and launchers are not part of it:
moving results or data, or switching to SLURM, never re-runs anything.

The **settings id** is the same hash without the data. A machine that holds the records but not the data (rendering
Table 1 on a laptop) finds a cell's record by it, as long as exactly one record has those settings.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from omegaconf import DictConfig

from adatp_bench.config import method_settings


def settings_identity(cfg: DictConfig) -> dict[str, Any]:
    """The settings of ``cfg`` that change the numbers, the data aside: model, method + hyperparameters, benchmark,
    seed, limit."""
    m = cfg.model
    return {
        "model": {
            "name": m.name,
            "source": m.source,
            "dtype": m.dtype,
            "attn_implementation": m.attn_implementation,
            "num_frames": m.num_frames,
            "relevance_encoder": m.relevance_encoder,
            **({"answer": m.answer} if "answer" in m else {}),  # model=constant
        },
        "method": {"name": cfg.method.name, **method_settings(cfg.method)},
        "benchmark": {"name": cfg.benchmark.name, "task": cfg.benchmark.task},
        "seed": cfg.seed,
        "limit": cfg.limit,
    }


def cell_identity(cfg: DictConfig, data: dict[str, Any] | None = None) -> dict[str, Any]:
    """:func:`settings_identity` plus the data the cell scores (``data``, or computed from ``cfg.benchmark``)."""
    from adatp_bench.eval.dataset import dataset_identity

    identity = settings_identity(cfg)
    identity["benchmark"]["data"] = data if data is not None else dataset_identity(cfg.benchmark)
    return identity


def run_id(identity: dict[str, Any]) -> str:
    """12 hex digits of sha1 over the canonical JSON of an identity."""
    blob = json.dumps(identity, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:12]


def cell_run_id(cfg: DictConfig, data: dict[str, Any] | None = None) -> str:
    """The run id of the cell ``cfg`` describes (its data identified from ``cfg.benchmark`` unless given)."""
    return run_id(cell_identity(cfg, data))


def cell_settings_id(cfg: DictConfig) -> str:
    """The settings id of the cell ``cfg`` describes (no data needed)."""
    return run_id(settings_identity(cfg))

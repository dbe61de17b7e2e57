"""The parsed answer of every scored sample, stored beside the cell's samples (``<run_dir>/parsed.json``).

lmms-eval's ``process_results`` extracts each benchmark's answer (``pred_answer``, ``parsed_pred``, or the custom
benchmark's ``parsed``); the label-free regression check (``regression.py``) compares those, not raw text.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from adatp_bench.results import RunDir, atomic_write_text, sample_key

#: The keys lmms-eval's process_results (or ours) give the parsed answer under, per benchmark.
PARSED_KEYS = ("pred_answer", "parsed_pred", "parsed")

PARSED_FILE = "parsed.json"


def parsed_key(row: Mapping[str, Any]) -> str:
    task, doc_id, doc_hash = sample_key(row)
    return f"{task}|{doc_id}|{doc_hash}"


def write_parsed(run_dir: RunDir, parsed: Mapping[str, str]) -> None:
    """Store the parsed answer of every scored sample (``parsed_key`` → answer), written after lmms-eval scored them."""
    atomic_write_text(run_dir.path / PARSED_FILE, json.dumps(dict(parsed), indent=1, sort_keys=True))


def samples_with_parsed(run_dir: RunDir) -> list[dict[str, Any]]:
    """The cell's samples, each with its parsed answer (``parsed``) where lmms-eval recorded one."""
    path = run_dir.path / PARSED_FILE
    parsed = json.loads(path.read_text()) if path.exists() else {}
    return [{**row, "parsed": parsed.get(parsed_key(row))} for row in run_dir.all_samples()]


def parsed_from_lmms(sample: Mapping[str, Any]) -> str | None:
    """The parsed answer lmms-eval's ``process_results`` left in one of its logged samples (None if it has none)."""
    for value in sample.values():
        if isinstance(value, Mapping):
            for key in PARSED_KEYS:
                if key in value and value[key] is not None:
                    return str(value[key])
    return None

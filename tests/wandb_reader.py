"""Read an offline W&B transaction log (``run-<id>.wandb``) back, for tests (docs/upstream.md §11).

A 7-byte header (":W&B", uint16 0xBEE1, uint8 version), then LevelDB-log framing: 32 KiB blocks of records with a
7-byte header (crc32, uint16 length, uint8 type: FULL=1, FIRST=2, MIDDLE=3, LAST=4), zero padding at block ends. Each
assembled payload is a ``wandb_internal_pb2.Record``. wandb has no public reader, so the test owns this small one.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BLOCK = 32 * 1024
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


@dataclass
class WandbRun:
    config: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    run_name: str | None = None


def _payloads(data: bytes):
    pos, pending = 7, b""
    while pos + 7 <= len(data):
        left = BLOCK - pos % BLOCK
        if left < 7:  # block trailer padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if kind == 0 and length == 0:
            pos += left
            continue
        chunk = data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind == FULL:
            yield chunk
        elif kind == FIRST:
            pending = chunk
        elif kind == MIDDLE:
            pending += chunk
        elif kind == LAST:
            yield pending + chunk
            pending = b""


def _items(items) -> dict[str, Any]:
    out = {}
    for item in items:
        key = item.key or "/".join(item.nested_key)
        out[key] = json.loads(item.value_json)
    return out


def read_run(path: Path) -> WandbRun:
    """Config, summary, history rows and file list of one ``.wandb`` file."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    if data[:4] != b":W&B":
        raise ValueError(f"{path} is not a W&B transaction log")
    run = WandbRun()
    for payload in _payloads(data):
        rec = pb.Record()
        rec.ParseFromString(payload)
        kind = rec.WhichOneof("record_type")
        if kind == "history":
            run.history.append(_items(rec.history.item))
        elif kind == "config":
            run.config.update(_items(rec.config.update))
        elif kind == "summary":
            run.summary.update(_items(rec.summary.update))
        elif kind == "files":
            run.files += [f.path for f in rec.files.files]
        elif kind == "run":
            run.run_name = rec.run.display_name
            run.config.update(_items(rec.run.config.update))
    return run

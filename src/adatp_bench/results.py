"""Result records: a typed schema, the run id, and an atomic, resumable store.

Each cell's folder is named by its run id (``identity.py``: a hash of the settings that change the numbers), so
resubmitting a sweep only runs the missing cells:

    results/runs/<run_id>/
        record.json      final ResultRecord (written last, atomically; its presence with status "ok" = cell done)
        samples.jsonl    one line per finished sample, appended and fsync'ed as produced (resume reads it)
        lmms_results.json  lmms-eval's own aggregated output
        config.yaml      the resolved Hydra config

Each cell takes an exclusive ``flock`` on ``<run_id>/.lock`` while it runs, so two jobs given the same cell never
interleave writes; different cells never share a file.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import platform
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

SCHEMA_VERSION = 2  # 2: the data a record scored (``data``), its settings id, samples keyed by document content
PACKAGES = ("torch", "transformers", "lmms_eval", "hydra-core", "accelerate", "av", "decord", "wandb", "adatp-bench")


@dataclass
class ResultRecord:
    """One cell = (model, method + settings, benchmark). Every field is JSON-serialisable."""

    run_id: str
    status: Literal["ok", "failed"]
    model: str
    method: str
    method_settings: dict[str, Any]
    benchmark: str
    task: str
    seed: int
    metrics: dict[str, float] = field(default_factory=dict)  # lmms-eval's keys, e.g. "videomme_perception_score,none"
    score: float | None = None  # headline metric on a 0–100 scale
    n_samples: int = 0
    n_empty_responses: int = 0
    n_random_fallbacks: int | None = None  # LongVideoBench: answers upstream replaced by a random letter
    efficiency: dict[str, Any] = field(default_factory=dict)  # tokens, FLOPs, latency, memory (means over samples)
    error: str | None = None
    error_type: str | None = None
    settings_id: str | None = None  # the run id without the data (identity.py): finds the record where data is absent
    data: dict[str, Any] = field(default_factory=dict)  # which data it scored: annotation, sha256, n_docs, video_dir
    regression: dict[str, Any] = field(default_factory=dict)  # against vanilla (regression.py): agreement, flips, KL
    config: dict[str, Any] = field(default_factory=dict)  # resolved Hydra config
    provenance: dict[str, Any] = field(default_factory=dict)  # git SHA, versions, hardware, times
    schema_version: int = SCHEMA_VERSION

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True, default=str)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ResultRecord:
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})


# -- atomic file helpers -----------------------------------------------------------------------------------------------
def atomic_write_text(path: Path, text: str) -> None:
    """Write via a temp file in the same folder + fsync + rename: a kill leaves the old file or the new, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def append_jsonl(path: Path, row: dict[str, Any]) -> None:
    """Append one JSON line and fsync it (a line is either whole or, after a kill mid-write, dropped on read).

    A line torn by an earlier kill is closed first, so the new line never fuses with it.
    """
    line = json.dumps(row, sort_keys=True, default=str) + "\n"
    with open(path, "a+b") as fh:
        if fh.tell() > 0:
            fh.seek(-1, os.SEEK_END)
            if fh.read(1) != b"\n":
                fh.write(b"\n")
        fh.write(line.encode())
        fh.flush()
        os.fsync(fh.fileno())


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """All complete lines; a torn last line (killed mid-append) is ignored."""
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


class RunDir:
    """The folder of one cell."""

    def __init__(self, root: Path, rid: str) -> None:
        self.path = Path(root) / rid
        self.run_id = rid

    @property
    def record_path(self) -> Path:
        return self.path / "record.json"

    @property
    def samples_path(self) -> Path:
        """This process's sample file: ``samples.jsonl`` on rank 0, ``samples.rank<r>.jsonl`` on rank r."""
        rank = int(os.environ.get("RANK", 0))
        return self.path / ("samples.jsonl" if rank == 0 else f"samples.rank{rank}.jsonl")

    def all_samples(self) -> list[dict[str, Any]]:
        """Per-sample rows of every rank, de-duplicated by (task, doc id, doc hash) (first one wins). Rows without a
        document hash (written before schema 2) are ignored: they cannot be matched to their document."""
        done: dict[SampleKey, dict[str, Any]] = {}
        for path in sorted(self.path.glob("samples*.jsonl")):
            for row in read_jsonl(path):
                if row.get("doc_hash"):
                    done.setdefault(sample_key(row), row)
        return [done[k] for k in sorted(done)]

    def record(self) -> ResultRecord | None:
        if not self.record_path.exists():
            return None
        return ResultRecord.from_dict(json.loads(self.record_path.read_text()))

    def is_done(self) -> bool:
        rec = self.record()
        return rec is not None and rec.status == "ok"

    def completed_samples(self) -> dict[SampleKey, dict[str, Any]]:
        """Samples an earlier (preempted) attempt finished, keyed by (task, doc id, doc hash): a sample is reused only
        for the very document it answered."""
        return {sample_key(row): row for row in self.all_samples()}

    def supersede(self) -> Path | None:
        """Move this cell's samples and record into ``superseded/<UTC time>/`` (``force=true``: every sample is
        evaluated again, and nothing computed before is deleted). Returns the folder, or None if there was nothing."""
        files = [*self.path.glob("samples*.jsonl"), *self.path.glob("scored.rank*.json")]
        files += [self.record_path, self.path / "lmms_results.json"]
        files = [p for p in files if p.exists()]
        if not files:
            return None
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        dest = self.path / "superseded" / stamp
        dest.mkdir(parents=True, exist_ok=True)
        for path in files:
            os.replace(path, dest / path.name)
        return dest

    def write_record(self, record: ResultRecord) -> None:
        atomic_write_text(self.record_path, record.to_json())

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Exclusive lock for the cell; raises BlockingIOError at once if another process holds it."""
        self.path.mkdir(parents=True, exist_ok=True)
        with open(self.path / ".lock", "w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)


SampleKey = tuple[str, int, str]  # (task, doc id, doc hash)


def sample_key(row: dict[str, Any]) -> SampleKey:
    """The key a sample row is stored and resumed under."""
    return (str(row["task"]), int(row["doc_id"]), str(row.get("doc_hash") or ""))


def load_records(root: Path) -> list[ResultRecord]:
    """Every record under ``root`` (runs without a record.json are in progress or were killed)."""
    out = []
    for path in sorted(Path(root).glob("*/record.json")):
        try:
            out.append(ResultRecord.from_dict(json.loads(path.read_text())))
        except (json.JSONDecodeError, TypeError):
            continue
    return out


# -- provenance --------------------------------------------------------------------------------------------------
def git_state(repo: Path | None = None) -> dict[str, Any]:
    """Commit SHA and whether the work tree had uncommitted changes."""
    cwd = repo or Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=cwd, capture_output=True, text=True, check=True)
        return {"git_sha": sha.stdout.strip(), "git_dirty": bool(dirty.stdout.strip())}
    except (OSError, subprocess.CalledProcessError):
        return {"git_sha": None, "git_dirty": None}


def package_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def environment() -> dict[str, Any]:
    """The software environment beyond :func:`package_versions`: which lock built it (``make install`` leaves a record
    in the environment: flavour, lock file and its sha256, how torchvision was provided) and a digest of every
    installed distribution, so two records can be compared for identical stacks."""
    import sys

    dists = sorted(f"{d.metadata['Name'].lower()}=={d.version}" for d in metadata.distributions())
    info: dict[str, Any] = {
        "distributions_sha256": hashlib.sha256("\n".join(dists).encode()).hexdigest(),
        "n_distributions": len(dists),
    }
    record = Path(sys.prefix) / "adatp-install.json"
    if record.exists():
        with contextlib.suppress(json.JSONDecodeError):
            info["install"] = json.loads(record.read_text())
    return info


def hardware() -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.version.cuda,
        "gpu": None,
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["gpu_count"] = torch.cuda.device_count()
    for var in ("SLURM_JOB_ID", "SLURM_ARRAY_TASK_ID", "SLURM_RESTART_COUNT"):
        if var in os.environ:
            info[var.lower()] = os.environ[var]
    return info

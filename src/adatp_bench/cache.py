"""A content-addressed, size-bounded disk cache for the per-video work a sweep repeats: decoded frames, vision-tower
outputs and the vision attention some methods score with.

Most cells of a Table 1 sweep share their videos (every method and budget of a model × benchmark) and their vision
tower (every method that prunes after it), so decoding and the tower run once per video instead of once per cell:

- an entry's key is a hash of everything its content depends on (the video file's bytes, the frame sampling, the
  model's vision tower, its dtype and device type), so any change of those reads or writes a different entry and a
  stale entry is never served;
- entries are written to a temporary file and renamed into place, so concurrent writers (parallel jobs of a sweep)
  never expose half an entry, and two writers of one key write the same bytes;
- the cache stays under ``max_bytes``: when a write passes the bound, the least recently used entries are deleted
  (a hit refreshes an entry's time) under a lock, and a reader that loses an entry to eviction recomputes it;
- every lookup is counted per kind (``frames``, ``vision``, ``vision_attention``): records say how many hit.

Configured by ``cache.enabled`` (default true), ``cache.dir`` and ``cache.max_gb`` (``conf/config.yaml``). A cached
tensor is the exact tensor that was computed, so a cell's answers and counts are identical with and without the cache.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import torch

#: Read size when hashing a video file.
_CHUNK = 1 << 20


class ContentCache:
    """A directory of ``<kind>/<key[:2]>/<key>.pt`` entries (``torch.save`` payloads), bounded in total size."""

    def __init__(self, root: str | os.PathLike[str], max_bytes: int) -> None:
        if max_bytes <= 0:
            raise ValueError(f"the cache bound must be positive, got {max_bytes} bytes")
        self.root = Path(root).expanduser()
        self.max_bytes = int(max_bytes)
        self.root.mkdir(parents=True, exist_ok=True)
        self.hits: Counter[str] = Counter()
        self.misses: Counter[str] = Counter()
        self._written_since_scan = 0

    @staticmethod
    def key(*parts: Any) -> str:
        """sha256 of the canonical JSON of ``parts``: the address of an entry."""
        blob = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(blob.encode()).hexdigest()

    def path(self, kind: str, key: str) -> Path:
        return self.root / kind / key[:2] / f"{key}.pt"

    def get(self, kind: str, key: str) -> dict[str, Any] | None:
        """The entry, or None (counted as a miss). A damaged or vanished entry is a miss, never an error."""
        path = self.path(kind, key)
        if not path.exists():
            self.misses[kind] += 1
            return None
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
            with contextlib.suppress(OSError):
                os.utime(path)  # recently used: the last to be evicted
        except Exception:  # damaged (a full disk, a killed copy) or evicted meanwhile: recompute and rewrite
            with contextlib.suppress(OSError):
                path.unlink()
            self.misses[kind] += 1
            return None
        self.hits[kind] += 1
        return payload

    def put(self, kind: str, key: str, payload: dict[str, Any]) -> None:
        """Write an entry atomically (tensors are stored on the CPU), then keep the cache within its bound."""
        path = self.path(kind, key)
        path.parent.mkdir(parents=True, exist_ok=True)
        cpu = {k: v.detach().to("cpu") if isinstance(v, torch.Tensor) else v for k, v in payload.items()}
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                torch.save(cpu, fh)
            os.replace(tmp, path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        self._written_since_scan += path.stat().st_size
        if self._written_since_scan > self.max_bytes // 20:  # rescan after writing 5% of the bound
            self.evict()

    def evict(self) -> int:
        """Delete least recently used entries until the cache is within its bound; return the bytes freed."""
        self._written_since_scan = 0
        with open(self.root / ".evict.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            entries = []
            for path in self.root.glob("*/*/*.pt"):
                with contextlib.suppress(FileNotFoundError):
                    stat = path.stat()
                    entries.append((stat.st_mtime, stat.st_size, path))
            total = sum(size for _, size, _ in entries)
            freed = 0
            for _, size, path in sorted(entries):
                if total - freed <= self.max_bytes:
                    break
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                    freed += size
            return freed

    def size_bytes(self) -> int:
        """Bytes the entries take."""
        return sum(p.stat().st_size for p in self.root.glob("*/*/*.pt") if p.exists())

    def stats(self) -> dict[str, dict[str, int]]:
        """Lookups per kind since this object was made: ``{"frames": {"hits": h, "misses": m}, ...}``."""
        kinds = sorted(set(self.hits) | set(self.misses))
        return {k: {"hits": self.hits[k], "misses": self.misses[k]} for k in kinds}

    def file_digest(self, path: str | os.PathLike[str]) -> str:
        """sha256 of a file's bytes, remembered per (path, size, mtime) so each file is read once."""
        file = Path(path).resolve()
        stat = file.stat()
        memo = self.root / "file-digests" / f"{self.key(str(file), stat.st_size, stat.st_mtime_ns)}.txt"
        with contextlib.suppress(OSError):
            return memo.read_text().strip()
        digest = hashlib.sha256()
        with open(file, "rb") as fh:
            while chunk := fh.read(_CHUNK):
                digest.update(chunk)
        value = digest.hexdigest()
        memo.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=memo.parent, prefix=".digest.", suffix=".tmp")
        with os.fdopen(fd, "w") as fh:
            fh.write(value)
        os.replace(tmp, memo)
        return value


def open_cache(cfg: Any) -> ContentCache | None:
    """The cache a ``cache`` config node describes (``enabled``, ``dir``, ``max_gb``), or None when disabled."""
    if cfg is None or not cfg.get("enabled", False):
        return None
    max_gb = float(cfg.get("max_gb", 50))
    return ContentCache(str(cfg["dir"]), int(max_gb * 2**30))

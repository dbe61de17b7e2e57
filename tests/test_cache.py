"""The per-video cache: content-addressed entries, atomic writes, a size bound with least-recently-used eviction, and
cells whose answers and counts are identical with the cache off, cold and warm, while warm cells hit."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from adatp_bench.cache import ContentCache
from adatp_bench.config import compose
from adatp_bench.results import RunDir, read_jsonl
from adatp_bench.run import run_cell


def test_entries_round_trip_and_keys_follow_their_parts(tmp_path: Path) -> None:
    cache = ContentCache(tmp_path, 10**9)
    key = cache.key("vision", "abc", 8)
    assert key != cache.key("vision", "abc", 16) and key == cache.key("vision", "abc", 8)
    assert cache.get("vision", key) is None
    tensor = torch.arange(6, dtype=torch.bfloat16).view(2, 3)
    cache.put("vision", key, {"grid": tensor, "frame_indices": [0, 3]})
    entry = cache.get("vision", key)
    assert torch.equal(entry["grid"], tensor) and entry["grid"].dtype == torch.bfloat16
    assert entry["frame_indices"] == [0, 3]
    assert cache.stats() == {"vision": {"hits": 1, "misses": 1}}


def test_a_damaged_entry_is_a_miss_not_an_error(tmp_path: Path) -> None:
    cache = ContentCache(tmp_path, 10**9)
    key = cache.key("frames", "x")
    cache.put("frames", key, {"frames": torch.zeros(2)})
    cache.path("frames", key).write_bytes(b"half an entry")
    assert cache.get("frames", key) is None and cache.stats()["frames"]["misses"] == 1


def test_the_bound_is_kept_by_evicting_the_least_recently_used(tmp_path: Path) -> None:
    entry_bytes = 400_000
    cache = ContentCache(tmp_path, 3 * entry_bytes)
    keys = [cache.key("vision", i) for i in range(6)]
    for i, key in enumerate(keys):
        cache.put("vision", key, {"x": torch.zeros(entry_bytes // 4)})
        os.utime(cache.path("vision", key), (1000 + i, 1000 + i))
        if i == 1:
            assert cache.get("vision", keys[0]) is not None  # used recently: survives
            os.utime(cache.path("vision", keys[0]), (5000, 5000))
    cache.evict()
    assert cache.size_bytes() <= 3 * entry_bytes
    present = [i for i, k in enumerate(keys) if cache.path("vision", k).exists()]
    assert 0 in present and 1 not in present and present[-1] == 5


def test_concurrent_writers_of_one_key_leave_a_whole_entry(tmp_path: Path) -> None:
    code = (
        "import sys, torch; from adatp_bench.cache import ContentCache; c = ContentCache(sys.argv[1], 10**9); "
        "k = c.key('vision', 'same'); [c.put('vision', k, {'x': torch.ones(200_000)}) for _ in range(20)]"
    )
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path)]) for _ in range(3)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0]
    cache = ContentCache(tmp_path, 10**9)
    assert torch.equal(cache.get("vision", cache.key("vision", "same"))["x"], torch.ones(200_000))
    assert not list(tmp_path.rglob("*.tmp")), "no temporary file is left behind"


def test_file_digest_follows_the_bytes(tmp_path: Path) -> None:
    cache = ContentCache(tmp_path / "cache", 10**9)
    video = tmp_path / "v.mp4"
    video.write_bytes(b"one")
    first = cache.file_digest(video)
    time.sleep(0.01)
    video.write_bytes(b"two")
    assert cache.file_digest(video) != first


METHODS = ["vanilla", "visionzip", "visionzip_pre", "holitom", "fastvid", "adatp"]


def _cell(root: Path, method: str, cache: bool, cache_dir: Path):
    return compose([f"paths.root={root}", "model=tiny", f"method={method}", "benchmark=mlvu_dev_synth",
                    f"cache.enabled={str(cache).lower()}", f"cache.dir={cache_dir}"])  # fmt: skip


def _answers(cfg, record) -> list[tuple]:
    rows = read_jsonl(RunDir(Path(cfg.paths.results_dir), record.run_id).samples_path)
    return [
        (r["doc_id"], r["response"], r["video_tokens_per_layer"], r["frame_indices"], repr(r["method_stats"]))
        for r in sorted(rows, key=lambda r: r["doc_id"])
    ]


@pytest.mark.slow
def test_cells_are_identical_with_the_cache_off_cold_and_warm(tmp_path: Path) -> None:
    """Off, cold (every lookup misses) and warm (every lookup hits): the same answers, counts and frames."""
    cache_dir = tmp_path / "shared-cache"
    runs: dict[str, dict[str, list]] = {"off": {}, "cold": {}, "warm": {}}
    stats: dict[str, dict[str, dict]] = {"cold": {}, "warm": {}}
    for mode in ("off", "cold", "warm"):
        root = tmp_path / mode
        if mode == "warm":  # same data as the cold run's, in a new results folder: every cell runs again
            shutil.copytree(tmp_path / "cold" / "data", root / "data")
        for method in METHODS:
            cfg = _cell(root, method, cache=mode != "off", cache_dir=cache_dir)
            outcome = run_cell(cfg)
            assert outcome.status == "done", outcome.record.error if outcome.record else outcome.error
            runs[mode][method] = _answers(cfg, outcome.record)
            if mode != "off":
                stats[mode][method] = outcome.record.efficiency["cache"]
    assert runs["off"] == runs["cold"] == runs["warm"]
    assert stats["warm"]["vanilla"]["vision"] == {"hits": 3, "misses": 0}
    assert stats["warm"]["holitom"]["vision_attention"] == {"hits": 3, "misses": 0}
    assert stats["cold"]["vanilla"] == {"vision": {"hits": 0, "misses": 3}, "frames": {"hits": 0, "misses": 3}}
    # the cold run's later methods already hit what the first one cached
    assert stats["cold"]["visionzip"]["vision"] == {"hits": 3, "misses": 0}
    assert stats["cold"]["visionzip"]["vision_attention"] == {"hits": 0, "misses": 3}


def test_a_changed_video_or_sampling_misses(tmp_path: Path) -> None:
    cache_dir = tmp_path / "cache"
    first = run_cell(_cell(tmp_path, "vanilla", True, cache_dir)).record
    assert first.efficiency["cache"]["vision"] == {"hits": 0, "misses": 3}
    frames16 = run_cell(compose([f"paths.root={tmp_path}", "model=tiny", "method=vanilla", "benchmark=mlvu_dev_synth",
                                 f"cache.dir={cache_dir}", "model.num_frames=6"])).record  # fmt: skip
    assert frames16.efficiency["cache"]["vision"] == {"hits": 0, "misses": 3}, "another sampling is another entry"
    video = sorted(Path(first.data["video_dir"]).glob("*.mp4"))[0]
    video.write_bytes(video.read_bytes() + b"\0")  # same frames, other bytes: another entry (content-addressed)
    again = run_cell(compose([f"paths.root={tmp_path}", "model=tiny", "method=vanilla", "benchmark=mlvu_dev_synth",
                              f"cache.dir={cache_dir}", "force=true"])).record  # fmt: skip
    assert again.efficiency["cache"]["vision"] == {"hits": 2, "misses": 1}

"""Shared fixtures: tiny models (built once per session), synthetic frames, offline environment."""

from __future__ import annotations

import os
import tempfile

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Grid-expansion cache (report/grid.py) of this test session: never the user's ~/.cache.
os.environ.setdefault("ADATP_CACHE_DIR", tempfile.mkdtemp(prefix="adatp-cache-"))
torch.set_num_threads(1)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip `gpu` tests without CUDA."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_llm():
    from adatp_bench.models.adapter import VideoLLM

    return VideoLLM.from_spec("tiny")


@pytest.fixture(scope="session")
def tiny_video_llm():
    from adatp_bench.models.adapter import VideoLLM

    return VideoLLM.from_spec("tiny_video")


@pytest.fixture(scope="session")
def tiny_qwen2_5_vl_llm():
    from adatp_bench.models.loading import load_model

    return load_model("tiny_qwen2_5_vl")


@pytest.fixture(scope="session")
def scene_frames() -> np.ndarray:
    """8 frames: two static scenes of 4 frames (a cut in the middle), with a little noise."""
    rng = np.random.default_rng(0)
    a = rng.integers(0, 255, (1, 48, 64, 3))
    b = rng.integers(0, 255, (1, 48, 64, 3))
    frames = np.concatenate([np.repeat(a, 4, 0), np.repeat(b, 4, 0)]).astype(np.int16)
    frames += rng.integers(-3, 4, frames.shape)
    return np.clip(frames, 0, 255).astype(np.uint8)


# -- evaluation data layer (adatp_bench.eval): one synthetic dataset + rendered task directory per session ------------

SYNTH_ITEMS = 8  # > 7 MLVU-dev task types, so one type has two questions and the macro average is not trivial
SYNTH_SEED = 0


@pytest.fixture(scope="session")
def synthetic_data(tmp_path_factory: pytest.TempPathFactory):
    """Directory with synthetic VideoMME / MLVU-dev / LongVideoBench data (tests must not modify it)."""
    from adatp_bench.eval.synthetic import write_synthetic_benchmarks

    data_dir = tmp_path_factory.mktemp("synthetic_data")
    write_synthetic_benchmarks(data_dir, n_items=SYNTH_ITEMS, seed=SYNTH_SEED)
    return data_dir


@pytest.fixture(scope="session")
def synthetic_tasks(synthetic_data, tmp_path_factory: pytest.TempPathFactory):
    """Rendered ``*_synth`` task directory for ``TaskManager(include_path=...)``."""
    from adatp_bench.eval.tasks import write_synthetic_task_dir

    return write_synthetic_task_dir(synthetic_data, tmp_path_factory.mktemp("synthetic_tasks"))

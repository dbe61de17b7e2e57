"""Analytic FLOPs from the recorded token counts == torch's FLOP counter on the real pruned forward, for every method.

The counter (FlopCounterMode, 2 FLOPs per MAC, CPU SDPA formula registered) runs over our prefill with the method
installed; only what executes inside each decoder layer's forward is compared (the attention-row probe and the
methods' own bookkeeping are overhead the paper convention leaves out). The analytic side is docs/flops.md §1.1 applied
to the per-layer token counts the method recorded, with the text tokens included (they run through the layers too).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from adatp_bench import flops
from adatp_bench.config import method_defaults
from adatp_bench.models.adapter import VideoLLM
from adatp_bench.pruning import build_method, method_names

QUESTION = "Which scene comes first?\nA. red\nB. blue"


@pytest.fixture(params=["tiny", "tiny_video"])
def llm(request: pytest.FixtureRequest) -> VideoLLM:
    return request.getfixturevalue(f"{request.param}_llm")


@pytest.mark.parametrize("name", method_names())
def test_counted_prefill_flops_equal_analytic(name: str, llm: VideoLLM, scene_frames: np.ndarray) -> None:
    flops.register_cpu_sdpa_flop_formula()
    method = build_method(name, **method_defaults(name))
    with method(llm):
        state, ctx, _, _ = llm.prepare(scene_frames, QUESTION, sample_id="f")
        counter = FlopCounterMode(display=False)
        with counter, torch.no_grad():
            result = llm.runner.prefill(state, llm.method, ctx)
    # The runner calls the decoder layers itself, so the counter keys them by class: "Qwen2DecoderLayer" holds what ran
    # inside every layer's forward (the probe calls submodules directly and is booked elsewhere).
    inside_layers = sum(counter.get_flop_counts()["Qwen2DecoderLayer"].values())
    analytic = flops.full_prefill_macs(
        llm.config, result.video_tokens_per_layer, result.text_tokens, lm_head_tokens=0
    )
    assert inside_layers == 2 * analytic  # exact: integers on both sides


def test_paper_convention_excludes_text_and_onevision_newline(tiny_llm: VideoLLM, scene_frames: np.ndarray) -> None:
    """The record's paper column counts video tokens only; the full prefill (text included) is a separate extra."""
    out = tiny_llm.generate(scene_frames, QUESTION, max_new_tokens=1)
    grid_only = [v - n for v, n in zip(out.video_tokens_per_layer, out.newline_tokens_per_layer, strict=True)]
    paper = flops.paper_tflops(tiny_llm.config, grid_only)
    full = flops.full_prefill_macs(tiny_llm.config, out.video_tokens_per_layer, out.text_tokens) / 1e12
    assert grid_only == [200] * tiny_llm.num_layers
    assert 0 < paper < full

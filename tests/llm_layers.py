"""Test helpers shared by the in-LLM method tests: capture what enters a decoder layer, and run one layer by hand."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from adatp_bench.models.adapter import VideoLLM


@contextmanager
def layer_inputs(llm: VideoLLM, layers: list[int]) -> Iterator[dict[int, tuple[torch.Tensor, torch.Tensor]]]:
    """Capture (hidden, RoPE cos) entering the given decoder layers at prefill (test-only forward pre-hooks)."""
    seen: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def grab(idx: int):
        def hook(module, args, kwargs):
            hidden = args[0] if args else kwargs["hidden_states"]
            if hidden.shape[1] > 1 and idx not in seen:
                seen[idx] = (hidden.detach().clone(), kwargs["position_embeddings"][0].detach().clone())

        return hook

    handles = [llm.runner.lm.layers[i].register_forward_pre_hook(grab(i), with_kwargs=True) for i in layers]
    try:
        yield seen
    finally:
        for handle in handles:
            handle.remove()


def run_layer(llm: VideoLLM, idx: int, hidden: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Decoder layer ``idx`` on (1, L, D) ``hidden`` at RoPE ``positions`` (1, L), as the runner calls it."""
    lm = llm.runner.lm
    with torch.no_grad():
        return lm.layers[idx](hidden, attention_mask=None, position_embeddings=lm.rotary_emb(hidden, positions))

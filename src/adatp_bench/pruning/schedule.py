"""Layer schedules shared by the in-LLM methods (PDrop, SparseVLM, PruneVid, HoliTom): depth scaling, published
keep-ratio shapes, their validation, and which stage a hook call is.

- :func:`scale_layers` — layer schedules are written for a ``reference_depth``-layer LLM (28 = Qwen2-7B, where
  FastVID's schedules were run) and mapped to other depths by ``round(l·L/L_ref)``, half up.
- :func:`pyramid_ratios` — ``retention`` r maps to per-stage keep ratios ``r^(ln ρ_s / ln ρ_1)`` of a published
  schedule ρ: r = ρ_1 reproduces it exactly, r = 1 keeps everything.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

from adatp_bench.core.context import SampleContext
from adatp_bench.errors import ConfigError


def scale_layers(layers: Sequence[int], num_layers: int, reference_depth: int | None) -> tuple[int, ...]:
    """Map layer indices written for a ``reference_depth``-layer LLM onto ``num_layers`` layers.

    ``l ↦ round(l · num_layers / reference_depth)`` with halves rounded up (exact integer arithmetic), so a schedule
    keeps its relative depth: FastVID's 8/16/24 on Qwen2-7B (28) stays 8/16/24, becomes 7/14/21 on Qwen2-0.5B (24) and
    1/2/3 on a 4-layer test model. ``reference_depth=None`` returns the layers unchanged (absolute indices).
    """
    if reference_depth is None:
        return tuple(int(layer) for layer in layers)
    return tuple((2 * int(layer) * num_layers + reference_depth) // (2 * reference_depth) for layer in layers)


def check_reference_depth(name: str, reference_depth: int | None) -> None:
    """``reference_depth`` is a positive layer count or None."""
    if reference_depth is not None and reference_depth < 1:
        raise ConfigError(f"{name} reference_depth={reference_depth} must be a positive layer count or null")


def check_reference_ratios(name: str, reference: Sequence[float], num_stages: int) -> None:
    """A published schedule: one ratio per stage, strictly decreasing inside (0, 1)."""
    if len(reference) != num_stages:
        raise ConfigError(
            f"{name} reference_ratios={list(reference)} must give one ratio per layer in `layers` ({num_stages})"
        )
    if not all(0.0 < rho < 1.0 for rho in reference):
        raise ConfigError(f"{name} reference_ratios={list(reference)} must lie strictly inside (0, 1)")
    if any(b >= a for a, b in itertools.pairwise(reference)):
        raise ConfigError(f"{name} reference_ratios={list(reference)} must be strictly decreasing")


def check_stage_layers(
    name: str, configured: Sequence[int], mapped: Sequence[int], low: int, high: int, num_layers: int
) -> None:
    """Depth-mapped stage layers must lie in [low, high] and be strictly increasing on a ``num_layers``-layer LLM."""
    if not mapped or mapped[0] < low or mapped[-1] > high:
        raise ConfigError(
            f"{name} layers={list(configured)} map to {list(mapped)}, outside [{low}, {high}] for a "
            f"{num_layers}-layer LLM"
        )
    if any(b <= a for a, b in itertools.pairwise(mapped)):
        raise ConfigError(
            f"{name} layers={list(configured)} map to {list(mapped)} on a {num_layers}-layer LLM: stage layers must be "
            "strictly increasing (use reference_depth: null and explicit layers for shallow models)"
        )


def pyramid_ratios(retention: float, reference: Sequence[float]) -> list[float]:
    """Per-stage keep ratios for ``retention`` r on the shape of the published schedule ``reference`` ρ.

    ``ratio_s = r^(ln ρ_s / ln ρ_1)``: r = ρ_1 gives ρ back, r = 1 gives all ones, ρ = (λ, λ², λ³) gives (r, r², r³).
    Rounded to 12 decimals so that reproduced published ratios give the same ``int(n0·ratio)`` as the literal values.
    """
    lead = math.log(reference[0])
    return [round(retention ** (math.log(rho) / lead), 12) for rho in reference]


def next_stage(ctx: SampleContext, key: str) -> int:
    """Index of the stage whose hook is running: the runner calls each hook once per sample, in layer order, so the
    count of earlier calls (kept in the sample's scratch stats under ``key``) is the stage index."""
    stage = ctx.stats.get(key, 0)
    ctx.stats[key] = stage + 1
    return stage

"""Hold a cell's compute fixed: solve a method's ``retention`` so that its prefill costs a target share of vanilla.

The cost is the paper-convention LLM prefill FLOPs (docs/flops.md §1, §3) of the token schedule the method's
``expected_video_tokens`` predicts on the cell's own model and video layout, as a percentage of the same model's
vanilla schedule. FLOPs grow with retention, so a bisection over retention finds the setting whose cost is nearest
to the target. ``tune.flops_pct=<pct>`` applies it to a cell before its run id is computed, so a tuning trial is an
ordinary cell whose retention happens to be solved: every hyperparameter a trial changes moves how a method spends its
tokens, never how many FLOPs it spends (``make tune``).

Methods whose counts depend on the data (``expected_video_tokens`` returns None, e.g. FastV's or DyCoke's
similarity-driven stages) cannot be held fixed before a run; they get a clear error.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

from omegaconf import DictConfig

from adatp_bench import flops
from adatp_bench.core.layout import VideoLayout
from adatp_bench.errors import ConfigError
from adatp_bench.models.dims import model_architecture, model_dims
from adatp_bench.models.specs import ModelSpec
from adatp_bench.pruning import PruningMethod, build_method

#: Retentions are solved to this many decimals, so that a solved setting is a stable part of the run id.
RETENTION_DECIMALS = 6


@dataclass(frozen=True)
class FixedFlops:
    """A solved retention and what it costs."""

    method: str
    target_pct: float
    retention: float
    pct: float  # paper-convention prefill FLOPs at `retention`, % of vanilla
    tokens_per_layer: tuple[int, ...]

    def as_dict(self) -> dict[str, Any]:
        return {
            "target_pct": self.target_pct,
            "retention": self.retention,
            "pct": round(self.pct, 4),
            "tokens_per_layer": list(self.tokens_per_layer),
        }


def cell_layout(spec: ModelSpec, source: str | None, num_frames: int | None) -> tuple[VideoLayout, Any]:
    """The unpruned video layout of one sample on this model and its architecture config (no weights loaded)."""
    dims = model_dims(spec, source)
    side = math.isqrt(dims.tokens_per_frame)
    frames = num_frames or spec.num_frames
    layout = VideoLayout(0, frames, side, side, spec.newline_layout, seq_len=0)
    return replace(layout, seq_len=layout.video_len), model_architecture(spec, source)


def flops_pct(method: PruningMethod, layout: VideoLayout, architecture: Any) -> tuple[float, list[int]] | None:
    """Paper-convention prefill FLOPs of ``method`` as % of vanilla, and its paper token schedule; None when its
    counts depend on the data."""
    layers = flops.llm_dims(architecture).num_layers
    counts = method.expected_video_tokens(layout, layers)
    if counts is None:
        return None
    newlines = 0 if getattr(method, "newline_policy", None) == "none" else layout.num_newlines
    tokens = flops.paper_counts(layout, counts, newline_ranked=False, newlines=newlines)
    full = [layout.video_len] * layers
    vanilla = flops.paper_counts(layout, full, newline_ranked=False, newlines=layout.num_newlines)
    return 100 * flops.paper_tflops(architecture, tokens) / flops.paper_tflops(architecture, vanilla), tokens


def solve_retention(
    name: str, settings: dict[str, Any], layout: VideoLayout, architecture: Any, target_pct: float
) -> FixedFlops:
    """The retention (to ``RETENTION_DECIMALS``) at which ``name`` with ``settings`` costs nearest ``target_pct``% of
    vanilla prefill FLOPs; every other setting is kept. Raises ConfigError when the target cannot be held."""
    if not 0 < target_pct <= 100:
        raise ConfigError(f"tune.flops_pct must be in (0, 100], got {target_pct}")
    if "retention" not in settings:
        raise ConfigError(f"method {name!r} has no retention to solve, so its FLOPs cannot be held at {target_pct}%")
    layers = flops.llm_dims(architecture).num_layers

    def cost(retention: float) -> tuple[float, list[int]] | None:
        """% of vanilla at ``retention``; None where the method rejects that retention (too low for it)."""
        try:
            method = build_method(name, **{**settings, "retention": retention})
            method.validate(layout.tokens_per_frame, layout.num_frames, layers)
        except ConfigError:
            return None
        result = flops_pct(method, layout, architecture)
        if result is None:
            raise ConfigError(
                f"{name}'s token counts depend on the video, so its FLOPs cannot be held at {target_pct}% before a "
                "run; tune it at a fixed retention (tune.flops_pct=null) and read each trial's FLOPs from its record"
            )
        return result

    # At retention 1.0 an invalid setting is the user's (not a too-low retention): let its error through.
    build_method(name, **{**settings, "retention": 1.0}).validate(layout.tokens_per_frame, layout.num_frames, layers)
    top = cost(1.0)
    assert top is not None
    if top[0] < target_pct:
        raise ConfigError(f"{name} costs at most {top[0]:.2f}% of vanilla FLOPs with these settings; {target_pct}% "
                          "is out of reach")  # fmt: skip
    # Retentions are searched as whole units of 10^-RETENTION_DECIMALS, so the bisections end exactly.
    unit, top_unit = 10**-RETENTION_DECIMALS, 10**RETENTION_DECIMALS

    def cost_at(units: int) -> tuple[float, list[int]] | None:
        return cost(round(units * unit, RETENTION_DECIMALS))

    # The lowest retention the method accepts (validity only ever fails below a threshold, e.g. DyCoke's 25%).
    lowest = 1
    if cost_at(lowest) is None:
        invalid, lowest = 1, top_unit
        while lowest - invalid > 1:
            mid = (invalid + lowest) // 2
            invalid, lowest = (mid, lowest) if cost_at(mid) is None else (invalid, mid)
    floor = cost_at(lowest)
    assert floor is not None
    if floor[0] > target_pct:
        raise ConfigError(f"{name} costs at least {floor[0]:.2f}% of vanilla FLOPs with these settings (at its lowest "
                          f"valid retention, {lowest * unit:.6g}); {target_pct}% is out of reach")  # fmt: skip
    # Bisection on the boundary where the cost crosses the target: cost(lo) < target <= cost(hi).
    lo, hi = lowest, top_unit
    while hi - lo > 1:
        mid = (lo + hi) // 2
        here = cost_at(mid)
        assert here is not None
        lo, hi = (mid, hi) if here[0] < target_pct else (lo, mid)
    options = [(u, c) for u in {lo, hi} if (c := cost_at(u)) is not None]
    best, (pct, tokens) = min(options, key=lambda uc: (abs(uc[1][0] - target_pct), -uc[0]))
    retention = round(best * unit, RETENTION_DECIMALS)
    return FixedFlops(name, target_pct, retention, pct, tuple(tokens))


def hold_cell_flops(cfg: DictConfig) -> FixedFlops:
    """Solve ``cfg.method.retention`` for ``cfg.tune.flops_pct`` on the cell's own model and set it in ``cfg``."""
    from adatp_bench.config import method_settings
    from adatp_bench.models.specs import get_spec

    spec = get_spec(cfg.model.name)
    layout, architecture = cell_layout(spec, cfg.model.source, cfg.model.num_frames)
    held = solve_retention(
        cfg.method.name, method_settings(cfg.method), layout, architecture, float(cfg.tune.flops_pct)
    )
    cfg.method.retention = held.retention
    return held

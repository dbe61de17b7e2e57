"""(e) Keep ratios equivalent to AdaTP's published % FLOPs: the input-only and FastV K = 2 keep ratios whose schedule
costs a target % of the same model's vanilla (solved numerically by bisection)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from adatp_bench import flops
from adatp_bench.errors import ConfigError
from adatp_bench.models.full_size import video_path
from adatp_bench.report.flops_rows import model_config, vanilla_tflops
from adatp_bench.report.published import REFERENCE_DIR, adatp_targets


def bisect_increasing(f: Callable[[float], float], lo: float, hi: float, tol: float = 1e-10) -> float:
    """Root of an increasing f on [lo, hi] by bisection."""
    flo, fhi = f(lo), f(hi)
    if flo > 0 or fhi < 0:
        raise ConfigError(f"target not reachable: f({lo}) = {flo:.4g}, f({hi}) = {fhi:.4g}")
    while hi - lo > tol:
        mid = (lo + hi) / 2
        if f(mid) < 0:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


SCHEDULE_KINDS: dict[str, str] = {
    "input": "input-only: keep·n tokens in every layer",
    "fastv_k2": "FastV K=2: n tokens in layers 0-1, keep·n from layer 2 on",
}


def keep_schedule(model: str, kind: str, keep: float) -> list[float]:
    """Token schedule for a continuous keep ratio (see `SCHEDULE_KINDS`)."""
    n, layers = video_path(model).paper_video_tokens, model_config(model).text_config.num_hidden_layers
    if kind == "input":
        return flops.uniform_schedule(keep * n, layers)
    if kind == "fastv_k2":
        return flops.two_stage(n, 2, keep * n, layers)
    raise ConfigError(f"unknown schedule kind {kind!r}; known: {', '.join(SCHEDULE_KINDS)}")


@dataclass(frozen=True)
class KeepSolution:
    """Keep ratio whose schedule hits a target % of vanilla FLOPs, and the nearest whole-token schedule."""

    model: str
    kind: str
    target_pct: float
    keep: float  # continuous solution
    tokens: int  # nearest whole number of kept tokens
    tokens_pct: float  # % of vanilla FLOPs with `tokens`
    tokens_per_frame: float


def solve_keep_ratio(model: str, target_pct: float, kind: str) -> KeepSolution:
    """Solve numerically (bisection) for the keep ratio at which `kind`'s schedule costs `target_pct`% of vanilla."""
    vanilla = vanilla_tflops(model)
    cfg = model_config(model)

    def pct(keep: float) -> float:
        return 100 * flops.paper_tflops(cfg, keep_schedule(model, kind, keep)) / vanilla

    keep = bisect_increasing(lambda k: pct(k) - target_pct, 0.0, 1.0)
    vp = video_path(model)
    tokens = round(keep * vp.paper_video_tokens)
    return KeepSolution(
        model=model,
        kind=kind,
        target_pct=target_pct,
        keep=keep,
        tokens=tokens,
        tokens_pct=pct(tokens / vp.paper_video_tokens),
        tokens_per_frame=keep * vp.paper_video_tokens / vp.frames,
    )


def adatp_equivalents(reference_dir: Path = REFERENCE_DIR) -> list[KeepSolution]:
    """Input-only and FastV K=2 keep ratios for every AdaTP headline FLOPs ratio."""
    return [
        solve_keep_ratio(model, pct, kind) for model, pct in adatp_targets(reference_dir) for kind in SCHEDULE_KINDS
    ]

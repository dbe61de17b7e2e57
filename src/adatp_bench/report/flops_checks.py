"""Cross-checks of the paper formula (docs/flops.md §4, §8.2).

(a) every FastVID row with a known token schedule (`published.load_published_rows`) recomputed with the formula and
    matched to the printed precision; the rows that do not match are explained (`explain_flagged`);
(f) full-size LLaVA-OV-7B counted on the meta device with FlopCounterMode equals 2 × the analytic counts.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from adatp_bench import flops
from adatp_bench.models.full_size import video_path
from adatp_bench.report.flops_keep import bisect_increasing
from adatp_bench.report.flops_rows import model_config
from adatp_bench.report.published import REFERENCE_DIR, PublishedRow, load_published_rows

# ---------------------------------------------------------------------------------------------------------------------
# (a) published rows
# ---------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RowCheck:
    """Our TFLOPs for a published row and whether it matches to the printed precision."""

    row: PublishedRow
    tokens_per_layer: list[float]
    ours: float

    @property
    def matches(self) -> bool:
        """`ours` rounded to the printed precision equals the printed value."""
        return f"{self.ours:.{self.row.decimals}f}" == f"{self.row.published:.{self.row.decimals}f}"


def check_published_rows(reference_dir: Path = REFERENCE_DIR) -> list[RowCheck]:
    """Recompute every published row with the paper formula (docs/flops.md §1.1)."""
    checks = []
    for row in load_published_rows(reference_dir):
        schedule = flops.parse_schedule(row.schedule)
        ours = flops.paper_tflops(model_config(row.model), schedule)
        checks.append(RowCheck(row=row, tokens_per_layer=schedule, ours=ours))
    return checks


def explain_flagged(check: RowCheck) -> list[str]:
    """Alternative schedules that reproduce a flagged row (docs/flops.md §4): for a one-stage row, the largest mean
    token count that prints as the published value; for a two-stage row, the second-stage count or depth that does."""
    cfg = model_config(check.row.model)
    counts = check.tokens_per_layer
    layers = len(counts)
    n0, n1 = counts[0], counts[-1]
    target = check.row.published
    if all(n == n0 for n in counts):
        edge = target + 0.5 * 10 ** -check.row.decimals  # the largest TFLOPs that still prints as `target`
        n_edge = bisect_increasing(lambda n: flops.paper_tflops(cfg, [n] * layers) - edge, 0.0, n0)
        return [
            f"  {check.row.method} {check.row.retention}: {check.row.flag}.",
            f"    ours {check.ours:.4f} vs printed {target}: it prints as {target} with at most {n_edge:.1f} tokens at "
            f"every layer instead of {n0:g}.",
        ]
    k = next(i for i, n in enumerate(counts) if n != n0)

    def second_stage(n: float) -> float:
        return flops.paper_tflops(cfg, flops.two_stage(n0, k, n, layers))

    n1_fit = bisect_increasing(lambda n: second_stage(n) - target, n1, n0)
    one_more = flops.paper_tflops(cfg, flops.two_stage(n0, k + 1, n1, layers))
    return [
        f"  {check.row.method} {check.row.retention}: {check.row.flag}.",
        f"    ours {check.ours:.4f} vs printed {target} ({100 * (check.ours / target - 1):+.1f}%). It matches if the "
        f"second stage keeps {n1_fit:.0f} tokens instead of {n1:g} (→ {second_stage(round(n1_fit)):.2f}), "
        f"or if {k + 1} rather than {k} layers run at {n0:g} (→ {one_more:.2f}).",
    ]


# ---------------------------------------------------------------------------------------------------------------------
# (f) meta-device cross-check (docs/flops.md §8.2)
# ---------------------------------------------------------------------------------------------------------------------


def meta_cross_check(model: str = "llava_ov_7b", text_tokens: int = 64) -> list[str]:
    """Count the full-size model on meta with FlopCounterMode and compare with 2 × the analytic MACs."""
    from adatp_bench.models.full_size import build_on_meta

    cfg = model_config(model)
    vp = video_path(model)
    n = vp.paper_video_tokens
    layers = cfg.text_config.num_hidden_layers
    lines = []

    start = time.perf_counter()
    video_only = flops.count_llm_on_meta(cfg, n)
    paper = flops.llm_prefill_macs(cfg, flops.uniform_schedule(n, layers))
    head = flops.lm_head_macs(cfg)
    stack = sum(video_only.decoder_layers())
    ok = stack == 2 * paper and video_only.total == 2 * (paper + head)
    lines.append(
        f"{model} LLM on meta, {n} video tokens: FlopCounterMode {video_only.total / 1e12:.6f} T FLOPs "
        "= decoder layers "
        f"{stack / 1e12:.6f} (2 × paper {paper / 1e12:.6f}) + LM head {(video_only.total - stack) / 1e12:.6f} "
        f"(2 × {head / 1e12:.6f}, 1 position) → exact: {'yes' if ok else 'NO'} ({time.perf_counter() - start:.2f} s)"
    )

    start = time.perf_counter()
    meta = flops.count_llava_on_meta(build_on_meta(model), vp.frames, text_tokens=text_tokens)
    full = flops.full_prefill_macs(
        cfg, flops.uniform_schedule(n, layers), text_tokens, newline_tokens_per_layer=[vp.newline_tokens] * layers
    )
    vision = flops.vision_encoder_macs(cfg, vp.frames)
    ok_llm = meta.llm_total == 2 * full
    ok_vision = meta.vision_tower + meta.projector == 2 * vision
    lines.append(
        f"{model} full model on meta, {vp.frames} frames, sequence {meta.sequence_length} "
        f"({n} video + {vp.newline_tokens} newline + {text_tokens} text): LLM {meta.llm_total / 1e12:.4f} T = 2 × full "
        f"prefill {full / 1e12:.4f} → {'yes' if ok_llm else 'NO'}; SigLIP {meta.vision_tower / 1e12:.4f} T + projector "
        f"{meta.projector / 1e12:.4f} T = 2 × {vision / 1e12:.4f} → {'yes' if ok_vision else 'NO'} "
        f"({time.perf_counter() - start:.2f} s)"
    )
    return lines

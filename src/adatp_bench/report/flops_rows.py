"""Paper-convention TFLOPs of token schedules on the full-size models, as % of the same model's vanilla.

`method_rows` takes `(label, model, tokens_per_layer)` triples: the paper-convention `video_tokens_per_layer` of a
result record, or the standard published-style schedules of `standard_entries`; `flops_table.render_method_rows` prints
them. The full-size configs are read once per model (`model_config`); no weights are loaded.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cache

from adatp_bench import flops
from adatp_bench.models.full_size import load_full_size_config, video_path


@cache
def model_config(model: str):
    """The full-size config of `model` (`models.full_size.load_full_size_config`), read once per model."""
    return load_full_size_config(model)


def vanilla_schedule(model: str) -> list[float]:
    """Every layer sees all paper-counted video positions (6272 for OV, 11648 for LLaVA-Video)."""
    layers = model_config(model).text_config.num_hidden_layers
    return flops.uniform_schedule(video_path(model).paper_video_tokens, layers)


def vanilla_tflops(model: str) -> float:
    """Paper-convention TFLOPs of the model's dense (vanilla) prefill."""
    return flops.paper_tflops(model_config(model), vanilla_schedule(model))


@dataclass(frozen=True)
class MethodRow:
    """A computed row: paper TFLOPs and % of the same model's vanilla."""

    label: str
    model: str
    tokens_per_layer: tuple[float, ...]
    tflops: float
    pct_of_vanilla: float


def method_rows(entries: Iterable[tuple[str, str, Sequence[float]]]) -> list[MethodRow]:
    """Compute `(label, model, tokens_per_layer)` entries; counts above the model's video positions raise."""
    out = []
    for label, model, tokens in entries:
        available = video_path(model).paper_video_tokens
        report = flops.make_flops_report(
            model_config(model), tokens, vanilla_tflops=vanilla_tflops(model), available_video_tokens=available
        )
        out.append(MethodRow(label, model, tuple(tokens), report.paper_tflops, report.pct_of_vanilla or 0.0))
    return out


def compact_schedule(tokens: Sequence[float]) -> str:
    """Run-length form of a schedule, e.g. "2x6272+26x1568"."""
    parts: list[str] = []
    i = 0
    while i < len(tokens):
        j = i
        while j < len(tokens) and tokens[j] == tokens[i]:
            j += 1
        parts.append(f"{j - i}x{tokens[i]:g}")
        i = j
    return "+".join(parts)


def standard_entries() -> list[tuple[str, str, list[float]]]:
    """Vanilla and the standard published-style schedules for the three Table 1 models."""
    entries: list[tuple[str, str, list[float]]] = []
    for model in ("llava_ov_7b", "llava_ov_0.5b"):
        vp, layers = video_path(model), model_config(model).text_config.num_hidden_layers
        n = vp.paper_video_tokens
        entries.append(("vanilla", model, vanilla_schedule(model)))
        for r in (0.25, 0.20, 0.15, 0.10):  # FastVID's per-frame budget int(196·r) (docs/flops.md §3)
            per_frame = int(vp.tokens_per_frame * r)
            entries.append(
                (
                    f"input-only r={r:.0%} ({per_frame}/frame)",
                    model,
                    flops.uniform_schedule(per_frame * vp.frames, layers),
                )
            )
        for r in (0.25, 0.10):  # FastV K=2, keep int(n·r) from layer 2 on (FastVID Table 1 rows)
            entries.append((f"FastV K=2 100%/{r:.0%}", model, flops.two_stage(n, 2, int(n * r), layers)))
    model = "llava_video_7b"
    vp, layers = video_path(model), model_config(model).text_config.num_hidden_layers
    entries.append(("vanilla (10816 + 832 newlines)", model, vanilla_schedule(model)))
    for r in (0.25, 0.10):  # FastVID*/VisionZip: int(169·r) per frame + one newline per frame (docs/flops.md §3)
        per_frame = int(vp.tokens_per_frame * r)
        n = per_frame * vp.frames + vp.frames
        entries.append((f"input-only {per_frame}/frame + 1 newline/frame", model, flops.uniform_schedule(n, layers)))
    n = vp.paper_video_tokens
    entries.append(
        (
            "FastV K=2 100%/25% of all positions (newlines pruned alike)",
            model,
            flops.two_stage(n, 2, int(n * 0.25), layers),
        )
    )
    return entries

"""Profile one sample of a cell (``make profile ARGS="model=mid method=fastv benchmark=videomme_synth"``).

Writes into ``<paths.root>/results/profile/<model>-<method>-<benchmark>/``:

* ``trace.json``: a torch.profiler trace (open it in Perfetto, https://ui.perfetto.dev, or chrome://tracing), with
  shapes and per-op FLOPs, and the stages marked (``vision``, ``pre_llm``, ``prefill``, ``decode``);
* ``ops.md``: the ops of the prefill by time, with the FLOPs the profiler attributes to them;
* ``counters.md``: the prefill's FLOPs by three counters side by side, and why they differ:

  1. **analytic** (``flops.full_prefill_macs`` × 2): the formula of docs/flops.md over the token counts the method kept
     at every layer, text included;
  2. **FlopCounterMode** over the decoder layers' forward (the CPU SDPA formula registered): counts every matmul and
     the attention inside SDPA, so it equals the analytic count exactly;
  3. **torch.profiler** ``with_flops``: estimates only matrix multiplications (``aten::mm``/``addmm``/``bmm``), so it
     misses the attention inside ``scaled_dot_product_attention``, and it includes the method's own probe matmuls
     and the LM head, which the decoder-layer counts leave out.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile, record_function
from torch.utils.flop_counter import FlopCounterMode

from adatp_bench import flops
from adatp_bench.config import compose, method_settings
from adatp_bench.eval.check_data import VIDEO_KEY
from adatp_bench.eval.dataset import ensure_data, load_rows
from adatp_bench.eval.video import read_sampled, resolve_video
from adatp_bench.models.adapter import VideoLLM
from adatp_bench.pruning import build_method

DEFAULTS = ["model=tiny", "method=fastv", "benchmark=videomme_synth"]
MATMUL_OPS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::matmul", "aten::linear")


def _question(row: dict) -> str:
    options = row.get("options") or row.get("candidates") or []
    return "\n".join([str(row.get("question", "")), *(str(o) for o in options)])


def main(argv: list[str]) -> None:
    overrides = [*DEFAULTS, *argv]
    cfg = compose(overrides)
    torch.set_grad_enabled(False)
    flops.register_cpu_sdpa_flop_formula()
    m = cfg.model
    llm = VideoLLM.from_spec(m.name, source=m.source, dtype=m.dtype, device=m.device or "cpu")
    method = build_method(cfg.method.name, **method_settings(cfg.method))
    ref = ensure_data(cfg.benchmark)
    row = load_rows(ref.annotation)[0]
    path = resolve_video(ref.video_dir, str(row[VIDEO_KEY[ref.benchmark]]))
    video = read_sampled(path, m.num_frames or llm.num_frames)
    question = _question(row)
    out = Path(cfg.paths.root) / "results" / "profile" / f"{m.name}-{cfg.method.name}-{cfg.benchmark.name}"
    out.mkdir(parents=True, exist_ok=True)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    with method(llm):
        llm.generate(video.frames, question, max_new_tokens=2)  # warm-up
        with profile(activities=activities, record_shapes=True, with_flops=True) as prof:
            with record_function("prepare (vision + pre_llm)"):
                state, ctx, _, _ = llm.prepare(video.frames, question)
            with record_function("prefill"):
                pre = llm.runner.prefill(state, llm.method, ctx)
            with record_function("decode"):
                llm.runner.decode(pre, 8, set(), llm.method, ctx)
        state, ctx, _, _ = llm.prepare(video.frames, question)
        counter = FlopCounterMode(display=False)
        with counter:
            result = llm.runner.prefill(state, llm.method, ctx)
    prof.export_chrome_trace(str(out / "trace.json"))
    counts, text = result.video_tokens_per_layer, result.text_tokens
    analytic = 2 * flops.full_prefill_macs(llm.config, counts, text, lm_head_tokens=0)
    counted = sum(counter.get_flop_counts()["Qwen2DecoderLayer"].values())
    prefill_events = [e for e in prof.events() if _inside(e, prof, "prefill")]
    by_op: dict[str, list[float]] = {}
    for event in prefill_events:
        entry = by_op.setdefault(event.name, [0.0, 0.0, 0])
        entry[0] += event.self_cpu_time_total / 1e3
        entry[1] += float(event.flops or 0)
        entry[2] += 1
    profiler_flops = sum(v[1] for v in by_op.values())
    attention = analytic - 2 * _macs_without_attention(llm, result)
    matmul_only = analytic - attention
    lines = [
        f"# FLOPs of one prefill: {m.name} / {cfg.method.name} / {cfg.benchmark.name}\n",
        f"Video tokens per layer: {result.video_tokens_per_layer}; text tokens: {result.text_tokens}.\n",
        "| counter | FLOPs | vs analytic |",
        "|---|---|---|",
        f"| analytic (formula × 2, text included) | {analytic:.4e} | 1.0000 |",
        f"| FlopCounterMode, decoder layers | {counted:.4e} | {counted / analytic:.4f} |",
        f"| torch.profiler with_flops, whole prefill | {profiler_flops:.4e} | {profiler_flops / analytic:.4f} |",
        "",
        f"- The attention matmuls inside SDPA (QKᵀ, attention·V: {attention:.4e} FLOPs by the formula) are invisible",
        "  to torch.profiler, which estimates matrix-multiplication ops only. Without them the formula gives",
        f"  {matmul_only:.4e}; the profiler's remaining {profiler_flops - matmul_only:+.4e} are the method's own",
        "  attention-row probe matmuls and the elementwise ops (mul, add) it also counts, outside the formula.",
        "- FlopCounterMode counts SDPA through the registered CPU formula and equals the analytic count exactly (an",
        "  integer identity, tested for every method in tests/test_flops_methods.py).",
    ]
    (out / "counters.md").write_text("\n".join(lines) + "\n")
    ops = sorted(by_op.items(), key=lambda kv: -kv[1][0])
    table = ["| op | calls | self CPU ms | profiler FLOPs |", "|---|---|---|---|"]
    table += [f"| {name} | {n} | {ms:.2f} | {fl:.3e} |" for name, (ms, fl, n) in ops[:40]]
    (out / "ops.md").write_text("# Prefill ops by self CPU time\n\n" + "\n".join(table) + "\n")
    print("\n".join(lines))
    print(f"\nwrote {out / 'trace.json'}, {out / 'ops.md'}, {out / 'counters.md'}")


def _macs_without_attention(llm: VideoLLM, result: object) -> float:
    """Full prefill MACs without the n² attention term (for the gap explanation)."""
    dims = flops.llm_dims(llm.config)
    total = 0.0
    for video in result.video_tokens_per_layer:
        n = video + result.text_tokens
        total += flops.layer_macs(dims, n) - 2 * n * n * dims.hidden
    return total


def _inside(event: object, prof: profile, name: str) -> bool:
    """True for the op events inside the ``record_function(name)`` range (self times and FLOPs do not overlap: a
    parent op such as ``aten::linear`` carries no FLOPs of its own and its self time excludes its children)."""
    ranges = getattr(prof, "_ranges", None)
    if ranges is None:
        ranges = [(e.time_range.start, e.time_range.end) for e in prof.events() if e.name == name]
        prof._ranges = ranges  # type: ignore[attr-defined]
    start, end = event.time_range.start, event.time_range.end
    return event.name != name and any(a <= start and end <= b for a, b in ranges)


if __name__ == "__main__":
    main(sys.argv[1:])

"""Latency benchmark (``make bench``): does pruning turn FLOPs saved into time saved, and what does it cost?

    python scripts/bench.py                               # CPU, mid-size random LLaVA-OV (model=mid)
    python scripts/bench.py --device cuda --full          # GPU, LLaVA-OneVision-7B architecture, random bf16 weights

For every method at every retention (vanilla once), on the same frames and prompt, timed with ``time.perf_counter``
(``torch.cuda.synchronize`` on GPU; nanoGPT's bench.py pattern) over ``--reps`` interleaved repetitions (each
repetition times every cell once, in turn, so drift and load hit all cells alike) after ``--warmup`` rounds:

* **TTFT**: frames in memory → first generated token (processor, vision tower, pre-LLM method, prefill, LM head);
* **prefill**: all decoder layers, the in-LLM hooks included;
* **decode ms/token**: ``--new-tokens`` greedy tokens (stop tokens ignored), per forward step;
* **overhead**: the pre-LLM method (after the vision tower) and the in-LLM hooks (the attention-row probe), in ms and as
  % of vanilla's prefill;
* **peak memory**: CUDA max allocated, or on CPU the peak RSS increase during the sample (sampled at 1 kHz);
* **FLOPs-proportional time**: vanilla's prefill × the method's full-prefill FLOPs / vanilla's (text included), from
  the token counts it kept at every layer; measured / proportional is computed per repetition;
* **stack time at the same counts**: the stock decoder layers alone, fed random hidden states of exactly the method's
  per-layer token counts (no method code, no probe). A decoder stack does not run proportionally faster on shorter
  sequences (smaller matrices use the hardware less well, per-layer costs stay), so this is the time the hardware
  allows; measured / stack is what the method's own work inside the LLM adds.

Each value is reported as the median with min–max over the repetitions. Results replace
``benchmarks/<device>-<arch>.{json,md,png}`` and ``benchmarks/RESULTS.md`` is rebuilt from every result file there.
No test times anything: performance claims live here.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch

from adatp_bench import flops
from adatp_bench.config import method_defaults
from adatp_bench.core.context import PrunableModel
from adatp_bench.errors import ConfigError
from adatp_bench.models.adapter import VideoLLM
from adatp_bench.pruning import PruningMethod, build_method, method_names

QUESTION = "What happens after the scene change?\nA. a person enters\nB. the light turns off\nC. nothing\nD. it rains"
OUT = Path(__file__).resolve().parents[1] / "benchmarks"


# -- the model --------------------------------------------------------------------------------------------------------


def build_llm(device: str, full: bool, attn: str) -> VideoLLM:
    """model=mid on CPU, or the LLaVA-OneVision-7B architecture with random bf16 weights (``--full``)."""
    if not full:
        llm = VideoLLM.from_spec("mid", device=device, attn_implementation=attn)
        llm.ensure_relevance_encoder()
        return llm
    from transformers import LlavaOnevisionForConditionalGeneration

    from adatp_bench.models.full_size import load_full_size_config
    from adatp_bench.models.relevance import RelevanceEncoder
    from adatp_bench.models.specs import get_spec
    from adatp_bench.models.tiny import build_random_siglip, build_tiny_processor, build_tiny_tokenizer

    tok = build_tiny_tokenizer()
    cfg = load_full_size_config("llava_ov_7b")
    cfg.text_config.vocab_size = len(tok)  # random weights: the byte tokenizer stands in for Qwen2's
    cfg.image_token_index = tok.convert_tokens_to_ids("<image>")
    cfg.video_token_index = tok.convert_tokens_to_ids("<video>")
    cfg.text_config.eos_token_id = tok.convert_tokens_to_ids("<|im_end|>")
    cfg._attn_implementation = attn
    torch.manual_seed(0)
    with torch.device(device):
        model = LlavaOnevisionForConditionalGeneration(cfg).to(torch.bfloat16).eval()
    model.model.image_newline.data.normal_(0, 0.02)
    processor = build_tiny_processor(tok, image_size=cfg.vision_config.image_size)
    llm = VideoLLM(get_spec("llava_ov_7b"), model, processor, source="random:llava_ov_7b")
    with torch.device(device):
        siglip = build_random_siglip(cfg.vision_config, text_layers=4).to(torch.bfloat16)
    llm.relevance = RelevanceEncoder(siglip, tok)
    return llm


# -- one measurement ----------------------------------------------------------------------------------------------


class PeakRSS:
    """Peak resident memory while the block runs, sampled from /proc/self/statm at about 1 kHz (Linux)."""

    def __enter__(self) -> PeakRSS:
        self.start = self.peak = _rss_bytes()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.001):
            self.peak = max(self.peak, _rss_bytes())

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_bytes())

    @property
    def increase_mib(self) -> float:
        return (self.peak - self.start) / 2**20


def _rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def stack_ms(llm: VideoLLM, counts: list[int], text: int, device: str) -> float:
    """The stock decoder layers on random hidden states of ``counts[i] + text`` tokens at layer ``i``."""
    lm = llm.runner.lm
    hidden = torch.randn(1, counts[0] + text, llm.config.text_config.hidden_size, device=llm.device, dtype=llm.dtype)
    sync(device)
    t0 = time.perf_counter()
    rope, size = None, -1
    for layer, n in zip(lm.layers, counts, strict=True):
        if n + text != size:
            size = n + text
            hidden = hidden[:, :size]
            rope = lm.rotary_emb(hidden, torch.arange(size, device=llm.device)[None])
        hidden = layer(hidden, attention_mask=None, position_embeddings=rope)
    sync(device)
    return (time.perf_counter() - t0) * 1e3


def measure(llm: VideoLLM, frames: np.ndarray, device: str, new_tokens: int) -> dict[str, object]:
    """One sample with the installed method: TTFT, prefill, decode, overheads, memory and the token counts kept."""
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    with PeakRSS() as rss:
        sync(device)
        t0 = time.perf_counter()
        state, ctx, timings, _ = llm.prepare(frames, QUESTION, sample_id="bench")
        sync(device)
        t1 = time.perf_counter()
        pre = llm.runner.prefill(state, llm.method, ctx)
        int(llm.runner.lm_head(pre.last_hidden)[:, -1].argmax(-1))  # the first token: TTFT ends here
        sync(device)
        t2 = time.perf_counter()
        out = llm.runner.decode(pre, new_tokens, set(), llm.method, ctx)  # no stop tokens: exactly new_tokens
        sync(device)
        t3 = time.perf_counter()
    steps = max(1, len(out) - 1)  # the first token comes from the prefill's logits
    memory = torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda") else rss.increase_mib
    stack = stack_ms(llm, pre.video_tokens_per_layer, pre.text_tokens, device)
    return {
        "stack_ms": stack,
        "ttft_ms": (t2 - t0) * 1e3,
        "prefill_ms": (t2 - t1) * 1e3,
        "decode_ms_per_token": (t3 - t2) * 1e3 / steps,
        "pre_ms": timings["pre_llm_method_ms"],
        "in_ms": pre.method_ms,
        "memory_mib": memory,
        "counts": pre.video_tokens_per_layer,
        "text": pre.text_tokens,
    }


# -- the run ------------------------------------------------------------------------------------------------------


def cells(
    llm: PrunableModel, retentions: list[float], names: list[str]
) -> tuple[list[tuple[str, float | None, PruningMethod]], list[dict]]:
    """(method, retention, instance): vanilla once, then every other method at every retention it can reach; and the
    settings it cannot (e.g. DyCoke below 25%), each with the method's own reason."""
    out: list[tuple[str, float | None, PruningMethod]] = [("vanilla", None, build_method("vanilla"))]
    impossible: list[dict] = []
    for name in names:
        if name == "vanilla":
            continue
        settings = method_defaults(name)
        for r in retentions:
            if "retention" in settings:
                settings = {**settings, "retention": r}
            method = build_method(name, **settings)
            try:
                method.validate(llm.tokens_per_frame, llm.num_frames, llm.num_layers)
            except ConfigError as exc:
                impossible.append({"method": name, "retention": r, "why": str(exc)})
                continue
            out.append((name, r, method))
    return out, impossible


def run(llm: PrunableModel, grid: list, frames: np.ndarray, args: argparse.Namespace) -> list[dict]:
    reps: list[list[dict]] = [[] for _ in grid]
    total = args.warmup + args.reps
    for rep in range(total):
        started = time.perf_counter()
        for i, (_, _, method) in enumerate(grid):
            with method(llm):
                result = measure(llm, frames, args.device, args.new_tokens)
            if rep >= args.warmup:
                reps[i].append(result)
        what = "warm-up" if rep < args.warmup else f"repetition {rep - args.warmup + 1}/{args.reps}"
        print(f"[bench] {what}: {len(grid)} cells in {time.perf_counter() - started:.0f} s", flush=True)
    return summarise(llm, grid, reps)


def _spread(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def summarise(llm: VideoLLM, grid: list, reps: list[list[dict]]) -> list[dict]:
    vanilla = reps[0]
    base_flops = flops.full_prefill_macs(llm.config, vanilla[0]["counts"], vanilla[0]["text"])
    base_prefill = statistics.median(r["prefill_ms"] for r in vanilla)
    rows = []
    for (name, retention, _), runs in zip(grid, reps, strict=True):
        full = flops.full_prefill_macs(llm.config, runs[0]["counts"], runs[0]["text"])
        share = full / base_flops
        ratios = [r["prefill_ms"] / (v["prefill_ms"] * share) for r, v in zip(runs, vanilla, strict=True)]
        to_stack = [r["prefill_ms"] / r["stack_ms"] for r in runs]
        overhead = [r["pre_ms"] + r["in_ms"] for r in runs]
        rows.append(
            {
                "method": name,
                "retention": retention,
                "video_tokens_in": runs[0]["counts"][0],
                "video_tokens_last": runs[0]["counts"][-1],
                "full_prefill_flops_pct": 100 * share,
                "flops_proportional_ms": base_prefill * share,
                "ratio": _spread(ratios),
                "ratio_to_stack": _spread(to_stack),
                "overhead_pct_of_vanilla_prefill": _spread([100 * o / base_prefill for o in overhead]),
                **{k: _spread([float(r[k]) for r in runs]) for k in
                   ("ttft_ms", "prefill_ms", "stack_ms", "decode_ms_per_token", "pre_ms", "in_ms", "memory_mib")},
            }
        )  # fmt: skip
    return rows


def command_line(script: str) -> str:
    """The command as a reader re-types it: paths inside the checkout are written relative to it."""
    root = OUT.parent
    words = []
    for word in sys.argv[1:]:
        path = Path(word)
        if path.is_absolute() and path.resolve().is_relative_to(root):
            word = str(path.resolve().relative_to(root)) or "."
        words.append(word)
    return " ".join(["python", script, *words])


def machine(device: str) -> dict[str, object]:
    """What ran the benchmark: CPU or GPU model, threads, load, versions, commit."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as fh:
        cpu = next((line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), cpu)
    import transformers

    sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False)
    return {
        "device": torch.cuda.get_device_name(0) if device.startswith("cuda") else cpu,
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "git": sha.stdout.strip() or None,
    }


# -- output -------------------------------------------------------------------------------------------------------


def _fmt(s: dict[str, float], digits: int = 1) -> str:
    return f"{s['median']:.{digits}f} ({s['min']:.{digits}f}–{s['max']:.{digits}f})"


def _percent(retention: float | None) -> str:
    return "—" if retention is None else f"{100 * retention:g}%"


def table(rows: list[dict], impossible: list[dict] = ()) -> str:
    head = (
        "| method | retention | video tokens in → last | FLOPs % | prefill ms | FLOPs-prop. ms | measured / prop. | "
        "stack ms | measured / stack | TTFT ms | decode ms/token | pre-LLM ms | in-LLM ms | overhead % | "
        "peak mem MiB |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n"
    )
    body = "".join(
        f"| {r['method']} | {_percent(r['retention'])} | "
        f"{r['video_tokens_in']} → {r['video_tokens_last']} | {r['full_prefill_flops_pct']:.1f} | "
        f"{_fmt(r['prefill_ms'])} | {r['flops_proportional_ms']:.1f} | {_fmt(r['ratio'], 2)} | "
        f"{_fmt(r['stack_ms'])} | {_fmt(r['ratio_to_stack'], 2)} | {_fmt(r['ttft_ms'])} | "
        f"{_fmt(r['decode_ms_per_token'])} | {_fmt(r['pre_ms'])} | {_fmt(r['in_ms'])} | "
        f"{_fmt(r['overhead_pct_of_vanilla_prefill'])} | {_fmt(r['memory_mib'])} |\n"
        for r in rows
    )
    skipped = "".join(
        f"| {r['method']} | {_percent(r['retention'])} | n/a: {r['why']} |{' |' * 12}\n" for r in impossible
    )
    return head + body + skipped


def plot(rows: list[dict], path: Path, title: str) -> None:
    """measured / FLOPs-proportional prefill (min–max bars) and TTFT per method, one panel per retention."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    retentions = sorted({r["retention"] for r in rows if r["retention"] is not None}, reverse=True)
    fig, axes = plt.subplots(2, len(retentions), figsize=(4.2 * len(retentions), 6.5), squeeze=False, dpi=110)
    for col, retention in enumerate(retentions):
        sub = [r for r in rows if r["retention"] in (retention, None)]
        names = [r["method"] for r in sub]
        for row, (key, label) in enumerate((("ratio", "measured / FLOPs-proportional"), ("ttft_ms", "TTFT ms"))):
            ax = axes[row][col]
            med = [r[key]["median"] for r in sub]
            err = [[m - r[key]["min"] for m, r in zip(med, sub, strict=True)],
                   [r[key]["max"] - m for m, r in zip(med, sub, strict=True)]]  # fmt: skip
            ax.bar(range(len(sub)), med, yerr=err, capsize=2, color="tab:blue" if row == 0 else "tab:orange")
            if row == 0:
                ax.axhline(1.0, color="grey", lw=0.8)
                ax.axhline(1.15, color="red", lw=0.8, ls="--")
                ax.set_title(f"retention {100 * retention:g}%")
            ax.set_xticks(range(len(sub)), names, rotation=70, fontsize=7)
            ax.set_ylabel(label, fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def rebuild_index(out: Path) -> Path:
    """benchmarks/RESULTS.md from every result file in ``out`` (plus the hand-written analysis, if any)."""
    sections = [
        "# Benchmark results\n",
        "Rebuilt by `make bench` from the result files in this folder; each section "
        "names its command, machine and load. Numbers are medians with min–max over interleaved repetitions.\n",
    ]
    for path in sorted(out.glob("*.json")):
        data = json.loads(path.read_text())
        meta = data["meta"]
        body = (
            data["markdown"]
            if "markdown" in data
            else f"![{path.stem}]({path.stem}.png)\n\n" + table(data["rows"], data.get("impossible", []))
        )
        sections.append(
            f"\n## {meta['title']}\n\n`{meta['command']}` — {meta['date']}, {meta['machine']['device']} "
            f"({meta['machine']['torch_threads']} threads), load average {meta['load_before']} → {meta['load_after']}, "
            f"torch {meta['machine']['torch']}, transformers {meta['machine']['transformers']}, commit "
            f"{meta['machine']['git']}. {meta['reps']} repetition(s) after {meta['warmup']} warm-up.\n\n" + body
        )
    analysis = out / "analysis.md"
    if analysis.exists():
        sections.append("\n" + analysis.read_text())
    index = out / "RESULTS.md"
    index.write_text("".join(sections))
    return index


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--full", action="store_true", help="the LLaVA-OneVision-7B architecture (GPU)")
    parser.add_argument("--frames", type=int, default=None, help="default: 16 (mid) or 32 (--full)")
    parser.add_argument("--retentions", default="0.25,0.15,0.10")
    parser.add_argument("--methods", default=None, help="comma-separated (default: every registered method)")
    parser.add_argument("--attn", default="sdpa", choices=["sdpa", "flash_attention_2"])
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--new-tokens", type=int, default=16)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    if args.reps < 1 or args.new_tokens < 2:
        sys.exit("--reps must be >= 1 and --new-tokens >= 2")
    torch.set_grad_enabled(False)
    load_before = os.getloadavg()[0]
    llm = build_llm(args.device, args.full, args.attn)
    n = args.frames or (32 if args.full else llm.spec.num_frames)
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, (n, 240, 320, 3), dtype=np.uint8)
    frames[n // 2 :] = frames[n // 2 :] // 2  # a scene change for the segment-aware methods
    names = args.methods.split(",") if args.methods else method_names()
    grid, impossible = cells(llm, [float(r) for r in args.retentions.split(",")], names)
    rows = run(llm, grid, frames, args)
    arch = "llava_ov_7b" if args.full else "mid"
    name = f"{'cuda' if args.device.startswith('cuda') else 'cpu'}-{arch}"
    title = (
        "LLaVA-OneVision-7B architecture (random bf16)"
        if args.full
        else "model=mid (random LLaVA-OV: SigLIP 4×384, Qwen2 8×768)"
    ) + f", {n} frames, {args.attn}, {args.device}"
    meta = {
        "title": title,
        "command": command_line("scripts/bench.py"),
        "date": f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "machine": machine(args.device),
        "load_before": round(load_before, 2),
        "load_after": round(os.getloadavg()[0], 2),
        "reps": args.reps,
        "warmup": args.warmup,
        "new_tokens": args.new_tokens,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{name}.json").write_text(
        json.dumps({"meta": meta, "rows": rows, "impossible": impossible}, indent=1) + "\n"
    )
    (args.out / f"{name}.md").write_text(f"# {title}\n\n`{meta['command']}`\n\n" + table(rows, impossible))
    plot(rows, args.out / f"{name}.png", title)
    print(table(rows, impossible))
    print(f"wrote {args.out / name}.{{json,md,png}} and {rebuild_index(args.out)}")


if __name__ == "__main__":
    main()

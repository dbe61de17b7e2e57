"""Prefill benchmark: does pruning turn FLOPs saved into time saved, and what does the pruning itself cost?

    python scripts/bench_prefill.py                        # CPU, mid-size random LLaVA-OV → benchmarks/RESULTS.md
    python scripts/bench_prefill.py --device cuda --full   # GPU, LLaVA-OneVision-7B architecture, random bf16

For each method at one retention, on the same frames and prompt:
  * prefill time (all decoder layers, the pruning hooks included), median of ``--iters`` runs after ``--warmup``;
  * the FLOPs-implied bound = vanilla prefill time × (method's full-prefill FLOPs / vanilla's), from the token counts
    the method actually kept at every layer (text tokens included: they are computed too);
  * measured / bound (1.0 = the FLOPs saving became a time saving exactly);
  * pruning overhead per sample: pre-LLM method time (segmentation, relevance, dedup, ...) and in-LLM hook time (the
    attention-row probe), in ms and as % of the vanilla prefill.
Timings use ``time.perf_counter`` with ``torch.cuda.synchronize`` on GPU (nanoGPT's bench.py pattern). No test times
anything: performance claims live here.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
from transformers import (
    LlavaOnevisionConfig,
    LlavaOnevisionForConditionalGeneration,
    Qwen2Config,
    SiglipVisionConfig,
)

from adatp_bench import flops
from adatp_bench.config import method_defaults
from adatp_bench.models.adapter import VideoLLM
from adatp_bench.models.relevance import RelevanceEncoder
from adatp_bench.models.specs import get_spec
from adatp_bench.models.tiny import build_random_siglip, build_tiny_processor, build_tiny_tokenizer
from adatp_bench.pruning import build_method, method_names

QUESTION = "What happens after the scene change?\nA. a person enters\nB. the light turns off\nC. nothing\nD. it rains"


def mid_size_config(tokenizer) -> LlavaOnevisionConfig:
    """A CPU-sized LLaVA-OV: SigLIP 4×384 at 224 px (16×16 patches → 8×8 = 64 tokens/frame), Qwen2 8×768, GQA 12/2."""
    vision = SiglipVisionConfig(
        hidden_size=384,
        intermediate_size=1536,
        num_hidden_layers=4,
        num_attention_heads=6,
        image_size=224,
        patch_size=14,
        vision_use_head=False,
    )
    text = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=768,
        intermediate_size=2048,
        num_hidden_layers=8,
        num_attention_heads=12,
        num_key_value_heads=2,
        max_position_embeddings=8192,
        eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
    )
    return LlavaOnevisionConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        video_token_index=tokenizer.convert_tokens_to_ids("<video>"),
        vision_feature_select_strategy="full",
        vision_feature_layer=-1,
        image_grid_pinpoints=[[224, 224]],
    )


def build_llm(args: argparse.Namespace) -> VideoLLM:
    """Random-weight model: mid-size on CPU, or the full LLaVA-OV-7B architecture (``--full``)."""
    tok = build_tiny_tokenizer()
    dtype = torch.bfloat16 if args.device.startswith("cuda") else torch.float32
    if args.full:
        from adatp_bench.models.full_size import load_full_size_config

        cfg = load_full_size_config("llava_ov_7b")
        cfg.text_config.vocab_size = len(tok)  # random weights: the byte tokenizer stands in for Qwen2's
        cfg.image_token_index = tok.convert_tokens_to_ids("<image>")
        cfg.video_token_index = tok.convert_tokens_to_ids("<video>")
        cfg.text_config.eos_token_id = tok.convert_tokens_to_ids("<|im_end|>")
        image_size = cfg.vision_config.image_size
    else:
        cfg = mid_size_config(tok)
        image_size = 224
    cfg._attn_implementation = args.attn
    torch.manual_seed(0)
    with torch.device(args.device):
        model = LlavaOnevisionForConditionalGeneration(cfg).to(dtype).eval()
    model.model.image_newline.data.normal_(0, 0.02)
    spec = get_spec("llava_ov_7b" if args.full else "tiny")
    llm = VideoLLM(spec, model, build_tiny_processor(tok, image_size=image_size))
    llm.relevance = random_relevance_encoder(cfg, args.device, dtype)  # adatp/fastvid: SigLIP head + text tower
    return llm


def random_relevance_encoder(cfg: LlavaOnevisionConfig, device: str, dtype: torch.dtype) -> RelevanceEncoder:
    """A random SigLIP with the benchmarked tower's vision width (adatp and fastvid score with it)."""
    with torch.device(device):
        model = build_random_siglip(cfg.vision_config, text_layers=4).to(dtype)
    return RelevanceEncoder(model, build_tiny_tokenizer())


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def measure_once(llm: VideoLLM, frames: np.ndarray, device: str) -> dict[str, object]:
    """One prefill of the installed method: its time, the method's own overheads, and the token counts it kept."""
    state, ctx, timings, _ = llm.prepare(frames, QUESTION, sample_id="bench")
    sync(device)
    t0 = time.perf_counter()
    result = llm.runner.prefill(state, llm.method, ctx)
    sync(device)
    return {
        "prefill_ms": (time.perf_counter() - t0) * 1e3,
        "pre_ms": timings["pre_llm_method_ms"],
        "in_ms": result.method_ms,
        "counts": result.video_tokens_per_layer,
        "text": result.text_tokens,
    }


def round_robin(llm: VideoLLM, methods: dict, frames: np.ndarray, args: argparse.Namespace) -> dict[str, dict]:
    """Median over ``args.iters`` rounds, each round timing every method once in turn (so drift hits all alike)."""
    runs: dict[str, list[dict]] = {name: [] for name in methods}
    for i in range(args.warmup + args.iters):
        for name, method in methods.items():
            with method(llm):
                run = measure_once(llm, frames, args.device)
            if i >= args.warmup:
                runs[name].append(run)
    return {
        name: {
            "prefill_ms": statistics.median(r["prefill_ms"] for r in rs),
            "pre_ms": statistics.median(r["pre_ms"] for r in rs),
            "in_ms": statistics.median(r["in_ms"] for r in rs),
            "counts": rs[-1]["counts"],
            "text": rs[-1]["text"],
        }
        for name, rs in runs.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--full", action="store_true", help="full LLaVA-OneVision-7B architecture (GPU)")
    parser.add_argument("--frames", type=int, default=None, help="default: 16 (mid-size) or 32 (--full)")
    parser.add_argument("--retention", type=float, default=0.25)
    parser.add_argument("--methods", default=None, help="comma-separated (default: vanilla, then all)")
    parser.add_argument("--attn", default="sdpa", choices=["sdpa", "flash_attention_2"])
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/RESULTS.md"))
    args = parser.parse_args()
    frames_n = args.frames or (32 if args.full else 16)
    torch.set_grad_enabled(False)
    llm = build_llm(args)
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, (frames_n, 240, 320, 3), dtype=np.uint8)
    frames[frames_n // 2 :] = frames[frames_n // 2 :] // 2  # a scene change for segment-aware methods

    names = args.methods.split(",") if args.methods else ["vanilla", *(m for m in method_names() if m != "vanilla")]
    methods = {}
    for name in names:
        settings = method_defaults(name)
        if "retention" in settings:
            settings["retention"] = args.retention
        methods[name] = build_method(name, **settings)
    if next(iter(methods)) != "vanilla":
        sys.exit("the first method must be vanilla (the reference)")
    results = round_robin(llm, methods, frames, args)
    rows = []
    base_ms = results["vanilla"]["prefill_ms"]
    base_flops = flops.full_prefill_macs(llm.config, results["vanilla"]["counts"], results["vanilla"]["text"])
    for name, r in results.items():
        full = flops.full_prefill_macs(llm.config, r["counts"], r["text"])
        bound = base_ms * full / base_flops  # the time the FLOPs saving would predict
        overhead = r["pre_ms"] + r["in_ms"]
        rows.append(
            (
                name,
                r["counts"][0],
                r["counts"][-1],
                100 * full / base_flops,
                r["prefill_ms"],
                bound,
                r["prefill_ms"] / bound,
                r["pre_ms"],
                r["in_ms"],
                100 * overhead / base_ms,
            )
        )
        print(
            f"{name:>10}: prefill {r['prefill_ms']:8.1f} ms  bound {bound:8.1f} ms  ratio {rows[-1][6]:.2f}  "
            f"overhead {overhead:.1f} ms",
            flush=True,
        )

    machine = (
        f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
        if not args.device.startswith("cuda")
        else torch.cuda.get_device_name(0)
    )
    arch = "LLaVA-OneVision-7B architecture (random bf16)" if args.full else "mid-size random LLaVA-OV (Qwen2 8×768)"
    header = (
        f"\n## {arch}, {frames_n} frames, retention {args.retention:g}, {args.attn}, {args.device}\n\n"
        f"Machine: {machine}; torch {torch.__version__}; {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; "
        f"median of {args.iters} after {args.warmup} warm-up runs.\n\n"
        "| method | video tokens in → last layer | full-prefill FLOPs % | prefill ms | FLOPs-implied bound ms | "
        "measured / bound | pre-LLM overhead ms | in-LLM overhead ms | overhead % of vanilla prefill |\n"
        "|---|---|---|---|---|---|---|---|---|\n"
    )
    body = "".join(
        f"| {n} | {a} → {b} | {f:.1f} | {p:.1f} | {bd:.1f} | {ratio:.2f} | {pre:.2f} | {inn:.2f} | {ov:.1f} |\n"
        for n, a, b, f, p, bd, ratio, pre, inn, ov in rows
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if not args.out.exists():
        args.out.write_text(
            "# Benchmark results\n\nWritten by `make bench` (scripts/bench_prefill.py); newest last.\n"
        )
    with open(args.out, "a") as fh:
        fh.write(header + body)
    print(f"appended to {args.out}")


if __name__ == "__main__":
    main()

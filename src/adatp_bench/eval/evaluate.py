"""Evaluate one cell through lmms-eval's ``simple_evaluate`` and summarise it for the result record.

lmms-eval is used as a library with the real task code (prompts, answer extraction, scoring, aggregation); our model
instance is passed in directly. lmms-eval does not always raise when something went wrong, so every expected metric is
verified afterwards (``eval/verify.py``).
"""

from __future__ import annotations

import json
import resource
import statistics
from collections.abc import Callable
from typing import Any

import torch
from omegaconf import DictConfig

from adatp_bench import flops
from adatp_bench.cache import open_cache
from adatp_bench.errors import ConfigError
from adatp_bench.eval.benchmarks import PreparedBenchmark
from adatp_bench.eval.lmms_model import AdatpBenchLMM
from adatp_bench.eval.parsed import correct_from_lmms, parsed_from_lmms, parsed_key, write_correct, write_parsed
from adatp_bench.flops.extras import qwen_vision_macs
from adatp_bench.models.constant import ConstantAnswerModel
from adatp_bench.models.specs import ModelSpec, QwenVLSpec
from adatp_bench.pruning.base import PruningMethod
from adatp_bench.results import RunDir, atomic_write_text, sample_key


def evaluate_cell(
    cfg: DictConfig,
    spec: ModelSpec,
    method: PruningMethod,
    bench: PreparedBenchmark,
    run_dir: RunDir,
    completed: dict[tuple[str, int, str], dict[str, Any]],
    on_sample: Callable[[dict[str, Any]], None],
) -> dict[str, Any]:
    """Run lmms-eval on one cell; returns the metric and efficiency fields of the result record."""
    from lmms_eval.evaluator import simple_evaluate
    from lmms_eval.tasks import TaskManager
    from lmms_eval.utils import handle_non_serializable

    from adatp_bench.eval.verify import count_empty_responses, lvb_random_fallback, to_percent, verify_results

    m = cfg.model
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    lmm = AdatpBenchLMM(
        model=spec.name,
        method=method,
        source=m.source,
        dtype=m.dtype,
        device=m.device,
        attn_implementation=m.attn_implementation,
        num_frames=m.num_frames,
        seed=cfg.seed,
        on_sample=on_sample,
        completed=completed,
        relevance_encoder=m.relevance_encoder,
        answer=m.get("answer"),
        cache=open_cache(cfg.get("cache")),
    )
    # The task picks its prompt variant by this name (lmms_eval_specific_kwargs): "default" or e.g. "llava_vid".
    tm = TaskManager(
        "WARNING", include_path=str(bench.include_path), include_defaults=False, model_name=spec.prompt_style
    )
    results = simple_evaluate(
        model=lmm,
        tasks=[bench.task],
        task_manager=tm,
        limit=cfg.limit,
        bootstrap_iters=0,
        log_samples=True,
        random_seed=cfg.seed,
        numpy_random_seed=cfg.seed,
        torch_random_seed=cfg.seed,
        fewshot_random_seed=cfg.seed,
        # torch.distributed collectives (the model initialises the process group); "accelerate" would need an
        # Accelerator object on the model.
        distributed_executor_backend="torchrun",
    )
    # The samples this evaluation scored, by (task, doc id, doc hash): rows an earlier attempt left for documents that
    # have since changed stay on disk but are not counted. Each rank writes its keys; rank 0 reads them all.
    used = sorted({sample_key(r) for r in lmm.records})
    atomic_write_text(run_dir.path / f"scored.rank{lmm.rank}.json", json.dumps(used))
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()  # every rank's samples are on disk before rank 0 summarises
    if results is None:  # non-zero ranks get None from simple_evaluate
        return {"metrics": {}, "score": None, "n_samples": len(lmm.records), "efficiency": {}}
    scored = {tuple(k) for path in run_dir.path.glob("scored.rank*.json") for k in json.loads(path.read_text())}
    tasks = list(bench.subtasks) or [bench.task]  # a group's samples are its sub-tasks'
    rows = [r for r in run_dir.all_samples() if r["task"] in tasks and sample_key(r) in scored]
    write_parsed(run_dir, _parsed_answers(results, tasks, rows))
    write_correct(run_dir, _correctness(results, tasks, rows))
    atomic_write_text(
        run_dir.path / "lmms_results.json", json.dumps(results, indent=2, default=handle_non_serializable)
    )
    expected = {bench.task: list(bench.metrics)} if bench.metrics else None
    primary = verify_results(results, [bench.task], expected=expected)[bench.task]
    if bench.subtasks:  # every sub-task scored, or the group mean silently averages fewer
        verify_results(results, list(bench.subtasks), expected={sub: list(bench.metrics) for sub in bench.subtasks})
    scored = not bench.metrics or bench.metrics[0] != "custom_answered"  # an unscored custom benchmark has no score
    task_results = results["results"][bench.task]
    metrics = {k: float(v) for k, v in task_results.items() if isinstance(v, int | float) and not isinstance(v, bool)}
    for sub in bench.subtasks:  # per sub-task scores beside the group's: "<sub-task>/<metric>"
        entry = results["results"][sub]
        metrics.update({f"{sub}/{k}": float(v) for k, v in entry.items() if _number(v)})
    return {
        "metrics": metrics,
        "score": to_percent(bench.task, primary) if scored else None,
        "n_samples": len(rows),
        "n_empty_responses": sum(count_empty_responses(results).values()),
        "n_random_fallbacks": (
            sum(lvb_random_fallback(r["response"]) for r in rows) if bench.task.startswith("longvideobench") else None
        ),
        "efficiency": summarise_efficiency(rows, lmm, spec),
    }


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _parsed_answers(results: dict[str, Any], tasks: list[str], rows: list[dict[str, Any]]) -> dict[str, str]:
    """Each scored sample's parsed answer, from lmms-eval's logged samples (for the comparisons with vanilla). A
    LongVideoBench answer lmms-eval would replace by a random letter is left out: its raw text stands instead."""
    from adatp_bench.eval.verify import lvb_random_fallback

    by_doc = {(r["task"], int(r["doc_id"])): r for r in rows}
    parsed = {}
    for task in tasks:
        for sample in (results.get("samples") or {}).get(task, []):
            row = by_doc.get((task, int(sample.get("doc_id", -1))))
            answer = parsed_from_lmms(sample)
            if row is None or answer is None:
                continue
            if task.startswith("longvideobench") and lvb_random_fallback(row["response"]):
                continue
            parsed[parsed_key(row)] = answer
    return parsed


def _correctness(results: dict[str, Any], tasks: list[str], rows: list[dict[str, Any]]) -> dict[str, bool]:
    """Whether each scored sample was right as lmms-eval scored it (random LongVideoBench fallbacks included, as
    upstream counts them): which items are easy or hard (``report.subset``)."""
    by_doc = {(r["task"], int(r["doc_id"])): r for r in rows}
    correct = {}
    for task in tasks:
        for sample in (results.get("samples") or {}).get(task, []):
            row, right = by_doc.get((task, int(sample.get("doc_id", -1)))), correct_from_lmms(sample)
            if row is not None and right is not None:
                correct[parsed_key(row)] = right
    return correct


def summarise_efficiency(records: list[dict[str, Any]], lmm: AdatpBenchLMM, spec: ModelSpec) -> dict[str, Any]:
    """Mean tokens per layer, paper-convention FLOPs (and labelled extras), latency and memory over the samples."""
    if not records:
        return {}
    cache: dict[str, dict[str, int]] = {}
    for rec in records:
        for kind, outcome in (rec.get("cache") or {}).items():
            cache.setdefault(kind, {"hits": 0, "misses": 0})[f"{outcome}es" if outcome == "miss" else "hits"] += 1
    timing_keys = sorted({k for rec in records for k in rec["timings_ms"]})
    latency = {k: statistics.fmean([r["timings_ms"].get(k, 0.0) for r in records]) for k in timing_keys}
    if isinstance(lmm.llm, ConstantAnswerModel):  # no LLM: no tokens, no FLOPs
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        return {"latency_ms": latency, "max_rss_mib": rss, "cache": cache}
    llm = lmm.llm
    cfg = llm.config
    num_layers = llm.num_layers
    frames = lmm.num_frames
    per_row = spec.newline_layout == "per_row"
    # Dynamic resolution (Qwen2-VL / Qwen2.5-VL): every video has its own grid, so each sample's vanilla is its own
    # unpruned grid (no newlines) and the ViT extra is costed on its own patch grid.
    dynamic = isinstance(spec, QwenVLSpec)
    # Paper convention (docs/flops.md §3): OneVision's single trailing newline is not counted; LLaVA-Video's row
    # newlines are (those kept).
    vanilla_video = frames * llm.tokens_per_frame + (frames * llm.grid_side if per_row else 0)
    vanilla = flops.paper_tflops(cfg, [vanilla_video] * num_layers)
    # The SigLIP relevance encoder (AdaTP, FastVID) is an extra cost, recorded beside the paper column, never in it.
    relevance_cfg = llm.relevance.model.config if lmm.method.needs_relevance and llm.relevance is not None else None
    reports, vanillas = [], []
    for rec in records:
        video, newline = rec["video_tokens_per_layer"], rec["newline_tokens_per_layer"]
        paper_tokens = video if per_row else [v - n for v, n in zip(video, newline, strict=True)]
        if dynamic and not rec.get("grid_tokens"):
            raise ConfigError(
                f"sample {rec.get('doc_id')} of samples.jsonl has no grid_tokens (written by an older version): its "
                "vanilla under dynamic resolution is unknown; delete the cell's samples.jsonl and rerun the cell"
            )
        available = rec["grid_tokens"] if dynamic else vanilla_video
        sample_vanilla = flops.paper_tflops(cfg, [available] * num_layers) if dynamic else vanilla
        report = flops.make_flops_report(
            cfg,
            paper_tokens,
            vanilla_tflops=sample_vanilla,
            available_video_tokens=available,
            text_tokens=rec["text_tokens"],
            newline_tokens_per_layer=None if per_row else newline,
            frames=None if dynamic else frames,
            new_tokens=rec["output_tokens"],
            relevance_config=relevance_cfg,
            relevance_frames=frames if relevance_cfg is not None else None,
        ).as_dict()
        if dynamic:
            report["extra_vision_encoder_tflops"] = qwen_vision_macs(cfg, rec["video_grid_thw"]) / flops.TERA
        reports.append(report)
        vanillas.append(sample_vanilla)

    def mean(values: list[float]) -> float:
        return float(statistics.fmean(values)) if values else float("nan")

    peak = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None
    return {
        "visual_tokens_in": mean([r["visual_tokens_in"] for r in records]),
        "video_tokens_per_layer": [mean([r["video_tokens_per_layer"][i] for r in records]) for i in range(num_layers)],
        "text_tokens": mean([r["text_tokens"] for r in records]),
        "paper_tflops": mean([r["paper_tflops"] for r in reports]),
        "vanilla_paper_tflops": statistics.fmean(vanillas),  # per sample under dynamic resolution
        "pct_flops_of_vanilla": mean([r["pct_of_vanilla"] for r in reports]),
        "extra_full_prefill_tflops": mean([r["extra_full_prefill_tflops"] for r in reports]),
        "extra_vision_encoder_tflops": mean([r["extra_vision_encoder_tflops"] for r in reports]),
        "extra_decode_tflops": mean([r["extra_decode_tflops"] for r in reports]),
        "extra_relevance_encoder_tflops": (
            mean([r["extra_relevance_encoder_tflops"] for r in reports]) if relevance_cfg is not None else None
        ),
        "flops_convention": "LLM prefill MACs over video tokens (FastVID App. A.2); extras labelled separately",
        "latency_ms": latency,
        "peak_gpu_memory_mib": peak,
        "max_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "attn_implementation": llm.config.text_config._attn_implementation,
        "cache": cache,  # per kind (frames, vision, vision_attention): lookups that hit and missed
    }

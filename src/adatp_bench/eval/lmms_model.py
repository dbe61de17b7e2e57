"""Our lmms-eval model: the :class:`VideoLLM` adapter with a pruning method, behind lmms-eval's ``lmms`` API.

Registered through the ``lmms_eval.models`` entry point (pyproject.toml), so both work without editing lmms-eval:

    lmms-eval eval --model adatp_bench --model_args model=tiny,method=fastv --tasks videomme_synth --include_path ...
    simple_evaluate(model=AdatpBenchLMM(...), tasks=[...])            # in-process, as run.py does

Design rules:
- Exceptions propagate. lmms-eval's own wrappers turn a failed sample into ``""``; we never do (a crash marks the
  cell failed instead of silently scoring it).
- Per-sample records (answer, tokens per layer, timings, the frame indices fed to the model) go to ``on_sample`` as
  soon as a sample finishes, and ``completed`` answers are reused without running the model: that is how a requeued
  job resumes mid-cell. Samples are keyed by (task, doc id, hash of the document's content), so an answer is reused
  only for the very document it answered.
- lmms-eval's evaluator shards documents by ``rank``/``world_size`` (it sets both from ``WORLD_SIZE``/``RANK`` and
  gathers over torch.distributed); we only bind the device to ``LOCAL_RANK``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import torch
from lmms_eval.api.instance import GenerationResult, Instance, TokenCounts
from lmms_eval.api.model import lmms
from tqdm import tqdm

from adatp_bench.cache import ContentCache
from adatp_bench.config import method_defaults
from adatp_bench.core.video import VideoInput
from adatp_bench.models.adapter import SampleOutput, VideoLLM
from adatp_bench.models.constant import ConstantAnswerModel
from adatp_bench.models.loading import load_model
from adatp_bench.pruning import PruningMethod, build_method

SampleKey = tuple[str, int, str]  # (task, doc id, doc hash)


class AdatpBenchLMM(lmms):
    """A pruned Video LLM for lmms-eval's ``generate_until`` video tasks (batch size 1)."""

    is_simple = True

    def __init__(
        self,
        model: str | VideoLLM = "tiny",
        method: str | PruningMethod = "vanilla",
        source: str | None = None,
        dtype: str = "float32",
        device: str | None = None,
        attn_implementation: str = "sdpa",
        num_frames: int | str | None = None,
        seed: int | str = 0,
        batch_size: int | str = 1,
        relevance_encoder: str | None = None,
        answer: str | None = None,
        cache: ContentCache | None = None,
        on_sample: Callable[[dict[str, Any]], None] | None = None,
        completed: dict[SampleKey, dict[str, Any]] | None = None,
        **method_settings: Any,
    ) -> None:
        super().__init__()
        if int(batch_size) != 1:
            raise ValueError(f"batch_size={batch_size}: pruning methods assume batch size 1 (docs/methods.md §5.4)")
        self._world_size = int(os.environ.get("WORLD_SIZE", 1))
        self._rank = int(os.environ.get("RANK", 0))
        if device is None:
            device = f"cuda:{os.environ.get('LOCAL_RANK', 0)}" if torch.cuda.is_available() else "cpu"
        if self._world_size > 1:
            _init_process_group(device)
        if isinstance(model, VideoLLM | ConstantAnswerModel):
            self.llm = model
        else:
            self.llm = load_model(
                model,
                source=source,
                dtype=dtype,
                device=device,
                attn_implementation=attn_implementation,
                relevance_encoder=relevance_encoder,
                answer=answer,
            )
        if isinstance(method, str):
            settings = {**method_defaults(method), **_coerce(method_settings)}
            method = build_method(method, **settings)
        self.method = method
        self.cache = cache
        if isinstance(self.llm, VideoLLM):
            self.llm.cache = cache
        self.num_frames = int(num_frames) if num_frames not in (None, "", "None") else self.llm.spec.num_frames
        self.seed = int(seed)
        self.on_sample = on_sample
        self.completed = completed or {}
        self.records: list[dict[str, Any]] = []

    @property
    def rank(self) -> int:
        return self._rank

    @property
    def world_size(self) -> int:
        return self._world_size

    @property
    def device(self) -> torch.device:
        return self.llm.device

    def generate_until(self, requests: list[Instance]) -> list[GenerationResult]:
        """Answer each request: decode its video, run the pruned model greedily, cut at the ``until`` strings."""
        from adatp_bench.eval.dataset import doc_hash

        results: list[GenerationResult] = []
        bar = tqdm(requests, desc=f"{self.method.name} samples", disable=self.rank != 0, leave=False)
        with self.method(self.llm):
            for req in bar:
                context, gen_kwargs, doc_to_visual, doc_id, task, split = req.args
                doc = self.task_dict[task][split][doc_id]
                key = (task, int(doc_id), doc_hash(doc))
                _check_greedy(task, gen_kwargs)
                if key in self.completed:
                    rec = self.completed[key]
                else:
                    visuals = doc_to_visual(doc)
                    if len(visuals) != 1 or not isinstance(visuals[0], str):
                        raise ValueError(f"{task} doc {doc_id}: expected one video path, got {visuals!r}")
                    video, lookups = self._video_input(visuals[0])
                    out = self.llm.generate(
                        video,
                        context,
                        max_new_tokens=int(gen_kwargs.get("max_new_tokens", 16)),
                        sample_id=f"{task}/{doc_id}",
                        seed=self.seed,
                    )
                    rec = _record(key, visuals[0], video.indices, video.total_frames, context, out, gen_kwargs)
                    rec["timings_ms"]["video_decode_ms"] = lookups.pop("decode_ms", 0.0)
                    rec["cache"] = {**lookups, **out.cache}
                    if self.on_sample is not None:
                        self.on_sample(rec)
                self.records.append(rec)
                results.append(
                    GenerationResult(
                        text=rec["response"],
                        token_counts=TokenCounts(input_tokens=rec["input_tokens"], output_tokens=rec["output_tokens"]),
                    )
                )
        return results

    def _video_input(self, path: str) -> tuple[VideoInput, dict[str, Any]]:
        """The video's sampled frames, decoded only if the model asks for them: from the frames cache when it holds
        them (keyed by the file's content and the sampling), else decoded and cached. Returns the lookups made."""
        from adatp_bench.eval.video import SAMPLER_VERSION, read_sampled

        lookups: dict[str, Any] = {}

        def decode() -> tuple[Any, list[int], int]:
            t0 = time.perf_counter()
            entry = self.cache.get("frames", key) if key else None
            if entry is not None:
                lookups["frames"] = "hit"
                frames, indices, total = entry["frames"].numpy(), list(entry["indices"]), int(entry["total"])
            else:
                video = read_sampled(path, self.num_frames)
                frames, indices, total = video.frames, video.indices, video.total_frames
                if key:
                    lookups["frames"] = "miss"
                    payload = {"frames": torch.from_numpy(frames), "indices": indices, "total": total}
                    self.cache.put("frames", key, payload)
            lookups["decode_ms"] = (time.perf_counter() - t0) * 1e3
            return frames, indices, total

        key = None
        if self.cache is not None:
            key = self.cache.key("frames", self.cache.file_digest(path), self.num_frames, SAMPLER_VERSION)
        video = VideoInput(key=key, loader=decode)
        if not isinstance(self.llm, VideoLLM):
            video.decoded()  # the constant-answer model has no vision cache: the frames are always decoded
        return video, lookups

    def loglikelihood(self, requests: list[Instance]) -> list[tuple[float, bool]]:
        raise NotImplementedError("the video benchmarks are generate_until tasks; loglikelihood is not supported")

    def generate_until_multi_round(self, requests: list[Instance]) -> list[str]:
        raise NotImplementedError("multi-round generation is not supported")


def _init_process_group(device: str) -> None:
    """Data parallelism under torchrun / accelerate launch: NCCL on GPUs, gloo on CPU (lmms-eval gathers through it)."""
    import torch.distributed as dist

    if dist.is_available() and not dist.is_initialized():
        backend = "nccl" if str(device).startswith("cuda") else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(torch.device(device))
        dist.init_process_group(backend=backend)


def _check_greedy(task: str, gen_kwargs: dict[str, Any]) -> None:
    """Our decoder is greedy (every video task of the paper uses temperature 0); refuse anything else loudly."""
    sampling = bool(gen_kwargs.get("do_sample")) or float(gen_kwargs.get("temperature") or 0) > 0
    beams = int(gen_kwargs.get("num_beams") or 1)
    if sampling or beams != 1:
        raise ValueError(
            f"task {task!r} asks for do_sample={gen_kwargs.get('do_sample')}, "
            f"temperature={gen_kwargs.get('temperature')}, num_beams={beams}; "
            "adatp-bench decodes greedily (temperature 0, one beam) only"
        )


def _cut(text: str, until: list[str] | str | None) -> str:
    stops = [until] if isinstance(until, str) else list(until or [])
    for stop in stops:
        if stop and stop in text:
            text = text.split(stop)[0]
    return text


def _record(
    key: SampleKey,
    video: str,
    frame_indices: list[int],
    total_frames: int,
    context: str,
    out: SampleOutput,
    gen_kwargs: dict,
) -> dict[str, Any]:
    task, doc_id, doc_hash = key
    return {
        "task": task,
        "doc_id": doc_id,
        "doc_hash": doc_hash,
        "video": video,
        "frame_indices": frame_indices,  # which frames of the video the model saw (repeats: a short video)
        "video_total_frames": total_frames,
        "prompt": context,
        "response": _cut(out.text, gen_kwargs.get("until")),
        "raw_response": out.text,
        "input_tokens": out.input_tokens,
        "output_tokens": out.output_tokens,
        "text_tokens": out.text_tokens,
        "visual_tokens_in": out.visual_tokens_in,
        "grid_tokens": out.grid_tokens,  # the unpruned video's grid tokens (the sample's vanilla count)
        "video_grid_thw": list(out.video_grid_thw) if out.video_grid_thw else None,
        "video_tokens_per_layer": out.video_tokens_per_layer,
        "newline_tokens_per_layer": out.newline_tokens_per_layer,
        "timings_ms": dict(out.timings_ms),
        "method_stats": out.method_stats,
        "first_token": out.first_token,  # top-K ids and log-probs: compared with vanilla without labels
    }


def _coerce(settings: dict[str, Any]) -> dict[str, Any]:
    """CLI model_args arrive as strings; turn numbers and booleans back into Python values."""
    import yaml

    return {k: yaml.safe_load(v) if isinstance(v, str) else v for k, v in settings.items()}


def manifests() -> list[Any]:
    """Entry point payload for lmms-eval's ``ModelRegistryV2`` (docs/upstream.md §1)."""
    from lmms_eval.models.registry_v2 import ModelManifest

    return [
        ModelManifest(
            model_id="adatp_bench",
            simple_class_path="adatp_bench.eval.lmms_model.AdatpBenchLMM",
            aliases=("adatp-bench",),
        )
    ]

"""``VideoLLM``: one Video LLM behind one interface, from decoded frames to generated text, with a pruning method.

    frames ─► processor (resize, normalise) ─► SigLIP ─► projector ─► pool (bilinear | 2×2 avg) ─► (F, h, w, D)
          ─► method.select_visual (pre-LLM) ─► assemble text + video + newlines ─► DecoderRunner.prefill
             (method.before_layer at its layers) ─► greedy decode

Every step is timed per sample; the visual tokens entering each LLM layer are recorded for FLOPs.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from transformers import AutoProcessor, LlavaOnevisionForConditionalGeneration

from adatp_bench.cache import ContentCache
from adatp_bench.core.context import SampleContext, sample_seed
from adatp_bench.core.layout import VideoLayout, VisualTokens
from adatp_bench.core.video import VideoInput
from adatp_bench.errors import ConfigError, ModelLoadError
from adatp_bench.models.attention import QKCapture
from adatp_bench.models.llm import DecoderRunner
from adatp_bench.models.relevance import CachedRelevance, RelevanceEncoder
from adatp_bench.models.sequence import assemble
from adatp_bench.models.specs import ModelSpec, QwenVLSpec, get_spec
from adatp_bench.models.view import LlavaSampleView, vision_encoder_layers
from adatp_bench.pruning.base import PruningMethod

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class VisionOutputs:
    """What the vision tower leaves for a sample's view besides the tokens: every layer's output (None after a cache
    hit) and the attention statistics captured during its forward, by layer."""

    states: tuple[torch.Tensor, ...] | None = None
    attention: dict[int, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)


@dataclass
class SampleOutput:
    """Generation and bookkeeping for one sample."""

    text: str
    input_tokens: int  # tokens entering layer 0 (text + video)
    output_tokens: int
    video_tokens_per_layer: list[int]
    newline_tokens_per_layer: list[int]
    text_tokens: int
    visual_tokens_in: int  # grid tokens (no newlines) entering the LLM
    grid_tokens: int = 0  # grid tokens (no newlines) of the unpruned video: the sample's vanilla count
    video_grid_thw: tuple[int, int, int] | None = None  # (t, H, W) ViT patches: dynamic-resolution models only
    timings_ms: dict[str, float] = field(default_factory=dict)
    method_stats: dict[str, Any] = field(default_factory=dict)
    cache: dict[str, str] = field(default_factory=dict)  # per kind: "hit" or "miss" (absent: not looked up)
    first_token: dict[str, list] = field(default_factory=dict)  # top-K ids and log-probs of the first answer token


class VideoLLM:
    """A LLaVA-OneVision-architecture Video LLM (OneVision or converted LLaVA-Video) with pruning hooks.

    Build it with :meth:`from_spec`. Install a pruning method with ``with method(llm): llm.generate(...)``.
    """

    #: (t, H, W) ViT patches of the last prepared video; set by dynamic-resolution models (``models/qwen_vl.py``).
    last_video_grid_thw: tuple[int, int, int] | None = None

    def __init__(
        self,
        spec: ModelSpec,
        model: LlavaOnevisionForConditionalGeneration,
        processor: Any,
        relevance_source: str | None = None,
        source: str | None = None,
        seed: int = 0,
    ) -> None:
        self.spec = spec
        self.model = model.eval()
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.config = model.config
        self.method: PruningMethod | None = None
        self.relevance: RelevanceEncoder | None = None
        self.cache: ContentCache | None = None  # per-video cache of vision outputs (cache.py); set by the harness
        self.last_cache: dict[str, str] = {}  # the last sample's cache lookups, for its record
        self._source = source or spec.source
        self._seed = seed
        self._vision_identity: str | None = None
        self._relevance_source = relevance_source or spec.relevance_encoder
        inner = model.model
        self.runner = DecoderRunner(inner.language_model, model.lm_head)
        vc = self.config.vision_config
        self.patches_per_side = vc.image_size // vc.patch_size
        self.grid_side = spec.pooled_side(self.patches_per_side)
        self.video_token_id = self.config.video_token_index
        self.stop_token_ids = {
            i for i in [self.tokenizer.eos_token_id, self.config.text_config.eos_token_id] if i is not None
        }

    # -- construction --------------------------------------------------------------------------------------------------
    @classmethod
    def from_spec(
        cls,
        spec: ModelSpec | str,
        *,
        source: str | None = None,
        dtype: str = "float32",
        device: str = "cpu",
        attn_implementation: str = "sdpa",
        seed: int = 0,
        relevance_encoder: str | None = None,
    ) -> VideoLLM:
        """Load the model named by ``spec`` (or ``source`` overriding its checkpoint location)."""
        spec = get_spec(spec) if isinstance(spec, str) else spec
        if isinstance(spec, QwenVLSpec):  # Qwen2-VL / Qwen2.5-VL have their own adapter (models/qwen_vl.py)
            raise ConfigError(
                f"model {spec.name!r} is a Qwen2-VL / Qwen2.5-VL model: build it with "
                "adatp_bench.models.loading.load_model or adatp_bench.models.qwen_vl.QwenVideoLLM.from_spec"
            )
        if dtype not in DTYPES:
            raise ConfigError(f"unknown dtype {dtype!r}; valid: {sorted(DTYPES)}")
        source = source or spec.source
        if source.startswith("builtin:"):
            from adatp_bench.models.builtin import build_builtin

            model, processor = build_builtin(source, seed=seed)
            if attn_implementation != "sdpa":
                model.set_attn_implementation(attn_implementation)
        else:
            model, processor = load_pretrained(source, DTYPES[dtype], attn_implementation)
        model = model.to(device=device, dtype=DTYPES[dtype])
        return cls(spec, model, processor, relevance_source=relevance_encoder, source=source, seed=seed)

    def ensure_relevance_encoder(self) -> RelevanceEncoder:
        """Load the SigLIP relevance encoder on first use, on this model's device and dtype."""
        if self.relevance is None:
            self.relevance = RelevanceEncoder.load(self._relevance_source, self.device, self.dtype)
        return self.relevance

    @property
    def device(self) -> torch.device:
        return self.model.lm_head.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.lm_head.weight.dtype

    @property
    def num_layers(self) -> int:
        return self.config.text_config.num_hidden_layers

    @property
    def tokens_per_frame(self) -> int:
        return self.grid_side**2

    @property
    def num_frames(self) -> int:
        """Frames sampled per video by default (the spec's)."""
        return self.spec.num_frames

    # -- prompt --------------------------------------------------------------------------------------------------------
    def prompt(self, question: str) -> str:
        """Chat-formatted prompt holding one ``<video>`` placeholder, per the model's conventions."""
        messages: list[dict[str, Any]] = []
        if self.spec.system_prompt:
            messages.append({"role": "system", "content": [{"type": "text", "text": self.spec.system_prompt}]})
        messages.append({"role": "user", "content": [{"type": "video"}, {"type": "text", "text": question}]})
        return self.processor.apply_chat_template(messages, add_generation_prompt=True)

    def prompt_ids(self, question: str) -> torch.Tensor:
        ids = self.tokenizer(self.prompt(question), return_tensors="pt")["input_ids"]
        n_video = int((ids == self.video_token_id).sum())
        if n_video != 1:
            raise ValueError(f"the prompt must hold exactly one video placeholder, found {n_video}")
        return ids

    # -- vision --------------------------------------------------------------------------------------------------------
    def pixel_values(self, frames: np.ndarray) -> torch.Tensor:
        """(1, F, 3, H, W) normalised pixels for (F, H, W, 3) uint8 frames."""
        if frames.ndim != 4 or frames.shape[-1] != 3:
            raise ValueError(f"frames must be (F, H, W, 3) uint8, got shape {tuple(frames.shape)}")
        out = self.processor.video_processor(videos=[frames], return_tensors="pt")
        return out["pixel_values_videos"].to(self.device, self.dtype)

    @torch.no_grad()
    def encode_video(
        self, pixel_values_videos: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, ...]]:
        """Vision tower → projector → pooling.

        Returns:
            grid (F, h, w, D) pooled post-projector tokens, vision_hidden (F, P, Dv) the pre-projector features, and
            every vision layer's output (embeddings first).
        """
        b, _f = pixel_values_videos.shape[:2]
        if b != 1:
            raise ValueError(f"batch size must be 1 (docs/methods.md §5.4), got {b}")
        inner = self.model.model
        out = inner.vision_tower(pixel_values_videos.flatten(0, 1), output_hidden_states=True)
        layer = self.config.vision_feature_layer
        if not isinstance(layer, int):
            raise ConfigError("multi-layer vision features are not supported")
        hidden = out.hidden_states[layer]
        if self.config.vision_feature_select_strategy == "default":
            hidden = hidden[:, 1:]
        projected = inner.multi_modal_projector(hidden)
        return self.pool(projected), hidden, tuple(out.hidden_states)

    def pool(self, patch_map: torch.Tensor) -> torch.Tensor:
        """Pool (F, P[, C]) patch values onto the (F, h, w[, C]) token grid, with this model's pooling rule."""
        squeeze = patch_map.dim() == 2
        x = patch_map[..., None] if squeeze else patch_map
        n, _p, c = x.shape
        s = self.patches_per_side
        x = x.view(n, s, s, c).permute(0, 3, 1, 2)
        if self.spec.pooling == "bilinear":
            x = F.interpolate(x, size=(self.grid_side, self.grid_side), mode="bilinear")  # apply_pooling
        else:
            x = F.avg_pool2d(x, kernel_size=2, stride=2)  # LLaVA-NeXT get_2dPool("average")
        x = x.permute(0, 2, 3, 1)
        return x[..., 0] if squeeze else x

    def layout(self, input_ids: torch.Tensor, num_frames: int) -> VideoLayout:
        """The unpruned layout of a prompt whose single placeholder expands to ``num_frames`` frames."""
        start = int(torch.nonzero(input_ids[0] == self.video_token_id)[0, 0])
        side, nl = self.grid_side, self.spec.newline_layout
        video_len = VideoLayout(start, num_frames, side, side, nl, 0).video_len
        return VideoLayout(start, num_frames, side, side, nl, seq_len=input_ids.shape[1] - 1 + video_len)

    # -- one sample ----------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def prepare(self, frames: np.ndarray | VideoInput, question: str, sample_id: str = "0", seed: int = 0):
        """Encode, prune before the LLM, and assemble the prefill sequence. Returns (state, ctx, timings, n_visual).

        ``frames`` may be a :class:`VideoInput`: with a cache (``self.cache``) and a cacheable video, the vision
        tower's outputs are read from the cache when present (the frames are then never decoded) and written after
        a miss.
        """
        video = frames if isinstance(frames, VideoInput) else VideoInput.from_frames(frames)
        self.last_cache = {}
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        ids = self.prompt_ids(question)
        grid, vision_hidden, vision_outputs, vision_key = self._vision(video)
        _sync(self.device)
        timings["vision_ms"] = (time.perf_counter() - t0) * 1e3
        layout = self.layout(ids, grid.shape[0])
        method = self.method
        ctx = SampleContext(
            layout=layout,
            question=question,
            seed=sample_seed(seed, sample_id),
            vision_hidden=vision_hidden,
            pool_map=self.pool,
            relevance=self._relevance_for(vision_key) if method is not None and method.needs_relevance else None,
            model=LlavaSampleView(
                self.model,
                self.spec,
                vision_outputs.states,
                attention=vision_outputs.attention,
                recompute_states=lambda: self.encode_video(self.pixel_values(video.decoded()))[2],
                cache=self.cache,
                attention_key=vision_key,
                lookups=self.last_cache,
            ),
        )
        if ctx.relevance is not None:
            ctx.relevance.reset_timer()
        t0 = time.perf_counter()
        tokens = VisualTokens.from_grid(grid)
        positions = "contiguous"
        policy = "rows_with_kept"
        if method is not None:
            tokens = method.select_visual(tokens, ctx)
            positions = method.pre_llm_positions
            policy = getattr(method, "newline_policy", policy)
        newline = self.model.model.image_newline
        state = assemble(self.runner.lm.embed_tokens, ids, layout, tokens, newline, policy, positions)
        _sync(self.device)
        timings["pre_llm_method_ms"] = (time.perf_counter() - t0) * 1e3
        return state, ctx, timings, len(tokens)

    def _vision(self, video: VideoInput) -> tuple[torch.Tensor, torch.Tensor, VisionOutputs, str | None]:
        """(grid, vision_hidden, what else the tower left for the sample's view, the cache key or None)."""
        key = self.cache.key("vision", video.key, self.vision_identity()) if self.cache and video.key else None
        entry = self.cache.get("vision", key) if key else None
        if entry is not None:
            video.indices, video.total_frames = list(entry["frame_indices"]), int(entry["total_frames"])
            self.last_cache["vision"] = "hit"
            grid = entry["grid"].to(self.device)
            return grid, entry["vision_hidden"].to(self.device), VisionOutputs(), key
        wants_attention = self.method is not None and self.method.needs_vision_attention
        capture_layer = self.feature_layer_index() if wants_attention else None
        pixels = self.pixel_values(video.decoded())
        if capture_layer is None:
            grid, vision_hidden, states = self.encode_video(pixels)
            outputs = VisionOutputs(states=states)
        else:
            layers = vision_encoder_layers(self.model.model.vision_tower)
            with QKCapture(layers[capture_layer]) as capture:
                grid, vision_hidden, states = self.encode_video(pixels)
            outputs = VisionOutputs(states=states, attention={capture_layer: capture.attention()})
        if key:
            self.last_cache["vision"] = "miss"
            payload = {"grid": grid, "vision_hidden": vision_hidden, "frame_indices": video.indices}
            self.cache.put("vision", key, {**payload, "total_frames": video.total_frames})
        return grid, vision_hidden, outputs, key

    def _relevance_for(self, vision_key: str | None) -> RelevanceEncoder | CachedRelevance | None:
        """The relevance encoder for this sample: through the cache when the sample's vision outputs are cacheable."""
        if self.relevance is None or self.cache is None or vision_key is None:
            return self.relevance
        return CachedRelevance(self.relevance, self.cache, vision_key, self.last_cache)

    def feature_layer_index(self) -> int:
        """Index of the vision encoder layer whose output the LLM reads (``hidden_states[l]`` is layer ``l − 1``'s)."""
        num_layers = self.config.vision_config.num_hidden_layers
        out_index = self.config.vision_feature_layer % (num_layers + 1)
        if out_index == 0:
            raise ConfigError(f"vision_feature_layer={self.config.vision_feature_layer} is the patch embeddings")
        return out_index - 1

    def weights_identity(self) -> object:
        """Which weights these are: the built-in source and seed, a local folder's files (name, size, mtime), or the
        hub revision the config was loaded at."""
        source = self._source
        if source.startswith("builtin:"):
            return f"{source}:seed{self._seed}"
        if Path(source).is_dir():
            return sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in Path(source).glob("*"))
        return getattr(self.config, "_commit_hash", None)

    def vision_identity(self) -> str:
        """What the vision outputs of a frame depend on: the checkpoint (and its revision or weight files), the vision
        tower and projector configs, the pooling rule, the processor's resize and normalisation, dtype and device."""
        if self._vision_identity is None:
            vp = self.processor.video_processor
            self._vision_identity = json.dumps(
                {
                    "spec": self.spec.name,
                    "source": self._source,
                    "weights": self.weights_identity(),
                    "vision_config": self.config.vision_config.to_dict(),
                    "projector": [self.config.projector_hidden_act, self.config.vision_feature_layer],
                    "strategy": self.config.vision_feature_select_strategy,
                    "pooling": self.spec.pooling,
                    "processor": {k: str(getattr(vp, k, None)) for k in ("size", "image_mean", "image_std")},
                    "dtype": str(self.dtype),
                    "device": self.device.type,
                },
                sort_keys=True,
                default=str,
            )
        return self._vision_identity

    @torch.no_grad()
    def generate(
        self,
        frames: np.ndarray | VideoInput,
        question: str,
        max_new_tokens: int = 16,
        sample_id: str = "0",
        seed: int = 0,
    ) -> SampleOutput:
        """Answer ``question`` about ``frames`` with the installed method (or none)."""
        state, ctx, timings, n_visual = self.prepare(frames, question, sample_id, seed)
        input_tokens = len(state)
        t0 = time.perf_counter()
        pre = self.runner.prefill(state, self.method, ctx)
        _sync(self.device)
        timings["prefill_ms"] = (time.perf_counter() - t0) * 1e3
        timings["in_llm_method_ms"] = pre.method_ms
        first_token = first_token_top(self.runner.lm_head(pre.last_hidden)[0, -1])
        t0 = time.perf_counter()
        out_ids = self.runner.decode(pre, max_new_tokens, self.stop_token_ids, self.method, ctx)
        _sync(self.device)
        timings["decode_ms"] = (time.perf_counter() - t0) * 1e3
        if ctx.relevance is not None:
            timings["relevance_ms"] = ctx.relevance.elapsed_ms
        return SampleOutput(
            text=self.tokenizer.decode(out_ids, skip_special_tokens=True),
            input_tokens=input_tokens,
            output_tokens=len(out_ids),
            video_tokens_per_layer=pre.video_tokens_per_layer,
            newline_tokens_per_layer=pre.newline_tokens_per_layer,
            text_tokens=pre.text_tokens,
            visual_tokens_in=n_visual,
            grid_tokens=ctx.layout.num_grid_tokens,
            video_grid_thw=self.last_video_grid_thw,
            timings_ms=timings,
            method_stats={k: _plain(v) for k, v in ctx.stats.items() if not k.startswith("_")},
            cache=dict(self.last_cache),
            first_token=first_token,
        )

    @torch.no_grad()
    def prompt_logits(self, frames: np.ndarray, question: str, sample_id: str = "0", seed: int = 0) -> torch.Tensor:
        """(L', V) logits at every surviving prompt position after the whole stack (for equivalence tests)."""
        state, ctx, _, _ = self.prepare(frames, question, sample_id, seed)
        pre = self.runner.prefill(state, self.method, ctx, keep_all_hidden=True)
        return self.model.lm_head(pre.all_hidden)[0]


#: How many of the first answer token's most likely ids a sample records (label-free comparisons with vanilla).
FIRST_TOKEN_TOP_K = 64


def first_token_top(logits: torch.Tensor, k: int = FIRST_TOKEN_TOP_K) -> dict[str, list]:
    """The ``k`` most likely first tokens and their log-probabilities (fp32, over the whole vocabulary)."""
    logprobs = torch.log_softmax(logits.float(), dim=-1)
    top = torch.topk(logprobs, min(k, logprobs.numel()))
    return {"ids": top.indices.tolist(), "logprobs": [round(v, 6) for v in top.values.tolist()]}


def load_pretrained(
    source: str, dtype: torch.dtype, attn_implementation: str
) -> tuple[LlavaOnevisionForConditionalGeneration, Any]:
    """Load an HF-format LLaVA-OneVision checkpoint and its processor, with clear errors for bad sources."""
    path = Path(source)
    if path.exists():
        if not path.is_dir():
            raise ModelLoadError(f"{source} is a file; expected a checkpoint directory")
        if not (path / "config.json").exists():
            raise ModelLoadError(f"{source} has no config.json: not a transformers checkpoint directory")
        if not any(path.glob("*.safetensors")) and not any(path.glob("*.bin")):
            raise ModelLoadError(f"{source} holds no weights (*.safetensors or *.bin)")
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(source)
    except OSError as err:
        raise ModelLoadError(
            f"cannot load {source!r}: {err}. Download it with `huggingface-cli download {source}` or point "
            "model.source at a local directory."
        ) from err
    if config.model_type != "llava_onevision":
        hint = ""
        if config.model_type in {"llava", "llava_qwen"} or "LlavaQwen" in str(getattr(config, "architectures", "")):
            hint = " It looks like a LLaVA-NeXT checkpoint: convert it with `python -m adatp_bench.models.convert`."
        raise ModelLoadError(f"{source!r} is a {config.model_type!r} checkpoint, expected 'llava_onevision'.{hint}")
    try:
        model = LlavaOnevisionForConditionalGeneration.from_pretrained(
            source, dtype=dtype, attn_implementation=attn_implementation
        )
        processor = AutoProcessor.from_pretrained(source)
    except (OSError, ValueError, ImportError) as err:
        raise ModelLoadError(f"cannot load {source!r}: {err}") from err
    return model, processor


def _plain(value: Any) -> Any:
    """JSON-friendly copy of a stats value (tensors become lists or numbers)."""
    if isinstance(value, torch.Tensor):
        return value.item() if value.numel() == 1 else value.tolist()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)

"""Qwen2-VL and Qwen2.5-VL behind the :class:`~adatp_bench.models.adapter.VideoLLM` interface, transformers-native.

    frames ─► Qwen2-VL video processor (smart_resize: dynamic resolution within [min, max] pixels; 2-frame, 14 px
          3-D patches) ─► ViT (window attention in Qwen2.5-VL) ─► 2×2 patch merger ─► (T, h, w, D) token grid
          ─► method.select_visual ─► text + video (no newlines) with 3-D M-RoPE ids ─► DecoderRunner.prefill ─► decode

- **Token grid.** A "frame" of the :class:`~adatp_bench.core.layout.VideoLayout` is one *temporal patch* of
  ``temporal_patch_size`` = 2 input frames (arXiv 2409.12191 §2.1 "3D convolutions with a depth of two");
  its h × w tokens are the 2×2-merged patches (same section, "compress adjacent 2 × 2 tokens into a single token").
  The layout is ``none``: Qwen has no newline tokens; the video sits between ``<|vision_start|>`` and
  ``<|vision_end|>``, which are text tokens here.
- **M-RoPE** (arXiv 2409.12191 §2.1 "Multimodal Rotary Position Embedding"; Qwen2.5-VL report arXiv 2502.13923 §2.1.3
  "absolute time encoding"). The 3-D ids (t, h, w) of the unpruned sequence come from the model's own
  ``get_rope_index``; every token that survives pruning, before or inside the LLM, keeps its original (t, h, w) ids
  (``SequenceState.position_ids`` is (3, L) for these models). Decode continues at max(id) + 1 of the unpruned prompt,
  as transformers' ``rope_deltas`` do. Methods that renumber positions (PDrop, SparseVLM) are therefore not meaningful.
- Methods that need a SigLIP tower or its attention are refused with a :class:`~adatp_bench.errors.ConfigError`
  (:data:`NOT_APPLICABLE`, docs/qwen.md).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from adatp_bench.core.context import SampleContext, sample_seed
from adatp_bench.core.layout import VideoLayout, VisualTokens
from adatp_bench.core.video import VideoInput
from adatp_bench.errors import ConfigError, ModelLoadError, UnreachableSetting
from adatp_bench.models.adapter import DTYPES, VideoLLM, _sync
from adatp_bench.models.attention import probe_attention
from adatp_bench.models.llm import DecoderRunner, PrefillResult
from adatp_bench.models.sequence import assemble
from adatp_bench.models.specs import QwenVLSpec, get_spec

#: transformers model_type → (config class name, model class name).
FAMILIES: dict[str, tuple[str, str]] = {
    "qwen2_vl": ("Qwen2VLConfig", "Qwen2VLForConditionalGeneration"),
    "qwen2_5_vl": ("Qwen2_5_VLConfig", "Qwen2_5_VLForConditionalGeneration"),
}

_SIGLIP = (
    "it needs the SigLIP relevance encoder (attention-pooling head and text tower) applied to the LLM's own SigLIP "
    "features; Qwen's ViT is not SigLIP, so there is no such head or shared text space"
)
_VISION_ATTENTION = (
    "it needs the attention statistics of the vision layer feeding the projector (ctx.vision_attention), which are "
    "not implemented for Qwen's ViT (window attention over 2-frame patches, 2×2 merger after the tower)"
)
_RENUMBER = (
    "it renumbers RoPE positions 0..L−1 after each drop; with M-RoPE that would replace the kept tokens' 3-D (t, h, w) "
    "ids, which this harness keeps on Qwen models"
)
#: Methods refused on Qwen2-VL / Qwen2.5-VL, with the reason (docs/qwen.md).
NOT_APPLICABLE: dict[str, str] = {
    "adatp": _SIGLIP,
    "fastvid": _SIGLIP,
    "visionzip": _VISION_ATTENTION,
    "visionzip_pre": _VISION_ATTENTION,
    "holitom": _VISION_ATTENTION,
    "flashvid": _VISION_ATTENTION,
    "pdrop": _RENUMBER,
    "sparsevlm": _RENUMBER,
}


class MethodNotApplicable(UnreachableSetting):
    """A method that is not meaningful on this model (a :class:`ConfigError`; a sweep marks the cell "n/a")."""


def check_method(method_name: str, spec_name: str) -> None:
    """Raise :class:`MethodNotApplicable` when ``method_name`` is not meaningful on a Qwen model."""
    if method_name in NOT_APPLICABLE:
        raise MethodNotApplicable(
            f"method {method_name!r} is not available on model {spec_name!r}: {NOT_APPLICABLE[method_name]} "
            "(docs/qwen.md)"
        )


class MRopeDecoderRunner(DecoderRunner):
    """:class:`DecoderRunner` for M-RoPE decoders: position ids are (3, L) (t, h, w rows) and decode starts at
    :attr:`decode_start` (max id of the unpruned prompt + 1) in every layer."""

    decode_start: int | None = None

    def _rope(self, hidden: torch.Tensor, position_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if position_ids.dim() == 2 and position_ids.shape[0] == 3:  # (3, L) → (3, batch 1, L)
            position_ids = position_ids[:, None]
        return self.lm.rotary_emb(hidden, position_ids)

    def prefill(self, state, method, ctx, keep_all_hidden: bool = False) -> PrefillResult:  # type: ignore[override]
        result = super().prefill(state, method, ctx, keep_all_hidden=keep_all_hidden)
        if self.decode_start is not None:
            result.next_position = [self.decode_start] * self.num_layers
        return result


class QwenSampleView:
    """The :class:`~adatp_bench.core.context.ModelView` of one sample of a Qwen model (the LLM probe and patch cells;
    the vision-side views are not available, see :data:`NOT_APPLICABLE`)."""

    def __init__(self, llm: QwenVideoLLM, grid_w: int) -> None:
        self._llm = llm
        self._grid_w = grid_w

    @property
    def num_layers(self) -> int:
        return self._llm.num_layers

    def project(self, features: torch.Tensor) -> torch.Tensor:
        raise ConfigError("Qwen's merger projects 2×2 patch groups, not single vision features: ctx.project is n/a")

    def vision_attention(self, layer: int | None = None):
        raise ConfigError(f"ctx.vision_attention is not implemented on Qwen models: {_VISION_ATTENTION}")

    def patch_cells(self, patch_index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Patches are in the processor's order (row block, column block, 2, 2): patch p belongs to token p // 4."""
        cell = patch_index // (self._llm.merge**2)
        return cell // self._grid_w, cell % self._grid_w

    def probe(self, state, rows: torch.Tensor | None = None) -> torch.Tensor:
        runner = self._llm.runner
        rope = runner._rope(state.hidden, state.position_ids)
        return probe_attention(runner.lm.layers[state.layer_idx], state.hidden, rope, rows)


class QwenVideoLLM(VideoLLM):
    """A Qwen2-VL / Qwen2.5-VL Video LLM with the pruning hooks of :class:`VideoLLM` (same ``generate`` and
    ``prompt_logits``; vision, layout, positions and loading are Qwen's)."""

    def __init__(
        self,
        spec: QwenVLSpec,
        model: Any,
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
        self._method = None
        self.relevance = None
        self.cache = None
        self.last_cache: dict[str, str] = {}
        self._source = source or spec.source
        self._seed = seed
        self._vision_identity: str | None = None
        self._relevance_source = relevance_source or spec.relevance_encoder
        self.runner = MRopeDecoderRunner(model.model.language_model, model.lm_head)
        vc = self.config.vision_config
        self.merge = int(vc.spatial_merge_size)
        self.temporal_patch = int(vc.temporal_patch_size)
        self.video_token_id = int(self.config.video_token_id)
        self._grid_w = 1  # merged tokens per row of the last encoded video (patch → cell lookups)
        eos: list[Any] = [self.tokenizer.eos_token_id, self.config.text_config.eos_token_id]
        generation = getattr(model, "generation_config", None)  # Qwen2.5-VL-Instruct: [<|im_end|>, <|endoftext|>]
        eos.extend(_as_list(getattr(generation, "eos_token_id", None)))
        self.stop_token_ids = {int(i) for i in _as_list(eos) if i is not None}

    # -- methods: refuse the ones that are not meaningful here ---------------------------------------------------------
    @property
    def method(self):
        return self._method

    @method.setter
    def method(self, value) -> None:
        if value is not None:
            check_method(value.name, self.spec.name)
        self._method = value

    # -- construction --------------------------------------------------------------------------------------------------
    @classmethod
    def from_spec(  # type: ignore[override]
        cls,
        spec: QwenVLSpec | str,
        *,
        source: str | None = None,
        dtype: str = "float32",
        device: str = "cpu",
        attn_implementation: str = "sdpa",
        seed: int = 0,
        relevance_encoder: str | None = None,
    ) -> QwenVideoLLM:
        spec = get_spec(spec) if isinstance(spec, str) else spec
        if not isinstance(spec, QwenVLSpec):
            raise ConfigError(f"model {spec.name!r} is not a Qwen2-VL / Qwen2.5-VL model")
        if dtype not in DTYPES:
            raise ConfigError(f"unknown dtype {dtype!r}; valid: {sorted(DTYPES)}")
        source = source or spec.source
        if source.startswith("builtin:"):
            from adatp_bench.models.qwen_tiny import TINY_QWEN_SOURCE, build_tiny_qwen

            if source != TINY_QWEN_SOURCE:
                raise ConfigError(f"unknown builtin Qwen model {source!r}; known: {TINY_QWEN_SOURCE}")
            model, processor = build_tiny_qwen(seed=seed)
            if attn_implementation != "sdpa":
                model.set_attn_implementation(attn_implementation)
        else:
            model, processor = load_qwen_pretrained(source, spec.family, DTYPES[dtype], attn_implementation)
        model = model.to(device=device, dtype=DTYPES[dtype])
        return cls(spec, model, processor, relevance_source=relevance_encoder, source=source, seed=seed)

    def ensure_relevance_encoder(self):
        """Refused: the methods that ask for it (AdaTP, FastVID) are not meaningful here."""
        raise MethodNotApplicable(f"no relevance encoder on {self.spec.name!r}: {_SIGLIP} (docs/qwen.md)")

    @property
    def tokens_per_frame(self) -> int:
        """Merged tokens per temporal patch at the spec's nominal frame size (a real video may differ)."""
        return self.spec.tokens_per_frame

    @property
    def num_frames(self) -> int:
        """Temporal patches of the spec's frame count: the layout's frames, which methods are validated against."""
        return self.spec.temporal_patches()

    # -- vision --------------------------------------------------------------------------------------------------------
    def pixel_values(self, frames: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[override]
        """(patches, C·2·14·14) flattened 3-D patches and the (1, 3) (t, H, W) patch grid of (F, H, W, 3) frames."""
        if frames.ndim != 4 or frames.shape[-1] != 3:
            raise ValueError(f"frames must be (F, H, W, 3) uint8, got shape {tuple(frames.shape)}")
        out = self.processor.video_processor(
            videos=[frames],
            return_tensors="pt",
            do_sample_frames=False,  # the harness samples frames (uniformly, as lmms-eval)
            size={"shortest_edge": self.spec.min_pixels, "longest_edge": self.spec.max_pixels},
            cap_pixels_per_frame=False,  # fixed per-frame bounds: token counts known from the frame size alone
        )
        return out["pixel_values_videos"].to(self.device, self.dtype), out["video_grid_thw"].to(self.device)

    @torch.no_grad()
    def encode_video(  # type: ignore[override]
        self, pixel_values_videos: torch.Tensor, grid_thw: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """ViT → 2×2 merger. Returns the (T, h, w, D) token grid and the (T, 4·h·w, Dv) pre-merger patch features in
        the processor's patch order."""
        if grid_thw.shape[0] != 1:
            raise ValueError(f"batch size must be 1 (docs/methods.md §5.4), got {grid_thw.shape[0]} videos")
        visual = self.model.model.visual
        out = visual(pixel_values_videos.type(visual.dtype), grid_thw=grid_thw)
        t, big_h, big_w = (int(v) for v in grid_thw[0])
        h, w = big_h // self.merge, big_w // self.merge
        grid = out.pooler_output.view(t, h, w, -1)
        patches = out.last_hidden_state
        if hasattr(visual, "fullatt_block_indexes"):  # Qwen2.5-VL returns the tower's output in window order
            from transformers.vision_utils import get_vision_window_index

            window_index, _ = get_vision_window_index(
                grid_thw, spatial_merge_size=visual.spatial_merge_size, window_size=visual.window_size,
                patch_size=visual.patch_size, kwargs={},
            )
            patches = patches.view(-1, self.merge**2, patches.shape[-1])[torch.argsort(window_index)]
        self._grid_w = w
        return grid, patches.reshape(t, h * w * self.merge**2, -1)

    def pool(self, patch_map: torch.Tensor) -> torch.Tensor:
        """Pool (T, P[, C]) patch values onto the (T, h, w[, C]) token grid: the mean of each merged 2×2 group."""
        squeeze = patch_map.dim() == 2
        x = patch_map[..., None] if squeeze else patch_map
        t, p, c = x.shape
        w = self._grid_w
        x = x.view(t, p // (self.merge**2 * w), w, self.merge**2, c).mean(3)
        return x[..., 0] if squeeze else x

    def layout(self, input_ids: torch.Tensor, grid: torch.Tensor | int) -> VideoLayout:  # type: ignore[override]
        """The unpruned layout of a prompt whose single ``<|video_pad|>`` expands to the (T, h, w) token grid
        (``grid`` may also be a frame count: the spec's nominal grid is used)."""
        start = int(torch.nonzero(input_ids[0] == self.video_token_id)[0, 0])
        if isinstance(grid, int):
            t, (h, w) = self.spec.temporal_patches(grid), self.spec.token_grid()
        else:
            t, h, w = grid.shape[:3]
        return VideoLayout(start, t, h, w, "none", seq_len=input_ids.shape[1] - 1 + t * h * w)

    def mrope_ids(self, input_ids: torch.Tensor, layout: VideoLayout, grid_thw: torch.Tensor) -> torch.Tensor:
        """(3, S) M-RoPE ids of the unpruned sequence, from the model's own ``get_rope_index``."""
        ids = input_ids[0]
        start = layout.video_start
        video = torch.full((layout.num_grid_tokens,), self.video_token_id, dtype=ids.dtype)
        expanded = torch.cat([ids[:start], video, ids[start + 1 :]])[None].to(self.device)
        kwargs: dict[str, Any] = {"video_grid_thw": grid_thw}
        if self.spec.family == "qwen2_5_vl":  # absolute time: temporal ids advance tokens_per_second per second
            kwargs["second_per_grid_ts"] = torch.tensor([self.temporal_patch / self.spec.fps])
        position_ids, _ = self.model.model.get_rope_index(
            expanded, (expanded == self.video_token_id).int() * 2, **kwargs
        )
        return position_ids[:, 0]

    # -- one sample ----------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def prepare(self, frames: np.ndarray | VideoInput, question: str, sample_id: str = "0", seed: int = 0):
        """Encode, prune before the LLM, and assemble the prefill sequence with the original 3-D M-RoPE ids of every
        surviving token. Returns (state, ctx, timings, n_visual)."""
        video = frames if isinstance(frames, VideoInput) else VideoInput.from_frames(frames)
        self.last_cache = {}
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        ids = self.prompt_ids(question)
        grid, patches, grid_thw = self._vision(video)
        _sync(self.device)
        timings["vision_ms"] = (time.perf_counter() - t0) * 1e3
        layout = self.layout(ids, grid)
        self.last_video_grid_thw = tuple(int(x) for x in grid_thw.reshape(-1)[:3])  # the vision extra's input
        rope = self.mrope_ids(ids, layout, grid_thw)
        ctx = SampleContext(
            layout=layout,
            question=question,
            seed=sample_seed(seed, sample_id),
            vision_hidden=patches,
            pool_map=self.pool,
            model=QwenSampleView(self, layout.grid_w),
        )
        t0 = time.perf_counter()
        tokens = VisualTokens.from_grid(grid)
        if self.method is not None:
            tokens = self.method.select_visual(tokens, ctx)
        no_newline = torch.zeros(grid.shape[-1], dtype=grid.dtype, device=grid.device)
        state = assemble(self.runner.lm.embed_tokens, ids, layout, tokens, no_newline, "none", "original")
        state.position_ids = rope[:, state.original_index.to(rope.device)]
        self.runner.decode_start = int(rope.max()) + 1
        _sync(self.device)
        timings["pre_llm_method_ms"] = (time.perf_counter() - t0) * 1e3
        return state, ctx, timings, len(tokens)

    def _vision(self, video: VideoInput) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # type: ignore[override]
        """(token grid, pre-merger patches, (1, 3) patch grid), through the per-video cache when one is set."""
        key = self.cache.key("vision", video.key, self.vision_identity()) if self.cache and video.key else None
        entry = self.cache.get("vision", key) if key else None
        if entry is not None:
            video.indices, video.total_frames = list(entry["frame_indices"]), int(entry["total_frames"])
            self.last_cache["vision"] = "hit"
            self._grid_w = int(entry["grid"].shape[2])
            return (entry["grid"].to(self.device), entry["vision_hidden"].to(self.device),
                    entry["grid_thw"].to(self.device))
        pixels, grid_thw = self.pixel_values(video.decoded())
        grid, patches = self.encode_video(pixels, grid_thw)
        if key:
            self.last_cache["vision"] = "miss"
            payload = {"grid": grid, "vision_hidden": patches, "grid_thw": grid_thw, "frame_indices": video.indices}
            self.cache.put("vision", key, {**payload, "total_frames": video.total_frames})
        return grid, patches, grid_thw

    def vision_identity(self) -> str:
        """What the vision outputs depend on: checkpoint, vision config, processor bounds, dtype and device."""
        if self._vision_identity is None:
            vp = self.processor.video_processor
            self._vision_identity = json.dumps(
                {
                    "spec": self.spec.name,
                    "source": self._source,
                    "weights": self.weights_identity(),
                    "vision_config": self.config.vision_config.to_dict(),
                    "pixels": [self.spec.min_pixels, self.spec.max_pixels],
                    "processor": {k: str(getattr(vp, k, None)) for k in ("image_mean", "image_std", "patch_size")},
                    "dtype": str(self.dtype),
                    "device": self.device.type,
                },
                sort_keys=True,
                default=str,
            )
        return self._vision_identity


def _as_list(value: Any) -> list[Any]:
    """Token ids given as one id, a list of ids, or None, flattened to a list."""
    if value is None:
        return []
    if isinstance(value, list | tuple):
        return [i for v in value for i in _as_list(v)]
    return [value]


def load_qwen_pretrained(source: str, family: str, dtype: torch.dtype, attn_implementation: str) -> tuple[Any, Any]:
    """Load a Qwen2-VL / Qwen2.5-VL checkpoint (hub id or local directory) and its processor, with clear errors."""
    import transformers

    path = Path(source)
    if path.exists():
        if not path.is_dir():
            raise ModelLoadError(f"{source} is a file; expected a checkpoint directory")
        if not (path / "config.json").exists():
            raise ModelLoadError(f"{source} has no config.json: not a transformers checkpoint directory")
        if not any(path.glob("*.safetensors")) and not any(path.glob("*.bin")):
            raise ModelLoadError(f"{source} holds no weights (*.safetensors or *.bin)")
    try:
        config = transformers.AutoConfig.from_pretrained(source)
    except OSError as err:
        raise ModelLoadError(
            f"cannot load {source!r}: {err}. Download it with `huggingface-cli download {source}` or point "
            "model.source at a local directory."
        ) from err
    if config.model_type != family:
        raise ModelLoadError(f"{source!r} is a {config.model_type!r} checkpoint, expected {family!r}")
    model_cls = getattr(transformers, FAMILIES[family][1])
    try:
        model = model_cls.from_pretrained(source, dtype=dtype, attn_implementation=attn_implementation)
        processor = transformers.AutoProcessor.from_pretrained(source)
    except (OSError, ValueError, ImportError) as err:
        raise ModelLoadError(f"cannot load {source!r}: {err}") from err
    return model, processor

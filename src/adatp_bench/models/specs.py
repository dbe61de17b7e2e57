"""Model specifications: everything about a Video LLM that pruning methods and the harness may need to know.

A :class:`ModelSpec` names the checkpoint and fixes the *video path* (frames, pooling, newline layout, prompt), so that
no method ever hard-codes 196 tokens per frame or a video start index (docs/upstream.md §6).

| spec | LLM | frames | pooling | tokens/frame | newline layout |
|---|---|---|---|---|---|
| llava_ov_0.5b | Qwen2-0.5B | 32 | bilinear 27→14 | 196 | one per video |
| llava_ov_7b | Qwen2-7B | 32 | bilinear 27→14 | 196 | one per video |
| llava_video_7b | Qwen2-7B | 64 | 2×2 average 27→13 | 169 | one per row (13/frame) |
| tiny | 2-layer Qwen2 | 8 | bilinear 9→5 | 25 | one per video |
| tiny_video | 2-layer Qwen2 | 8 | 2×2 average 9→4 | 16 | one per row (4/frame) |
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from adatp_bench.core.layout import NewlineLayout
from adatp_bench.errors import ConfigError

Pooling = Literal["bilinear", "average"]


@dataclass(frozen=True)
class ModelSpec:
    """How one Video LLM turns a video into LLM input.

    Attributes:
        name: registry key (``model=<name>`` in Hydra).
        source: hub id or local directory of an HF-format LLaVA-OneVision checkpoint; ``"builtin:tiny"`` for the
            offline random models.
        num_frames: frames sampled uniformly per video.
        pooling: ``bilinear`` (LLaVA-OneVision, ceil(n/2)) or ``average`` (LLaVA-Video, 2×2 avg-pool, floor(n/2)).
        newline_layout: ``per_video`` (one ``image_newline`` after the whole video) or ``per_row`` (after every row).
        system_prompt: system message used by the prompt builder (None: the chat template's default).
        prompt_style: key into lmms-eval's ``lmms_eval_specific_kwargs`` (``default`` or ``llava_vid``).
        relevance_encoder: hub id / builtin name of the SigLIP model whose MAP head and text tower score relevance.
        full_size_config: name in ``models/configs`` for meta-device builds (FLOPs).
    """

    name: str
    source: str
    num_frames: int
    pooling: Pooling
    newline_layout: NewlineLayout
    relevance_encoder: str
    full_size_config: str | None = None
    system_prompt: str | None = None
    prompt_style: str = "default"
    aliases: tuple[str, ...] = field(default_factory=tuple)

    def pooled_side(self, patches_per_side: int) -> int:
        """Pooled grid side for a vision grid of ``patches_per_side``² patches."""
        if self.pooling == "bilinear":
            return math.ceil(patches_per_side / 2)  # LlavaOnevisionModel.apply_pooling
        return patches_per_side // 2  # avg_pool2d(kernel=2, stride=2), LLaVA-NeXT get_2dPool("average")


MODEL_SPECS: dict[str, ModelSpec] = {}


def register_spec(spec: ModelSpec) -> ModelSpec:
    """Add a spec to the registry (names and aliases must be unique)."""
    for key in (spec.name, *spec.aliases):
        if key in MODEL_SPECS:
            raise ValueError(f"model spec {key!r} registered twice")
        MODEL_SPECS[key] = spec
    return spec


def get_spec(name: str) -> ModelSpec:
    """Look up a model spec; unknown names list the valid ones."""
    try:
        return MODEL_SPECS[name]
    except KeyError:
        valid = ", ".join(sorted({s.name for s in MODEL_SPECS.values()}))
        raise ConfigError(f"unknown model {name!r}; valid models: {valid}") from None


SIGLIP_SO400M = "google/siglip-so400m-patch14-384"

register_spec(
    ModelSpec(
        name="llava_ov_0.5b",
        source="llava-hf/llava-onevision-qwen2-0.5b-ov-hf",
        num_frames=32,
        pooling="bilinear",
        newline_layout="per_video",
        relevance_encoder=SIGLIP_SO400M,
        full_size_config="llava_ov_0.5b",
        aliases=("llava_ov_0_5b",),
    )
)
register_spec(
    ModelSpec(
        name="llava_ov_7b",
        source="llava-hf/llava-onevision-qwen2-7b-ov-hf",
        num_frames=32,
        pooling="bilinear",
        newline_layout="per_video",
        relevance_encoder=SIGLIP_SO400M,
        full_size_config="llava_ov_7b",
    )
)
register_spec(
    ModelSpec(
        # lmms-lab/LLaVA-Video-7B-Qwen2 is a LLaVA-NeXT checkpoint: convert it first (python -m
        # adatp_bench.models.convert) and point `model.source` at the converted directory.
        name="llava_video_7b",
        source="checkpoints/llava-video-7b-qwen2-hf",
        num_frames=64,
        pooling="average",
        newline_layout="per_row",
        relevance_encoder=SIGLIP_SO400M,
        full_size_config="llava_video_7b",
        system_prompt="You are a helpful assistant.",
        prompt_style="llava_vid",
    )
)
register_spec(
    ModelSpec(
        name="tiny",
        source="builtin:tiny",
        num_frames=8,
        pooling="bilinear",
        newline_layout="per_video",
        relevance_encoder="builtin:tiny",
    )
)
register_spec(
    ModelSpec(
        name="tiny_video",
        source="builtin:tiny",
        num_frames=8,
        pooling="average",
        newline_layout="per_row",
        relevance_encoder="builtin:tiny",
        system_prompt="You are a helpful assistant.",
        prompt_style="llava_vid",
    )
)
register_spec(
    ModelSpec(
        # CPU benchmarks and sweep timings (models/builtin.py): vision/LLM cost ratio close to LLaVA-OV-7B's.
        name="mid",
        source="builtin:mid",
        num_frames=16,
        pooling="bilinear",
        newline_layout="per_video",
        relevance_encoder="builtin:mid",
    )
)
register_spec(
    ModelSpec(
        # model=constant: answers every question with model.answer (models/constant.py), to check the scoring path.
        name="constant",
        source="builtin:constant",
        num_frames=8,
        pooling="bilinear",
        newline_layout="per_video",
        relevance_encoder="none",
    )
)


# -- Qwen2-VL / Qwen2.5-VL (adapter: models/qwen_vl.py) ---------------------------------------------------------------
# Model specs of Qwen2-VL and Qwen2.5-VL (:class:`QwenVLSpec`): hub ids, frames, the video processor's pixel bounds.
#
# | spec | LLM | frames | temporal patches | tokens per temporal patch | newline layout |
# |---|---|---|---|---|---|
# | qwen2_5_vl_3b | Qwen2.5-3B (36 layers) | 32 | 16 | 16×16 = 256 at 448×448 px | none |
# | qwen2_5_vl_7b | Qwen2.5-7B (28 layers) | 32 | 16 | 256 | none |
# | qwen2_vl_7b | Qwen2-7B (28 layers) | 32 | 16 | 256 | none |
# | tiny_qwen2_5_vl | 4-layer Qwen2.5-VL decoder | 8 | 4 | 4×5 = 20 at 48×64 px | none |
#
# The token grid is dynamic (arXiv 2409.12191 §2.1 "Naive Dynamic Resolution"): the processor's ``smart_resize`` maps
# each video's frame size into [min_pixels, max_pixels] in multiples of 28 px, and the 2×2 merger gives one token per
# 28×28 px. ``frame_size`` is the nominal size that fixes token counts before a video is seen (validation, FLOPs).
# The adapter is ``models/qwen_vl.py``.


def smart_resize(height: int, width: int, factor: int, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    """The processor's resize rule (arXiv 2409.12191 §2.1 "Naive Dynamic Resolution"), from transformers."""
    from transformers.models.qwen2_vl.video_processing_qwen2_vl import smart_resize as hf_smart_resize

    return hf_smart_resize(height, width, factor=factor, min_pixels=min_pixels, max_pixels=max_pixels)


@dataclass(frozen=True)
class QwenVLSpec(ModelSpec):
    """A Qwen2-VL / Qwen2.5-VL model: :class:`ModelSpec` plus the video processor's settings.

    Attributes:
        family: transformers ``model_type`` (``qwen2_vl`` or ``qwen2_5_vl``).
        min_pixels, max_pixels: per-frame ``smart_resize`` bounds (processor ``size`` shortest/longest edge).
        frame_size: nominal (H, W) of input frames, for token counts known before any video (validation, FLOPs).
        fps: frames per second the sampled frames stand for (Qwen2.5-VL's absolute-time temporal ids; qwen-vl-utils'
            default is 2).
        patch_size, merge_size, temporal_patch_size: the ViT's patching (all Qwen2/2.5-VL checkpoints: 14, 2, 2).
    """

    family: str = "qwen2_5_vl"
    min_pixels: int = 128 * 28 * 28
    max_pixels: int = 768 * 28 * 28
    frame_size: tuple[int, int] = (448, 448)
    fps: float = 2.0
    patch_size: int = 14
    merge_size: int = 2
    temporal_patch_size: int = 2

    def pooled_side(self, patches_per_side: int) -> int:
        """Tokens per side after the 2×2 merger."""
        return patches_per_side // self.merge_size

    def token_grid(self, height: int | None = None, width: int | None = None) -> tuple[int, int]:
        """(h, w) merged tokens per temporal patch for frames of ``height × width`` (default: :attr:`frame_size`)."""
        h, w = self.frame_size if height is None or width is None else (height, width)
        factor = self.patch_size * self.merge_size
        rh, rw = smart_resize(h, w, factor, self.min_pixels, self.max_pixels)
        return rh // factor, rw // factor

    def temporal_patches(self, num_frames: int | None = None) -> int:
        """Temporal patches for ``num_frames`` input frames (the processor repeats the last frame of an odd count)."""
        return math.ceil((num_frames or self.num_frames) / self.temporal_patch_size)

    @property
    def tokens_per_frame(self) -> int:
        """Merged tokens per temporal patch at :attr:`frame_size`."""
        h, w = self.token_grid()
        return h * w


def is_qwen(spec: ModelSpec) -> bool:
    return isinstance(spec, QwenVLSpec)


register_spec(
    QwenVLSpec(
        name="qwen2_5_vl_3b",
        source="Qwen/Qwen2.5-VL-3B-Instruct",
        num_frames=32,
        pooling="merge2x2",  # type: ignore[arg-type]
        newline_layout="none",
        relevance_encoder="none",
        full_size_config="qwen2_5_vl_3b",
        family="qwen2_5_vl",
    )
)
register_spec(
    QwenVLSpec(
        name="qwen2_5_vl_7b",
        source="Qwen/Qwen2.5-VL-7B-Instruct",
        num_frames=32,
        pooling="merge2x2",  # type: ignore[arg-type]
        newline_layout="none",
        relevance_encoder="none",
        full_size_config="qwen2_5_vl_7b",
        family="qwen2_5_vl",
    )
)
register_spec(
    QwenVLSpec(
        name="qwen2_vl_7b",
        source="Qwen/Qwen2-VL-7B-Instruct",
        num_frames=32,
        pooling="merge2x2",  # type: ignore[arg-type]
        newline_layout="none",
        relevance_encoder="none",
        full_size_config="qwen2_vl_7b",
        family="qwen2_vl",
    )
)
register_spec(
    QwenVLSpec(
        # Offline random Qwen2.5-VL (models/qwen_tiny.py): tests and the demo.
        name="tiny_qwen2_5_vl",
        source="builtin:tiny_qwen2_5_vl",
        num_frames=8,
        pooling="merge2x2",  # type: ignore[arg-type]
        newline_layout="none",
        relevance_encoder="none",
        family="qwen2_5_vl",
        min_pixels=112 * 112,  # models/qwen_tiny.py TINY_QWEN_MIN_PIXELS / MAX_PIXELS
        max_pixels=112 * 168,
        frame_size=(48, 64),
    )
)

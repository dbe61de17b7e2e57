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

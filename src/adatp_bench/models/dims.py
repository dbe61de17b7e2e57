"""Model dimensions known without loading weights, so that settings are validated before any download or load."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adatp_bench.errors import ConfigError, UnreachableSetting
from adatp_bench.models.specs import ModelSpec, QwenVLSpec
from adatp_bench.pruning.base import PruningMethod


@dataclass(frozen=True)
class ModelDims:
    tokens_per_frame: int
    num_layers: int


def model_dims(spec: ModelSpec, source: str | None = None) -> ModelDims:
    """Pooled tokens per frame and LLM depth, from the tiny config, a local config.json, or the shipped configs."""
    source = source or spec.source
    if source == "builtin:constant":  # the constant-answer check model has no tokens and no layers
        return ModelDims(tokens_per_frame=0, num_layers=0)
    if isinstance(spec, QwenVLSpec):  # merged tokens per temporal patch at the nominal frame size
        text = model_architecture(spec, source).text_config
        return ModelDims(tokens_per_frame=spec.tokens_per_frame, num_layers=text.num_hidden_layers)
    if source.startswith("builtin:"):
        from adatp_bench.models.builtin import builtin_config

        cfg = builtin_config(source)
        vision, layers = cfg.vision_config, cfg.text_config.num_hidden_layers
        side = vision.image_size // vision.patch_size
    elif (Path(source) / "config.json").exists():
        raw = json.loads((Path(source) / "config.json").read_text())
        side = raw["vision_config"]["image_size"] // raw["vision_config"]["patch_size"]
        layers = raw["text_config"]["num_hidden_layers"]
    else:
        from adatp_bench.models.full_size import load_full_size_config

        cfg = load_full_size_config(spec.full_size_config or spec.name)
        side = cfg.vision_config.image_size // cfg.vision_config.patch_size
        layers = cfg.text_config.num_hidden_layers
    return ModelDims(tokens_per_frame=spec.pooled_side(side) ** 2, num_layers=layers)


def model_architecture(spec: ModelSpec, source: str | None = None) -> Any:
    """The model's architecture config (no weights): the builtin one, a local checkpoint's ``config.json``, or the
    shipped full-size config. Its ``text_config`` gives the LLM dimensions the FLOPs formula needs."""
    source = source or spec.source
    if source == "builtin:constant":
        raise ConfigError("model=constant has no architecture (it answers without a model)")
    if source.startswith("builtin:") and isinstance(spec, QwenVLSpec):
        from adatp_bench.models.qwen_tiny import build_tiny_qwen_config

        return build_tiny_qwen_config()
    if source.startswith("builtin:"):
        from adatp_bench.models.builtin import builtin_config

        return builtin_config(source)
    if (Path(source) / "config.json").exists():
        from transformers import AutoConfig

        return AutoConfig.from_pretrained(source)
    from adatp_bench.models.full_size import load_full_size_config

    return load_full_size_config(spec.full_size_config or spec.name)



def validate_on_model(method: PruningMethod, spec: ModelSpec, source: str | None, num_frames: int | None) -> None:
    """Check a method's settings against a model's dimensions (no weights): raises ``ConfigError`` for an invalid
    setting and its subclass ``UnreachableSetting`` for one this method cannot reach on this model."""
    dims = model_dims(spec, source)
    if isinstance(spec, QwenVLSpec):  # refuse what is not meaningful on Qwen; a layout frame is a temporal patch
        from adatp_bench.models.qwen_vl import check_method

        check_method(method.name, spec.name)
        method.validate(dims.tokens_per_frame, spec.temporal_patches(num_frames), dims.num_layers)
        return
    method.validate(dims.tokens_per_frame, num_frames or spec.num_frames, dims.num_layers)


def unreachable_reason(
    method: PruningMethod, spec: ModelSpec, source: str | None, num_frames: int | None
) -> str | None:
    """Why ``method`` cannot run on this model at its budget (a cell that is "n/a", not failed), or None. Invalid
    settings are not answered here: they fail as cells, with their own error."""
    try:
        validate_on_model(method, spec, source, num_frames)
    except UnreachableSetting as err:
        return str(err)
    except ConfigError:
        return None
    return None


def cell_unreachable(
    model: str, source: str | None, num_frames: int | None, method: str, settings: dict[str, Any]
) -> str | None:
    """Why a cell (model, method with ``settings``) cannot reach its budget: the reason of an "n/a" cell, or None.
    The constant-answer model takes no method (a failed cell) and an invalid setting fails as a cell: both None."""
    from adatp_bench.models.loading import is_constant
    from adatp_bench.models.specs import get_spec
    from adatp_bench.pruning import build_method

    try:
        spec = get_spec(model)
        if is_constant(spec.name, source):
            return None
        return unreachable_reason(build_method(method, **settings), spec, source, num_frames)
    except ConfigError:
        return None

"""Full-size architecture configs of the Table 1 models, loaded offline, and meta-device builds.

The JSON files in `models/configs/` hold the published config values (no hub access needed) together with their
sources and notes on every value that is derived or uncertain. Each file has the keys

- `name`, `hub_id`, `config_class`, `sources`, `notes`: documentation;
- `config`: the transformers config dict (what `config.json` on the hub holds).

The video path (frames, pooling, newline layout) is not an HF config field: its one source is `models/specs.py`, and
`video_path(name)` combines it with the config's patch grid.

`build_on_meta(name)` builds the full-size model on the `meta` device: no memory, ≈ 0.05 s, usable for parameter
counts and for FLOP counting (docs/flops.md §8.2).
"""

from __future__ import annotations

import json
import logging
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import torch
from transformers import (
    LlavaOnevisionConfig,
    PreTrainedConfig,
    PreTrainedModel,
    Qwen2_5_VLConfig,
    Qwen2VLConfig,
    SiglipConfig,
)

from adatp_bench.core.layout import NewlineLayout
from adatp_bench.errors import ConfigError
from adatp_bench.models.specs import MODEL_SPECS, Pooling, QwenVLSpec

CONFIG_DIR = Path(__file__).resolve().parent / "configs"

#: Names accepted by `load_full_size_config` and `build_on_meta`.
FULL_SIZE_NAMES: tuple[str, ...] = (
    "llava_ov_0.5b",
    "llava_ov_7b",
    "llava_video_7b",
    "siglip_so400m",
    "qwen2_5_vl_3b",
    "qwen2_5_vl_7b",
    "qwen2_vl_7b",
)

_CONFIG_CLASSES: dict[str, type[PreTrainedConfig]] = {
    "LlavaOnevisionConfig": LlavaOnevisionConfig,
    "SiglipConfig": SiglipConfig,
    "Qwen2_5_VLConfig": Qwen2_5_VLConfig,
    "Qwen2VLConfig": Qwen2VLConfig,
}
#: Model class built on the meta device for each config class (default: LLaVA-OneVision).
_MODEL_CLASSES: dict[str, str] = {
    "SiglipConfig": "SiglipModel",
    "Qwen2_5_VLConfig": "Qwen2_5_VLForConditionalGeneration",
    "Qwen2VLConfig": "Qwen2VLForConditionalGeneration",
}


@dataclass(frozen=True)
class VideoPath:
    """How a LLaVA model turns F frames into LLM positions, from its :class:`~adatp_bench.models.specs.ModelSpec` (the
    one source of frames, pooling and newline layout) and its vision config (patch grid)."""

    frames: int
    pooling: Pooling
    newline_layout: NewlineLayout
    patch_grid: int  # SigLIP patches per side: image_size // patch_size (27 at 384 px, patch 14)
    pooled_grid: int  # tokens per side after pooling (ModelSpec.pooled_side: 14 bilinear, 13 average)

    @property
    def tokens_per_frame(self) -> int:
        """Visual tokens per frame after pooling (196 for LLaVA-OV, 169 for LLaVA-Video)."""
        return self.pooled_grid**2

    @property
    def visual_tokens(self) -> int:
        """Visual tokens for the whole video, newlines excluded (6272 for LLaVA-OV, 10816 for LLaVA-Video)."""
        return self.frames * self.tokens_per_frame

    @property
    def newline_tokens(self) -> int:
        """Newline positions: one after the whole video (``per_video``), one per pooled row (``per_row``), or none."""
        if self.newline_layout == "none":
            return 0
        return 1 if self.newline_layout == "per_video" else self.frames * self.pooled_grid

    @property
    def paper_video_tokens(self) -> int:
        """Video positions counted by the paper convention (docs/flops.md §1): the OV single trailing newline is
        excluded, LLaVA-Video's row newlines are included. 6272 (OV), 11648 (LLaVA-Video)."""
        if self.newline_layout == "per_video":
            return self.visual_tokens
        return self.visual_tokens + self.newline_tokens


def _unknown(name: str) -> ConfigError:
    return ConfigError(
        f"unknown full-size model {name!r}; known names: {', '.join(FULL_SIZE_NAMES)} (files in {CONFIG_DIR})"
    )


@cache
def _read(name: str) -> dict[str, Any]:
    if name not in FULL_SIZE_NAMES:
        raise _unknown(name)
    path = CONFIG_DIR / f"{name}.json"
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise ConfigError(f"config file for {name!r} is missing: {path}") from exc
    except json.JSONDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid JSON: {exc}") from exc
    for key in ("config_class", "config"):
        if key not in data:
            raise ConfigError(f"config file {path} has no {key!r} key")
    if data["config_class"] not in _CONFIG_CLASSES:
        raise ConfigError(f"config file {path}: unknown config_class {data['config_class']!r}")
    return data


def config_file(name: str) -> dict[str, Any]:
    """The whole JSON file for `name` (config, sources, notes, video path), as a fresh dict."""
    return json.loads(json.dumps(_read(name)))


@contextmanager
def _quiet_transformers():
    # SiglipTextConfig's default bos/eos ids (49406/49407, as in the hub config) lie outside the 32000-token vocab and
    # transformers 5.23 logs a warning for each; see the note in siglip_so400m.json.
    logger = logging.getLogger("transformers")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def load_full_size_config(name: str) -> PreTrainedConfig:
    """Return the published config of `name`: a `LlavaOnevisionConfig` for `llava_ov_0.5b`, `llava_ov_7b`,
    `llava_video_7b`, a `Qwen2_5_VLConfig` / `Qwen2VLConfig` for `qwen2_5_vl_3b`, `qwen2_5_vl_7b` / `qwen2_vl_7b`,
    or a `SiglipConfig` for `siglip_so400m`. Offline; raises `ConfigError` for unknown names."""
    data = _read(name)
    cls = _CONFIG_CLASSES[data["config_class"]]
    with _quiet_transformers():
        return cls.from_dict(json.loads(json.dumps(data["config"])))


def video_path(name: str) -> VideoPath:
    """The video path of a LLaVA model (frames, pooling, newline layout); `ConfigError` for SigLIP or unknown names."""
    data = _read(name)
    spec = next((s for s in MODEL_SPECS.values() if s.full_size_config == name), None)
    if spec is None or "vision_config" not in data["config"]:
        raise ConfigError(f"{name!r} has no video path: no model spec in models/specs.py uses this config")
    vision = data["config"]["vision_config"]
    if isinstance(spec, QwenVLSpec):  # frames = temporal patches; the grid of the nominal (square) frame size
        h, w = spec.token_grid()
        if h != w:
            raise ConfigError(f"{name!r}: the nominal frame size {spec.frame_size} gives a {h}×{w} grid, not square")
        return VideoPath(
            frames=spec.temporal_patches(),
            pooling=spec.pooling,
            newline_layout=spec.newline_layout,
            patch_grid=h * spec.merge_size,
            pooled_grid=h,
        )
    patch_grid = int(vision["image_size"]) // int(vision["patch_size"])
    return VideoPath(
        frames=spec.num_frames,
        pooling=spec.pooling,
        newline_layout=spec.newline_layout,
        patch_grid=patch_grid,
        pooled_grid=spec.pooled_side(patch_grid),
    )


def build_on_meta(name: str, *, attn_implementation: str = "sdpa") -> PreTrainedModel:
    """Build the full-size model on the `meta` device (no weights, no memory) in eval mode.

    LLaVA names give `LlavaOnevisionForConditionalGeneration`, Qwen names their `…ForConditionalGeneration`,
    `siglip_so400m` gives `SiglipModel`.
    """
    import transformers

    config = load_full_size_config(name)
    config._attn_implementation = attn_implementation
    cls_name = _MODEL_CLASSES.get(type(config).__name__, "LlavaOnevisionForConditionalGeneration")
    model_cls = getattr(transformers, cls_name)
    with _quiet_transformers(), torch.device("meta"):
        model = model_cls(config)
    return model.eval()

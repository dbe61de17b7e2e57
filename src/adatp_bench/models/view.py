"""The model as a pruning method may see it during one sample: :class:`LlavaSampleView`, the
:class:`~adatp_bench.core.context.ModelView` of a LLaVA-OneVision-architecture model.

Every access to model internals a method needs (the vision tower's layers, the projector, the decoder layers and
their rotary embedding) happens here, so the method files stay model-agnostic.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from transformers import LlavaOnevisionForConditionalGeneration

from adatp_bench.cache import ContentCache
from adatp_bench.core.context import VisionAttention
from adatp_bench.core.sequence import SequenceState
from adatp_bench.errors import ConfigError
from adatp_bench.models.attention import probe_attention, vision_layer_attention
from adatp_bench.models.specs import ModelSpec


def patch_to_cell(patch: torch.Tensor, side: int, grid: int, pooling: str) -> torch.Tensor:
    """Pooled grid row (or column) covering vision-patch row (or column) ``patch`` of a ``side``-wide patch grid.

    ``average`` (LLaVA-Video, 2×2 avg-pool, floor): ``p // 2``; the last odd patch row joins the last cell.
    ``bilinear`` (LLaVA-OV, ``interpolate(..., align_corners=False)``): the cell whose sample point
    ``(i + ½)·side/grid − ½`` is nearest, i.e. ``floor((2p + 1)·grid / 2·side)``.
    """
    if pooling == "average":
        cell = patch // (side // grid)
    else:
        cell = torch.div((2 * patch + 1) * grid, 2 * side, rounding_mode="floor")
    return cell.clamp(max=grid - 1)


def vision_encoder_layers(tower: torch.nn.Module) -> torch.nn.ModuleList:
    """Encoder layers of an HF SigLIP vision tower (transformers 5.x flattens ``vision_model`` away; 4.x keeps it)."""
    return getattr(tower, "vision_model", tower).encoder.layers


class LlavaSampleView:
    """:class:`~adatp_bench.core.context.ModelView` of one sample of a LLaVA-OneVision-architecture model.

    Args:
        model: the transformers model (vision tower, projector, language model).
        spec: its :class:`~adatp_bench.models.specs.ModelSpec` (pooling rule).
        vision_states: every vision encoder layer's output for this sample's frames (embeddings first), as the tower
            returned them with ``output_hidden_states=True``; None when the tower's outputs came from the cache.
        attention: (received, keys) per vision layer, captured from the tower's own forward (``QKCapture``).
        recompute_states: runs the tower again for ``vision_states`` when they are needed and absent.
        cache, attention_key: where :meth:`vision_attention` results are cached (the sample's vision cache key).
        lookups: the sample's record of cache lookups, updated here.
    """

    def __init__(
        self,
        model: LlavaOnevisionForConditionalGeneration,
        spec: ModelSpec,
        vision_states: tuple[torch.Tensor, ...] | None,
        attention: dict[int, tuple[torch.Tensor, torch.Tensor]] | None = None,
        recompute_states: Callable[[], tuple[torch.Tensor, ...]] | None = None,
        cache: ContentCache | None = None,
        attention_key: str | None = None,
        lookups: dict[str, str] | None = None,
    ) -> None:
        self._model = model
        self._spec = spec
        self._vision_states = vision_states
        self._captured = attention or {}
        self._recompute = recompute_states
        self._cache = cache
        self._attention_key = attention_key
        self._lookups = lookups if lookups is not None else {}
        vision = model.config.vision_config
        self._patches_per_side = vision.image_size // vision.patch_size
        self._grid_side = spec.pooled_side(self._patches_per_side)

    @property
    def num_layers(self) -> int:
        return self._model.config.text_config.num_hidden_layers

    def project(self, features: torch.Tensor) -> torch.Tensor:
        return self._model.model.multi_modal_projector(features)

    def vision_attention(self, layer: int | None = None) -> VisionAttention:
        """Received attention and mean keys of vision layer ``layer`` (None: the layer whose output the LLM reads).

        LLaVA-OV reads ``hidden_states[vision_feature_layer]`` (= −1 of the 26-layer HF tower), produced by encoder
        layer ``idx − 1`` from ``hidden_states[idx − 1]``. With the ``default`` feature strategy the first token (a CLS
        token) is not among the patches the LLM reads, so it is dropped here too. Cached with the sample's vision
        outputs; on a miss after a cache hit of the tower outputs, the tower runs again for its layer inputs.
        """
        layers = vision_encoder_layers(self._model.model.vision_tower)
        config = self._model.config
        num_states = len(layers) + 1  # embeddings, then each layer's output
        if layer is None:
            out_index = config.vision_feature_layer % num_states
            if out_index == 0:
                feature_layer = config.vision_feature_layer
                raise ConfigError(f"vision_feature_layer={feature_layer} is the patch embeddings: no attention")
            layer = out_index - 1
        layer %= len(layers)
        key = None
        if self._cache is not None and self._attention_key is not None:
            key = self._cache.key("vision_attention", self._attention_key, layer)
        if key and (entry := self._cache.get("vision_attention", key)) is not None:
            self._lookups["vision_attention"] = "hit"
            device = next(self._model.parameters()).device
            return VisionAttention(received=entry["received"].to(device), keys=entry["keys"].to(device))
        if layer in self._captured:
            received, keys = self._captured[layer]
        else:
            if self._vision_states is None:
                if self._recompute is None:
                    raise ConfigError("the vision tower's layer outputs are not available for this sample")
                self._vision_states = self._recompute()
            received, keys = vision_layer_attention(layers[layer], self._vision_states[layer])
        if config.vision_feature_select_strategy == "default":
            received, keys = received[:, 1:], keys[:, 1:]
        if key:
            self._lookups["vision_attention"] = "miss"
            self._cache.put("vision_attention", key, {"received": received, "keys": keys})
        return VisionAttention(received=received, keys=keys)

    def patch_cells(self, patch_index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        side, grid, pooling = self._patches_per_side, self._grid_side, self._spec.pooling
        return (
            patch_to_cell(patch_index // side, side, grid, pooling),
            patch_to_cell(patch_index % side, side, grid, pooling),
        )

    def probe(self, state: SequenceState, rows: torch.Tensor | None = None) -> torch.Tensor:
        lm = self._model.model.language_model
        rope = lm.rotary_emb(state.hidden, state.position_ids)
        return probe_attention(lm.layers[state.layer_idx], state.hidden, rope, rows)

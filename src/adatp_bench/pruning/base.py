"""One small interface for every pruning method (kvpress style), and the registry that names them.

A method may act at three places (any subset):

1. **before the LLM** — :meth:`PruningMethod.select_visual` gets the pooled per-frame tokens (:class:`VisualTokens`)
   and the :class:`SampleContext` (layout, question, per-frame global features, head attention, ...), and returns the
   tokens that enter the LLM (a subset, possibly merged).
2. **inside the LLM** — :meth:`PruningMethod.before_layer` is called before each decoder layer listed by
   :meth:`PruningMethod.llm_layers` during prefill. It returns the sequence positions to keep (or ``None``); the
   runner then drops the others from the hidden states, position ids, rotary embeddings and (by construction) the KV
   cache of every later layer.
3. **at decode** — :meth:`PruningMethod.on_decode_step` may edit the KV cache between generated tokens.

A method is installed on a model (any :class:`~adatp_bench.core.context.PrunableModel`, e.g.
:class:`~adatp_bench.models.adapter.VideoLLM`) with ``with method(llm): ...`` and removed on exit. Nothing in
transformers is monkey-patched: the decoder loop is ours (``models/llm.py``), so two methods can run one after another
in one process with nothing left behind. A method sees the model only through the :class:`SampleContext` it is given
(``core/context.py``): it never names a model attribute.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, ClassVar, Literal

import torch

from adatp_bench.core.context import PrunableModel, SampleContext
from adatp_bench.core.layout import VideoLayout, VisualTokens
from adatp_bench.core.sequence import SequenceState
from adatp_bench.errors import ConfigError


class PruningMethod:
    """Base class: the identity at every hook. Subclasses are dataclasses whose fields are their hyperparameters.

    Class attributes:
        name: registry key.
        needs_relevance: load the SigLIP relevance encoder for this method.
        needs_vision_attention: the method reads ``ctx.vision_attention()``; the model then keeps the feature layer's
            queries and keys from the vision tower's own forward instead of projecting them again.
        pre_llm_positions: ``contiguous`` (sequence rebuilt after reduction: VisionZip, DyCoke, PruneVid stage 1) or
            ``original`` (kept tokens keep their unpruned RoPE positions, gaps included: FastVID).
        in_llm_positions: ``original`` (FastV, PruneVid stage 2) or ``renumber`` (PDrop, SparseVLM v1) after an
            in-LLM drop (docs/methods.md §5.3).
    """

    name: ClassVar[str] = "base"
    needs_relevance: ClassVar[bool] = False
    needs_vision_attention: ClassVar[bool] = False
    pre_llm_positions: ClassVar[Literal["contiguous", "original"]] = "contiguous"
    in_llm_positions: ClassVar[Literal["original", "renumber"]] = "original"

    # -- validation ------------------------------------------------------------------------------------------------
    def validate(self, tokens_per_frame: int, num_frames: int, num_layers: int) -> None:
        """Raise :class:`ConfigError` if the setting is impossible for this model (called before any forward)."""

    # -- hooks ---------------------------------------------------------------------------------------------------
    def select_visual(self, tokens: VisualTokens, ctx: SampleContext) -> VisualTokens:
        """Pre-LLM stage. Default: keep everything."""
        return tokens

    def llm_layers(self, num_layers: int) -> tuple[int, ...]:
        """Decoder layers before which :meth:`before_layer` runs during prefill."""
        return ()

    def before_layer(self, state: SequenceState, ctx: SampleContext) -> torch.Tensor | None:
        """In-LLM stage: sorted positions of ``state`` to keep (all text must stay), or None to keep all.

        A method may also edit ``state`` in place before returning (merge dropped tokens into kept ones by writing
        ``state.hidden``, as HoliTom's inner stage and SparseVLM's recycling do); the runner applies the returned
        positions to the state *after* the call.
        """
        return None

    def after_prefill(self, cache: Any, state: SequenceState, ctx: SampleContext) -> None:
        """Called once after the last prefill layer with the KV cache (e.g. PruneVid prunes early layers' KV)."""

    def decode_probe_layers(self, num_layers: int) -> tuple[int, ...]:
        """Layers whose decode-step attention row (new token over the cache) :meth:`on_decode_step` receives."""
        return ()

    def on_decode_step(self, step: int, cache: Any, ctx: SampleContext, attention: dict[int, torch.Tensor]) -> None:
        """Decode-time hook, before generated token ``step`` + 1 is fed (e.g. DyCoke's KV selection).

        ``attention[l]`` is the (H, S_l) fp32 attention of the last generated token at layer ``l`` over that layer's
        cache, for every ``l`` in :meth:`decode_probe_layers`. Default: nothing.
        """

    def on_decode_layer(
        self, step: int, layer_idx: int, cache: Any, ctx: SampleContext, attention: dict[int, torch.Tensor]
    ) -> None:
        """Called after decoder layer ``layer_idx`` of decode step ``step`` (after its attention row, if probed).

        A method may edit the cache that later layers read during this step (DyCoke's per-step KV selection).
        Default: nothing.
        """

    def expected_video_tokens(self, layout: VideoLayout, num_layers: int) -> list[int] | None:
        """Video positions (grid tokens + newlines) entering each decoder layer, when the setting alone fixes them.

        None when the count depends on the data (thresholds, clustering). The method tests check recorded counts
        against this exactly.
        """
        return None

    # -- installation ----------------------------------------------------------------------------------------------
    @contextmanager
    def __call__(self, llm: PrunableModel) -> Iterator[PrunableModel]:
        """Install this method on ``llm`` for the duration of the block."""
        if llm.method is not None:
            raise RuntimeError(f"{llm.method.name!r} is already installed on this model; nest nothing")
        self.validate(llm.tokens_per_frame, llm.num_frames, llm.num_layers)
        if self.needs_relevance:
            llm.ensure_relevance_encoder()
        llm.method = self
        try:
            yield llm
        finally:
            llm.method = None

    # -- bookkeeping -----------------------------------------------------------------------------------------------
    def settings(self) -> dict[str, Any]:
        """The hyperparameters (dataclass fields) as a plain dict."""
        return dataclasses.asdict(self) if dataclasses.is_dataclass(self) else {}

    def describe(self) -> str:
        args = ", ".join(f"{k}={v}" for k, v in self.settings().items())
        return f"{self.name}({args})"


# -- registry ------------------------------------------------------------------------------------------------------
METHODS: dict[str, type[PruningMethod]] = {}


def register_method(name: str, *aliases: str) -> Callable[[type[PruningMethod]], type[PruningMethod]]:
    """Class decorator: register a method under ``name`` (and aliases). Duplicate names are an error."""

    def wrap(cls: type[PruningMethod]) -> type[PruningMethod]:
        cls.name = name
        for key in (name, *aliases):
            if key in METHODS:
                raise ValueError(f"pruning method {key!r} registered twice")
            METHODS[key] = cls
        return cls

    return wrap


def method_names() -> list[str]:
    """Canonical names of all registered methods (aliases excluded)."""
    return sorted({cls.name for cls in METHODS.values()})


def build_method(name: str, **settings: Any) -> PruningMethod:
    """Instantiate a registered method; unknown names and unknown settings give a clear error."""
    try:
        cls = METHODS[name]
    except KeyError:
        raise ConfigError(f"unknown method {name!r}; valid methods: {', '.join(method_names())}") from None
    if dataclasses.is_dataclass(cls):
        valid = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(settings) - valid)
        if unknown:
            raise ConfigError(f"method {name!r} has no setting(s) {unknown}; valid: {sorted(valid)}")
    return cls(**settings)

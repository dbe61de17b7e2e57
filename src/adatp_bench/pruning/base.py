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

A method is installed on a :class:`~adatp_bench.models.adapter.VideoLLM` with ``with method(llm): ...`` and removed on
exit. Nothing in transformers is monkey-patched: the decoder loop is ours (``models/llm.py``), so two methods can run
one after another in one process with nothing left behind.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import torch

from adatp_bench.errors import ConfigError
from adatp_bench.models.layout import VideoLayout, VisualTokens

if TYPE_CHECKING:
    from adatp_bench.models.adapter import VideoLLM
    from adatp_bench.models.relevance import RelevanceEncoder

# Token kinds in the LLM sequence.
TEXT, VISUAL, NEWLINE = 0, 1, 2


@dataclass
class SequenceState:
    """The prefill sequence as it enters decoder layer ``layer_idx`` (batch size 1).

    Attributes:
        hidden: (1, L, D) hidden states entering the layer.
        position_ids: (1, L) RoPE positions (original ones, or renumbered, per the method).
        kind: (L,) TEXT / VISUAL / NEWLINE.
        frame, row, col: (L,) grid cell of each video position (-1 for text; col == grid_w for a row newline).
        original_index: (L,) index of each position in the sequence that entered layer 0.
        question_mask: (L,) True for the text tokens after the video (question + answer prompt).
        newline_layout: ``per_video`` or ``per_row`` (see ``models/layout.py``).
        layer_idx: the decoder layer about to run.
        probe: ``probe(rows) -> (heads, len(rows), L)`` fp32 attention of *this* layer on *this* input for the given
            query rows (default: the last row); see ``pruning/probe.py``.
    """

    hidden: torch.Tensor
    position_ids: torch.Tensor
    kind: torch.Tensor
    frame: torch.Tensor
    row: torch.Tensor
    col: torch.Tensor
    original_index: torch.Tensor
    question_mask: torch.Tensor
    newline_layout: str = "per_video"
    layer_idx: int = 0
    probe: Callable[..., torch.Tensor] | None = None

    def __len__(self) -> int:
        return self.hidden.shape[1]

    @property
    def video_positions(self) -> torch.Tensor:
        """Sequence indices of video positions (grid tokens and newlines)."""
        return torch.nonzero(self.kind != TEXT).squeeze(1)

    @property
    def visual_positions(self) -> torch.Tensor:
        """Sequence indices of grid tokens (no newlines)."""
        return torch.nonzero(self.kind == VISUAL).squeeze(1)

    def num_video(self) -> int:
        return int((self.kind != TEXT).sum())

    def num_newlines(self) -> int:
        return int((self.kind == NEWLINE).sum())

    def keep(self, index: torch.Tensor) -> SequenceState:
        """The state restricted to the sorted sequence positions ``index``."""
        idx = index.to(self.hidden.device)
        return dataclasses.replace(
            self,
            hidden=self.hidden[:, idx],
            position_ids=self.position_ids[:, idx],
            kind=self.kind[index],
            frame=self.frame[index],
            row=self.row[index],
            col=self.col[index],
            original_index=self.original_index[index],
            question_mask=self.question_mask[index],
        )


@dataclass
class SampleContext:
    """Everything a method may read about one sample. Expensive extras are computed lazily and cached.

    Attributes:
        layout: the unpruned video layout.
        question: the question text (lmms-eval's ``doc_to_text`` output, without the chat template).
        seed: per-sample seed (hash of run seed and sample id); methods with random parts draw from :meth:`generator`.
        vision_hidden: (F, P, Dv) the LLM's own per-frame vision features (the layer it feeds the projector).
        pool_map: pools a (F, P) or (F, P, C) patch map onto the token grid exactly as the tokens were pooled.
        relevance: the SigLIP relevance encoder, or None when the method did not ask for it.
        vision_hidden_states: every SigLIP layer's output for the frames (embeddings first), for methods that need
            vision-side attention (VisionZip, HoliTom): recompute it from ``llm.model.model.vision_tower``'s layers.
        llm: the :class:`VideoLLM` itself (config, vision tower, pooling), read-only by convention.
        stats: free-form per-sample numbers a method wants recorded (segments, budgets, ...). Keys starting with
            "_" are scratch space and are not recorded.
    """

    layout: VideoLayout
    question: str
    seed: int
    vision_hidden: torch.Tensor
    pool_map: Callable[[torch.Tensor], torch.Tensor]
    relevance: RelevanceEncoder | None = None
    vision_hidden_states: tuple[torch.Tensor, ...] = ()
    llm: Any = None
    stats: dict[str, Any] = field(default_factory=dict)
    _cache: dict[str, Any] = field(default_factory=dict, repr=False)

    def generator(self) -> torch.Generator:
        """A torch generator seeded for this sample (docs/methods.md §5.5: seed per sample, not per process)."""
        return torch.Generator().manual_seed(self.seed)

    def _need_relevance(self) -> RelevanceEncoder:
        if self.relevance is None:
            raise ConfigError("this method needs the relevance encoder; set `needs_relevance = True` on the class")
        return self.relevance

    def frame_global_features(self) -> torch.Tensor:
        """(F, Dg) one global feature per frame from SigLIP's attention-pooling head (FastVID/AdaTP `v_p`)."""
        if "global" not in self._cache:
            self._cache["global"], self._cache["head_attn"] = self._need_relevance().pool_frames(self.vision_hidden)
        return self._cache["global"]

    def head_attention(self) -> torch.Tensor:
        """(F, h, w) the MAP head's attention over patches, pooled like the tokens (FastVID ATS score)."""
        if "head_attn_grid" not in self._cache:
            self.frame_global_features()
            self._cache["head_attn_grid"] = self.pool_map(self._cache["head_attn"])
        return self._cache["head_attn_grid"]

    def question_embedding(self) -> torch.Tensor:
        """(Dg,) the question embedded by SigLIP's text tower, in the space of :meth:`frame_global_features`."""
        if "question" not in self._cache:
            self._cache["question"] = self._need_relevance().embed_text(self.question)
        return self._cache["question"]


class PruningMethod:
    """Base class: the identity at every hook. Subclasses are dataclasses whose fields are their hyperparameters.

    Class attributes:
        name: registry key.
        needs_relevance: load the SigLIP relevance encoder for this method.
        pre_llm_positions: ``contiguous`` (sequence rebuilt after reduction: VisionZip, DyCoke, PruneVid stage 1) or
            ``original`` (kept tokens keep their unpruned RoPE positions, gaps included: FastVID).
        in_llm_positions: ``original`` (FastV, PruneVid stage 2) or ``renumber`` (PDrop, SparseVLM v1) after an
            in-LLM drop (docs/methods.md §5.3).
    """

    name: ClassVar[str] = "base"
    needs_relevance: ClassVar[bool] = False
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
    def __call__(self, llm: VideoLLM) -> Iterator[VideoLLM]:
        """Install this method on ``llm`` for the duration of the block."""
        if llm.method is not None:
            raise RuntimeError(f"{llm.method.name!r} is already installed on this model; nest nothing")
        self.validate(llm.tokens_per_frame, llm.spec.num_frames, llm.num_layers)
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


def sample_seed(run_seed: int, sample_id: str) -> int:
    """Deterministic per-sample seed (docs/methods.md §5.5)."""
    digest = hashlib.sha1(f"{run_seed}:{sample_id}".encode()).hexdigest()
    return int(digest[:8], 16)


# -- shared helpers for budgets ------------------------------------------------------------------------------------
def per_frame_budget(tokens_per_frame: int, retention: float) -> int:
    """Tokens kept per frame at a pre-LLM retention, as FastVID/VisionZip* count: ``int(tpf · r)`` (docs/flops.md
    §3)."""
    return int(tokens_per_frame * retention)


def check_retention(name: str, value: float) -> None:
    """Retention must lie in (0, 1]."""
    if not 0.0 < value <= 1.0:
        raise ConfigError(f"{name}={value} is impossible: a retention must lie in (0, 1]")


def keep_positions(state: SequenceState, kept_visual: torch.Tensor, policy: str = "rows_with_kept") -> torch.Tensor:
    """Sorted positions to keep: all text, the given grid-token positions, and the newlines ``policy`` keeps.

    ``rows_with_kept`` (FastVID's rule, docs/flops.md §3) keeps a row newline iff a token of its (frame, row) survives;
    in the one-newline-per-video layout that newline is kept whenever any visual token survives. ``all`` keeps every
    newline; ``none`` drops them.
    """
    text = torch.nonzero(state.kind == TEXT).squeeze(1)
    newlines = torch.nonzero(state.kind == NEWLINE).squeeze(1)
    kept_visual = kept_visual.to(text.device)
    if policy == "all":
        kept_nl = newlines
    elif policy == "none" or len(kept_visual) == 0:
        kept_nl = newlines[:0]
    elif policy == "rows_with_kept" and state.newline_layout == "per_video":
        kept_nl = newlines
    elif policy == "rows_with_kept":
        kept_rows = set(zip(state.frame[kept_visual].tolist(), state.row[kept_visual].tolist(), strict=True))
        nl_rows = zip(state.frame[newlines].tolist(), state.row[newlines].tolist(), strict=True)
        kept_nl = newlines[torch.tensor([fr in kept_rows for fr in nl_rows], dtype=torch.bool)]
    else:
        raise ConfigError(f"unknown newline policy {policy!r}; valid: rows_with_kept, all, none")
    return torch.sort(torch.cat([text, kept_visual, kept_nl])).values


def topk_sorted(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the ``k`` largest scores, sorted ascending (ties broken by lower index)."""
    k = max(0, min(k, scores.numel()))
    if k == 0:
        return torch.zeros(0, dtype=torch.long, device=scores.device)
    return torch.sort(torch.topk(scores, k, sorted=True).indices).values

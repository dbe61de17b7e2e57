"""What a pruning method may know about one sample, and the narrow views of the model it may use.

A method never touches model attributes (vision tower layers, projector, rotary embedding, decoder layers). It reads
the sample through :class:`SampleContext`, whose model-dependent computations go through a :class:`ModelView` that the
model builds for the sample (``models/view.py``):

- ``ctx.vision_attention()``: attention received per patch in the vision layer that feeds the projector, and that
  layer's head-averaged keys (VisionZip, HoliTom);
- ``ctx.project(features)``: vision features → LLM embeddings (VisionZip's pre-projector variant);
- ``ctx.patch_cells(index)``: the pooled grid cell a vision patch falls into;
- ``ctx.probe(state, rows)``: attention rows of a decoder layer on a sequence a method has modified (SparseVLM);
- ``ctx.num_layers``: the LLM's depth.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from adatp_bench.core.layout import VideoLayout
from adatp_bench.core.sequence import SequenceState
from adatp_bench.errors import ConfigError


@dataclass(frozen=True)
class VisionAttention:
    """Self-attention statistics of one vision encoder layer, per frame, over the patches the LLM reads.

    Attributes:
        received: (F, P) attention each patch receives, averaged over heads and queries (fp32).
        keys: (F, P, d) the layer's keys averaged over heads (fp32).
    """

    received: torch.Tensor
    keys: torch.Tensor


class ModelView(Protocol):
    """The model as one sample saw it: the few facts and computations methods may use (implemented in models/)."""

    @property
    def num_layers(self) -> int:
        """Decoder layers of the LLM."""
        ...

    def project(self, features: torch.Tensor) -> torch.Tensor:
        """(..., Dv) vision features → (..., D) LLM embeddings with the model's own projector."""
        ...

    def vision_attention(self, layer: int | None = None) -> VisionAttention:
        """Attention statistics of vision layer ``layer`` (index into the encoder's layers, negative from the end;
        None: the layer whose output the LLM reads) on this sample's frames."""
        ...

    def patch_cells(self, patch_index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(row, col) of the pooled grid cell each vision patch (flat index in the patch grid) falls into."""
        ...

    def probe(self, state: SequenceState, rows: torch.Tensor | None = None) -> torch.Tensor:
        """(H, R, L) fp32 attention of decoder layer ``state.layer_idx`` on ``state`` for query ``rows`` (default: the
        last row), with the positions ``state`` holds."""
        ...


class RelevanceScorer(Protocol):
    """The SigLIP relevance encoder as methods use it (``models/relevance.py``)."""

    def pool_frames(self, vision_hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...

    def embed_text(self, text: str) -> torch.Tensor: ...


class PrunableModel(Protocol):
    """What ``with method(model): ...`` needs of a model (``models/adapter.py::VideoLLM``)."""

    method: Any

    @property
    def tokens_per_frame(self) -> int: ...

    @property
    def num_frames(self) -> int: ...

    @property
    def num_layers(self) -> int: ...

    def ensure_relevance_encoder(self) -> Any: ...


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
        model: the model's view for this sample (None in unit tests that build a context by hand).
        stats: free-form per-sample numbers a method wants recorded (segments, budgets, ...). Keys starting with
            "_" are scratch space and are not recorded.
    """

    layout: VideoLayout
    question: str
    seed: int
    vision_hidden: torch.Tensor
    pool_map: Callable[[torch.Tensor], torch.Tensor]
    relevance: RelevanceScorer | None = None
    model: ModelView | None = None
    stats: dict[str, Any] = field(default_factory=dict)
    _cache: dict[str, Any] = field(default_factory=dict, repr=False)

    def generator(self) -> torch.Generator:
        """A torch generator seeded for this sample (seeded per sample, not per process: results do not depend on the
        order or the process in which samples run)."""
        return torch.Generator().manual_seed(self.seed)

    # -- the relevance encoder ---------------------------------------------------------------------------------------
    def _need_relevance(self) -> RelevanceScorer:
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

    # -- the model view ----------------------------------------------------------------------------------------------
    def _need_model(self, what: str) -> ModelView:
        if self.model is None:
            raise ConfigError(f"{what} needs the model's view of the sample; run the method through VideoLLM")
        return self.model

    @property
    def num_layers(self) -> int:
        """Decoder layers of the LLM this sample runs through."""
        return self._need_model("num_layers").num_layers

    def vision_attention(self, layer: int | None = None) -> VisionAttention:
        """Received attention and mean keys of a vision layer (default: the one feeding the projector), cached."""
        key = f"vision_attention:{layer}"
        if key not in self._cache:
            self._cache[key] = self._need_model("vision_attention").vision_attention(layer)
        return self._cache[key]

    def project(self, features: torch.Tensor) -> torch.Tensor:
        """(..., Dv) vision features → (..., D) LLM embeddings, with the model's projector."""
        return self._need_model("project").project(features)

    def patch_cells(self, patch_index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(row, col) pooled grid cell of each vision patch index."""
        return self._need_model("patch_cells").patch_cells(patch_index)

    def probe(self, state: SequenceState, rows: torch.Tensor | None = None) -> torch.Tensor:
        """(H, R, L) attention of decoder layer ``state.layer_idx`` on ``state`` (which a method may have changed)."""
        return self._need_model("probe").probe(state, rows)


def sample_seed(run_seed: int, sample_id: str) -> int:
    """Deterministic per-sample seed: sha1 of ``"<run seed>:<sample id>"``, first 32 bits."""
    digest = hashlib.sha1(f"{run_seed}:{sample_id}".encode()).hexdigest()
    return int(digest[:8], 16)

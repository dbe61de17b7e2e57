"""The prefill sequence as the LLM sees it, shared by the models (which build and run it) and the methods (which
choose what to keep): token kinds and :class:`SequenceState`."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import torch

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
        newline_layout: ``per_video`` or ``per_row`` (see ``core/layout.py``).
        layer_idx: the decoder layer about to run.
        probe: ``probe(rows) -> (heads, len(rows), L)`` fp32 attention of *this* layer on *this* input for the given
            query rows (default: the last row), bound by the decoder loop; see ``models/attention.py``.
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

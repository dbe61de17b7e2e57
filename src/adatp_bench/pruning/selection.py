"""Selection rules shared by the methods: budgets, retentions, top-k ranking and which sequence positions stay."""

from __future__ import annotations

import torch

from adatp_bench.core.layout import VideoLayout
from adatp_bench.core.sequence import NEWLINE, TEXT, SequenceState
from adatp_bench.errors import ConfigError


def per_frame_budget(tokens_per_frame: int, retention: float) -> int:
    """Tokens kept per frame at a pre-LLM retention, as FastVID/VisionZip* count: ``int(tpf · r)`` (docs/flops.md
    §3)."""
    return int(tokens_per_frame * retention)


def check_retention(name: str, value: float) -> None:
    """Retention must lie in (0, 1]."""
    if not 0.0 < value <= 1.0:
        raise ConfigError(f"{name}={value} is impossible: a retention must lie in (0, 1]")


def text_positions(state: SequenceState) -> torch.Tensor:
    """(T,) sequence indices of every text token (they always stay)."""
    return torch.nonzero(state.kind == TEXT).squeeze(1)


def keep_with_text(state: SequenceState, kept_video: torch.Tensor) -> torch.Tensor:
    """Sorted sequence positions: all text plus ``kept_video`` (sequence indices of the video positions kept)."""
    return torch.sort(torch.cat([text_positions(state), kept_video.cpu()])).values


def keep_positions(
    state: SequenceState, kept_visual: torch.Tensor, layout: VideoLayout, policy: str = "rows_with_kept"
) -> torch.Tensor:
    """Sorted positions to keep: all text, the given grid-token positions, and the newlines present in ``state`` that
    ``policy`` keeps (:meth:`VideoLayout.kept_newline_cells`, the rule the sequence builder applies before the LLM).

    The default ``rows_with_kept`` (FastVID's rule, docs/flops.md §3) keeps a row newline iff a token of its
    (frame, row) survives; the one-newline-per-video layout keeps its newline under every policy but ``none``.
    """
    kept_visual = kept_visual.cpu()
    newlines = torch.nonzero(state.kind == NEWLINE).squeeze(1)
    cells = set(layout.kept_newline_cells(policy, state.frame[kept_visual], state.row[kept_visual]))
    present = zip(state.frame[newlines].tolist(), state.row[newlines].tolist(), strict=True)
    kept_nl = newlines[torch.tensor([cell in cells for cell in present], dtype=torch.bool)]
    return torch.sort(torch.cat([text_positions(state), kept_visual, kept_nl])).values


def topk_sorted(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the ``k`` largest scores, sorted ascending (ties broken by lower index)."""
    k = max(0, min(k, scores.numel()))
    if k == 0:
        return torch.zeros(0, dtype=torch.long, device=scores.device)
    return torch.sort(torch.topk(scores, k, sorted=True).indices).values

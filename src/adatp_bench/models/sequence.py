"""Build the LLM input sequence of one sample: text before the video, the (possibly pruned) video, text after.

Newlines follow the model's layout and the method's policy (``core/layout.py``: one rule for every method). In the
per-row layout, a row none of whose tokens survive loses its newline under the default policy ``rows_with_kept`` —
FastVID's rule: the newline of every row that keeps
at least one token survives (docs/methods/fastvid.md, docs/flops.md §3). ``per_frame`` keeps one newline per frame
(FastVID*, VisionZip* on LLaVA-Video); ``all`` keeps every row's newline.

Positions are either ``contiguous`` (the sequence is rebuilt after reduction) or ``original`` (every surviving token
keeps the RoPE position it has in the unpruned sequence, gaps included, as FastVID does).
"""

from __future__ import annotations

import torch

from adatp_bench.core.layout import NewlinePolicy, VideoLayout, VisualTokens
from adatp_bench.core.sequence import NEWLINE, TEXT, VISUAL, SequenceState


def video_block(
    tokens: VisualTokens, layout: VideoLayout, newline: torch.Tensor, policy: NewlinePolicy
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Interleave the newlines ``policy`` keeps (:meth:`VideoLayout.kept_newline_cells`) with the visual tokens.

    Returns:
        features (n, D), kind (n,), frame (n,), row (n,), col (n,) for the video block in sequence order.
    """
    cells = layout.kept_newline_cells(policy, tokens.frame, tokens.row)
    if layout.newline_layout == "per_video":  # grid tokens in the order given, then the single newline (if kept)
        order = torch.arange(len(tokens))
    else:  # raster order inside the video, a newline closing each kept (frame, row)
        order = tokens.raster_order(layout)
        tokens = tokens.select(order)
    nl_frame = torch.tensor([f for f, _ in cells], dtype=torch.long)
    nl_row = torch.tensor([r for _, r in cells], dtype=torch.long)
    nl_col = torch.full_like(nl_frame, layout.grid_w)
    frame = torch.cat([tokens.frame, nl_frame])
    row = torch.cat([tokens.row, nl_row])
    col = torch.cat([tokens.col, nl_col])
    kind = torch.cat([torch.full((len(tokens),), VISUAL), torch.full((len(cells),), NEWLINE)])
    feats = torch.cat([tokens.features, newline[None].expand(len(cells), -1).to(tokens.features.dtype)])
    if layout.newline_layout == "per_video":
        return feats, kind, frame, row, col
    order = torch.sort(layout.grid_position(frame, row, col), stable=True).indices
    return feats[order], kind[order], frame[order], row[order], col[order]


def assemble(
    embed: torch.nn.Module,
    input_ids: torch.Tensor,
    layout: VideoLayout,
    tokens: VisualTokens,
    newline: torch.Tensor,
    policy: NewlinePolicy = "rows_with_kept",
    positions: str = "contiguous",
) -> SequenceState:
    """The prefill :class:`SequenceState` for ``input_ids`` with the single video placeholder at ``layout.video_start``.

    Args:
        embed: the LLM's token embedding.
        input_ids: (1, T) prompt ids holding exactly one video placeholder.
        layout: the unpruned layout (its ``video_start`` is the placeholder's index).
        tokens: the visual tokens entering the LLM.
        newline: (D,) the ``image_newline`` embedding.
        positions: ``contiguous`` or ``original``.
    """
    ids = input_ids[0]
    start = layout.video_start
    before, after = ids[:start], ids[start + 1 :]
    device = tokens.features.device
    text_before = embed(before[None].to(device))[0]
    text_after = embed(after[None].to(device))[0]
    feats, vkind, vframe, vrow, vcol = video_block(tokens, layout, newline, policy)
    feats = feats.to(text_before.dtype)

    n_b, n_v, n_a = len(before), len(feats), len(after)
    hidden = torch.cat([text_before, feats, text_after])[None]
    kind = torch.cat([torch.full((n_b,), TEXT), vkind, torch.full((n_a,), TEXT)])
    minus = torch.full((n_b,), -1), torch.full((n_a,), -1)
    frame = torch.cat([minus[0], vframe, minus[1]])
    row = torch.cat([minus[0], vrow, minus[1]])
    col = torch.cat([minus[0], vcol, minus[1]])
    # original index of every position in the unpruned sequence
    video_orig = layout.grid_position(vframe, vrow, vcol)
    after_orig = torch.arange(n_a) + layout.video_end
    original_index = torch.cat([torch.arange(n_b), video_orig, after_orig])
    if positions == "original":
        pos = original_index.clone()
    elif positions == "contiguous":
        pos = torch.arange(n_b + n_v + n_a)
    else:
        raise ValueError(f"positions must be 'contiguous' or 'original', got {positions!r}")
    question = torch.cat([torch.zeros(n_b + n_v, dtype=torch.bool), torch.ones(n_a, dtype=torch.bool)])
    return SequenceState(
        hidden=hidden,
        position_ids=pos[None].to(device),
        kind=kind,
        frame=frame,
        row=row,
        col=col,
        original_index=original_index,
        question_mask=question,
        newline_layout=layout.newline_layout,
    )

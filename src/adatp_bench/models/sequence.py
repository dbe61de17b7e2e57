"""Build the LLM input sequence of one sample: text before the video, the (possibly pruned) video, text after.

Newlines follow the model's layout (``models/layout.py``). In the per-row layout, a row none of whose tokens survive
loses its newline under the default policy ``rows_with_kept`` — FastVID's rule: the newline of every row that keeps
at least one token survives (docs/methods/fastvid.md, docs/flops.md §3). ``per_frame`` keeps one newline per frame
(FastVID*, VisionZip* on LLaVA-Video); ``all`` keeps every row's newline.

Positions are either ``contiguous`` (the sequence is rebuilt after reduction) or ``original`` (every surviving token
keeps the RoPE position it has in the unpruned sequence, gaps included, as FastVID does).
"""

from __future__ import annotations

import torch

from adatp_bench.models.layout import NewlinePolicy, VideoLayout, VisualTokens
from adatp_bench.pruning.base import NEWLINE, TEXT, VISUAL, SequenceState


def video_block(
    tokens: VisualTokens, layout: VideoLayout, newline: torch.Tensor, policy: NewlinePolicy
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Interleave newlines with the visual tokens.

    Returns:
        features (n, D), kind (n,), frame (n,), row (n,), col (n,) for the video block in sequence order.
    """
    if layout.newline_layout == "per_video":
        feats, kind = tokens.features, torch.full((len(tokens),), VISUAL)
        frame, row, col = tokens.frame, tokens.row, tokens.col
        if policy != "none":
            feats = torch.cat([feats, newline[None].to(feats.dtype)])
            kind = torch.cat([kind, torch.tensor([NEWLINE])])
            frame = torch.cat([frame, torch.tensor([layout.num_frames - 1])])
            row = torch.cat([row, torch.tensor([layout.grid_h - 1])])
            col = torch.cat([col, torch.tensor([layout.grid_w])])
        return feats, kind, frame, row, col

    # per_row: raster order inside the video, a newline closing each (frame, row) per the policy.
    tokens = tokens.select(tokens.raster_order(layout))
    if policy == "all":
        rows = [(f, r) for f in range(layout.num_frames) for r in range(layout.grid_h)]
    elif policy == "rows_with_kept":
        rows = sorted(set(zip(tokens.frame.tolist(), tokens.row.tolist(), strict=True)))
    elif policy == "per_frame":
        rows = [(f, layout.grid_h - 1) for f in sorted(set(tokens.frame.tolist()))]
    elif policy == "full_frame_rows":
        per_frame = tokens.counts_per_frame(layout.num_frames).tolist()
        rows = [
            (f, r)
            for f, n in enumerate(per_frame)
            for r in (range(layout.grid_h) if n == layout.tokens_per_frame else [layout.grid_h - 1] if n else [])
        ]
    elif policy == "none":
        rows = []
    else:
        raise ValueError(f"unknown newline policy {policy!r}")
    nl_frame = torch.tensor([f for f, _ in rows], dtype=torch.long)
    nl_row = torch.tensor([r for _, r in rows], dtype=torch.long)
    nl_col = torch.full_like(nl_frame, layout.grid_w)
    frame = torch.cat([tokens.frame, nl_frame])
    row = torch.cat([tokens.row, nl_row])
    col = torch.cat([tokens.col, nl_col])
    kind = torch.cat([torch.full((len(tokens),), VISUAL), torch.full((len(rows),), NEWLINE)])
    feats = torch.cat([tokens.features, newline[None].expand(len(rows), -1).to(tokens.features.dtype)])
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

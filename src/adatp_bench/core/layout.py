"""The video token layout of one sample, and the visual tokens that pruning methods select from.

Pruning methods read only these two objects; they never assume 196 tokens per frame or a fixed start index
(docs/upstream.md §6). Two layouts exist:

- ``per_video`` (LLaVA-OneVision, LLaVA-NeXT ``one_token``): F·h·w grid tokens, then one ``image_newline``.
- ``per_row`` (LLaVA-Video, LLaVA-NeXT ``grid``): each row of each frame is followed by a newline, so a frame takes
  h·(w+1) positions.
- ``none`` (Qwen2-VL / Qwen2.5-VL): F·h·w grid tokens and no newline at all; the video sits between the text tokens
  ``<|vision_start|>`` and ``<|vision_end|>`` and every token carries 3-D M-RoPE ids (``models/qwen_vl.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal, get_args

import torch

#: Where newline tokens sit: one after the whole video (LLaVA-OneVision), one after every row (LLaVA-Video), or nowhere
#: (Qwen2-VL / Qwen2.5-VL).
NewlineLayout = Literal["per_video", "per_row", "none"]

#: Which newlines survive pruning (:meth:`VideoLayout.kept_newline_cells`, the one rule every method and the sequence
#: builder use). In the per-row layout: a row's newline iff the row keeps a token (``rows_with_kept``, FastVID); the
#: closing newline of every frame that keeps a token (``per_frame``: FastVID*, VisionZip* on LLaVA-Video); the closing
#: newline of every frame (``frame_ends``: AdaTP's in-LLM stages); a frame's row newlines when the whole frame is kept
#: and its closing newline otherwise (``full_frame_rows``: DyCoke's counts in FastVID Table 2); every row's (``all``);
#: none. In the one-newline layout the single newline stays under every policy but ``none``.
NewlinePolicy = Literal["rows_with_kept", "per_frame", "frame_ends", "full_frame_rows", "all", "none"]
NEWLINE_POLICIES: tuple[str, ...] = get_args(NewlinePolicy)


@dataclass(frozen=True)
class VideoLayout:
    """Where the video sits in the *unpruned* sequence of one sample.

    Attributes:
        video_start: index of the first video position in the sequence.
        num_frames, grid_h, grid_w: pooled token grid per frame.
        newline_layout: ``per_video`` or ``per_row``.
        seq_len: length of the unpruned sequence (text + video).
    """

    video_start: int
    num_frames: int
    grid_h: int
    grid_w: int
    newline_layout: NewlineLayout
    seq_len: int

    @property
    def tokens_per_frame(self) -> int:
        """Grid tokens per frame (newlines excluded): 196 for LLaVA-OV, 169 for LLaVA-Video."""
        return self.grid_h * self.grid_w

    @property
    def num_grid_tokens(self) -> int:
        return self.num_frames * self.tokens_per_frame

    @property
    def num_newlines(self) -> int:
        if self.newline_layout == "none":
            return 0
        return 1 if self.newline_layout == "per_video" else self.num_frames * self.grid_h

    @property
    def video_len(self) -> int:
        """Video positions in the unpruned sequence (grid tokens + newlines): 6273 for OV-7B, 11648 for LLaVA-Video."""
        return self.num_grid_tokens + self.num_newlines

    @property
    def video_end(self) -> int:
        """One past the last video position."""
        return self.video_start + self.video_len

    def grid_position(self, frame: torch.Tensor, row: torch.Tensor, col: torch.Tensor) -> torch.Tensor:
        """Original sequence position of grid token (frame, row, col)."""
        if self.newline_layout in ("per_video", "none"):
            offset = frame * self.tokens_per_frame + row * self.grid_w + col
        else:
            offset = frame * self.grid_h * (self.grid_w + 1) + row * (self.grid_w + 1) + col
        return self.video_start + offset

    def kept_newline_cells(self, policy: str, frame: torch.Tensor, row: torch.Tensor) -> list[tuple[int, int]]:
        """Sorted (frame, row) cells of the newlines that stay when the grid tokens at cells ``(frame[i], row[i])`` are
        kept, under ``policy`` (:data:`NewlinePolicy`). A newline's cell is the row it closes; the one-newline layout's
        single newline has cell ``(num_frames − 1, grid_h − 1)``."""
        if policy not in NEWLINE_POLICIES:
            raise ValueError(f"unknown newline policy {policy!r}; valid: {', '.join(NEWLINE_POLICIES)}")
        last_row = self.grid_h - 1
        if policy == "none" or self.newline_layout == "none":
            return []
        if self.newline_layout == "per_video":
            return [(self.num_frames - 1, last_row)]
        if policy == "all":
            return [(f, r) for f in range(self.num_frames) for r in range(self.grid_h)]
        if policy == "frame_ends":
            return [(f, last_row) for f in range(self.num_frames)]
        if policy == "rows_with_kept":
            return sorted(set(zip(frame.tolist(), row.tolist(), strict=True)))
        counts = torch.bincount(frame, minlength=self.num_frames).tolist() if len(frame) else [0] * self.num_frames
        if policy == "per_frame":
            return [(f, last_row) for f, n in enumerate(counts) if n]
        # full_frame_rows
        return [
            (f, r)
            for f, n in enumerate(counts)
            for r in (range(self.grid_h) if n == self.tokens_per_frame else [last_row] if n else [])
        ]

    def newline_count(
        self, policy: str, kept_per_frame: list[int], rows_per_frame: list[int] | None = None
    ) -> int | None:
        """How many newlines :meth:`kept_newline_cells` keeps when frame f keeps ``kept_per_frame[f]`` grid tokens.

        None when the count depends on which rows the tokens fall in (``rows_with_kept`` on partly kept frames),
        unless ``rows_per_frame`` says how many rows each frame's kept tokens touch.
        """
        if policy not in NEWLINE_POLICIES:
            raise ValueError(f"unknown newline policy {policy!r}; valid: {', '.join(NEWLINE_POLICIES)}")
        if policy == "none" or self.newline_layout == "none":
            return 0
        if self.newline_layout == "per_video":
            return 1
        if policy == "all":
            return self.num_frames * self.grid_h
        if policy == "frame_ends":
            return self.num_frames
        if policy == "per_frame":
            return sum(1 for n in kept_per_frame if n)
        if policy == "full_frame_rows":
            return sum(self.grid_h if n == self.tokens_per_frame else int(n > 0) for n in kept_per_frame)
        if rows_per_frame is not None:
            return sum(rows for rows, n in zip(rows_per_frame, kept_per_frame, strict=True) if n)
        if all(n in (0, self.tokens_per_frame) for n in kept_per_frame):
            return sum(self.grid_h for n in kept_per_frame if n)
        return None

    def newline_positions(self) -> torch.Tensor:
        """Original sequence positions of all newline tokens."""
        if self.newline_layout == "none":
            return torch.zeros(0, dtype=torch.long)
        if self.newline_layout == "per_video":
            return torch.tensor([self.video_start + self.num_grid_tokens])
        frame = torch.arange(self.num_frames).repeat_interleave(self.grid_h)
        row = torch.arange(self.grid_h).repeat(self.num_frames)
        return self.grid_position(frame, row, torch.full_like(row, self.grid_w))


@dataclass
class VisualTokens:
    """A set of visual grid tokens (no newlines), in the order they will enter the LLM.

    ``features`` holds post-projector, pooled embeddings. Every token carries the grid cell it came from; a merged token
    carries the cell of the token it was merged into. ``weight`` counts how many original tokens a token stands for.

    Attributes:
        features: (n, D)
        frame, row, col: (n,) long
        weight: (n,) float
    """

    features: torch.Tensor
    frame: torch.Tensor
    row: torch.Tensor
    col: torch.Tensor
    weight: torch.Tensor

    @classmethod
    def from_grid(cls, grid: torch.Tensor) -> VisualTokens:
        """All tokens of a (F, h, w, D) grid in raster order."""
        f, h, w, d = grid.shape
        fr, r, c = torch.meshgrid(torch.arange(f), torch.arange(h), torch.arange(w), indexing="ij")
        return cls(
            features=grid.reshape(-1, d),
            frame=fr.reshape(-1),
            row=r.reshape(-1),
            col=c.reshape(-1),
            weight=torch.ones(f * h * w, dtype=torch.float32),
        )

    def __len__(self) -> int:
        return self.features.shape[0]

    def spatial_index(self, grid_w: int) -> torch.Tensor:
        """Spatial cell index ``row·w + col`` of each token."""
        return self.row * grid_w + self.col

    def select(self, index: torch.Tensor) -> VisualTokens:
        """Tokens at ``index`` (a long index or bool mask), in that order."""
        return VisualTokens(
            features=self.features[index],
            frame=self.frame[index],
            row=self.row[index],
            col=self.col[index],
            weight=self.weight[index],
        )

    def with_features(self, features: torch.Tensor) -> VisualTokens:
        return replace(self, features=features)

    def raster_order(self, layout: VideoLayout) -> torch.Tensor:
        """Permutation that sorts tokens by original position (stable for ties from merging)."""
        key = layout.grid_position(self.frame, self.row, self.col)
        return torch.sort(key, stable=True).indices

    def counts_per_frame(self, num_frames: int) -> torch.Tensor:
        return torch.bincount(self.frame, minlength=num_frames)

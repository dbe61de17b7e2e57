"""The video token layout of one sample, and the visual tokens that pruning methods select from.

Pruning methods read only these two objects; they never assume 196 tokens per frame or a fixed start index
(docs/upstream.md §6). Two layouts exist:

- ``per_video`` (LLaVA-OneVision, LLaVA-NeXT ``one_token``): F·h·w grid tokens, then one ``image_newline``.
- ``per_row`` (LLaVA-Video, LLaVA-NeXT ``grid``): each row of each frame is followed by a newline, so a frame takes
  h·(w+1) positions.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal, get_args

import torch

from adatp_bench.models.specs import NewlineLayout

# Which row newlines survive in the per-row layout (models/sequence.py): a row's newline iff the row keeps a token
# (FastVID), one per frame with a kept token (FastVID*, VisionZip* on LLaVA-Video), every row's, none, or a frame's row
# newlines when the whole frame is kept and one newline otherwise (DyCoke's counts in FastVID Table 2).
NewlinePolicy = Literal["rows_with_kept", "per_frame", "full_frame_rows", "all", "none"]
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
        if self.newline_layout == "per_video":
            offset = frame * self.tokens_per_frame + row * self.grid_w + col
        else:
            offset = frame * self.grid_h * (self.grid_w + 1) + row * (self.grid_w + 1) + col
        return self.video_start + offset

    def newline_positions(self) -> torch.Tensor:
        """Original sequence positions of all newline tokens."""
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

"""The frames of one video as a model receives them: decoded only when the model needs them.

When a video's vision-tower outputs are cached (``cache.py``), a cell never decodes it: the model asks for the frames
only on a cache miss. :class:`VideoInput` carries the cache address of the frames (the video file's content and the
frame sampling) and a loader, and records which frames were used either way, for the sample's record.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

#: A loader returns the frames (N, H, W, 3) uint8, the frame index of each, and the video's decodable frame count.
FrameLoader = Callable[[], tuple[np.ndarray, list[int], int]]


@dataclass
class VideoInput:
    """One video's sampled frames, loaded lazily.

    Attributes:
        key: content address of the sampled frames (None: not cacheable, e.g. frames given directly).
        loader: decodes the frames when they are needed.
        frames, indices, total_frames: filled by :meth:`decoded`, or by the model from a cache entry.
    """

    key: str | None
    loader: FrameLoader | None = None
    frames: np.ndarray | None = None
    indices: list[int] | None = None
    total_frames: int | None = None

    @classmethod
    def from_frames(cls, frames: np.ndarray) -> VideoInput:
        """Frames already in memory (tests, benchmarks): not cacheable."""
        return cls(key=None, frames=frames, indices=list(range(len(frames))), total_frames=len(frames))

    def decoded(self) -> np.ndarray:
        """The frames, decoding them on first use."""
        if self.frames is None:
            if self.loader is None:
                raise ValueError("this VideoInput has neither frames nor a loader")
            self.frames, self.indices, self.total_frames = self.loader()
        return self.frames

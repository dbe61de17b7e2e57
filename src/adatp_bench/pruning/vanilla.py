"""The unpruned reference. It goes through exactly the same code path as every pruning method."""

from dataclasses import dataclass

from adatp_bench.core.layout import VideoLayout
from adatp_bench.pruning.base import PruningMethod, register_method


@register_method("vanilla", "dense")
@dataclass
class Vanilla(PruningMethod):
    """Keeps every visual token."""

    def expected_video_tokens(self, layout: VideoLayout, num_layers: int) -> list[int]:
        return [layout.video_len] * num_layers

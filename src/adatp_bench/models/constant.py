"""``model=constant``: a "model" that answers every question with the same text, to check the scoring path.

With ``model.answer=A`` every score is known in advance from the annotations alone (the share of questions whose
answer is A, aggregated as each benchmark aggregates), so a run shows whether the data, the prompts, lmms-eval's answer
extraction and aggregation, and our records work together, with no weights and no randomness. The videos are still
resolved and decoded at the sampled frames, so the data path is exercised as in a real cell. It takes no pruning
method (``method=vanilla``) and has no FLOPs.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from adatp_bench.core.video import VideoInput
from adatp_bench.errors import ConfigError
from adatp_bench.models.adapter import SampleOutput
from adatp_bench.models.specs import ModelSpec


class ConstantAnswerModel:
    """Answers ``answer`` to every question; satisfies what the harness needs of a model (``PrunableModel``)."""

    def __init__(self, spec: ModelSpec, answer: str) -> None:
        if not isinstance(answer, str) or not answer:
            raise ConfigError(f"model=constant needs a non-empty model.answer, got {answer!r}")
        self.spec = spec
        self.answer = answer
        self.method: Any = None
        self.relevance = None

    tokens_per_frame = 0
    num_layers = 0

    @property
    def num_frames(self) -> int:
        return self.spec.num_frames

    @property
    def device(self) -> str:
        return "cpu"

    def ensure_relevance_encoder(self) -> Any:
        raise ConfigError("model=constant has no relevance encoder: use method=vanilla")

    def generate(
        self,
        frames: np.ndarray | VideoInput,
        question: str,
        max_new_tokens: int = 16,
        sample_id: str = "0",
        seed: int = 0,
    ) -> SampleOutput:
        """The fixed answer (the frames are decoded and checked for shape, as a real model's processor would)."""
        if isinstance(frames, VideoInput):
            frames = frames.decoded()
        if frames.ndim != 4 or frames.shape[-1] != 3:
            raise ValueError(f"frames must be (F, H, W, 3) uint8, got shape {tuple(frames.shape)}")
        return SampleOutput(
            text=self.answer,
            input_tokens=0,
            output_tokens=0,
            video_tokens_per_layer=[],
            newline_tokens_per_layer=[],
            text_tokens=0,
            visual_tokens_in=0,
        )

"""Build the model a ``conf/model`` entry names: a :class:`~adatp_bench.models.adapter.VideoLLM` (for Qwen2-VL /
Qwen2.5-VL its subclass :class:`~adatp_bench.models.qwen_vl.QwenVideoLLM`), or the constant-answer check model."""

from __future__ import annotations

from adatp_bench.models.adapter import VideoLLM
from adatp_bench.models.constant import ConstantAnswerModel
from adatp_bench.models.qwen_vl import QwenVideoLLM
from adatp_bench.models.specs import QwenVLSpec, get_spec

CONSTANT_SOURCE = "builtin:constant"


def load_model(
    name: str,
    *,
    source: str | None = None,
    dtype: str = "float32",
    device: str = "cpu",
    attn_implementation: str = "sdpa",
    relevance_encoder: str | None = None,
    answer: str | None = None,
) -> VideoLLM | ConstantAnswerModel:
    """The model of spec ``name`` (weights from ``source`` or the spec's checkpoint)."""
    spec = get_spec(name)
    if (source or spec.source) == CONSTANT_SOURCE:
        return ConstantAnswerModel(spec, answer or "")
    adapter = QwenVideoLLM if isinstance(spec, QwenVLSpec) else VideoLLM  # Qwen2-VL / Qwen2.5-VL: models/qwen_vl.py
    return adapter.from_spec(
        spec,
        source=source,
        dtype=dtype,
        device=device,
        attn_implementation=attn_implementation,
        relevance_encoder=relevance_encoder,
    )


def is_constant(name: str, source: str | None = None) -> bool:
    """True for the constant-answer check model."""
    return (source or get_spec(name).source) == CONSTANT_SOURCE

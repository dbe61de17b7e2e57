"""SigLIP relevance encoder: per-frame global features and head attention, and question embeddings.

The HF LLaVA-OneVision checkpoints keep SigLIP's vision trunk but not its attention-pooling (MAP) head nor its text
tower. FastVID loads the head from ``google/siglip-so400m-patch14-384`` and applies it to the Video LLM's own per-frame
vision features to get one global token per frame and the head's attention over patches (docs/methods/fastvid.md).
AdaTP's "text encoder" is, we assume, the same checkpoint's text tower, which embeds the question in the space of those
global features ([H]; see docs/adatp.md).

Loaded lazily, only for methods that set ``needs_relevance``; on the Video LLM's device and dtype. The time spent is
recorded per sample (``last_ms``).
"""

from __future__ import annotations

import json
import time

import torch
from transformers import AutoTokenizer, PreTrainedTokenizerBase, SiglipModel

from adatp_bench.cache import ContentCache
from adatp_bench.errors import ModelLoadError


class RelevanceEncoder:
    """MAP head + text tower of a SigLIP model."""

    def __init__(self, model: SiglipModel, tokenizer: PreTrainedTokenizerBase) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.head = model.vision_model.head
        self.post_layernorm = model.vision_model.post_layernorm
        self.elapsed_ms = 0.0  # accumulated since the last reset_timer()

    @classmethod
    def load(cls, source: str, device: torch.device | str, dtype: torch.dtype) -> RelevanceEncoder:
        """``builtin:<name>`` or a hub id / local directory of a SigLIP checkpoint with vision head and text tower."""
        if source.startswith("builtin:"):
            from adatp_bench.models.builtin import builtin_relevance

            model, tok = builtin_relevance(source)
        else:
            try:
                model = SiglipModel.from_pretrained(source, dtype=dtype)
                tok = AutoTokenizer.from_pretrained(source)
            except OSError as err:
                raise ModelLoadError(
                    f"cannot load the SigLIP relevance encoder from {source!r} ({err}). It is needed by methods that "
                    "score frames or text relevance (adatp, fastvid). Download it with `huggingface-cli download "
                    f"{source}` or set model.relevance_encoder to a local directory."
                ) from err
        if getattr(model.config.vision_config, "vision_use_head", True) is False:
            raise ModelLoadError(f"{source!r} has no attention-pooling head (vision_use_head=False)")
        return cls(model.to(device=device, dtype=dtype), tok)

    def reset_timer(self) -> None:
        self.elapsed_ms = 0.0

    @torch.no_grad()
    def pool_frames(self, vision_hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Global feature and MAP-head attention per frame.

        Args:
            vision_hidden: (F, P, Dv) the Video LLM's per-frame vision features (before its projector).

        Returns:
            global features (F, Dg) and head attention over patches (F, P), heads averaged.
        """
        t0 = time.perf_counter()
        x = self.post_layernorm(vision_hidden.to(self.head.probe.dtype))
        probe = self.head.probe.expand(x.shape[0], -1, -1)
        # nn.MultiheadAttention returns the head-averaged weights when asked: (F, 1, P)
        pooled, weights = self.head.attention(probe, x, x, need_weights=True, average_attn_weights=True)
        residual = pooled
        pooled = residual + self.head.mlp(self.head.layernorm(pooled))
        self.elapsed_ms += (time.perf_counter() - t0) * 1e3
        return pooled[:, 0], weights[:, 0]

    @torch.no_grad()
    def embed_text(self, text: str) -> torch.Tensor:
        """(Dg,) SigLIP text embedding of ``text`` (SigLIP was trained with max_length padding, so pad the same way)."""
        t0 = time.perf_counter()
        max_len = self.model.config.text_config.max_position_embeddings
        enc = self.tokenizer(text, padding="max_length", truncation=True, max_length=max_len, return_tensors="pt")
        ids = enc["input_ids"].to(self.head.probe.device)
        out = self.model.get_text_features(input_ids=ids)
        emb = out.pooler_output if hasattr(out, "pooler_output") else out
        self.elapsed_ms += (time.perf_counter() - t0) * 1e3
        return emb[0]


class CachedRelevance:
    """The relevance encoder for one sample, its outputs read from and written to the per-video cache (``cache.py``):
    the frame features under the sample's vision-cache key, the question embedding under its text."""

    def __init__(
        self, encoder: RelevanceEncoder, cache: ContentCache, vision_key: str, lookups: dict[str, str]
    ) -> None:
        self.encoder = encoder
        self.cache = cache
        self.vision_key = vision_key
        self.lookups = lookups
        self.identity = json.dumps(
            {"config": encoder.model.config.to_dict(), "dtype": str(encoder.head.probe.dtype)}, default=str
        )

    @property
    def elapsed_ms(self) -> float:
        return self.encoder.elapsed_ms

    def reset_timer(self) -> None:
        self.encoder.reset_timer()

    def pool_frames(self, vision_hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        key = self.cache.key("relevance_frames", self.vision_key, self.identity)
        entry = self.cache.get("relevance_frames", key)
        self.lookups["relevance_frames"] = "miss" if entry is None else "hit"
        if entry is not None:
            device = vision_hidden.device
            return entry["global"].to(device), entry["attention"].to(device)
        pooled, weights = self.encoder.pool_frames(vision_hidden)
        self.cache.put("relevance_frames", key, {"global": pooled, "attention": weights})
        return pooled, weights

    def embed_text(self, text: str) -> torch.Tensor:
        key = self.cache.key("relevance_text", text, self.identity)
        entry = self.cache.get("relevance_text", key)
        self.lookups["relevance_text"] = "miss" if entry is None else "hit"
        if entry is not None:
            return entry["embedding"].to(self.encoder.head.probe.device)
        embedding = self.encoder.embed_text(text)
        self.cache.put("relevance_text", key, {"embedding": embedding})
        return embedding

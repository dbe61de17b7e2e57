"""Attention recomputed from a layer's own weights, so that SDPA/FlashAttention stay on everywhere.

- :func:`probe_attention`: the softmax attention of a few query rows of a decoder layer (prefill);
- :func:`decode_attention_row`: one decode token's attention over a layer's KV cache;
- :func:`vision_layer_attention`: attention received per patch in a SigLIP encoder layer, and its mean keys.

The attention-row probe:

Every attention-scored method needs only a handful of query rows (FastV, PDrop, HoliTom: the last prompt token;
PruneVid, SparseVLM: the question tokens). Asking the layer for ``output_attentions`` would force eager attention and
build an S×S matrix per head (≈ 2 GB per layer at 6k tokens in bf16), and under SDPA transformers silently returns
``()`` instead (docs/upstream.md §8). Instead we recompute (docs/methods.md §5.2; PDrop's approach generalised):

    x̂ = RMSNorm_layer(h)                     # the layer's own input_layernorm
    q = RoPE(W_q x̂[rows]),  k = RoPE(W_k x̂)  # q only for the probed rows, k for all tokens
    k = repeat_kv(k)                          # GQA: Qwen2-7B has 28 query / 4 KV heads
    A = softmax_fp32(q kᵀ / √d + causal mask restricted to the rows)

Cost O(rows · L · d · H) plus one K projection; the layer itself still runs with SDPA/FlashAttention.
"""

from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def probe_attention(
    layer: nn.Module,
    hidden_states: torch.Tensor,
    position_embeddings: tuple[torch.Tensor, torch.Tensor],
    rows: torch.Tensor | None = None,
) -> torch.Tensor:
    """Attention probabilities of ``layer`` on its input ``hidden_states`` for query ``rows``.

    Args:
        layer: a Qwen2-style decoder layer (``input_layernorm``, ``self_attn.{q,k}_proj``).
        hidden_states: (1, L, D) the layer's input.
        position_embeddings: (cos, sin), each (1, L, d), as the model passes them to the layer.
        rows: (R,) query positions; default the last one.

    Returns:
        (H, R, L) fp32 attention probabilities (each row sums to 1 over the keys it may see).
    """
    if hidden_states.shape[0] != 1:
        raise ValueError(f"the probe supports batch size 1, got {hidden_states.shape[0]}")
    seq_len = hidden_states.shape[1]
    if rows is None:
        rows = torch.tensor([seq_len - 1])
    rows = rows.to(hidden_states.device)
    attn = layer.self_attn
    head_dim = attn.head_dim
    x = layer.input_layernorm(hidden_states)[0]  # (L, D)
    q = attn.q_proj(x[rows]).view(len(rows), -1, head_dim).transpose(0, 1).float()  # (H, R, d)
    k = attn.k_proj(x).view(seq_len, -1, head_dim).transpose(0, 1).float()  # (Hkv, L, d)

    cos, sin = (t[0].float() for t in position_embeddings)  # (L, d)
    q = q * cos[rows] + _rotate_half(q) * sin[rows]
    k = k * cos + _rotate_half(k) * sin
    k = k.repeat_interleave(q.shape[0] // k.shape[0], dim=0)  # repeat_kv: (H, L, d)

    scores = (q @ k.transpose(1, 2)) * attn.scaling  # (H, R, L)
    causal = torch.arange(seq_len, device=rows.device)[None, :] > rows[:, None]  # (R, L): keys after the query
    scores = scores.masked_fill(causal[None], float("-inf"))
    return torch.softmax(scores, dim=-1)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


@torch.no_grad()
def decode_attention_row(
    layer: nn.Module,
    hidden: torch.Tensor,
    rope: tuple[torch.Tensor, torch.Tensor],
    keys: torch.Tensor,
) -> torch.Tensor:
    """(H, S) fp32 attention of one decode token over a layer's cached keys (stored after RoPE).

    Args:
        layer: the decoder layer the token is entering.
        hidden: (1, 1, D) the token's input to the layer.
        rope: (cos, sin) at the token's position.
        keys: (Hkv, S, d) the layer's cache, the new token's key included.
    """
    attn = layer.self_attn
    x = layer.input_layernorm(hidden)[0]  # (1, D)
    q = attn.q_proj(x).view(1, -1, attn.head_dim).transpose(0, 1).float()  # (H, 1, d)
    cos, sin = (t[0].float() for t in rope)
    q = q * cos + _rotate_half(q) * sin
    keys = keys.float().repeat_interleave(q.shape[0] // keys.shape[0], dim=0)
    return torch.softmax((q @ keys.transpose(1, 2)) * attn.scaling, dim=-1)[:, 0]


@torch.no_grad()
def vision_layer_attention(layer: nn.Module, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean attention received per patch and head-averaged keys of one SigLIP encoder layer, in fp32.

    Recomputes ``softmax(q kᵀ · scale)`` from the layer's ``layer_norm1`` and ``self_attn.{q,k}_proj`` on its input,
    instead of asking the tower for eager attentions. This is what VisionZip's official SigLIP port reads
    (``attn.mean(1).mean(1)`` and ``raw_key_states.mean(1)``) and HoliTom's ``attentions[-1].mean(dim=1).mean(dim=1)``.
    When the tower runs for the sample anyway, :class:`QKCapture` takes q and k from its own forward instead.

    Args:
        layer: a ``SiglipEncoderLayer``.
        hidden: (F, P, Dv) the layer's input.

    Returns:
        received (F, P): attention averaged over heads, then over queries; keys (F, P, d): keys averaged over heads.
    """
    attn, norm = layer.self_attn, layer.layer_norm1
    w_norm, b_norm = norm.weight.float(), norm.bias.float()
    x = nn.functional.layer_norm(hidden.float(), norm.normalized_shape, w_norm, b_norm, norm.eps)
    q = nn.functional.linear(x, attn.q_proj.weight.float(), attn.q_proj.bias.float())
    k = nn.functional.linear(x, attn.k_proj.weight.float(), attn.k_proj.bias.float())
    return received_attention(q, k, attn.num_heads, attn.scale)


@torch.no_grad()
def received_attention(
    q: torch.Tensor, k: torch.Tensor, heads: int, scale: float, frames_per_chunk: int = 4
) -> tuple[torch.Tensor, torch.Tensor]:
    """Received attention and head-averaged keys from a layer's projected queries and keys (F, P, H·d), in fp32.

    ``softmax(q kᵀ · scale)`` per head and frame, averaged over heads then over queries; frames are processed a few at
    a time, so the (chunk, H, P, P) buffer stays bounded (≈ 140 MB per 4 frames at 729 patches and 16 heads).
    """
    num_frames, patches, _ = q.shape
    q = q.float().view(num_frames, patches, heads, -1).transpose(1, 2)  # (F, H, P, d)
    k = k.float().view(num_frames, patches, heads, -1).transpose(1, 2)
    received = []
    for start in range(0, num_frames, frames_per_chunk):
        qc, kc = q[start : start + frames_per_chunk], k[start : start + frames_per_chunk]
        probs = torch.softmax((qc @ kc.transpose(-1, -2)) * scale, dim=-1)  # (chunk, H, P, P)
        received.append(probs.mean(1).mean(1))
    return torch.cat(received), k.mean(1)


class QKCapture:
    """Keep one vision layer's projected queries and keys from the tower's own forward (forward hooks on its
    ``q_proj``/``k_proj``, removed on exit), so its received attention needs no second projection."""

    def __init__(self, layer: nn.Module) -> None:
        self.layer = layer
        self.q: torch.Tensor | None = None
        self.k: torch.Tensor | None = None

    def __enter__(self) -> QKCapture:
        attn = self.layer.self_attn
        self._hooks = [
            attn.q_proj.register_forward_hook(lambda _m, _i, out: setattr(self, "q", out)),
            attn.k_proj.register_forward_hook(lambda _m, _i, out: setattr(self, "k", out)),
        ]
        return self

    def __exit__(self, *exc: object) -> None:
        for hook in self._hooks:
            hook.remove()

    def attention(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(received, keys) of the captured layer, as :func:`vision_layer_attention` computes them."""
        if self.q is None or self.k is None:
            raise RuntimeError("the captured layer did not run")
        attn = self.layer.self_attn
        return received_attention(self.q, self.k, attn.num_heads, attn.scale)

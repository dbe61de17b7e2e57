"""Attention-row probe: the softmax attention of a few query rows, recomputed from a decoder layer's own weights.

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

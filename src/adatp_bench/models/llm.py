"""The pruning-aware decoder loop: prefill with in-LLM token drops, then greedy decode.

This replaces ``Qwen2Model.forward``'s layer loop for our generation path (docs/upstream.md §9) without patching
transformers. Each layer is the stock ``Qwen2DecoderLayer`` with its configured attention kernel (SDPA or FlashAttention
2): we pass ``attention_mask=None`` so SDPA uses its causal kernel and never materialises an S×S mask (batch size 1, no
padding). When a method drops tokens before layer ``l``, the hidden states, RoPE position ids and cos/sin are indexed
together; layers ``≥ l`` then store shorter KV caches, which decode handles because no 4-D mask is built.

Decode positions continue from what each layer saw at prefill: with original positions kept (FastV, FastVID) every
layer continues at the unpruned length; with renumbered positions (PDrop) a layer continues at its own pruned length,
which is exactly PDrop's "shift down by the number dropped per stage" (docs/methods/pdrop.md).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
from transformers import DynamicCache

from adatp_bench.core.context import SampleContext
from adatp_bench.core.sequence import NEWLINE, TEXT, SequenceState
from adatp_bench.models.attention import decode_attention_row, probe_attention
from adatp_bench.pruning.base import PruningMethod


@dataclass
class PrefillResult:
    """What prefill leaves behind for decode, plus per-layer token counts for FLOPs."""

    last_hidden: torch.Tensor  # (1, 1, D) final-norm hidden state of the last prompt token
    cache: DynamicCache
    next_position: list[int]  # per layer: RoPE position of the first generated token
    video_tokens_per_layer: list[int] = field(default_factory=list)  # grid tokens + newlines entering each layer
    newline_tokens_per_layer: list[int] = field(default_factory=list)
    text_tokens: int = 0
    method_ms: float = 0.0  # time spent inside the method's in-LLM hooks (probe included)
    all_hidden: torch.Tensor | None = None  # (1, L', D) final-norm states of every surviving position, on request


class DecoderRunner:
    """Runs the decoder stack of a Qwen2-style language model with an optional pruning method."""

    def __init__(self, language_model: torch.nn.Module, lm_head: torch.nn.Module) -> None:
        self.lm = language_model
        self.lm_head = lm_head
        self.num_layers = len(language_model.layers)

    def _rope(self, hidden: torch.Tensor, position_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.lm.rotary_emb(hidden, position_ids)

    @torch.no_grad()
    def prefill(
        self,
        state: SequenceState,
        method: PruningMethod | None,
        ctx: SampleContext | None,
        keep_all_hidden: bool = False,
    ) -> PrefillResult:
        """Run every decoder layer over the prompt, letting ``method`` drop tokens before its layers."""
        cache = DynamicCache(config=self.lm.config)
        hook_layers = set(method.llm_layers(self.num_layers)) if method is not None else set()
        rope = self._rope(state.hidden, state.position_ids)
        video_counts, newline_counts, next_pos = [], [], []
        method_s = 0.0
        text_tokens = int((state.kind == TEXT).sum())
        # The sequence's counts change only where a method acts: counted there, not per layer (reading the last
        # position id from the GPU would synchronise the device at every layer).
        counts = _counts(state)
        for idx, layer in enumerate(self.lm.layers):
            if idx in hook_layers:
                t0 = time.perf_counter()
                state.layer_idx = idx
                state.probe = _bind_probe(layer, state.hidden, rope)
                keep = method.before_layer(state, ctx)
                state.probe = None
                if keep is not None:
                    state = _apply_keep(state, keep, renumber=method.in_llm_positions == "renumber")
                    rope = self._rope(state.hidden, state.position_ids)
                counts = _counts(state)  # a method may also edit the state in place
                method_s += time.perf_counter() - t0
            video_counts.append(counts[0])
            newline_counts.append(counts[1])
            next_pos.append(counts[2])
            # position_ids are not passed: RoPE is applied through position_embeddings, and FlashAttention-2 would
            # otherwise read gapped position ids as packed sequences.
            state.hidden = layer(
                state.hidden, attention_mask=None, past_key_values=cache, use_cache=True, position_embeddings=rope
            )
        if method is not None:
            method.after_prefill(cache, state, ctx)
        final = self.lm.norm(state.hidden if keep_all_hidden else state.hidden[:, -1:])
        return PrefillResult(
            last_hidden=final[:, -1:],
            all_hidden=final if keep_all_hidden else None,
            cache=cache,
            next_position=next_pos,
            video_tokens_per_layer=video_counts,
            newline_tokens_per_layer=newline_counts,
            text_tokens=text_tokens,
            method_ms=method_s * 1e3,
        )

    @torch.no_grad()
    def decode(
        self,
        prefill: PrefillResult,
        max_new_tokens: int,
        stop_token_ids: set[int],
        method: PruningMethod | None = None,
        ctx: SampleContext | None = None,
    ) -> list[int]:
        """Greedy decoding (every lmms-eval video task uses temperature 0); returns the generated token ids."""
        cache = prefill.cache
        probe_layers = set(method.decode_probe_layers(self.num_layers)) if method is not None else set()
        # ``on_decode_layer`` runs after each layer of a decode step (after its attention row, if probed): a method may
        # swap the cache of later layers for this step only, e.g. DyCoke's KV selection (pruning/dycoke.py).
        layer_hook = method.on_decode_layer if method is not None else None
        attention: dict[int, torch.Tensor] = {}
        logits = self.lm_head(prefill.last_hidden)[:, -1]
        out: list[int] = []
        for step in range(max_new_tokens):
            token = int(logits.argmax(-1))
            if token in stop_token_ids:
                break
            out.append(token)
            if step == max_new_tokens - 1:
                break
            if method is not None:
                method.on_decode_step(step, cache, ctx, attention)
            hidden = self.lm.embed_tokens(torch.tensor([[token]], device=prefill.last_hidden.device))
            rope_by_pos: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
            attention = {}
            for idx, layer in enumerate(self.lm.layers):
                pos = prefill.next_position[idx] + step
                if pos not in rope_by_pos:
                    rope_by_pos[pos] = self._rope(hidden, torch.tensor([[pos]], device=hidden.device))
                layer_input = hidden
                hidden = layer(
                    hidden,
                    attention_mask=None,
                    past_key_values=cache,
                    use_cache=True,
                    position_embeddings=rope_by_pos[pos],
                )
                if idx in probe_layers:
                    keys = cache.layers[idx].keys[0]
                    attention[idx] = decode_attention_row(layer, layer_input, rope_by_pos[pos], keys)
                if layer_hook is not None:
                    layer_hook(step, idx, cache, ctx, attention)
            logits = self.lm_head(self.lm.norm(hidden))[:, -1]
        return out


def _bind_probe(layer: torch.nn.Module, hidden: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor]):
    def probe(rows: torch.Tensor | None = None) -> torch.Tensor:
        return probe_attention(layer, hidden, rope, rows)

    return probe


def _counts(state: SequenceState) -> tuple[int, int, int]:
    """(video positions, newlines, RoPE position of the first generated token) of the sequence entering a layer."""
    return state.num_video(), int((state.kind == NEWLINE).sum()), int(state.position_ids[0, -1]) + 1


def _apply_keep(state: SequenceState, keep: torch.Tensor, renumber: bool) -> SequenceState:
    keep = torch.as_tensor(keep, dtype=torch.long).flatten().cpu()  # metadata lives on CPU, hidden states on device
    if keep.numel() and not bool((keep[1:] > keep[:-1]).all()):
        raise ValueError("a method must return strictly increasing positions to keep")
    if keep.numel() and (int(keep[0]) < 0 or int(keep[-1]) >= len(state)):
        raise ValueError(f"kept positions out of range for a sequence of {len(state)}")
    kept_text = int((state.kind[keep] == TEXT).sum())
    if kept_text != int((state.kind == TEXT).sum()):
        raise ValueError("a method dropped text tokens; only video positions may be pruned")
    new = state.keep(keep)
    if renumber:
        new.position_ids = torch.arange(len(new), device=new.hidden.device)[None]
    return new

"""The attention-row probe equals eager attention rows, in fp32, without eager ever running in the model under test."""

import pytest
import torch
from transformers import Qwen2Config, Qwen2Model

from adatp_bench.models.attention import probe_attention


@pytest.fixture(scope="module")
def eager_qwen2() -> Qwen2Model:
    torch.manual_seed(0)
    cfg = Qwen2Config(hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4,
                      num_key_value_heads=2, vocab_size=128)
    cfg._attn_implementation = "eager"
    return Qwen2Model(cfg).eval()


@pytest.mark.parametrize("layer_idx", [0, 1, 2])
def test_probe_matches_eager_rows(eager_qwen2: Qwen2Model, layer_idx: int) -> None:
    torch.manual_seed(1)
    x = torch.randn(1, 40, 64)
    captured: dict[int, torch.Tensor] = {}

    def grab(module, args, kwargs):
        captured[module.self_attn.layer_idx] = args[0] if args else kwargs["hidden_states"]

    hooks = [layer.register_forward_pre_hook(grab, with_kwargs=True) for layer in eager_qwen2.layers]
    with torch.no_grad():
        out = eager_qwen2(inputs_embeds=x, output_attentions=True)
    for h in hooks:
        h.remove()
    pos = torch.arange(40)[None]
    rope = eager_qwen2.rotary_emb(x, pos)
    rows = torch.tensor([5, 17, 39])
    got = probe_attention(eager_qwen2.layers[layer_idx], captured[layer_idx], rope, rows)
    want = out.attentions[layer_idx][0][:, rows]
    assert got.shape == want.shape == (4, 3, 40)
    assert torch.max(torch.abs(got - want)) <= 1e-5


def test_probe_default_row_is_last(eager_qwen2: Qwen2Model) -> None:
    x = torch.randn(1, 12, 64)
    rope = eager_qwen2.rotary_emb(x, torch.arange(12)[None])
    a = probe_attention(eager_qwen2.layers[0], x, rope)
    b = probe_attention(eager_qwen2.layers[0], x, rope, torch.tensor([11]))
    assert torch.equal(a, b)
    assert torch.allclose(a.sum(-1), torch.ones(4, 1))


def test_decode_attention_row_matches_probe_over_full_sequence() -> None:
    """The decode-time row (new token over the post-RoPE KV cache) equals the probe's last row on the whole sequence."""
    from transformers import DynamicCache

    from adatp_bench.models.attention import decode_attention_row

    torch.manual_seed(0)
    cfg = Qwen2Config(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, vocab_size=128)
    cfg._attn_implementation = "sdpa"
    model = Qwen2Model(cfg).eval()
    x = torch.randn(1, 21, 64)
    pos = torch.arange(21)[None]
    rope = model.rotary_emb(x, pos)
    layer = model.layers[0]
    cache = DynamicCache(config=cfg)
    with torch.no_grad():
        layer(x[:, :20], attention_mask=None, past_key_values=cache, use_cache=True,
              position_embeddings=(rope[0][:, :20], rope[1][:, :20]))
        last_rope = (rope[0][:, 20:], rope[1][:, 20:])
        layer(x[:, 20:], attention_mask=None, past_key_values=cache, use_cache=True, position_embeddings=last_rope)
    got = decode_attention_row(layer, x[:, 20:], last_rope, cache.layers[0].keys[0])
    want = probe_attention(layer, x, rope)[:, 0]
    assert torch.max(torch.abs(got - want)) <= 1e-5

"""VisionZip's defining behaviour: top-k dominant tokens by received attention, the rest merged into strided contextual
targets with the official ``target + mean(assigned)`` arithmetic; the recomputed SigLIP attention equals eager's."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from adatp_bench.core.layout import VisualTokens
from adatp_bench.models.adapter import VideoLLM
from adatp_bench.models.attention import vision_layer_attention
from adatp_bench.models.view import patch_to_cell
from adatp_bench.pruning import build_method
from adatp_bench.pruning.visionzip import split_budget, visionzip_select

QUESTION = "What happens?"


def test_split_budget_54_to_10() -> None:
    # int(S·54/64) dominant: FastVID's per-frame budgets 49/39/29/19 and HoliTom's SPATIAL_TOKENS 50/40/30/20.
    assert [split_budget(s, 54 / 64) for s in (49, 39, 29, 19, 42, 16)] == [
        (41, 8), (32, 7), (24, 5), (16, 3), (35, 7), (13, 3)
    ]  # fmt: skip
    assert [split_budget(s, 54 / 64) for s in (50, 40, 30, 20)] == [(42, 8), (33, 7), (25, 5), (16, 4)]


def hand_frame() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One frame of 6 candidates: x_i = (i, 10 i); tokens 1 and 3 dominate; keys send 5 → 0 and 2 → 4."""
    x = torch.arange(6.0)[:, None] * torch.tensor([1.0, 10.0])
    dominance = torch.tensor([0.1, 0.9, 0.2, 0.8, 0.3, 0.05])
    keys = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.1, 1.0], [1.0, 1.0], [0.0, 1.0], [1.0, 0.2]])
    return x[None], dominance[None], keys[None]


@pytest.mark.parametrize("official_compat", [True, False])
def test_dominant_then_contextual_by_hand(official_compat: bool) -> None:
    x, dominance, keys = hand_frame()
    out = visionzip_select(x, dominance, keys, dominant=2, contextual=2, official_compat=official_compat)
    # Dominant: top-2 received attention {1, 3}, in spatial order. Remaining [0, 2, 4, 5]: step 4 // 2 = 2 → targets
    # 0 and 4; token 2 joins target 4 and token 5 joins target 0 (key cosine).
    assert out.index.tolist() == [[1, 3, 0, 4]]
    assert out.weight.tolist() == [[1.0, 1.0, 2.0, 2.0]]
    if official_compat:  # target + mean(assigned)
        want_ctx = torch.stack([x[0, 0] + x[0, 5], x[0, 4] + x[0, 2]])
    else:  # mean of the group
        want_ctx = torch.stack([(x[0, 0] + x[0, 5]) / 2, (x[0, 4] + x[0, 2]) / 2])
    torch.testing.assert_close(out.features[0], torch.cat([x[0, [1, 3]], want_ctx]), rtol=0, atol=0)


def test_target_without_assignees_is_unchanged() -> None:
    x, dominance, keys = hand_frame()
    out = visionzip_select(x, dominance, keys, dominant=2, contextual=4)  # every remaining token is a target
    assert out.index.tolist() == [[1, 3, 0, 2, 4, 5]]
    torch.testing.assert_close(out.features[0], x[0, [1, 3, 0, 2, 4, 5]], rtol=0, atol=0)


def test_received_attention_matches_eager_siglip() -> None:
    """The fp32 recomputation equals the tower's own eager attention, averaged over heads and queries."""
    from adatp_bench.models.tiny import build_tiny_model

    model = build_tiny_model()
    model.set_attn_implementation({"vision_config": "eager", "text_config": "sdpa"})
    tower = model.model.vision_tower
    pixels = torch.randn(3, 3, 126, 126)
    with torch.no_grad():
        out = tower(pixels, output_hidden_states=True, output_attentions=True)
    layer = tower.encoder.layers[-1]
    received, keys = vision_layer_attention(layer, out.hidden_states[-2])
    torch.testing.assert_close(received, out.attentions[-1].mean(1).mean(1), rtol=1e-5, atol=1e-6)
    x = layer.layer_norm1(out.hidden_states[-2])
    want_keys = layer.self_attn.k_proj(x).view(3, -1, layer.self_attn.num_heads, layer.self_attn.head_dim).mean(2)
    torch.testing.assert_close(keys, want_keys, rtol=1e-5, atol=1e-6)


def test_patch_to_cell() -> None:
    p = torch.arange(27)
    avg = patch_to_cell(p, 27, 13, "average")  # LLaVA-Video 2×2 average: patch 2i, 2i+1 → cell i; 26 joins 12
    assert avg[:4].tolist() == [0, 0, 1, 1] and avg[-3:].tolist() == [12, 12, 12]
    bil = patch_to_cell(p, 27, 14, "bilinear")  # LLaVA-OV bilinear 27 → 14: nearest sample point
    assert bil[0] == 0 and bil[-1] == 13 and bool((bil.diff() >= 0).all()) and set(bil.tolist()) == set(range(14))


def _select(llm: VideoLLM, frames: np.ndarray, name: str, retention: float):
    method = build_method(name, retention=retention)
    with method(llm):
        _, ctx, _, _ = llm.prepare(frames, QUESTION)
        grid, _, _ = llm.encode_video(llm.pixel_values(frames))
        kept = method.select_visual(VisualTokens.from_grid(grid), ctx)
    return kept, ctx, grid


def test_visionzip_star_on_tiny_keeps_top_received_attention(tiny_llm: VideoLLM, scene_frames: np.ndarray) -> None:
    kept, ctx, grid = _select(tiny_llm, scene_frames, "visionzip", 0.25)
    nf, h, w, _ = grid.shape
    budget = int(h * w * 0.25)  # 6 → 5 dominant + 1 contextual
    dominant, contextual = split_budget(budget, 54 / 64)
    assert (dominant, contextual) == (5, 1)
    assert kept.counts_per_frame(nf).tolist() == [budget] * nf
    received = ctx.vision_attention().received  # the layer feeding the projector: the last of the tiny tower
    pooled = ctx.pool_map(received).reshape(nf, h * w)
    cells = (kept.row * w + kept.col).view(nf, budget)
    for f in range(nf):
        want = torch.sort(torch.topk(pooled[f], dominant).indices).values
        assert cells[f, :dominant].tolist() == want.tolist()  # [dominant in spatial order, contextual]
        assert cells[f, dominant:].tolist()[0] not in want.tolist()
        torch.testing.assert_close(kept.features.view(nf, budget, -1)[f, :dominant], grid[f].reshape(h * w, -1)[want])


def test_visionzip_pre_projects_selected_patches(tiny_llm: VideoLLM, scene_frames: np.ndarray) -> None:
    kept, ctx, grid = _select(tiny_llm, scene_frames, "visionzip_pre", 0.25)
    nf, h, w, _ = grid.shape
    budget = int(h * w * 0.25)
    dominant, _ = split_budget(budget, 54 / 64)
    assert kept.counts_per_frame(nf).tolist() == [budget] * nf
    received = ctx.vision_attention().received  # (F, 81) over the 9×9 patches: no pooling
    side = tiny_llm.patches_per_side
    projector = tiny_llm.model.model.multi_modal_projector
    for f in range(nf):
        patches = torch.sort(torch.topk(received[f], dominant).indices).values
        with torch.no_grad():
            want = projector(ctx.vision_hidden[f, patches])
        torch.testing.assert_close(kept.features.view(nf, budget, -1)[f, :dominant], want)
        rows = patch_to_cell(patches // side, side, h, "bilinear")
        assert kept.row.view(nf, budget)[f, :dominant].tolist() == rows.tolist()

"""Temporal segmentation and exact integer budget allocation (helpers of AdaTP, ``pruning/adatp.py``).

- :func:`segment_frames` — AdaTP's segmentation rule (docs/adatp.md §2 step 1, [V] via the themoonlight review):
  consecutive frames stay in one segment while the cosine similarity of their global frame features is ≥ τs. No forced
  minimum number of segments (FastVID's DySeg adds the c−1 lowest transitions, docs/methods/fastvid.md; AdaTP's
  summaries mention only the threshold).
- :func:`waterfill` / :func:`allocate` — split a mass (a share of 1, or a token count) across segments in proportion to
  weights under per-segment caps, and round it to integers that sum *exactly* to the total (largest remainder). Exact
  sums are what make AdaTP's token counts, and hence its FLOPs, a function of the setting alone (docs/flops.md §1).
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F

Segments = list[tuple[int, int]]


def transition_similarity(global_features: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of consecutive frames.

    Args:
        global_features: (F, Dg) one global feature per frame.

    Returns:
        (F−1,) ``t_i = cos(v_p^i, v_p^{i+1})`` in fp32.
    """
    x = F.normalize(global_features.float(), dim=-1)
    return (x[:-1] * x[1:]).sum(-1)


def segment_frames(global_features: torch.Tensor, tau_s: float) -> Segments:
    """Split frames into consecutive segments: a new segment starts after frame i iff ``cos(v_p^i, v_p^{i+1}) < τs``.

    Args:
        global_features: (F, Dg) global frame features (SigLIP MAP head, ``SampleContext.frame_global_features``).
        tau_s: similarity threshold τs.

    Returns:
        ``[(start, end), ...]`` half-open frame ranges covering ``0..F`` in order.
    """
    num_frames = global_features.shape[0]
    if num_frames == 0:
        return []
    cuts = torch.nonzero(transition_similarity(global_features) < tau_s).flatten().add(1).tolist()
    bounds = [0, *cuts, num_frames]
    return list(itertools.pairwise(bounds))


def segment_of_frame(segments: Segments, num_frames: int) -> torch.Tensor:
    """(F,) long: the index of the segment holding each frame."""
    out = torch.empty(num_frames, dtype=torch.long)
    for j, (start, end) in enumerate(segments):
        out[start:end] = j
    return out


def waterfill(mass: float, weights: torch.Tensor, caps: torch.Tensor) -> torch.Tensor:
    """Split ``mass`` in proportion to ``weights`` with no entry above its cap; the excess of capped entries goes to the
    others, again in proportion to their weights.

    Args:
        mass: total to split; must not exceed ``caps.sum()``.
        weights: (m,) non-negative.
        caps: (m,) non-negative upper bounds.

    Returns:
        (m,) float64 shares, ``≤ caps``, summing to ``mass`` (up to float rounding).
    """
    weights, caps = weights.double(), caps.double()
    if mass > float(caps.sum()) * (1 + 1e-12) + 1e-9:
        raise ValueError(f"cannot place {mass} under caps summing to {float(caps.sum())}")
    out = torch.zeros_like(weights)
    free = caps > 0
    remaining = float(mass)
    for _ in range(len(weights) + 1):
        w = torch.where(free, weights, torch.zeros_like(weights))
        if remaining <= 0 or not bool(free.any()):
            break
        if float(w.sum()) <= 0:  # free entries without weight share the rest equally
            w = free.double()
        trial = remaining * w / w.sum()
        over = free & (trial > caps - out)
        if not bool(over.any()):
            out = out + torch.where(free, trial, torch.zeros_like(trial))
            break
        remaining -= float((caps - out)[over].sum())
        out = torch.where(over, caps, out)
        free = free & ~over
    return out


def allocate(total: int, weights: torch.Tensor, capacity: torch.Tensor) -> torch.Tensor:
    """Integer budgets: ``total`` split in proportion to ``weights``, each ≤ its capacity, summing exactly to ``total``.

    Water-filling (:func:`waterfill`) then largest-remainder rounding; ties go to the lower index.

    Args:
        total: tokens to place; ``0 ≤ total ≤ capacity.sum()``.
        weights: (m,) non-negative.
        capacity: (m,) long, tokens available per segment.

    Returns:
        (m,) long budgets.
    """
    capacity = capacity.long()
    if not 0 <= total <= int(capacity.sum()):
        raise ValueError(f"cannot allocate {total} tokens over capacities summing to {int(capacity.sum())}")
    quota = waterfill(float(total), weights, capacity.double())
    budget = torch.minimum(torch.floor(quota + 1e-9).long(), capacity)
    left = total - int(budget.sum())
    frac = quota - budget.double()
    # largest remainder first; ≤ m entries are short after rounding, a second pass only in degenerate float cases
    order = torch.sort(-frac, stable=True).indices.tolist()
    while left > 0:
        for j in order:
            if left > 0 and budget[j] < capacity[j]:
                budget[j] += 1
                left -= 1
    return budget

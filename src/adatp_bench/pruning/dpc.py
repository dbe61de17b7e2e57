"""Density-peak clustering (DPC-KNN) on token features, shared by the methods that pick "density peak" tokens.

One rule, four upstream copies that agree line for line (PruneVid, FastVID, HoliTom, SparseVLM; docs/methods.md §5.5):

- ``Visual-AI/PruneVid@b12600c:models/pllava/modeling_pllava.py::cluster_dpc_knn`` (centres + assignment, token mask),
- ``cokeshao/HoliTom@e9b2972:holitom/llava_arch.py::LlavaMetaForCausalLM.cluster_dpc_knn`` (centres only, k = 7),
- ``LunarShen/FastVID@a40a109:fastvid_llavaonevision/.../modeling_qwen2.py::Qwen2Model.forward`` block "Parallel Density
  Score Computation" (scores only, k = 4; DTM picks the top scores itself),
- the same block in ``fastvid_llavavideo`` (one frame at a time).

For tokens ``x_i ∈ R^C`` of one batch entry::

    d_ij  = ‖x_i − x_j‖ / √C                          (cdist in fp32)
    ρ_i   = exp(−mean_{j ∈ kNN(i)} d_ij²) + u_i·1e-6   (kNN includes i itself, at distance 0; u ~ U[0, 1))
    δ_i   = min_{j: ρ_j > ρ_i} d_ij,  or max_jk d_jk for the densest token
    score = ρ_i · δ_i                                   (centres: the top-m scores)

The noise ``u`` breaks density ties. Upstream draws it from the global RNG; here it comes from a ``torch.Generator``
(the sample's ``ctx.generator()``, docs/methods.md §5.5) so results do not depend on call order across samples. With
``generator=None`` the global RNG is used, exactly as upstream (for oracle tests that seed before the call).

Public API (stable; other method modules import it):

- :func:`density_peaks` — ρ, δ, parent and score for a batch of token sets;
- :func:`dpc_knn` — the top-m centres and the nearest-centre assignment of every token (PruneVid's return value);
- :func:`assign_to_centres` — nearest-centre assignment from a distance matrix, centres assigned to themselves.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

DENSITY_NOISE = 1e-6  # upstream `torch.rand(density.shape) * 1e-6` in all four copies


@dataclass
class DensityPeaks:
    """Density-peak statistics of ``B`` token sets of ``N`` tokens each.

    Attributes:
        dist: (B, N, N) fp32 pairwise distances ``cdist(x, x) / √C``.
        density: (B, N) fp32 local density ρ (noise included).
        delta: (B, N) fp32 distance to the nearest denser token (the set's maximum distance for its densest token).
        parent: (B, N) long index of that nearest denser token (meaningless for the densest token).
    """

    dist: torch.Tensor
    density: torch.Tensor
    delta: torch.Tensor
    parent: torch.Tensor

    @property
    def score(self) -> torch.Tensor:
        """(B, N) fp32 centre score ρ·δ."""
        return self.delta * self.density


@torch.no_grad()
def density_peaks(
    x: torch.Tensor,
    k: int,
    generator: torch.Generator | None = None,
    noise: float = DENSITY_NOISE,
    token_mask: torch.Tensor | None = None,
) -> DensityPeaks:
    """DPC-KNN statistics (see the module docstring for the formulas).

    Args:
        x: (B, N, C) token features (any float dtype; distances are computed in fp32).
        k: neighbours for the local density, the token itself included (FastVID 4, PruneVid 5, HoliTom 7). Clamped to
            ``N`` (upstream would raise for N < k).
        generator: source of the tie-breaking noise; None draws from the global RNG as upstream does.
        noise: noise amplitude (upstream 1e-6; 0 disables it).
        token_mask: optional (B, N) mask, nonzero = real token (PruneVid's padding mask): masked tokens are put at
            distance ``max + 1`` from everything and get density 0.

    Returns:
        :class:`DensityPeaks` with fp32 tensors on ``x``'s device.
    """
    if x.dim() != 3:
        raise ValueError(f"density_peaks expects (B, N, C) features, got shape {tuple(x.shape)}")
    _b, n, c = x.shape
    xf = x.float()
    dist = torch.cdist(xf, xf) / (c**0.5)
    valid = None
    if token_mask is not None:
        valid = token_mask.to(x.device) > 0
        dist = dist * valid[:, None, :] + (dist.max() + 1) * (~valid[:, None, :])
    nearest = torch.topk(dist, k=max(1, min(k, n)), dim=-1, largest=False).values
    density = (-(nearest**2).mean(dim=-1)).exp()
    if noise:
        device = generator.device if generator is not None else density.device
        u = torch.rand(density.shape, generator=generator, dtype=density.dtype, device=device)
        density = density + u.to(density.device) * noise
    if valid is not None:
        density = density * valid
    denser = (density[:, None, :] > density[:, :, None]).to(dist.dtype)  # [b, i, j] = ρ_j > ρ_i
    dist_max = dist.flatten(1).max(dim=-1).values[:, None, None]
    delta, parent = (dist * denser + dist_max * (1 - denser)).min(dim=-1)
    return DensityPeaks(dist=dist, density=density, delta=delta, parent=parent)


def assign_to_centres(dist: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """Nearest-centre cluster index of every token; each centre is assigned to its own cluster.

    Args:
        dist: (B, N, N) pairwise distances.
        centres: (B, m) token indices of the centres.

    Returns:
        (B, N) long cluster index in [0, m) (PruneVid ``cluster_dpc_knn``'s ``idx_cluster``).
    """
    b, m = centres.shape
    to_centres = torch.gather(dist, 1, centres[:, :, None].expand(-1, -1, dist.shape[2]))  # (B, m, N)
    cluster = to_centres.argmin(dim=1)
    rows = torch.arange(b, device=dist.device)[:, None].expand(b, m)
    cluster[rows, centres] = torch.arange(m, device=dist.device)[None].expand(b, m)
    return cluster


@torch.no_grad()
def dpc_knn(
    x: torch.Tensor,
    num_clusters: int,
    k: int,
    generator: torch.Generator | None = None,
    token_mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """DPC-KNN clustering: the ``num_clusters`` highest-scoring tokens become centres, every token joins the nearest.

    Args:
        x: (B, N, C) token features.
        num_clusters: centres per set (``m ≤ N``).
        k: density neighbours (see :func:`density_peaks`).
        generator: noise source (see :func:`density_peaks`).
        token_mask: optional (B, N) padding mask (see :func:`density_peaks`).

    Returns:
        centres (B, m) long token indices in descending score order, and cluster (B, N) long in [0, m).
    """
    peaks = density_peaks(x, k, generator=generator, token_mask=token_mask)
    centres = torch.topk(peaks.score, k=num_clusters, dim=-1).indices
    return centres, assign_to_centres(peaks.dist, centres)

"""Squared 2-Wasserstein (Bures) distance between Gaussian prototypes (DecAlign eq. 6).

Covariances are either full, (..., D, D), or diagonal, given as (..., D) variance vectors.
All functions broadcast over leading batch dimensions and follow the inputs' dtype and device.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from msalign.errors import MsalignError

__all__ = ["bures_wasserstein", "pairwise_prototype_cost", "pairwise_prototype_costs", "sqrtm_psd"]


def _eig_floor(values: Tensor, dim: int = -1) -> Tensor:
    """Per-matrix floor below which eigenvalues count as zero: eps * max(1, largest)."""
    scale = values.detach().abs().amax(dim=dim, keepdim=True).clamp_min(1.0)
    return torch.finfo(values.dtype).eps * scale


def _safe_sqrt(x: Tensor, floor: Tensor | float) -> Tensor:
    """sqrt(max(x, 0)) whose gradient stays finite at 0.

    Above ``floor`` this is the square root; on [0, floor] the chord x / sqrt(floor) (equal to
    the root at both ends, so the value is off by at most sqrt(floor) / 4).
    """
    floor_t = torch.as_tensor(floor, dtype=x.dtype, device=x.device)
    x = x.clamp_min(0)
    return torch.where(x > floor_t, x.clamp_min(floor_t).sqrt(), x / floor_t.sqrt())


class _SqrtmPSD(torch.autograd.Function):
    """Symmetric PSD square root by eigendecomposition, with a Sylvester-equation backward.

    If Y = A^{1/2} then Y dY + dY Y = dA, so the adjoint is the solution X of Y X + X Y = G:
    in Y's eigenbasis X_ab = G_ab / (s_a + s_b). Unlike differentiating ``eigh`` (whose backward
    divides by eigenvalue *differences* and is NaN for repeated eigenvalues, e.g. the identity),
    this divides by *sums* of roots, which are floored so singular matrices stay finite.
    """

    @staticmethod
    def forward(ctx, matrix: Tensor) -> Tensor:
        values, vectors = torch.linalg.eigh(0.5 * (matrix + matrix.mT))
        roots = values.clamp_min(0).sqrt()
        ctx.save_for_backward(vectors, roots)
        return (vectors * roots.unsqueeze(-2)) @ vectors.mT

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor) -> Tensor:
        vectors, roots = ctx.saved_tensors
        floor = torch.finfo(roots.dtype).eps ** 0.5 * roots.amax(-1, keepdim=True).clamp_min(1.0)
        denom = (roots.unsqueeze(-1) + roots.unsqueeze(-2)).clamp_min(floor.unsqueeze(-1))
        solved = vectors @ ((vectors.mT @ grad @ vectors) / denom) @ vectors.mT
        return 0.5 * (solved + solved.mT)  # adjoint of the symmetrisation in forward


def sqrtm_psd(matrix: Tensor) -> Tensor:
    """Principal square root of symmetric PSD matrices (..., D, D), eigh-based.

    The input is symmetrised and negative round-off eigenvalues are clamped to 0. Gradients are
    finite for repeated eigenvalues and for singular inputs (see ``_SqrtmPSD``); first order only.
    """
    if matrix.dim() < 2 or matrix.shape[-1] != matrix.shape[-2]:
        raise MsalignError(f"sqrtm_psd needs square matrices (..., D, D), got shape {tuple(matrix.shape)}")
    return _SqrtmPSD.apply(matrix)


def _is_diag(mean: Tensor, cov: Tensor, name: str) -> bool:
    if cov.dim() == mean.dim() and cov.shape[-1] == mean.shape[-1]:
        return True
    if cov.dim() == mean.dim() + 1 and cov.shape[-2:] == (mean.shape[-1], mean.shape[-1]):
        return False
    raise MsalignError(
        f"bures_wasserstein: {name} shape {tuple(cov.shape)} is neither (..., D) variances "
        f"nor (..., D, D) for mean shape {tuple(mean.shape)}"
    )


def bures_wasserstein(mean1: Tensor, cov1: Tensor, mean2: Tensor, cov2: Tensor) -> Tensor:
    """Squared 2-Wasserstein distance between Gaussians (DecAlign eq. 6).

    ``W2^2 = ||m1 - m2||^2 + Tr(S1 + S2 - 2 (S1^{1/2} S2 S1^{1/2})^{1/2})``. Eq. 6 writes the
    cross term as ``(S1 S2)^{1/2}``; S1 S2 is not symmetric, but it is similar to
    S1^{1/2} S2 S1^{1/2}, so both have the same (non-negative) eigenvalues and the same trace of
    the square root, which is what is computed here: sum of sqrt(eigvalsh(S1^{1/2} S2 S1^{1/2})).

    * both diagonal ((..., D) variances): closed form ``||m1 - m2||^2 + sum (s1 - s2)^2`` with
      s = sqrt(var) (commuting covariances);
    * otherwise exact: a diagonal side is promoted with ``diag_embed``.

    Leading dimensions broadcast: means (K1, 1, D) and (1, K2, D) with covariances (K1, 1, ...)
    and (1, K2, ...) give the (K1, K2) cost matrix. Square roots use finite-gradient versions,
    so identical, singular or zero covariances give finite gradients; the covariance term is
    clamped at 0 against round-off.
    """
    diag1, diag2 = _is_diag(mean1, cov1, "cov1"), _is_diag(mean2, cov2, "cov2")
    mean_term = (mean1 - mean2).square().sum(-1)
    if diag1 and diag2:
        floor = torch.finfo(cov1.dtype).eps
        cov_term = (_safe_sqrt(cov1, floor) - _safe_sqrt(cov2, floor)).square().sum(-1)
        return mean_term + cov_term
    full1 = torch.diag_embed(cov1) if diag1 else cov1
    full2 = torch.diag_embed(cov2) if diag2 else cov2
    root1 = sqrtm_psd(full1)
    cross = root1 @ full2 @ root1
    values = torch.linalg.eigvalsh(0.5 * (cross + cross.mT))
    trace_root = _safe_sqrt(values, _eig_floor(values)).sum(-1)
    trace1 = cov1.sum(-1) if diag1 else cov1.diagonal(dim1=-2, dim2=-1).sum(-1)
    trace2 = cov2.sum(-1) if diag2 else cov2.diagonal(dim1=-2, dim2=-1).sum(-1)
    return mean_term + (trace1 + trace2 - 2 * trace_root).clamp_min(0)


def pairwise_prototype_cost(
    means_i: Tensor,
    covs_i: Tensor,
    means_j: Tensor,
    covs_j: Tensor,
    reduction: Literal["sum", "mean"] = "sum",
) -> Tensor:
    """(K_i, K_j) prototype matching cost C_ij(k_i, k_j) between two GMMs (DecAlign eq. 6).

    Args:
        means_i: (K_i, D); covs_i: (K_i, D) variances or (K_i, D, D); likewise for j.
        reduction: "sum" is eq. 6 as written; "mean" divides by D (a per-dimension cost, as the
            official code does, which keeps the scale independent of the feature width).
    """
    if means_i.dim() != 2 or means_j.dim() != 2:
        raise MsalignError(
            f"pairwise_prototype_cost needs (K, D) means, got {tuple(means_i.shape)} and {tuple(means_j.shape)}"
        )
    cost = bures_wasserstein(means_i[:, None], covs_i[:, None], means_j[None], covs_j[None])
    if reduction == "mean":
        return cost / means_i.shape[-1]
    if reduction != "sum":
        raise MsalignError(f"pairwise_prototype_cost: reduction must be 'sum' or 'mean', got {reduction!r}")
    return cost


def pairwise_prototype_costs(means: Tensor, covs: Tensor, reduction: Literal["sum", "mean"] = "sum") -> Tensor:
    """Eq. 6's (K, K) cost matrix of every modality pair i < j at once: (P, K, K), P = M (M - 1) / 2.

    ``means``: (M, K, D) prototypes of M GMMs with K components each; ``covs``: (M, K, D)
    variances or (M, K, D, D). Pairs come in ``itertools.combinations(range(M), 2)`` order and
    each matrix equals :func:`pairwise_prototype_cost` of that pair (one broadcast
    :func:`bures_wasserstein` instead of one call per pair).
    """
    if means.dim() != 3:
        raise MsalignError(f"pairwise_prototype_costs needs (M, K, D) means, got {tuple(means.shape)}")
    if reduction not in ("sum", "mean"):
        raise MsalignError(f"pairwise_prototype_cost: reduction must be 'sum' or 'mean', got {reduction!r}")
    first, second = torch.triu_indices(means.shape[0], means.shape[0], offset=1, device=means.device)
    cost = bures_wasserstein(
        means[first][:, :, None], covs[first][:, :, None], means[second][:, None], covs[second][:, None]
    )
    return cost / means.shape[-1] if reduction == "mean" else cost

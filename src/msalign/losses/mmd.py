"""Maximum mean discrepancy with a multi-bandwidth Gaussian kernel (DecAlign eq. 11-12)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from msalign.errors import MsalignError

__all__ = ["DEFAULT_BANDWIDTH_FACTORS", "median_bandwidth", "mmd", "pairwise_mmd"]

DEFAULT_BANDWIDTH_FACTORS: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0, 4.0)


def _sq_dists(a: Tensor, b: Tensor) -> Tensor:
    """Squared Euclidean distances (Na, Nb). Inputs are expected to be centred (see ``mmd``)."""
    return (a.square().sum(-1)[:, None] + b.square().sum(-1)[None] - 2 * a @ b.mT).clamp_min(0)


def median_bandwidth(x: Tensor, y: Tensor) -> Tensor:
    """Median heuristic: the median pairwise distance within the pooled sample [x; y], detached.

    Falls back to 1 when the median is 0 (e.g. all points equal).
    """
    with torch.no_grad():
        pooled = torch.cat([x, y]).detach()
        pooled = pooled - pooled.mean(0)
        n = pooled.shape[0]
        if n < 2:
            return pooled.new_ones(())
        rows, cols = torch.triu_indices(n, n, offset=1, device=pooled.device)
        median = _sq_dists(pooled, pooled)[rows, cols].sqrt().median()
        return torch.where(median > 0, median, torch.ones_like(median))


def mmd(
    x: Tensor,
    y: Tensor,
    bandwidths: float | Sequence[float] | Tensor | None = None,
    unbiased: bool = False,
    factors: Sequence[float] = DEFAULT_BANDWIDTH_FACTORS,
) -> Tensor:
    """Squared MMD between samples x (N, D) and y (M, D) (DecAlign eq. 11, one modality pair).

    Kernel (eq. 12, averaged over several bandwidths sigma so it stays in [0, 1]):
    ``k(a, b) = mean_sigma exp(-||a - b||^2 / (2 sigma^2))``. With ``bandwidths=None`` the sigmas
    are the median heuristic (:func:`median_bandwidth`, no gradient) times ``factors``.

    * ``unbiased=False`` (default): the V-statistic ``mean K_xx + mean K_yy - 2 mean K_xy``, i.e.
      the squared RKHS distance between the two empirical mean embeddings; the kernel is
      positive definite, so it is always >= 0 (clamped against round-off). Biased upwards by
      O(1/N): two samples of one distribution give a small positive value.
    * ``unbiased=True``: the U-statistic, which drops the i = j terms of the within-sample sums
      (needs N, M >= 2). Its expectation is exactly the population MMD^2, so it is ~0 (and can
      be negative) for samples of one distribution.
    """
    if x.dim() != 2 or y.dim() != 2 or x.shape[-1] != y.shape[-1]:
        raise MsalignError(f"mmd needs (N, D) and (M, D) samples, got {tuple(x.shape)} and {tuple(y.shape)}")
    n, m = x.shape[0], y.shape[0]
    if n < 1 or m < 1 or (unbiased and (n < 2 or m < 2)):
        raise MsalignError(f"mmd needs at least {2 if unbiased else 1} samples per side, got {n} and {m}")
    if bandwidths is None:
        sigmas = median_bandwidth(x, y) * torch.tensor(factors, dtype=x.dtype, device=x.device)
    else:
        sigmas = torch.as_tensor(bandwidths, dtype=x.dtype, device=x.device).reshape(-1)
    gammas = 1.0 / (2 * sigmas.square())

    center = torch.cat([x, y]).mean(0).detach()  # centring keeps the expansion in _sq_dists accurate
    x, y = x - center, y - center

    def kernel(a: Tensor, b: Tensor) -> Tensor:
        return torch.exp(-_sq_dists(a, b)[..., None] * gammas).mean(-1)

    k_xx, k_yy, k_xy = kernel(x, x), kernel(y, y), kernel(x, y)
    if unbiased:
        within_x = (k_xx.sum() - k_xx.diagonal().sum()) / (n * (n - 1))
        within_y = (k_yy.sum() - k_yy.diagonal().sum()) / (m * (m - 1))
        return within_x + within_y - 2 * k_xy.mean()
    return (k_xx.mean() + k_yy.mean() - 2 * k_xy.mean()).clamp_min(0)


def pairwise_mmd(
    features: Sequence[Tensor],
    bandwidths: float | Sequence[float] | Tensor | None = None,
    unbiased: bool = False,
    factors: Sequence[float] = DEFAULT_BANDWIDTH_FACTORS,
) -> Tensor:
    """L_MMD (DecAlign eq. 11): ``2 / (M (M - 1)) * sum_{i<j} MMD^2(Z_i, Z_j)``, the mean over pairs.

    Args:
        features: M >= 2 tensors (N_m, D), e.g. the pooled common features of each modality.
        Other arguments as in :func:`mmd` (with the median heuristic, each pair gets its own).
    """
    num = len(features)
    if num < 2:
        raise MsalignError(f"pairwise_mmd needs at least 2 modalities, got {num}")
    shapes = {tuple(f.shape) for f in features}
    if num > 2 and len(shapes) == 1 and features[0].dim() == 2 and features[0].shape[0] >= (2 if unbiased else 1):
        return (
            2.0 / (num * (num - 1)) * _all_pairs_mmd(torch.stack(list(features)), bandwidths, unbiased, factors).sum()
        )
    total = sum(
        mmd(features[i], features[j], bandwidths, unbiased, factors) for i in range(num) for j in range(i + 1, num)
    )
    return 2.0 / (num * (num - 1)) * total  # type: ignore[return-value]


def _pair_indices(num: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """Indices (i, j) of the pairs i < j of ``num`` modalities, in ``pairwise_mmd``'s order."""
    first, second = torch.triu_indices(num, num, offset=1, device=device)
    return first, second


def _all_pairs_mmd(
    stacked: Tensor,
    bandwidths: float | Sequence[float] | Tensor | None,
    unbiased: bool,
    factors: Sequence[float],
) -> Tensor:
    """:func:`mmd` of every pair i < j of M equally shaped samples (M, N, D) at once: (P,) values.

    The same computation as the per-pair calls (eq. 11-12 per pair, each pair centred on its own
    pooled mean, its own median-heuristic bandwidths), batched over pairs: one (P, 2N, 2N)
    distance matrix per pair's pooled sample [x; y], whose blocks are K_xx, K_yy and K_xy.
    """
    n = stacked.shape[1]
    first, second = _pair_indices(stacked.shape[0], stacked.device)
    pooled = torch.cat([stacked[first], stacked[second]], dim=1)  # (P, 2N, D)
    pooled = pooled - pooled.mean(1, keepdim=True).detach()
    norms = pooled.square().sum(-1)
    dists = (norms[:, :, None] + norms[:, None, :] - 2 * pooled @ pooled.mT).clamp_min(0)  # (P, 2N, 2N)
    if bandwidths is None:
        with torch.no_grad():  # median_bandwidth per pair: median distance within the pooled sample
            rows, cols = torch.triu_indices(2 * n, 2 * n, offset=1, device=stacked.device)
            median = dists[:, rows, cols].sqrt().median(dim=1).values
            median = torch.where(median > 0, median, torch.ones_like(median))
        sigmas = median[:, None] * torch.tensor(factors, dtype=stacked.dtype, device=stacked.device)
    else:
        sigmas = torch.as_tensor(bandwidths, dtype=stacked.dtype, device=stacked.device).reshape(1, -1)
    gammas = 1.0 / (2 * sigmas.square())  # (P or 1, S)
    kernel = torch.exp(-dists[..., None] * gammas[:, None, None, :]).mean(-1)
    k_xx, k_yy, k_xy = kernel[:, :n, :n], kernel[:, n:, n:], kernel[:, :n, n:]
    if unbiased:
        within_x = (k_xx.sum((1, 2)) - k_xx.diagonal(dim1=1, dim2=2).sum(-1)) / (n * (n - 1))
        within_y = (k_yy.sum((1, 2)) - k_yy.diagonal(dim1=1, dim2=2).sum(-1)) / (n * (n - 1))
        return within_x + within_y - 2 * k_xy.mean((1, 2))
    return (k_xx.mean((1, 2)) + k_yy.mean((1, 2)) - 2 * k_xy.mean((1, 2))).clamp_min(0)

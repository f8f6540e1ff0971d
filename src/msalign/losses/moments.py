"""Latent-space semantic alignment by moment matching (DecAlign eq. 10)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from torch import Tensor

from msalign.errors import MsalignError

__all__ = ["mean_cov_skew", "moment_matching"]


def mean_cov_skew(x: Tensor, eps: float = 1e-6) -> tuple[Tensor, Tensor, Tensor]:
    """Mean (D,), covariance (D, D) and per-dimension skewness (D,) of samples x (N, D).

    Population (biased, 1/N) moments, so N = 1 works: ``Sigma = (1/N) sum (x - mu)(x - mu)^T`` and
    ``Gamma_d = m3_d / (m2_d + eps)^{3/2}`` with m_r the r-th central moment of dimension d
    (the standardised third moment, ``scipy.stats.skew(bias=True)`` when eps = 0). ``eps`` keeps
    constant dimensions finite, with finite gradients (their skewness is 0).
    """
    if x.dim() != 2 or x.shape[0] < 1:
        raise MsalignError(f"mean_cov_skew needs (N, D) samples with N >= 1, got shape {tuple(x.shape)}")
    mean = x.mean(0)
    centred = x - mean
    cov = centred.mT @ centred / x.shape[0]
    m2 = centred.square().mean(0)
    m3 = centred.pow(3).mean(0)
    skew = m3 / (m2 + eps).pow(1.5)
    return mean, cov, skew


def moment_matching(features: Sequence[Tensor], eps: float = 1e-6, reduction: Literal["sum", "mean"] = "sum") -> Tensor:
    """L_sem (DecAlign eq. 10): ``1 / (M (M - 1)) * sum_{i<j} (||mu_i - mu_j||^2
    + ||Sigma_i - Sigma_j||_F^2 + ||Gamma_i - Gamma_j||^2)``.

    The normalisation is eq. 10's 1 / (M (M - 1)) (half the mean over pairs; eq. 11 uses
    2 / (M (M - 1))). ``reduction="mean"`` replaces each squared norm by the mean squared entry
    (MSE, as the official code does), which makes the three terms independent of the width D.

    Args:
        features: M >= 2 tensors (N_m, D), e.g. the pooled common features of each modality.
    """
    num = len(features)
    if num < 2:
        raise MsalignError(f"moment_matching needs at least 2 modalities, got {num}")
    if reduction not in ("sum", "mean"):
        raise MsalignError(f"moment_matching: reduction must be 'sum' or 'mean', got {reduction!r}")
    if len({f.shape[-1] for f in features}) != 1:
        raise MsalignError(f"moment_matching: features differ in width: {[tuple(f.shape) for f in features]}")
    stats = [mean_cov_skew(f, eps) for f in features]

    def dist(a: Tensor, b: Tensor) -> Tensor:
        sq = (a - b).square()
        return sq.mean() if reduction == "mean" else sq.sum()

    total = sum(
        sum(dist(a, b) for a, b in zip(stats[i], stats[j], strict=True)) for i in range(num) for j in range(i + 1, num)
    )
    return total / (num * (num - 1))  # type: ignore[return-value]

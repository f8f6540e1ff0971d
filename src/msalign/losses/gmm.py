"""Differentiable EM for Gaussian-mixture prototypes (DecAlign eq. 2-4).

A few EM steps written in torch, so gradients flow from the prototypes (means, covariances) and
posteriors back to the features. Everything is vectorised over samples and components; the
only loop is over EM steps. Follows the input's dtype and device.
"""

from __future__ import annotations

import math
from typing import Literal, NamedTuple

import torch
from torch import Tensor

from msalign.errors import MsalignError

__all__ = ["GMM", "e_step", "em_step", "fit_gmm", "log_gaussian"]

Covariance = Literal["diag", "full"]


class GMM(NamedTuple):
    """Prototypes P_m = {(mu^k, Sigma^k)} (eq. 2) with mixing pi and posteriors w^n(k) (eq. 3)."""

    means: Tensor  # (K, D)
    covs: Tensor  # (K, D) variances ("diag") or (K, D, D) ("full")
    mixing: Tensor  # (K,)
    responsibilities: Tensor  # (N, K)


def _covariance_kind(covs: Tensor, covariance: Covariance | None) -> Covariance:
    kind: Covariance = "diag" if covs.dim() == 2 else "full"
    if covs.dim() not in (2, 3) or (covariance is not None and covariance != kind):
        raise MsalignError(
            f"covs of shape {tuple(covs.shape)} do not fit covariance={covariance!r} "
            "(diag: (K, D) variances, full: (K, D, D))"
        )
    return kind


def _cholesky(covs: Tensor) -> Tensor:
    """Cholesky factors of (K, D, D) covariances; adds growing diagonal jitter if one is not PD."""
    chol, info = torch.linalg.cholesky_ex(covs)
    if not bool((info > 0).any()):
        return chol
    eye = torch.eye(covs.shape[-1], dtype=covs.dtype, device=covs.device)
    scale = covs.detach().diagonal(dim1=-2, dim2=-1).mean(-1).abs().clamp_min(1.0)[:, None, None]
    for power in range(-8, 0):
        chol, info = torch.linalg.cholesky_ex(covs + (10.0**power) * scale * eye)
        if not bool((info > 0).any()):
            return chol
    raise MsalignError("GMM covariance is not positive definite even with jitter (NaN features?)")


def log_gaussian(x: Tensor, means: Tensor, covs: Tensor, covariance: Covariance | None = None) -> Tensor:
    """log N(x_n; mu_k, Sigma_k) for every sample and component, (N, K) (DecAlign eq. 4).

    Args:
        x: (N, D); means: (K, D); covs: (K, D) variances or (K, D, D) full covariances.
        covariance: "diag" / "full", or None to infer from ``covs``' shape.

    Full covariances use a Cholesky factor (with jitter if needed) for the Mahalanobis term and
    the log-determinant ``2 sum log diag L``.
    """
    kind = _covariance_kind(covs, covariance)
    dim = x.shape[-1]
    if kind == "diag":
        maha = ((x[:, None, :] - means[None]).square() / covs[None]).sum(-1)
        log_det = covs.log().sum(-1)
    else:
        chol = _cholesky(covs)
        diff = (x[None] - means[:, None]).mT  # (K, D, N)
        solved = torch.linalg.solve_triangular(chol, diff, upper=False)
        maha = solved.square().sum(-2).mT
        log_det = 2 * chol.diagonal(dim1=-2, dim2=-1).log().sum(-1)
    return -0.5 * (maha + log_det + dim * math.log(2 * math.pi))


def e_step(x: Tensor, means: Tensor, covs: Tensor, mixing: Tensor, covariance: Covariance | None = None) -> Tensor:
    """Posteriors w^n(k) = pi_k N(x_n; k) / sum_j pi_j N(x_n; j), (N, K) (DecAlign eq. 3), in log domain."""
    tiny = torch.finfo(x.dtype).tiny
    log_joint = log_gaussian(x, means, covs, covariance) + mixing.clamp_min(tiny).log()
    return torch.softmax(log_joint, dim=-1)


def _m_step(
    x: Tensor, resp: Tensor, means: Tensor, covs: Tensor, kind: Covariance, var_floor: float, weights: Tensor | None
) -> tuple[Tensor, Tensor, Tensor]:
    """Standard M-step. Each component also keeps a 10 * eps pseudo-count of its old parameters,
    so a component with no responsibility stays where it was instead of collapsing to 0/0."""
    if weights is not None:
        resp = resp * weights[:, None]
    counts = resp.sum(0)  # (K,)
    prior = 10 * torch.finfo(x.dtype).eps
    denom = (counts + prior)[:, None]
    new_means = (resp.mT @ x + prior * means) / denom
    diff = x[None] - new_means[:, None]  # (K, N, D)
    if kind == "diag":
        spread = torch.einsum("nk,knd->kd", resp, diff.square())
        new_covs = ((spread + prior * covs) / denom).clamp_min(var_floor)
    else:
        spread = torch.einsum("nk,kni,knj->kij", resp, diff, diff)
        eye = torch.eye(x.shape[-1], dtype=x.dtype, device=x.device)
        new_covs = (spread + prior * covs) / denom[..., None] + var_floor * eye
    mixing = counts / counts.sum().clamp_min(torch.finfo(x.dtype).tiny)
    return new_means, new_covs, mixing


def em_step(
    x: Tensor,
    means: Tensor,
    covs: Tensor,
    mixing: Tensor,
    covariance: Covariance | None = None,
    var_floor: float = 1e-4,
    weights: Tensor | None = None,
) -> GMM:
    """One EM step: E-step (eq. 3) under the given parameters, then the M-step.

    The M-step is the standard weighted mean / covariance / mixing update. The variance floor is
    a clamp for diagonal covariances and a ridge ``+ var_floor * I`` for full ones (what
    scikit-learn calls ``reg_covar``); either way no variance falls below it. Returns the new
    parameters with the responsibilities *of the E-step* (i.e. under the input parameters).
    ``weights`` (N,) are optional per-sample weights (e.g. 0 for missing samples).
    """
    kind = _covariance_kind(covs, covariance)
    resp = e_step(x, means, covs, mixing, kind)
    new_means, new_covs, new_mixing = _m_step(x, resp, means, covs, kind, var_floor, weights)
    return GMM(new_means, new_covs, new_mixing, resp)


def fit_gmm(
    x: Tensor,
    num_components: int,
    num_steps: int = 5,
    covariance: Covariance = "diag",
    var_floor: float = 1e-4,
    init_means: Tensor | None = None,
    weights: Tensor | None = None,
) -> GMM:
    """Fit a K-component GMM to pooled features by a few differentiable EM steps (eq. 2-4).

    Deterministic initialisation: means are the samples at evenly spaced indices
    ``round(linspace(0, N - 1, K))`` (unless ``init_means`` is given), every component starts
    with the batch variance (diagonal, also for ``covariance="full"``) floored at ``var_floor``,
    and mixing weights are uniform. After ``num_steps`` EM steps the responsibilities are
    recomputed under the final parameters, so they are eq. 3's posteriors of the returned model.

    Works with fewer samples than components (repeated initial means just share the mass) and
    with duplicated or constant samples (the floor keeps variances positive).

    Args:
        x: (N, D) pooled features, N >= 1.
        num_components: K.
        num_steps: EM iterations (the official code uses 5).
        covariance: "diag" (covs are (K, D) variances) or "full" ((K, D, D)).
        var_floor: minimum variance (see :func:`em_step`).
        init_means: optional (K, D) initial means.
        weights: optional (N,) non-negative per-sample weights; zero-weight samples are ignored
            by the initialisation and the M-steps (their posteriors are still returned).
    """
    if x.dim() != 2 or x.shape[0] < 1:
        raise MsalignError(f"fit_gmm needs (N, D) features with N >= 1, got shape {tuple(x.shape)}")
    if num_components < 1 or num_steps < 0:
        raise MsalignError(
            f"fit_gmm: need num_components >= 1 and num_steps >= 0, got {num_components} and {num_steps}"
        )
    if covariance not in ("diag", "full"):
        raise MsalignError(f"fit_gmm: covariance must be 'diag' or 'full', got {covariance!r}")
    num, dim = x.shape
    if weights is None:
        w = x.new_full((num,), 1.0 / num)
        candidates = torch.arange(num, device=x.device)
    else:
        if weights.shape != (num,):
            raise MsalignError(f"fit_gmm: weights must be ({num},), got {tuple(weights.shape)}")
        w = weights.to(x.dtype) / weights.sum().clamp_min(torch.finfo(x.dtype).tiny)
        candidates = torch.nonzero(weights > 0).flatten()
        if candidates.numel() == 0:
            raise MsalignError("fit_gmm: all sample weights are zero")
    if init_means is None:
        picks = torch.linspace(0, candidates.numel() - 1, num_components, device=x.device).round().long()
        means = x[candidates[picks]]
    else:
        if init_means.shape != (num_components, dim):
            raise MsalignError(f"fit_gmm: init_means must be ({num_components}, {dim}), got {tuple(init_means.shape)}")
        means = init_means.to(x)
    center = w @ x
    variance = (w @ (x - center).square()).clamp_min(var_floor)  # (D,)
    covs = variance.expand(num_components, dim)
    if covariance == "full":
        covs = torch.diag_embed(covs)
    mixing = x.new_full((num_components,), 1.0 / num_components)
    for _ in range(num_steps):
        means, covs, mixing, _ = em_step(x, means, covs, mixing, covariance, var_floor, weights)
    resp = e_step(x, means, covs, mixing, covariance)
    return GMM(means, covs, mixing, resp)

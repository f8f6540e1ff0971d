"""Differentiable GMM-EM against scikit-learn and scipy."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment
from scipy.stats import multivariate_normal
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture

from msalign.errors import MsalignError
from msalign.losses import GMM, e_step, em_step, fit_gmm, log_gaussian

f64 = torch.float64


def _blobs(centres: torch.Tensor, per: int, std: float, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.cat([c + std * torch.randn(per, centres.shape[1], generator=gen, dtype=f64) for c in centres])


def _match(found: torch.Tensor, truth: torch.Tensor) -> float:
    """Largest distance between true and found means after the best permutation."""
    dist = torch.cdist(truth, found).numpy()
    rows, cols = linear_sum_assignment(dist)
    return float(dist[rows, cols].max())


def test_log_gaussian_matches_scipy():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(6, 3, generator=gen, dtype=f64)
    means = torch.randn(2, 3, generator=gen, dtype=f64)
    a = torch.randn(2, 3, 3, generator=gen, dtype=f64)
    covs = a @ a.mT + 0.5 * torch.eye(3, dtype=f64)
    expected = np.stack([multivariate_normal(means[k].numpy(), covs[k].numpy()).logpdf(x.numpy()) for k in range(2)], 1)
    np.testing.assert_allclose(log_gaussian(x, means, covs).numpy(), expected, rtol=1e-10)
    variances = covs.diagonal(dim1=-2, dim2=-1)
    expected = np.stack(
        [multivariate_normal(means[k].numpy(), np.diag(variances[k].numpy())).logpdf(x.numpy()) for k in range(2)], 1
    )
    np.testing.assert_allclose(log_gaussian(x, means, variances, "diag").numpy(), expected, rtol=1e-10)


@pytest.mark.parametrize("covariance", ["diag", "full"])
def test_recovers_separated_clusters(covariance):
    truth = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0]], dtype=f64)
    x = _blobs(truth, 60, 0.7, seed=1)
    gmm = fit_gmm(x, 4, num_steps=10, covariance=covariance)
    assert isinstance(gmm, GMM)
    assert _match(gmm.means, truth) < 0.3
    torch.testing.assert_close(gmm.mixing, torch.full((4,), 0.25, dtype=f64), atol=1e-3, rtol=0)
    variances = gmm.covs if covariance == "diag" else gmm.covs.diagonal(dim1=-2, dim2=-1)
    assert ((variances - 0.49).abs() < 0.2).all()
    # from shifted initial means too (components start far from every centre)
    gmm = fit_gmm(x, 4, num_steps=20, covariance=covariance, init_means=truth.flip(0) + 2.5)
    assert _match(gmm.means, truth) < 0.3
    # posteriors are eq. 3 under the returned parameters
    torch.testing.assert_close(gmm.responsibilities, e_step(x, gmm.means, gmm.covs, gmm.mixing))
    torch.testing.assert_close(gmm.responsibilities.sum(1), torch.ones(240, dtype=f64))


@pytest.mark.parametrize("covariance", ["diag", "full"])
def test_one_step_equals_sklearn(covariance):
    gen = torch.Generator().manual_seed(2)
    k, d = 3, 4
    x = torch.cat([torch.randn(40, d, generator=gen, dtype=f64) + 3 * c for c in range(3)])
    means = x[torch.tensor([0, 50, 100])] + 0.3
    mixing = torch.tensor([0.2, 0.3, 0.5], dtype=f64)
    if covariance == "diag":
        covs = torch.rand(k, d, generator=gen, dtype=f64) + 0.5
        precisions = 1 / covs.numpy()
    else:
        a = torch.randn(k, d, d, generator=gen, dtype=f64)
        covs = a @ a.mT / d + 0.5 * torch.eye(d, dtype=f64)
        precisions = np.linalg.inv(covs.numpy())
    reg = 1e-6
    sk = GaussianMixture(
        n_components=k,
        covariance_type=covariance,
        max_iter=1,
        n_init=1,
        init_params="random",
        means_init=means.numpy(),
        weights_init=mixing.numpy(),
        precisions_init=precisions,
        reg_covar=reg,
        random_state=0,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        sk.fit(x.numpy())  # E-step from the init, then one M-step
    step = em_step(x, means, covs, mixing, covariance, var_floor=reg)
    np.testing.assert_allclose(step.means.numpy(), sk.means_, atol=1e-9)
    np.testing.assert_allclose(step.mixing.numpy(), sk.weights_, atol=1e-9)
    # full: floor == reg_covar ridge exactly; diag: a clamp at reg vs adding reg, so within reg
    np.testing.assert_allclose(step.covs.numpy(), sk.covariances_, atol=1e-9 if covariance == "full" else 2 * reg)
    # the returned responsibilities are those of the E-step, under the input parameters
    torch.testing.assert_close(step.responsibilities, e_step(x, means, covs, mixing))


@pytest.mark.parametrize("covariance", ["diag", "full"])
@pytest.mark.parametrize(
    "name",
    ["single", "pair", "duplicates", "constant", "constant_dim"],
)
def test_degenerate_batches_are_finite(name, covariance):
    gen = torch.Generator().manual_seed(3)
    base = torch.randn(8, 5, generator=gen)
    x = (
        {
            "single": base[:1],
            "pair": base[:2],
            "duplicates": base[:3].repeat(4, 1),
            "constant": torch.ones(8, 5),
            "constant_dim": torch.cat([base[:, :4], torch.zeros(8, 1)], 1),
        }[name]
        .clone()
        .requires_grad_()
    )
    gmm = fit_gmm(x, 7, num_steps=5, covariance=covariance)
    for t in gmm:
        assert torch.isfinite(t).all()
    assert gmm.means.shape == (7, 5) and gmm.responsibilities.shape == (x.shape[0], 7)
    variances = gmm.covs if covariance == "diag" else gmm.covs.diagonal(dim1=-2, dim2=-1)
    assert (variances >= 1e-4 - 1e-9).all()
    torch.testing.assert_close(gmm.responsibilities.sum(1), torch.ones(x.shape[0]))
    (gmm.means.square().sum() + gmm.covs.sum() + (gmm.responsibilities * torch.arange(7.0)).sum()).backward()
    assert torch.isfinite(x.grad).all()


def test_gradients_reach_features_and_follow_dtype():
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(32, 6, generator=gen).requires_grad_()
    gmm = fit_gmm(x, 4)
    assert all(t.dtype == torch.float32 and t.device == x.device for t in gmm)
    (gmm.means.square().sum() + gmm.covs.log().sum()).backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_deterministic_init_and_weights():
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(10, 3, generator=gen, dtype=f64)
    zero = fit_gmm(x, 3, num_steps=0)
    torch.testing.assert_close(zero.means, x[torch.tensor([0, 4, 9])])  # round(linspace(0, 9, 3)) = 0, 4.5->4, 9
    torch.testing.assert_close(zero.covs, x.var(0, unbiased=False).expand(3, 3))
    torch.testing.assert_close(fit_gmm(x, 3).means, fit_gmm(x, 3).means)
    # zero-weight samples are ignored: same fit as dropping them
    weights = torch.tensor([1.0] * 6 + [0.0] * 4, dtype=f64)
    outliers = x.clone()
    outliers[6:] = 1e3
    torch.testing.assert_close(fit_gmm(outliers, 3, weights=weights).means, fit_gmm(x[:6], 3).means)
    with pytest.raises(MsalignError):
        fit_gmm(x[:0], 3)
    with pytest.raises(MsalignError):
        em_step(x, zero.means, zero.covs, zero.mixing, "full")

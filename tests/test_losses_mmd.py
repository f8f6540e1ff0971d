"""Multi-bandwidth MMD against hand-written numpy double sums."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from msalign.errors import MsalignError
from msalign.losses import median_bandwidth, mmd, pairwise_mmd

f64 = torch.float64


def _numpy_mmd(x: np.ndarray, y: np.ndarray, sigmas: list[float], unbiased: bool) -> float:
    def k(a, b):
        return np.mean([math.exp(-np.sum((a - b) ** 2) / (2 * s**2)) for s in sigmas])

    n, m = len(x), len(y)
    kxx = sum(k(x[i], x[j]) for i in range(n) for j in range(n) if not (unbiased and i == j))
    kyy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if not (unbiased and i == j))
    kxy = sum(k(x[i], y[j]) for i in range(n) for j in range(m))
    nx, ny = (n * (n - 1), m * (m - 1)) if unbiased else (n * n, m * m)
    return kxx / nx + kyy / ny - 2 * kxy / (n * m)


@pytest.mark.parametrize("unbiased", [False, True])
@pytest.mark.parametrize("sigmas", [[1.0], [0.5, 2.0, 3.0]])
def test_equals_numpy_double_sum(unbiased, sigmas):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(7, 3, generator=gen, dtype=f64)
    y = torch.randn(5, 3, generator=gen, dtype=f64) + 0.5
    value = mmd(x, y, bandwidths=sigmas, unbiased=unbiased).item()
    assert value == pytest.approx(_numpy_mmd(x.numpy(), y.numpy(), sigmas, unbiased), rel=1e-10, abs=1e-12)


def test_default_bandwidths_are_median_times_factors():
    gen = torch.Generator().manual_seed(1)
    x, y = torch.randn(6, 2, generator=gen, dtype=f64), torch.randn(4, 2, generator=gen, dtype=f64)
    z = np.concatenate([x.numpy(), y.numpy()])
    dists = [np.linalg.norm(z[i] - z[j]) for i in range(10) for j in range(i + 1, 10)]
    median = float(torch.tensor(dists).median())  # torch's (lower) median
    assert median_bandwidth(x, y).item() == pytest.approx(median)
    sigmas = [median * f for f in (0.25, 0.5, 1.0, 2.0, 4.0)]
    assert mmd(x, y).item() == pytest.approx(_numpy_mmd(x.numpy(), y.numpy(), sigmas, False), rel=1e-10)


def test_same_distribution_near_zero_and_monotone_in_shift():
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(120, 4, generator=gen, dtype=f64)
    y = torch.randn(120, 4, generator=gen, dtype=f64)
    same = mmd(x, y, bandwidths=[2.0])
    assert 0 <= same.item() < 0.02
    assert abs(mmd(x, y, bandwidths=[2.0], unbiased=True).item()) < 0.01
    shifts = [0.0, 0.25, 0.5, 1.0, 2.0, 4.0]
    values = [mmd(x, y + s, bandwidths=[2.0]).item() for s in shifts]
    assert all(a < b for a, b in itertools.pairwise(values))
    values = [mmd(x, y + s).item() for s in shifts]  # median heuristic, multi-bandwidth
    assert all(a < b for a, b in itertools.pairwise(values))


def test_biased_nonnegative_unbiased_known_cases():
    gen = torch.Generator().manual_seed(3)
    for _ in range(20):
        x = torch.randn(5, 2, generator=gen)
        y = torch.randn(6, 2, generator=gen)
        assert mmd(x, y).item() >= 0
        assert mmd(x, x).item() >= 0
    # two copies of a point on each side: both estimators are 2 - 2 k(a, b)
    a, b = torch.tensor([[0.0, 0.0]] * 2, dtype=f64), torch.tensor([[3.0, 4.0]] * 2, dtype=f64)
    expected = 2 - 2 * math.exp(-25 / (2 * 2.0**2))
    assert mmd(a, b, bandwidths=2.0, unbiased=True).item() == pytest.approx(expected)
    assert mmd(a, b, bandwidths=2.0).item() == pytest.approx(expected)
    # identical samples of n distinct points: biased 0, unbiased -2 (1 - mean offdiag k) / (n - 1) < 0
    x = torch.tensor([[0.0], [1.0], [3.0]], dtype=f64)
    k = np.exp(-(np.subtract.outer(x.numpy()[:, 0], x.numpy()[:, 0]) ** 2) / 2)
    offdiag = (k.sum() - 3) / 6
    assert mmd(x, x, bandwidths=1.0).item() == pytest.approx(0.0, abs=1e-12)
    assert mmd(x, x, bandwidths=1.0, unbiased=True).item() == pytest.approx(2 * offdiag - 2 * k.mean())
    assert mmd(x, x, bandwidths=1.0, unbiased=True).item() < 0


def test_unbiased_is_unbiased():
    """Averaged over many draws of one distribution, U-statistic ~ 0, V-statistic clearly > 0."""
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(400, 8, 2, generator=gen, dtype=f64)
    y = torch.randn(400, 8, 2, generator=gen, dtype=f64)
    u = torch.stack([mmd(a, b, bandwidths=1.0, unbiased=True) for a, b in zip(x, y, strict=True)])
    v = torch.stack([mmd(a, b, bandwidths=1.0) for a, b in zip(x, y, strict=True)])
    assert abs(u.mean().item()) < 3 * u.std().item() / 20
    assert v.mean().item() > 10 * v.std().item() / 20


def test_pairwise_normalisation_and_gradients():
    gen = torch.Generator().manual_seed(5)
    feats = [(torch.randn(10, 3, generator=gen, dtype=f64) + i).requires_grad_() for i in range(3)]
    pairs = [mmd(feats[i], feats[j], bandwidths=1.5) for i, j in [(0, 1), (0, 2), (1, 2)]]
    value = pairwise_mmd(feats, bandwidths=1.5)
    torch.testing.assert_close(value, 2 / (3 * 2) * sum(pairs))
    value.backward()
    assert all(torch.isfinite(f.grad).all() and f.grad.abs().sum() > 0 for f in feats)
    # identical points: finite value and gradient with the median heuristic (median 0 -> 1)
    same = torch.ones(4, 3, requires_grad=True)
    out = mmd(same, same.detach() + 0)
    out.backward()
    assert torch.isfinite(out) and torch.isfinite(same.grad).all()
    with pytest.raises(MsalignError):
        pairwise_mmd(feats[:1])
    with pytest.raises(MsalignError):
        mmd(feats[0][:1], feats[1], unbiased=True)


@pytest.mark.parametrize("unbiased", [False, True])
@pytest.mark.parametrize("bandwidths", [None, [0.5, 2.0]])
@pytest.mark.parametrize("num", [3, 4])
def test_pairwise_mmd_batched_over_pairs_equals_pair_by_pair(unbiased, bandwidths, num):
    """Equally shaped samples take the all-pairs-at-once path: same value and gradients as mmd pair by pair."""
    gen = torch.Generator().manual_seed(3)
    features = [(torch.randn(9, 4, generator=gen) + 0.3 * i).requires_grad_() for i in range(num)]
    got = pairwise_mmd(features, bandwidths=bandwidths, unbiased=unbiased)
    grads = torch.autograd.grad(got, features)
    pairs = list(itertools.combinations(range(num), 2))
    want = 2.0 / (num * (num - 1)) * sum(mmd(features[i], features[j], bandwidths, unbiased) for i, j in pairs)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)
    for g, w in zip(grads, torch.autograd.grad(want, features), strict=True):
        torch.testing.assert_close(g, w, atol=1e-6, rtol=1e-5)

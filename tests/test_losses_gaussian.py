"""Bures-Wasserstein distance between Gaussians against scipy.linalg.sqrtm."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch

from msalign.errors import MsalignError
from msalign.losses import bures_wasserstein, pairwise_prototype_cost, pairwise_prototype_costs, sqrtm_psd

f64 = torch.float64


def _spd(d: int, gen: torch.Generator, rank: int | None = None) -> torch.Tensor:
    a = torch.randn(d, rank or d, generator=gen, dtype=f64)
    return a @ a.T + (0 if rank else 0.1) * torch.eye(d, dtype=f64)


def _oracle(m1, s1, m2, s2) -> float:
    root1 = scipy.linalg.sqrtm(s1)
    cross = scipy.linalg.sqrtm(root1 @ s2 @ root1)
    return float(np.sum((m1 - m2) ** 2) + np.trace(s1 + s2 - 2 * np.real(cross)))


@pytest.mark.parametrize("d", [1, 3, 8])
def test_matches_scipy_sqrtm(d):
    gen = torch.Generator().manual_seed(d)
    for _ in range(3):
        m1, m2 = torch.randn(d, generator=gen, dtype=f64), torch.randn(d, generator=gen, dtype=f64)
        s1, s2 = _spd(d, gen), _spd(d, gen)
        value = bures_wasserstein(m1, s1, m2, s2).item()
        assert value == pytest.approx(_oracle(m1.numpy(), s1.numpy(), m2.numpy(), s2.numpy()), rel=1e-9, abs=1e-9)


def test_sqrtm_psd_matches_scipy_and_squares_back():
    gen = torch.Generator().manual_seed(0)
    s = _spd(6, gen)
    root = sqrtm_psd(s)
    np.testing.assert_allclose(root.numpy(), np.real(scipy.linalg.sqrtm(s.numpy())), atol=1e-10)
    torch.testing.assert_close(root @ root, s)
    batch = torch.stack([_spd(4, gen) for _ in range(3)])
    torch.testing.assert_close(sqrtm_psd(batch) @ sqrtm_psd(batch), batch)


def test_sqrtm_psd_gradient_matches_finite_differences():
    gen = torch.Generator().manual_seed(1)
    s = _spd(4, gen).requires_grad_()
    weight = torch.randn(4, 4, generator=gen, dtype=f64)
    # symmetric input perturbations only: compare against the gradient of f(sym(A))
    torch.autograd.gradcheck(lambda a: (sqrtm_psd(0.5 * (a + a.T)) * weight).sum(), (s,))


def test_diagonal_closed_form_equals_full_formula():
    gen = torch.Generator().manual_seed(2)
    m1, m2 = torch.randn(2, 5, generator=gen, dtype=f64)
    v1, v2 = torch.rand(2, 5, generator=gen, dtype=f64) + 0.05
    diag = bures_wasserstein(m1, v1, m2, v2)
    full = bures_wasserstein(m1, torch.diag(v1), m2, torch.diag(v2))
    mixed = bures_wasserstein(m1, v1, m2, torch.diag(v2))
    expected = ((m1 - m2) ** 2).sum() + ((v1.sqrt() - v2.sqrt()) ** 2).sum()
    torch.testing.assert_close(diag, expected)
    torch.testing.assert_close(full, expected)
    torch.testing.assert_close(mixed, expected)


def test_zero_for_identical_gaussians():
    gen = torch.Generator().manual_seed(3)
    m, s = torch.randn(6, generator=gen, dtype=f64), _spd(6, gen)
    assert bures_wasserstein(m, s, m, s).item() == pytest.approx(0.0, abs=1e-9)
    v = torch.rand(6, generator=gen, dtype=f64)
    assert bures_wasserstein(m, v, m, v).item() == 0.0


@pytest.mark.parametrize("dtype", [torch.float32, f64])
def test_gradients_finite_identical_and_singular(dtype):
    gen = torch.Generator().manual_seed(4)
    cases = {
        "identity": (torch.eye(4), torch.eye(4)),
        "identical": (_spd(4, gen), None),
        "rank_deficient": (_spd(4, gen, rank=2), _spd(4, gen, rank=1)),
        "zero": (torch.zeros(4, 4), torch.zeros(4, 4)),
        "zero_vs_spd": (torch.zeros(4, 4), _spd(4, gen)),
    }
    for name, (s1, s2) in cases.items():
        s1 = s1.to(dtype).requires_grad_()
        s2 = s1 if s2 is None else s2.to(dtype).requires_grad_()
        m1 = torch.zeros(4, dtype=dtype, requires_grad=True)
        m2 = torch.ones(4, dtype=dtype, requires_grad=True)
        value = bures_wasserstein(m1, s1, m2, s2)
        grads = torch.autograd.grad(value, [m1, s1, m2] + ([s2] if s2 is not s1 else []))
        assert torch.isfinite(value), name
        assert all(torch.isfinite(g).all() for g in grads), name
    # diagonal with zero variances
    v = torch.zeros(3, dtype=dtype, requires_grad=True)
    w = torch.tensor([0.0, 1.0, 2.0], dtype=dtype, requires_grad=True)
    value = bures_wasserstein(torch.zeros(3, dtype=dtype), v, torch.zeros(3, dtype=dtype), w)
    assert all(torch.isfinite(g).all() for g in torch.autograd.grad(value, [v, w]))


def test_broadcast_gives_cost_matrix():
    gen = torch.Generator().manual_seed(5)
    k1, k2, d = 3, 4, 3
    mi, mj = torch.randn(k1, d, generator=gen, dtype=f64), torch.randn(k2, d, generator=gen, dtype=f64)
    si = torch.stack([_spd(d, gen) for _ in range(k1)])
    sj = torch.stack([_spd(d, gen) for _ in range(k2)])
    matrix = bures_wasserstein(mi[:, None], si[:, None], mj[None], sj[None])
    assert matrix.shape == (k1, k2)
    for a in range(k1):
        for b in range(k2):
            expected = _oracle(mi[a].numpy(), si[a].numpy(), mj[b].numpy(), sj[b].numpy())
            assert matrix[a, b].item() == pytest.approx(expected)
    torch.testing.assert_close(pairwise_prototype_cost(mi, si, mj, sj), matrix)
    torch.testing.assert_close(pairwise_prototype_cost(mi, si, mj, sj, reduction="mean"), matrix / d)
    vi, vj = si.diagonal(dim1=-2, dim2=-1), sj.diagonal(dim1=-2, dim2=-1)
    torch.testing.assert_close(
        pairwise_prototype_cost(mi, vi, mj, vj),
        pairwise_prototype_cost(mi, torch.diag_embed(vi), mj, torch.diag_embed(vj)),
    )


def test_bad_shapes_raise():
    with pytest.raises(MsalignError):
        bures_wasserstein(torch.zeros(3), torch.zeros(4), torch.zeros(3), torch.zeros(3))
    with pytest.raises(MsalignError):
        sqrtm_psd(torch.zeros(2, 3))


@pytest.mark.parametrize("full", [False, True])
@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_pairwise_prototype_costs_batched_equal_pair_by_pair(full, reduction):
    """All pairs i < j at once: each matrix is pairwise_prototype_cost of that pair (values and gradients)."""
    gen = torch.Generator().manual_seed(9)
    num, k, d = 4, 3, 5
    means = torch.randn(num, k, d, generator=gen, dtype=torch.float64, requires_grad=True)
    if full:
        factor = torch.randn(num, k, d, d, generator=gen, dtype=torch.float64)
        covs = (factor @ factor.mT + 0.1 * torch.eye(d, dtype=torch.float64)).requires_grad_()
    else:
        covs = (torch.rand(num, k, d, generator=gen, dtype=torch.float64) + 0.1).requires_grad_()
    got = pairwise_prototype_costs(means, covs, reduction)
    pairs = [(i, j) for i in range(num) for j in range(i + 1, num)]
    want = torch.stack([pairwise_prototype_cost(means[i], covs[i], means[j], covs[j], reduction) for i, j in pairs])
    torch.testing.assert_close(got, want)
    weights = torch.randn(want.shape, generator=gen, dtype=torch.float64)
    got_grads = torch.autograd.grad((got * weights).sum(), (means, covs))
    for g, w in zip(got_grads, torch.autograd.grad((want * weights).sum(), (means, covs)), strict=True):
        torch.testing.assert_close(g, w)

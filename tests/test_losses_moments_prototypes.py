"""Moment matching (eq. 10), decoupling (eq. 1), prototype calibration (eq. 9) and the full chain."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats
import torch

from msalign.errors import MsalignError
from msalign.losses import (
    decoupling_loss,
    fit_gmm,
    heterogeneity_loss,
    joint_cost,
    mean_cov_skew,
    moment_matching,
    multimarginal_sinkhorn,
    ot_loss,
    pairwise_plan,
    pairwise_prototype_cost,
    prototype_calibration,
    prototype_loss,
)

f64 = torch.float64


# ----------------------------------------------------------------------------- moments (eq. 10)


def test_mean_cov_skew_matches_numpy_scipy():
    x = torch.tensor([[0.0, 1.0], [1.0, 3.0], [2.0, 8.0], [7.0, 2.0]], dtype=f64)
    mean, cov, skew = mean_cov_skew(x, eps=0.0)
    np.testing.assert_allclose(mean.numpy(), x.numpy().mean(0))
    np.testing.assert_allclose(cov.numpy(), np.cov(x.numpy(), rowvar=False, bias=True))
    np.testing.assert_allclose(skew.numpy(), scipy.stats.skew(x.numpy(), axis=0, bias=True))
    _, _, skew_eps = mean_cov_skew(x)
    np.testing.assert_allclose(skew_eps.numpy(), scipy.stats.skew(x.numpy(), axis=0, bias=True), rtol=1e-5)


def test_moment_matching_hand_example():
    a = torch.tensor([[0.0, 1.0], [1.0, 3.0], [2.0, 8.0]], dtype=f64)
    b = torch.tensor([[1.0, 0.0], [1.0, 2.0], [4.0, 1.0], [0.0, 1.0]], dtype=f64)
    c = torch.tensor([[5.0, 5.0], [6.0, 1.0]], dtype=f64)

    def stats(x):
        x = x.numpy()
        return x.mean(0), np.cov(x, rowvar=False, bias=True), scipy.stats.skew(x, axis=0, bias=True)

    def term(p, q):
        return sum(float(np.sum((s - t) ** 2)) for s, t in zip(stats(p), stats(q), strict=True))

    assert moment_matching([a, b], eps=0.0).item() == pytest.approx(term(a, b) / 2)  # 1 / (M (M - 1)), M = 2
    expected = (term(a, b) + term(a, c) + term(b, c)) / 6
    assert moment_matching([a, b, c], eps=0.0).item() == pytest.approx(expected)
    # "mean": each squared norm becomes a mean squared entry
    per_entry = sum(float(np.mean((s - t) ** 2)) for s, t in zip(stats(a), stats(b), strict=True)) / 2
    assert moment_matching([a, b], eps=0.0, reduction="mean").item() == pytest.approx(per_entry)


def test_moment_matching_zero_identical_and_finite_constant():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(16, 5, generator=gen)
    assert moment_matching([x, x.clone(), x.clone()]).item() == 0.0
    const = torch.ones(8, 5, requires_grad=True)
    other = torch.randn(8, 5, generator=gen, requires_grad=True)
    value = moment_matching([const, other])
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(const.grad).all() and torch.isfinite(other.grad).all()
    single = torch.randn(1, 5, generator=gen, requires_grad=True)  # one sample: all moments defined
    moment_matching([single, other]).backward()
    assert torch.isfinite(single.grad).all()
    with pytest.raises(MsalignError):
        moment_matching([x])


# ----------------------------------------------------------------------------- decoupling (eq. 1)


def test_decoupling_orthogonal_parallel_antiparallel():
    gen = torch.Generator().manual_seed(1)
    u = torch.randn(4, 6, 8, generator=gen, dtype=f64)
    c = torch.randn(4, 6, 8, generator=gen, dtype=f64)
    ortho = c - (c * u).sum(-1, keepdim=True) / (u * u).sum(-1, keepdim=True) * u
    assert decoupling_loss(u, ortho).item() == pytest.approx(0.0, abs=1e-12)
    assert decoupling_loss(u, 3 * u).item() == pytest.approx(1.0)
    assert decoupling_loss(u, -u).item() == pytest.approx(1.0)  # squared: anti-parallel is not rewarded
    expected = torch.nn.functional.cosine_similarity(u, c, dim=-1).square().mean()
    torch.testing.assert_close(decoupling_loss(u, c), expected)


def test_decoupling_ignores_padding():
    gen = torch.Generator().manual_seed(2)
    u = torch.randn(3, 5, 4, generator=gen, dtype=f64)
    c = torch.randn(3, 5, 4, generator=gen, dtype=f64)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [0, 0, 0, 0, 0]], dtype=torch.bool)
    cos2 = torch.nn.functional.cosine_similarity(u, c, dim=-1).square()
    base = decoupling_loss(u, c, mask)
    torch.testing.assert_close(base, cos2[mask].mean())
    u2, c2 = u.clone(), c.clone()
    u2[~mask] = float("nan")
    c2[~mask] = 1e6
    u2.requires_grad_()
    value = decoupling_loss(u2, c2, mask)
    torch.testing.assert_close(value, base)
    value.backward()
    assert torch.isfinite(u2.grad).all() and (u2.grad[~mask] == 0).all()
    # nothing real at all: zero, not NaN
    empty = torch.zeros(3, 5, dtype=torch.bool)
    u3 = u.clone().requires_grad_()
    value = decoupling_loss(u3, c, empty)
    value.backward()
    assert value.item() == 0.0 and torch.isfinite(u3.grad).all()
    # zero vectors at real positions: cosine 0, finite gradient
    zero = torch.zeros(2, 3, 4, requires_grad=True)
    out = decoupling_loss(zero, torch.randn(2, 3, 4))
    out.backward()
    assert out.item() == 0.0 and torch.isfinite(zero.grad).all()


def test_decoupling_sums_modalities():
    gen = torch.Generator().manual_seed(3)
    u = {m: torch.randn(2, 4, 3, generator=gen) for m in ("text", "audio")}
    c = {m: torch.randn(2, 4, 3, generator=gen) for m in ("text", "audio")}
    masks = {
        "text": torch.tensor([[1, 1, 0, 0], [1, 0, 0, 0]], dtype=torch.bool),
        "audio": torch.ones(2, 4, dtype=torch.bool),
    }
    expected = sum(decoupling_loss(u[m], c[m], masks[m]) for m in u)
    torch.testing.assert_close(decoupling_loss(u, c, masks), expected)
    torch.testing.assert_close(decoupling_loss(list(u.values()), list(c.values()), list(masks.values())), expected)
    shared = masks["text"]
    torch.testing.assert_close(decoupling_loss(u, c, shared), sum(decoupling_loss(u[m], c[m], shared) for m in u))
    pooled = decoupling_loss(u["text"][:, 0], c["text"][:, 0])  # (B, D) inputs
    assert pooled.shape == ()
    with pytest.raises(MsalignError):
        decoupling_loss(u["text"], c["text"][:, :2])


# ----------------------------------------------------------------------------- prototypes (eq. 9)


def _posteriors(n: int, k: int, gen: torch.Generator) -> torch.Tensor:
    return torch.softmax(torch.randn(n, k, generator=gen, dtype=f64), -1)


def test_permutation_plan_equals_permuted_index_reading():
    gen = torch.Generator().manual_seed(4)
    k, d = 4, 3
    feats, resp = torch.randn(10, d, generator=gen, dtype=f64), _posteriors(10, k, gen)
    means_j = torch.randn(k, d, generator=gen, dtype=f64)
    perm = torch.tensor([2, 0, 3, 1])
    coupling = torch.zeros(k, k, dtype=f64)
    coupling[torch.arange(k), perm] = 1 / k  # component a of i is matched to component perm[a] of j
    expected = prototype_calibration(feats, resp, means_j[perm], mode="index")
    for mode in ("plan", "expected"):
        torch.testing.assert_close(prototype_calibration(feats, resp, means_j, coupling, mode=mode), expected)
    torch.testing.assert_close(
        prototype_calibration(feats, resp, means_j, coupling, mode="index"), prototype_calibration(feats, resp, means_j)
    )
    hand = sum(resp[n, a] * ((feats[n] - means_j[perm[a]]) ** 2).sum() for n in range(10) for a in range(k)) / 10
    torch.testing.assert_close(expected, hand)


def test_expected_reading_adds_feature_free_variance():
    gen = torch.Generator().manual_seed(5)
    feats, resp = torch.randn(7, 2, generator=gen, dtype=f64), _posteriors(7, 3, gen)
    means_j = torch.randn(4, 2, generator=gen, dtype=f64)
    coupling = torch.rand(3, 4, generator=gen, dtype=f64)
    cond = coupling / coupling.sum(1, keepdim=True)
    bary = cond @ means_j
    spread = (cond * ((means_j[None] - bary[:, None]) ** 2).sum(-1)).sum(1)  # Var_{P(.|k)}(mu_j), (3,)
    plan_value = prototype_calibration(feats, resp, means_j, coupling)
    expected_value = prototype_calibration(feats, resp, means_j, coupling, mode="expected")
    torch.testing.assert_close(expected_value, plan_value + (resp.mean(0) * spread).sum())


def test_prototype_gradients_reach_features_and_means():
    gen = torch.Generator().manual_seed(6)
    feats = torch.randn(8, 3, generator=gen, dtype=f64, requires_grad=True)
    resp = _posteriors(8, 3, gen).requires_grad_()
    means_j = torch.randn(5, 3, generator=gen, dtype=f64, requires_grad=True)
    coupling = torch.rand(3, 5, generator=gen, dtype=f64, requires_grad=True)
    prototype_calibration(feats, resp, means_j, coupling).backward()
    for t in (feats, resp, means_j, coupling):
        assert torch.isfinite(t.grad).all() and t.grad.abs().sum() > 0
    with pytest.raises(MsalignError):
        prototype_calibration(feats, resp, means_j)  # index reading needs K_i == K_j


def test_prototype_loss_averages_ordered_pairs():
    gen = torch.Generator().manual_seed(7)
    sizes = (3, 4, 2)
    feats = [torch.randn(6, 2, generator=gen, dtype=f64) for _ in sizes]
    resp = [_posteriors(6, k, gen) for k in sizes]
    means = [torch.randn(k, 2, generator=gen, dtype=f64) for k in sizes]
    plan = torch.rand(*sizes, generator=gen, dtype=f64)
    plan = plan / plan.sum()
    pairs = [(i, j) for i in range(3) for j in range(3) if i != j]
    expected = sum(prototype_calibration(feats[i], resp[i], means[j], pairwise_plan(plan, i, j)) for i, j in pairs) / 6
    torch.testing.assert_close(prototype_loss(feats, resp, means, plan), expected)
    cost = torch.rand(*sizes, generator=gen, dtype=f64)
    torch.testing.assert_close(heterogeneity_loss(cost, plan, feats, resp, means), ot_loss(cost, plan) + expected)


def test_full_heterogeneity_chain_is_differentiable():
    """GMM prototypes -> Bures costs -> joint cost -> Sinkhorn -> eq. 9, gradients to the features."""
    gen = torch.Generator().manual_seed(8)
    feats = [(torch.randn(16, 4, generator=gen) + m).requires_grad_() for m in range(3)]
    gmms = [fit_gmm(f, 3) for f in feats]
    pair = {
        (i, j): pairwise_prototype_cost(gmms[i].means, gmms[i].covs, gmms[j].means, gmms[j].covs, "mean")
        for i in range(3)
        for j in range(i + 1, 3)
    }
    cost = joint_cost(pair, 3)
    plan = multimarginal_sinkhorn(
        cost, [g.responsibilities.mean(0) for g in gmms], 0.1, max_iter=100, epsilon_scaling=0.5
    )
    loss = heterogeneity_loss(cost, plan, feats, [g.responsibilities for g in gmms], [g.means for g in gmms])
    loss.backward()
    assert torch.isfinite(loss)
    for f in feats:
        assert torch.isfinite(f.grad).all() and f.grad.abs().sum() > 0


# ----------------------------------------------------------------------------- batched over modality pairs


@pytest.mark.parametrize("mode", ["plan", "expected", "index"])
@pytest.mark.parametrize("with_plan", [True, False])
def test_prototype_loss_batched_over_pairs_equals_pair_by_pair(mode, with_plan):
    """Equally shaped modalities take the all-pairs path: prototype_calibration pair by pair, values and gradients."""
    gen = torch.Generator().manual_seed(12)
    k = 3
    feats = [torch.randn(6, 2, generator=gen, dtype=f64).requires_grad_() for _ in range(3)]
    resp = [_posteriors(6, k, gen).requires_grad_() for _ in range(3)]
    means = [torch.randn(k, 2, generator=gen, dtype=f64).requires_grad_() for _ in range(3)]
    plan = torch.rand(k, k, k, generator=gen, dtype=f64)
    plan = plan / plan.sum() if with_plan else None
    pairs = [(i, j) for i in range(3) for j in range(3) if i != j]
    want = sum(
        prototype_calibration(
            feats[i], resp[i], means[j], None if plan is None else pairwise_plan(plan, i, j), mode=mode
        )
        for i, j in pairs
    ) / len(pairs)
    got = prototype_loss(feats, resp, means, plan, mode=mode)
    torch.testing.assert_close(got, want)
    inputs = feats + resp + means
    for g, w in zip(torch.autograd.grad(got, inputs), torch.autograd.grad(want, inputs), strict=True):
        torch.testing.assert_close(g, w)

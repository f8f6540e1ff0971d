"""Property-based numerical robustness of the alignment losses (hypothesis).

Inputs are extreme on purpose: constant features, duplicated samples, batches of 1 or 2, scales of
1e-6 and 1e6, all-zero (padding-only) rows. Every loss must give finite values AND finite
gradients. Also: training DecAlign and DashFusion with one modality all zeros gives no NaN.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from msalign.losses import (
    bures_wasserstein,
    fit_gmm,
    joint_cost,
    mean_cov_skew,
    mmd,
    moment_matching,
    multimarginal_sinkhorn,
    ot_loss,
    pairwise_mmd,
    pairwise_prototype_cost,
    prototype_loss,
)
from msalign.losses.contrastive import (
    label_classes,
    mine_candidates,
    nt_xent,
    semantic_alignment_loss,
)

SETTINGS = settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
KINDS = ("random", "constant", "duplicates", "zeros", "some_zero_rows", "one_hot", "two_points")
SCALES = (1e-6, 1.0, 1e6)


def _make(kind: str, n: int, d: int, scale: float, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=gen)
    if kind == "constant":
        x = x[:1].expand(n, d).clone()
    elif kind == "duplicates":
        x = x[torch.arange(n) % max(1, n // 2)]
    elif kind == "zeros":  # pooled features of padding-only rows
        x = torch.zeros(n, d)
    elif kind == "some_zero_rows":
        x[::2] = 0
    elif kind == "one_hot":
        x = torch.zeros(n, d)
        x[torch.arange(n), torch.arange(n) % d] = 1
    elif kind == "two_points":
        x = torch.where(torch.arange(n)[:, None] % 2 == 0, x[:1], -x[:1])
    return (x * scale).float()


@st.composite
def batches(draw, count: int = 1, min_n: int = 1, max_n: int = 6, same_n: bool = False):
    """``count`` (N, D) float32 tensors with a shared D, each of an extreme kind and scale."""
    d = draw(st.sampled_from([1, 2, 3, 8]))
    n0 = draw(st.integers(min_n, max_n))
    out = []
    for _ in range(count):
        n = n0 if same_n else draw(st.integers(min_n, max_n))
        out.append(
            _make(draw(st.sampled_from(KINDS)), n, d, draw(st.sampled_from(SCALES)), draw(st.integers(0, 2**16)))
        )
    return out


def _finite(*tensors) -> bool:
    return all(bool(torch.isfinite(t).all()) for t in tensors)


def _grads(loss: torch.Tensor, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
    grads = torch.autograd.grad(loss, inputs, allow_unused=True)
    return [g if g is not None else torch.zeros(1) for g in grads]


def _leaves(xs):
    return [x.clone().requires_grad_(True) for x in xs]


@SETTINGS
@given(batches(count=1))
def test_mean_cov_skew_finite(xs):
    (x,) = _leaves(xs)
    mu, cov, skew = mean_cov_skew(x)
    assert _finite(mu, cov, skew)
    assert skew.abs().max() <= math.sqrt(x.shape[0]) + 1e-3  # |skewness| <= sqrt(N) for population moments
    assert _finite(*_grads(mu.sum() + cov.sum() + skew.sum(), [x]))


@SETTINGS
@given(batches(count=3), st.sampled_from(["sum", "mean"]))
def test_moment_matching_finite(xs, reduction):
    xs = _leaves(xs)
    loss = moment_matching(xs, reduction=reduction)
    assert _finite(loss) and loss >= 0
    assert _finite(*_grads(loss, xs))


@SETTINGS
@given(batches(count=2), st.booleans(), st.sampled_from([None, 1.0]))
def test_mmd_finite(xs, unbiased, bandwidth):
    x, y = _leaves(xs)
    if unbiased and min(len(x), len(y)) < 2:
        return  # the unbiased estimator needs two samples per side (refused with a clear error)
    loss = mmd(x, y, bandwidths=bandwidth, unbiased=unbiased)
    assert _finite(loss)
    assert _finite(*_grads(loss, [x, y]))


@SETTINGS
@given(batches(count=3, same_n=True))
def test_pairwise_mmd_finite(xs):
    xs = _leaves(xs)
    loss = pairwise_mmd(xs)
    assert _finite(loss) and _finite(*_grads(loss, xs))


@SETTINGS
@given(batches(count=1), st.integers(1, 4), st.sampled_from(["diag", "full"]))
def test_fit_gmm_finite(xs, k, covariance):
    (x,) = _leaves(xs)
    gmm = fit_gmm(x, k, num_steps=3, covariance=covariance)
    assert _finite(gmm.means, gmm.covs, gmm.mixing, gmm.responsibilities)
    assert torch.allclose(gmm.responsibilities.sum(1), torch.ones(len(x)), atol=1e-4)
    loss = gmm.means.square().sum() + gmm.covs.sum() + gmm.responsibilities.square().sum()
    assert _finite(*_grads(loss, [x]))


@SETTINGS
@given(batches(count=2), st.booleans())
def test_bures_wasserstein_finite(xs, full):
    """Means and covariances of extreme batches: singular, zero, or huge covariance matrices."""
    x, y = _leaves(xs)
    (m1, c1, _), (m2, c2, _) = mean_cov_skew(x), mean_cov_skew(y)
    if not full:
        c1, c2 = c1.diagonal(), c2.diagonal()
    loss = bures_wasserstein(m1, c1, m2, c2)
    assert _finite(loss) and float(loss) >= -1e-3 * (1 + float(c1.abs().max() + c2.abs().max()))
    assert _finite(*_grads(loss, [x, y]))


@SETTINGS
@given(
    batches(count=3, min_n=1, max_n=5, same_n=True),
    st.integers(1, 3),
    st.sampled_from([0.01, 0.1, 1.0]),
    st.sampled_from(["diag", "full"]),
)
def test_decalign_prototype_transport_finite(xs, k, epsilon, covariance):
    """DecAlign's heterogeneity path end to end: GMMs -> Bures costs -> multi-marginal Sinkhorn -> losses."""
    xs = _leaves(xs)
    mixtures = [fit_gmm(x, k, num_steps=2, covariance=covariance) for x in xs]
    pairwise = {
        (i, j): pairwise_prototype_cost(
            mixtures[i].means, mixtures[i].covs, mixtures[j].means, mixtures[j].covs, reduction="mean"
        )
        for i, j in [(0, 1), (0, 2), (1, 2)]
    }
    cost = joint_cost(pairwise, 3)
    marginals = [g.responsibilities.mean(0).detach() for g in mixtures]
    with torch.no_grad():
        plan = multimarginal_sinkhorn(
            cost.detach(), marginals, epsilon, max_iter=100, tol=1e-5, epsilon_scaling=0.5, check_every=5
        )
    assert _finite(cost, plan) and abs(float(plan.sum()) - 1) < 1e-3 and float(plan.min()) >= 0
    loss = ot_loss(cost, plan) + prototype_loss(
        xs, [g.responsibilities for g in mixtures], [g.means for g in mixtures], plan=plan
    )
    assert _finite(loss) and _finite(*_grads(loss, xs))


@SETTINGS
@given(
    st.integers(2, 4), st.sampled_from(SCALES), st.sampled_from([1e-3, 0.1, 10.0]), st.integers(0, 2**16), st.booleans()
)
def test_sinkhorn_extreme_costs(k, scale, epsilon, seed, plain):
    """Costs spanning 1e-6 .. 1e6 (also constant), zero marginal entries, and both solvers."""
    gen = torch.Generator().manual_seed(seed)
    cost = torch.rand(k, k, k, generator=gen) * scale
    if seed % 3 == 0:
        cost = torch.full_like(cost, scale)
    marginals = [torch.rand(k, generator=gen) for _ in range(3)]
    marginals[0][0] = 0
    marginals = [m / m.sum() for m in marginals]
    plan = multimarginal_sinkhorn(cost, marginals, epsilon, max_iter=200, epsilon_scaling=None if plain else 0.5)
    assert _finite(plan) and abs(float(plan.sum()) - 1) < 1e-3
    assert float(plan[0].sum()) < 1e-6  # nothing transported from a zero-mass entry


@SETTINGS
@given(batches(count=2, min_n=1, max_n=5, same_n=True), st.sampled_from([0.07, 0.5]))
def test_semantic_alignment_finite(xs, temperature):
    text, other = _leaves(xs)
    loss = semantic_alignment_loss(text, other, temperature)
    assert _finite(loss) and _finite(*_grads(loss, [text, other]))


@SETTINGS
@given(batches(count=2, min_n=1, max_n=4), st.integers(1, 4), st.integers(0, 2**16))
def test_nt_xent_finite(xs, k, seed):
    anchors, pool = xs
    b, d = anchors.shape
    gen = torch.Generator().manual_seed(seed)
    candidates = pool[torch.randint(len(pool), (b * k,), generator=gen)].reshape(b, k, d)
    anchors, candidates = _leaves([anchors, candidates])
    positive = torch.rand(b, k, generator=gen) < 0.5
    valid = torch.rand(b, k, generator=gen) < 0.8
    loss = nt_xent(anchors, candidates, positive, valid=valid)
    assert _finite(loss) and _finite(*_grads(loss.sum(), [anchors, candidates]))


@SETTINGS
@given(batches(count=1, min_n=1, max_n=8), st.integers(1, 5), st.integers(0, 2**16))
def test_mine_candidates_well_formed(xs, pool, seed):
    (x,) = xs
    gen = torch.Generator().manual_seed(seed)
    classes = label_classes(torch.rand(len(x), generator=gen) * 6 - 3)
    pools = mine_candidates(x, classes, pool=pool)
    n = len(x)
    for index, valid, same in (
        (pools.positives, pools.positives_valid, True),
        (pools.hard, pools.hard_valid, False),
        (pools.easy, pools.easy_valid, False),
    ):
        assert index.shape == valid.shape == (n, pool)
        rows = torch.arange(n)[:, None].expand_as(index)
        chosen = index[valid]
        assert ((chosen >= 0) & (chosen < n)).all()
        assert (chosen != rows[valid]).all()  # never the anchor itself
        assert ((classes[chosen] == classes[rows[valid]]) == same).all()


# ---- training with one modality all zeros


@pytest.mark.parametrize("model", ["decalign", "dashfusion"])
def test_training_with_a_zero_modality_has_no_nan(model, tmp_path):
    from msalign.config import TrainConfig
    from msalign.data.synthetic import generate_synthetic
    from msalign.models import build_config
    from msalign.training import RunSpec, train

    dataset = generate_synthetic(n_train=64, n_valid=24, n_test=24)
    for split in dataset.splits.values():
        split.features["audio"][:] = 0  # no audio at all (e.g. a silent or missing track)
    results = train(
        RunSpec(model, build_config(model), TrainConfig(epochs=2, threads=1, batch_size=16), [1111], tmp_path),
        dataset,
        log=lambda line: None,
    )
    history = __import__("json").loads((tmp_path / "seed_1111" / "history.json").read_text())
    assert len(history) == 2
    for row in history:
        assert all(np.isfinite(v) for v in row.values()), row
    for split in ("valid", "test"):
        assert all(np.isfinite(v) for v in getattr(results.per_seed[0], split).values())

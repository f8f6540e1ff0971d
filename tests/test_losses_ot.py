"""Multi-marginal Sinkhorn, joint cost and plan marginalisation against POT / LP oracles."""

from __future__ import annotations

import itertools

import numpy as np
import ot
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import linprog

from msalign.errors import MsalignError
from msalign.losses import joint_cost, multimarginal_sinkhorn, ot_loss, pairwise_plan

f64 = torch.float64


def _simplex(k: int, gen: torch.Generator) -> torch.Tensor:
    p = torch.rand(k, generator=gen, dtype=f64) + 0.1
    return p / p.sum()


def _marginal(plan: torch.Tensor, axis: int) -> torch.Tensor:
    rest = tuple(a for a in range(plan.dim()) if a != axis)
    return plan.sum(dim=rest)


def _exact_mmot(cost: np.ndarray, marginals: list[np.ndarray]) -> float:
    """Exact multi-marginal OT value by linear programming over the K_1 x ... x K_M plan."""
    shape = cost.shape
    rows, rhs = [], []
    for axis, nu in enumerate(marginals):
        for k in range(shape[axis]):
            row = np.zeros(shape)
            index = [slice(None)] * len(shape)
            index[axis] = k
            row[tuple(index)] = 1.0
            rows.append(row.ravel())
            rhs.append(nu[k])
    res = linprog(cost.ravel(), A_eq=np.array(rows), b_eq=np.array(rhs), bounds=(0, None), method="highs")
    assert res.status == 0
    return float(res.fun)


def test_marginals_met_three_way():
    gen = torch.Generator().manual_seed(0)
    cost = torch.rand(3, 4, 5, generator=gen, dtype=f64)
    nus = [_simplex(k, gen) for k in cost.shape]
    plan, info = multimarginal_sinkhorn(cost, nus, 0.1, max_iter=5000, tol=1e-9, return_info=True)
    assert info.converged and info.marginal_error < 1e-9
    assert plan.shape == cost.shape and (plan >= 0).all()
    for axis, nu in enumerate(nus):
        torch.testing.assert_close(_marginal(plan, axis), nu, atol=1e-5, rtol=0)


@pytest.mark.parametrize("eps", [1.0, 0.1, 0.03])
def test_two_marginals_equal_pot(eps):
    gen = torch.Generator().manual_seed(1)
    cost = torch.rand(5, 4, generator=gen, dtype=f64)
    a, b = _simplex(5, gen), _simplex(4, gen)
    plan = multimarginal_sinkhorn(cost, [a, b], eps, max_iter=20000, tol=1e-12)
    # POT minimises <T, C> + reg * sum T (log T - 1): same minimiser as eq. 7 under the marginals
    expected = ot.sinkhorn(a.numpy(), b.numpy(), cost.numpy(), reg=eps, stopThr=1e-13, numItermax=100000)
    np.testing.assert_allclose(plan.numpy(), expected, atol=1e-9)


def test_small_epsilon_approaches_emd():
    gen = torch.Generator().manual_seed(2)
    cost = torch.rand(6, 5, generator=gen, dtype=f64)
    a, b = _simplex(6, gen), _simplex(5, gen)
    exact = ot.emd2(a.numpy(), b.numpy(), cost.numpy())
    gaps = []
    for eps in (1e-1, 1e-2, 1e-3):
        plan = multimarginal_sinkhorn(cost, [a, b], eps, max_iter=20000, tol=1e-10)
        gaps.append(ot_loss(cost, plan).item() - exact)
    assert gaps[0] > gaps[1] > gaps[2] >= -1e-8
    assert gaps[2] < 1e-3


def test_small_epsilon_approaches_lp_three_way():
    gen = torch.Generator().manual_seed(3)
    cost = torch.rand(3, 3, 3, generator=gen, dtype=f64)
    nus = [torch.full((3,), 1 / 3, dtype=f64)] * 3
    exact = _exact_mmot(cost.numpy(), [n.numpy() for n in nus])
    # brute force over pairs of permutations is only an upper bound (the 3-index assignment
    # polytope has fractional vertices), the LP is exact
    brute = min(
        sum(cost[k, p[k], q[k]].item() for k in range(3)) / 3
        for p in itertools.permutations(range(3))
        for q in itertools.permutations(range(3))
    )
    assert exact <= brute + 1e-12
    # plain sweeps crawl for M = 3 at small epsilon; epsilon scaling gets there quickly
    plan, info = multimarginal_sinkhorn(
        cost, nus, 1e-3, max_iter=5000, tol=1e-10, return_info=True, epsilon_scaling=0.5
    )
    assert info.converged
    value = ot_loss(cost, plan).item()
    assert exact - 1e-8 <= value < exact + 5e-3
    values = [
        ot_loss(cost, multimarginal_sinkhorn(cost, nus, eps, epsilon_scaling=0.5, tol=1e-9)).item()
        for eps in (0.3, 0.1, 0.03)
    ]
    assert values[0] > values[1] > values[2] > value - 1e-9


def test_epsilon_scaling_same_solution():
    gen = torch.Generator().manual_seed(9)
    cost = torch.rand(4, 3, 5, generator=gen, dtype=f64)
    nus = [_simplex(k, gen) for k in cost.shape]
    plain = multimarginal_sinkhorn(cost, nus, 0.05, max_iter=20000, tol=1e-11)
    scaled, info = multimarginal_sinkhorn(
        cost, nus, 0.05, max_iter=20000, tol=1e-11, return_info=True, epsilon_scaling=0.5
    )
    assert info.converged
    torch.testing.assert_close(scaled, plain, atol=1e-8, rtol=0)
    for budget in (1, 2, 30):  # the stages share max_iter, the target epsilon always gets sweeps
        _, info = multimarginal_sinkhorn(cost, nus, 1e-3, max_iter=budget, return_info=True, epsilon_scaling=0.5)
        assert 1 <= info.num_iter <= budget


def test_joint_cost_broadcast_sum():
    gen = torch.Generator().manual_seed(4)
    sizes = (2, 3, 4)
    pair = {(i, j): torch.rand(sizes[i], sizes[j], generator=gen, dtype=f64) for i, j in [(0, 1), (0, 2), (1, 2)]}
    cost = joint_cost(pair, 3)
    assert cost.shape == sizes
    for a, b, c in itertools.product(*map(range, sizes)):
        expected = pair[0, 1][a, b] + pair[0, 2][a, c] + pair[1, 2][b, c]
        assert torch.isclose(cost[a, b, c], expected)
    # reversed keys are transposed
    swapped = {(j, i): m.T for (i, j), m in pair.items()}
    torch.testing.assert_close(joint_cost(swapped, 3), cost)
    with pytest.raises(MsalignError):
        joint_cost({(0, 1): pair[0, 1]}, 3)  # modality 2 missing
    with pytest.raises(MsalignError):
        joint_cost({(0, 0): torch.zeros(2, 2)}, 2)


def test_pairwise_plan_marginalises():
    gen = torch.Generator().manual_seed(5)
    plan = torch.rand(2, 3, 4, 5, generator=gen, dtype=f64)
    torch.testing.assert_close(pairwise_plan(plan, 1, 3), plan.sum(dim=(0, 2)))
    torch.testing.assert_close(pairwise_plan(plan, 3, 1), plan.sum(dim=(0, 2)).T)
    torch.testing.assert_close(pairwise_plan(plan[0, 0], 0, 1), plan[0, 0])


def test_small_epsilon_large_cost_is_finite():
    gen = torch.Generator().manual_seed(6)
    cost = 100 * torch.rand(7, 7, 7, generator=gen)  # float32: exp(-C / eps) would underflow
    nus = [torch.full((7,), 1 / 7)] * 3
    plan = multimarginal_sinkhorn(cost, nus, 1e-3, max_iter=100)
    assert torch.isfinite(plan).all() and (plan >= 0).all()
    # logits of size C / eps ~ 1e5 leave float32 about 1e-2 of relative precision per entry
    torch.testing.assert_close(plan.sum(), torch.tensor(1.0), atol=1e-3, rtol=0)
    # in float64, with epsilon scaling, it also converges
    cost64 = cost.double()
    plan, info = multimarginal_sinkhorn(
        cost64, [n.double() for n in nus], 1e-3, max_iter=3000, tol=1e-6, epsilon_scaling=0.5, return_info=True
    )
    assert info.converged and torch.isfinite(plan).all()
    for axis in range(3):
        torch.testing.assert_close(_marginal(plan, axis), nus[axis].double(), atol=1e-5, rtol=0)


def test_four_marginals():
    gen = torch.Generator().manual_seed(7)
    sizes = (3, 4, 2, 3)
    pair = {
        (i, j): torch.rand(sizes[i], sizes[j], generator=gen, dtype=f64) for i, j in itertools.combinations(range(4), 2)
    }
    nus = [_simplex(k, gen) for k in sizes]
    plan, info = multimarginal_sinkhorn(joint_cost(pair, 4), nus, 0.1, max_iter=5000, tol=1e-8, return_info=True)
    assert info.converged and plan.shape == sizes
    for axis, nu in enumerate(nus):
        torch.testing.assert_close(_marginal(plan, axis), nu, atol=1e-5, rtol=0)


def test_gradients_finite_and_correct():
    gen = torch.Generator().manual_seed(8)
    cost = torch.rand(3, 4, 2, generator=gen, dtype=f64, requires_grad=True)
    nus = [torch.full((k,), 1 / k, dtype=f64) for k in cost.shape]
    plan = multimarginal_sinkhorn(cost, nus, 0.2, max_iter=2000, tol=1e-12)
    ot_loss(cost, plan).backward()
    assert torch.isfinite(cost.grad).all() and cost.grad.abs().sum() > 0
    # envelope theorem: d/dC of the entropic value is the plan
    cost.grad = None
    plan = multimarginal_sinkhorn(cost, nus, 0.2, max_iter=2000, tol=1e-12)
    value = ot_loss(cost, plan) + 0.2 * (plan * (plan.log() - 1)).sum()
    value.backward()
    torch.testing.assert_close(cost.grad, plan.detach(), atol=1e-8, rtol=1e-6)


def test_follows_dtype_and_validates():
    cost = torch.rand(3, 3, dtype=torch.float32)
    plan = multimarginal_sinkhorn(cost, [torch.full((3,), 1 / 3)] * 2, 0.1)
    assert plan.dtype == torch.float32 and plan.device == cost.device
    with pytest.raises(MsalignError):
        multimarginal_sinkhorn(cost, [torch.full((3,), 1 / 3)], 0.1)
    with pytest.raises(MsalignError):
        multimarginal_sinkhorn(cost, [torch.full((4,), 1 / 4)] * 2, 0.1)
    with pytest.raises(MsalignError):
        multimarginal_sinkhorn(cost, [torch.full((3,), 1 / 3)] * 2, 0.0)


@settings(max_examples=15, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 4), min_size=2, max_size=3),
    eps=st.sampled_from([0.05, 0.3, 1.0]),
    seed=st.integers(0, 2**16),
)
def test_marginals_property(sizes, eps, seed):
    gen = torch.Generator().manual_seed(seed)
    cost = torch.rand(*sizes, generator=gen, dtype=f64)
    nus = [_simplex(k, gen) for k in sizes]
    plan = multimarginal_sinkhorn(cost, nus, eps, max_iter=20000, tol=1e-8)
    for axis, nu in enumerate(nus):
        torch.testing.assert_close(_marginal(plan, axis), nu, atol=1e-5, rtol=0)


def test_check_every_only_changes_when_convergence_is_tested():
    gen = torch.Generator().manual_seed(10)
    cost = torch.rand(3, 4, 3, generator=gen, dtype=f64)
    nus = [_simplex(k, gen) for k in cost.shape]
    every, info1 = multimarginal_sinkhorn(cost, nus, 0.1, tol=1e-10, return_info=True)
    sparse, info10 = multimarginal_sinkhorn(cost, nus, 0.1, tol=1e-10, return_info=True, check_every=10)
    assert info10.converged and info10.num_iter % 10 == 0 and info1.num_iter <= info10.num_iter < info1.num_iter + 10
    torch.testing.assert_close(sparse, every, atol=1e-9, rtol=0)
    _, capped = multimarginal_sinkhorn(cost, nus, 0.1, max_iter=7, tol=0.0, return_info=True, check_every=5)
    assert capped.num_iter == 7 and not capped.converged and np.isfinite(capped.marginal_error)

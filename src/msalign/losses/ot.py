"""Entropic multi-marginal optimal transport between prototype sets (DecAlign eq. 5, 7-9).

Functional API in the style of POT: plain tensors in, tensors out, no state. Everything follows
the dtype and device of ``cost``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal, NamedTuple, overload

import torch
from torch import Tensor

from msalign.errors import MsalignError

__all__ = ["SinkhornInfo", "joint_cost", "multimarginal_sinkhorn", "ot_loss", "pairwise_plan", "transport_cost"]


class SinkhornInfo(NamedTuple):
    potentials: list[Tensor]  # dual potentials f_i, (K_i,) each, in cost units
    num_iter: int  # sweeps run (one sweep updates all M potentials)
    marginal_error: float  # max_i max_k |sum_{-i} T - nu_i|, each measured before f_i's update, last check
    converged: bool  # marginal_error < tol


STAGE_TOL = 1e-3  # marginal violation at which an intermediate epsilon-scaling stage stops


def _along(v: Tensor, axis: int, ndim: int) -> Tensor:
    """View a vector so it broadcasts along ``axis`` of an ``ndim``-way tensor."""
    shape = [1] * ndim
    shape[axis] = -1
    return v.reshape(shape)


def _log_kernel(cost: Tensor, potentials: Sequence[Tensor], epsilon: float, skip: int = -1) -> Tensor:
    """(sum_{i != skip} f_i(k_i) - C(k)) / epsilon, the log of the (partial) scaled plan."""
    total = -cost
    for axis, f in enumerate(potentials):
        if axis != skip:
            total = total + _along(f, axis, cost.dim())
    return total / epsilon


def _sinkhorn_sweeps(
    cost: Tensor,
    nus: list[Tensor],
    log_nus: list[Tensor],
    potentials: list[Tensor],
    epsilon: float,
    max_iter: int,
    tol: float,
    check_every: int,
) -> tuple[list[Tensor], int, float]:
    """Log-domain block-coordinate ascent on the dual; returns (potentials, sweeps, error).

    Works with the scaled potentials g_i = f_i / epsilon. Before g_i is updated, the current
    plan's i-th marginal is ``exp(g_i + logsumexp(...))`` with the very logsumexp the update
    needs, so the violation of every marginal comes almost for free; ``error`` is the largest
    of them over the last checked sweep.
    """
    num = cost.dim()
    others = [tuple(a for a in range(num) if a != axis) for axis in range(num)]
    neg_cost = cost / -epsilon
    scaled = [f / epsilon for f in potentials]
    error, sweeps = float("inf"), 0
    for sweeps in range(1, max_iter + 1):
        check = sweeps % check_every == 0 or sweeps == max_iter
        violations = []
        for axis in range(num):
            log_partial = neg_cost
            for other in others[axis]:
                log_partial = log_partial + _along(scaled[other], other, num)
            lse = torch.logsumexp(log_partial, dim=others[axis])
            if check:
                violations.append(((scaled[axis] + lse).detach().exp() - nus[axis].detach()).abs().max())
            scaled[axis] = log_nus[axis] - lse
        if check:
            error = torch.stack(violations).max().item()
            if error < tol:
                break
    return [g * epsilon for g in scaled], sweeps, error


@overload
def multimarginal_sinkhorn(
    cost: Tensor,
    marginals: Sequence[Tensor],
    epsilon: float,
    max_iter: int = ...,
    tol: float = ...,
    return_info: Literal[False] = ...,
    epsilon_scaling: float | None = ...,
    check_every: int = ...,
) -> Tensor: ...


@overload
def multimarginal_sinkhorn(
    cost: Tensor,
    marginals: Sequence[Tensor],
    epsilon: float,
    max_iter: int = ...,
    tol: float = ...,
    *,
    return_info: Literal[True],
    epsilon_scaling: float | None = ...,
    check_every: int = ...,
) -> tuple[Tensor, SinkhornInfo]: ...


def multimarginal_sinkhorn(
    cost: Tensor,
    marginals: Sequence[Tensor],
    epsilon: float,
    max_iter: int = 1000,
    tol: float = 1e-6,
    return_info: bool = False,
    epsilon_scaling: float | None = None,
    check_every: int = 1,
) -> Tensor | tuple[Tensor, SinkhornInfo]:
    """Entropic multi-marginal OT plan T* (DecAlign eq. 7 under the constraints of eq. 8).

    Solves ``min_T <T, C> + epsilon * sum_k T(k) (log T(k) - 1)`` subject to every one-way
    marginal of T equalling ``marginals[i]``. Under the constraints ``sum T = 1``, so the
    ``- 1`` changes the objective by a constant: the minimiser is the one of eq. 7 (lambda =
    epsilon) and, for M = 2, the one of POT's ``ot.sinkhorn(a, b, C, reg=epsilon)``.

    The solution has the form ``T(k) = exp((sum_i f_i(k_i) - C(k)) / epsilon)``. Each sweep
    updates the M dual potentials in turn by block-coordinate ascent,
    ``f_i <- epsilon * (log nu_i - logsumexp_{k_j, j != i} (sum_{j != i} f_j - C) / epsilon)``,
    entirely in the log domain, so nothing underflows even for tiny epsilon (the kernel
    ``exp(-C / epsilon)`` is never formed). Each marginal's violation is measured just before
    its potential is updated (it falls out of the same logsumexp); iteration stops once the
    largest violation of a sweep is below ``tol``. The returned plan meets the last marginal
    exactly and the others to about that violation.

    When epsilon is small compared with the spread of the costs, plain sweeps can need many
    thousands of iterations (more so for M >= 3). ``epsilon_scaling=q`` (0 < q < 1) anneals
    instead: it solves for epsilon_t = max(epsilon, r q^t), r = max C - min C, warm-starting
    each stage from the previous potentials. Intermediate stages stop at a violation of
    max(tol, 1e-3) and share at most half of ``max_iter``; the total never exceeds ``max_iter``.

    Args:
        cost: (K_1, ..., K_M) joint cost, M >= 2 (e.g. from :func:`joint_cost`).
        marginals: M probability vectors, the i-th of length K_i (eq. 8's nu_i). Zero entries
            are clamped to the smallest positive float so the logs stay finite.
        epsilon: entropic regularisation (> 0), in cost units.
        max_iter: maximum number of sweeps (one sweep updates all M potentials).
        tol: stopping threshold on the max absolute marginal violation.
        return_info: also return a :class:`SinkhornInfo`.
        epsilon_scaling: annealing factor in (0, 1), or None for plain sweeps at ``epsilon``.
        check_every: test for convergence only every this many sweeps (and at the last one);
            each test costs a few small ops and, on a GPU, a host sync.

    Returns:
        The plan, shaped like ``cost`` (and the info when asked).

    Gradients: autograd differentiates through the unrolled iterations (w.r.t. ``cost`` and the
    marginals), which is exact for the iterate returned and cheap for prototype-sized problems.
    For the gradient of the regularised OT *value* alone, the envelope theorem gives
    d OT_eps / dC = T*: solve under ``torch.no_grad()`` (about half the time, no graph kept)
    and use ``ot_loss(cost, plan)`` with that detached plan.
    """
    num = cost.dim()
    if num < 2 or len(marginals) != num:
        raise MsalignError(
            f"multimarginal_sinkhorn needs an M-way cost (M >= 2) and M marginals; "
            f"got cost shape {tuple(cost.shape)} and {len(marginals)} marginals"
        )
    if epsilon <= 0:
        raise MsalignError(f"multimarginal_sinkhorn: epsilon must be > 0, got {epsilon}")
    if check_every < 1:
        raise MsalignError(f"multimarginal_sinkhorn: check_every must be >= 1, got {check_every}")
    if epsilon_scaling is not None and not 0 < epsilon_scaling < 1:
        raise MsalignError(f"multimarginal_sinkhorn: epsilon_scaling must be in (0, 1), got {epsilon_scaling}")
    # float64 inside: (f_i - C) / epsilon cancels terms of size |C| / epsilon (1e14 for features of
    # scale 1e6), far beyond float32's 7 digits; prototype-sized problems cost the same either way
    dtype = cost.dtype
    cost = cost.double()
    nus = [torch.as_tensor(nu, device=cost.device).to(torch.float64).reshape(-1) for nu in marginals]
    for axis, nu in enumerate(nus):
        if nu.numel() != cost.shape[axis]:
            raise MsalignError(
                f"multimarginal_sinkhorn: marginal {axis} has {nu.numel()} entries, "
                f"cost axis {axis} has {cost.shape[axis]}"
            )
    log_nus = [nu.clamp_min(torch.finfo(cost.dtype).tiny).log() for nu in nus]
    potentials = [cost.new_zeros(k) for k in cost.shape]

    schedule = [epsilon]
    if epsilon_scaling is not None:
        finite = cost.detach()[torch.isfinite(cost.detach())]
        current = (finite.max() - finite.min()).item() if finite.numel() else 0.0
        while current * epsilon_scaling > epsilon:
            current *= epsilon_scaling
            schedule.insert(-1, current)
    # intermediate stages only warm-start the next one: a loose tolerance and, together, at
    # most half of the sweep budget, so the target epsilon always keeps the other half
    stage_budget = max(1, max_iter // (2 * (len(schedule) - 1))) if len(schedule) > 1 else 0
    total, error = 0, float("inf")
    for eps in schedule[:-1]:
        if total + stage_budget > max_iter // 2:
            break
        potentials, sweeps, _ = _sinkhorn_sweeps(
            cost, nus, log_nus, potentials, eps, stage_budget, max(tol, STAGE_TOL), check_every
        )
        total += sweeps
    potentials, sweeps, error = _sinkhorn_sweeps(
        cost, nus, log_nus, potentials, epsilon, max(1, max_iter - total), tol, check_every
    )
    total += sweeps
    log_plan = _log_kernel(cost, potentials, epsilon)
    # exp(log_plan) sums to 1 up to the tolerance; normalising keeps it finite whatever the scale
    plan = torch.softmax(log_plan.reshape(-1), dim=0).reshape(log_plan.shape).to(dtype)
    if return_info:
        return plan, SinkhornInfo([f.to(dtype) for f in potentials], total, error, error < tol)
    return plan


def ot_loss(cost: Tensor, plan: Tensor) -> Tensor:
    """Transport cost ``<T*, C> = sum_k T*(k) C(k)`` (DecAlign eq. 9, first term, L_OT).

    Pass ``plan.detach()`` to treat the matching as fixed: the gradient w.r.t. ``cost`` is then
    T*, which by the envelope theorem is also the gradient of the entropic OT value.
    """
    if plan.shape != cost.shape:
        raise MsalignError(f"ot_loss: plan shape {tuple(plan.shape)} != cost shape {tuple(cost.shape)}")
    return (plan * cost).sum()


transport_cost = ot_loss


def joint_cost(pairwise: Mapping[tuple[int, int], Tensor], num_modalities: int) -> Tensor:
    """Joint multi-marginal cost ``C(k_1..k_M) = sum_{i<j} C_ij(k_i, k_j)`` (DecAlign eq. 5).

    The paper writes the sum over ``1 <= i <= j <= M``; a diagonal term C_ii(k_i, k_i) would
    compare a prototype with itself (zero under eq. 6) and, for a joint index, is not even a
    pairwise term, so only pairs i < j are summed. A key (j, i) with j > i is accepted and its
    matrix transposed. Pairs may be omitted (their cost is zero), but every modality must appear
    in at least one pair so its number of prototypes is known.

    Args:
        pairwise: {(i, j): (K_i, K_j) cost matrix}, e.g. from
            :func:`msalign.losses.gaussian.pairwise_prototype_cost`.
        num_modalities: M.

    Returns:
        (K_1, ..., K_M) tensor, built by broadcasting (no loops over prototype indices).
    """
    sizes: dict[int, int] = {}
    seen: set[tuple[int, int]] = set()
    terms: list[tuple[int, int, Tensor]] = []
    for (i, j), matrix in pairwise.items():
        if matrix.dim() != 2:
            raise MsalignError(f"joint_cost: pair ({i}, {j}) cost must be 2-D, got shape {tuple(matrix.shape)}")
        if i == j or not (0 <= i < num_modalities and 0 <= j < num_modalities):
            raise MsalignError(f"joint_cost: bad pair ({i}, {j}) for {num_modalities} modalities")
        if i > j:
            i, j, matrix = j, i, matrix.mT
        if (i, j) in seen:
            raise MsalignError(f"joint_cost: pair ({i}, {j}) given twice")
        seen.add((i, j))
        for axis, size in ((i, matrix.shape[0]), (j, matrix.shape[1])):
            if sizes.setdefault(axis, size) != size:
                raise MsalignError(
                    f"joint_cost: modality {axis} has {sizes[axis]} prototypes in one pair and {size} in another"
                )
        terms.append((i, j, matrix))
    missing = sorted(set(range(num_modalities)) - sizes.keys())
    if missing:
        raise MsalignError(f"joint_cost: modalities {missing} appear in no pair")
    total: Tensor | None = None
    for i, j, matrix in terms:
        shape = [1] * num_modalities
        shape[i], shape[j] = matrix.shape
        view = matrix.reshape(shape)
        total = view if total is None else total + view
    assert total is not None
    return total.expand([sizes[a] for a in range(num_modalities)])


def pairwise_plan(plan: Tensor, i: int, j: int) -> Tensor:
    """The (K_i, K_j) coupling between modalities i and j: the joint plan summed over the others.

    Rows follow modality i, so ``pairwise_plan(T, j, i) == pairwise_plan(T, i, j).T``.
    """
    num = plan.dim()
    if i == j or not (0 <= i < num and 0 <= j < num):
        raise MsalignError(f"pairwise_plan: bad pair ({i}, {j}) for a {num}-way plan")
    rest = tuple(a for a in range(num) if a not in (i, j))
    coupling = plan.sum(dim=rest) if rest else plan
    return coupling if i < j else coupling.mT

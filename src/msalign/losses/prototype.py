"""Sample-to-prototype calibration and the heterogeneity loss (DecAlign eq. 9).

Eq. 9's second term, ``(1/N) sum_n sum_k w_i^n(k) ||F_i^n - mu_{j != i}^k||^2``, does not say how
component k of modality i corresponds to a prototype of modality j: the GMMs of different
modalities are fitted independently, so their component indices are arbitrary and "the same k"
carries no meaning. The multi-marginal plan of eq. 7 is exactly the correspondence that
eq. 9's first term optimises, so by default it is used for the matching ("plan" reading); the
equal-index reading of the official code is available as ``mode="index"``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor

from msalign.errors import MsalignError
from msalign.losses.ot import ot_loss, pairwise_plan

__all__ = ["heterogeneity_loss", "prototype_calibration", "prototype_loss"]

Mode = Literal["plan", "expected", "index"]


def prototype_calibration(
    features_i: Tensor,
    responsibilities_i: Tensor,
    means_j: Tensor,
    coupling_ij: Tensor | None = None,
    mode: Mode = "plan",
) -> Tensor:
    """L_Proto for one ordered pair (source i, target j) (DecAlign eq. 9, second term).

    ``(1/N) sum_n sum_k w_i^n(k) ||F_i^n - t_k||^2``, where the target t_k of source component k
    depends on ``mode``:

    * "plan" (default): the barycentric projection of the i-j coupling P,
      ``t_k = sum_l P(k, l) mu_j^l / sum_l P(k, l)``: where the plan sends component k.
    * "expected": the expected squared distance ``sum_l P(l | k) ||F_i^n - mu_j^l||^2`` instead.
      It equals the "plan" loss plus ``sum_k wbar_k Var_{l ~ P(.|k)}(mu_j^l)``, a term without
      the features (same gradient for them) that is positive even for perfectly aligned
      modalities, grows with the entropic blur of the plan, and only pulls the target
      prototypes matched to one source prototype onto each other. Hence "plan" is the default:
      it is zero exactly when every sample sits on its matched target, and it is the standard
      way to turn an (entropic) OT plan into a map (Courty et al. 2017; Seguy et al. 2018).
    * "index" (also whenever ``coupling_ij`` is None): ``t_k = mu_j^k``, the equal-index reading
      of the official code (needs K_i == K_j).

    With a permutation coupling all three readings give the index reading on permuted target
    prototypes. Gradients flow to the features, posteriors, target means and coupling; pass
    ``coupling_ij.detach()`` to keep the matching fixed.

    Args:
        features_i: (N, D) source features F_i^n (e.g. the pooled unique features).
        responsibilities_i: (N, K_i) posteriors w_i^n(k) of the source GMM (eq. 3).
        means_j: (K_j, D) target prototypes mu_j.
        coupling_ij: (K_i, K_j) coupling, e.g. ``pairwise_plan(plan, i, j)``, or None.
        mode: "plan", "expected" or "index".
    """
    if features_i.dim() != 2 or responsibilities_i.dim() != 2 or means_j.dim() != 2:
        raise MsalignError("prototype_calibration needs (N, D) features, (N, K_i) posteriors, (K_j, D) means")
    num_i = responsibilities_i.shape[1]
    if responsibilities_i.shape[0] != features_i.shape[0] or means_j.shape[1] != features_i.shape[1]:
        raise MsalignError(
            f"prototype_calibration: shapes do not match: features {tuple(features_i.shape)}, "
            f"posteriors {tuple(responsibilities_i.shape)}, means {tuple(means_j.shape)}"
        )
    if mode not in ("plan", "expected", "index"):
        raise MsalignError(f"prototype_calibration: mode must be 'plan', 'expected' or 'index', got {mode!r}")
    if coupling_ij is None or mode == "index":
        if means_j.shape[0] != num_i:
            raise MsalignError(
                f"prototype_calibration: the index reading needs K_i == K_j, got {num_i} and {means_j.shape[0]}"
            )
        targets = means_j
    else:
        if coupling_ij.shape != (num_i, means_j.shape[0]):
            raise MsalignError(
                f"prototype_calibration: coupling shape {tuple(coupling_ij.shape)} != ({num_i}, {means_j.shape[0]})"
            )
        conditional = coupling_ij / coupling_ij.sum(-1, keepdim=True).clamp_min(torch.finfo(coupling_ij.dtype).tiny)
        if mode == "expected":
            dist = (features_i[:, None] - means_j[None]).square().sum(-1)  # (N, K_j)
            return (responsibilities_i * (dist @ conditional.mT)).sum(-1).mean()
        targets = conditional @ means_j
    dist = (features_i[:, None] - targets[None]).square().sum(-1)  # (N, K_i)
    return (responsibilities_i * dist).sum(-1).mean()


def prototype_loss(
    features: Sequence[Tensor],
    responsibilities: Sequence[Tensor],
    means: Sequence[Tensor],
    plan: Tensor | None = None,
    mode: Mode = "plan",
) -> Tensor:
    """Eq. 9's L_Proto averaged over all M (M - 1) ordered modality pairs i != j.

    Args:
        features: M tensors (N, D); responsibilities: M tensors (N, K_m); means: M tensors (K_m, D).
        plan: the joint (K_1, ..., K_M) plan of :func:`multimarginal_sinkhorn`; each pair uses
            ``pairwise_plan(plan, i, j)``. None gives the index reading.
        mode: see :func:`prototype_calibration`.
    """
    num = len(features)
    if num < 2 or len(responsibilities) != num or len(means) != num:
        raise MsalignError("prototype_loss needs M >= 2 modalities and one posterior / mean set per modality")
    if plan is not None and plan.dim() != num:
        raise MsalignError(f"prototype_loss: the plan has {plan.dim()} axes for {num} modalities")
    if (
        num > 2
        and mode in ("plan", "expected", "index")
        and all(
            len({tuple(t.shape) for t in ts}) == 1 and ts[0].dim() == 2 for ts in (features, responsibilities, means)
        )
        and responsibilities[0].shape == (features[0].shape[0], means[0].shape[0])
        and means[0].shape[1] == features[0].shape[1]
    ):
        return _all_pairs_prototype_loss(features, responsibilities, means, plan, mode)
    terms = [
        prototype_calibration(
            features[i], responsibilities[i], means[j], None if plan is None else pairwise_plan(plan, i, j), mode
        )
        for i in range(num)
        for j in range(num)
        if i != j
    ]
    return torch.stack(terms).mean()


def _all_pairs_prototype_loss(
    features: Sequence[Tensor],
    responsibilities: Sequence[Tensor],
    means: Sequence[Tensor],
    plan: Tensor | None,
    mode: Mode,
) -> Tensor:
    """:func:`prototype_loss` for equally shaped modalities, every ordered pair at once: the
    :func:`prototype_calibration` terms batched over pairs, the same value."""
    num = len(features)
    pairs = [(i, j) for i in range(num) for j in range(num) if i != j]
    device = features[0].device
    source = torch.tensor([i for i, _ in pairs], device=device)
    target = torch.tensor([j for _, j in pairs], device=device)
    feats, posteriors = torch.stack(list(features))[source], torch.stack(list(responsibilities))[source]
    target_means = torch.stack(list(means))[target]  # (P, K, D)
    if plan is None or mode == "index":
        targets = target_means
    else:
        coupling = torch.stack([pairwise_plan(plan, i, j) for i, j in pairs])  # (P, K, K)
        conditional = coupling / coupling.sum(-1, keepdim=True).clamp_min(torch.finfo(coupling.dtype).tiny)
        if mode == "expected":
            dist = (feats[:, :, None] - target_means[:, None]).square().sum(-1)  # (P, N, K_j)
            return (posteriors * (dist @ conditional.mT)).sum(-1).mean(-1).mean()
        targets = conditional @ target_means
    dist = (feats[:, :, None] - targets[:, None]).square().sum(-1)  # (P, N, K_i)
    return (posteriors * dist).sum(-1).mean(-1).mean()


def heterogeneity_loss(
    cost: Tensor,
    plan: Tensor,
    features: Sequence[Tensor],
    responsibilities: Sequence[Tensor],
    means: Sequence[Tensor],
    mode: Mode = "plan",
) -> Tensor:
    """L_hete (DecAlign eq. 9) = ``<T*, C>`` + L_Proto averaged over ordered pairs.

    ``cost`` is the joint cost (eq. 5), ``plan`` its multi-marginal plan T* (eq. 7-8); the
    other arguments are as in :func:`prototype_loss` (the plan also provides the matching).
    """
    return ot_loss(cost, plan) + prototype_loss(features, responsibilities, means, plan, mode)

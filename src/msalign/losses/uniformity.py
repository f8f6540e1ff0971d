"""Batch-level uniformity regularisation (Wang & Isola, ICML 2020, Sec. 4.1, eq. for L_uniform).

``L_uniform(f; t) = log E_{x, y ~ p_data, x != y} [ exp(-t ||f(x) - f(y)||^2) ]`` over features
on the unit hypersphere. Estimated on a batch as the log of the mean Gaussian potential over the
``B(B-1)/2`` unordered pairs ``i < j`` of L2-normalised rows. It is at most 0 (every row equal)
and decreases as the rows spread over the sphere; its minimum for B points is reached by a
regular simplex (``||z_i - z_j||^2 = 2B / (B - 1)`` for every pair, when D >= B - 1).

The explicit-alignment paper (text-centric MSA, semantic token selection + uniformity) adds it
to the task loss so the pooled features of a batch stay dispersed while generated descriptions
pull many clips towards similar wording.

A pure function: no state, any device or dtype.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from msalign.errors import MsalignError

__all__ = ["uniformity_loss"]


def uniformity_loss(features: Tensor, t: float = 2.0, normalize: bool = True, eps: float = 1e-8) -> Tensor:
    """``log( mean_{i<j} exp(-t ||z_i - z_j||^2) )`` for ``features`` (B, D); z = L2-normalised rows.

    ``t`` is the temperature of the Gaussian potential (the paper's default 2); ``normalize=False``
    uses the rows as given (for features already on the sphere). Computed as a log-sum-exp over the
    upper triangle minus ``log(B(B-1)/2)``, so it stays finite for any spread. A batch of fewer
    than two rows has no pair: the loss is 0 (a constant, no gradient).
    """
    if features.dim() != 2:
        raise MsalignError(f"uniformity_loss: features must be (B, D), got shape {tuple(features.shape)}")
    if t <= 0:
        raise MsalignError(f"uniformity_loss: temperature t must be positive, got {t}")
    n = features.shape[0]
    if n < 2:
        return features.sum() * 0.0
    z = F.normalize(features, dim=-1, eps=eps) if normalize else features
    # ||z_i - z_j||^2 from the Gram matrix (pdist's backward is NaN at zero distance; this is not)
    gram = z @ z.transpose(0, 1)
    norms = gram.diagonal()
    sq = (norms[:, None] + norms[None, :] - 2.0 * gram).clamp_min(0.0)
    i, j = torch.triu_indices(n, n, offset=1, device=features.device)
    return torch.logsumexp(-t * sq[i, j], dim=0) - math.log(n * (n - 1) / 2)

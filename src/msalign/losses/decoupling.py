"""Decoupling of modality-unique and modality-common features (DecAlign eq. 1)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor

from msalign.errors import MsalignError

__all__ = ["decoupling_loss"]

Features = Tensor | Sequence[Tensor] | Mapping[str, Tensor]
Masks = Tensor | Sequence[Tensor | None] | Mapping[str, Tensor] | None


def _one(unique: Tensor, common: Tensor, mask: Tensor | None, eps: float) -> Tensor:
    if unique.shape != common.shape or unique.dim() < 2:
        raise MsalignError(
            f"decoupling_loss: unique {tuple(unique.shape)} and common {tuple(common.shape)} "
            "must have one shape (B, [L,] D)"
        )
    if mask is None:
        mask = torch.ones(unique.shape[:-1], dtype=torch.bool, device=unique.device)
    if mask.shape != unique.shape[:-1]:
        raise MsalignError(
            f"decoupling_loss: mask shape {tuple(mask.shape)} != feature shape {tuple(unique.shape[:-1])}"
        )
    mask = mask.to(torch.bool)
    # masked_fill first: padded values (even NaN/inf) reach neither the value nor the gradient
    keep = mask.unsqueeze(-1)
    cosine = F.cosine_similarity(unique.masked_fill(~keep, 0), common.masked_fill(~keep, 0), dim=-1, eps=eps)
    squared = cosine.square().masked_fill(~mask, 0)
    return squared.sum() / mask.sum().clamp_min(1).to(squared.dtype)


def decoupling_loss(unique: Features, common: Features, mask: Masks = None, eps: float = 1e-8) -> Tensor:
    """L_dec (DecAlign eq. 1): squared cosine similarity between unique and common features.

    Per modality, ``cos^2(F_uni, F_com)`` at every real position, averaged over the real
    positions of the batch; summed over modalities (eq. 1's sum over m) when given lists or
    dicts. Eq. 1 writes the plain cosine, whose minimum (-1) *rewards* anti-parallel features,
    which are as entangled as parallel ones; the square is minimised exactly by orthogonality
    (as in the official code). Zero vectors give cosine 0.

    Args:
        unique, common: (B, L, D) or (B, D) tensors, or matching lists / dicts of them.
        mask: (B, L) (or (B,)) bool, True at real positions; None means all real. For lists or
            dicts: a matching list / dict, one tensor shared by all modalities, or None. Padded
            positions never influence the value or the gradient; a batch with no real position
            contributes 0.
    """
    if isinstance(unique, Tensor) and isinstance(common, Tensor):
        if mask is not None and not isinstance(mask, Tensor):
            raise MsalignError("decoupling_loss: a single feature tensor needs a single mask tensor")
        return _one(unique, common, mask, eps)
    if isinstance(unique, Mapping) and isinstance(common, Mapping):
        if unique.keys() != common.keys():
            raise MsalignError(f"decoupling_loss: modalities differ: {sorted(unique)} vs {sorted(common)}")
        keys = list(unique)
        pairs = [(unique[k], common[k]) for k in keys]
        # dict features take a dict of masks (a list here fails at indexing, as it always has)
        masks = [
            mask if mask is None or isinstance(mask, Tensor) else cast(Mapping[str, Tensor], mask)[k] for k in keys
        ]
    elif isinstance(unique, Sequence) and isinstance(common, Sequence):
        if len(unique) != len(common):
            raise MsalignError(f"decoupling_loss: {len(unique)} unique vs {len(common)} common tensors")
        pairs = list(zip(unique, common, strict=True))
        if mask is None or isinstance(mask, Tensor):  # one mask shared by every modality
            masks = [mask] * len(pairs)
        else:
            masks = list(cast(Sequence[Tensor | None], mask))
    else:
        raise MsalignError("decoupling_loss: unique and common must both be tensors, lists or dicts")
    if len(masks) != len(pairs) or not pairs:
        raise MsalignError("decoupling_loss: need one mask per modality and at least one modality")
    return torch.stack([_one(u, c, m, eps) for (u, c), m in zip(pairs, masks, strict=True)]).sum()

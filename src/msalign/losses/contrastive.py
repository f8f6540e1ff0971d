"""Contrastive losses and hard-negative mining of DashFusion (eq. 5 and 11, Sec. III-C/D).

* :func:`nt_xent_from_similarity` / :func:`nt_xent`: eq. 5 for any anchor-candidate layout.
* :func:`semantic_alignment_loss`: eq. 5 with text as the only anchor and the same clip's other
  modality as the positive (in-batch negatives), the semantic stream of dual-stream alignment.
* :func:`supervised_contrastive_loss`: eq. 5 over mined positives / negatives (Sec. III-D).
* :func:`mine_candidates` / :func:`draw_candidates`: the hard-negative sampler, vectorised and
  chunked (no N x N matrix held at once, no Python loop over samples).

All functions are pure: no state, any device or dtype.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from msalign.errors import MsalignError

__all__ = [
    "CandidatePools",
    "ContrastBatch",
    "MiningSpec",
    "draw_candidates",
    "label_classes",
    "mine_candidates",
    "nt_xent",
    "nt_xent_from_similarity",
    "semantic_alignment_loss",
    "supervised_contrastive_loss",
]


def nt_xent_from_similarity(
    similarity: Tensor, positive: Tensor, temperature: float = 0.5, valid: Tensor | None = None
) -> Tensor:
    """Per-anchor NT-Xent of eq. 5 from precomputed similarities.

    ``similarity``: (B, K) sim(a_i, k) for each anchor i and candidate k; ``positive``: (B, K) bool,
    the set P_i; ``valid``: (B, K) bool, P_i u N_i (default: every candidate). Returns (B,)
    ``l_i = sum_{p in P_i} -log( exp(s_ip / tau) / sum_{k in P_i u N_i} exp(s_ik / tau) )``;
    an anchor with no valid positive gets 0.
    """
    if similarity.shape != positive.shape or similarity.dim() != 2:
        raise MsalignError(
            f"nt_xent: similarity {tuple(similarity.shape)} and positive mask "
            f"{tuple(positive.shape)} must both be (B, K)"
        )
    if temperature <= 0:
        raise MsalignError(f"nt_xent: temperature must be positive, got {temperature}")
    if valid is None:
        valid = torch.ones_like(positive, dtype=torch.bool)
    positive = positive.bool() & valid.bool()
    logits = (similarity / temperature).masked_fill(~valid.bool(), float("-inf"))
    # rows with no valid candidate would be all -inf: give them a finite row, then drop them
    empty = ~valid.bool().any(dim=1, keepdim=True)
    log_prob = torch.log_softmax(logits.masked_fill(empty, 0.0), dim=1)
    return -(log_prob.masked_fill(~positive, 0.0)).sum(dim=1)


def nt_xent(
    anchors: Tensor,
    candidates: Tensor,
    positive: Tensor,
    temperature: float = 0.5,
    valid: Tensor | None = None,
    eps: float = 1e-8,
) -> Tensor:
    """Eq. 5 with cosine similarity: ``anchors`` (B, D), ``candidates`` (B, K, D); returns (B,)."""
    if (
        anchors.dim() != 2
        or candidates.dim() != 3
        or candidates.shape[0] != anchors.shape[0]
        or candidates.shape[2] != anchors.shape[1]
    ):
        raise MsalignError(
            f"nt_xent: anchors {tuple(anchors.shape)} must be (B, D) and candidates {tuple(candidates.shape)} (B, K, D)"
        )
    similarity = torch.einsum(
        "bd,bkd->bk", F.normalize(anchors, dim=-1, eps=eps), F.normalize(candidates, dim=-1, eps=eps)
    )
    return nt_xent_from_similarity(similarity, positive, temperature, valid)


def semantic_alignment_loss(text: Tensor, other: Tensor, temperature: float = 0.5, eps: float = 1e-8) -> Tensor:
    """Semantic alignment (eq. 5, Sec. III-C2): anchor = clip i's pooled text, positive = clip i's
    pooled ``other`` modality, negatives = the other clips' ``other`` features in the batch.

    Text is the only anchor (the paper's choice), so the loss is not symmetrised. (B, D) each;
    returns the mean over anchors (eq. 11). A batch of one has no negative: the loss is 0.
    """
    if text.shape != other.shape or text.dim() != 2:
        raise MsalignError(
            f"semantic_alignment_loss: text {tuple(text.shape)} and other {tuple(other.shape)} must both be (B, D)"
        )
    similarity = F.normalize(text, dim=-1, eps=eps) @ F.normalize(other, dim=-1, eps=eps).T
    positive = torch.eye(len(text), dtype=torch.bool, device=text.device)
    return nt_xent_from_similarity(similarity, positive, temperature).mean()


def supervised_contrastive_loss(
    anchors: Tensor, candidates: Tensor, positive: Tensor, valid: Tensor, temperature: float = 0.5
) -> Tensor:
    """Supervised contrastive learning with mined samples (eq. 5 and 11, Sec. III-D).

    ``anchors`` (B, D); ``candidates`` (B, K, D) the same representation of the mined samples
    (positives and hard / easy negatives); ``positive``, ``valid`` (B, K) bool. Mean over anchors.
    """
    return nt_xent(anchors, candidates, positive, temperature, valid).mean()


def label_classes(labels: Tensor, task: str = "regression") -> Tensor:
    """Classes for supervised contrast: class indices as given, regression scores rounded to the
    nearest integer (MOSI / MOSEI's -3..3; CH-SIMS's [-1, 1] gives -1 / 0 / 1), as the paper's
    code does for MOSI / MOSEI."""
    if task == "classification":
        return labels.long()
    return torch.round(labels.float()).long()


@dataclass
class CandidatePools:
    """Per training sample, the indices of its candidate positives, hard and easy negatives.

    Each pool is (N, pool) long, ordered by rank (most similar first for ``positives`` and
    ``hard``, least similar first for ``easy``); ``*_valid`` (N, pool) bool marks real entries
    (a class with too few members leaves some empty).
    """

    positives: Tensor
    positives_valid: Tensor
    hard: Tensor
    hard_valid: Tensor
    easy: Tensor
    easy_valid: Tensor


def _ranked(scores: Tensor, allowed: Tensor, pool: int) -> tuple[Tensor, Tensor]:
    k = min(pool, scores.shape[1])
    values, index = scores.masked_fill(~allowed, float("-inf")).topk(k, dim=1)
    valid = torch.isfinite(values)
    if k < pool:  # fewer samples than the pool: pad with invalid entries
        pad = pool - k
        index = torch.cat([index, index.new_zeros(len(index), pad)], dim=1)
        valid = torch.cat([valid, valid.new_zeros(len(valid), pad)], dim=1)
    return index, valid


def mine_candidates(
    embeddings: Tensor, classes: Tensor, pool: int = 10, chunk: int = 2048, eps: float = 1e-8
) -> CandidatePools:
    """The candidate pools of the hard-negative sampler (Sec. III-D), from cosine similarities
    over the whole training set.

    For sample i: ``positives`` = the ``pool`` most similar samples of i's class (i excluded),
    ``hard`` = the ``pool`` most similar samples of another class, ``easy`` = the ``pool`` least
    similar samples of another class. Rows are processed ``chunk`` at a time, so memory is
    O(chunk x N), never N x N. (The public sampler stored rank positions instead of sample
    indices, so its "neighbours" were always the first / last rows; here indices are returned.)
    """
    if embeddings.dim() != 2 or classes.shape != embeddings.shape[:1]:
        raise MsalignError(
            f"mine_candidates: embeddings {tuple(embeddings.shape)} must be (N, D) and classes "
            f"{tuple(classes.shape)} (N,)"
        )
    if pool < 1:
        raise MsalignError(f"mine_candidates: pool must be >= 1, got {pool}")
    normed = F.normalize(embeddings.float(), dim=-1, eps=eps)
    classes = classes.to(normed.device)
    count = len(normed)
    parts: dict[str, list[Tensor]] = {k: [] for k in ("p", "pv", "h", "hv", "e", "ev")}
    for start in range(0, count, chunk):
        rows = torch.arange(start, min(start + chunk, count), device=normed.device)
        similarity = normed[rows] @ normed.T  # (chunk, N)
        same = classes[rows, None] == classes[None, :]
        not_self = rows[:, None] != torch.arange(count, device=normed.device)[None, :]
        for key, scores, allowed in (
            ("p", similarity, same & not_self),
            ("h", similarity, ~same),
            ("e", -similarity, ~same),
        ):
            index, valid = _ranked(scores, allowed, pool)
            parts[key].append(index)
            parts[key + "v"].append(valid)
    joined = {k: torch.cat(v) for k, v in parts.items()}
    return CandidatePools(joined["p"], joined["pv"], joined["h"], joined["hv"], joined["e"], joined["ev"])


def draw_candidates(
    index: Tensor, valid: Tensor, count: int, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """Pick ``count`` entries per row uniformly at random among the valid ones of a pool.

    ``index``, ``valid``: (B, pool). Returns (B, count) indices and validity (a row with fewer
    valid entries than ``count`` returns them all and marks the rest invalid). Vectorised: random
    keys, invalid entries last, top-``count``.
    """
    if count > index.shape[1]:
        raise MsalignError(f"draw_candidates: cannot draw {count} from a pool of {index.shape[1]}")
    keys = torch.rand(index.shape, generator=generator, device=generator.device if generator else index.device)
    keys = keys.to(index.device).masked_fill(~valid, -1.0)
    picked = keys.topk(count, dim=1).indices
    return index.gather(1, picked), valid.gather(1, picked)


@dataclass
class MiningSpec:
    """What a model asks of the training loop's hard-negative sampler (Sec. III-D): per anchor
    ``positives`` same-class samples, ``hard`` similar and ``easy`` dissimilar other-class samples,
    drawn from pools of the ``pool`` best-ranked; similarities recomputed from the model's
    embeddings every ``refresh_every`` epochs."""

    positives: int = 2
    hard: int = 2
    easy: int = 2
    pool: int = 10
    refresh_every: int = 2

    @property
    def per_anchor(self) -> int:
        return self.positives + self.hard + self.easy


@dataclass
class ContrastBatch:
    """Mined samples for a batch of B anchors, K = ``MiningSpec.per_anchor`` each.

    ``features`` / ``masks``: the mined rows as a batch of B*K clips (anchor-major), like a normal
    batch; ``positive`` / ``valid``: (B, K) bool.
    """

    features: dict[str, Tensor]
    masks: dict[str, Tensor]
    positive: Tensor
    valid: Tensor

"""Per-group standardisation: z-score each clip with the statistics of its group (its speaker).

CMU-MOSI's folds are speaker-independent and a clip's ``video_id`` names its speaker; acoustic
functionals shift with the speaker (voice, microphone, room) more than with sentiment. Removing
each speaker's own mean and scale - cepstral mean and variance normalisation per speaker, as
speech recognition does - leaves what varies WITHIN a speaker. The statistics come from the
features alone, never the labels, so they are computed for a new speaker's clips at test and
predict time just as for the training speakers.

Small groups: a group of one clip has no usable mean or spread of its own (its de-meaned
features would be all zero). So each group's statistics are a MAP estimate that shrinks toward
a prior fitted on the training split, with a relevance factor ``strength`` = kappa counted in
clips (as in MAP adaptation of speaker models, Reynolds et al. 2000):

    mean_g = (n_g * m_g + kappa * mu_0) / (n_g + kappa)
    var_g  = (n_g * v_g + kappa * s2_0) / (n_g + kappa)
    z      = (x - mean_g) / sqrt(var_g)

with ``n_g`` the group's clip count, ``m_g`` / ``v_g`` the mean and (biased) variance over its
real positions, ``mu_0`` the training split's mean and ``s2_0`` its pooled WITHIN-group
variance (the spread a group's own ``v_g`` estimates). A large group uses essentially its own
statistics; a single clip at predict time is z-scored by the training statistics, pulled toward
zero by sqrt(kappa / (1 + kappa)): it falls back to the training statistics smoothly, never to
a degenerate own std. Groups never span splits: a test group's statistics use only that test
group's clips (``load_feature_dir`` applies it split by split), so no split informs another's features.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np

from msalign.errors import MsalignError

DEFAULT_STRENGTH = 2.0  # kappa: a group of 2 clips weighs its own statistics and the prior equally


def _real(x: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """(N, L) True at real positions."""
    return np.arange(x.shape[1])[None, :] < np.asarray(lengths)[:, None]


def _group_moments(x: np.ndarray, lengths: np.ndarray, groups: Sequence[str]):
    """{group: (row indices, mean (D,), biased variance (D,), frame count)} over real positions."""
    real = _real(x, lengths)
    keys = np.asarray([str(g) for g in groups])
    out = {}
    for g in dict.fromkeys(keys.tolist()):
        rows = np.flatnonzero(keys == g)
        frames = x[rows][real[rows]].astype(np.float64)
        out[g] = (rows, frames.mean(axis=0), frames.var(axis=0), len(frames))
    return out


def fit_prior(x: np.ndarray, lengths: np.ndarray, groups: Sequence[str]) -> dict[str, list[float]]:
    """The training split's prior: mean over all real positions and pooled within-group variance."""
    moments = _group_moments(x, lengths, groups)
    frames = x[_real(x, lengths)].astype(np.float64)
    within = sum(var * count for _, _, var, count in moments.values()) / max(len(frames), 1)
    return {"mean": frames.mean(axis=0).tolist(), "var": np.asarray(within).tolist()}


def standardize_groups(
    x: np.ndarray,
    lengths: np.ndarray,
    groups: Sequence[str],
    prior: Mapping[str, Sequence[float]],
    strength: float = DEFAULT_STRENGTH,
) -> np.ndarray:
    """``x`` (N, L, D) z-scored per group in place (see the module docstring); padding stays zero."""
    mu0 = np.asarray(prior["mean"], dtype=np.float64)
    var0 = np.asarray(prior["var"], dtype=np.float64)
    if len(groups) != len(x):
        raise MsalignError(f"group standardisation: {len(groups)} group values for {len(x)} clips")
    real = _real(x, lengths)
    for rows, mean, var, _ in _group_moments(x, lengths, groups).values():
        n = len(rows)
        centre = (n * mean + strength * mu0) / (n + strength)
        spread = np.sqrt((n * var + strength * var0) / (n + strength))
        spread = np.where(spread > 1e-6, spread, 1.0)
        block = x[rows]
        block[real[rows]] = ((block[real[rows]] - centre) / spread).astype(x.dtype)
        x[rows] = block
    return x


def resolve_modalities(option: Literal[True] | Sequence[str], present: Sequence[str], source: str) -> list[str]:
    """True -> every loaded non-text modality (text features are not a speaker's voice); a list -> as named."""
    if option is True:
        return [m for m in present if m != "text"]
    names = [option] if isinstance(option, str) else list(option)
    for m in names:
        if m not in present:
            raise MsalignError(f"{source}: group_standardize: modality {m!r} is not loaded (have {list(present)})")
    return names


__all__ = ["DEFAULT_STRENGTH", "fit_prior", "resolve_modalities", "standardize_groups"]

"""Group context: each clip carries the mean of its group's clips (loader option ``group_context``,
``--group-context``).

Context-dependent utterance models (bc-LSTM, Poria et al. 2017) read a clip's sentiment together
with the other clips of its video. This is the simplest label-free form of that idea: for a
modality, every clip gets the mean over its group's clips (itself included) of each clip's mean
over its real positions, appended to every real position (padding stays zero), so the
modality's width doubles. The group is a label.csv column (``group_column``, default
``video_id``, as for group standardisation). Only features are read, never labels.

Where it is computed:

* the loader (:func:`msalign.data.feature_dir_loader.load_feature_dir`) works split by split, so groups
  never span splits and a test video's context uses only its own test clips;
* ``msalign predict`` treats the clips given to one call as one group (as it does for group
  standardisation): a single clip is its own context.

Where it comes among the loader's other feature transforms: :mod:`msalign.data.feature_transforms`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from msalign.errors import MsalignError


def clip_means(features: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """(N, D) float64: each clip's mean over its real positions (zero for a clip of length 0)."""
    steps = features.shape[1]
    real = np.arange(steps)[None, :] < np.asarray(lengths)[:, None]
    totals = np.where(real[:, :, None], features, 0.0).sum(axis=1, dtype=np.float64)
    return totals / np.maximum(real.sum(axis=1), 1)[:, None]


def append_group_context(features: np.ndarray, lengths: np.ndarray, groups: Sequence[str]) -> np.ndarray:
    """(N, L, 2D) float32: ``features`` (N, L, D) with, at every real position, the mean over the
    clip's group (``groups``: one value per clip, the clip itself included) of the clips' means over
    their real positions; zero at padding. Pure: ``features`` is not modified."""
    if len(groups) != len(features):
        raise MsalignError(f"group context: {len(groups)} group values for {len(features)} clips")
    means = clip_means(features, lengths)
    keys = np.asarray([str(g) for g in groups])
    context = np.zeros_like(means)
    for group in dict.fromkeys(keys.tolist()):
        rows = np.flatnonzero(keys == group)
        context[rows] = means[rows].mean(axis=0)
    steps = features.shape[1]
    real = np.arange(steps)[None, :] < np.asarray(lengths)[:, None]
    tiled = np.where(real[:, :, None], context[:, None, :], 0.0).astype(np.float32)
    return np.concatenate([features.astype(np.float32, copy=False), tiled], axis=2)


def resolve_modalities(option: bool | str | Sequence[str] | None, present: Sequence[str], source: str) -> list[str]:
    """True (or an empty list) -> ``["text"]``; a comma-separated string or a list -> those, each loaded."""
    if option is None or option is False:
        return []
    if option is True:
        names = ["text"]
    else:
        names = [m.strip() for m in option.split(",")] if isinstance(option, str) else [str(m) for m in option]
        names = list(dict.fromkeys(m for m in names if m)) or ["text"]
    for m in names:
        if m not in present:
            raise MsalignError(f"{source}: group_context: modality {m!r} is not loaded (have {list(present)})")
    return names


__all__ = ["append_group_context", "clip_means", "resolve_modalities"]

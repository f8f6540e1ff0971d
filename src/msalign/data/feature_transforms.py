"""The feature directory loader's feature transforms, and the one order they run in.

:func:`msalign.data.feature_dir_loader.load_feature_dir` makes a clip's features in this order:

1. ``text_lexicon``: the sentiment-lexicon descriptors (:mod:`msalign.data.lexicon`) of the clip's
   transcript (not of an appended description) are appended to every real position of its encoded
   text, as the text is encoded (before the rows are split);
2. ``group_standardize``: each clip z-scored with its group's statistics shrunk toward a training
   prior (:mod:`msalign.data.group_norm`), split by split;
3. ``group_context``: the mean of the clip's group appended to every real position
   (:mod:`msalign.data.group_context`), split by split: the context of group-standardised features;
4. ``standardize``: every channel (the context channels too) z-scored with the TRAIN split's statistics.

Steps 2-4 are :func:`transform_splits`; groups never span splits and no step reads a label.
``msalign predict`` makes new clips' features in the same order.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from msalign.data.group_context import append_group_context
from msalign.data.group_norm import DEFAULT_STRENGTH, fit_prior, resolve_modalities, standardize_groups
from msalign.data.types import Split
from msalign.data.validate import zero_padding
from msalign.errors import MsalignError

Standardize = bool | Sequence[str] | Mapping[str, Mapping[str, Sequence[float]]]


@dataclass(frozen=True)
class AppliedTransforms:
    """What :func:`transform_splits` fitted or reused; the loader records it in ``feature_spec.options``."""

    group_priors: dict[str, dict[str, list[float]]]  # {modality: {"mean", "var"}}; empty without group_standardize
    group_strength: float | None  # the priors' weight in clips; None without group_standardize
    standardize: dict[str, dict[str, list[float]]]  # {modality: {"mean", "std"}}; empty without standardize


def transform_splits(
    splits: dict[str, Split],
    groups: dict[str, list[str]],
    *,
    group_standardize: Standardize | None,
    group_strength: float | None,
    group_context: Sequence[str],
    standardize: Standardize,
    source: str,
) -> AppliedTransforms:
    """Steps 2-4 of the module docstring, in place on ``splits``; ``groups`` holds each split's group
    value per clip (needed by the grouped steps only) and ``group_context`` the resolved modalities."""
    strength: float | None = None
    if group_standardize is not False and group_standardize is not None:
        strength = float(DEFAULT_STRENGTH if group_strength is None else group_strength)
        priors = group_standardize_splits(splits, groups, group_standardize, strength, source)
    else:
        priors = {}
    for m in group_context:
        for name, s in splits.items():
            s.features[m] = append_group_context(s.features[m], s.lengths[m], groups[name])
    stats = standardize_splits(splits, standardize, source)
    return AppliedTransforms(group_priors=priors, group_strength=strength, standardize=stats)


def standardize_splits(splits: dict[str, Split], option: Standardize, source: str) -> dict[str, dict[str, list[float]]]:
    """z-scores with the train split's statistics (or recorded ones), in place; returns the statistics used."""
    present = splits["train"].modalities
    if option is True:
        option = list(present)
    elif option is False or option is None:
        return {}
    stats: dict[str, dict[str, list[float]]] = {}
    given = option if isinstance(option, Mapping) else None
    # Recorded statistics apply to the modalities loaded now; a list must name loaded modalities.
    for m in [m for m in option if m in present] if given is not None else option:
        if m not in present:
            raise MsalignError(f"{source}: cannot standardize modality {m!r}: not loaded (have {list(present)})")
        train = splits["train"]
        dim = train.features[m].shape[2]
        if given is not None:
            try:
                mean = np.asarray(given[m]["mean"], dtype=np.float32)
                std = np.asarray(given[m]["std"], dtype=np.float32)
            except (KeyError, TypeError, ValueError):
                raise MsalignError(f"{source}: standardize statistics for {m!r} need 'mean' and 'std' lists") from None
            if mean.shape != (dim,) or std.shape != (dim,) or not np.all(std > 0):
                raise MsalignError(
                    f"{source}: standardize statistics for {m!r} have shape {mean.shape}/{std.shape}, "
                    f"features have width {dim}"
                )
        else:
            real = train.features[m][train.mask(m)].astype(np.float64)
            mean = real.mean(axis=0).astype(np.float32)
            sd = real.std(axis=0)
            std = np.where(sd > 1e-6, sd, 1.0).astype(np.float32)
        for s in splits.values():
            x = s.features[m]
            x -= mean
            x /= std
            zero_padding(x, s.lengths[m])
        stats[m] = {"mean": mean.tolist(), "std": std.tolist()}
    return stats


def _has_width(values: Any, dim: int) -> bool:
    """Whether a prior's list (from the user's config, so of any type until checked) has ``dim`` numbers."""
    return np.shape(values) == (dim,)


def group_standardize_splits(
    splits: dict[str, Split], groups: dict[str, list[str]], option: Standardize, strength: float, source: str
) -> dict[str, dict[str, list[float]]]:
    """Per-group z-scores (msalign.data.group_norm), split by split; returns the priors used."""
    if option is False or option is None:
        return {}
    if not strength >= 0:
        raise MsalignError(f"{source}: group_strength {strength!r}: must be a number >= 0")
    present = splits["train"].modalities
    if isinstance(option, Mapping):
        given: Mapping[str, Mapping[str, Sequence[float]]] | None = option
        names = [m for m in option if m in present]
    else:
        given = None
        names = resolve_modalities(option, present, source)
    priors: dict[str, dict[str, list[float]]] = {}
    for m in names:
        dim = splits["train"].features[m].shape[2]
        prior: Mapping[str, Sequence[float]]
        if given is not None:
            prior = given[m]
            if (
                not isinstance(prior, Mapping)
                or not _has_width(prior.get("mean"), dim)
                or not _has_width(prior.get("var"), dim)
            ):
                raise MsalignError(
                    f"{source}: group_standardize prior for {m!r} needs 'mean' and 'var' lists of width {dim}"
                )
        else:
            train = splits["train"]
            prior = fit_prior(train.features[m], train.lengths[m], groups["train"])
        for name, s in splits.items():
            standardize_groups(s.features[m], s.lengths[m], groups[name], prior, strength)
        priors[m] = {"mean": list(prior["mean"]), "var": list(prior["var"])}
    return priors


__all__ = ["AppliedTransforms", "Standardize", "group_standardize_splits", "standardize_splits", "transform_splits"]

"""Checks every loaded dataset passes before a model sees it.

Each problem raises :class:`MsalignError` with ONE line naming the source, the split, the key and
the array shape, e.g. ``data/foo.pkl: split 'train', key 'audio': NaN at row 12 (shape (1284, 375, 5))``.
Keys are the modality name for features, ``<modality>_lengths`` for lengths, ``labels`` and ``id``.

Checked: missing/empty splits, wrong ranks, N that disagrees between modalities, lengths, labels
and ids, lengths outside ``1..L``, feature widths that differ between splits or from the expected
ones, NaN/inf in features or labels, labels outside the metric set's range (regression) or
``0..C-1`` (classification), duplicate ids (within a split and across splits), and clips whose
features are zero at every real position in EVERY modality (a clip with no input at all; a single
all-zero modality is allowed, e.g. no face found). Loaders zero padding beyond the lengths
(:func:`zero_padding`), so padding content is not checked here.

``contents=False`` skips the two checks that read every feature value (NaN/inf and all-padding
clips) and keeps the metadata checks: an on-disk feature store (:mod:`msalign.data.store`) ran the
value checks when it was written, so loading it reads no feature bytes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np

from msalign.data.types import SPLITS, MetricSet, MultimodalDataset, Split, Task
from msalign.errors import MsalignError

# Regression label range per metric set (MMSA's scales).
LABEL_RANGES: dict[str, tuple[float, float]] = {"mosi": (-3.0, 3.0), "mosei": (-3.0, 3.0), "sims": (-1.0, 1.0)}
_CHUNK = 512  # rows per chunk when scanning big arrays, to bound temporary memory


def _where(source: str, split: str, key: str) -> str:
    return f"{source}: split {split!r}, key {key!r}"


def _first_bad_row(x: np.ndarray, bad) -> int | None:
    """First row index where ``bad(chunk)`` (a per-row bool) is True, scanning in chunks."""
    for start in range(0, len(x), _CHUNK):
        hit = np.flatnonzero(bad(x[start : start + _CHUNK]))
        if hit.size:
            return start + int(hit[0])
    return None


def first_nonfinite(x: np.ndarray) -> tuple[int, str] | None:
    """(row, "NaN" or "inf") of the first row holding a non-finite value, or None; scans in chunks."""
    if np.issubdtype(x.dtype, np.integer) or len(x) == 0:
        return None
    axes = tuple(range(1, x.ndim))
    row = _first_bad_row(x, lambda c: ~np.isfinite(c).all(axis=axes) if axes else ~np.isfinite(c))
    if row is None:
        return None
    return row, "NaN" if np.isnan(x[row]).any() else "inf"


def first_length_outside(lengths: np.ndarray, max_len: int) -> int | None:
    """The first row whose length is outside ``1..max_len``, or None."""
    bad = np.flatnonzero((lengths < 1) | (lengths > max_len))
    return int(bad[0]) if bad.size else None


def first_padding_not_zero(features: np.ndarray, lengths: np.ndarray) -> int | None:
    """The first row of (N, L, D) ``features`` with a non-zero value at or beyond its length, or None."""
    padding = np.arange(features.shape[1])[None, :] >= np.asarray(lengths)[:, None]
    dirty = (features != 0).any(axis=2) & padding
    return int(np.flatnonzero(dirty.any(axis=1))[0]) if dirty.any() else None


def rows_with_data(features: np.ndarray) -> np.ndarray:
    """(N,) bool: which rows of (N, L, D) ``features`` (in memory or on disk) hold any non-zero value."""
    n = len(features)
    any_data = np.zeros(n, dtype=bool)
    for start in range(0, n, _CHUNK):
        any_data[start : start + _CHUNK] = (np.asarray(features[start : start + _CHUNK]) != 0).any(axis=(1, 2))
    return any_data


def first_class_outside(labels: np.ndarray, num_classes: int) -> int | None:
    """The first label that is not an integer class index in ``0..num_classes-1``, or None."""
    values = labels.astype(np.float64)
    bad = np.flatnonzero((values != np.round(values)) | (values < 0) | (values > num_classes - 1))
    return int(bad[0]) if bad.size else None


def first_label_outside(labels: np.ndarray, label_range: tuple[float, float]) -> int | None:
    """The first regression label outside ``label_range`` (with a 1e-6 tolerance), or None."""
    lo, hi = label_range
    bad = np.flatnonzero((labels < lo - 1e-6) | (labels > hi + 1e-6))
    return int(bad[0]) if bad.size else None


def _nonfinite(x: np.ndarray, source: str, split: str, key: str) -> None:
    found = first_nonfinite(x)
    if found is not None:
        row, kind = found
        raise MsalignError(f"{_where(source, split, key)}: {kind} at row {row} (shape {x.shape})")


def zero_padding(features: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Zero positions at or beyond each row's length, in place; returns ``features``."""
    if features.ndim == 3 and features.shape[1] > 0:
        features[np.arange(features.shape[1])[None, :] >= np.asarray(lengths)[:, None]] = 0
    return features


def trailing_lengths(features: np.ndarray) -> np.ndarray:
    """Lengths for (N, L, D) features that came without any: last non-zero frame + 1, at least 1."""
    if features.shape[1] == 0:
        return np.ones(len(features), dtype=np.int64)
    nonzero = (features != 0).any(axis=2)
    last = features.shape[1] - np.argmax(nonzero[:, ::-1], axis=1)
    return np.where(nonzero.any(axis=1), last, 1).astype(np.int64)


def validate_split(
    split: Split,
    source: str,
    *,
    dims: Mapping[str, int] | None = None,
    label_range: tuple[float, float] | None = None,
    task: Task = "regression",
    num_classes: int | None = None,
    contents: bool = True,
) -> None:
    """Check one split; ``dims`` are the expected widths, ``label_range`` the regression range;
    ``contents=False`` skips the feature-value scans (see the module docstring)."""
    name = split.name
    labels = np.asarray(split.labels)
    n = len(labels)
    if labels.ndim != 1:
        raise MsalignError(f"{_where(source, name, 'labels')}: expected shape (N,), got shape {labels.shape}")
    if n == 0:
        raise MsalignError(f"{_where(source, name, 'labels')}: split is empty (shape {labels.shape})")
    if not split.features:
        raise MsalignError(f"{source}: split {name!r}: no modality features")
    if len(split.ids) != n:
        raise MsalignError(
            f"{_where(source, name, 'id')}: {len(split.ids)} ids but {n} labels (labels shape {labels.shape})"
        )
    if split.raw_text is not None and len(split.raw_text) != n:
        raise MsalignError(f"{_where(source, name, 'raw_text')}: {len(split.raw_text)} texts but {n} labels")
    any_data = np.zeros(n, dtype=bool)
    for m, x in split.features.items():
        if x.ndim != 3:
            raise MsalignError(f"{_where(source, name, m)}: expected shape (N, L, D), got shape {x.shape}")
        if len(x) != n:
            raise MsalignError(f"{_where(source, name, m)}: {len(x)} rows but {n} labels (shape {x.shape})")
        if x.shape[1] < 1 or x.shape[2] < 1:
            raise MsalignError(f"{_where(source, name, m)}: empty time or feature axis (shape {x.shape})")
        if dims is not None and m in dims and x.shape[2] != dims[m]:
            raise MsalignError(
                f"{_where(source, name, m)}: feature width {x.shape[2]}, expected {dims[m]} (shape {x.shape})"
            )
        if m not in split.lengths:
            raise MsalignError(f"{_where(source, name, f'{m}_lengths')}: missing (features shape {x.shape})")
        lengths = np.asarray(split.lengths[m])
        key = f"{m}_lengths"
        if lengths.shape != (n,):
            raise MsalignError(f"{_where(source, name, key)}: expected shape ({n},), got shape {lengths.shape}")
        r = first_length_outside(lengths, x.shape[1])
        if r is not None:
            raise MsalignError(
                f"{_where(source, name, key)}: length {lengths[r]} at row {r} outside 1..{x.shape[1]} (shape {x.shape})"
            )
        if not contents:
            continue
        _nonfinite(x, source, name, m)
        any_data |= rows_with_data(x)
    empty = np.flatnonzero(~any_data)
    if contents and empty.size:
        r = int(empty[0])
        shapes = ", ".join(f"{m} {x.shape}" for m, x in split.features.items())
        raise MsalignError(
            f"{_where(source, name, '/'.join(split.features))}: row {r} (id {split.ids[r]!r}) is all padding "
            f"in every modality ({empty.size} such rows; shapes {shapes}); --empty-clips drop leaves them out"
        )
    _nonfinite(labels, source, name, "labels")
    if task == "classification":
        if not np.issubdtype(labels.dtype, np.integer):
            raise MsalignError(
                f"{_where(source, name, 'labels')}: classification labels must be integers, "
                f"got {labels.dtype} (shape {labels.shape})"
            )
        hi = (num_classes or int(labels.max()) + 1) - 1
        r = first_class_outside(labels, hi + 1)
        if r is not None:
            raise MsalignError(
                f"{_where(source, name, 'labels')}: class {labels[r]} at row {r} outside 0..{hi} (shape {labels.shape})"
            )
    elif label_range is not None:
        low, high = label_range
        r = first_label_outside(labels, label_range)
        if r is not None:
            raise MsalignError(
                f"{_where(source, name, 'labels')}: label {float(labels[r]):g} at row {r} "
                f"outside [{low:g}, {high:g}] (shape {labels.shape})"
            )
    seen: dict[str, int] = {}
    for i, clip in enumerate(split.ids):
        if clip in seen:
            raise MsalignError(
                f"{_where(source, name, 'id')}: duplicate id {clip!r} at rows {seen[clip]} and {i} ({n} ids)"
            )
        seen[clip] = i


def empty_rows(split: Split) -> np.ndarray:
    """Indices of the clips whose features are zero at every position in every modality."""
    any_data = np.zeros(len(split.labels), dtype=bool)
    for x in split.features.values():
        any_data |= rows_with_data(x)
    return np.flatnonzero(~any_data)


def drop_empty_clips(splits: dict[str, Split], source: str) -> dict[str, int]:
    """``--empty-clips drop``: removes the all-padding clips (see :func:`empty_rows`) from every split,
    in place; returns the count dropped per split. A split left with no clip is an error."""
    dropped = {}
    for name, split in list(splits.items()):
        empty = empty_rows(split)
        dropped[name] = int(empty.size)
        if empty.size == len(split.labels):
            raise MsalignError(
                f"{_where(source, name, '/'.join(split.features))}: all {empty.size} clips are all padding "
                "in every modality; nothing left after --empty-clips drop"
            )
        if empty.size:
            splits[name] = split.subset(np.setdiff1d(np.arange(len(split.labels)), empty))
    return dropped


def validate_dataset(ds: MultimodalDataset, *, require_splits: Iterable[str] = SPLITS, contents: bool = True) -> None:
    """Check every split, their agreement (modalities, widths, ids) and the dataset metadata;
    ``contents=False`` skips the feature-value scans (see the module docstring)."""
    source = ds.source or ds.name
    for name in require_splits:
        if name not in ds.splits:
            raise MsalignError(f"{source}: missing split {name!r} (has {sorted(ds.splits)})")
    if ds.task == "classification" and not ds.num_classes:
        raise MsalignError(f"{source}: classification dataset without num_classes")
    first = next(iter(ds.splits.values()))
    dims = {m: int(x.shape[2]) for m, x in first.features.items() if x.ndim == 3}
    label_range = LABEL_RANGES.get(ds.metric_set) if ds.task == "regression" else None
    owner: dict[str, str] = {}
    for name, split in ds.splits.items():
        if set(split.features) != set(first.features):
            raise MsalignError(
                f"{source}: split {name!r} has modalities {sorted(split.features)}, "
                f"split {first.name!r} has {sorted(first.features)}"
            )
        validate_split(
            split,
            source,
            dims=dims,
            label_range=label_range,
            task=ds.task,
            num_classes=ds.num_classes,
            contents=contents,
        )
        for clip in split.ids:
            if clip in owner:
                raise MsalignError(
                    f"{_where(source, name, 'id')}: id {clip!r} is also in split {owner[clip]!r} ({len(split)} ids)"
                )
            owner[clip] = name


def infer_metric_set(path: str | Path, labels: np.ndarray | None = None, task: Task | None = None) -> MetricSet:
    """mosi / mosei / sims / iemocap from the path (innermost name first), else from task and labels."""
    for part in reversed(Path(path).parts):
        for key in ("mosei", "mosi", "sims", "iemocap"):
            if key in part.lower():
                return key
    if task == "classification":
        return "iemocap"
    if labels is not None and len(labels) and float(np.nanmax(np.abs(labels))) <= 1.0:
        return "sims"
    return "mosi"

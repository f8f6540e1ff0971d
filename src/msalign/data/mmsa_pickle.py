"""Load an MMSA feature pickle (aligned_50.pkl, unaligned_50.pkl, ...) safely.

Layout (MMSA): ``{"train": {...}, "valid": {...}, "test": {...}}``, each split a dict with
``text`` (N, L, 768) BERT features, ``audio`` (N, La, Da), ``vision`` (N, Lv, Dv), ``id``,
``raw_text``, ``regression_labels`` (N,) and optionally ``text_bert`` (N, 3, L) =
[input_ids, attention_mask, segment_ids], ``audio_lengths`` / ``vision_lengths`` (unaligned files),
``annotations``, ``classification_labels``; SIMS adds ``regression_labels_T/A/V`` (ignored here).

* Safety: the file is read by :mod:`msalign.data.safe_pickle`, an interpreter of the pickle
  opcodes that yields only numpy arrays and scalars it rebuilds itself (numeric and string dtypes)
  plus plain Python containers, strings and numbers, within bounds on size and nesting. Anything
  else (a pickle that would call ``os.system`` on load, say) is refused; nothing in it runs.
* Lengths: ``<modality>_lengths`` when present. Otherwise text lengths are the attention-mask
  sums of ``text_bert`` (all L without it); audio/vision lengths in aligned files are the
  position of the last non-zero frame + 1 (at least 1), i.e. all L minus trailing all-zero
  padding, which never drops a real frame. Features beyond the lengths are zeroed.
* Labels: regression uses ``regression_labels``. Classification (metric set ``iemocap``) uses
  ``classification_labels`` (what DecAlign's IEMOCAP loader reads) or, failing that, integer
  ``labels``; shape (N,) or (N, 1), integral values, classes ``0..C-1`` (C = ``num_classes`` or
  the largest label + 1).
* Repairs: ``-inf`` in ``audio`` (COVAREP's log of zero energy, present in MMSA's MOSI/MOSEI
  files and zeroed by MMSA and DecAlign alike) is set to 0 and counted in
  ``feature_spec.repairs``; NaN or any other inf is an error.
* Metric set: ``metric_set=`` or inferred from the file's path (mosi/mosei/sims/iemocap in a
  name), else from the labels.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from msalign.data import safe_pickle
from msalign.data.feature_spec import FeatureSpec, ModalitySpec
from msalign.data.types import MODALITIES, SPLITS, MetricSet, MultimodalDataset, Split
from msalign.data.validate import infer_metric_set, trailing_lengths, validate_dataset, zero_padding
from msalign.errors import MsalignError
from msalign.limits import short_repr


def read_pickle(path: str | Path) -> Any:
    """Read ``path`` with :mod:`msalign.data.safe_pickle` (no code runs, numpy is never handed a
    pickle's dtype state, sizes and nesting are bounded); every failure is one MsalignError line."""
    source = str(path)
    try:
        return safe_pickle.load_file(path)
    except MsalignError:
        raise
    except PermissionError:
        raise MsalignError(f"{source}: permission denied") from None
    except MemoryError:
        raise MsalignError(f"{source}: out of memory while unpickling") from None
    except (OSError, ValueError, struct.error, OverflowError, RecursionError) as e:  # a damaged file
        detail = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise MsalignError(
            f"{source}: not a readable pickle (truncated or corrupt: {short_repr(detail)[1:-1]})"
        ) from None


def _array(d: dict, key: str, source: str, split: str, ndim: tuple[int, ...], dtype: Any = np.float32) -> np.ndarray:
    where = f"{source}: split {split!r}, key {key!r}"
    try:
        x = np.asarray(d[key])
    except Exception as e:
        raise MsalignError(f"{where}: not an array ({type(d[key]).__name__}: {e})") from None
    if x.ndim not in ndim:
        want = " or ".join({1: "(N,)", 2: "(N, 1)", 3: "(N, L, D)"}[n] for n in ndim)
        raise MsalignError(f"{where}: expected shape {want}, got shape {x.shape}")
    if dtype is not None:
        try:
            x = x.astype(dtype, copy=False)
        except (TypeError, ValueError):
            raise MsalignError(f"{where}: not numeric (dtype {x.dtype}, shape {x.shape})") from None
    return x


def _labels(d: dict, source: str, split: str, task: str) -> np.ndarray:
    if task == "regression":
        if "regression_labels" not in d:
            raise MsalignError(f"{source}: split {split!r}, key 'regression_labels': missing (has {_keys(d)})")
        y = _array(d, "regression_labels", source, split, (1, 2))
        if y.ndim == 2 and y.shape[1] != 1:
            raise MsalignError(
                f"{source}: split {split!r}, key 'regression_labels': expected shape (N,), got shape {y.shape}"
            )
        return y.reshape(-1)
    key = "classification_labels" if "classification_labels" in d else "labels"
    if key not in d:
        raise MsalignError(
            f"{source}: split {split!r}, key 'classification_labels': missing (no 'labels' either; has {sorted(d)})"
        )
    y = _array(d, key, source, split, (1, 2), dtype=np.float64)
    if (y.ndim == 2 and y.shape[1] != 1) or not np.all(np.isfinite(y)) or not np.all(y == np.round(y)):
        raise MsalignError(
            f"{source}: split {split!r}, key {key!r}: expected integer class indices of shape (N,), got shape {y.shape}"
        )
    return y.reshape(-1).astype(np.int64)


def _keys(d: dict) -> list[str]:
    return sorted(map(str, d))


def load_mmsa_pickle(
    path: str | Path,
    *,
    metric_set: MetricSet | None = None,
    modalities: Sequence[str] | None = None,
    num_classes: int | None = None,
    task: str | None = None,
) -> MultimodalDataset:
    """Load, check and validate an MMSA feature pickle; see the module docstring. ``task``
    (--task) picks the labels: ``regression_labels`` or ``classification_labels``."""
    path = Path(path)
    source = str(path)
    data = read_pickle(path)
    if not isinstance(data, dict):
        raise MsalignError(f"{source}: expected a dict of splits {list(SPLITS)}, got {type(data).__name__}")
    for name in SPLITS:
        if name not in data or not isinstance(data[name], dict):
            raise MsalignError(f"{source}: split {name!r}: missing or not a dict (top-level keys {_keys(data)})")
    train = data["train"]
    present = [m for m in MODALITIES if m in train]
    wanted = list(modalities) if modalities is not None else present
    unknown = [m for m in wanted if m not in MODALITIES]
    if unknown:
        raise MsalignError(f"{source}: unknown modality {unknown[0]!r} (choose from {list(MODALITIES)})")
    wanted = [m for m in MODALITIES if m in wanted]
    if not wanted:
        raise MsalignError(f"{source}: split 'train' has none of the keys {list(MODALITIES)} (has {_keys(train)})")
    if task is not None and task not in ("regression", "classification"):
        raise MsalignError(f"--task {task!r}: expected regression or classification")
    if metric_set is not None and task is not None and (metric_set == "iemocap") != (task == "classification"):
        raise MsalignError(f"--metric-set {metric_set} does not score {task} (iemocap is the classification set)")
    given_task, given_metric_set = task, metric_set
    if metric_set is None:
        task_hint = task or ("regression" if "regression_labels" in train else "classification")
        y = (
            np.asarray(train.get("regression_labels", []), dtype=np.float64).reshape(-1)
            if task_hint == "regression"
            else None
        )
        metric_set = infer_metric_set(path, y, task_hint)  # type: ignore[arg-type]
        if task is not None and (metric_set == "iemocap") != (task == "classification"):
            metric_set = "iemocap" if task == "classification" else infer_metric_set("", y, "regression")
    task = "classification" if metric_set == "iemocap" else "regression"

    splits: dict[str, Split] = {}
    aligned = True
    neg_inf = 0
    for name in SPLITS:
        d = data[name]
        features: dict[str, np.ndarray] = {}
        lengths: dict[str, np.ndarray] = {}
        for m in wanted:
            if m not in d:
                raise MsalignError(f"{source}: split {name!r}, key {m!r}: missing (has {_keys(d)})")
            x = _array(d, m, source, name, (3,))
            if not (x.flags.writeable and x.flags.c_contiguous):
                x = np.array(x, order="C")
            if m == "audio":
                bad = np.isneginf(x)
                if bad.any():
                    x[bad] = 0.0
                    neg_inf += int(bad.sum())
            key = f"{m}_lengths"
            if key in d:
                aligned = False
                n = _array(d, key, source, name, (1, 2), dtype=np.float64).reshape(-1)
                if len(n) != len(x):
                    raise MsalignError(
                        f"{source}: split {name!r}, key {key!r}: {len(n)} lengths for {len(x)} rows (shape {x.shape})"
                    )
                n = n.astype(np.int64)
            elif m == "text" and "text_bert" in d:
                tb = _array(d, "text_bert", source, name, (3,), dtype=np.float64)
                if tb.shape[0] != len(x) or tb.shape[1] < 2:
                    raise MsalignError(
                        f"{source}: split {name!r}, key 'text_bert': "
                        f"expected shape ({len(x)}, 3, L), got shape {tb.shape}"
                    )
                n = np.minimum(tb[:, 1, :].sum(axis=1), x.shape[1]).astype(np.int64)
            elif m == "text":
                n = np.full(len(x), x.shape[1], dtype=np.int64)
            else:
                n = trailing_lengths(x)
            features[m] = zero_padding(x, n)
            lengths[m] = n
        if "id" not in d:
            raise MsalignError(f"{source}: split {name!r}, key 'id': missing (has {_keys(d)})")
        ids = [str(i) for i in np.asarray(d["id"]).reshape(-1).tolist()]
        labels = _labels(d, source, name, task)
        raw = d.get("raw_text")
        raw_text = [str(t) for t in np.asarray(raw, dtype=object).reshape(-1).tolist()] if raw is not None else None
        splits[name] = Split(name=name, features=features, lengths=lengths, labels=labels, ids=ids, raw_text=raw_text)

    if task == "classification" and num_classes is None:
        num_classes = max((int(s.labels.max()) for s in splits.values() if len(s)), default=0) + 1
    spec = FeatureSpec(
        format="mmsa_pickle",
        aligned=aligned,
        modalities={
            m: ModalitySpec(dim=int(x.shape[2]), max_len=int(x.shape[1])) for m, x in splits["train"].features.items()
        },
        text_source="mmsa text (BERT features)" if "text" in wanted else None,
        repairs={"audio_neg_inf_to_zero": neg_inf} if neg_inf else None,
    )
    if given_task:
        task_why = f"--task {given_task}"
    elif given_metric_set:
        task_why = f"--metric-set {given_metric_set}"
    else:
        task_why = f"the pickle's {task}_labels"
    ds = MultimodalDataset(
        name=f"{metric_set}-{path.stem}",
        splits=splits,
        metric_set=metric_set,
        task=task,  # type: ignore[arg-type]
        num_classes=num_classes if task == "classification" else None,
        source=source,
        feature_spec=spec,
        why=f"task: {task_why}; metric set: {'--metric-set' if given_metric_set else 'from the path and labels'}",
        # a classification pickle borrows iemocap.yaml only when it is IEMOCAP (its path says so)
        config_keys=(
            f"{metric_set}-{path.stem}",
            metric_set if task == "regression" or "iemocap" in str(path).lower() else "classification",
        ),
    )
    validate_dataset(ds)
    return ds

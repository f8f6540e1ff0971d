"""Loading a feature store: the manifest and the small arrays, features as :class:`DiskArray`\\ s."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import numpy as np

from msalign.data.store.disk_array import DiskArray
from msalign.data.store.manifest import MANIFEST, METRIC_SETS, read_manifest
from msalign.data.store.npy_header import check_size, read_npy_header
from msalign.data.types import MODALITIES, SPLITS, MetricSet, MultimodalDataset, Split, Task
from msalign.data.validate import validate_dataset
from msalign.errors import MsalignError
from msalign.limits import check_alloc


def _load_small(path: Path, where: str, shape: tuple[int, ...], kind: str) -> np.ndarray:
    """A small array (lengths, labels, ids, raw_text) read whole with pickles disallowed, shape-checked."""
    header_shape, dtype, _, offset, size = read_npy_header(path, where)
    if dtype.hasobject:
        raise MsalignError(f"{where}: holds Python objects (dtype {dtype}); expected {kind}")
    check_size(where, header_shape, dtype, offset, size)
    check_alloc(size - offset, where)
    try:
        x = np.load(path, allow_pickle=False)
    except Exception as e:
        detail = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise MsalignError(f"{where}: not a readable .npy file ({detail})") from None
    if x.shape != shape:
        raise MsalignError(f"{where}: expected shape {shape}, got shape {x.shape}")
    ok = {
        "int": np.issubdtype(x.dtype, np.integer),
        "float": np.issubdtype(x.dtype, np.floating),
        "number": np.issubdtype(x.dtype, np.number),
        "str": x.dtype.kind == "U",
    }[kind]
    if not ok:
        raise MsalignError(f"{where}: expected {kind} values, got dtype {x.dtype} (shape {x.shape})")
    return x


def load_store(
    folder: str | Path,
    *,
    modalities: Sequence[str] | str | None = None,
    metric_set: MetricSet | None = None,
    num_classes: int | None = None,
    verify: bool = False,
    task: Task | None = None,
) -> MultimodalDataset:
    """The store in ``folder`` as a :class:`MultimodalDataset` whose features are :class:`DiskArray`\\ s.

    Reads no feature bytes unless ``verify`` (a full, chunked rescan of every value) or the
    manifest lacks its ``validated`` record. ``modalities`` selects a subset; ``metric_set``
    overrides the recorded one within the same task; ``num_classes`` a classification store's count.
    """
    folder = Path(folder)
    manifest = read_manifest(folder)
    manifest_path = folder / MANIFEST
    stored = [m for m in MODALITIES if m in manifest.modalities]
    if isinstance(modalities, str):
        modalities = [m.strip() for m in modalities.split(",") if m.strip()]
    wanted = stored if modalities is None else [m for m in MODALITIES if m in modalities]
    unknown = [m for m in (modalities or []) if m not in MODALITIES]
    if unknown:
        raise MsalignError(f"{folder}: unknown modality {unknown[0]!r} (choose from {list(MODALITIES)})")
    missing = [m for m in wanted if m not in stored]
    if missing or not wanted:
        raise MsalignError(f"{folder}: store lacks modality {missing or list(modalities or [])} (has {stored})")
    if task is not None and task != manifest.task:
        raise MsalignError(f"{manifest_path}: key 'task': the store holds {manifest.task} labels, not --task {task}")
    task = manifest.task
    if metric_set is not None:
        if metric_set not in METRIC_SETS:
            raise MsalignError(f"{folder}: metric set {metric_set!r} is not mosi/mosei/sims/iemocap")
        if ("classification" if metric_set == "iemocap" else "regression") != task:
            raise MsalignError(
                f"{folder}: metric set {metric_set!r} does not fit the store's {task} labels "
                f"(recorded metric set {manifest.metric_set!r})"
            )
    classes = manifest.num_classes
    if task == "classification" and num_classes is not None:
        classes = int(num_classes)

    splits: dict[str, Split] = {}
    for name in SPLITS:
        n = manifest.splits[name].rows
        directory = folder / name
        features: dict[str, DiskArray] = {}
        lengths: dict[str, np.ndarray] = {}
        for m in wanted:
            facts = manifest.modalities[m]
            path = directory / f"{m}.npy"
            where = f"{path}: split {name!r}, key {m!r}"
            x = DiskArray.open(path, where)
            expected = (n, facts.max_len, facts.dim)
            if x.shape != expected:
                raise MsalignError(f"{where}: shape {x.shape}, but {manifest_path} says {expected}")
            features[m] = x
            key = f"{m}_lengths"
            lengths[m] = _load_small(
                directory / f"{key}.npy", f"{directory / key}.npy: split {name!r}, key {key!r}", (n,), "int"
            ).astype(np.int64, copy=False)
        labels_where = f"{directory / 'labels.npy'}: split {name!r}, key 'labels'"
        labels = _load_small(
            directory / "labels.npy", labels_where, (n,), "int" if task == "classification" else "number"
        )
        labels = labels.astype(np.int64 if task == "classification" else np.float32, copy=False)
        ids = _load_small(
            directory / "ids.npy", f"{directory / 'ids.npy'}: split {name!r}, key 'id'", (n,), "str"
        ).tolist()
        raw_text = None
        if manifest.splits[name].raw_text:
            raw_text = _load_small(
                directory / "raw_text.npy", f"{directory / 'raw_text.npy'}: split {name!r}, key 'raw_text'", (n,), "str"
            ).tolist()
        splits[name] = Split(
            name=name,
            features=cast(dict[str, np.ndarray], features),  # a DiskArray serves the reads a Split makes
            lengths=lengths,
            labels=labels,
            ids=ids,
            raw_text=raw_text,
        )
    # the source's spec, unchanged; a subset load trims it as the source's loader would (module docstring)
    spec = manifest.feature_spec
    ds = MultimodalDataset(
        name=manifest.name,
        splits=splits,
        metric_set=metric_set or manifest.metric_set,
        task=task,
        num_classes=classes,
        source=str(folder),
        feature_spec=spec if set(wanted) == set(stored) else spec.for_modalities(wanted),
    )
    validate_dataset(ds, contents=verify or not manifest.contents_validated)
    return ds


@dataclass(frozen=True)
class SplitSize:
    """One split of a store on disk: its rows, and the bytes of all its files."""

    rows: int
    bytes: int


def store_sizes(folder: str | Path) -> dict[str, SplitSize]:
    """Per split (train, valid, test): rows and bytes on disk."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    return {
        name: SplitSize(
            rows=manifest.splits[name].rows,
            bytes=sum(p.stat().st_size for p in (folder / name).iterdir() if p.is_file()),
        )
        for name in SPLITS
    }

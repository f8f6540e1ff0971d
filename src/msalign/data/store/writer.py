"""Writing a feature store: :class:`StoreWriter` chunk by chunk (every row checked through
:mod:`msalign.data.validate`'s checks as it is written), :func:`write_store` for a loaded dataset."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from msalign import __version__
from msalign.data.feature_spec import FeatureSpec
from msalign.data.store.manifest import (
    MANIFEST,
    ModalityEntry,
    SplitEntry,
    StoreManifest,
    ValidationRecord,
    is_store,
    read_feature_spec,
    spec_json_to_keep,
    write_manifest,
)
from msalign.data.store.npy_header import npy_header
from msalign.data.store.reader import load_store
from msalign.data.types import MODALITIES, SPLITS, MetricSet, MultimodalDataset, Task
from msalign.data.validate import (
    LABEL_RANGES,
    first_class_outside,
    first_label_outside,
    first_length_outside,
    first_nonfinite,
    first_padding_not_zero,
    rows_with_data,
)
from msalign.errors import MsalignError

_CHUNK_BYTES = 64 << 20  # rows per chunk when converting: about this many bytes of features


def _spec_given(spec: FeatureSpec | Mapping[str, Any] | None) -> FeatureSpec | dict[str, Any]:
    """A loaded dataset's :class:`FeatureSpec`, or the JSON form another producer gives, copied through
    JSON now (a value JSON cannot hold fails here) and read as a FeatureSpec when the store is finished."""
    if isinstance(spec, FeatureSpec):
        return spec
    return json.loads(json.dumps(dict(spec or {})))


class _SplitWriter:
    """Features appended straight to ``<split>/<modality>.npy`` (header rewritten at the end); the
    small arrays are kept in memory and saved when the store is finished."""

    def __init__(self, directory: Path, name: str, modalities: Mapping[str, tuple[int, int]]):
        self.name = name
        self.directory = directory
        directory.mkdir()
        self.modalities = dict(modalities)
        # open until finish() or close(): appends arrive in separate calls, so no `with` block fits
        self.files = {m: open(directory / f"{m}.npy", "wb") for m in self.modalities}  # noqa: SIM115
        self.headers = {m: len(npy_header((0, L, D))) for m, (L, D) in self.modalities.items()}
        for m, (L, D) in self.modalities.items():
            self.files[m].write(npy_header((0, L, D)))
        self.rows = 0
        self.lengths: dict[str, list[np.ndarray]] = {m: [] for m in self.modalities}
        self.labels: list[np.ndarray] = []
        self.ids: list[str] = []
        self.raw_text: list[str] | None = None

    def finish(self, task: str) -> SplitEntry:
        for m, (L, D) in self.modalities.items():
            f = self.files[m]
            f.seek(0)
            f.write(npy_header((self.rows, L, D), self.headers[m]))
            f.close()
            np.save(
                self.directory / f"{m}_lengths.npy",
                np.concatenate(self.lengths[m]).astype(np.int64) if self.lengths[m] else np.zeros(0, dtype=np.int64),
            )
        dtype = np.int64 if task == "classification" else np.float32
        np.save(
            self.directory / "labels.npy",
            np.concatenate(self.labels).astype(dtype) if self.labels else np.zeros(0, dtype=dtype),
        )
        np.save(self.directory / "ids.npy", np.asarray(self.ids, dtype=str) if self.ids else np.zeros(0, dtype="<U1"))
        if self.raw_text is not None:
            np.save(
                self.directory / "raw_text.npy",
                np.asarray(self.raw_text, dtype=str) if self.raw_text else np.zeros(0, dtype="<U1"),
            )
        return SplitEntry(rows=self.rows, raw_text=self.raw_text is not None)

    def close(self) -> None:
        for f in self.files.values():
            f.close()


class StoreWriter:
    """Builds a store chunk by chunk: :meth:`append` rows to a split (any number of times, splits in
    any order), then :meth:`finish`. Every chunk is checked as it is written - features finite and
    zero beyond each row's length, lengths in 1..L, no row all padding in every modality, labels
    in the metric set's range (or class indices), ids unique across the whole store - and an error
    names the split, key and row. Everything goes to a hidden temporary folder beside ``folder``
    that :meth:`finish` renames into place (:func:`_install`); :meth:`abort` (or leaving a ``with``
    block by an exception) removes it. Memory: the chunk being written, plus lengths, labels and ids.
    """

    def __init__(
        self,
        folder: str | Path,
        *,
        modalities: Mapping[str, tuple[int, int]],
        name: str,
        metric_set: MetricSet = "mosi",
        task: Task | None = None,
        num_classes: int | None = None,
        feature_spec: FeatureSpec | Mapping[str, Any] | None = None,
        source: str = "",
        force: bool = False,
    ):
        self.folder = Path(folder)
        unknown = [m for m in modalities if m not in MODALITIES]
        if unknown or not modalities:
            raise MsalignError(
                f"{self.folder}: modalities must be some of {list(MODALITIES)}, got {sorted(modalities)}"
            )
        self.modalities = {m: (int(modalities[m][0]), int(modalities[m][1])) for m in MODALITIES if m in modalities}
        for m, (L, D) in self.modalities.items():
            if L < 1 or D < 1:
                raise MsalignError(f"{self.folder}: modality {m!r}: max_len and dim must be >= 1, got {L}x{D}")
        if metric_set not in ("mosi", "mosei", "sims", "iemocap"):
            raise MsalignError(f"{self.folder}: metric set {metric_set!r} is not mosi/mosei/sims/iemocap")
        self.task: Task = task or ("classification" if metric_set == "iemocap" else "regression")
        self.num_classes: int | None = None  # set for a classification store only
        if self.task == "classification":
            if not num_classes:
                raise MsalignError(f"{self.folder}: a classification store needs num_classes")
            self.num_classes = int(num_classes)
        self.name = name
        self.metric_set: MetricSet = metric_set
        self.feature_spec = _spec_given(feature_spec)
        self.source = source
        check_destination(self.folder, force)
        self.force = force
        self.folder.parent.mkdir(parents=True, exist_ok=True)
        self.temporary = Path(
            tempfile.mkdtemp(dir=self.folder.parent, prefix=f".{self.folder.name}.", suffix=".partial")
        )
        umask = os.umask(0o22)
        os.umask(umask)
        os.chmod(self.temporary, 0o777 & ~umask)  # mkdtemp's 0700 would outlive the rename
        self.splits: dict[str, _SplitWriter] = {}
        self.owner: dict[str, str] = {}  # clip id -> split, for duplicates across the store
        self.label_range = LABEL_RANGES.get(metric_set) if self.task == "regression" else None
        self.done = False

    def __enter__(self) -> StoreWriter:
        return self

    def __exit__(self, kind, value, traceback) -> None:
        if kind is not None or not self.done:
            self.abort()

    def _where(self, split: str, key: str) -> str:
        return f"{self.folder}: split {split!r}, key {key!r}"

    def append(
        self,
        split: str,
        features: Mapping[str, np.ndarray],
        lengths: Mapping[str, np.ndarray],
        labels: np.ndarray,
        ids: Sequence[str],
        raw_text: Sequence[str] | None = None,
    ) -> None:
        """Append a chunk of rows to ``split``: ``features[m]`` (n, l, D) with l <= L (padded to L with
        zeros), ``lengths[m]`` (n,), ``labels`` (n,), ``ids`` n strings, ``raw_text`` n strings or None
        (the same choice for every chunk of a split)."""
        if self.done:
            raise MsalignError(f"{self.folder}: store already finished")
        if split not in SPLITS:
            raise MsalignError(f"{self.folder}: unknown split {split!r} (choose from {list(SPLITS)})")
        if set(features) != set(self.modalities) or set(lengths) != set(self.modalities):
            raise MsalignError(
                f"{self.folder}: split {split!r}: a chunk needs features and lengths of exactly "
                f"{list(self.modalities)}, got {sorted(features)} and {sorted(lengths)}"
            )
        writer = self.splits.get(split)
        if writer is None:
            writer = self.splits[split] = _SplitWriter(self.temporary / split, split, self.modalities)
            writer.raw_text = [] if raw_text is not None else None
        first = writer.rows
        labels = np.asarray(labels)
        n = len(labels)
        if labels.ndim != 1:
            raise MsalignError(f"{self._where(split, 'labels')}: expected shape (n,), got shape {labels.shape}")
        ids = [str(i) for i in ids]
        if len(ids) != n:
            raise MsalignError(f"{self._where(split, 'id')}: {len(ids)} ids for {n} labels")
        if (raw_text is None) != (writer.raw_text is None):
            raise MsalignError(f"{self._where(split, 'raw_text')}: given for some chunks of the split and not others")
        if raw_text is not None and len(raw_text) != n:
            raise MsalignError(f"{self._where(split, 'raw_text')}: {len(raw_text)} texts for {n} labels")
        labels = self._check_labels(split, labels, first)
        chunk: dict[str, np.ndarray] = {}
        any_data = np.zeros(n, dtype=bool)
        for m, (L, D) in self.modalities.items():
            where = self._where(split, m)
            try:
                x = np.asarray(features[m], dtype=np.float32)
            except (TypeError, ValueError):
                raise MsalignError(f"{where}: not numeric (type {type(features[m]).__name__})") from None
            if x.ndim != 3 or len(x) != n or x.shape[2] != D or not 1 <= x.shape[1] <= L:
                raise MsalignError(f"{where}: expected shape ({n}, <= {L}, {D}), got shape {x.shape}")
            if x.shape[1] < L:
                full = np.zeros((n, L, D), dtype=np.float32)
                full[:, : x.shape[1]] = x
                x = full
            key = f"{m}_lengths"
            length = np.asarray(lengths[m])
            if length.shape != (n,) or not (
                np.issubdtype(length.dtype, np.integer) or (length.size and np.all(length == np.round(length)))
            ):
                raise MsalignError(
                    f"{self._where(split, key)}: expected {n} integer lengths, got {length.dtype} shape {length.shape}"
                )
            length = length.astype(np.int64)
            r = first_length_outside(length, L)
            if r is not None:
                raise MsalignError(f"{self._where(split, key)}: length {length[r]} at row {first + r} outside 1..{L}")
            nonfinite = first_nonfinite(x)
            if nonfinite is not None:
                r, kind = nonfinite
                raise MsalignError(f"{where}: {kind} at row {first + r} (chunk shape {x.shape})")
            r = first_padding_not_zero(x, length)
            if r is not None:
                raise MsalignError(
                    f"{where}: non-zero features beyond length {length[r]} at row {first + r} "
                    "(zero the padding, e.g. msalign.data.validate.zero_padding)"
                )
            any_data |= rows_with_data(x)
            chunk[m] = x
            writer.lengths[m].append(length)
        empty = np.flatnonzero(~any_data)
        if empty.size:
            r = int(empty[0])
            raise MsalignError(
                f"{self._where(split, '/'.join(self.modalities))}: row {first + r} (id {ids[r]!r}) is all "
                "padding in every modality"
            )
        seen_here: set[str] = set()
        for i, clip in enumerate(ids):
            if clip in self.owner or clip in seen_here:
                other = self.owner.get(clip, split)
                raise MsalignError(
                    f"{self._where(split, 'id')}: duplicate id {clip!r} at row {first + i} (already in split {other!r})"
                )
            seen_here.add(clip)
        for m, x in chunk.items():
            x.tofile(writer.files[m])
        for clip in ids:
            self.owner[clip] = split
        writer.labels.append(labels)
        writer.ids.extend(ids)
        if raw_text is not None:
            writer.raw_text.extend(str(t) for t in raw_text)  # type: ignore[union-attr]
        writer.rows += n

    def _check_labels(self, split: str, labels: np.ndarray, first: int) -> np.ndarray:
        where = self._where(split, "labels")
        if not np.issubdtype(labels.dtype, np.number) or labels.dtype == bool:
            raise MsalignError(f"{where}: not numeric (dtype {labels.dtype})")
        values = labels.astype(np.float64)
        nonfinite = first_nonfinite(values)
        if nonfinite is not None:
            row, kind = nonfinite
            raise MsalignError(f"{where}: {kind} at row {first + row}")
        if self.num_classes is not None:  # a classification store
            last = self.num_classes - 1
            r = first_class_outside(values, self.num_classes)
            if r is not None:
                raise MsalignError(f"{where}: class {values[r]:g} at row {first + r} is not an integer in 0..{last}")
            return values.astype(np.int64)
        if self.label_range is not None:
            r = first_label_outside(values, self.label_range)
            if r is not None:
                low, high = self.label_range
                raise MsalignError(f"{where}: label {values[r]:g} at row {first + r} outside [{low:g}, {high:g}]")
        return labels.astype(np.float32)

    def abort(self) -> None:
        """Drop everything written so far (the temporary folder); the destination is untouched."""
        for writer in self.splits.values():
            writer.close()
        self.done = True
        shutil.rmtree(self.temporary, ignore_errors=True)

    def finish(self) -> Path:
        """Write the small arrays and the manifest, move the store into place; returns its folder."""
        if self.done:
            raise MsalignError(f"{self.folder}: store already finished")
        try:
            for name in SPLITS:
                if name not in self.splits or self.splits[name].rows == 0:
                    raise MsalignError(
                        f"{self.folder}: split {name!r}: no rows written (a store needs train, valid and test)"
                    )
            split_entries = {name: self.splits[name].finish(self.task) for name in SPLITS}
            given = self.feature_spec
            spec_json: dict[str, Any] | None = None
            if isinstance(given, FeatureSpec):
                spec = given
            else:  # another producer's JSON form, checked as a reader of this manifest checks it
                spec = read_feature_spec(given, self.temporary / MANIFEST)
                spec_json = spec_json_to_keep(spec, given)
            manifest = StoreManifest(
                name=self.name,
                metric_set=self.metric_set,
                task=self.task,
                num_classes=self.num_classes,
                modalities={m: ModalityEntry(dim=D, max_len=L) for m, (L, D) in self.modalities.items()},
                splits=split_entries,
                feature_spec=spec,
                feature_spec_json=spec_json,
                source=self.source,
                msalign_version=__version__,
                validated=ValidationRecord(),
            )
            write_manifest(self.temporary, manifest)
            load_store(self.temporary)  # headers, sizes and metadata as a reader will see them
            _install(self.temporary, self.folder, self.force)
        except BaseException:
            self.abort()
            raise
        self.done = True
        return self.folder


def _store_entries() -> list[str]:
    return [*SPLITS, MANIFEST]


def check_destination(folder: Path, force: bool) -> None:
    """Refuse a destination that is a file, or a non-empty folder that is not a store (unless ``force``,
    and then only when none of the store's names are taken: user files are never replaced)."""
    if folder.exists() and not folder.is_dir():
        raise MsalignError(f"{folder}: exists and is not a directory")
    if not folder.is_dir() or not any(folder.iterdir()) or is_store(folder):
        return
    if not force:
        raise MsalignError(
            f"{folder}: not empty and not a feature store; choose another folder or pass --force "
            "(the store's files are added beside the existing ones, none of which is touched)"
        )
    taken = [n for n in _store_entries() if (folder / n).exists()]
    if taken:
        raise MsalignError(
            f"{folder}: not a feature store but has {taken}, which a store would replace; choose another folder"
        )


def _install(temporary: Path, folder: Path, force: bool) -> None:
    """Move the finished store in ``temporary`` to ``folder``: one rename when ``folder`` is absent or
    empty; replacing a previous store, its manifest goes first (so no mixed store ever loads) and
    its own entries are removed; beside a non-store folder's files (``force``), entries move one by
    one with the manifest last."""
    check_destination(folder, force)
    if not folder.exists() or (folder.is_dir() and not any(folder.iterdir())):
        os.replace(temporary, folder)
        return
    old = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.", suffix=".replaced"))
    replacing = is_store(folder)
    if replacing:
        os.replace(folder / MANIFEST, old / MANIFEST)
    for entry in SPLITS:
        if replacing and (folder / entry).exists():
            os.replace(folder / entry, old / entry)
        os.replace(temporary / entry, folder / entry)
    os.replace(temporary / MANIFEST, folder / MANIFEST)
    shutil.rmtree(old, ignore_errors=True)  # only a previous store's own entries
    shutil.rmtree(temporary, ignore_errors=True)


def write_store(
    dataset: MultimodalDataset,
    folder: str | Path,
    *,
    force: bool = False,
    chunk_rows: int | None = None,
    source: str | None = None,
) -> Path:
    """Convert ``dataset`` (in memory, or itself a store) into a store at ``folder``, split by split
    in chunks of about 64 MB (``chunk_rows`` to choose); returns the folder."""
    dims, lens = dataset.dims, dataset.max_lengths
    writer = StoreWriter(
        folder,
        modalities={m: (lens[m], dims[m]) for m in dataset.modalities},
        name=dataset.name,
        metric_set=dataset.metric_set,
        task=dataset.task,
        num_classes=dataset.num_classes,
        feature_spec=dataset.feature_spec,
        source=source if source is not None else (dataset.source or dataset.name),
        force=force,
    )
    with writer:
        for name in SPLITS:
            split = dataset.split(name)
            if chunk_rows is None:
                row_bytes = sum(lens[m] * dims[m] * 4 for m in split.modalities)
                step = max(1, _CHUNK_BYTES // max(1, row_bytes))
            else:
                step = chunk_rows
            for start in range(0, len(split), step):
                stop = min(start + step, len(split))
                writer.append(
                    name,
                    {m: np.asarray(split.features[m][start:stop]) for m in split.modalities},
                    {m: split.lengths[m][start:stop] for m in split.modalities},
                    np.asarray(split.labels[start:stop]),
                    split.ids[start:stop],
                    None if split.raw_text is None else split.raw_text[start:stop],
                )
        return writer.finish()

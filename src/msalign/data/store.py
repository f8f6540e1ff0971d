"""The on-disk feature store: datasets larger than memory, read row by row.

A MOSEI-sized feature set (16k training clips x 500 frames; text 50x768, audio 500x74, vision
500x35 float32) is about 6 GB for the training split and 8.5 GB in all. A store keeps it on disk
and training reads each batch's rows when it needs them, so the process holds a batch, not the
dataset. ``msalign convert SOURCE OUT`` turns anything :func:`~msalign.data.load_dataset` loads
(an MMSA pickle, a feature directory, ``synthetic:...``, another store) into a store, and
:class:`StoreWriter` builds one chunk by chunk without ever holding the dataset in memory.

Layout of a store folder::

    store.json                 the manifest (below); written last, so a folder without it is no store
    train/text.npy             (N, L, D) float32 features, zero beyond each row's length
    train/text_lengths.npy     (N,) int64, 1 <= length <= L
    train/audio.npy ...        one pair per modality
    train/labels.npy           (N,) float32 scores, or int64 class indices
    train/ids.npy              (N,) str
    train/raw_text.npy         (N,) str, when the source has transcripts
    valid/..., test/...

Every array is a plain ``.npy`` file, so ``np.load(path, mmap_mode="r")`` reads it too.
``store.json`` holds ``format`` (``"msalign-feature-store"``), ``version``, ``name``,
``metric_set``, ``task``, ``num_classes``, ``feature_spec`` (the source's, see below),
``modalities`` (``{m: {"dim": D, "max_len": L}}``), ``splits`` (``{split: {"rows": N,
"raw_text": bool}}``), ``source`` (what it was converted from), ``msalign_version`` and
``validated``: the record that every feature value was checked while the store was written
(finite, lengths in 1..L, padding zero, no clip all padding in every modality; labels and ids).

Reading: positioned reads, not memory maps. :class:`DiskArray` serves ``x[rows, :longest]``
(what the training collate does), ``x[start:stop]``, ``x[index]`` and ``x[i]`` by reading only
the requested rows - and of each only the first ``longest`` frames - with ``os.preadv`` straight
into a preallocated numpy buffer. Why not ``np.memmap``: every page of a memory map that an epoch
touches is a file-backed resident page of the process and counts toward its RSS until the kernel
needs the memory back, so a memory-mapped reader's RSS climbs to the size of the data over an
epoch (memory limits of containers and schedulers count it; the OOM killer sees it). With
positioned reads the process holds one batch; the OS page cache keeps whatever of the files fits
in free memory, reclaimable and not charged to the process as RSS. Requested rows are sorted
before reading (reads go forward on disk, consecutive full rows in one read) and put back in the
requested order (duplicates allowed). A DiskArray pickles as its path, offset and shape only and
reopens its file lazily in each process (also after a fork, checked by ``os.getpid()``), so
DataLoader workers and process-pool or Ray trial workers receive a dataset cheaply.

Loading (:func:`load_store`) reads the manifest and the small arrays (lengths, labels, ids) and
checks every ``.npy`` header against the manifest (dtype, shape, file size: a truncated file is
an error naming it), then runs the metadata checks of :func:`~msalign.data.validate.validate_dataset`
(shapes, lengths, labels, duplicate ids) - but not the scans that read every feature value: those
ran when the store was written and the manifest records it. ``verify=True`` rescans everything
(chunk by chunk); a store whose manifest lacks the ``validated`` record is always rescanned.

``feature_spec`` is the source's, unchanged: the features ARE the source's, and
:func:`~msalign.training.checkpoint.check_feature_spec` compares every ``feature_spec`` key except
``source``, ``n_*`` and ``describer``, so adding store facts there would make a checkpoint trained
on a store refuse its own source data (and the reverse), and would make training on the store a
different run (``run_identity``) from training on the source. The store's own facts (format
version, source path, validation record) live at the top level of ``store.json`` instead. When a
subset of a pickle's or feature directory's modalities is loaded from a store, the per-modality
entries of ``feature_spec`` are trimmed to it, as those loaders do, so the spec equals what loading
the source with the same modalities gives.

What reads a feature array whole when given a DiskArray: ``np.asarray(x)`` (and anything that
calls it) and ``Split.subset`` (it reads the subset's rows - meant for small subsets). Everything
else reads in pieces: the training collate (one batch), DashFusion's hard-negative sampler (the
training split in batches of 256 through the same collate), validation (chunks of 512 rows, only
on ``verify``), the modality ablation of :mod:`msalign.evaluation.ablation` (chunked training mean, lazy
permuted and mean-filled views), prediction and report figures (through the data loader); the
profiler and models look at shapes only.

Converting reads the source through its loader (an MMSA pickle is read into memory whole, as it
is for training); sources larger than memory are written with :class:`StoreWriter` by whatever
produces them. A conversion writes into a hidden temporary folder beside OUT and renames it into
place at the end: a killed conversion leaves that ``.OUT.*.partial`` folder (safe to delete), never
a half store that loads.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from msalign.data.types import MODALITIES, SPLITS, MetricSet, MultimodalDataset, Split, Task
from msalign.data.validate import LABEL_RANGES, validate_dataset
from msalign.errors import MsalignError
from msalign.limits import check_alloc, regular_file, short_repr

MANIFEST = "store.json"
FORMAT = "msalign-feature-store"
VERSION = 1
_FEATURE_DTYPE = np.dtype("<f4")
_NPY_MAGIC = b"\x93NUMPY"
_CHUNK_BYTES = 64 << 20  # rows per chunk when converting or scanning: about this many bytes of features
_VALIDATED_CHECKS = ["finite", "lengths_in_range", "padding_zero", "not_all_padding", "labels", "ids"]
# Formats whose loaders key feature_spec entries by the loaded modalities (trimmed on a subset load).
_PER_MODALITY_SPEC_FORMATS = ("mmsa_pickle", "feature_dir")


# --- reading ---------------------------------------------------------------------------------------


_MAX_MANIFEST = 64 * 2**20


def _read_npy_header(path: Path, where: str) -> tuple[tuple[int, ...], np.dtype, bool, int, int]:
    """(shape, dtype, fortran_order, data offset, file size) of a .npy file, from its header only."""
    if path.exists():
        regular_file(path, where)  # a FIFO named like a store file would block open() forever
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
            elif version == (2, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
            else:
                raise ValueError(f"unsupported .npy version {version}")
            offset = f.tell()
            size = os.fstat(f.fileno()).st_size
    except FileNotFoundError:
        raise MsalignError(f"{where}: missing file") from None
    except PermissionError:
        raise MsalignError(f"{where}: permission denied") from None
    except OSError as e:
        raise MsalignError(f"{where}: cannot read ({e.strerror or e})") from None
    except Exception as e:  # ValueError / SyntaxError ... from a damaged header
        detail = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise MsalignError(f"{where}: not a readable .npy file (damaged header: {detail})") from None
    return tuple(int(n) for n in shape), np.dtype(dtype), bool(fortran), offset, size


class DiskArray:
    """A read-only (N, L, D) float32 array in a ``.npy`` file, read on indexing (see the module docstring).

    Indexing: ``x[i]``, ``x[start:stop(:step)]``, ``x[int array or list]`` (any order, duplicates
    allowed), ``x[bool mask]``, each optionally followed by a time index (``x[rows, :longest]``,
    ``x[rows, t]``) and a feature index (applied in memory). Returns a new numpy array.
    ``np.asarray(x)`` reads the whole array: avoid it for big data (iterate :func:`iter_row_chunks`).
    """

    __array_priority__ = 0

    def __init__(self, path: str | os.PathLike, shape: Sequence[int], offset: int, dtype: Any = _FEATURE_DTYPE):
        self.path = str(path)
        self.shape: tuple[int, ...] = tuple(int(n) for n in shape)
        if len(self.shape) != 3:
            raise MsalignError(f"{self.path}: expected shape (N, L, D), got shape {self.shape}")
        self.dtype = np.dtype(dtype)
        self.offset = int(offset)
        self._fd: int | None = None
        self._pid: int | None = None

    @classmethod
    def open(cls, path: str | os.PathLike, where: str | None = None) -> DiskArray:
        """A DiskArray over an existing C-order float32 (N, L, D) ``.npy`` file (header checked, size checked)."""
        path = Path(path)
        where = where or str(path)
        shape, dtype, fortran, offset, size = _read_npy_header(path, where)
        if dtype != _FEATURE_DTYPE or fortran or len(shape) != 3:
            raise MsalignError(f"{where}: expected C-order float32 (N, L, D), got {dtype} shape {shape}"
                               + (" in Fortran order" if fortran else ""))
        _check_size(where, shape, dtype, offset, size)
        return cls(path, shape, offset, dtype)

    # numpy-like surface
    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    @property
    def nbytes(self) -> int:
        return self.size * self.dtype.itemsize

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        return f"DiskArray({self.path!r}, shape={self.shape}, dtype={self.dtype})"

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        whole = self[:]
        return whole if dtype is None else whole.astype(dtype, copy=False)

    # pickling: path, offset and shape only; the file is reopened lazily in the receiving process
    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "shape": self.shape, "offset": self.offset, "dtype": self.dtype.str}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.path, self.shape, self.offset = state["path"], tuple(state["shape"]), state["offset"]
        self.dtype = np.dtype(state["dtype"])
        self._fd, self._pid = None, None

    def close(self) -> None:
        if self._fd is not None and self._pid == os.getpid():
            try:
                os.close(self._fd)
            except OSError:
                pass
        self._fd, self._pid = None, None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    def _descriptor(self) -> int:
        if self._fd is None or self._pid != os.getpid():  # first use, or a forked child: its own descriptor
            try:
                fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
            except OSError as e:
                raise MsalignError(f"{self.path}: cannot open ({e.strerror or e})") from None
            size = os.fstat(fd).st_size
            if size != self.offset + self.nbytes:
                os.close(fd)
                raise MsalignError(f"{self.path}: changed on disk: {size} bytes, expected "
                                   f"{self.offset + self.nbytes} for shape {self.shape}")
            self._fd, self._pid = fd, os.getpid()
        return self._fd

    def _read_into(self, view: memoryview, position: int) -> None:
        fd = self._descriptor()
        while len(view):
            if hasattr(os, "preadv"):
                got = os.preadv(fd, [view], position)
            else:  # no preadv (e.g. older macOS): one copy
                data = os.pread(fd, len(view), position)
                got = len(data)
                view[:got] = data
            if got == 0:
                raise MsalignError(f"{self.path}: truncated: no data at byte {position} (shape {self.shape})")
            view, position = view[got:], position + got

    def read_rows(self, rows: np.ndarray, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Frames ``start:stop`` of the given rows (in range, any order), shape (len(rows), stop - start, D)."""
        n_rows, length, dim = self.shape
        stop = length if stop is None else stop
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        frames = max(stop - start, 0)
        if len(rows) > 1 and not bool(np.all(rows[1:] > rows[:-1])):  # read sorted and once, then put back
            unique, inverse = np.unique(rows, return_inverse=True)
            return self.read_rows(unique, start, stop)[inverse]
        out = np.empty((len(rows), frames, dim), dtype=self.dtype)
        if out.size == 0:
            return out
        buffer = memoryview(out).cast("B")
        frame_bytes = dim * self.dtype.itemsize
        row_bytes = length * frame_bytes
        if start == 0 and stop == length:  # whole rows: one read per run of consecutive rows
            breaks = np.flatnonzero(np.diff(rows) != 1) + 1
            for first, last in zip(np.r_[0, breaks].tolist(), np.r_[breaks, len(rows)].tolist()):
                self._read_into(buffer[first * row_bytes : last * row_bytes], self.offset + int(rows[first]) * row_bytes)
        else:
            span = frames * frame_bytes
            base = self.offset + start * frame_bytes
            for i, row in enumerate(rows.tolist()):
                self._read_into(buffer[i * span : (i + 1) * span], base + row * row_bytes)
        return out

    def _rows(self, key: Any) -> tuple[np.ndarray, tuple[int, ...] | None]:
        """Row indices for ``key`` and the leading shape of the result (None: a single row, axis dropped)."""
        n = self.shape[0]
        if isinstance(key, (int, np.integer)):
            row = int(key) + (n if key < 0 else 0)
            if not 0 <= row < n:
                raise IndexError(f"index {key} is out of bounds for axis 0 with size {n}")
            return np.array([row], dtype=np.int64), None
        if isinstance(key, slice):
            rows = np.arange(*key.indices(n), dtype=np.int64)
            return rows, (len(rows),)
        index = np.asarray(key)
        if index.dtype == bool:
            if index.shape != (n,):
                raise IndexError(f"boolean index of shape {index.shape} does not match axis 0 of size {n}")
            rows = np.flatnonzero(index)
            return rows, (len(rows),)
        if index.size == 0:
            return np.zeros(0, dtype=np.int64), index.shape
        if not np.issubdtype(index.dtype, np.integer):
            raise IndexError(f"DiskArray rows must be an int, a slice, or an int or bool array, not {index.dtype}")
        rows = index.astype(np.int64).reshape(-1)
        rows = np.where(rows < 0, rows + n, rows)
        if rows.size and (rows.min() < 0 or rows.max() >= n):
            bad = index.reshape(-1)[(rows < 0) | (rows >= n)][0]
            raise IndexError(f"index {bad} is out of bounds for axis 0 with size {n}")
        return rows, index.shape

    def __getitem__(self, key: Any) -> np.ndarray:
        key = key if isinstance(key, tuple) else (key,)
        if any(k is Ellipsis for k in key):
            at = next(i for i, k in enumerate(key) if k is Ellipsis)
            key = key[:at] + (slice(None),) * (self.ndim - len(key) + 1) + key[at + 1 :]
        if len(key) > self.ndim or any(k is None for k in key):
            raise IndexError(f"DiskArray of shape {self.shape}: unsupported index {key!r}")
        rows, lead = self._rows(key[0])
        time_key = key[1] if len(key) > 1 else slice(None)
        rest = key[2:]
        length = self.shape[1]
        if isinstance(time_key, slice) and time_key.step in (None, 1):
            start, stop, _ = time_key.indices(length)
            stop = max(start, stop)
            after: Any = slice(None)
        elif isinstance(time_key, (int, np.integer)):
            start = int(time_key) + (length if time_key < 0 else 0)
            if not 0 <= start < length:
                raise IndexError(f"index {time_key} is out of bounds for axis 1 with size {length}")
            stop, after = start + 1, 0
        else:  # a stepped slice or an index array: read every frame, index in memory
            start, stop, after = 0, length, time_key
        out = self.read_rows(rows, start, stop)
        if after != slice(None) or rest:
            out = out[(slice(None), after, *rest)]
        if lead is None:
            return out[0]
        return out.reshape(lead + out.shape[1:])


def _check_size(where: str, shape: tuple[int, ...], dtype: np.dtype, offset: int, size: int) -> None:
    expected = offset + int(np.prod(shape)) * dtype.itemsize
    if size < expected:
        raise MsalignError(f"{where}: truncated: {size - offset} of {expected - offset} data bytes (shape {shape})")
    if size > expected:
        raise MsalignError(f"{where}: {size - expected} bytes after the data of shape {shape} (not a .npy written whole)")


def iter_row_chunks(x: Any, chunk_rows: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
    """``(start, x[start:start + chunk])`` over the rows of an in-memory or on-disk (N, L, D) array,
    about 64 MB per chunk unless ``chunk_rows`` is given."""
    n = len(x)
    if chunk_rows is None:
        row_bytes = max(1, int(np.prod(x.shape[1:])) * np.dtype(x.dtype).itemsize)
        chunk_rows = max(1, _CHUNK_BYTES // row_bytes)
    for start in range(0, n, chunk_rows):
        yield start, np.asarray(x[start : start + chunk_rows])


def _load_small(path: Path, where: str, shape: tuple[int, ...], kind: str) -> np.ndarray:
    """A small array (lengths, labels, ids, raw_text) read whole with pickles disallowed, shape-checked."""
    header_shape, dtype, _, offset, size = _read_npy_header(path, where)
    if dtype.hasobject:
        raise MsalignError(f"{where}: holds Python objects (dtype {dtype}); expected {kind}")
    _check_size(where, header_shape, dtype, offset, size)
    check_alloc(size - offset, where)
    try:
        x = np.load(path, allow_pickle=False)
    except Exception as e:
        detail = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise MsalignError(f"{where}: not a readable .npy file ({detail})") from None
    if x.shape != shape:
        raise MsalignError(f"{where}: expected shape {shape}, got shape {x.shape}")
    ok = {"int": np.issubdtype(x.dtype, np.integer), "float": np.issubdtype(x.dtype, np.floating),
          "number": np.issubdtype(x.dtype, np.number), "str": x.dtype.kind == "U"}[kind]
    if not ok:
        raise MsalignError(f"{where}: expected {kind} values, got dtype {x.dtype} (shape {x.shape})")
    return x


def read_manifest(folder: str | Path) -> dict[str, Any]:
    """The checked ``store.json`` of a store folder; one-line errors naming the file and key."""
    path = Path(folder) / MANIFEST
    try:
        if path.exists() and regular_file(path).stat().st_size > _MAX_MANIFEST:
            raise MsalignError(f"{path}: {path.stat().st_size:,} bytes; a store manifest is a few KB")
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise MsalignError(f"{path}: missing (not a feature store)") from None
    except (OSError, UnicodeDecodeError) as e:
        raise MsalignError(f"{path}: cannot read ({getattr(e, 'strerror', None) or e})") from None
    except ValueError as e:
        raise MsalignError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(manifest, dict):
        raise MsalignError(f"{path}: expected a JSON object, got {type(manifest).__name__}")
    if manifest.get("format") != FORMAT:
        raise MsalignError(f"{path}: key 'format': expected {FORMAT!r}, got {short_repr(manifest.get('format'))}")
    for key, kind in (("version", int), ("name", str), ("metric_set", str), ("task", str), ("feature_spec", dict),
                      ("modalities", dict), ("splits", dict)):
        if key not in manifest:
            raise MsalignError(f"{path}: key {key!r}: missing (has {sorted(manifest)})")
        if not isinstance(manifest[key], kind) or isinstance(manifest[key], bool):
            raise MsalignError(f"{path}: key {key!r}: expected {kind.__name__}, got {type(manifest[key]).__name__}")
    if manifest["version"] > VERSION:
        raise MsalignError(f"{path}: key 'version': store format {manifest['version']} is newer than this msalign "
                           f"reads ({VERSION}); upgrade msalign")
    if manifest["metric_set"] not in ("mosi", "mosei", "sims", "iemocap"):
        raise MsalignError(f"{path}: key 'metric_set': {short_repr(manifest['metric_set'])} is not mosi/mosei/sims/iemocap")
    if manifest["task"] not in ("regression", "classification"):
        raise MsalignError(f"{path}: key 'task': {short_repr(manifest['task'])} is not regression/classification")
    if manifest["task"] == "classification" and not isinstance(manifest.get("num_classes"), int):
        raise MsalignError(f"{path}: key 'num_classes': a classification store needs an integer class count")
    mods = manifest["modalities"]
    if not mods or any(m not in MODALITIES for m in mods):
        raise MsalignError(f"{path}: key 'modalities': expected some of {list(MODALITIES)}, got {sorted(mods)}")
    for m, facts in mods.items():
        if not (isinstance(facts, dict) and all(isinstance(facts.get(k), int) and facts[k] >= 1 for k in ("dim", "max_len"))):
            raise MsalignError(f"{path}: key 'modalities.{m}': expected positive integers 'dim' and 'max_len', got {short_repr(facts)}")
    for name in SPLITS:
        facts = manifest["splits"].get(name)
        if not isinstance(facts, dict) or not isinstance(facts.get("rows"), int) or facts["rows"] < 0:
            raise MsalignError(f"{path}: key 'splits.{name}': expected {{'rows': N, 'raw_text': bool}}, got {short_repr(facts)}")
    return manifest


def is_store(folder: str | Path) -> bool:
    """True when ``folder`` is a directory holding a store manifest."""
    return (Path(folder) / MANIFEST).is_file()


def _spec_for_modalities(spec: dict[str, Any], keep: Sequence[str], stored: Sequence[str]) -> dict[str, Any]:
    """``spec`` with its per-modality entries trimmed to ``keep``, for sources whose loaders trim them."""
    spec = json.loads(json.dumps(spec))  # a deep copy
    if spec.get("format") not in _PER_MODALITY_SPEC_FORMATS or set(keep) == set(stored):
        return spec
    if isinstance(spec.get("modalities"), dict):
        spec["modalities"] = {m: v for m, v in spec["modalities"].items() if m in keep}
    options = spec.get("options")
    if isinstance(options, dict) and isinstance(options.get("standardize"), dict):
        options["standardize"] = {m: v for m, v in options["standardize"].items() if m in keep} or False
    return spec


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
    stored = [m for m in MODALITIES if m in manifest["modalities"]]
    if isinstance(modalities, str):
        modalities = [m.strip() for m in modalities.split(",") if m.strip()]
    wanted = stored if modalities is None else [m for m in MODALITIES if m in modalities]
    unknown = [m for m in (modalities or []) if m not in MODALITIES]
    if unknown:
        raise MsalignError(f"{folder}: unknown modality {unknown[0]!r} (choose from {list(MODALITIES)})")
    missing = [m for m in wanted if m not in stored]
    if missing or not wanted:
        raise MsalignError(f"{folder}: store lacks modality {missing or list(modalities or [])} (has {stored})")
    if task is not None and task != manifest["task"]:
        raise MsalignError(f"{manifest_path}: key 'task': the store holds {manifest['task']} labels, not --task {task}")
    task = manifest["task"]
    if metric_set is not None:
        if metric_set not in ("mosi", "mosei", "sims", "iemocap"):
            raise MsalignError(f"{folder}: metric set {metric_set!r} is not mosi/mosei/sims/iemocap")
        if ("classification" if metric_set == "iemocap" else "regression") != task:
            raise MsalignError(f"{folder}: metric set {metric_set!r} does not fit the store's {task} labels "
                               f"(recorded metric set {manifest['metric_set']!r})")
    classes = manifest.get("num_classes") if task == "classification" else None
    if task == "classification" and num_classes is not None:
        classes = int(num_classes)

    splits: dict[str, Split] = {}
    for name in SPLITS:
        n = manifest["splits"][name]["rows"]
        directory = folder / name
        features: dict[str, DiskArray] = {}
        lengths: dict[str, np.ndarray] = {}
        for m in wanted:
            facts = manifest["modalities"][m]
            path = directory / f"{m}.npy"
            where = f"{path}: split {name!r}, key {m!r}"
            x = DiskArray.open(path, where)
            expected = (n, facts["max_len"], facts["dim"])
            if x.shape != expected:
                raise MsalignError(f"{where}: shape {x.shape}, but {manifest_path} says {expected}")
            features[m] = x
            key = f"{m}_lengths"
            lengths[m] = _load_small(directory / f"{key}.npy", f"{directory / key}.npy: split {name!r}, key {key!r}",
                                     (n,), "int").astype(np.int64, copy=False)
        labels_where = f"{directory / 'labels.npy'}: split {name!r}, key 'labels'"
        labels = _load_small(directory / "labels.npy", labels_where, (n,), "int" if task == "classification" else "number")
        labels = labels.astype(np.int64 if task == "classification" else np.float32, copy=False)
        ids = _load_small(directory / "ids.npy", f"{directory / 'ids.npy'}: split {name!r}, key 'id'", (n,), "str").tolist()
        raw_text = None
        if manifest["splits"][name].get("raw_text"):
            raw_text = _load_small(directory / "raw_text.npy", f"{directory / 'raw_text.npy'}: split {name!r}, key 'raw_text'",
                                   (n,), "str").tolist()
        splits[name] = Split(name=name, features=features, lengths=lengths, labels=labels, ids=ids,  # type: ignore[arg-type]
                             raw_text=raw_text)
    validated = manifest.get("validated")
    scan = verify or not (isinstance(validated, dict) and validated.get("contents") is True)
    ds = MultimodalDataset(
        name=manifest["name"],
        splits=splits,
        metric_set=metric_set or manifest["metric_set"],  # type: ignore[arg-type]
        task=task,
        num_classes=classes,
        source=str(folder),
        feature_spec=_spec_for_modalities(manifest["feature_spec"], wanted, stored),
    )
    validate_dataset(ds, contents=scan)
    return ds


# --- writing ---------------------------------------------------------------------------------------


def _npy_header(shape: tuple[int, ...], reserve: int | None = None) -> bytes:
    """A version-1.0 .npy header for a C-order little-endian float32 array, padded to ``reserve`` bytes
    (default: the smallest multiple of 64 that holds the header for a 19-digit row count)."""
    text = "{'descr': '<f4', 'fortran_order': False, 'shape': %r, }" % (tuple(shape),)
    if reserve is None:
        widest = "{'descr': '<f4', 'fortran_order': False, 'shape': %r, }" % ((10**18, *shape[1:]),)
        reserve = -(-(len(_NPY_MAGIC) + 4 + len(widest) + 1) // 64) * 64
    pad = reserve - len(_NPY_MAGIC) - 4 - len(text) - 1
    if pad < 0:
        raise MsalignError(f"feature store: shape {shape} does not fit a {reserve}-byte .npy header")
    body = (text + " " * pad + "\n").encode("latin1")
    return _NPY_MAGIC + bytes([1, 0]) + struct.pack("<H", len(body)) + body


class _SplitWriter:
    """Features appended straight to ``<split>/<modality>.npy`` (header rewritten at the end); the
    small arrays are kept in memory and saved when the store is finished."""

    def __init__(self, directory: Path, name: str, modalities: Mapping[str, tuple[int, int]]):
        self.name = name
        self.directory = directory
        directory.mkdir()
        self.modalities = dict(modalities)
        self.files = {m: open(directory / f"{m}.npy", "wb") for m in self.modalities}
        self.headers = {m: len(_npy_header((0, L, D))) for m, (L, D) in self.modalities.items()}
        for m, (L, D) in self.modalities.items():
            self.files[m].write(_npy_header((0, L, D)))
        self.rows = 0
        self.lengths: dict[str, list[np.ndarray]] = {m: [] for m in self.modalities}
        self.labels: list[np.ndarray] = []
        self.ids: list[str] = []
        self.raw_text: list[str] | None = None

    def finish(self, task: str) -> dict[str, Any]:
        for m, (L, D) in self.modalities.items():
            f = self.files[m]
            f.seek(0)
            f.write(_npy_header((self.rows, L, D), self.headers[m]))
            f.close()
            np.save(self.directory / f"{m}_lengths.npy", np.concatenate(self.lengths[m]).astype(np.int64)
                    if self.lengths[m] else np.zeros(0, dtype=np.int64))
        dtype = np.int64 if task == "classification" else np.float32
        np.save(self.directory / "labels.npy", np.concatenate(self.labels).astype(dtype) if self.labels
                else np.zeros(0, dtype=dtype))
        np.save(self.directory / "ids.npy", np.asarray(self.ids, dtype=str) if self.ids else np.zeros(0, dtype="<U1"))
        if self.raw_text is not None:
            np.save(self.directory / "raw_text.npy", np.asarray(self.raw_text, dtype=str) if self.raw_text
                    else np.zeros(0, dtype="<U1"))
        return {"rows": self.rows, "raw_text": self.raw_text is not None}

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
        feature_spec: Mapping[str, Any] | None = None,
        source: str = "",
        force: bool = False,
    ):
        self.folder = Path(folder)
        unknown = [m for m in modalities if m not in MODALITIES]
        if unknown or not modalities:
            raise MsalignError(f"{self.folder}: modalities must be some of {list(MODALITIES)}, got {sorted(modalities)}")
        self.modalities = {m: (int(modalities[m][0]), int(modalities[m][1])) for m in MODALITIES if m in modalities}
        for m, (L, D) in self.modalities.items():
            if L < 1 or D < 1:
                raise MsalignError(f"{self.folder}: modality {m!r}: max_len and dim must be >= 1, got {L}x{D}")
        if metric_set not in ("mosi", "mosei", "sims", "iemocap"):
            raise MsalignError(f"{self.folder}: metric set {metric_set!r} is not mosi/mosei/sims/iemocap")
        self.task: Task = task or ("classification" if metric_set == "iemocap" else "regression")
        if self.task == "classification" and not num_classes:
            raise MsalignError(f"{self.folder}: a classification store needs num_classes")
        self.meta = {"name": name, "metric_set": metric_set, "task": self.task,
                     "num_classes": int(num_classes) if self.task == "classification" else None,
                     "feature_spec": json.loads(json.dumps(dict(feature_spec or {}))), "source": source}
        _check_destination(self.folder, force)
        self.force = force
        self.folder.parent.mkdir(parents=True, exist_ok=True)
        self.temporary = Path(tempfile.mkdtemp(dir=self.folder.parent, prefix=f".{self.folder.name}.", suffix=".partial"))
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
            raise MsalignError(f"{self.folder}: split {split!r}: a chunk needs features and lengths of exactly "
                               f"{list(self.modalities)}, got {sorted(features)} and {sorted(lengths)}")
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
            if length.shape != (n,) or not (np.issubdtype(length.dtype, np.integer) or
                                           (length.size and np.all(length == np.round(length)))):
                raise MsalignError(f"{self._where(split, key)}: expected {n} integer lengths, got {length.dtype} shape {length.shape}")
            length = length.astype(np.int64)
            bad = np.flatnonzero((length < 1) | (length > L))
            if bad.size:
                r = int(bad[0])
                raise MsalignError(f"{self._where(split, key)}: length {length[r]} at row {first + r} outside 1..{L}")
            finite = np.isfinite(x).all(axis=(1, 2))
            if not finite.all():
                r = int(np.flatnonzero(~finite)[0])
                kind = "NaN" if np.isnan(x[r]).any() else "inf"
                raise MsalignError(f"{where}: {kind} at row {first + r} (chunk shape {x.shape})")
            padding = np.arange(L)[None, :] >= length[:, None]
            dirty = (x != 0).any(axis=2) & padding
            if dirty.any():
                r = int(np.flatnonzero(dirty.any(axis=1))[0])
                raise MsalignError(f"{where}: non-zero features beyond length {length[r]} at row {first + r} "
                                   "(zero the padding, e.g. msalign.data.validate.zero_padding)")
            any_data |= (x != 0).any(axis=(1, 2))
            chunk[m] = x
            writer.lengths[m].append(length)
        empty = np.flatnonzero(~any_data)
        if empty.size:
            r = int(empty[0])
            raise MsalignError(f"{self._where(split, '/'.join(self.modalities))}: row {first + r} (id {ids[r]!r}) is all "
                               "padding in every modality")
        seen_here: set[str] = set()
        for i, clip in enumerate(ids):
            if clip in self.owner or clip in seen_here:
                other = self.owner.get(clip, split)
                raise MsalignError(f"{self._where(split, 'id')}: duplicate id {clip!r} at row {first + i} "
                                   f"(already in split {other!r})")
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
        bad = np.flatnonzero(~np.isfinite(values))
        if bad.size:
            raise MsalignError(f"{where}: {'NaN' if np.isnan(values[bad[0]]) else 'inf'} at row {first + int(bad[0])}")
        if self.task == "classification":
            hi = self.meta["num_classes"] - 1
            bad = np.flatnonzero((values != np.round(values)) | (values < 0) | (values > hi))
            if bad.size:
                r = int(bad[0])
                raise MsalignError(f"{where}: class {values[r]:g} at row {first + r} is not an integer in 0..{hi}")
            return values.astype(np.int64)
        if self.label_range is not None:
            lo, hi = self.label_range
            bad = np.flatnonzero((values < lo - 1e-6) | (values > hi + 1e-6))
            if bad.size:
                r = int(bad[0])
                raise MsalignError(f"{where}: label {values[r]:g} at row {first + r} outside [{lo:g}, {hi:g}]")
        return labels.astype(np.float32)

    def abort(self) -> None:
        """Drop everything written so far (the temporary folder); the destination is untouched."""
        for writer in self.splits.values():
            writer.close()
        self.done = True
        shutil.rmtree(self.temporary, ignore_errors=True)

    def finish(self) -> Path:
        """Write the small arrays and the manifest, move the store into place; returns its folder."""
        from msalign import __version__

        if self.done:
            raise MsalignError(f"{self.folder}: store already finished")
        try:
            for name in SPLITS:
                if name not in self.splits or self.splits[name].rows == 0:
                    raise MsalignError(f"{self.folder}: split {name!r}: no rows written (a store needs train, valid and test)")
            split_facts = {name: self.splits[name].finish(self.task) for name in SPLITS}
            manifest = {
                "format": FORMAT,
                "version": VERSION,
                **{k: self.meta[k] for k in ("name", "metric_set", "task", "num_classes")},
                "modalities": {m: {"dim": D, "max_len": L} for m, (L, D) in self.modalities.items()},
                "splits": split_facts,
                "feature_spec": self.meta["feature_spec"],
                "source": self.meta["source"],
                "msalign_version": __version__,
                "validated": {"contents": True, "checks": _VALIDATED_CHECKS},
            }
            (self.temporary / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
            load_store(self.temporary)  # headers, sizes and metadata as a reader will see them
            _install(self.temporary, self.folder, self.force)
        except BaseException:
            self.abort()
            raise
        self.done = True
        return self.folder


def _store_entries() -> list[str]:
    return [*SPLITS, MANIFEST]


def _check_destination(folder: Path, force: bool) -> None:
    """Refuse a destination that is a file, or a non-empty folder that is not a store (unless ``force``,
    and then only when none of the store's names are taken: user files are never replaced)."""
    if folder.exists() and not folder.is_dir():
        raise MsalignError(f"{folder}: exists and is not a directory")
    if not folder.is_dir() or not any(folder.iterdir()) or is_store(folder):
        return
    if not force:
        raise MsalignError(f"{folder}: not empty and not a feature store; choose another folder or pass --force "
                           "(the store's files are added beside the existing ones, none of which is touched)")
    taken = [n for n in _store_entries() if (folder / n).exists()]
    if taken:
        raise MsalignError(f"{folder}: not a feature store but has {taken}, which a store would replace; "
                           "choose another folder")


def _install(temporary: Path, folder: Path, force: bool) -> None:
    """Move the finished store in ``temporary`` to ``folder``: one rename when ``folder`` is absent or
    empty; replacing a previous store, its manifest goes first (so no mixed store ever loads) and
    its own entries are removed; beside a non-store folder's files (``force``), entries move one by
    one with the manifest last."""
    _check_destination(folder, force)
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


def write_store(dataset: MultimodalDataset, folder: str | Path, *, force: bool = False,
                chunk_rows: int | None = None, source: str | None = None) -> Path:
    """Convert ``dataset`` (in memory, or itself a store) into a store at ``folder``, split by split
    in chunks of about 64 MB (``chunk_rows`` to choose); returns the folder."""
    dims, lens = dataset.dims, dataset.max_lengths
    writer = StoreWriter(
        folder, modalities={m: (lens[m], dims[m]) for m in dataset.modalities}, name=dataset.name,
        metric_set=dataset.metric_set, task=dataset.task, num_classes=dataset.num_classes,
        feature_spec=dataset.feature_spec, source=source if source is not None else (dataset.source or dataset.name),
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


def store_sizes(folder: str | Path) -> dict[str, dict[str, Any]]:
    """Per split: rows and bytes on disk (all its files)."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    return {name: {"rows": manifest["splits"][name]["rows"],
                   "bytes": sum(p.stat().st_size for p in (folder / name).iterdir() if p.is_file())}
            for name in SPLITS}


__all__ = ["FORMAT", "MANIFEST", "VERSION", "DiskArray", "StoreWriter", "is_store", "iter_row_chunks",
           "load_store", "read_manifest", "store_sizes", "write_store"]

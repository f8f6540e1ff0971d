"""``DiskArray``: a read-only (N, L, D) float32 ``.npy`` file read row by row with positioned reads
(see :mod:`msalign.data.store` for why not a memory map)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from msalign.data.store.npy_header import FEATURE_DTYPE, check_size, read_npy_header
from msalign.errors import MsalignError


class DiskArray:
    """A read-only (N, L, D) float32 array in a ``.npy`` file, read on indexing (see the module docstring).

    Indexing: ``x[i]``, ``x[start:stop(:step)]``, ``x[int array or list]`` (any order, duplicates
    allowed), ``x[bool mask]``, each optionally followed by a time index (``x[rows, :longest]``,
    ``x[rows, t]``) and a feature index (applied in memory). Returns a new numpy array.
    ``np.asarray(x)`` reads the whole array: avoid it for big data (read slices of rows).
    """

    __array_priority__ = 0

    def __init__(self, path: str | os.PathLike, shape: Sequence[int], offset: int, dtype: Any = FEATURE_DTYPE):
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
        shape, dtype, fortran, offset, size = read_npy_header(path, where)
        if dtype != FEATURE_DTYPE or fortran or len(shape) != 3:
            raise MsalignError(
                f"{where}: expected C-order float32 (N, L, D), got {dtype} shape {shape}"
                + (" in Fortran order" if fortran else "")
            )
        check_size(where, shape, dtype, offset, size)
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
            with contextlib.suppress(OSError):
                os.close(self._fd)
        self._fd, self._pid = None, None

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()

    def _descriptor(self) -> int:
        if self._fd is None or self._pid != os.getpid():  # first use, or a forked child: its own descriptor
            try:
                fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
            except OSError as e:
                raise MsalignError(f"{self.path}: cannot open ({e.strerror or e})") from None
            size = os.fstat(fd).st_size
            if size != self.offset + self.nbytes:
                os.close(fd)
                raise MsalignError(
                    f"{self.path}: changed on disk: {size} bytes, expected "
                    f"{self.offset + self.nbytes} for shape {self.shape}"
                )
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
        _, length, dim = self.shape
        stop = length if stop is None else stop
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        frames = max(stop - start, 0)
        if len(rows) > 1 and not bool(np.all(rows[1:] > rows[:-1])):  # read sorted and once, then put back
            unique, inverse = np.unique(rows, return_inverse=True)
            return self.read_rows(unique, start, stop)[inverse]
        out = np.empty((len(rows), frames, dim), dtype=self.dtype)
        if out.size == 0:
            return out
        buffer = out.data.cast("B")
        frame_bytes = dim * self.dtype.itemsize
        row_bytes = length * frame_bytes
        if start == 0 and stop == length:  # whole rows: one read per run of consecutive rows
            breaks = np.flatnonzero(np.diff(rows) != 1) + 1
            for first, last in zip(np.r_[0, breaks].tolist(), np.r_[breaks, len(rows)].tolist(), strict=True):
                self._read_into(
                    buffer[first * row_bytes : last * row_bytes], self.offset + int(rows[first]) * row_bytes
                )
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

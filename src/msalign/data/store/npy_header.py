"""The ``.npy`` header of a feature store's files: read without loading the array, written for
an array whose row count is only known at the end (the header is rewritten in place)."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np

from msalign.errors import MsalignError
from msalign.limits import regular_file

FEATURE_DTYPE = np.dtype("<f4")
NPY_MAGIC = b"\x93NUMPY"


def read_npy_header(path: Path, where: str) -> tuple[tuple[int, ...], np.dtype, bool, int, int]:
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


def check_size(where: str, shape: tuple[int, ...], dtype: np.dtype, offset: int, size: int) -> None:
    expected = offset + int(np.prod(shape)) * dtype.itemsize
    if size < expected:
        raise MsalignError(f"{where}: truncated: {size - offset} of {expected - offset} data bytes (shape {shape})")
    if size > expected:
        raise MsalignError(
            f"{where}: {size - expected} bytes after the data of shape {shape} (not a .npy written whole)"
        )


def _header_text(shape: tuple[int, ...]) -> str:
    """The header's dict literal, as numpy writes it for a float32 C-order array."""
    return f"{{'descr': '<f4', 'fortran_order': False, 'shape': {shape!r}, }}"


def npy_header(shape: tuple[int, ...], reserve: int | None = None) -> bytes:
    """A version-1.0 .npy header for a C-order little-endian float32 array, padded to ``reserve`` bytes
    (default: the smallest multiple of 64 that holds the header for a 19-digit row count)."""
    text = _header_text(tuple(shape))
    if reserve is None:
        widest = _header_text((10**18, *shape[1:]))
        reserve = -(-(len(NPY_MAGIC) + 4 + len(widest) + 1) // 64) * 64
    pad = reserve - len(NPY_MAGIC) - 4 - len(text) - 1
    if pad < 0:
        raise MsalignError(f"feature store: shape {shape} does not fit a {reserve}-byte .npy header")
    body = (text + " " * pad + "\n").encode("latin1")
    return NPY_MAGIC + bytes([1, 0]) + struct.pack("<H", len(body)) + body

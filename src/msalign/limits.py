"""Bounds on what an input file may make msalign do, in one place.

* :data:`MAX_ALLOC`: the most bytes any one input file may make a loader allocate before it is
  refused (default 4 GB; ``MSALIGN_MAX_ALLOC`` in bytes, or with a K/M/G/T suffix). Every loader
  checks the sizes a file *declares* (array shapes, byte strings, zip members) against this limit
  and against the file's own size before allocating anything.
* :func:`regular_file`: data files are opened only when they are regular files, so a FIFO or a
  device named ``audio.npz`` is refused instead of blocking the loader forever
  (:func:`read_regular_json` reads a JSON object so).
* :func:`short_repr`: a user's value formatted into an error message is cut to a bounded length,
  so a crafted value (a huge string, a YAML alias bomb) cannot make the message itself unbounded.
"""

from __future__ import annotations

import json
import math
import os
import reprlib
import stat
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from msalign.errors import MsalignError

_UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


def _parse_size(text: str) -> int:
    text = text.strip().upper().removesuffix("B")
    unit = text[-1:] if text[-1:] in _UNITS and text[-1:] else ""
    number = text[: len(text) - len(unit)]
    try:
        value = int(float(number) * _UNITS[unit])
    except ValueError:
        raise MsalignError(f"MSALIGN_MAX_ALLOC={short_repr(text)}: expected a size in bytes, e.g. 4G or 500M") from None
    if value <= 0:
        raise MsalignError(f"MSALIGN_MAX_ALLOC={short_repr(text)}: must be positive")
    return value


def max_alloc() -> int:
    """The allocation limit in bytes: ``MSALIGN_MAX_ALLOC`` when set, else 4 GB. Read on each call
    so a test (or a library user) can change it without re-importing."""
    text = os.environ.get("MSALIGN_MAX_ALLOC", "").strip()
    return _parse_size(text) if text else 4 * 2**30


def check_alloc(nbytes: int, what: str) -> None:
    """Refuse allocating ``nbytes`` for ``what`` (a file and key) beyond :func:`max_alloc`."""
    limit = max_alloc()
    if nbytes < 0 or nbytes > limit:
        raise MsalignError(f"{what}: declares {nbytes:,} bytes, more than the limit of {limit:,} (MSALIGN_MAX_ALLOC)")


def regular_file(path: str | Path, what: str = "") -> Path:
    """``path`` if it is a regular file (symlinks followed); one clear error otherwise."""
    path = Path(path)
    name = what or str(path)
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise MsalignError(f"{name}: no such file") from None
    except PermissionError:
        raise MsalignError(f"{name}: permission denied") from None
    except OSError as error:
        raise MsalignError(f"{name}: cannot read ({error.strerror or error})") from None
    if stat.S_ISDIR(mode):
        raise MsalignError(f"{name}: is a directory, not a file")
    if not stat.S_ISREG(mode):
        raise MsalignError(f"{name}: not a regular file (a FIFO, socket or device); refusing to read it")
    return path


def read_regular_json(path: Path, what: str) -> dict[str, Any]:
    """The JSON object in the regular file ``path`` (``what`` names it in the one-line error otherwise)."""
    regular_file(path)  # a FIFO would block read_text forever
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise MsalignError(f"{path}: cannot read {what} ({error})") from None
    if not isinstance(data, dict):
        raise MsalignError(f"{path}: {what} is not a JSON object")
    return data


MAX_ZIP_RATIO = 1100  # deflate's best is ~1032:1; a member declaring more expansion is a zip bomb


def check_npz(path: str | Path) -> None:
    """Check an ``.npz`` before numpy reads it: a regular file, a zip whose members' declared sizes
    stay within the limit and a deflate ratio deflate can produce, and whose ``.npy`` headers
    declare no more data than the member holds (numpy allocates shape x itemsize before reading:
    a 2 MB member declaring 40 x 14000 x 1000 float32 would take 2.2 GB first)."""
    path = regular_file(path)
    size = path.stat().st_size
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
            total = sum(info.file_size for info in members)
            check_alloc(total, f"{path}: its members")
            for info in members:
                where = f"{path}: key {short_repr(info.filename.removesuffix('.npy'))}"
                if info.compress_size > size or info.file_size > max(info.compress_size, 1) * MAX_ZIP_RATIO:
                    raise MsalignError(
                        f"{where}: declares {info.file_size:,} bytes from {info.compress_size:,} "
                        "compressed (a zip bomb or a damaged file)"
                    )
                if not info.filename.endswith(".npy"):
                    continue
                with archive.open(info) as member:
                    version = np.lib.format.read_magic(member)
                    if version == (1, 0):
                        shape, _, dtype = np.lib.format.read_array_header_1_0(member)
                    elif version == (2, 0):
                        shape, _, dtype = np.lib.format.read_array_header_2_0(member)
                    else:  # 3.0 (UTF-8 field names) has no public reader
                        # here, not at the top: the private module exists in numpy >= 2 only (we admit 1.26)
                        from numpy.lib import _format_impl

                        # private (no stub); numpy >= 2 only, and only 3.0 headers get here
                        shape, _, dtype = _format_impl._read_array_header(  # type: ignore[attr-defined]
                            member, version
                        )
                    header = member.tell() if member.seekable() else 0
                if dtype.hasobject:
                    raise MsalignError(
                        f"{path}: not a readable .npz (key {short_repr(info.filename[:-4])} holds "
                        "pickled Python objects; only numeric and string arrays are read)"
                    )
                need = math.prod(shape) * dtype.itemsize
                if need > info.file_size - header:
                    raise MsalignError(
                        f"{where}: header declares shape {shape} of {dtype} ({need:,} bytes) but the "
                        f"member holds {max(info.file_size - header, 0):,}"
                    )
    except MsalignError:
        raise
    except Exception as e:  # a damaged header raises ValueError, SyntaxError, tokenize.TokenError, ...
        detail = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise MsalignError(f"{path}: not a readable .npz ({short_repr(detail, 120)[1:-1]})") from None


_REPR = reprlib.Repr()
_REPR.maxstring = 60
_REPR.maxother = 60
_REPR.maxlevel = 3


def short_repr(value: Any, limit: int = 80) -> str:
    """``repr(value)`` bounded in time and length: reprlib never expands more than a few items of a
    container (an aliased YAML structure is not walked), and the result is cut to ``limit`` chars."""
    try:
        text = _REPR.repr(value)
    except Exception:  # a value whose repr fails still gets a message
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


__all__ = ["check_alloc", "check_npz", "max_alloc", "regular_file", "short_repr"]

"""Atomic file writes: write a temporary file in the target's folder, then rename it into place.

A reader (or a run killed midway) sees the old file or the whole new one, never half of one.
Every writer of results, checkpoints, caches and feature files goes through :func:`atomic_path`.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np


@contextmanager
def atomic_path(path: str | Path, suffix: str = ".tmp") -> Iterator[Path]:
    """A fresh temporary path beside ``path``: renamed onto ``path`` when the block succeeds,
    removed when it raises. ``suffix`` keeps writers that add an extension (np.savez) happy."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(handle)
    try:
        yield Path(temporary)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as temporary:
        temporary.write_text(text)


def atomic_savez(path: str | Path, **arrays: np.ndarray) -> None:
    """``np.savez(path, **arrays)`` atomically."""
    with atomic_path(path, suffix=".npz") as temporary:
        np.savez(temporary, **arrays)


__all__ = ["atomic_path", "atomic_savez", "atomic_write_text"]

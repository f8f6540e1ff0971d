"""Atomic file writes: write a temporary file in the target's folder, then rename it into place.

A reader (or a run killed midway) sees the old file or the whole new one, never half of one.
Every writer of results, checkpoints, caches and feature files goes through :func:`atomic_path`.

* Mode: the file gets the mode ``open()`` would give it (0666 less the umask), not mkstemp's 0600,
  which would survive the rename and hide results from the group on a shared cluster.
* Leftovers: a write killed midway (``kill -9``) leaves its temporary ``.NAME.HOST-PID.XXXX.tmp``.
  The next write of the same target removes those whose process is gone (same host, PID not
  running) and old ones in an unknown format (over a day), never a live writer's.
"""

from __future__ import annotations

import fcntl
import os
import socket
import tempfile
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path

import numpy as np

from msalign.errors import MsalignError


def _umask() -> int:
    """The process umask (os.umask can only be read by setting it; set straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _host() -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in socket.gethostname())[:40] or "host"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def clean_leftovers(path: str | Path, suffix: str = ".tmp", max_age: float = 86400.0) -> int:
    """Remove temporaries of ``path`` left by killed writers (see the module docstring); how many."""
    path = Path(path)
    prefix, host, removed = f".{path.name}.", _host(), 0
    try:
        candidates = [p for p in path.parent.iterdir() if p.name.startswith(prefix) and p.name.endswith(suffix)]
    except OSError:
        return 0
    for leftover in candidates:
        owner = leftover.name[len(prefix) :].split(".", 1)[0]
        who, _, pid = owner.rpartition("-")
        try:
            if who == host and pid.isdigit():
                stale = not _alive(int(pid))
            elif who and pid.isdigit():
                continue  # another machine's writer: its liveness cannot be checked from here
            else:
                stale = time.time() - leftover.lstat().st_mtime > max_age
            if stale:
                leftover.unlink()
                removed += 1
        except OSError:
            continue
    return removed


@contextmanager
def atomic_path(path: str | Path, suffix: str = ".tmp") -> Iterator[Path]:
    """A fresh temporary path beside ``path``: renamed onto ``path`` when the block succeeds,
    removed when it raises. ``suffix`` keeps writers that add an extension (np.savez) happy."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_leftovers(path, suffix)
    prefix = f".{path.name}.{_host()}-{os.getpid()}."
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=prefix, suffix=suffix)
    try:
        os.fchmod(handle, 0o666 & ~_umask())
    finally:
        os.close(handle)
    try:
        yield Path(temporary)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


@contextmanager
def locked_dir(folder: str | Path, option: str = "--out") -> Iterator[Path]:
    """Hold an exclusive lock on ``folder`` (``folder/.lock``, fcntl.flock) for the block: a second
    msalign run into the same folder is refused at once with one line instead of racing the first
    (both would resume the same seed and write the same files). The kernel drops the lock when the
    holder exits, even by kill -9, so a crash never leaves the folder locked. The file stays (removing
    it on release would let a waiting process lock a deleted inode)."""
    folder = Path(folder)
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    lock = folder / ".lock"
    fd = os.open(lock, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip() or "another process"
            raise MsalignError(
                f"{option} {folder}: another msalign run is writing there ({holder} holds {lock}); "
                f"wait for it to finish or choose another {option}"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"PID {os.getpid()} on {socket.gethostname()}".encode(), 0)
        try:
            yield folder
        except BaseException:
            if created and [p.name for p in folder.iterdir()] == [".lock"]:  # a run refused before writing
                lock.unlink()  # anything leaves no empty folder behind
                folder.rmdir()
            raise
    finally:
        os.close(fd)  # releases the lock


def process_rank() -> int:
    """This process's rank in a multi-process job (Lightning's DDP children, torchrun, SLURM's srun),
    from the variables they set, as Lightning reads them; 0 outside one."""
    for key in ("RANK", "LOCAL_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK"):
        if os.environ.get(key, "").strip().isdigit():
            return int(os.environ[key])
    return 0


def run_dir_lock(out: str | Path) -> AbstractContextManager[Path]:
    """An exclusive lock on a run's ``--out`` folder for the run (:func:`locked_dir`); DDP ranks > 0
    repeat rank 0's command inside rank 0's lock, so they take none."""
    return locked_dir(out) if process_rank() == 0 else nullcontext(Path(out))


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as temporary:
        temporary.write_text(text)


def atomic_savez(path: str | Path, **arrays: np.ndarray) -> None:
    """``np.savez(path, **arrays)`` atomically."""
    with atomic_path(path, suffix=".npz") as temporary:
        # numpy's stub lets **kwds reach allow_pickle: bool; every name here is an array name
        np.savez(temporary, **arrays)  # type: ignore[arg-type]


__all__ = [
    "atomic_path",
    "atomic_savez",
    "atomic_write_text",
    "clean_leftovers",
    "locked_dir",
    "process_rank",
    "run_dir_lock",
]

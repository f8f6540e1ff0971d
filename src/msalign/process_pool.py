"""One process pool for everything msalign runs in parallel: feature extraction over media files
(:mod:`msalign.extract.pipeline`) and the trials of a sweep or benchmark
(:mod:`msalign.experiments.scheduling`'s local backend).

Workers are spawned, never forked: torch, OpenMP and the media libraries hold threads and locks
that a forked child would inherit in an undefined state. Results come back as they finish. An
exception raised in a worker, and a worker that died (killed, out of memory, a crash in native
code), come back as that call's error instead of stopping the others. When the caller is
interrupted (Ctrl-C) or stops reading early, the running workers are killed at once (SIGKILL:
Lightning traps SIGINT/SIGTERM and would finish its epoch first) and the queued calls are
cancelled; every file msalign writes is atomic, and a re-run skips what finished.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Generator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from typing import Any, TypeVar

Tag = TypeVar("Tag")


def run_in_processes(
    function: Callable[..., Any],
    calls: Sequence[tuple[Tag, tuple[Any, ...]]],
    workers: int,
    *,
    initializer: Callable[..., None] | None = None,
    initargs: tuple[Any, ...] = (),
) -> Generator[tuple[Tag, Any, BaseException | None], None, None]:
    """``function(*arguments)`` for every ``(tag, arguments)`` of ``calls`` in ``workers`` spawned
    processes (each set up once by ``initializer(*initargs)``); yields ``(tag, result, None)`` or
    ``(tag, None, error)`` in the order the calls finish. A dead worker's error is a
    ``concurrent.futures.process.BrokenProcessPool``."""
    context = multiprocessing.get_context("spawn")
    executor = ProcessPoolExecutor(workers, mp_context=context, initializer=initializer, initargs=initargs)
    try:
        futures: dict[Future[Any], Tag] = {executor.submit(function, *arguments): tag for tag, arguments in calls}
        while futures:
            done, _ = wait(futures, return_when=FIRST_COMPLETED)
            for future in done:
                tag = futures.pop(future)
                try:
                    result = future.result()
                except (Exception, SystemExit) as error:
                    yield tag, None, error
                else:
                    yield tag, result, None
    except BaseException:
        # interrupted, or the consumer stopped early: stop the running calls now
        processes = list((getattr(executor, "_processes", None) or {}).values())  # shutdown() forgets them
        for process in processes:
            process.kill()
        executor.shutdown(wait=False, cancel_futures=True)
        raise
    executor.shutdown(wait=True)


__all__ = ["run_in_processes"]

"""``msalign convert``: any dataset source written as an on-disk feature store (this package's format)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from msalign.data.options import DatasetOptions, load_dataset_from_options
from msalign.data.store.reader import SplitSize, store_sizes
from msalign.data.store.writer import check_destination, write_store
from msalign.data.types import MultimodalDataset


@dataclass(frozen=True)
class StoreConversion:
    """A finished conversion: the dataset converted, each split's rows and bytes on disk, and the time taken."""

    dataset: MultimodalDataset
    sizes: dict[str, SplitSize]
    load_seconds: float
    write_seconds: float


def convert_to_store(
    options: DatasetOptions, out: str | Path, force: bool = False, log: Callable[[str], None] = print
) -> StoreConversion:
    """Loads ``options.dataset`` and writes it as a feature store in ``out`` (``force``: into a non-empty
    folder that is not a store); ``out`` is checked before the (possibly long) load."""
    out = Path(out)
    check_destination(out, force)
    leftovers = sorted(p.name for p in out.parent.glob(f".{out.name}.*.partial")) if out.parent.is_dir() else []
    if leftovers:
        log(f"note: {out.parent} holds unfinished conversions {leftovers} (safe to delete)")
    started = time.perf_counter()
    log(f"loading {options.dataset} ...")
    dataset = load_dataset_from_options(options)
    log(dataset.describe())
    rows = sum(len(s) for s in dataset.splits.values())
    log(f"writing feature store {out} ({rows} clips) ...")
    loaded = time.perf_counter()
    write_store(dataset, out, force=force, source=str(options.dataset))
    written = time.perf_counter()
    return StoreConversion(dataset, store_sizes(out), loaded - started, written - loaded)


__all__ = ["StoreConversion", "convert_to_store"]

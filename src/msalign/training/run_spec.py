"""What one run is: a model with its configs, trained over seeds into one folder.

:class:`RunSpec` is the bundle every runner takes (``msalign train``, each benchmark entry, each
sweep point, each tune trial and the tune's final run). The dataset travels beside it, not in it:
a benchmark or sweep trains many runs on one dataset, and worker processes receive the dataset
once, not once per trial. How a run is watched (progress bars, log lines) is not part of what it
is either, so that a spec can be pickled to another process.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from msalign.config import TrainConfig


@dataclass(frozen=True)
class RunSpec:
    """One run: ``model_name`` with ``model_config`` and ``train_config``, over ``seeds``, into
    ``out_dir`` (``out_dir/seed_N/`` per seed, ``out_dir/results.json`` over them).

    ``resume``: continue an unfinished seed from its last Lightning checkpoint (finished seeds
    are skipped whether or not it is set)."""

    model_name: str
    model_config: Any
    train_config: TrainConfig
    seeds: tuple[int, ...]
    out_dir: Path
    resume: bool = False

    def __post_init__(self) -> None:
        # callers pass lists and strings; the spec holds one spelling of each
        object.__setattr__(self, "seeds", tuple(self.seeds))
        object.__setattr__(self, "out_dir", Path(self.out_dir))

    def seed_dir(self, seed: int) -> Path:
        """``out_dir/seed_N``: everything one seed writes."""
        return self.out_dir / f"seed_{seed}"

    def replace(self, **changes: Any) -> RunSpec:
        """A copy with ``changes`` (e.g. a sweep point's model config and folder)."""
        return dataclasses.replace(self, **changes)


__all__ = ["RunSpec"]

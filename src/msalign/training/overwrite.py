"""No silent overwrite: a run folder that holds finished seeds of another run is refused unless
``--overwrite``, which removes them together with what was derived from them.

A run's identity is :func:`msalign.training.run.run_identity` (model, model and train config, the
dataset's feature spec), recorded in every finished ``seed_N/result.json``. Re-running the same
identity still skips finished seeds and adding seeds is fine; a different identity would otherwise
retrain into the folder and leave ``results.json`` mixing runs and a stale ``report/``.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from msalign.data.types import MultimodalDataset
from msalign.errors import MsalignError
from msalign.training.run import run_identity

# what msalign derives from a run folder's seeds: removed with them
DERIVED = ("results.json", "report", "table.md", "table.json", "sweep.json", "sweep.md")


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(_flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: value}


def first_difference(old: dict, new: dict) -> str:
    """``config.model.width 32 -> 48`` for the first key whose value differs (feature spec summarised)."""
    a, b = _flatten(old), _flatten(new)
    for key in list(dict.fromkeys([*b, *a])):
        if a.get(key, "<unset>") != b.get(key, "<unset>"):
            if key.startswith("feature_spec"):
                return "the dataset's features differ (feature_spec)"
            return f"{key.removeprefix('config.')} {a.get(key, '<unset>')} -> {b.get(key, '<unset>')}"
    return "identity differs"


def _seed_dirs(out_dir: Path) -> list[Path]:
    return sorted(p for p in out_dir.glob("seed_*") if p.is_dir() and p.name[5:].isdigit())


def run_conflict(out_dir: str | Path, identity: dict) -> str | None:
    """Why ``out_dir`` holds another run (one line), or None when it holds none or the same one."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        return None
    for seed_dir in _seed_dirs(out_dir):
        try:
            previous = json.loads((seed_dir / "result.json").read_text())
        except (OSError, json.JSONDecodeError):
            continue  # unfinished (or unreadable): nothing finished would be overwritten
        if isinstance(previous, dict) and previous.get("identity") != identity:
            return f"{seed_dir.name} was trained with {first_difference(previous.get('identity') or {}, identity)}"
    return None


def clear_run(out_dir: str | Path) -> list[str]:
    """Removes the seeds and derived files msalign wrote in ``out_dir``; returns what it removed."""
    out_dir = Path(out_dir)
    removed = []
    for path in [*_seed_dirs(out_dir), *(out_dir / name for name in DERIVED)]:
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
        else:
            continue
        removed.append(path.name)
    return removed


def check_out_dirs(runs: dict[str, tuple[Path, dict]], overwrite: bool, log=print, derived_root: Path | None = None) -> None:
    """``runs``: label -> (run folder, identity). Refuses (one line) when a folder holds another run
    and ``overwrite`` is False; with ``overwrite`` clears each such folder (and ``derived_root``'s
    derived files, e.g. a benchmark's table and report) before any training starts."""
    conflicts = {label: (folder, why) for label, (folder, identity) in runs.items()
                 if (why := run_conflict(folder, identity)) is not None}
    if not conflicts:
        return
    label, (folder, why) = next(iter(conflicts.items()))
    if not overwrite:
        more = f" (and {len(conflicts) - 1} more)" if len(conflicts) > 1 else ""
        raise MsalignError(f"--out {folder}: holds another run ({why}){more}; pass --overwrite to replace it "
                           "(its seeds, results.json and report/ are removed) or choose another --out")
    for label, (folder, why) in conflicts.items():
        removed = clear_run(folder)
        log(f"--overwrite: {folder} held another run ({why}); removed {', '.join(removed)}")
    if derived_root is not None:
        removed = [name for name in DERIVED if (derived_root / name).exists()]
        for name in removed:
            path = derived_root / name
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        if removed:
            log(f"--overwrite: removed the stale {', '.join(removed)} in {derived_root}")


@dataclass(frozen=True)
class PlannedRun:
    """A run a command is about to train into ``folder``: what its identity is made of."""

    folder: Path
    model_name: str
    model_config: Any
    train_config: Any


def check_planned_runs(runs: Mapping[str, PlannedRun], dataset: MultimodalDataset, overwrite: bool,
                       log: Callable[[str], None] = print, derived_root: Path | None = None) -> None:
    """:func:`check_out_dirs` for runs not yet started: each one's identity on ``dataset``."""
    identities = {label: (run.folder, run_identity(run.model_name, run.model_config, run.train_config, dataset))
                  for label, run in runs.items()}
    check_out_dirs(identities, overwrite, log, derived_root)

"""The run folder on disk: the only module that writes and reads its files.

A train run ``OUT/`` (one :class:`~msalign.training.run_spec.RunSpec`)::

    OUT/results.json              RunResults: per-seed summaries, mean and population std over seeds
    OUT/seed_N/result.json        SeedRecord: a finished seed (its run identity, summary and time)
    OUT/seed_N/run.json           RunIdentity: which run the Lightning checkpoints in lightning/ belong to
    OUT/seed_N/history.json       History: one row per epoch (training losses, validation metrics)
    OUT/seed_N/predictions.npz    SplitPredictions per split (ids, predictions, labels)
    OUT/seed_N/model.safetensors  the checkpoint (msalign.training.checkpoint)

A benchmark folder holds one train run per entry and ``table.json`` (:class:`BenchmarkTable`) with
``table.md``; a sweep folder one train run per grid point and ``sweep.json`` (:class:`SweepSummary`)
with ``sweep.md``. The Markdown tables are rendered by their commands and written here.

Every file is written atomically (:mod:`msalign.atomic`), and exactly as before this module
existed: the same key order, indentation and trailing newline (results.json of a rerun is
byte-identical). A reader refuses a file that is not what msalign wrote with one line naming it.

No silent overwrite: a folder holding finished seeds of another run is refused unless
``--overwrite``, which removes them together with what was derived from them
(:func:`check_out_dirs`). Re-running the same identity skips finished seeds, and adding seeds is
fine; a different identity would otherwise retrain into the folder and leave ``results.json``
mixing runs and a stale ``report/``.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from msalign.atomic import atomic_savez, atomic_write_text
from msalign.config import config_to_dict
from msalign.data.types import MultimodalDataset
from msalign.errors import MsalignError
from msalign.training.run_spec import RunSpec

RESULTS_FILE = "results.json"
SEED_RESULT_FILE = "result.json"
RUN_FILE = "run.json"
HISTORY_FILE = "history.json"
PREDICTIONS_FILE = "predictions.npz"
CHECKPOINT_FILE = "model.safetensors"
TABLE_FILE = "table.json"
TABLE_TEXT_FILE = "table.md"
SWEEP_FILE = "sweep.json"
SWEEP_TEXT_FILE = "sweep.md"
REPORT_DIR = "report"
# what msalign derives from a run folder's seeds: removed with them
DERIVED = (RESULTS_FILE, REPORT_DIR, TABLE_TEXT_FILE, TABLE_FILE, SWEEP_FILE, SWEEP_TEXT_FILE)

Log = Callable[[str], None]


def seed_dir(out_dir: str | Path, seed: int) -> Path:
    """``out_dir/seed_N``."""
    return Path(out_dir) / f"seed_{seed}"


# --- run identity (run.json, and inside result.json) ----------------------------------------------
@dataclass(frozen=True)
class RunIdentity:
    """What makes two runs the same run: a finished seed of the same identity is never trained again."""

    model: str
    config: dict[str, dict[str, Any]]  # {"model": ..., "train": ...} without train.logger
    feature_spec: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "config": self.config, "feature_spec": self.feature_spec}

    @classmethod
    def from_dict(cls, value: Any) -> RunIdentity | None:
        """The identity ``value`` holds, or None when it holds none (another program's file, a damaged one)."""
        if not (isinstance(value, dict) and set(value) == {"model", "config", "feature_spec"}):
            return None
        return cls(value["model"], value["config"], value["feature_spec"])


def run_identity(spec: RunSpec, dataset: MultimodalDataset) -> RunIdentity:
    """The identity of ``spec`` on ``dataset`` (its JSON form: tuples are lists, as read back from disk)."""
    train = {k: v for k, v in config_to_dict(spec.train_config).items() if k != "logger"}  # watching changes no result
    run_config = {"model": config_to_dict(spec.model_config), "train": train}
    identity = {"model": spec.model_name, "config": run_config, "feature_spec": dataset.feature_spec.to_json()}
    value = json.loads(json.dumps(identity))
    return RunIdentity(value["model"], value["config"], value["feature_spec"])


def write_run_identity(seed_folder: Path, identity: RunIdentity) -> None:
    """``seed_N/run.json``, written when a seed starts training."""
    atomic_write_text(seed_folder / RUN_FILE, json.dumps(identity.to_dict(), indent=1))


def read_run_identity(seed_folder: Path) -> RunIdentity | None:
    """``seed_N/run.json``'s identity; None when missing or unreadable."""
    return RunIdentity.from_dict(_read_json_or_none(seed_folder / RUN_FILE))


# --- one seed: result.json, history.json, predictions.npz -----------------------------------------
@dataclass(frozen=True)
class SeedSummary:
    """A finished seed as ``results.json`` lists it under ``per_seed``: no wall-clock time, so a rerun
    writes identical files."""

    seed: int
    best_epoch: int | None  # None only in files that predate it
    valid: dict[str, float]
    test: dict[str, float]
    epochs_run: int = 0
    checkpoint: str = ""  # model.safetensors, relative to the run folder

    def to_dict(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "best_epoch": self.best_epoch,
            "valid": self.valid,
            "test": self.test,
            "epochs_run": self.epochs_run,
            "checkpoint": self.checkpoint,
        }

    @classmethod
    def from_dict(cls, value: dict[str, Any]) -> SeedSummary:
        return cls(
            int(value["seed"]),
            value.get("best_epoch"),
            value.get("valid", {}),
            value.get("test", {}),
            value.get("epochs_run", 0),
            value.get("checkpoint", ""),
        )


@dataclass(frozen=True)
class SeedRecord:
    """``seed_N/result.json``: written when the seed has finished."""

    identity: RunIdentity
    result: SeedSummary
    seconds: float

    def to_json(self) -> str:
        return json.dumps(
            {"identity": self.identity.to_dict(), "result": self.result.to_dict(), "seconds": round(self.seconds, 2)},
            indent=1,
        )


def write_seed_record(seed_folder: Path, record: SeedRecord) -> None:
    atomic_write_text(seed_folder / SEED_RESULT_FILE, record.to_json())


def finished_seed(out_dir: str | Path, seed: int, identity: RunIdentity) -> SeedSummary | None:
    """The summary of ``out_dir/seed_N/result.json`` when that seed finished with ``identity``."""
    value = _read_json_or_none(seed_dir(out_dir, seed) / SEED_RESULT_FILE)
    if isinstance(value, dict) and RunIdentity.from_dict(value.get("identity")) == identity:
        return SeedSummary.from_dict(value["result"])
    return None


@dataclass(frozen=True)
class History:
    """``seed_N/history.json``: one row per epoch, ``{"epoch": n, "train/<loss>": ..., "valid/<metric>": ...}``."""

    rows: list[dict[str, float]]


def write_history(seed_folder: Path, history: History) -> None:
    atomic_write_text(seed_folder / HISTORY_FILE, json.dumps(history.rows, indent=1))


def read_history(seed_folder: Path) -> History | None:
    """The seed's history; None without a history.json (a run from before it was written)."""
    path = seed_folder / HISTORY_FILE
    if not path.is_file():
        return None
    try:
        return History(json.loads(path.read_text()))
    except json.JSONDecodeError:
        raise MsalignError(f"{path}: not valid JSON") from None


@dataclass(frozen=True)
class SplitPredictions:
    """One split's rows in split order: ids (when the split has them), predictions and labels."""

    predictions: np.ndarray
    labels: np.ndarray
    ids: list[str] | None = None


def write_predictions(path: str | Path, predictions: dict[str, SplitPredictions]) -> None:
    """Writes ``{split}_ids`` (str, when the split has ids), ``{split}_predictions`` and ``{split}_labels``
    per split to an .npz, atomically. No pickled objects, so ``np.load(path)`` reads it with pickles
    disallowed."""
    arrays: dict[str, np.ndarray] = {}
    for split, rows in predictions.items():
        preds, labels = np.asarray(rows.predictions), np.asarray(rows.labels)
        if rows.ids is not None and len(rows.ids) == len(labels):
            arrays[f"{split}_ids"] = np.asarray([str(i) for i in rows.ids], dtype=str)
        arrays[f"{split}_predictions"] = preds
        arrays[f"{split}_labels"] = labels
    atomic_savez(path, **arrays)


def read_predictions(path: str | Path) -> dict[str, SplitPredictions]:
    """``predictions.npz`` -> split -> its predictions and labels (ids are not read back)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            splits = {key.removesuffix("_predictions") for key in data.files if key.endswith("_predictions")}
            out = {
                s: SplitPredictions(data[f"{s}_predictions"], data[f"{s}_labels"])
                for s in sorted(splits)
                if f"{s}_labels" in data.files
            }
    except (OSError, ValueError) as error:
        raise MsalignError(f"{path}: not a readable predictions file ({str(error).splitlines()[0]})") from None
    if not out:
        raise MsalignError(f"{path}: holds no '<split>_predictions' with '<split>_labels'")
    return out


# --- one run: results.json ------------------------------------------------------------------------
@dataclass(frozen=True)
class RunResults:
    """``results.json``: a run's per-seed summaries, and the mean and population std of their test metrics."""

    model: str
    dataset: str  # the dataset as given (its source), for reports and predict
    metric_set: str
    config: dict[str, dict[str, Any]]  # {"model": ..., "train": ...}
    seeds: list[int]
    per_seed: list[SeedSummary]
    mean: dict[str, float]
    std: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "dataset": self.dataset,
            "metric_set": self.metric_set,
            "config": self.config,
            "seeds": list(self.seeds),
            "per_seed": [s.to_dict() for s in self.per_seed],
            "mean": self.mean,
            "std": self.std,
        }


def write_results(out_dir: Path, results: RunResults) -> None:
    atomic_write_text(Path(out_dir) / RESULTS_FILE, json.dumps(results.to_dict(), indent=2) + "\n")


def read_results(out_dir: Path) -> RunResults:
    """``out_dir/results.json``; one line naming the file when it is missing, unreadable or not msalign's."""
    path = Path(out_dir) / RESULTS_FILE
    value = read_json_object(path, RESULTS_FILE)
    if "per_seed" not in value or "model" not in value:
        raise MsalignError(f"{path}: lacks 'model' or 'per_seed' (not written by msalign train?)")
    per_seed = [SeedSummary.from_dict(r) for r in value["per_seed"]]
    return RunResults(
        value["model"],
        value.get("dataset", ""),
        value.get("metric_set", "mosi"),
        value.get("config") or {},
        value.get("seeds", [s.seed for s in per_seed]),
        per_seed,
        value.get("mean", {}),
        value.get("std", {}),
    )


def recorded_model(out_dir: Path) -> str | None:
    """The model ``out_dir/results.json`` records; None without one (or when it names none)."""
    path = Path(out_dir) / RESULTS_FILE
    if not path.is_file():
        return None
    model = read_json_object(path, RESULTS_FILE).get("model")
    return model if isinstance(model, str) else None


# --- a benchmark: table.json ----------------------------------------------------------------------
@dataclass(frozen=True)
class EntrySummary:
    """A finished benchmark entry: its test mean and population std over ``seeds``."""

    mean: dict[str, float]
    std: dict[str, float]
    seeds: list[int]


@dataclass(frozen=True)
class EntryFailure:
    """A benchmark entry that did not finish: why (``seed N: error``, or ``unfinished``)."""

    failed: str


@dataclass(frozen=True)
class BenchmarkTable:
    """``table.json``: per entry label, in the order given, its summary or its failure."""

    dataset: str
    models: dict[str, EntrySummary | EntryFailure]

    def to_dict(self) -> dict[str, Any]:
        return {"dataset": self.dataset, "models": {label: _entry_dict(row) for label, row in self.models.items()}}

    @property
    def finished(self) -> dict[str, EntrySummary]:
        return {label: row for label, row in self.models.items() if isinstance(row, EntrySummary)}

    @property
    def failed(self) -> dict[str, str]:
        return {label: row.failed for label, row in self.models.items() if isinstance(row, EntryFailure)}


def _entry_dict(row: EntrySummary | EntryFailure) -> dict[str, Any]:
    if isinstance(row, EntryFailure):
        return {"failed": row.failed}
    return {"mean": row.mean, "std": row.std, "seeds": row.seeds}


def write_table(out_dir: Path, table: BenchmarkTable, text: str) -> None:
    """``table.md`` (``text``, the rendered table) and ``table.json``."""
    atomic_write_text(out_dir / TABLE_TEXT_FILE, text + "\n")
    atomic_write_text(out_dir / TABLE_FILE, json.dumps(table.to_dict(), indent=2))


def read_table(out_dir: Path) -> BenchmarkTable:
    path = Path(out_dir) / TABLE_FILE
    value = read_json_object(path, TABLE_FILE)
    models: dict[str, EntrySummary | EntryFailure] = {}
    for label, row in (value.get("models") or {}).items():
        if "failed" in row:
            models[label] = EntryFailure(row["failed"])
        else:
            models[label] = EntrySummary(row.get("mean", {}), row.get("std", {}), row.get("seeds", []))
    dataset = value.get("dataset")
    return BenchmarkTable(dataset if isinstance(dataset, str) else "", models)


# --- a sweep: sweep.json --------------------------------------------------------------------------
@dataclass(frozen=True)
class Selection:
    """How a sweep chooses its point: always on the validation split."""

    split: str
    metric: str
    mode: str  # min or max
    rule: str  # the rule in words, for tables and reports

    def to_dict(self) -> dict[str, str]:
        return {"split": self.split, "metric": self.metric, "mode": self.mode, "rule": self.rule}


@dataclass(frozen=True)
class SweepPoint:
    """A finished grid point: validation and test means (and stds) over the sweep's seeds."""

    label: str  # its run folder, ``key=value_key=value``
    params: dict[str, Any]
    dir: str
    valid: dict[str, float]
    valid_std: dict[str, float]
    test: dict[str, float]
    test_std: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "params": self.params,
            "dir": self.dir,
            "valid": self.valid,
            "valid_std": self.valid_std,
            "test": self.test,
            "test_std": self.test_std,
        }


@dataclass(frozen=True)
class BestPoint:
    """The point chosen on validation."""

    label: str
    params: dict[str, Any]
    valid: dict[str, float]
    test: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "params": self.params, "valid": self.valid, "test": self.test}


@dataclass(frozen=True)
class PointFailure:
    """A grid point that failed: its values and ``seed N: error``."""

    params: dict[str, Any]
    error: str


@dataclass
class SweepSummary:
    """``sweep.json``: the grid, the selection rule, every finished point in grid order and the best one.

    Mutable: the sweep rewrites it after every point."""

    model: str
    dataset: str
    metric_set: str
    grid: dict[str, list[Any]]
    seeds: list[int]
    config: dict[str, dict[str, Any]]  # the configs every point shares (grid keys left out of "model")
    selection: Selection
    points: list[SweepPoint] = field(default_factory=list)
    best: BestPoint | None = None
    complete: bool = False
    failed: dict[str, PointFailure] = field(default_factory=dict)  # written only when a point failed

    def to_dict(self) -> dict[str, Any]:
        out = {
            "model": self.model,
            "dataset": self.dataset,
            "metric_set": self.metric_set,
            "grid": self.grid,
            "seeds": list(self.seeds),
            "config": self.config,
            "selection": self.selection.to_dict(),
            "points": [p.to_dict() for p in self.points],
            "best": self.best.to_dict() if self.best else None,
            "complete": self.complete,
        }
        if self.failed:
            out["failed"] = {label: {"params": f.params, "error": f.error} for label, f in self.failed.items()}
        return out


def write_sweep(out_dir: Path, summary: SweepSummary, text: str) -> None:
    """``sweep.json`` and ``sweep.md`` (``text``, the rendered table)."""
    atomic_write_text(out_dir / SWEEP_FILE, json.dumps(summary.to_dict(), indent=2) + "\n")
    atomic_write_text(out_dir / SWEEP_TEXT_FILE, text + "\n")


def read_sweep(out_dir: Path) -> SweepSummary:
    """``out_dir/sweep.json`` for a report; one line naming the file when it is not msalign's."""
    path = Path(out_dir) / SWEEP_FILE
    value = read_json_object(path, SWEEP_FILE)
    for key in ("model", "grid", "points", "selection", "metric_set", "seeds"):
        if key not in value:
            raise MsalignError(f"{path}: lacks {key!r} (not written by msalign sweep?)")
    selection = value["selection"]
    best = value.get("best")
    return SweepSummary(
        value["model"],
        value.get("dataset", "?"),
        value["metric_set"],
        value["grid"],
        value["seeds"],
        value.get("config") or {},
        Selection(
            selection.get("split", "valid"),
            selection["metric"],
            selection.get("mode", "min"),
            selection.get("rule", ""),
        ),
        [
            SweepPoint(
                p["label"],
                p["params"],
                p.get("dir", p["label"]),
                p["valid"],
                p.get("valid_std", {}),
                p["test"],
                p.get("test_std", {}),
            )
            for p in value["points"]
        ],
        BestPoint(best["label"], best["params"], best["valid"], best["test"]) if best else None,
        bool(value.get("complete", True)),
        {label: PointFailure(f["params"], f["error"]) for label, f in (value.get("failed") or {}).items()},
    )


def sweep_owner(out_dir: Path) -> tuple[Any, Any] | None:
    """(model, dataset) of the sweep in ``out_dir``, None when there is none yet; an unreadable
    sweep.json is one line (a re-run must not write over what it cannot read)."""
    path = out_dir / SWEEP_FILE
    if not path.is_file():
        return None
    try:
        value = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        raise MsalignError(f"{path}: not a readable sweep file; remove it or use another --out") from None
    return value.get("model"), value.get("dataset")


def format_value(value: Any) -> str:
    """A config value as point labels and sweep tables spell it: ``true``, ``0.01`` (``%g``), ``diag``."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return format(value, "g")
    return str(value)


def point_label(params: dict[str, Any]) -> str:
    """``{"alpha": 0.01, "beta": 0.1}`` -> ``"alpha=0.01_beta=0.1"``: a sweep point's run folder."""
    return "_".join(f"{k}={format_value(v)}" for k, v in params.items())


# --- which kind of folder -------------------------------------------------------------------------
def run_kind(run_dir: str | Path) -> str:
    """``"sweep"``, ``"benchmark"`` or ``"train"``, from the summary file RUN_DIR holds."""
    path = Path(run_dir)
    if not path.exists():
        raise MsalignError(f"RUN_DIR {path}: no such directory")
    if not path.is_dir():
        raise MsalignError(f"RUN_DIR {path}: not a directory")
    for name, kind in ((SWEEP_FILE, "sweep"), (TABLE_FILE, "benchmark"), (RESULTS_FILE, "train")):
        if (path / name).is_file():
            return kind
    raise MsalignError(
        f"RUN_DIR {path}: not a train, benchmark or sweep directory (no results.json, table.json or sweep.json)"
    )


def recorded_dataset(run_dir: Path) -> tuple[str | None, str | None]:
    """(dataset, metric set) that RUN_DIR's summary file records (results.json, table.json or sweep.json;
    a benchmark's metric set is its first entry's)."""
    kind = run_kind(run_dir)
    name = {"train": RESULTS_FILE, "benchmark": TABLE_FILE, "sweep": SWEEP_FILE}[kind]
    data = read_json_object(run_dir / name, name)
    metric_set = data.get("metric_set")
    if kind == "benchmark" and metric_set is None:
        first = next(iter(data.get("models", {})), None)
        if first is not None and (run_dir / first / RESULTS_FILE).is_file():
            metric_set = read_json_object(run_dir / first / RESULTS_FILE, RESULTS_FILE).get("metric_set")
    dataset = data.get("dataset")
    return (dataset if isinstance(dataset, str) else None), metric_set


def read_json_object(path: Path, what: str) -> dict[str, Any]:
    """A JSON object from ``path``; one line naming the file otherwise."""
    try:
        data = json.loads(path.read_text())
    except OSError as error:
        raise MsalignError(f"{path}: cannot read {what} ({error.strerror})") from None
    except json.JSONDecodeError as error:
        raise MsalignError(f"{path}: {what} is not valid JSON (line {error.lineno})") from None
    if not isinstance(data, dict):
        raise MsalignError(f"{path}: {what} is not a JSON object")
    return data


def _read_json_or_none(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


# --- no silent overwrite --------------------------------------------------------------------------
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


def seed_dirs(out_dir: Path) -> list[Path]:
    """The ``seed_N`` folders in ``out_dir``, sorted."""
    return sorted(p for p in out_dir.glob("seed_*") if p.is_dir() and p.name[5:].isdigit())


def run_conflict(out_dir: str | Path, identity: RunIdentity) -> str | None:
    """Why ``out_dir`` holds another run (one line), or None when it holds none or the same one."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        return None
    for folder in seed_dirs(out_dir):
        value = _read_json_or_none(folder / SEED_RESULT_FILE)
        if not isinstance(value, dict):
            continue  # unfinished (or unreadable): nothing finished would be overwritten
        if RunIdentity.from_dict(value.get("identity")) != identity:
            previous = value.get("identity") or {}
            return f"{folder.name} was trained with {first_difference(previous, identity.to_dict())}"
    return None


def clear_run(out_dir: str | Path) -> list[str]:
    """Removes the seeds and derived files msalign wrote in ``out_dir``; returns what it removed."""
    out_dir = Path(out_dir)
    removed = []
    for path in [*seed_dirs(out_dir), *(out_dir / name for name in DERIVED)]:
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
        else:
            continue
        removed.append(path.name)
    return removed


def check_out_dirs(
    runs: dict[str, tuple[Path, RunIdentity]], overwrite: bool, log: Log = print, derived_root: Path | None = None
) -> None:
    """``runs``: label -> (run folder, identity). Refuses (one line) when a folder holds another run
    and ``overwrite`` is False; with ``overwrite`` clears each such folder (and ``derived_root``'s
    derived files, e.g. a benchmark's table and report) before any training starts."""
    conflicts = {
        label: (folder, why)
        for label, (folder, identity) in runs.items()
        if (why := run_conflict(folder, identity)) is not None
    }
    if not conflicts:
        return
    folder, why = next(iter(conflicts.values()))
    if not overwrite:
        more = f" (and {len(conflicts) - 1} more)" if len(conflicts) > 1 else ""
        raise MsalignError(
            f"--out {folder}: holds another run ({why}){more}; pass --overwrite to replace it "
            "(its seeds, results.json and report/ are removed) or choose another --out"
        )
    for folder, why in conflicts.values():
        removed = clear_run(folder)
        log(f"--overwrite: {folder} held another run ({why}); removed {', '.join(removed)}")
    if derived_root is not None:
        removed = [name for name in DERIVED if (derived_root / name).exists()]
        for name in removed:
            path = derived_root / name
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        if removed:
            log(f"--overwrite: removed the stale {', '.join(removed)} in {derived_root}")


def check_planned_runs(
    runs: Mapping[str, RunSpec],
    dataset: MultimodalDataset,
    overwrite: bool,
    log: Log = print,
    derived_root: Path | None = None,
) -> None:
    """:func:`check_out_dirs` for runs not yet started: each run's folder and identity on ``dataset``."""
    check_out_dirs(
        {label: (spec.out_dir, run_identity(spec, dataset)) for label, spec in runs.items()},
        overwrite,
        log,
        derived_root,
    )


__all__ = [
    "BenchmarkTable",
    "BestPoint",
    "EntryFailure",
    "EntrySummary",
    "History",
    "PointFailure",
    "RunIdentity",
    "RunResults",
    "SeedRecord",
    "SeedSummary",
    "Selection",
    "SplitPredictions",
    "SweepPoint",
    "SweepSummary",
    "check_out_dirs",
    "check_planned_runs",
    "clear_run",
    "finished_seed",
    "first_difference",
    "format_value",
    "point_label",
    "read_history",
    "read_json_object",
    "read_predictions",
    "read_results",
    "read_run_identity",
    "read_sweep",
    "read_table",
    "recorded_dataset",
    "recorded_model",
    "run_conflict",
    "run_identity",
    "run_kind",
    "seed_dir",
    "seed_dirs",
    "sweep_owner",
    "write_history",
    "write_predictions",
    "write_results",
    "write_run_identity",
    "write_seed_record",
    "write_sweep",
    "write_table",
]

"""A tuned configuration on disk: the only module that writes and reads ``msalign tune``'s two files.

In the tune directory (and, with ``--write-config``, in ``configs/<model>/``)::

    <key>.yaml         the tuned config file: ``model:`` and ``train:`` sections (every searched key and
                       every key that differs from the dataclass defaults, runtime keys excepted) under
                       a comment block that says how it was chosen (:func:`format_config_file`)
    <key>.search.json  the search record (:class:`TuneResult`): the space, the budget, each trial's
                       values and validation score, the best trial, the seeds, the final metrics, the
                       inputs it was chosen for, the date, the git revision and the package versions

``<key>`` is the dataset's name (:func:`dataset_key`), the key config.py picks files by
(``../shared/data/mosi`` -> ``mosi``). Files are written atomically (:mod:`msalign.atomic`) and as
they always were (``dataclasses.asdict`` order, two-space indentation, trailing newline);
:func:`read_search_record` reads one back (also the records written before ``inputs`` was added) or
refuses it with one line naming the file and the key.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import re
import subprocess
from contextlib import suppress
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import yaml

from msalign import metrics
from msalign.atomic import atomic_write_text
from msalign.config import TrainConfig, config_to_dict
from msalign.errors import MsalignError
from msalign.limits import regular_file
from msalign.models import build_config

SEARCH_RECORD_SUFFIX = ".search.json"
TUNED_CONFIG_SUFFIX = ".yaml"
# how a run is executed, not what is trained: never written into a tuned config file
RUNTIME_KEYS = frozenset({"accelerator", "devices", "num_nodes", "strategy", "num_workers"})


@dataclass
class TrialRecord:
    """One search trial: its values, its validation score (mean over the search seeds) and where it ran."""

    number: int
    state: str  # COMPLETE, FAIL (a trial that raised, or was cut off: ``error`` says which)
    params: dict[str, Any]
    value: float | None  # the selection metric on validation, mean over the search seeds
    valid: dict[str, float] | None  # every validation metric, mean over the search seeds
    run_dir: str | None
    error: str | None = None


@dataclass
class TuneResult:
    """What a search did and chose; written as ``<key>.search.json`` beside the tuned config."""

    model: str
    dataset: str
    dataset_key: str
    metric_set: str
    inputs: dict[str, Any]  # the splits' sizes and shapes, each modality's encoder, a digest of the feature spec
    selection: dict[str, str]
    space: list[dict[str, Any]]
    fixed: list[str]  # searchable keys held at their configured value (given with --set)
    budget: dict[str, Any]
    sampler: dict[str, Any]
    base_config: dict[str, dict[str, Any]]
    trials: list[TrialRecord]
    best: TrialRecord | None
    config: dict[str, dict[str, Any]] | None  # the chosen configuration, in full
    seeds: list[int]
    final: dict[str, Any] | None  # valid / test mean and std over ``seeds``, and the run directory
    date: str
    git_revision: str | None
    versions: dict[str, str]
    files: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2) + "\n"


def dataset_key(dataset) -> str:
    """The config-file key of ``dataset``: its name (``configs/<model>/<name>.yaml`` is the file
    config.py applies to it first)."""
    key = dataset.name
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", key or ""):
        raise MsalignError(f"dataset {dataset.source or key!r}: its name {key!r} cannot name a config file")
    return key


def search_record_path(folder: str | Path, key: str) -> Path:
    """``folder/<key>.search.json``."""
    return Path(folder) / f"{key}{SEARCH_RECORD_SUFFIX}"


def tuned_config_path(folder: str | Path, key: str) -> Path:
    """``folder/<key>.yaml``."""
    return Path(folder) / f"{key}{TUNED_CONFIG_SUFFIX}"


def write_search_record(path: str | Path, result: TuneResult) -> None:
    """The search record, atomically (the tune rewrites it after every batch of trials)."""
    atomic_write_text(Path(path), result.to_json())


def write_tuned(folder: str | Path, result: TuneResult, sections: dict[str, dict[str, Any]]) -> None:
    """``folder/<key>.yaml`` (``sections`` under the comment block) and then ``folder/<key>.search.json``."""
    atomic_write_text(tuned_config_path(folder, result.dataset_key), format_config_file(result, sections))
    write_search_record(search_record_path(folder, result.dataset_key), result)


# --- reading a record ------------------------------------------------------------------------------
_REQUIRED = ("model", "dataset_key", "metric_set", "selection", "budget", "trials", "seeds")


def read_search_record(path: str | Path) -> TuneResult:
    """The search record at ``path``; one line naming the file (and the key) when it is not one."""
    path = regular_file(path)  # a FIFO would block read_text forever
    try:
        value = json.loads(path.read_text())
    except OSError as error:
        raise MsalignError(f"{path}: cannot read the search record ({error.strerror})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise MsalignError(f"{path}: the search record is not valid JSON ({error})") from None
    if not isinstance(value, dict):
        raise MsalignError(f"{path}: the search record is not a JSON object")
    for key in _REQUIRED:
        if key not in value:
            raise MsalignError(f"{path}: key {key!r}: missing (not written by msalign tune?)")
    for key, kind in (("selection", dict), ("budget", dict), ("trials", list), ("seeds", list)):
        if not isinstance(value[key], kind):
            raise MsalignError(f"{path}: key {key!r}: expected a JSON {'object' if kind is dict else 'list'}")
    best = value.get("best")
    return TuneResult(
        model=value["model"],
        dataset=value.get("dataset", ""),
        dataset_key=value["dataset_key"],
        metric_set=value["metric_set"],
        inputs=value.get("inputs") or {},  # absent from records written before it was added
        selection=value["selection"],
        space=value.get("space") or [],
        fixed=value.get("fixed") or [],
        budget=value["budget"],
        sampler=value.get("sampler") or {},
        base_config=value.get("base_config") or {},
        trials=[_trial(path, f"trials[{i}]", t) for i, t in enumerate(value["trials"])],
        best=_trial(path, "best", best) if best is not None else None,
        config=value.get("config"),
        seeds=value["seeds"],
        final=value.get("final"),
        date=value.get("date", ""),
        git_revision=value.get("git_revision"),
        versions=value.get("versions") or {},
        files=value.get("files") or {},
    )


def _trial(path: Path, where: str, value: Any) -> TrialRecord:
    if not isinstance(value, dict):
        raise MsalignError(f"{path}: key {where!r}: expected a trial object")
    for key in ("number", "state", "params"):
        if key not in value:
            raise MsalignError(f"{path}: key '{where}.{key}': missing")
    return TrialRecord(
        number=value["number"],
        state=value["state"],
        params=value["params"],
        value=value.get("value"),
        valid=value.get("valid"),
        run_dir=value.get("run_dir"),
        error=value.get("error"),
    )


# --- what the record holds -------------------------------------------------------------------------
def config_dict(model_config: Any, train_config: Any) -> dict[str, dict[str, Any]]:
    """``{"model": ..., "train": ...}`` as JSON holds them (tuples as lists)."""
    return json.loads(json.dumps({"model": config_to_dict(model_config), "train": config_to_dict(train_config)}))


def digest(value: Any) -> str:
    """A short digest of a JSON value (keys sorted): what ties a search to its feature spec."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]


def git_revision() -> str | None:
    """``git rev-parse HEAD`` of the checkout msalign runs from (``-dirty`` with uncommitted changes), or None."""
    here = Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=20)
        if head.returncode != 0:
            return None
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=here,
            capture_output=True,
            text=True,
            timeout=20,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return head.stdout.strip() + ("-dirty" if status.stdout.strip() else "")


def package_versions() -> dict[str, str]:
    """The versions of the packages a search's results depend on (those installed)."""
    out = {}
    for name in ("msalign", "optuna", "torch", "lightning"):
        with suppress(PackageNotFoundError):
            out[name] = version(name)
    return out


def now() -> str:
    """The record's date: UTC, to the second."""
    return datetime.datetime.now(datetime.UTC).replace(microsecond=0).isoformat()


# --- the tuned file and the summary ----------------------------------------------------------------
def tuned_sections(
    model_name: str, model_config: Any, train_config: Any, searched: list[str]
) -> dict[str, dict[str, Any]]:
    """The config file's sections: every searched key and every key that differs from the
    dataclass defaults (runtime keys such as devices excepted), so the file alone reproduces the
    configuration whatever other files say."""
    chosen = config_dict(model_config, train_config)
    defaults = config_dict(build_config(model_name), TrainConfig())
    sections: dict[str, dict[str, Any]] = {}
    for section in ("model", "train"):
        values = {
            k: v
            for k, v in chosen[section].items()
            if f"{section}.{k}" in searched
            # a key absent from the defaults is one left out at its default (config.OMITTED_WHEN_DEFAULT)
            or (
                (k not in defaults[section] or v != defaults[section][k])
                and not (section == "train" and k in RUNTIME_KEYS)
            )
        }
        if values:
            sections[section] = values
    return sections


def format_config_file(result: TuneResult, sections: dict[str, dict[str, Any]]) -> str:
    """The tuned config file's text: a comment block on how it was chosen, then ``sections`` as YAML."""
    metric, mode = result.selection["metric"], result.selection["mode"]
    best, final = result.best, result.final or {}
    assert best is not None  # written once the search has its best trial
    fmt = metrics.format_metric
    budget = result.budget
    lines = [
        f"# {result.model} on {result.dataset_key}: tuned by `msalign tune` on the VALIDATION split only "
        f"({'lowest' if mode == 'min' else 'highest'} validation {metric}).",
        f"# Budget: {budget['trials']} trials (Optuna TPE, sampler seed {result.sampler['seed']}) of "
        f"{budget['epochs']} epochs (patience {budget['patience']}), search seeds "
        f"{','.join(map(str, budget['search_seeds']))}; best trial {best.number}: valid {metric} "
        f"{fmt(metric, best.value)}.",
    ]
    if final:
        test = ", ".join(
            f"{k} {fmt(k, final['test'].get(k))}"
            for k in metrics.headline_keys(result.metric_set)
            if k in final["test"]
        )
        lines.append(
            f"# Over seeds {','.join(map(str, result.seeds))}: valid {metric} "
            f"{fmt(metric, final['valid'].get(metric))}; test {test} (reported, never used to choose)."
        )
    lines.append(
        f"# Search record: {result.dataset_key}.search.json (space, every trial's values and validation "
        f"score). {result.date}, git {result.git_revision or 'unknown'}."
    )
    return "\n".join(lines) + "\n" + yaml.safe_dump(sections, sort_keys=False, default_flow_style=False)


def format_param(value: Any) -> str:
    """A searched value as logs and summaries show it (floats to 3 significant digits)."""
    return format(value, ".3g") if isinstance(value, float) else str(value)


def format_result(result: TuneResult) -> str:
    """A short summary: the best trial, the chosen values and the final test metrics."""
    metric = result.selection["metric"]
    fmt = metrics.format_metric
    lines = [
        f"Tuned {result.model} on {result.dataset_key}: {len(result.trials)} trials recorded "
        f"(budget {result.budget['trials']}), selection on validation {metric}."
    ]
    if result.best is not None:
        lines.append(
            f"Best trial {result.best.number}: valid {metric} {fmt(metric, result.best.value)}; "
            + ", ".join(f"{k}={format_param(v)}" for k, v in result.best.params.items())
        )
    if result.final is not None:
        keys = metrics.headline_keys(result.metric_set)
        lines += [
            "",
            f"Test metrics over seeds {result.seeds} (mean ± population std):",
            "",
            metrics.format_table(
                {result.model: result.final["test"]}, keys, std={result.model: result.final["test_std"]}
            ),
        ]
    return "\n".join(lines)


__all__ = [
    "RUNTIME_KEYS",
    "TrialRecord",
    "TuneResult",
    "config_dict",
    "dataset_key",
    "digest",
    "format_config_file",
    "format_result",
    "git_revision",
    "now",
    "package_versions",
    "read_search_record",
    "search_record_path",
    "tuned_config_path",
    "tuned_sections",
    "write_search_record",
    "write_tuned",
]

"""Hyperparameter search on the validation split only, then the chosen configuration over seeds.

``msalign tune --model M --dataset SPEC --trials N --out DIR`` (:func:`tune`):

1. **Search.** An Optuna study over the model's declared space (``Model.search_space``,
   :mod:`msalign.models.search_space`): Optuna's TPE sampler (seeded, so a search is reproducible) draws
   each trial's values; each trial trains on the train split for every ``--seeds-search`` seed and
   is scored by the dataset's selection metric on the VALIDATION split (MAE, lowest, for
   regression; WAF1, highest, for IEMOCAP), mean over those seeds. The trials run on a
   :func:`validation_view` of the dataset, which has no test split at all, so nothing in the
   search can read a test row (``train_seed`` then scores validation only). Every budget is the
   same for every model: ``--trials`` trials of ``train.epochs`` epochs (``--epochs``).
2. **Final run.** The best trial's configuration is trained over ``--seeds`` (default 5 seeds) on
   the full dataset, through the same run machinery as ``msalign train`` (``DIR/final/results.json``;
   test metrics reported, never used to choose).
3. **Record.** ``DIR/<key>.yaml``, the tuned config file (``model:`` and ``train:`` sections, every
   searched key and every key that differs from the dataclass defaults; a comment block says how it
   was chosen), and ``DIR/<key>.search.json`` beside it (:class:`TuneResult`: the space, the budget,
   each trial's values and validation score, the best trial, the seeds, the final metrics, the date
   and the git revision). ``<key>`` is the dataset's name, the key config.py picks files by
   (``../shared/data/mosi`` -> ``mosi``). With ``write_config`` both also go to
   ``configs/<model>/<key>.yaml`` and ``configs/<model>/<key>.search.json``.

Resumable: the study lives in ``DIR/study.db`` (Optuna's RDB storage on SQLite). A re-run loads
it and runs only the trials the budget still lacks; a trial cut off mid-run (kill, Ctrl-C) is
marked failed, not counted, and its values are tried again. Each trial trains into
``DIR/search/trial_<hash of its values>/seed_N`` with :func:`msalign.training.run.run_seed`, so
seeds that finished are never trained twice. The sampler is re-seeded before each trial with
``sampler_seed + trial number``, so an interrupted and resumed search draws what an uninterrupted
one draws. A study in ``DIR`` of another model, dataset, starting config, space or search seeds is
refused.

Trials run on :mod:`msalign.experiments.scheduling`'s backends: in this process (default), ``jobs`` processes
(that many trials' seeds at once), or Ray tasks (``--backend ray``; one Ray connection for the
whole search). With more than one trial at a time the sampler is asked for a batch of trials
(TPE's constant-liar mode, so a batch does not draw the same point) and told each result as the
batch finishes.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import math
import re
import subprocess
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from msalign import config as config_module
from msalign import metrics
from msalign.atomic import atomic_write_text
from msalign.config import TrainConfig, config_to_dict, parse_overrides
from msalign.errors import MsalignError
from msalign.experiments.scheduling import Backend, raise_for_failures, ray_session, run_trials, seed_trials
from msalign.models import build_config, get_model_class
from msalign.models.search_space import CategoricalParam, FloatParam, IntParam, SearchSpace, apply_params, read_key
from msalign.training.run import summarize_run
from msalign.training.run_spec import RunSpec

STUDY_FILE = "study.db"
STUDY_NAME = "msalign-tune"
LOCK_FILE = "tune.lock"
SEARCH_DIR = "search"
FINAL_DIR = "final"
DEFAULT_SEEDS = (1111, 1112, 1113, 1114, 1115)
STARTUP_TRIALS = 5  # TPE's random trials before it models the results (Optuna's default is 10)
# how a run is executed, not what is trained: never written into a tuned config file
RUNTIME_KEYS = frozenset({"accelerator", "devices", "num_nodes", "strategy", "num_workers"})


@dataclass(frozen=True)
class TuneSettings:
    """The search protocol: the budget and the seeds (the same for every model)."""

    trials: int
    search_seeds: tuple[int, ...] = (1111,)
    seeds: tuple[int, ...] = DEFAULT_SEEDS
    sampler_seed: int = 0
    write_config: bool = False

    def __post_init__(self) -> None:
        if self.trials < 1:
            raise MsalignError(f"--trials {self.trials}: must be at least 1")
        for name, seeds in (("--seeds-search", self.search_seeds), ("--seeds", self.seeds)):
            if not seeds:
                raise MsalignError(f"{name}: no seed given")
            if len(set(seeds)) != len(seeds):
                raise MsalignError(f"{name}: a seed is listed twice")


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


# --- dataset ------------------------------------------------------------------------------------
def validation_view(dataset):
    """The dataset without its test split: what every search trial trains and is scored on."""
    return dataclasses.replace(
        dataset, splits={name: split for name, split in dataset.splits.items() if name != "test"}
    )


def dataset_key(dataset) -> str:
    """The config-file key of ``dataset``: its name (``configs/<model>/<name>.yaml`` is the file
    config.py applies to it first)."""
    key = dataset.name
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", key or ""):
        raise MsalignError(f"dataset {dataset.source or key!r}: its name {key!r} cannot name a config file")
    return key


# --- the space as Optuna sees it ----------------------------------------------------------------
def distributions(space: SearchSpace) -> dict[str, Any]:
    """``{key: optuna distribution}`` in the space's order."""
    # optuna is heavy (~1 s to import): only when a search runs
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    out: dict[str, Any] = {}
    for p in space.params:
        if isinstance(p, FloatParam):
            out[p.key] = FloatDistribution(p.low, p.high, log=p.log)
        elif isinstance(p, IntParam):
            out[p.key] = IntDistribution(p.low, p.high, step=p.step)
        elif isinstance(p, CategoricalParam):
            out[p.key] = CategoricalDistribution(p.choices)
        else:  # pragma: no cover - SearchSpace admits only the three kinds
            raise TypeError(f"unknown parameter kind {type(p).__name__}")
    return out


def fixed_keys(model_config: Any, train_config: Any, overrides: list[str]) -> list[str]:
    """The ``section.name`` keys of ``--set`` overrides, resolved as config.py resolves them (a bare
    key is the model's when the model has it, else training's)."""
    model_keys = {f.name for f in dataclasses.fields(model_config)}
    keys = []
    for key, _ in parse_overrides(overrides):
        section, _, name = key.rpartition(".")
        if not section:
            section = "model" if name in model_keys else "train"
        keys.append(f"{section}.{name}")
    return keys


def search_space_for(model_name: str, model_config: Any, train_config: Any, fixed: Sequence[str] = ()) -> SearchSpace:
    """The model's declared space, minus the keys held fixed and the parameters whose ``requires``
    key is off in this configuration; every key must be a field of the configs."""
    space = get_model_class(model_name).search_space
    if space is None:
        raise MsalignError(f"model {model_name}: declares no search space (search_space on its class)")
    for p in space.params:
        read_key(p.key, model_config, train_config)
    space = space.active(model_config, train_config).without(set(fixed))
    if not space.params:
        raise MsalignError(f"model {model_name}: every key of its search space is fixed with --set; nothing to search")
    return space


def _params_label(params: dict[str, Any]) -> str:
    digest = hashlib.sha1(json.dumps(params, sort_keys=True).encode()).hexdigest()[:12]
    return f"trial_{digest}"


def _sampler(seed: int, number: int, batch: int):
    import optuna  # heavy (~1 s): imported only when a search runs

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(
            seed=seed + number, n_startup_trials=STARTUP_TRIALS, multivariate=True, constant_liar=batch > 1
        )


# --- the study ----------------------------------------------------------------------------------
@contextmanager
def _locked(out_dir: Path) -> Iterator[None]:
    """One tune per directory at a time (the study's trials are told by one process)."""
    import fcntl

    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / LOCK_FILE, "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise MsalignError(f"--out {out_dir}: another msalign tune is running there") from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _open_study(out_dir: Path, direction: Literal["minimize", "maximize"], identity: dict[str, Any]):
    import optuna  # heavy (~1 s): imported only when a search runs

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = optuna.storages.RDBStorage(f"sqlite:///{(out_dir / STUDY_FILE).absolute()}")
    study = optuna.create_study(storage=storage, study_name=STUDY_NAME, direction=direction, load_if_exists=True)
    previous = study.user_attrs.get("identity")
    if previous is None:
        study.set_user_attr("identity", identity)
    elif previous != identity:
        where, before, now = _first_difference(previous, identity)
        raise MsalignError(
            f"--out {out_dir}: holds a search with another {where} ({_short(before)} there, "
            f"{_short(now)} now); use another --out"
        )
    return study


def _first_difference(old: Any, new: Any, path: str = "") -> tuple[str, Any, Any]:
    """The dotted key where two JSON values first differ, and both values there."""
    if isinstance(old, dict) and isinstance(new, dict):
        for key in list(new) + [k for k in old if k not in new]:
            if old.get(key) != new.get(key):
                return _first_difference(old.get(key), new.get(key), f"{path}.{key}" if path else str(key))
    return path, old, new


def _short(value: Any) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= 60 else text[:57] + "..."


def _without_keys(config: dict[str, dict[str, Any]], keys: list[str]) -> dict[str, dict[str, Any]]:
    return {
        section: {k: v for k, v in values.items() if f"{section}.{k}" not in keys} for section, values in config.items()
    }


def _counted(trial) -> bool:
    """Trials that use up the budget: finished ones and ones that raised (not ones cut off)."""
    import optuna  # heavy (~1 s): imported only when a search runs

    state = trial.state
    return state == optuna.trial.TrialState.COMPLETE or (
        state == optuna.trial.TrialState.FAIL and "error" in trial.user_attrs
    )


def _requeue_interrupted(study) -> None:
    """Trials left running by a killed tune: failed (uncounted) and their values queued again."""
    import optuna  # heavy (~1 s): imported only when a search runs

    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
        study.enqueue_trial(trial.params, skip_if_exists=False)


def _record(trial) -> TrialRecord:
    import optuna  # heavy (~1 s): imported only when a search runs

    attrs = trial.user_attrs
    state = trial.state.name
    error = attrs.get("error")
    if trial.state == optuna.trial.TrialState.FAIL and error is None:
        error = "interrupted (tried again)"
    return TrialRecord(
        trial.number,
        state,
        dict(trial.params),
        trial.value if trial.state == optuna.trial.TrialState.COMPLETE else None,
        attrs.get("valid"),
        attrs.get("run_dir"),
        error,
    )


@dataclass
class _Pending:
    trial: Any  # an optuna Trial, asked and not yet told
    params: dict[str, Any]
    run: RunSpec  # the trial's configuration over the search seeds, into search/trial_<hash>


def search(
    model_name: str,
    dataset,
    model_config: Any,
    train_config: Any,
    space: SearchSpace,
    settings: TuneSettings,
    out_dir: str | Path,
    backend: Backend | None = None,
    log: Callable[[str], None] = print,
    progress: bool | None = None,
    on_batch: Callable[[Any], None] | None = None,
):
    """Runs the search until ``settings.trials`` trials have finished (resuming ``out_dir/study.db``)
    and returns the Optuna study. Trials see :func:`validation_view` of ``dataset`` only."""
    backend = backend or Backend()
    out_dir = Path(out_dir).absolute()
    metric, mode = metrics.selection_metric(dataset.metric_set)
    view = validation_view(dataset)  # the only dataset a search trial is given
    out_dir.mkdir(parents=True, exist_ok=True)
    identity = {
        "model": model_name,
        "dataset": {
            "name": dataset.name,
            "feature_spec": _digest(dataset.feature_spec.to_json()),
        },  # not its path's spelling
        # the starting configuration minus the searched keys (their values are the search's): a tuned
        # file written by --write-config leaves a re-run's identity unchanged
        "base_config": _without_keys(_config_dict(model_config, train_config), space.keys),
        "space": space.describe(),
        "search_seeds": list(settings.search_seeds),
        "sampler_seed": settings.sampler_seed,
        "selection": {"split": "valid", "metric": metric, "mode": mode},
    }
    study = _open_study(out_dir, "minimize" if mode == "min" else "maximize", identity)
    _requeue_interrupted(study)
    with ray_session(backend) if backend.kind == "ray" else nullcontext():  # one Ray connection for every batch
        _run_study(
            study,
            model_name,
            view,
            model_config,
            train_config,
            space,
            settings,
            out_dir,
            backend,
            log,
            progress,
            on_batch,
        )
    return study


def _run_study(
    study, model_name, view, model_config, train_config, space, settings, out_dir, backend, log, progress, on_batch
) -> None:
    """Asks, trains and tells trials in batches until the budget is used (see :func:`search`)."""
    from optuna.trial import TrialState  # heavy: only when a search runs

    metric, _ = metrics.selection_metric(view.metric_set)
    dists = distributions(space)
    batch = _batch_size(backend, len(settings.search_seeds))
    while (remaining := settings.trials - sum(map(_counted, study.get_trials(deepcopy=False)))) > 0:
        pending: list[_Pending] = []
        for _ in range(min(batch, remaining)):
            study.sampler = _sampler(settings.sampler_seed, len(study.get_trials(deepcopy=False)), batch)
            trial = study.ask(dists)
            params = {key: trial.params[key] for key in space.keys}
            try:
                trial_model, trial_train = apply_params(model_config, train_config, params)
            except MsalignError as error:  # a point the config's own checks refuse
                trial.set_user_attr("error", str(error))
                study.tell(trial, state=TrialState.FAIL)
                log(f"[trial {trial.number}] failed: {error}")
                continue
            run_dir = out_dir / SEARCH_DIR / _params_label(params)
            trial.set_user_attr("run_dir", str(run_dir.relative_to(out_dir)))
            pending.append(
                _Pending(trial, params, RunSpec(model_name, trial_model, trial_train, settings.search_seeds, run_dir))
            )
        jobs = [job for p in pending for job in seed_trials(f"trial {p.trial.number}", p.run)]
        done: dict[str, dict[int, Any]] = {f"trial {p.trial.number}": {} for p in pending}
        for outcome in run_trials(jobs, view, backend, log, progress):
            done[outcome.trial.label][outcome.trial.seed] = outcome
        for p in pending:
            outcomes = [done[f"trial {p.trial.number}"][seed] for seed in settings.search_seeds]
            failed = [o for o in outcomes if o.failed]
            if failed:
                p.trial.set_user_attr("error", f"seed {failed[0].trial.seed}: {failed[0].error}")
                study.tell(p.trial, state=TrialState.FAIL)
                continue
            valid, _ = metrics.summarize([o.summary.valid for o in outcomes if o.summary is not None])
            value = valid.get(metric)
            if value is None or not math.isfinite(value):
                p.trial.set_user_attr("error", f"validation {metric} is {value}")
                study.tell(p.trial, state=TrialState.FAIL)
                log(f"[trial {p.trial.number}] failed: validation {metric} is {value}")
                continue
            p.trial.set_user_attr("valid", valid)
            study.tell(p.trial, value)
            log(
                f"[tune {sum(map(_counted, study.get_trials(deepcopy=False)))}/{settings.trials}] trial "
                f"{p.trial.number}: valid {metric} {metrics.format_metric(metric, value)} "
                + " ".join(f"{k}={_fmt(v)}" for k, v in p.params.items())
            )
        if on_batch is not None:
            on_batch(study)


def _batch_size(backend: Backend, seeds: int) -> int:
    """Trials asked at once: as many as the backend runs side by side (each trial is ``seeds`` jobs)."""
    if backend.kind == "local":
        return max(1, backend.jobs // seeds)
    import ray  # connected by tune's ray_session

    cpus = ray.cluster_resources().get("CPU", 1.0)
    return max(1, int(cpus // backend.cpus_per_trial) // seeds)


def _fmt(value: Any) -> str:
    return format(value, ".3g") if isinstance(value, float) else str(value)


def _inputs(dataset) -> dict[str, Any]:
    """What the tuned configuration was chosen for (a config file holds no trace of its features)."""
    modalities = dataset.feature_spec.modalities or {}
    encoders = {m: facts.encoder for m, facts in modalities.items() if facts.encoder}
    return {
        "describe": dataset.describe(),
        "encoders": encoders,
        "feature_spec": _digest(dataset.feature_spec.to_json()),
    }


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _config_dict(model_config: Any, train_config: Any) -> dict[str, dict[str, Any]]:
    return json.loads(json.dumps({"model": config_to_dict(model_config), "train": config_to_dict(train_config)}))


# --- the tuned file -----------------------------------------------------------------------------
def tuned_sections(
    model_name: str, model_config: Any, train_config: Any, searched: list[str]
) -> dict[str, dict[str, Any]]:
    """The config file's sections: every searched key and every key that differs from the
    dataclass defaults (runtime keys such as devices excepted), so the file alone reproduces the
    configuration whatever other files say."""
    chosen = _config_dict(model_config, train_config)
    defaults = _config_dict(build_config(model_name), TrainConfig())
    sections: dict[str, dict[str, Any]] = {}
    for section in ("model", "train"):
        values = {
            k: v
            for k, v in chosen[section].items()
            if f"{section}.{k}" in searched
            or (v != defaults[section][k] and not (section == "train" and k in RUNTIME_KEYS))
        }
        if values:
            sections[section] = values
    return sections


def format_config_file(result: TuneResult, sections: dict[str, dict[str, Any]]) -> str:
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


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("msalign", "optuna", "torch", "lightning"):
        with suppress(PackageNotFoundError):
            out[name] = version(name)
    return out


# --- the command ----------------------------------------------------------------------------------
def tune(
    model_name: str,
    dataset,
    model_config: Any,
    train_config: Any,
    settings: TuneSettings,
    out_dir: str | Path,
    fixed: Sequence[str] = (),
    backend: Backend | None = None,
    log: Callable[[str], None] = print,
    progress: bool | None = None,
) -> TuneResult:
    """Search on validation, train the best configuration over ``settings.seeds`` and write the
    tuned config file and its search record (see the module docstring). Returns the record."""
    backend = backend or Backend()
    if train_config.devices * train_config.num_nodes > 1:
        raise MsalignError(
            f"train.devices {train_config.devices} x train.num_nodes {train_config.num_nodes}: "
            "msalign tune trains each trial on one device"
        )
    space = search_space_for(model_name, model_config, train_config, list(fixed))
    key = dataset_key(dataset)
    out_dir = Path(out_dir).absolute()
    if out_dir.exists() and not out_dir.is_dir():
        raise MsalignError(f"--out {out_dir}: exists and is not a directory")
    metric, mode = metrics.selection_metric(dataset.metric_set)
    record_path, config_path = out_dir / f"{key}.search.json", out_dir / f"{key}.yaml"
    result = TuneResult(
        model=model_name,
        dataset=dataset.source or dataset.name,
        dataset_key=key,
        metric_set=dataset.metric_set,
        inputs=_inputs(dataset),
        selection={
            "split": "valid",
            "metric": metric,
            "mode": mode,
            "rule": f"{'lowest' if mode == 'min' else 'highest'} validation {metric}, mean over the search "
            "seeds; the search never sees the test split",
        },
        space=space.describe(),
        fixed=sorted(set(fixed) & set(get_space_keys(model_name))),
        budget={
            "trials": settings.trials,
            "epochs": train_config.epochs,
            "patience": train_config.patience,
            "search_seeds": list(settings.search_seeds),
        },
        sampler={
            "name": "TPESampler",
            "seed": settings.sampler_seed,
            "reseeded": "seed + trial number",
            "n_startup_trials": STARTUP_TRIALS,
            "multivariate": True,
        },
        base_config=_config_dict(model_config, train_config),
        trials=[],
        best=None,
        config=None,
        seeds=list(settings.seeds),
        final=None,
        date="",
        git_revision=git_revision(),
        versions=_versions(),
        files={"config": config_path.name, "record": record_path.name, "study": STUDY_FILE, "final": FINAL_DIR},
    )

    def write_progress(study) -> None:  # the record so far, after every batch of trials
        result.trials = [_record(t) for t in study.get_trials(deepcopy=False)]
        result.date = _now()
        atomic_write_text(record_path, result.to_json())

    with _locked(out_dir), ray_session(backend) if backend.kind == "ray" else nullcontext():
        study = search(
            model_name,
            dataset,
            model_config,
            train_config,
            space,
            settings,
            out_dir,
            backend,
            log,
            progress,
            on_batch=write_progress,
        )
        # the trials the study actually spent (more than asked when an earlier run had a larger budget)
        result.budget["trials"] = max(settings.trials, sum(map(_counted, study.get_trials(deepcopy=False))))
        write_progress(study)
        complete = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
        if not complete:
            first = next((r.error for r in result.trials if r.error), "no trial ran")
            raise MsalignError(f"msalign tune: no trial finished ({first})")
        best = study.best_trial
        result.best = _record(best)
        params = {k: best.params[k] for k in space.keys}
        final_model, final_train = apply_params(model_config, train_config, params)
        result.config = _config_dict(final_model, final_train)
        log(
            f"[tune] best trial {best.number}: valid {metric} {metrics.format_metric(metric, best.value)}; "
            f"training it over seeds {','.join(map(str, settings.seeds))}"
        )
        final = RunSpec(model_name, final_model, final_train, settings.seeds, out_dir / FINAL_DIR)
        outcomes = list(run_trials(seed_trials("final", final), dataset, backend, log, progress))
        raise_for_failures(outcomes)
        per_seed = {o.trial.seed: o.summary for o in outcomes if o.summary is not None}
        results = summarize_run(final, dataset, [per_seed[seed] for seed in settings.seeds])
        valid_mean, valid_std = metrics.summarize([r.valid for r in results.per_seed])
        result.final = {
            "dir": FINAL_DIR,
            "valid": valid_mean,
            "valid_std": valid_std,
            "test": results.mean,
            "test_std": results.std,
        }
        result.date = _now()
        text = format_config_file(result, tuned_sections(model_name, final_model, final_train, space.keys))
        atomic_write_text(config_path, text)
        atomic_write_text(record_path, result.to_json())
        if settings.write_config:
            target = Path(config_module.CONFIG_DIR) / model_name
            atomic_write_text(target / config_path.name, text)
            atomic_write_text(target / record_path.name, result.to_json())
            log(f"[tune] wrote {target / config_path.name} and {record_path.name}")
    return result


def get_space_keys(model_name: str) -> list[str]:
    space = get_model_class(model_name).search_space
    return space.keys if space is not None else []


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).replace(microsecond=0).isoformat()


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
            + ", ".join(f"{k}={_fmt(v)}" for k, v in result.best.params.items())
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
    "DEFAULT_SEEDS",
    "TrialRecord",
    "TuneResult",
    "TuneSettings",
    "dataset_key",
    "distributions",
    "fixed_keys",
    "format_result",
    "search",
    "search_space_for",
    "tune",
    "tuned_sections",
    "validation_view",
]

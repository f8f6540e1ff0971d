"""The search of ``msalign tune``: an Optuna study over a model's declared space, scored on validation only.

An Optuna study over the model's declared space (``Model.search_space``,
:mod:`msalign.models.search_space`): Optuna's TPE sampler (seeded, so a search is reproducible) draws
each trial's values; each trial trains on the train split for every ``--seeds-search`` seed and
is scored by the dataset's selection metric on the VALIDATION split (MAE, lowest, for
regression; WAF1, highest, for IEMOCAP), mean over those seeds. The trials run on a
:func:`validation_view` of the dataset, which has no test split at all, so nothing in the
search can read a test row (``train_seed`` then scores validation only). Every budget is the
same for every model: ``--trials`` trials of ``train.epochs`` epochs (``--epochs``).

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

The study's trials become the search record's :class:`~msalign.experiments.tune_record.TrialRecord`
(:func:`trial_record`); :mod:`msalign.experiments.tune` runs the search, the final run and writes the record.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import warnings
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from msalign import metrics
from msalign.config import parse_overrides
from msalign.errors import MsalignError
from msalign.experiments.scheduling import Backend, ray_session, run_trials, seed_trials
from msalign.experiments.tune_record import TrialRecord, config_dict, digest, format_param
from msalign.models import get_model_class
from msalign.models.search_space import CategoricalParam, FloatParam, IntParam, SearchSpace, apply_params, read_key
from msalign.training.run_spec import RunSpec

STUDY_FILE = "study.db"
STUDY_NAME = "msalign-tune"
SEARCH_DIR = "search"
DEFAULT_SEEDS = (1111, 1112, 1113, 1114, 1115)
STARTUP_TRIALS = 5  # TPE's random trials before it models the results (Optuna's default is 10)


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


# --- dataset ------------------------------------------------------------------------------------
def validation_view(dataset):
    """The dataset without its test split: what every search trial trains and is scored on."""
    return dataclasses.replace(
        dataset, splits={name: split for name, split in dataset.splits.items() if name != "test"}
    )


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


def get_space_keys(model_name: str) -> list[str]:
    space = get_model_class(model_name).search_space
    return space.keys if space is not None else []


def _params_label(params: dict[str, Any]) -> str:
    hashed = hashlib.sha1(json.dumps(params, sort_keys=True).encode()).hexdigest()[:12]
    return f"trial_{hashed}"


def _sampler(seed: int, number: int, batch: int):
    import optuna  # heavy (~1 s): imported only when a search runs

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(
            seed=seed + number, n_startup_trials=STARTUP_TRIALS, multivariate=True, constant_liar=batch > 1
        )


# --- the study ----------------------------------------------------------------------------------
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


def uses_budget(trial) -> bool:
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


def trial_record(trial) -> TrialRecord:
    """The search record's entry for an Optuna trial (a FAIL without an error was cut off)."""
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
            "feature_spec": digest(dataset.feature_spec.to_json()),
        },  # not its path's spelling
        # the starting configuration minus the searched keys (their values are the search's): a tuned
        # file written by --write-config leaves a re-run's identity unchanged
        "base_config": _without_keys(config_dict(model_config, train_config), space.keys),
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
    while (remaining := settings.trials - sum(map(uses_budget, study.get_trials(deepcopy=False)))) > 0:
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
                f"[tune {sum(map(uses_budget, study.get_trials(deepcopy=False)))}/{settings.trials}] trial "
                f"{p.trial.number}: valid {metric} {metrics.format_metric(metric, value)} "
                + " ".join(f"{k}={format_param(v)}" for k, v in p.params.items())
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


__all__ = [
    "DEFAULT_SEEDS",
    "STUDY_FILE",
    "STUDY_NAME",
    "TuneSettings",
    "distributions",
    "fixed_keys",
    "get_space_keys",
    "search",
    "search_space_for",
    "trial_record",
    "uses_budget",
    "validation_view",
]

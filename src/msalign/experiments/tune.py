"""Hyperparameter search on the validation split only, then the chosen configuration over seeds.

``msalign tune --model M --dataset SPEC --trials N --out DIR`` (:func:`tune`):

1. **Search.** An Optuna study over the model's declared space, each trial scored on the VALIDATION
   split only (:func:`msalign.experiments.tune_search.search`, which says how; resumable from
   ``DIR/study.db``). Every budget is the same for every model: ``--trials`` trials of
   ``train.epochs`` epochs (``--epochs``).
2. **Final run.** The best trial's configuration is trained over ``--seeds`` (default 5 seeds) on
   the full dataset, through the same run machinery as ``msalign train`` (``DIR/final/results.json``;
   test metrics reported, never used to choose).
3. **Record.** ``DIR/<key>.yaml``, the tuned config file, and ``DIR/<key>.search.json`` beside it
   (:mod:`msalign.experiments.tune_record`, their one writer and reader; the record is rewritten after
   every batch of trials). With ``write_config`` both also go to ``configs/<model>/<key>.yaml`` and
   ``configs/<model>/<key>.search.json``.

One tune per ``DIR`` at a time (a lock file). Trials and the final run use
:mod:`msalign.experiments.scheduling`'s backends (``--jobs``, ``--backend ray``; one Ray connection
for the whole tune).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

from msalign import config as config_module
from msalign import metrics
from msalign.errors import MsalignError
from msalign.experiments.scheduling import Backend, raise_for_failures, ray_session, run_trials, seed_trials
from msalign.experiments.tune_record import (
    TuneResult,
    config_dict,
    dataset_key,
    digest,
    git_revision,
    now,
    package_versions,
    search_record_path,
    tuned_config_path,
    tuned_sections,
    write_search_record,
    write_tuned,
)
from msalign.experiments.tune_search import (
    STARTUP_TRIALS,
    STUDY_FILE,
    TuneSettings,
    get_space_keys,
    search,
    search_space_for,
    trial_record,
    uses_budget,
)
from msalign.models.search_space import apply_params
from msalign.training.run import summarize_run
from msalign.training.run_spec import RunSpec

LOCK_FILE = "tune.lock"
FINAL_DIR = "final"


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


def _inputs(dataset) -> dict[str, Any]:
    """What the tuned configuration was chosen for (a config file holds no trace of its features)."""
    modalities = dataset.feature_spec.modalities or {}
    encoders = {m: facts.encoder for m, facts in modalities.items() if facts.encoder}
    return {
        "describe": dataset.describe(),
        "encoders": encoders,
        "feature_spec": digest(dataset.feature_spec.to_json()),
    }


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
    record_path, config_path = search_record_path(out_dir, key), tuned_config_path(out_dir, key)
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
        base_config=config_dict(model_config, train_config),
        trials=[],
        best=None,
        config=None,
        seeds=list(settings.seeds),
        final=None,
        date="",
        git_revision=git_revision(),
        versions=package_versions(),
        files={"config": config_path.name, "record": record_path.name, "study": STUDY_FILE, "final": FINAL_DIR},
    )

    def write_progress(study) -> None:  # the record so far, after every batch of trials
        result.trials = [trial_record(t) for t in study.get_trials(deepcopy=False)]
        result.date = now()
        write_search_record(record_path, result)

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
        result.budget["trials"] = max(settings.trials, sum(map(uses_budget, study.get_trials(deepcopy=False))))
        write_progress(study)
        complete = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
        if not complete:
            first = next((r.error for r in result.trials if r.error), "no trial ran")
            raise MsalignError(f"msalign tune: no trial finished ({first})")
        best = study.best_trial
        result.best = trial_record(best)
        params = {k: best.params[k] for k in space.keys}
        final_model, final_train = apply_params(model_config, train_config, params)
        result.config = config_dict(final_model, final_train)
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
        result.date = now()
        sections = tuned_sections(model_name, final_model, final_train, space.keys)
        write_tuned(out_dir, result, sections)
        if settings.write_config:
            target = Path(config_module.CONFIG_DIR) / model_name
            write_tuned(target, result, sections)
            log(f"[tune] wrote {target / config_path.name} and {record_path.name}")
    return result


__all__ = ["FINAL_DIR", "LOCK_FILE", "tune"]

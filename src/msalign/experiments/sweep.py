"""Grid sweeps: train a model at every combination of a few model-config values, select on validation.

``msalign sweep --model decalign --dataset SPEC --grid alpha=0.01,0.05,0.1 beta=0.01,0.05,0.1 --out DIR``
trains each grid point over the seeds into ``DIR/<key=value_key=value>/``, one trial per (point, seed)
with :func:`msalign.training.run.run_seed` (so a re-run skips every seed that already finished) on
``--backend local`` (``--jobs N`` processes) or ``--backend ray`` (:mod:`msalign.experiments.scheduling`), and writes
``DIR/sweep.json`` and ``DIR/sweep.md``: per point, the validation and test metrics averaged over
seeds. The best point is chosen on the VALIDATION split only (the dataset's selection metric: MAE,
lowest, for regression; WAF1, highest, for IEMOCAP); test metrics are reported, never used to choose.
Grid values override the same keys from config files and ``--set``.
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import Any

from msalign import metrics
from msalign.config import coerce, config_to_dict, field_types, parse_key_values, parse_value
from msalign.data.types import MultimodalDataset
from msalign.errors import MsalignError, PartialResults, suggest
from msalign.experiments.benchmark import check_entries
from msalign.experiments.scheduling import Backend, TrialOutcome, raise_for_failures, run_trials, seed_trials
from msalign.models import get_model_class
from msalign.training.run import is_rank_zero, summarize_run
from msalign.training.run_folder import (
    SWEEP_FILE,
    SWEEP_TEXT_FILE,
    BestPoint,
    PointFailure,
    SeedSummary,
    Selection,
    SweepPoint,
    SweepSummary,
    format_value,
    point_label,
    sweep_owner,
    write_sweep,
)
from msalign.training.run_spec import RunSpec


def parse_grid(items: list[str]) -> dict[str, list[Any]]:
    """``["alpha=0.01,0.05", "beta=0.1"]`` -> ``{"alpha": [0.01, 0.05], "beta": [0.1]}`` (values read by
    :func:`msalign.config.parse_value`, as --set reads them)."""
    if not items:
        raise MsalignError("--grid: no key given; expected e.g. --grid alpha=0.01,0.05 beta=0.01,0.05")
    grid: dict[str, list[Any]] = {}
    for item in items:  # one at a time: errors come in the order the items are given
        [(key, raw)] = parse_key_values(
            [item], lambda item: f"--grid {item!r}: expected key=value1,value2,...", convert=None
        )
        if key in grid:
            raise MsalignError(f"--grid {key}: key given twice")
        texts = [v.strip() for v in raw.split(",")]
        if not raw.strip() or any(not v for v in texts):
            raise MsalignError(f"--grid {item!r}: empty value; expected key=value1,value2,...")
        values = [parse_value(text) for text in texts]
        if len(set(map(repr, values))) != len(values):
            raise MsalignError(f"--grid {key}: a value is listed twice ({raw})")
        grid[key] = values
    return grid


def check_grid(
    model_name: str, model_config: Any, grid: dict[str, list[Any]], check_points: bool = True
) -> dict[str, list[Any]]:
    """Grid keys must be fields of the model's config and every value must have the field's type;
    with ``check_points``, every point must also pass the config's own checks on top of
    ``model_config`` (e.g. width divisible by heads).

    Returns the grid with values converted to the fields' types; raises a one-line MsalignError
    otherwise. Runs before any data is loaded or any model trained.
    """
    fields = {f.name for f in dataclasses.fields(model_config)}
    hints = field_types(type(model_config))
    checked: dict[str, list[Any]] = {}
    for key, values in grid.items():
        name = key.removeprefix("model.")
        if name not in fields:
            raise MsalignError(
                f"--grid {key}: not a config key of model {model_name}{suggest(key, sorted(fields))}; "
                f"'msalign models {model_name}' lists the keys"
            )
        try:
            checked[name] = [coerce(value, hints[name], f"model.{name}") for value in values]
        except MsalignError as error:
            raise MsalignError(f"--grid: {error}") from None
    if len(checked) != len(grid):
        raise MsalignError("--grid: the same key is given twice (with and without 'model.')")
    for point in grid_points(checked) if check_points else []:
        try:
            dataclasses.replace(model_config, **point)
        except MsalignError as error:
            raise MsalignError(f"--grid point {point_label(point)}: {error}") from None
    return checked


def grid_points(grid: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """Every combination, the first key varying slowest."""
    keys = list(grid)
    return [dict(zip(keys, values, strict=True)) for values in itertools.product(*(grid[k] for k in keys))]


def point_runs(spec: RunSpec, grid: dict[str, list[Any]]) -> dict[str, RunSpec]:
    """Point label -> the point's run: ``spec`` with the point's values in its model config, into
    ``spec.out_dir/<label>``; in grid order."""
    return {
        point_label(params): spec.replace(
            model_config=dataclasses.replace(spec.model_config, **params), out_dir=spec.out_dir / point_label(params)
        )
        for params in grid_points(grid)
    }


def run_sweep(
    spec: RunSpec,
    grid: dict[str, list[Any]],
    dataset: MultimodalDataset,
    progress: bool | None = None,
    log=print,
    backend: Backend | None = None,
) -> SweepSummary:
    """Trains every grid point of ``spec`` over ``spec.seeds`` (each point into
    ``spec.out_dir/<point label>``; finished seeds are skipped), writes sweep.json and sweep.md after
    each point, and returns the sweep summary (see the module docstring).

    Every (point, seed) is one trial on ``backend`` (default: one after another in this process,
    see :mod:`msalign.experiments.scheduling`); points are listed in grid order whatever order they finish in.
    When trials fail, the others still finish, sweep.json stays ``"complete": false`` and one
    MsalignError names the failed trials."""
    model_name, seeds = spec.model_name, list(spec.seeds)
    get_model_class(model_name)  # unknown names fail before any work
    grid = check_grid(model_name, spec.model_config, grid)
    runs = point_runs(spec, grid)
    points = grid_points(grid)
    params_of = {point_label(params): params for params in points}
    # every point's model against the dataset's modalities and widths before any training
    check_entries(runs, dataset)
    out_dir = spec.out_dir
    dataset_name = dataset.source or dataset.name
    previous = sweep_owner(out_dir)
    if previous is not None and previous != (model_name, dataset_name):
        raise MsalignError(
            f"{out_dir / SWEEP_FILE}: a sweep of model {previous[0]} on "
            f"{previous[1]}, not {model_name} on {dataset_name}; use another --out"
        )
    metric, mode = metrics.selection_metric(dataset.metric_set)
    base = config_to_dict(spec.model_config)
    summary = SweepSummary(
        model=model_name,
        dataset=dataset_name,
        metric_set=dataset.metric_set,
        grid=grid,
        seeds=seeds,
        config={"model": {k: v for k, v in base.items() if k not in grid}, "train": config_to_dict(spec.train_config)},
        selection=Selection(
            "valid",
            metric,
            mode,
            f"{'lowest' if mode == 'min' else 'highest'} validation {metric}, "
            "mean over seeds; test metrics are reported, never used to choose",
        ),
    )
    trials = [trial for label, run in runs.items() for trial in seed_trials(label, run)]
    finished: dict[str, dict[int, SeedSummary]] = {label: {} for label in runs}
    point_rows: dict[str, SweepPoint] = {}
    outcomes: list[TrialOutcome] = []
    for outcome in run_trials(trials, dataset, backend, log, progress):
        outcomes.append(outcome)
        label = outcome.trial.label
        if outcome.summary is None:  # failed
            continue
        finished[label][outcome.trial.seed] = outcome.summary
        if len(finished[label]) < len(seeds):
            continue
        results = summarize_run(runs[label], dataset, [finished[label][seed] for seed in seeds])
        valid_mean, valid_std = metrics.summarize([r.valid for r in results.per_seed])
        point_rows[label] = SweepPoint(label, params_of[label], label, valid_mean, valid_std, results.mean, results.std)
        summary.points = [point_rows[name] for name in runs if name in point_rows]  # grid order
        summary.best = select_best(summary.points, metric, mode)
        summary.complete = len(point_rows) == len(points)
        if is_rank_zero():  # a DDP run's other processes compute the same summary
            write_sweep(out_dir, summary, format_sweep(summary))
        log(
            f"[sweep {len(point_rows)}/{len(points)}] {label}: valid {metric} "
            f"{metrics.format_metric(metric, valid_mean[metric])}"
        )
    for outcome in outcomes:
        if outcome.failed and outcome.trial.label not in summary.failed:
            summary.failed[outcome.trial.label] = PointFailure(
                params_of[outcome.trial.label], f"seed {outcome.trial.seed}: {outcome.error}"
            )
    if summary.failed and is_rank_zero():
        write_sweep(out_dir, summary, format_sweep(summary))
    try:
        raise_for_failures(outcomes)
    except MsalignError as error:
        raise PartialResults(
            f"{error}; the finished points: {out_dir / SWEEP_TEXT_FILE}", format_sweep(summary)
        ) from None
    return summary


def select_best(points: list[SweepPoint], metric: str, mode: str) -> BestPoint:
    """The point with the best VALIDATION ``metric`` (mean over seeds); ties go to the earlier point."""
    if not points:
        raise MsalignError("sweep: no grid point has finished")
    sign = 1.0 if mode == "min" else -1.0
    best = min(points, key=lambda p: sign * p.valid[metric])
    return BestPoint(best.label, best.params, best.valid, best.test)


def format_sweep(summary: SweepSummary) -> str:
    """sweep.md: one row per grid point (validation then test metrics), the chosen point marked."""
    keys = list(summary.grid)
    metric, mode = summary.selection.metric, summary.selection.mode
    headline = metrics.headline_keys(summary.metric_set)
    valid_cols = [metric] + [k for k in headline if k != metric and k in ("Non0_acc_2", "Mult_acc_2", "WAcc")]
    best = summary.best.label if summary.best else None

    fmt = metrics.format_metric
    seeds = ", ".join(map(str, summary.seeds))
    grid_text = "; ".join(f"{k} in {{" + ", ".join(format_value(v) for v in summary.grid[k]) + "}" for k in keys)
    lines = [
        f"# Sweep: {summary.model} on {summary.dataset}",
        "",
        f"Grid: {grid_text}; seeds {seeds}; metrics are means over seeds (accuracies and F1 in %, MAE and Corr raw).",
        "",
        f"Selection: {summary.selection.rule}.",
        "",
        "| " + " | ".join(keys + [f"valid {k}" for k in valid_cols] + [f"test {k}" for k in headline]) + " | chosen |",
        "|" + "---|" * (len(keys) + len(valid_cols) + len(headline) + 1),
    ]
    for point in summary.points:
        cells = [format_value(point.params[k]) for k in keys]
        cells += [fmt(k, point.valid.get(k)) for k in valid_cols]
        cells += [fmt(k, point.test.get(k)) for k in headline]
        cells.append("← best on valid" if point.label == best else "")
        lines.append("| " + " | ".join(cells) + " |")
    if summary.best:
        b = summary.best
        params = ", ".join(f"{k}={format_value(v)}" for k, v in b.params.items())
        lines += [
            "",
            f"Chosen on validation {metric} ({'lowest' if mode == 'min' else 'highest'}): **{params}** — "
            f"valid {metric} {fmt(metric, b.valid[metric])}, test {metric} {fmt(metric, b.test.get(metric))}.",
        ]
    for failure in summary.failed.values():  # marked rows, then what went wrong
        cells = [format_value(failure.params[k]) for k in keys] + ["–"] * (len(valid_cols) + len(headline))
        lines.append("| " + " | ".join([*cells, "FAILED"]) + " |")
    if summary.failed:
        lines += ["", "Failed: " + "; ".join(f"{label} {f.error}" for label, f in summary.failed.items())]
    if not summary.complete:
        lines += ["", f"Incomplete: {len(summary.points)} of {len(grid_points(summary.grid))} points finished so far."]
    return "\n".join(lines)


__all__ = [
    "SWEEP_FILE",
    "SWEEP_TEXT_FILE",
    "check_grid",
    "format_sweep",
    "grid_points",
    "parse_grid",
    "point_label",
    "point_runs",
    "run_sweep",
    "select_best",
]

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
import json
from pathlib import Path
from typing import Any

from msalign import metrics
from msalign.atomic import atomic_write_text
from msalign.config import coerce, config_to_dict, field_types, parse_key_values, parse_value
from msalign.errors import MsalignError, PartialResults, suggest
from msalign.experiments.benchmark import check_entries
from msalign.experiments.scheduling import Backend, raise_for_failures, run_trials, seed_trials
from msalign.models import get_model_class
from msalign.training.run import is_rank_zero, summarize_run

SWEEP_FILE = "sweep.json"
SWEEP_TABLE = "sweep.md"


def parse_grid(items: list[str]) -> dict[str, list[Any]]:
    """``["alpha=0.01,0.05", "beta=0.1"]`` -> ``{"alpha": [0.01, 0.05], "beta": [0.1]}`` (values read by
    :func:`msalign.config.parse_value`, as --set reads them)."""
    if not items:
        raise MsalignError("--grid: no key given; expected e.g. --grid alpha=0.01,0.05 beta=0.01,0.05")
    grid: dict[str, list[Any]] = {}
    for item in items:  # one at a time: errors come in the order the items are given
        [(key, raw)] = parse_key_values([item], lambda item: f"--grid {item!r}: expected key=value1,value2,...",
                                        convert=None)
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


def check_grid(model_name: str, model_config: Any, grid: dict[str, list[Any]], check_points: bool = True) -> dict[str, list[Any]]:
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
            raise MsalignError(f"--grid {key}: not a config key of model {model_name}{suggest(key, sorted(fields))}; "
                               f"'msalign models {model_name}' lists the keys")
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


def _format_value(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return format(value, "g")
    return str(value)


def point_label(params: dict[str, Any]) -> str:
    """``{"alpha": 0.01, "beta": 0.1}`` -> ``"alpha=0.01_beta=0.1"`` (the point's run directory)."""
    return "_".join(f"{k}={_format_value(v)}" for k, v in params.items())


def run_sweep(
    model_name: str,
    dataset,
    model_config: Any,
    train_config: Any,
    grid: dict[str, list[Any]],
    seeds: list[int],
    out_dir: str | Path,
    progress: bool | None = None,
    log=print,
    backend: Backend | None = None,
) -> dict[str, Any]:
    """Trains every grid point over ``seeds`` (finished seeds are skipped), writes sweep.json and
    sweep.md after each point, and returns the sweep summary (see the module docstring).

    Every (point, seed) is one trial on ``backend`` (default: one after another in this process,
    see :mod:`msalign.experiments.scheduling`); points are listed in grid order whatever order they finish in.
    When trials fail, the others still finish, sweep.json stays ``"complete": false`` and one
    MsalignError names the failed trials."""
    get_model_class(model_name)  # unknown names fail before any work
    grid = check_grid(model_name, model_config, grid)
    # every point's model against the dataset's modalities and widths before any training
    check_entries({point_label(params): (model_name, dataclasses.replace(model_config, **params), train_config)
                   for params in grid_points(grid)}, dataset)
    out_dir = Path(out_dir)
    dataset_name = dataset.source or dataset.name
    previous = _read_sweep(out_dir)
    if previous is not None and (previous.get("model"), previous.get("dataset")) != (model_name, dataset_name):
        raise MsalignError(f"{out_dir / SWEEP_FILE}: a sweep of model {previous.get('model')} on "
                           f"{previous.get('dataset')}, not {model_name} on {dataset_name}; use another --out")
    metric, mode = metrics.selection_metric(dataset.metric_set)
    points = grid_points(grid)
    base = config_to_dict(model_config)
    summary: dict[str, Any] = {
        "model": model_name,
        "dataset": dataset_name,
        "metric_set": dataset.metric_set,
        "grid": grid,
        "seeds": list(seeds),
        "config": {"model": {k: v for k, v in base.items() if k not in grid}, "train": config_to_dict(train_config)},
        "selection": {"split": "valid", "metric": metric, "mode": mode,
                      "rule": f"{'lowest' if mode == 'min' else 'highest'} validation {metric}, mean over seeds; "
                              "test metrics are reported, never used to choose"},
        "points": [],
        "best": None,
        "complete": False,
    }
    configs = {point_label(params): (params, dataclasses.replace(model_config, **params)) for params in points}
    trials = [trial for label, (_, config) in configs.items()
              for trial in seed_trials(label, model_name, config, train_config, seeds, out_dir / label)]
    finished: dict[str, dict[int, dict[str, Any]]] = {label: {} for label in configs}
    point_rows: dict[str, dict[str, Any]] = {}
    outcomes = []
    for outcome in run_trials(trials, dataset, backend, log, progress):
        outcomes.append(outcome)
        label = outcome.trial.label
        if outcome.failed:
            continue
        finished[label][outcome.trial.seed] = outcome.summary
        if len(finished[label]) < len(seeds):
            continue
        params, config = configs[label]
        results = summarize_run(model_name, dataset, config, train_config, seeds, out_dir / label,
                                [finished[label][seed] for seed in seeds])
        valid_mean, valid_std = metrics.summarize([r["valid"] for r in results["per_seed"]])
        point_rows[label] = {"label": label, "params": params, "dir": label, "valid": valid_mean,
                             "valid_std": valid_std, "test": results["mean"], "test_std": results["std"]}
        summary["points"] = [point_rows[name] for name in configs if name in point_rows]  # grid order
        summary["best"] = select_best(summary["points"], metric, mode)
        summary["complete"] = len(point_rows) == len(points)
        if is_rank_zero():  # a DDP run's other processes compute the same summary
            atomic_write_text(out_dir / SWEEP_FILE, json.dumps(summary, indent=2) + "\n")
            atomic_write_text(out_dir / SWEEP_TABLE, format_sweep(summary) + "\n")
        log(f"[sweep {len(point_rows)}/{len(points)}] {label}: valid {metric} "
            f"{metrics.format_metric(metric, valid_mean[metric])}")
    failed = {}
    for outcome in outcomes:
        if outcome.failed:
            failed.setdefault(outcome.trial.label, {"params": configs[outcome.trial.label][0],
                                                    "error": f"seed {outcome.trial.seed}: {outcome.error}"})
    if failed:
        summary["failed"] = failed
        if is_rank_zero():
            atomic_write_text(out_dir / SWEEP_FILE, json.dumps(summary, indent=2) + "\n")
            atomic_write_text(out_dir / SWEEP_TABLE, format_sweep(summary) + "\n")
    try:
        raise_for_failures(outcomes)
    except MsalignError as error:
        raise PartialResults(f"{error}; the finished points: {out_dir / SWEEP_TABLE}", format_sweep(summary)) from None
    return summary


def select_best(points: list[dict[str, Any]], metric: str, mode: str) -> dict[str, Any]:
    """The point with the best VALIDATION ``metric`` (mean over seeds); ties go to the earlier point."""
    if not points:
        raise MsalignError("sweep: no grid point has finished")
    sign = 1.0 if mode == "min" else -1.0
    best = min(points, key=lambda p: sign * p["valid"][metric])
    return {"label": best["label"], "params": best["params"], "valid": best["valid"], "test": best["test"]}


def _read_sweep(out_dir: Path) -> dict | None:
    path = out_dir / SWEEP_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        raise MsalignError(f"{path}: not a readable sweep file; remove it or use another --out") from None


def format_sweep(summary: dict[str, Any]) -> str:
    """sweep.md: one row per grid point (validation then test metrics), the chosen point marked."""
    keys = list(summary["grid"])
    metric, mode = summary["selection"]["metric"], summary["selection"]["mode"]
    headline = metrics.headline_keys(summary["metric_set"])
    valid_cols = [metric] + [k for k in headline if k != metric and k in ("Non0_acc_2", "Mult_acc_2", "WAcc")]
    best = summary["best"]["label"] if summary["best"] else None

    fmt = metrics.format_metric
    seeds = ", ".join(map(str, summary["seeds"]))
    grid_text = "; ".join(f"{k} in {{" + ", ".join(_format_value(v) for v in summary["grid"][k]) + "}" for k in keys)
    lines = [
        f"# Sweep: {summary['model']} on {summary['dataset']}",
        "",
        f"Grid: {grid_text}; seeds {seeds}; metrics are means over seeds (accuracies and F1 in %, MAE and Corr raw).",
        "",
        f"Selection: {summary['selection']['rule']}.",
        "",
        "| " + " | ".join(keys + [f"valid {k}" for k in valid_cols] + [f"test {k}" for k in headline]) + " | chosen |",
        "|" + "---|" * (len(keys) + len(valid_cols) + len(headline) + 1),
    ]
    for point in summary["points"]:
        cells = [_format_value(point["params"][k]) for k in keys]
        cells += [fmt(k, point["valid"].get(k)) for k in valid_cols]
        cells += [fmt(k, point["test"].get(k)) for k in headline]
        cells.append("← best on valid" if point["label"] == best else "")
        lines.append("| " + " | ".join(cells) + " |")
    if summary["best"]:
        b = summary["best"]
        params = ", ".join(f"{k}={_format_value(v)}" for k, v in b["params"].items())
        lines += ["", f"Chosen on validation {metric} ({'lowest' if mode == 'min' else 'highest'}): **{params}** — "
                      f"valid {metric} {fmt(metric, b['valid'][metric])}, test {metric} {fmt(metric, b['test'].get(metric))}."]
    for label, failure in (summary.get("failed") or {}).items():  # marked rows, then what went wrong
        cells = [_format_value(failure["params"][k]) for k in keys] + ["–"] * (len(valid_cols) + len(headline))
        lines.append("| " + " | ".join(cells + ["FAILED"]) + " |")
    if summary.get("failed"):
        lines += ["", "Failed: " + "; ".join(f"{label} {f['error']}" for label, f in summary["failed"].items())]
    if not summary.get("complete", True):
        lines += ["", f"Incomplete: {len(summary['points'])} of {len(grid_points(summary['grid']))} points finished so far."]
    return "\n".join(lines)


__all__ = ["SWEEP_FILE", "SWEEP_TABLE", "check_grid", "format_sweep", "grid_points", "parse_grid", "point_label", "run_sweep",
           "select_best"]

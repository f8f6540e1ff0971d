"""Models x seeds on one dataset: per-model runs (resumable per seed) and a comparison table."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from msalign import metrics
from msalign.atomic import atomic_write_text
from msalign.config import parse_key_values
from msalign.data.types import MultimodalDataset
from msalign.errors import MsalignError, PartialResults
from msalign.experiments.scheduling import Backend, raise_for_failures, run_trials, seed_trials
from msalign.limits import short_repr
from msalign.models import create_model, get_model_class
from msalign.training.run import is_rank_zero, summarize_run


@dataclass(frozen=True)
class BenchmarkEntry:
    """One entry of ``--models``: a model, its own config overrides, and the label naming its run
    directory and table row (the entry as written)."""

    label: str
    model_name: str
    overrides: tuple[str, ...] = ()  # key=value items, applied after --set


def parse_entries(text: str) -> list[BenchmarkEntry]:
    """``"text_only,decalign,decalign[hete=false,homo=false]"`` -> one :class:`BenchmarkEntry` each.

    An entry is a registered model name, optionally followed by ``[key=value,...]``: config
    overrides for that entry only (a model variant such as an ablation).
    """
    entries, depth, start = [], 0, 0
    for i, char in enumerate(text + ","):
        depth += {"[": 1, "]": -1}.get(char, 0)
        if depth < 0 or depth > 1:
            raise MsalignError(f"--models {text!r}: unbalanced brackets")
        if char == "," and depth == 0:
            entry = text[start:i].strip()
            start = i + 1
            if not entry:
                continue
            name, bracket, rest = entry.partition("[")
            if bracket and not rest.endswith("]"):
                raise MsalignError(f"--models entry {entry!r}: overrides go in one trailing [key=value,...]")
            pairs = parse_key_values(rest[:-1], lambda item: f"--models entry {entry!r}: {item!r} is not key=value",
                                     convert=None) if bracket else []
            _check_label(entry)
            entries.append(BenchmarkEntry(entry, name.strip(), tuple(f"{key}={raw}" for key, raw in pairs)))
    if depth:
        raise MsalignError(f"--models {text!r}: unbalanced brackets")
    labels = [entry.label for entry in entries]
    if len(set(labels)) != len(labels):
        raise MsalignError(f"--models {text!r}: an entry is listed twice")
    return entries


def _check_label(entry: str) -> None:
    """The label names a folder in --out: it must stay one plain path component there (no path
    separators, no "." or "..", no control characters), so no entry can write outside --out."""
    separators = {"/", "\\", os.sep, *([os.altsep] if os.altsep else [])}
    if entry in (".", "..") or any(c in separators or not c.isprintable() for c in entry):
        raise MsalignError(f"--models entry {short_repr(entry)}: may not contain path separators, control "
                           "characters or be '.'/'..' (it names a folder inside --out)")


def check_entries(configs: dict[str, tuple[Any, Any, Any]], dataset: MultimodalDataset) -> None:
    """Every entry's modalities and config against the dataset, before any training: each model is
    built once at the dataset's feature widths (cheap; no data passes through it)."""
    for label, (model_name, model_config, _) in configs.items():
        try:
            create_model(model_name, dataset.dims, dataset.output_dim, config=model_config)
        except MsalignError as error:
            raise MsalignError(f"--models entry {label!r} on {dataset.source or dataset.name}: {error}") from None


def run_benchmark(
    models: list[str],
    dataset: MultimodalDataset,
    configs: dict[str, tuple[Any, Any]],
    seeds: list[int],
    out_dir: str | Path,
    progress: bool | None = None,
    log=print,
    resume: bool = False,
    backend: Backend | None = None,
) -> str:
    """Trains each entry over ``seeds`` into ``out_dir/<label>`` (finished seeds are skipped) and
    writes ``out_dir/table.md`` and ``table.json`` (test mean and population std per entry).

    ``models``: labels (:attr:`BenchmarkEntry.label`); ``configs[label]`` = (model name, model
    config, train config). Every (entry, seed) is one trial on ``backend`` (default: one after
    another in this process, see :mod:`msalign.experiments.scheduling`); an entry's ``results.json`` is written
    as soon as its seeds have finished. Every entry is checked against the dataset before any
    training (:func:`check_entries`). When trials fail, the others still finish, the table of the
    finished entries is written with the failed rows marked, and :class:`PartialResults` (an
    MsalignError naming the failed trials) carries that table. "± std" appears only over more than one seed.
    """
    out_dir = Path(out_dir)
    for name in models:
        get_model_class(configs[name][0])  # unknown names fail before any work
    check_entries({name: configs[name] for name in models}, dataset)
    trials = []
    for name in models:
        model_name, model_config, train_config = configs[name]
        trials += seed_trials(name, model_name, model_config, train_config, seeds, out_dir / name, resume)
    finished: dict[str, dict[int, dict[str, Any]]] = {name: {} for name in models}
    summaries: dict[str, dict[str, Any]] = {}
    outcomes = []
    for outcome in run_trials(trials, dataset, backend, log, progress):
        outcomes.append(outcome)
        if outcome.failed:
            continue
        name = outcome.trial.label
        finished[name][outcome.trial.seed] = outcome.summary
        if len(finished[name]) == len(seeds):
            model_name, model_config, train_config = configs[name]
            results = summarize_run(model_name, dataset, model_config, train_config, seeds, out_dir / name,
                                    [finished[name][seed] for seed in seeds])
            summaries[name] = {"mean": results["mean"], "std": results["std"], "seeds": seeds}
    failed = {}
    for outcome in outcomes:
        if outcome.failed:
            failed.setdefault(outcome.trial.label, f"seed {outcome.trial.seed}: {outcome.error}")
    table: dict[str, Any] = {name: summaries[name] for name in models if name in summaries}
    table.update({name: {"failed": failed.get(name, "unfinished")} for name in models if name not in summaries})
    keys = metrics.headline_keys(dataset.metric_set)
    several = len(seeds) > 1
    what = f"mean ± population std over seeds {seeds}" if several else f"seed {seeds[0]}"
    rows = {(n if n in summaries else f"{n} (FAILED)"): summaries.get(n, {}).get("mean", {}) for n in models}
    stds = {n: summaries[n]["std"] for n in summaries} if several else None
    text = f"Test metrics on {dataset.source or dataset.name}, {what}\n\n" + metrics.format_table(rows, keys, std=stds)
    if failed:
        text += "\n\nFailed: " + "; ".join(f"{n} {e}" for n, e in failed.items())
    if is_rank_zero():  # a DDP run's other processes: rank 0 writes the same table
        atomic_write_text(out_dir / "table.md", text + "\n")
        atomic_write_text(out_dir / "table.json",
                          json.dumps({"dataset": dataset.source or dataset.name, "models": table}, indent=2))
    try:
        raise_for_failures(outcomes)
    except MsalignError as error:
        raise PartialResults(f"{error}; the table of the finished entries: {out_dir / 'table.md'}", text) from None
    return text


__all__ = ["BenchmarkEntry", "check_entries", "parse_entries", "run_benchmark"]

"""The three kinds of report: of a train run, a benchmark and a sweep; and :func:`build_report`, which
picks one from what RUN_DIR holds, renders it and writes it."""

from __future__ import annotations

from itertools import combinations
from pathlib import Path

import numpy as np

from msalign import metrics
from msalign.atomic import atomic_write_text
from msalign.data.types import MultimodalDataset
from msalign.errors import MsalignError
from msalign.evaluation.report.document import Report
from msalign.evaluation.report.figures import (
    plot_confusion,
    plot_curves,
    plot_gap,
    plot_per_class,
    plot_sweep,
    selection_label,
    slug,
)
from msalign.evaluation.report.html_renderer import render_html
from msalign.evaluation.report.markdown_renderer import render_markdown
from msalign.evaluation.report.runs import TrainRun, compute_representations, load_train_run, run_variant
from msalign.training.run_folder import (
    REPORT_DIR,
    RESULTS_FILE,
    TABLE_FILE,
    EntrySummary,
    format_value,
    read_results,
    read_sweep,
    read_table,
    run_kind,
)

format_metric = metrics.format_metric


# --- tables ----------------------------------------------------------------------------------------
def valid_mean(run: TrainRun, metric: str) -> float | None:
    """The mean over seeds of a validation metric (None when no seed has it)."""
    values = [r.valid[metric] for r in run.results.per_seed if metric in r.valid]
    return float(np.mean(values)) if values else None


def train_table(report: Report, run: TrainRun) -> None:
    """Per seed: best epoch, the validation selection metric and the test headline metrics; mean ± std."""
    keys = metrics.headline_keys(run.metric_set)
    metric, _, _ = selection_label(run.metric_set)
    header = ["seed", "best epoch (0 = first)", f"valid {metric}"] + [f"test {k}" for k in keys]
    rows = [
        [str(r.seed), "–" if r.best_epoch is None else str(r.best_epoch), format_metric(metric, r.valid.get(metric))]
        + [format_metric(k, r.test.get(k)) for k in keys]
        for r in run.results.per_seed
    ]
    if len(rows) > 1:
        rows.append(
            ["mean ± std", "", format_metric(metric, valid_mean(run, metric))]
            + [format_metric(k, run.results.mean.get(k), run.results.std.get(k)) for k in keys]
        )
    report.table(header, rows)


# --- parts every report kind shares ----------------------------------------------------------------
def _describe_run(run: TrainRun) -> str:
    seeds = ", ".join(map(str, run.seeds))
    return (
        f"Model `{run.model}` on `{run.results.dataset or '?'}`, seeds {seeds}. Model selection (early stopping, "
        "best epoch) used the validation split only; the test split was scored once with the best-on-validation "
        "weights. Accuracies and F1 in %, MAE and Corr raw."
    )


def _add_run_figures(
    report: Report, run: TrainRun, folder: Path, dataset: MultimodalDataset | None, gap: bool = True
) -> None:
    """Confusion matrix, training curves and (decalign) the modality gap of one train run."""
    if run.seeds_without_predictions:
        report.note(
            f"{run.label}: no predictions.npz for seed(s) {', '.join(map(str, run.seeds_without_predictions))} "
            "(trained before predictions were saved); pass --dataset to recompute them from the checkpoints."
        )
    confusion = plot_confusion(run, folder)
    if confusion is not None:
        report.figure(confusion)
    curves = plot_curves([run], folder, f"curves_{slug(run.label)}.png", f"Training curves: {run.label}")
    if curves is not None:
        report.figure(curves)
    else:
        report.note(f"{run.label}: no history.json, no training curves.")
    if gap:
        _add_gap(report, run, folder, dataset)


def _add_gap(report: Report, run: TrainRun, folder: Path, dataset: MultimodalDataset | None) -> None:
    if run.model != "decalign":
        report.note(f"modality gap: needs a decalign run ({run.label} is {run.model}).")
        return
    if dataset is None:
        report.note(
            "modality gap: skipped; pass --dataset SPEC (the run's dataset) to recompute the before/after "
            "alignment features from the decalign checkpoint."
        )
        return
    seed = next((s for s in run.seeds if run.checkpoint(s).is_file()), None)
    if seed is None:
        report.note(f"modality gap: {run.label} has no checkpoint (seed_N/model.safetensors).")
        return
    representations, model = compute_representations(run.checkpoint(seed), dataset)
    rows = []
    for pair in combinations(model.modalities, 2):
        figure, gaps = plot_gap(run, seed, representations, pair, folder)
        report.figure(figure)
        rows.append(
            [f"{pair[0]} – {pair[1]}"]
            + [f"{gaps[s]['centroid_distance']:.3f} ({gaps[s]['ratio']:.2f}×)" for s in ("before", "after")]
        )
    report.paragraph(
        "Distance between the modalities' test-clip centroids, in feature units (and as a multiple of "
        "the mean distance of a clip to its own modality's centroid):"
    )
    report.table(["modalities", "before alignment", "after alignment"], rows)


# --- the three kinds of report ---------------------------------------------------------------------
def build_train_report(run_dir: Path, folder: Path, dataset: MultimodalDataset | None = None) -> Report:
    """A train run: per-seed metrics, confusion matrix, training curves, per-class accuracy, modality gap."""
    results = read_results(run_dir)
    model = results.model
    label = f"{model}{run_variant(results)}" if model else (run_dir.name or str(run_dir))
    run = load_train_run(run_dir, label, dataset)  # figures say the model and variant, not the folder
    report = Report(f"Report: {run.model} run {run_dir}")
    report.paragraph(_describe_run(run))
    report.heading("Metrics (per seed)")
    train_table(report, run)
    report.heading("Figures")
    _add_run_figures(report, run, folder, dataset)
    per_class = plot_per_class([run], folder)
    if per_class is not None:
        report.figure(per_class)
    return report


def build_benchmark_report(run_dir: Path, folder: Path, dataset: MultimodalDataset | None = None) -> Report:
    """A benchmark: the comparison table, per-class accuracy, every entry's figures, the modality gap."""
    table = read_table(run_dir)
    failed = table.failed
    finished: dict[str, EntrySummary] = table.finished
    entries = list(finished)
    if not entries:
        raise MsalignError(f"{run_dir / TABLE_FILE}: lists no finished models")
    runs = []
    for label in entries:
        if not (run_dir / label / RESULTS_FILE).is_file():
            raise MsalignError(f"{run_dir / label}: benchmark entry {label!r} has no results.json")
        runs.append(load_train_run(run_dir / label, label, dataset))
    metric_set = runs[0].metric_set
    keys = metrics.headline_keys(metric_set)
    metric, _, _ = selection_label(metric_set)
    report = Report(f"Report: benchmark {run_dir}")
    seeds = finished[entries[0]].seeds or runs[0].seeds
    several = len(seeds) > 1  # "± std" only over more than one seed
    report.paragraph(
        f"{len(entries)} models / variants on `{table.dataset or '?'}`, seeds "
        f"{', '.join(map(str, seeds))}. Test metrics: "
        f"{'mean ± population std over seeds' if several else 'one seed'}; model selection used the "
        f"validation split only (valid {metric}: mean over seeds). Accuracies and F1 in %, MAE and "
        "Corr raw."
    )
    report.heading("Metrics")
    for label, error in failed.items():
        report.note(f"{label}: failed ({error}); not in this report")
    report.table(
        ["model"] + [f"test {k}" for k in keys] + [f"valid {metric}"],
        [
            [label]
            + [
                format_metric(k, finished[label].mean.get(k), finished[label].std.get(k) if several else None)
                for k in keys
            ]
            + [format_metric(metric, valid_mean(run, metric))]
            for label, run in zip(entries, runs, strict=True)
        ],
    )
    report.heading("Per-class accuracy")
    per_class = plot_per_class(runs, folder)
    if per_class is not None:
        report.figure(per_class)
    report.heading("Confusion matrices and training curves")
    for run in runs:
        _add_run_figures(report, run, folder, dataset, gap=False)
    curves = plot_curves(runs, folder, "curves_all.png", "Training curves, every entry (mean over seeds)")
    if curves is not None:
        report.figure(curves)
    report.heading("Modality gap")
    decaligns = [run for run in runs if run.model == "decalign"]
    if decaligns:
        chosen = next((run for run in decaligns if run.label == "decalign"), decaligns[0])
        report.paragraph(f"From `{chosen.label}`.")
        _add_gap(report, chosen, folder, dataset)
    else:
        report.note("modality gap: the benchmark has no decalign entry.")
    return report


def build_sweep_report(run_dir: Path, folder: Path, dataset: MultimodalDataset | None = None) -> Report:
    """A sweep: every point's metrics, the chosen point, the sensitivity plot and the chosen point's figures."""
    summary = read_sweep(run_dir)
    keys = list(summary.grid)
    metric = summary.selection.metric
    headline = metrics.headline_keys(summary.metric_set)
    report = Report(f"Report: {summary.model} sweep {run_dir}")
    report.paragraph(
        f"Grid over {', '.join(keys)} on `{summary.dataset}`, seeds "
        f"{', '.join(map(str, summary.seeds))}; {len(summary.points)} points finished. "
        f"Selection: {summary.selection.rule}."
    )
    report.heading("Metrics (mean over seeds)")
    best = summary.best
    report.table(
        keys + [f"valid {metric}"] + [f"test {k}" for k in headline] + ["chosen"],
        [
            [format_value(p.params[k]) for k in keys]
            + [format_metric(metric, p.valid.get(metric))]
            + [format_metric(k, p.test.get(k)) for k in headline]
            + ["← best on valid" if best is not None and p.label == best.label else ""]
            for p in summary.points
        ],
    )
    if best is not None:
        params = ", ".join(f"{k}={format_value(v)}" for k, v in best.params.items())
        report.paragraph(
            f"Chosen on validation {metric}: **{params}** (valid {metric} "
            f"{format_metric(metric, best.valid[metric])}, test {metric} "
            f"{format_metric(metric, best.test.get(metric))})."
        )
    report.heading("Sensitivity")
    figure = plot_sweep(summary, folder)
    if figure is not None:
        report.figure(figure)
    else:
        report.note(f"sensitivity plot: drawn for 1 or 2 grid keys; this sweep has {len(keys)}.")
    if best is not None and (run_dir / best.label / RESULTS_FILE).is_file():
        report.heading(f"The chosen point: {best.label}")
        run = load_train_run(run_dir / best.label, f"{summary.model} {best.label}", dataset)
        _add_run_figures(report, run, folder, dataset)
        per_class = plot_per_class([run], folder)
        if per_class is not None:
            report.figure(per_class)
    return report


def build_report(
    run_dir: str | Path, dataset: MultimodalDataset | None = None, out: str | Path | None = None, fmt: str | None = None
) -> tuple[Path, Report]:
    """Writes the report of ``run_dir`` (see the package docstring); returns its path and content."""
    run_dir = Path(run_dir)
    kind = run_kind(run_dir)
    fmt = fmt or ("html" if out is not None and Path(out).suffix.lower() in (".html", ".htm") else "md")
    if fmt not in ("md", "html"):
        raise MsalignError(f"--format {fmt!r}: expected md or html")
    suffix = Path(out).suffix.lower() if out is not None else ""
    if suffix in (".md", ".html", ".htm") and (suffix == ".md") != (fmt == "md"):
        raise MsalignError(f"--out {out}: a {suffix} file, but --format is {fmt}")
    target = Path(out) if out is not None else run_dir / REPORT_DIR / f"report.{fmt}"
    folder = target.parent
    folder.mkdir(parents=True, exist_ok=True)
    builder = {"train": build_train_report, "benchmark": build_benchmark_report, "sweep": build_sweep_report}[kind]
    report = builder(run_dir, folder, dataset)
    atomic_write_text(target, render_html(report) if fmt == "html" else render_markdown(report))
    return target, report


__all__ = [
    "build_benchmark_report",
    "build_report",
    "build_sweep_report",
    "build_train_report",
    "train_table",
    "valid_mean",
]

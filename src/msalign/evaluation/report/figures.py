"""The report's figures, drawn with matplotlib's object-oriented API on the Agg canvas (no pyplot,
no global backend change) and written as PNGs of a fixed size per kind (:data:`~.document.FIGURE_SIZES`)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from msalign import metrics
from msalign.atomic import atomic_path
from msalign.evaluation.report.document import DPI, FIGURE_SIZES, FigureFile
from msalign.evaluation.report.runs import TrainRun
from msalign.evaluation.report.statistics import (
    confusion_counts,
    modality_gap,
    pca_2d,
    per_class_accuracy,
    typical_rows,
)
from msalign.training.run_folder import SweepPoint, SweepSummary, point_label

if TYPE_CHECKING:
    from matplotlib.typing import RcKeyType

STYLE: dict[RcKeyType, Any] = {
    "font.size": 12,
    "axes.titlesize": 13,
    "axes.labelsize": 12,
    "xtick.labelsize": 11,
    "ytick.labelsize": 11,
    "legend.fontsize": 10,
    "figure.titlesize": 14,
}


def _new_figure(kind: str):
    # matplotlib is heavy and only reports draw: imported here
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=FIGURE_SIZES[kind], dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _save(figure, folder: Path, name: str) -> None:
    with atomic_path(folder / name, suffix=".png") as temporary:
        figure.savefig(temporary, dpi=DPI, format="png")


def _style():
    import matplotlib  # heavy, only for figures

    return matplotlib.rc_context(STYLE)


def slug(label: str) -> str:
    """``label`` as part of a file name."""
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", label).strip("_") or "run"


def class_axis_label(metric_set: str) -> str:
    """What the classes of a confusion matrix are, for its axes."""
    if metric_set == "iemocap":
        return "emotion class index"
    if metric_set == "sims":
        return "sentiment class (5 buckets of the score in [-1, 1])"
    return "sentiment class (score rounded, clipped to [-3, 3])"


def plot_confusion(run: TrainRun, folder: Path) -> FigureFile | None:
    """The test confusion matrix of ``run`` (seeds pooled), rows as shares of the true class."""
    pooled = run.pooled("test")
    if pooled is None:
        return None
    counts, names = confusion_counts(*pooled, run.metric_set)
    totals = counts.sum(axis=1)
    shares = 100.0 * counts / np.maximum(totals, 1)[:, None]
    accuracy = 100.0 * np.trace(counts) / max(int(counts.sum()), 1)
    seeds = len(run.predictions)
    with _style():
        figure = _new_figure("confusion")
        ax = figure.add_subplot()
        image = ax.imshow(shares, cmap="Blues", vmin=0, vmax=100)
        for i in range(len(names)):
            for j in range(len(names)):
                if totals[i]:
                    ax.text(
                        j,
                        i,
                        f"{shares[i, j]:.0f}",
                        ha="center",
                        va="center",
                        fontsize=11,
                        color="white" if shares[i, j] > 55 else "black",
                    )
        ax.set_xticks(range(len(names)), names)
        ax.set_yticks(range(len(names)), [f"{n}  (n={t // max(seeds, 1)})" for n, t in zip(names, totals, strict=True)])
        ax.set_xlabel(f"Predicted {class_axis_label(run.metric_set)}")
        ax.set_ylabel(f"True {class_axis_label(run.metric_set)}")
        k = len(names)
        ax.set_title(
            f"{run.label}: {k}-class confusion, test split\n"
            f"Acc-{k} {accuracy:.1f}%, {seeds} seed{'s' if seeds != 1 else ''} pooled; cells: % of the true class"
        )
        figure.colorbar(image, ax=ax, shrink=0.85).set_label("Share of the true class (%)")
        name = f"confusion_{slug(run.label)}.png"
        _save(figure, folder, name)
    return FigureFile(
        name,
        "confusion",
        f"Confusion matrix of {run.label}'s test predictions ({k} classes; rows sum to 100%; "
        f"n = clips per seed). Acc-{k} = {accuracy:.2f}%.",
    )


def plot_per_class(runs: list[TrainRun], folder: Path) -> FigureFile | None:
    """Per-class test accuracy of every run, grouped bars."""
    rows = []
    for run in runs:
        pooled = run.pooled("test")
        if pooled is not None:
            counts, names = confusion_counts(*pooled, run.metric_set)
            rows.append(
                (run, 100.0 * per_class_accuracy(counts), counts.sum(axis=1) // max(len(run.predictions), 1), names)
            )
    if not rows:
        return None
    names = rows[0][3]  # the first run's classes
    count = len(rows)
    width = 0.84 / count
    with _style():
        import matplotlib  # heavy, only for figures

        colours = matplotlib.colormaps["tab20" if count > 10 else "tab10"]
        figure = _new_figure("per_class")
        ax = figure.add_subplot()
        positions = np.arange(len(names))
        for i, (run, accuracy, _, _) in enumerate(rows):
            bars = ax.bar(
                positions - 0.42 + width * (i + 0.5),
                np.nan_to_num(accuracy, nan=0.0),
                width,
                label=run.label,
                color=colours(i % colours.N),
                edgecolor="white",
                linewidth=0.4,
            )
            if count <= 3:  # few bars per class: print the values on them
                ax.bar_label(bars, labels=["" if np.isnan(a) else f"{a:.0f}" for a in accuracy], padding=2, fontsize=10)
        support = rows[0][2]
        ax.set_xticks(positions, [f"{n}\n(n={s})" for n, s in zip(names, support, strict=True)])
        ax.set_xlabel(f"True {class_axis_label(rows[0][0].metric_set)}; n = test clips per seed")
        ax.set_ylabel("Accuracy within the class (%)")
        ax.set_ylim(0, 100)
        ax.grid(axis="y", alpha=0.3)
        ax.set_axisbelow(True)
        ax.set_title("Per-class test accuracy (share of each true class predicted exactly; seeds pooled)")
        figure.legend(loc="outside lower center", ncol=min(count, 3 if count > 4 else count), frameon=False)
        _save(figure, folder, "per_class_accuracy.png")
    return FigureFile(
        "per_class_accuracy.png",
        "per_class",
        "Per-class test accuracy of each model / variant (recall of each true class, seeds pooled; a model "
        "that never predicts a class correctly has no bar there).",
    )


def plot_gap(
    run: TrainRun,
    seed: int,
    representations: dict[str, dict[str, np.ndarray]],
    pair: tuple[str, str],
    folder: Path,
    split: str = "test",
) -> tuple[FigureFile, dict[str, dict[str, float]]]:
    """PCA of two modalities' features before and after alignment, and their gaps."""
    a, b = pair
    gaps = {}
    with _style():
        figure = _new_figure("gap")
        axes = figure.subplots(1, 2)
        for ax, stage, heading in zip(
            axes,
            ("before", "after"),
            ("Before alignment (each modality's projection)", "After alignment (shared common encoder)"),
            strict=True,
        ):
            first, second = representations[stage][a], representations[stage][b]
            both = np.concatenate([first, second])
            n = len(first)
            # the 1% most extreme clips of each modality neither steer the components nor set the zoom
            typical = typical_rows(both, [slice(0, n), slice(n, None)])
            points, variance = pca_2d(both, fit=typical)
            gap = gaps[stage] = modality_gap(first, second)
            layers = [(a, points[:n], "tab:blue", "o"), (b, points[n:], "tab:orange", "^")]
            # the more spread-out modality first, so it does not bury the tighter one
            layers.sort(key=lambda layer: -float(np.linalg.norm(layer[1] - layer[1].mean(axis=0), axis=1).mean()))
            for modality, xy, colour, marker in layers:
                ax.scatter(
                    xy[:, 0], xy[:, 1], s=14, alpha=0.4, color=colour, marker=marker, label=modality, linewidths=0
                )
            for modality, xy, colour, _ in layers:
                centre = xy.mean(axis=0)
                ax.scatter(
                    [centre[0]],
                    [centre[1]],
                    s=260,
                    marker="X",
                    color=colour,
                    edgecolor="black",
                    linewidth=1.2,
                    label=f"{modality} centroid",
                    zorder=5,
                )
            view = points[typical]
            low, high = view.min(axis=0), view.max(axis=0)
            pad = 0.06 * np.maximum(high - low, 1e-6)
            ax.set_xlim(low[0] - pad[0], high[0] + pad[0])
            ax.set_ylim(low[1] - pad[1], high[1] + pad[1])
            outside = int(np.sum(np.any((points < low - pad) | (points > high + pad), axis=1)))
            hidden = f"\n({outside} extreme clip{'s' if outside != 1 else ''} beyond the axes)" if outside else ""
            ax.set_title(
                f"{heading}\ncentroid distance {gap['centroid_distance']:.2f} "
                f"= {gap['ratio']:.2f}× within-modality spread{hidden}",
                fontsize=12,
            )
            ax.set_xlabel(f"PC 1 (feature units; {100 * variance[0]:.0f}% of variance)")
            ax.set_ylabel(f"PC 2 (feature units; {100 * variance[1]:.0f}% of variance)")
            ax.grid(alpha=0.3)
        from matplotlib.lines import Line2D  # heavy, only for figures

        handles = [
            Line2D(
                [],
                [],
                linestyle="none",
                marker=marker,
                markersize=size,
                color=colour,
                markeredgecolor=edge,
                label=label,
            )
            for modality, colour, marker in ((a, "tab:blue", "o"), (b, "tab:orange", "^"))
            for marker, size, edge, label in (
                (marker, 7, colour, f"{modality} clip"),
                ("X", 12, "black", f"{modality} centroid"),
            )
        ]
        figure.legend(handles=handles, loc="outside lower center", ncol=4, frameon=False)
        figure.suptitle(
            f"Modality gap, {a} vs {b}: {run.label} seed {seed}, {split} split "
            f"(n={len(representations['before'][a])} clips)"
        )
        name = f"gap_{slug(run.label)}_{a}_{b}.png"
        _save(figure, folder, name)
    caption = (
        f"Modality gap between {a} and {b} ({split} clips, utterance means), PCA of both modalities together, "
        f"before alignment (centroid distance {gaps['before']['centroid_distance']:.2f}, "
        f"{gaps['before']['ratio']:.2f}× spread) and after it ({gaps['after']['centroid_distance']:.2f}, "
        f"{gaps['after']['ratio']:.2f}× spread). Distances use every clip in the d-dimensional feature space; "
        "the PCA and the zoom leave out each modality's 1% most extreme clips."
    )
    return FigureFile(name, "gap", caption), gaps


def selection_label(metric_set: str) -> tuple[str, str, str]:
    """The selection metric, its mode and its unit as axes show it."""
    metric, mode = metrics.selection_metric(metric_set)
    unit = "score units" if metric == "MAE" else "%"
    return metric, mode, unit


def metric_value(metric: str, value: float) -> float:
    """A metric as figures plot it: percentages for accuracies and F1, raw values for MAE and Corr."""
    return value if metrics.is_raw(metric) else 100.0 * value


def plot_curves(runs: list[TrainRun], folder: Path, name: str, title: str) -> FigureFile | None:
    """Training loss and the validation selection metric per epoch: one line per seed (one run) or
    per run (the mean over its seeds at each epoch)."""
    # (label, epochs, loss, task loss or None, valid metric, best epoch or None)
    series: list[tuple[str, list[float], list[float], list[float] | None, list[float], int | None]] = []
    metric, _, unit = selection_label(runs[0].metric_set)
    single = len(runs) == 1
    for run in runs:
        histories = run.histories
        if not histories:
            continue
        if single:
            best_epochs = {r.seed: r.best_epoch for r in run.results.per_seed}
            for seed, rows in histories.items():
                series.append(
                    (
                        f"seed {seed}",
                        [r["epoch"] for r in rows],
                        [r.get("train/loss", np.nan) for r in rows],
                        [r.get("train/task", np.nan) for r in rows],
                        [metric_value(metric, r.get(f"valid/{metric}", np.nan)) for r in rows],
                        best_epochs.get(seed),
                    )
                )
        else:
            length = max(len(rows) for rows in histories.values())

            def mean_at(key: str, epoch: int, rows_by_seed=histories) -> float:
                values = [
                    rows[epoch][key] for rows in rows_by_seed.values() if epoch < len(rows) and key in rows[epoch]
                ]
                return float(np.mean(values)) if values else np.nan

            series.append(
                (
                    run.label,
                    list(range(length)),
                    [mean_at("train/loss", e) for e in range(length)],
                    None,
                    [metric_value(metric, mean_at(f"valid/{metric}", e)) for e in range(length)],
                    None,
                )
            )
    if not series:
        return None
    with _style():
        import matplotlib  # heavy, only for figures

        colours = matplotlib.colormaps["tab20" if len(series) > 10 else "tab10"]
        figure = _new_figure("curves")
        loss_ax, valid_ax = figure.subplots(1, 2)
        for i, (label, epochs, loss, task, valid, best) in enumerate(series):
            colour = colours(i % colours.N)
            loss_ax.plot(epochs, loss, color=colour, marker="o", markersize=3, label=f"{label} total")
            if task is not None and not np.allclose(np.nan_to_num(task), np.nan_to_num(loss)):
                loss_ax.plot(epochs, task, color=colour, linestyle="--", label=f"{label} task only")
            valid_ax.plot(epochs, valid, color=colour, marker="o", markersize=3, label=label)
            if best is not None and best < len(valid):
                valid_ax.scatter([best], [valid[best]], s=120, marker="*", color=colour, edgecolor="black", zorder=5)
        task_loss = "MSE, score units²" if metric == "MAE" else "cross-entropy, nats"
        loss_ax.set_xlabel("Epoch (0 = first, as best_epoch in results.json)")
        loss_ax.set_ylabel(f"Training loss per clip ({task_loss})")
        loss_ax.set_title("Training loss (total = task + weighted alignment losses)")
        valid_ax.set_xlabel("Epoch (0 = first, as best_epoch in results.json)")
        valid_ax.set_ylabel(f"Validation {metric} ({unit})")
        valid_ax.set_title(
            f"Validation {metric}" + (" (★ = best epoch, whose weights are kept)" if single else ", mean over seeds")
        )
        from matplotlib.ticker import MaxNLocator  # heavy, only for figures

        for ax in (loss_ax, valid_ax):
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.grid(alpha=0.3)
            ax.legend(fontsize=9 if len(series) > 4 else 10, ncol=2 if len(series) > 6 else 1)
        figure.suptitle(title)
        _save(figure, folder, name)
    return FigureFile(name, "curves", f"{title}: training loss and validation {metric} per epoch.")


def plot_sweep(summary: SweepSummary, folder: Path) -> FigureFile | None:
    """The validation and test selection metric over a one- or two-key grid (None for more keys)."""
    keys = list(summary.grid)
    metric, mode, unit = selection_label(summary.metric_set)
    done = {point.label: point for point in summary.points}
    best = summary.best.label if summary.best else None
    name = "sweep_sensitivity.png"
    if len(keys) not in (1, 2):
        return None
    with _style():
        figure = _new_figure("sweep")
        axes = figure.subplots(1, 2)
        if len(keys) == 2:
            rows, columns = summary.grid[keys[0]], summary.grid[keys[1]]
            for ax, split, heading in zip(
                axes, ("valid", "test"), ("Validation (used to choose)", "Test (reported only)"), strict=True
            ):
                values = np.full((len(rows), len(columns)), np.nan)
                for i, r in enumerate(rows):
                    for j, c in enumerate(columns):
                        point = done.get(point_label({keys[0]: r, keys[1]: c}))
                        scores = (point.valid if split == "valid" else point.test) if point is not None else {}
                        if metric in scores:
                            values[i, j] = metric_value(metric, scores[metric])
                cmap = "viridis_r" if mode == "min" else "viridis"
                image = ax.imshow(np.ma.masked_invalid(values), cmap=cmap, aspect="auto")
                finite = values[np.isfinite(values)]
                middle = float(np.mean([finite.min(), finite.max()])) if finite.size else 0.0
                for i in range(len(rows)):
                    for j in range(len(columns)):
                        text = (
                            "not run"
                            if np.isnan(values[i, j])
                            else f"{values[i, j]:.3f}"
                            if metric == "MAE"
                            else f"{values[i, j]:.1f}"
                        )
                        dark = (values[i, j] < middle) == (mode == "max") if np.isfinite(values[i, j]) else False
                        ax.text(j, i, text, ha="center", va="center", fontsize=12, color="white" if dark else "black")
                        if point_label({keys[0]: rows[i], keys[1]: columns[j]}) == best:
                            ax.add_patch(_rectangle(j, i))
                ax.set_xticks(range(len(columns)), [f"{c:g}" if isinstance(c, float) else str(c) for c in columns])
                ax.set_yticks(range(len(rows)), [f"{r:g}" if isinstance(r, float) else str(r) for r in rows])
                ax.set_xlabel(_grid_axis_label(keys[1]))
                ax.set_ylabel(_grid_axis_label(keys[0]))
                ax.set_title(f"{heading}: {metric} ({unit})")
                figure.colorbar(image, ax=ax, shrink=0.9).set_label(f"{split} {metric} ({unit}), mean over seeds")
        else:
            settings = summary.grid[keys[0]]
            numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in settings)
            xs = settings if numeric else list(range(len(settings)))
            for ax, split, heading in zip(
                axes, ("valid", "test"), ("Validation (used to choose)", "Test (reported only)"), strict=True
            ):
                ys = [
                    metric_value(metric, _split_scores(done[point_label({keys[0]: v})], split)[metric])
                    if point_label({keys[0]: v}) in done
                    else np.nan
                    for v in settings
                ]
                ax.plot(xs, ys, marker="o")
                for x, y, v in zip(xs, ys, settings, strict=True):
                    if point_label({keys[0]: v}) == best:
                        ax.scatter([x], [y], s=200, marker="*", color="red", zorder=5, label="chosen on validation")
                ax.set_xlabel(_grid_axis_label(keys[0]))
                ax.set_ylabel(f"{split} {metric} ({unit})")
                ax.set_title(f"{heading}: {metric} ({unit})")
                if not numeric:
                    ax.set_xticks(xs, [str(v) for v in settings])
                ax.grid(alpha=0.3)
                if best:
                    ax.legend()
        seeds = ", ".join(map(str, summary.seeds))
        marker = "red box" if len(keys) == 2 else "red star"
        figure.suptitle(
            f"Sensitivity of {summary.model} on {Path(summary.dataset).name} (seeds {seeds}); "
            f"{marker} = chosen on validation {metric}"
        )
        _save(figure, folder, name)
    return FigureFile(
        name,
        "sweep",
        f"Validation and test {metric} over the {' x '.join(keys)} grid (mean over seeds); "
        f"the point chosen on validation is marked.",
    )


def _grid_axis_label(key: str) -> str:
    return f"{key} (loss weight, unitless)" if key in ("alpha", "beta", "dec_weight") else key


def _rectangle(column: int, row: int):
    from matplotlib.patches import Rectangle  # heavy, only for figures

    return Rectangle((column - 0.5, row - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=3)


def _split_scores(point: SweepPoint, split: str) -> dict[str, float]:
    return point.valid if split == "valid" else point.test


__all__ = [
    "STYLE",
    "class_axis_label",
    "metric_value",
    "plot_confusion",
    "plot_curves",
    "plot_gap",
    "plot_per_class",
    "plot_sweep",
    "selection_label",
    "slug",
]

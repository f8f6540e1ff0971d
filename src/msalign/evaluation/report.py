"""Readable reports of finished runs: ``msalign report RUN_DIR [--format md|html] [--dataset SPEC] [--out FILE]``.

RUN_DIR is one of
- a train run (``results.json``, ``seed_N/{predictions.npz, history.json, model.safetensors}``),
- a benchmark directory (``table.json`` plus one train run per entry, ``RUN_DIR/<label>/``),
- a sweep directory (``sweep.json`` plus one train run per grid point).

The report (``RUN_DIR/report/report.md`` or ``.html`` by default) holds a metrics table and PNG
figures written beside it:
- the confusion matrix of the test predictions (the paper's Fig. 4; MOSI/MOSEI: 7 classes -3..3,
  the rounded clipped scores that Acc-7 compares; SIMS: its 5 buckets; IEMOCAP: the 6 classes),
  seeds pooled;
- per-class test accuracy of every model / variant, grouped bars (Fig. 5);
- the modality gap (Fig. 6): per pair of modalities, a 2-D PCA of the test clips' utterance features
  before alignment (each modality's projection) and after it (the shared common encoder), with the
  distance between the two modalities' centroids in the title. It needs a decalign checkpoint and
  the run's dataset to recompute the features (the one results.json records, loaded with the
  checkpoint's options; ``--dataset`` must name the same one), and is skipped with a note otherwise;
- the validation / test sensitivity heatmap of a two-key sweep (Fig. 7; a line plot for one key);
- training curves from ``history.json``: training loss and the validation selection metric per epoch.

Predictions come from ``seed_N/predictions.npz``; for runs trained before those files existed,
``--dataset`` recomputes them from the checkpoints. Figures are drawn with matplotlib's
object-oriented API on the Agg canvas (no pyplot, no global backend change).
"""

from __future__ import annotations

import argparse
import html
import json
import re
import sys
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np

from msalign import metrics
from msalign.atomic import atomic_path
from msalign.errors import MsalignError

DPI = 100
# (width, height) in inches per figure kind; the PNGs are exactly width*DPI x height*DPI pixels
FIGURE_SIZES: dict[str, tuple[float, float]] = {
    "confusion": (7.0, 6.0),
    "per_class": (11.0, 6.5),
    "gap": (12.0, 5.6),
    "sweep": (12.0, 5.4),
    "curves": (12.0, 4.8),
}
STYLE = {
    "font.size": 12,
    "axes.titlesize": 13,
    "axes.labelsize": 12,
    "xtick.labelsize": 11,
    "ytick.labelsize": 11,
    "legend.fontsize": 10,
    "figure.titlesize": 14,
}
_SIMS_NAMES = ["negative", "weakly neg.", "neutral", "weakly pos.", "positive"]


# --- what a report is made of -------------------------------------------------------------------
@dataclass
class FigureFile:
    file: str  # name inside the report's folder
    kind: str  # a key of FIGURE_SIZES
    caption: str

    @property
    def size_px(self) -> tuple[int, int]:
        width, height = FIGURE_SIZES[self.kind]
        return round(width * DPI), round(height * DPI)


@dataclass
class Report:
    title: str
    blocks: list[tuple] = field(default_factory=list)  # ("h", level, text) | ("p", text) | ("table", header, rows) | ("figure", FigureFile)
    figures: list[FigureFile] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # figures that were skipped, and why

    def heading(self, text: str, level: int = 2) -> None:
        self.blocks.append(("h", level, text))

    def paragraph(self, text: str) -> None:
        self.blocks.append(("p", text))

    def table(self, header: list[str], rows: list[list[str]]) -> None:
        self.blocks.append(("table", header, rows))

    def figure(self, figure: FigureFile) -> None:
        self.figures.append(figure)
        self.blocks.append(("figure", figure))

    def note(self, text: str) -> None:
        self.notes.append(text)
        self.blocks.append(("p", f"Note: {text}"))


def render_markdown(report: Report) -> str:
    lines = [f"# {report.title}", ""]
    for block in report.blocks:
        if block[0] == "h":
            lines += ["#" * block[1] + " " + block[2], ""]
        elif block[0] == "p":
            lines += [block[1], ""]
        elif block[0] == "table":
            header, rows = block[1], block[2]
            lines.append("| " + " | ".join(header) + " |")
            lines.append("|" + "---|" * len(header))
            lines += ["| " + " | ".join(row) + " |" for row in rows]
            lines.append("")
        elif block[0] == "figure":
            figure = block[1]
            lines += [f"![{figure.caption}]({figure.file})", "", f"*{figure.caption}*", ""]
    return "\n".join(lines).rstrip() + "\n"


def _inline_html(text: str) -> str:
    text = html.escape(text)
    text = re.sub(r"`([^`]+)`", r"<code>\1</code>", text)
    return re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", text)


def render_html(report: Report) -> str:
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',  # readable on a phone
        f"<title>{html.escape(report.title)}</title>",
        "<style>body{font-family:sans-serif;max-width:1250px;margin:2em auto;padding:0 1em;line-height:1.45;"
        "overflow-wrap:anywhere}"
        ".table{overflow-x:auto;margin:1em 0}"  # a wide table scrolls inside its box, the page never does
        "table{border-collapse:collapse;font-size:0.92em}th,td{border:1px solid #bbb;padding:4px 8px;"
        "text-align:right;overflow-wrap:normal}th:first-child,td:first-child{text-align:left}th{background:#eee}"
        "figure{margin:1.5em 0}img{max-width:100%;height:auto}figcaption{color:#333;font-style:italic}</style>",
        "</head><body>",
        f"<h1>{html.escape(report.title)}</h1>",
    ]
    for block in report.blocks:
        if block[0] == "h":
            parts.append(f"<h{block[1]}>{_inline_html(block[2])}</h{block[1]}>")
        elif block[0] == "p":
            parts.append(f"<p>{_inline_html(block[1])}</p>")
        elif block[0] == "table":
            header, rows = block[1], block[2]
            parts.append('<div class="table"><table><thead><tr>' + "".join(f"<th>{_inline_html(h)}</th>" for h in header)
                         + "</tr></thead><tbody>")
            parts += ["<tr>" + "".join(f"<td>{_inline_html(c)}</td>" for c in row) + "</tr>" for row in rows]
            parts.append("</tbody></table></div>")
        elif block[0] == "figure":
            figure = block[1]
            width, height = figure.size_px
            parts.append(f'<figure><img src="{html.escape(figure.file)}" width="{width}" height="{height}" '
                         f'alt="{html.escape(figure.caption)}"><figcaption>{_inline_html(figure.caption)}</figcaption></figure>')
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


# --- runs on disk -------------------------------------------------------------------------------
@dataclass
class TrainRun:
    """One ``msalign train`` output directory, with what the report needs from each seed."""
    label: str
    path: Path
    results: dict[str, Any]
    # seed -> split -> (predictions, labels)
    predictions: dict[int, dict[str, tuple[np.ndarray, np.ndarray]]] = field(default_factory=dict)
    histories: dict[int, list[dict[str, float]]] = field(default_factory=dict)
    seeds_without_predictions: list[int] = field(default_factory=list)

    @property
    def model(self) -> str:
        return self.results.get("model", "?")

    @property
    def metric_set(self) -> str:
        return self.results.get("metric_set", "mosi")

    @property
    def seeds(self) -> list[int]:
        return [int(r["seed"]) for r in self.results.get("per_seed", [])]

    def seed_dir(self, seed: int) -> Path:
        return self.path / f"seed_{seed}"

    def checkpoint(self, seed: int) -> Path:
        return self.seed_dir(seed) / "model.safetensors"

    def pooled(self, split: str) -> tuple[np.ndarray, np.ndarray] | None:
        """Predictions and labels of every seed with predictions, concatenated."""
        parts = [p[split] for p in self.predictions.values() if split in p]
        if not parts:
            return None
        return np.concatenate([p for p, _ in parts]), np.concatenate([t for _, t in parts])


def _read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except OSError as error:
        raise MsalignError(f"{path}: cannot read {what} ({error.strerror})") from None
    except json.JSONDecodeError as error:
        raise MsalignError(f"{path}: {what} is not valid JSON (line {error.lineno})") from None
    if not isinstance(data, dict):
        raise MsalignError(f"{path}: {what} is not a JSON object")
    return data


def run_kind(run_dir: str | Path) -> str:
    """``"sweep"``, ``"benchmark"`` or ``"train"``, from the summary file RUN_DIR holds."""
    path = Path(run_dir)
    if not path.exists():
        raise MsalignError(f"RUN_DIR {path}: no such directory")
    if not path.is_dir():
        raise MsalignError(f"RUN_DIR {path}: not a directory")
    for name, kind in (("sweep.json", "sweep"), ("table.json", "benchmark"), ("results.json", "train")):
        if (path / name).is_file():
            return kind
    raise MsalignError(f"RUN_DIR {path}: not a train, benchmark or sweep directory (no results.json, table.json or sweep.json)")


def load_train_run(path: Path, label: str, dataset=None) -> TrainRun:
    results = _read_json(path / "results.json", "results.json")
    if "per_seed" not in results or "model" not in results:
        raise MsalignError(f"{path / 'results.json'}: lacks 'model' or 'per_seed' (not written by msalign train?)")
    run = TrainRun(label, path, results)
    for seed in run.seeds:
        seed_dir = run.seed_dir(seed)
        history = seed_dir / "history.json"
        if history.is_file():
            try:
                run.histories[seed] = json.loads(history.read_text())
            except json.JSONDecodeError:
                raise MsalignError(f"{history}: not valid JSON") from None
        stored = seed_dir / "predictions.npz"
        if stored.is_file():
            run.predictions[seed] = read_predictions(stored)
        elif dataset is not None and run.checkpoint(seed).is_file():
            run.predictions[seed] = predict_checkpoint(run.checkpoint(seed), dataset)
        else:
            run.seeds_without_predictions.append(seed)
    return run


def read_predictions(path: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``predictions.npz`` -> split -> (predictions, labels)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            splits = {key.removesuffix("_predictions") for key in data.files if key.endswith("_predictions")}
            out = {s: (data[f"{s}_predictions"], data[f"{s}_labels"]) for s in sorted(splits) if f"{s}_labels" in data.files}
    except (OSError, ValueError) as error:
        raise MsalignError(f"{path}: not a readable predictions file ({str(error).splitlines()[0]})") from None
    if not out:
        raise MsalignError(f"{path}: holds no '<split>_predictions' with '<split>_labels'")
    return out


def _check_checkpoint(path: Path, dataset) -> tuple[Any, dict]:
    from msalign.training.checkpoint import check_feature_spec, load_checkpoint

    model, info = load_checkpoint(path)
    check_feature_spec(info, dataset.feature_spec, dataset.dims, path)
    return model, info


def predict_checkpoint(path: Path, dataset) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Valid and test predictions of a checkpoint on ``dataset`` (for runs without predictions.npz)."""
    from msalign.training.data import MSADataModule, default_device
    from msalign.training.module import predict_split

    model, _ = _check_checkpoint(path, dataset)
    data = MSADataModule(dataset, model.modalities, batch_size=64, seed=0)
    device = default_device()
    model.to(device)
    return {split: predict_split(model, data._loader(split, shuffle=False), device) for split in ("valid", "test")}


# --- numbers behind the figures ---------------------------------------------------------------
def sentiment_classes(values: np.ndarray, metric_set: str) -> tuple[np.ndarray, list[str]]:
    """Class index per clip and the class names, as the dataset's multi-class accuracy counts them.

    MOSI/MOSEI: ``round(clip(score, -3, 3))`` (round half to even, in float32, exactly as Acc-7),
    classes -3..3 -> indices 0..6. SIMS: the 5 MMSA buckets of the clipped score. IEMOCAP: argmax of
    (N, 6) logits, or the integer labels.
    """
    values = np.asarray(values)
    if metric_set == "iemocap":
        index = values.argmax(axis=1) if values.ndim == 2 else values.astype(np.int64).reshape(-1)
        from msalign.metrics import IEMOCAP_CLASSES

        return index, [str(i) for i in range(IEMOCAP_CLASSES)]
    scores = values.reshape(-1).astype(np.float32)
    if metric_set == "sims":
        from msalign.metrics import _SIMS_EDGES, _bucket

        return _bucket(np.clip(scores, -1.0, 1.0), _SIMS_EDGES[5]), list(_SIMS_NAMES)
    index = (np.round(np.clip(scores, -3.0, 3.0)) + 3).astype(np.int64)
    return index, ["-3", "-2", "-1", "0", "+1", "+2", "+3"]


def confusion_counts(preds: np.ndarray, labels: np.ndarray, metric_set: str) -> tuple[np.ndarray, list[str]]:
    """(K, K) counts: rows true class, columns predicted class."""
    predicted, names = sentiment_classes(preds, metric_set)
    true, _ = sentiment_classes(labels, metric_set)
    counts = np.zeros((len(names), len(names)), dtype=np.int64)
    np.add.at(counts, (true, predicted), 1)
    return counts, names


def per_class_accuracy(counts: np.ndarray) -> np.ndarray:
    """Share of each true class predicted correctly; NaN for a class without clips."""
    totals = counts.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(totals > 0, np.diag(counts) / np.maximum(totals, 1), np.nan)


def pca_2d(x: np.ndarray, fit: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Projection of every row on the first two principal components and their shares of the variance.

    ``fit``: boolean row mask of the rows the components (and the centre) are fitted on, e.g. without
    a few extreme clips that would otherwise claim a whole component; every row is projected.
    """
    fit_rows = x if fit is None else x[fit]
    centre = fit_rows.mean(axis=0, keepdims=True)
    _, singular, vt = np.linalg.svd(fit_rows - centre, full_matrices=False)
    components = vt[:2]
    if components.shape[0] < 2:  # 1-d features: pad with a zero axis
        components = np.vstack([components, np.zeros_like(components)])
        singular = np.concatenate([singular, [0.0]])
    total = float((singular**2).sum()) or 1.0
    return (x - centre) @ components.T, (singular[:2] ** 2) / total


def typical_rows(x: np.ndarray, groups: list[slice], quantile: float = 0.99) -> np.ndarray:
    """Rows within the ``quantile`` of their group's distances to the group median (the rest: outliers)."""
    keep = np.zeros(len(x), dtype=bool)
    for group in groups:
        rows = x[group]
        distance = np.linalg.norm(rows - np.median(rows, axis=0), axis=1)
        keep[group] = distance <= np.quantile(distance, quantile)
    return keep


def modality_gap(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """Distance between the two modalities' centroids (in feature units), the mean distance of a
    clip to its own modality's centroid (the spread), and their ratio (scale-free)."""
    ca, cb = a.mean(axis=0), b.mean(axis=0)
    distance = float(np.linalg.norm(ca - cb))
    spread = float(0.5 * (np.linalg.norm(a - ca, axis=1).mean() + np.linalg.norm(b - cb, axis=1).mean()))
    return {"centroid_distance": distance, "spread": spread, "ratio": distance / spread if spread > 0 else float("inf")}


def compute_representations(checkpoint: Path, dataset, split: str = "test") -> tuple[dict[str, dict[str, np.ndarray]], Any]:
    """``DecAlign.representations`` over a split, in eval mode: {"before"|"after": {modality: (N, d)}}."""
    import torch

    from msalign.training.data import MSADataModule

    model, info = _check_checkpoint(checkpoint, dataset)
    if not hasattr(model, "representations"):
        raise MsalignError(f"checkpoint {checkpoint}: model {info['model']} has no before/after-alignment representations")
    model.eval()
    loader = MSADataModule(dataset, model.modalities, batch_size=64, seed=0)._loader(split, shuffle=False)
    parts: dict[str, dict[str, list[np.ndarray]]] = {"before": {}, "after": {}}
    with torch.no_grad():
        for batch in loader:
            for stage, features in model.representations(batch).items():
                for modality, value in features.items():
                    parts[stage].setdefault(modality, []).append(value.float().numpy())
    return {stage: {m: np.concatenate(v) for m, v in stages.items()} for stage, stages in parts.items()}, model


# --- figures ------------------------------------------------------------------------------------
def _new_figure(kind: str):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=FIGURE_SIZES[kind], dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _save(figure, folder: Path, name: str) -> None:
    with atomic_path(folder / name, suffix=".png") as temporary:
        figure.savefig(temporary, dpi=DPI, format="png")


def _style():
    import matplotlib

    return matplotlib.rc_context(STYLE)


def _slug(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", label).strip("_") or "run"


def _class_axis_label(metric_set: str) -> str:
    if metric_set == "iemocap":
        return "emotion class index"
    if metric_set == "sims":
        return "sentiment class (5 buckets of the score in [-1, 1])"
    return "sentiment class (score rounded, clipped to [-3, 3])"


def plot_confusion(run: TrainRun, folder: Path) -> FigureFile | None:
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
                    ax.text(j, i, f"{shares[i, j]:.0f}", ha="center", va="center", fontsize=11,
                            color="white" if shares[i, j] > 55 else "black")
        ax.set_xticks(range(len(names)), names)
        ax.set_yticks(range(len(names)), [f"{n}  (n={t // max(seeds, 1)})" for n, t in zip(names, totals, strict=True)])
        ax.set_xlabel(f"Predicted {_class_axis_label(run.metric_set)}")
        ax.set_ylabel(f"True {_class_axis_label(run.metric_set)}")
        k = len(names)
        ax.set_title(f"{run.label}: {k}-class confusion, test split\n"
                     f"Acc-{k} {accuracy:.1f}%, {seeds} seed{'s' if seeds != 1 else ''} pooled; cells: % of the true class")
        figure.colorbar(image, ax=ax, shrink=0.85).set_label("Share of the true class (%)")
        name = f"confusion_{_slug(run.label)}.png"
        _save(figure, folder, name)
    return FigureFile(name, "confusion", f"Confusion matrix of {run.label}'s test predictions ({k} classes; rows sum to 100%; "
                                         f"n = clips per seed). Acc-{k} = {accuracy:.2f}%.")


def plot_per_class(runs: list[TrainRun], folder: Path) -> FigureFile | None:
    rows = []
    for run in runs:
        pooled = run.pooled("test")
        if pooled is not None:
            counts, names = confusion_counts(*pooled, run.metric_set)
            rows.append((run, 100.0 * per_class_accuracy(counts), counts.sum(axis=1) // max(len(run.predictions), 1)))
    if not rows:
        return None
    names = confusion_counts(*rows[0][0].pooled("test"), rows[0][0].metric_set)[1]
    count = len(rows)
    width = 0.84 / count
    with _style():
        import matplotlib

        colours = matplotlib.colormaps["tab20" if count > 10 else "tab10"]
        figure = _new_figure("per_class")
        ax = figure.add_subplot()
        positions = np.arange(len(names))
        for i, (run, accuracy, _) in enumerate(rows):
            bars = ax.bar(positions - 0.42 + width * (i + 0.5), np.nan_to_num(accuracy, nan=0.0), width,
                          label=run.label, color=colours(i % colours.N), edgecolor="white", linewidth=0.4)
            if count <= 3:  # few bars per class: print the values on them
                ax.bar_label(bars, labels=["" if np.isnan(a) else f"{a:.0f}" for a in accuracy], padding=2, fontsize=10)
        support = rows[0][2]
        ax.set_xticks(positions, [f"{n}\n(n={s})" for n, s in zip(names, support, strict=True)])
        ax.set_xlabel(f"True {_class_axis_label(rows[0][0].metric_set)}; n = test clips per seed")
        ax.set_ylabel("Accuracy within the class (%)")
        ax.set_ylim(0, 100)
        ax.grid(axis="y", alpha=0.3)
        ax.set_axisbelow(True)
        ax.set_title("Per-class test accuracy (share of each true class predicted exactly; seeds pooled)")
        figure.legend(loc="outside lower center", ncol=min(count, 3 if count > 4 else count), frameon=False)
        _save(figure, folder, "per_class_accuracy.png")
    return FigureFile("per_class_accuracy.png", "per_class",
                      "Per-class test accuracy of each model / variant (recall of each true class, seeds pooled; a model "
                      "that never predicts a class correctly has no bar there).")


def plot_gap(run: TrainRun, seed: int, representations: dict[str, dict[str, np.ndarray]], pair: tuple[str, str],
             folder: Path, split: str = "test") -> tuple[FigureFile, dict[str, dict[str, float]]]:
    a, b = pair
    gaps = {}
    with _style():
        figure = _new_figure("gap")
        axes = figure.subplots(1, 2)
        for ax, stage, heading in zip(axes, ("before", "after"),
                                      ("Before alignment (each modality's projection)",
                                       "After alignment (shared common encoder)"), strict=True):
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
                ax.scatter(xy[:, 0], xy[:, 1], s=14, alpha=0.4, color=colour, marker=marker, label=modality, linewidths=0)
            for modality, xy, colour, _ in layers:
                centre = xy.mean(axis=0)
                ax.scatter([centre[0]], [centre[1]], s=260, marker="X", color=colour, edgecolor="black", linewidth=1.2,
                           label=f"{modality} centroid", zorder=5)
            view = points[typical]
            low, high = view.min(axis=0), view.max(axis=0)
            pad = 0.06 * np.maximum(high - low, 1e-6)
            ax.set_xlim(low[0] - pad[0], high[0] + pad[0])
            ax.set_ylim(low[1] - pad[1], high[1] + pad[1])
            outside = int(np.sum(np.any((points < low - pad) | (points > high + pad), axis=1)))
            hidden = f"\n({outside} extreme clip{'s' if outside != 1 else ''} beyond the axes)" if outside else ""
            ax.set_title(f"{heading}\ncentroid distance {gap['centroid_distance']:.2f} "
                         f"= {gap['ratio']:.2f}× within-modality spread{hidden}", fontsize=12)
            ax.set_xlabel(f"PC 1 (feature units; {100 * variance[0]:.0f}% of variance)")
            ax.set_ylabel(f"PC 2 (feature units; {100 * variance[1]:.0f}% of variance)")
            ax.grid(alpha=0.3)
        from matplotlib.lines import Line2D

        handles = [Line2D([], [], linestyle="none", marker=marker, markersize=size, color=colour, markeredgecolor=edge,
                          label=label)
                   for modality, colour, marker in ((a, "tab:blue", "o"), (b, "tab:orange", "^"))
                   for marker, size, edge, label in ((marker, 7, colour, f"{modality} clip"),
                                                     ("X", 12, "black", f"{modality} centroid"))]
        figure.legend(handles=handles, loc="outside lower center", ncol=4, frameon=False)
        figure.suptitle(f"Modality gap, {a} vs {b}: {run.label} seed {seed}, {split} split (n={len(representations['before'][a])} clips)")
        name = f"gap_{_slug(run.label)}_{a}_{b}.png"
        _save(figure, folder, name)
    caption = (f"Modality gap between {a} and {b} ({split} clips, utterance means), PCA of both modalities together, "
               f"before alignment (centroid distance {gaps['before']['centroid_distance']:.2f}, "
               f"{gaps['before']['ratio']:.2f}× spread) and after it ({gaps['after']['centroid_distance']:.2f}, "
               f"{gaps['after']['ratio']:.2f}× spread). Distances use every clip in the d-dimensional feature space; "
               "the PCA and the zoom leave out each modality's 1% most extreme clips.")
    return FigureFile(name, "gap", caption), gaps


def _selection_label(metric_set: str) -> tuple[str, str, str]:
    from msalign.metrics import selection_metric

    metric, mode = selection_metric(metric_set)
    unit = "score units" if metric == "MAE" else "%"
    return metric, mode, unit


def _metric_value(metric: str, value: float) -> float:
    return value if metric in metrics._RAW_KEYS else 100.0 * value


def plot_curves(runs: list[TrainRun], folder: Path, name: str, title: str) -> FigureFile | None:
    """Training loss and the validation selection metric per epoch: one line per seed (one run) or
    per run (the mean over its seeds at each epoch)."""
    series = []  # (label, epochs, loss, task loss or None, valid metric, best epoch or None)
    metric, _, unit = _selection_label(runs[0].metric_set)
    single = len(runs) == 1
    for run in runs:
        histories = run.histories
        if not histories:
            continue
        if single:
            best = {int(r["seed"]): r.get("best_epoch") for r in run.results.get("per_seed", [])}
            for seed, rows in histories.items():
                series.append((f"seed {seed}", [r["epoch"] for r in rows], [r.get("train/loss", np.nan) for r in rows],
                               [r.get("train/task", np.nan) for r in rows],
                               [_metric_value(metric, r.get(f"valid/{metric}", np.nan)) for r in rows], best.get(seed)))
        else:
            length = max(len(rows) for rows in histories.values())

            def mean_at(key: str, epoch: int, rows_by_seed=histories) -> float:
                values = [rows[epoch][key] for rows in rows_by_seed.values() if epoch < len(rows) and key in rows[epoch]]
                return float(np.mean(values)) if values else np.nan

            series.append((run.label, list(range(length)), [mean_at("train/loss", e) for e in range(length)], None,
                           [_metric_value(metric, mean_at(f"valid/{metric}", e)) for e in range(length)], None))
    if not series:
        return None
    with _style():
        import matplotlib

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
        valid_ax.set_title(f"Validation {metric}" + (" (★ = best epoch, whose weights are kept)" if single else ", mean over seeds"))
        from matplotlib.ticker import MaxNLocator

        for ax in (loss_ax, valid_ax):
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.grid(alpha=0.3)
            ax.legend(fontsize=9 if len(series) > 4 else 10, ncol=2 if len(series) > 6 else 1)
        figure.suptitle(title)
        _save(figure, folder, name)
    return FigureFile(name, "curves", f"{title}: training loss and validation {metric} per epoch.")


def plot_sweep(summary: dict[str, Any], folder: Path) -> FigureFile | None:
    keys = list(summary["grid"])
    metric, mode, unit = _selection_label(summary["metric_set"])
    done = {point["label"]: point for point in summary["points"]}
    from msalign.experiments.sweep import point_label

    best = (summary.get("best") or {}).get("label")
    name = "sweep_sensitivity.png"
    if len(keys) not in (1, 2):
        return None
    with _style():
        figure = _new_figure("sweep")
        axes = figure.subplots(1, 2)
        if len(keys) == 2:
            rows, columns = summary["grid"][keys[0]], summary["grid"][keys[1]]
            for ax, split, heading in zip(axes, ("valid", "test"),
                                          ("Validation (used to choose)", "Test (reported only)"), strict=True):
                values = np.full((len(rows), len(columns)), np.nan)
                for i, r in enumerate(rows):
                    for j, c in enumerate(columns):
                        point = done.get(point_label({keys[0]: r, keys[1]: c}))
                        if point is not None and metric in point[split]:
                            values[i, j] = _metric_value(metric, point[split][metric])
                cmap = "viridis_r" if mode == "min" else "viridis"
                image = ax.imshow(np.ma.masked_invalid(values), cmap=cmap, aspect="auto")
                finite = values[np.isfinite(values)]
                middle = float(np.mean([finite.min(), finite.max()])) if finite.size else 0.0
                for i in range(len(rows)):
                    for j in range(len(columns)):
                        text = "not run" if np.isnan(values[i, j]) else f"{values[i, j]:.3f}" if metric == "MAE" else f"{values[i, j]:.1f}"
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
            values = summary["grid"][keys[0]]
            numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
            xs = values if numeric else list(range(len(values)))
            for ax, split, heading in zip(axes, ("valid", "test"),
                                          ("Validation (used to choose)", "Test (reported only)"), strict=True):
                ys = [_metric_value(metric, done[point_label({keys[0]: v})][split][metric])
                      if point_label({keys[0]: v}) in done else np.nan for v in values]
                ax.plot(xs, ys, marker="o")
                for x, y, v in zip(xs, ys, values, strict=True):
                    if point_label({keys[0]: v}) == best:
                        ax.scatter([x], [y], s=200, marker="*", color="red", zorder=5, label="chosen on validation")
                ax.set_xlabel(_grid_axis_label(keys[0]))
                ax.set_ylabel(f"{split} {metric} ({unit})")
                ax.set_title(f"{heading}: {metric} ({unit})")
                if not numeric:
                    ax.set_xticks(xs, [str(v) for v in values])
                ax.grid(alpha=0.3)
                if best:
                    ax.legend()
        seeds = ", ".join(map(str, summary["seeds"]))
        marker = "red box" if len(keys) == 2 else "red star"
        figure.suptitle(f"Sensitivity of {summary['model']} on {Path(summary['dataset']).name} (seeds {seeds}); "
                        f"{marker} = chosen on validation {metric}")
        _save(figure, folder, name)
    return FigureFile(name, "sweep", f"Validation and test {metric} over the {' x '.join(keys)} grid (mean over seeds); "
                                     f"the point chosen on validation is marked.")


def _grid_axis_label(key: str) -> str:
    return f"{key} (loss weight, unitless)" if key in ("alpha", "beta", "dec_weight") else key


def _rectangle(column: int, row: int):
    from matplotlib.patches import Rectangle

    return Rectangle((column - 0.5, row - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=3)


# --- tables ----------------------------------------------------------------------------------------
_fmt = metrics.format_metric


def _valid_mean(run: TrainRun, metric: str) -> float | None:
    values = [r["valid"][metric] for r in run.results.get("per_seed", []) if metric in r.get("valid", {})]
    return float(np.mean(values)) if values else None


def train_table(report: Report, run: TrainRun) -> None:
    keys = metrics.headline_keys(run.metric_set)
    metric, _, _ = _selection_label(run.metric_set)
    header = ["seed", "best epoch (0 = first)", f"valid {metric}"] + [f"test {k}" for k in keys]
    rows = [[str(r["seed"]), str(r.get("best_epoch", "–")), _fmt(metric, r["valid"].get(metric))]
            + [_fmt(k, r["test"].get(k)) for k in keys] for r in run.results["per_seed"]]
    if len(rows) > 1:
        rows.append(["mean ± std", "", _fmt(metric, _valid_mean(run, metric))]
                    + [_fmt(k, run.results["mean"].get(k), run.results["std"].get(k)) for k in keys])
    report.table(header, rows)


# --- the three kinds of report ---------------------------------------------------------------------
def _describe_run(run: TrainRun) -> str:
    seeds = ", ".join(map(str, run.seeds))
    return (f"Model `{run.model}` on `{run.results.get('dataset', '?')}`, seeds {seeds}. Model selection (early stopping, "
            "best epoch) used the validation split only; the test split was scored once with the best-on-validation "
            "weights. Accuracies and F1 in %, MAE and Corr raw.")


def _add_run_figures(report: Report, run: TrainRun, folder: Path, dataset, gap: bool = True) -> None:
    """Confusion matrix, training curves and (decalign) the modality gap of one train run."""
    if run.seeds_without_predictions:
        report.note(f"{run.label}: no predictions.npz for seed(s) {', '.join(map(str, run.seeds_without_predictions))} "
                    "(trained before predictions were saved); pass --dataset to recompute them from the checkpoints.")
    confusion = plot_confusion(run, folder)
    if confusion is not None:
        report.figure(confusion)
    curves = plot_curves([run], folder, f"curves_{_slug(run.label)}.png", f"Training curves: {run.label}")
    if curves is not None:
        report.figure(curves)
    else:
        report.note(f"{run.label}: no history.json, no training curves.")
    if gap:
        _add_gap(report, run, folder, dataset)


def _add_gap(report: Report, run: TrainRun, folder: Path, dataset) -> None:
    if run.model != "decalign":
        report.note(f"modality gap: needs a decalign run ({run.label} is {run.model}).")
        return
    if dataset is None:
        report.note("modality gap: skipped; pass --dataset SPEC (the run's dataset) to recompute the before/after "
                    "alignment features from the decalign checkpoint.")
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
        rows.append([f"{pair[0]} – {pair[1]}"] + [f"{gaps[s]['centroid_distance']:.3f} ({gaps[s]['ratio']:.2f}×)"
                                                    for s in ("before", "after")])
    report.paragraph("Distance between the modalities' test-clip centroids, in feature units (and as a multiple of "
                     "the mean distance of a clip to its own modality's centroid):")
    report.table(["modalities", "before alignment", "after alignment"], rows)


def run_variant(results: dict[str, Any]) -> str:
    """``[hete=false,width=16]``: the model config keys a run changed from what its dataset's config
    files give (the benchmark's variant notation); '' when none, or when that cannot be told."""
    from msalign.config import resolve_config
    from msalign.models import build_config

    model, config = results.get("model"), (results.get("config") or {}).get("model")
    if not isinstance(config, dict):
        return ""
    dataset = str(results.get("dataset", ""))
    name = "synthetic" if dataset.startswith("synthetic") else Path(dataset).name
    metric_set = results.get("metric_set", "mosi")
    keys = (name, metric_set if metric_set != "iemocap" or "iemocap" in dataset.lower() else "classification")
    try:
        base, _ = resolve_config(model, build_config(model), keys)
    except MsalignError:
        return ""
    changed = [f"{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in config.items()
               if k in base.__dataclass_fields__ and _listed(getattr(base, k)) != _listed(v)]
    return f"[{','.join(changed)}]" if changed else ""


def _listed(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def build_train_report(run_dir: Path, folder: Path, dataset=None) -> Report:
    results = _read_json(run_dir / "results.json", "results.json")
    model = results.get("model")
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


def build_benchmark_report(run_dir: Path, folder: Path, dataset=None) -> Report:
    table = _read_json(run_dir / "table.json", "table.json")
    failed = {label: row["failed"] for label, row in table.get("models", {}).items() if "failed" in row}
    entries = [label for label in table.get("models", {}) if label not in failed]
    if not entries:
        raise MsalignError(f"{run_dir / 'table.json'}: lists no finished models")
    runs = []
    for label in entries:
        if not (run_dir / label / "results.json").is_file():
            raise MsalignError(f"{run_dir / label}: benchmark entry {label!r} has no results.json")
        runs.append(load_train_run(run_dir / label, label, dataset))
    metric_set = runs[0].metric_set
    keys = metrics.headline_keys(metric_set)
    metric, _, _ = _selection_label(metric_set)
    report = Report(f"Report: benchmark {run_dir}")
    seeds = table["models"][entries[0]].get("seeds", runs[0].seeds)
    several = len(seeds) > 1  # "± std" only over more than one seed
    report.paragraph(f"{len(entries)} models / variants on `{table.get('dataset', '?')}`, seeds {', '.join(map(str, seeds))}. "
                     f"Test metrics: {'mean ± population std over seeds' if several else 'one seed'}; model selection "
                     f"used the validation split only (valid {metric}: mean over seeds). Accuracies and F1 in %, MAE and "
                     "Corr raw.")
    report.heading("Metrics")
    for label, error in failed.items():
        report.note(f"{label}: failed ({error}); not in this report")
    report.table(["model"] + [f"test {k}" for k in keys] + [f"valid {metric}"],
                 [[label] + [_fmt(k, table["models"][label]["mean"].get(k),
                                  table["models"][label]["std"].get(k) if several else None) for k in keys]
                  + [_fmt(metric, _valid_mean(run, metric))] for label, run in zip(entries, runs, strict=True)])
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


def build_sweep_report(run_dir: Path, folder: Path, dataset=None) -> Report:
    from msalign.experiments.sweep import _format_value

    summary = _read_json(run_dir / "sweep.json", "sweep.json")
    for key in ("model", "grid", "points", "selection", "metric_set", "seeds"):
        if key not in summary:
            raise MsalignError(f"{run_dir / 'sweep.json'}: lacks {key!r} (not written by msalign sweep?)")
    keys = list(summary["grid"])
    metric = summary["selection"]["metric"]
    headline = metrics.headline_keys(summary["metric_set"])
    report = Report(f"Report: {summary['model']} sweep {run_dir}")
    report.paragraph(f"Grid over {', '.join(keys)} on `{summary.get('dataset', '?')}`, seeds "
                     f"{', '.join(map(str, summary['seeds']))}; {len(summary['points'])} points finished. "
                     f"Selection: {summary['selection']['rule']}.")
    report.heading("Metrics (mean over seeds)")
    best = summary.get("best") or {}
    report.table(keys + [f"valid {metric}"] + [f"test {k}" for k in headline] + ["chosen"],
                 [[_format_value(p["params"][k]) for k in keys] + [_fmt(metric, p["valid"].get(metric))]
                  + [_fmt(k, p["test"].get(k)) for k in headline] + ["← best on valid" if p["label"] == best.get("label") else ""]
                  for p in summary["points"]])
    if best:
        params = ", ".join(f"{k}={_format_value(v)}" for k, v in best["params"].items())
        report.paragraph(f"Chosen on validation {metric}: **{params}** (valid {metric} {_fmt(metric, best['valid'][metric])}, "
                         f"test {metric} {_fmt(metric, best['test'].get(metric))}).")
    report.heading("Sensitivity")
    figure = plot_sweep(summary, folder)
    if figure is not None:
        report.figure(figure)
    else:
        report.note(f"sensitivity plot: drawn for 1 or 2 grid keys; this sweep has {len(keys)}.")
    if best and (run_dir / best["label"] / "results.json").is_file():
        report.heading(f"The chosen point: {best['label']}")
        run = load_train_run(run_dir / best["label"], f"{summary['model']} {best['label']}", dataset)
        _add_run_figures(report, run, folder, dataset)
        per_class = plot_per_class([run], folder)
        if per_class is not None:
            report.figure(per_class)
    return report


def build_report(run_dir: str | Path, dataset=None, out: str | Path | None = None, fmt: str | None = None) -> tuple[Path, Report]:
    """Writes the report of ``run_dir`` (see the module docstring); returns its path and content."""
    run_dir = Path(run_dir)
    kind = run_kind(run_dir)
    fmt = fmt or ("html" if out is not None and Path(out).suffix.lower() in (".html", ".htm") else "md")
    if fmt not in ("md", "html"):
        raise MsalignError(f"--format {fmt!r}: expected md or html")
    suffix = Path(out).suffix.lower() if out is not None else ""
    if suffix in (".md", ".html", ".htm") and (suffix == ".md") != (fmt == "md"):
        raise MsalignError(f"--out {out}: a {suffix} file, but --format is {fmt}")
    target = Path(out) if out is not None else run_dir / "report" / f"report.{fmt}"
    folder = target.parent
    folder.mkdir(parents=True, exist_ok=True)
    builder = {"train": build_train_report, "benchmark": build_benchmark_report, "sweep": build_sweep_report}[kind]
    report = builder(run_dir, folder, dataset)
    from msalign.atomic import atomic_write_text

    atomic_write_text(target, render_html(report) if fmt == "html" else render_markdown(report))
    return target, report


# --- command line -------------------------------------------------------------------------------
def add_parser(sub) -> argparse.ArgumentParser:
    """Adds ``msalign report`` to the CLI's subparsers."""
    parser = sub.add_parser("report", help="Markdown/HTML report with figures of a train, benchmark or sweep directory")
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a train run (results.json), benchmark (table.json) or sweep (sweep.json)")
    parser.add_argument("--format", choices=["md", "html"], default=None, help="default: md, or html when --out ends in .html")
    parser.add_argument("--dataset", default=None,
                        help="default: the dataset the run recorded (used for the modality gap and missing predictions); "
                             "another one is refused")
    parser.add_argument("--cache-dir", default=None, help="text-feature cache (default $MSALIGN_CACHE or ~/.cache/msalign)")
    parser.add_argument("--out", default=None, help="report file (default RUN_DIR/report/report.md); figures go beside it")
    parser.set_defaults(func=cmd_report)
    return parser


def _first_checkpoint(run_dir: Path) -> Path | None:
    return next(iter(sorted(run_dir.glob("**/seed_*/model.safetensors"))), None)


def recorded_dataset(run_dir: Path) -> tuple[str | None, str | None]:
    """(dataset, metric set) that RUN_DIR's summary file records (results.json, table.json or sweep.json)."""
    kind = run_kind(run_dir)
    name = {"train": "results.json", "benchmark": "table.json", "sweep": "sweep.json"}[kind]
    data = _read_json(run_dir / name, name)
    metric_set = data.get("metric_set")
    if kind == "benchmark" and metric_set is None:
        first = next(iter(data.get("models", {})), None)
        if first is not None and (run_dir / first / "results.json").is_file():
            metric_set = _read_json(run_dir / first / "results.json", "results.json").get("metric_set")
    dataset = data.get("dataset")
    return (dataset if isinstance(dataset, str) else None), metric_set


def same_dataset(given: str, recorded: str) -> bool:
    """Whether ``--dataset given`` names the dataset a run recorded (paths compared resolved when both
    exist, else by their last component; synthetic:... variants by their generator name)."""
    if given == recorded:
        return True
    if given.split(":")[0] == "synthetic" or recorded.split(":")[0] == "synthetic":
        from msalign.data.spec import parse_synthetic

        return given.split(":")[0] == recorded.split(":")[0] and parse_synthetic(given) == parse_synthetic(recorded)
    a, b = Path(given).expanduser(), Path(recorded).expanduser()
    if a.exists() and b.exists():
        return a.resolve() == b.resolve()
    return a.resolve().name == b.resolve().name


def _needs_dataset(run_dir: Path) -> bool:
    """A decalign run (the modality gap) or a seed without predictions.npz needs the data."""
    for results in [run_dir / "results.json", *run_dir.glob("*/results.json")]:
        if results.is_file() and _read_json(results, "results.json").get("model") == "decalign":
            return True
    return any(not (seed / "predictions.npz").is_file() for seed in run_dir.glob("**/seed_*") if seed.is_dir())


def cmd_report(args: argparse.Namespace) -> int:
    run_dir = Path(args.run_dir)
    run_kind(run_dir)  # a missing or foreign directory fails before any data is loaded
    recorded, metric_set = recorded_dataset(run_dir)
    if args.dataset is not None and recorded is not None and not same_dataset(args.dataset, recorded):
        raise MsalignError(f"--dataset {args.dataset}: the run was trained on {recorded} (recorded in {run_dir}); "
                           "omit --dataset to use that one")
    spec = args.dataset if args.dataset is not None else (recorded if _needs_dataset(run_dir) else None)
    dataset, skipped = None, None
    if spec is not None:
        from msalign.training.checkpoint import checkpoint_feature_spec, read_checkpoint_meta
        from msalign.data import load_dataset

        checkpoint = _first_checkpoint(run_dir)
        options = checkpoint_feature_spec(read_checkpoint_meta(checkpoint)).load_kwargs() if checkpoint else {}
        if args.cache_dir is not None:
            options["cache_dir"] = args.cache_dir
        if metric_set is not None and not str(spec).startswith("synthetic"):
            options.setdefault("metric_set", metric_set)  # the run's task, also for integer class labels
        try:
            dataset = load_dataset(spec, **options)
            if args.dataset is None and checkpoint is not None:  # the recorded spec must still give the run's features
                from msalign.training.checkpoint import check_feature_spec

                check_feature_spec(read_checkpoint_meta(checkpoint), dataset.feature_spec, dataset.dims, checkpoint)
        except MsalignError as error:
            if args.dataset is not None:
                raise
            dataset, skipped = None, f"the recorded dataset {spec} could not be used ({error}); pass --dataset SPEC"
        if dataset is not None:
            print(f"dataset{' (from the run)' if args.dataset is None else ''}: {dataset.describe()}", file=sys.stderr)
    target, report = build_report(run_dir, dataset, args.out, args.format)
    if skipped:
        print(f"note: {skipped}", file=sys.stderr)
    for text in report.notes:
        print(f"note: {text}", file=sys.stderr)
    print(f"report: {target} ({len(report.figures)} figures)")
    return 0


__all__ = ["FIGURE_SIZES", "FigureFile", "Report", "build_report", "confusion_counts", "modality_gap", "pca_2d",
           "per_class_accuracy", "run_kind", "sentiment_classes"]

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

The parts: :mod:`.document` (what a report is made of), :mod:`.markdown_renderer` and
:mod:`.html_renderer`, :mod:`.runs` (the runs on disk, read through
:mod:`msalign.training.run_folder`, and what is recomputed from their checkpoints),
:mod:`.statistics` (the numbers behind the figures), :mod:`.figures` and :mod:`.builders` (the
three kinds of report, and :func:`build_report`). The command is :mod:`msalign.cli.report`.
"""

from msalign.evaluation.report.builders import build_report
from msalign.evaluation.report.document import FIGURE_SIZES, FigureFile, Report
from msalign.evaluation.report.runs import predict_checkpoint, report_dataset
from msalign.evaluation.report.statistics import (
    confusion_counts,
    modality_gap,
    pca_2d,
    per_class_accuracy,
    sentiment_classes,
    typical_rows,
)
from msalign.training.run_folder import run_kind

__all__ = [
    "FIGURE_SIZES",
    "FigureFile",
    "Report",
    "build_report",
    "confusion_counts",
    "modality_gap",
    "pca_2d",
    "per_class_accuracy",
    "predict_checkpoint",
    "report_dataset",
    "run_kind",
    "sentiment_classes",
    "typical_rows",
]

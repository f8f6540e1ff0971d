"""Load a feature directory (:mod:`msalign.data.feature_dir`) as a dataset: :func:`load_feature_dir`.

Steps: read ``label.csv`` and the modality files, choose the task and parse the labels, append
the descriptions to the transcripts and encode the text, split the rows by ``mode``, validate,
transform the features (:mod:`msalign.data.feature_transforms`, which states their order) and
record how they were made in the dataset's :class:`~msalign.data.feature_spec.FeatureSpec`.

Options: ``standardize`` (default True) z-scores each feature dimension with TRAIN statistics
over real positions: True = every modality, or a list of modalities, or a mapping
``{modality: {"mean": [...], "std": [...]}}`` of statistics to reuse (e.g. a checkpoint's
``feature_spec.options.standardize``; applied to the loaded modalities it covers). The
statistics used are stored there (False when nothing was standardised): ``feature_spec.options``
holds the load options that reproduce the features, and ``msalign evaluate``/``predict`` pass a
checkpoint's options back to :func:`~msalign.data.load_dataset`.
``descriptions`` (True, or a path) appends each clip's description from ``descriptions.json``
(written by ``msalign describe``, :mod:`msalign.describe`; the file: :mod:`msalign.data.descriptions_file`)
to its transcript, "text [SEP] description", before the text encoder runs (with ``DESCRIPTION_TOKENS``
more tokens of room); recorded in ``feature_spec`` (the describer with its fitted thresholds under
``feature_spec.describer``, so ``msalign predict`` describes new media alike). A missing file or
clip is an error naming the file.
``group_standardize`` (default False) z-scores each clip per group BEFORE the train-split
standardisation (:mod:`msalign.data.group_norm`): True = every loaded non-text modality, or a
list of modalities, or a mapping ``{modality: {"mean": [...], "var": [...]}}`` of recorded
training priors to reuse; the group is the label.csv column ``group_column`` (default
``video_id``: MOSI's speaker) and ``group_strength`` is the prior's weight in clips. Groups are
formed within each split and never read labels. The priors used are recorded in
``feature_spec.options`` like ``standardize``'s statistics.
``text_lexicon`` (True = every group, or a list / comma-separated names) appends each clip's
sentiment-lexicon descriptors (:mod:`msalign.data.lexicon`), computed from its transcript alone
(not from an appended description), to every real position of its encoded text; it needs text
encoded from the ``text`` column. ``group_context`` (True = ``["text"]``, or a list of modalities)
appends to every real position the mean over the clip's group (``group_column``, within its
split, the clip included) of the clips' mean features (:mod:`msalign.data.group_context`): the
modality's width doubles. Both read no label and are recorded in ``feature_spec.options`` (with
``group_column``) so evaluate, report and predict make the same features.
``empty_clips="drop"`` leaves out the clips that are all padding in every modality (counted per split in
the dataset's ``dropped``); the default ``"error"`` refuses them. ``task`` and the metric set: see :func:`choose_task`.
``metric_set`` overrides the one inferred from the path (mosi/mosei/sims/iemocap in the folder's
name, innermost first) or, failing that, from the labels (class names or ``metric_set="iemocap"``
-> classification; regression labels within [-1, 1] -> sims; else mosi).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from msalign.data.descriptions_file import DESCRIPTION_TOKENS, DESCRIPTIONS_FILE, read_descriptions, with_description
from msalign.data.feature_dir import LABEL_FILE, LabelRow, ModalityFile, read_label_csv, read_modality
from msalign.data.feature_spec import DescriptionsUsed, FeatureSpec, LoadOptions, ModalitySpec
from msalign.data.feature_transforms import Standardize, transform_splits
from msalign.data.group_context import resolve_modalities as resolve_context_modalities
from msalign.data.lexicon import append_descriptors, lexicon_features, resolve_groups
from msalign.data.text_encoder import TextEncoder
from msalign.data.types import MODALITIES, SPLITS, MetricSet, MultimodalDataset, Split, Task
from msalign.data.validate import drop_empty_clips, first_nonfinite, infer_metric_set, validate_dataset, zero_padding
from msalign.errors import MsalignError
from msalign.limits import regular_file


@dataclass(frozen=True)
class _Modality:
    """One loaded modality before the split: all its rows, the row of each label.csv clip and how it was made."""

    features: np.ndarray  # (K, L, D) float32
    lengths: np.ndarray  # (K,) int64
    rows: np.ndarray  # (N,) row of each label.csv clip, in label.csv order
    spec: ModalitySpec


def load_feature_dir(
    folder: str | Path,
    *,
    modalities: Sequence[str] | None = None,
    text_encoder: str = "minilm",
    max_text_len: int = 50,
    standardize: Standardize = True,
    group_standardize: Standardize = False,
    group_column: str = "video_id",
    group_strength: float | None = None,
    metric_set: MetricSet | None = None,
    task: Task | None = None,
    num_classes: int | None = None,
    cache_dir: str | Path | None = None,
    batch_size: int = 64,
    device: str | None = None,
    progress: bool | None = None,
    descriptions: bool | str | os.PathLike = False,
    empty_clips: str = "error",
    text_lexicon: bool | str | Sequence[str] | None = None,
    group_context: bool | str | Sequence[str] | None = None,
) -> MultimodalDataset:
    """Load, transform and validate a feature directory; see the module docstring."""
    if empty_clips not in ("error", "drop"):
        raise MsalignError(f"--empty-clips {empty_clips!r}: expected drop or error")
    folder = Path(folder)
    source = str(folder)
    label_path = folder / LABEL_FILE
    rows = _read_labels(label_path, source)
    files, wanted = _modality_files(folder, rows, modalities, bool(descriptions))
    # the text options are checked before anything slow runs
    lexicon_groups = _lexicon_groups(text_lexicon, files, wanted, source)
    context_modalities = resolve_context_modalities(group_context, [m for m in MODALITIES if m in wanted], source)
    grouped = bool(context_modalities) or (group_standardize is not False and group_standardize is not None)

    task, metric_set, why, config_keys = choose_task(rows, label_path, folder, task, metric_set)
    labels, classes = _parse_labels(rows, label_path, task)
    ids = [r.id for r in rows]
    texts = [r.text for r in rows]
    # from the transcripts alone (before any description is appended), and before the slow encoding:
    # a missing extra fails fast
    descriptors = lexicon_features(texts, lexicon_groups) if lexicon_groups else None
    has_text_column = any(r.text for r in rows)
    described: DescriptionsUsed | None = None
    describer_identity: dict[str, Any] = {}
    if descriptions:  # msalign describe's descriptions.json, appended to the transcripts (textalign)
        texts, described, describer_identity = _describe(folder, files, descriptions, ids, texts)
        has_text_column = True

    # files first, so id mismatches surface before any text is encoded
    loaded = {m: _from_file(found, ids) for m, found in files.items()}
    if "text" in wanted and "text" not in files:
        extra = DESCRIPTION_TOKENS if described else 0  # room for the description after the transcript
        encoder = TextEncoder(text_encoder, max_text_len + extra, batch_size, device, cache_dir, progress=progress)
        loaded["text"] = _encode_text(encoder, texts, descriptors, described)
    spec_mods = {m: found.spec for m, found in loaded.items()}  # files first, as feature specs always listed them
    loaded = {m: loaded[m] for m in wanted}  # the splits hold the modalities in MODALITIES order
    splits = _split(rows, ids, texts if has_text_column else None, labels, loaded, folder, label_path)
    if task == "classification" and num_classes is None:
        num_classes = len(classes) if classes else int(labels.max()) + 1
    dropped = drop_empty_clips(splits, source) if empty_clips == "drop" else {}
    # validated before standardising too: z-scoring would hide all-zero clips and smear NaN/inf
    validate_dataset(
        MultimodalDataset(
            name=folder.name,
            splits=splits,
            metric_set=metric_set,
            task=task,
            num_classes=num_classes if task == "classification" else None,
            source=source,
        )
    )
    groups = _groups(rows, ids, splits, group_column, label_path) if grouped else {}
    applied = transform_splits(
        splits,
        groups,
        group_standardize=group_standardize,
        group_strength=group_strength,
        group_context=context_modalities,
        standardize=standardize,
        source=source,
    )
    for m in context_modalities:  # the group context doubled its width
        spec_mods[m] = replace(spec_mods[m], dim=int(splits["train"].features[m].shape[2]))
    # "options" = the load options that reproduce these features (the CLI passes a checkpoint's
    # options back to load_dataset, so evaluate/predict reuse the TRAINING statistics).
    # Unset options are absent from the JSON, so the feature specs of existing checkpoints stay equal.
    priors = applied.group_priors
    encoded_text = "text" in spec_mods and spec_mods["text"].source == "text_encoder"
    options = LoadOptions(
        standardize=applied.standardize or False,
        empty_clips="drop" if empty_clips == "drop" else None,  # evaluate / report reload the same clips
        group_standardize=priors or None,
        group_column=group_column if priors or context_modalities else None,
        group_strength=applied.group_strength if priors else None,
        text_encoder=text_encoder if encoded_text else None,
        max_text_len=max_text_len if encoded_text else None,
        descriptions=(descriptions if descriptions is True else str(descriptions)) if described else None,
        text_lexicon=list(lexicon_groups) or None,
        group_context=context_modalities or None,
    )
    spec = FeatureSpec(
        format="feature_dir",
        modalities=spec_mods,
        options=options,
        # the describer with its fitted thresholds: msalign predict describes new media alike
        describer=describer_identity if described else None,
        # made by msalign extract: predict re-extracts new media the same way
        extraction=_extraction_record(folder / "extract.json"),
        classes=classes or None,
    )
    ds = MultimodalDataset(
        name=folder.resolve().name,
        splits=splits,
        metric_set=metric_set,
        task=task,
        num_classes=num_classes if task == "classification" else None,
        source=source,
        feature_spec=spec,
        why=why,
        config_keys=config_keys,
        dropped=dropped,
    )
    validate_dataset(ds)
    return ds


def _read_labels(label_path: Path, source: str) -> list[LabelRow]:
    """The rows of the folder's label.csv; a folder without one is named."""
    if not label_path.is_file():
        if label_path.exists():  # a FIFO or device: named, never opened
            regular_file(label_path)
        raise MsalignError(f"{source}: no {LABEL_FILE} (a feature directory needs MMSA's label file)")
    return read_label_csv(label_path)


def _modality_files(
    folder: Path, rows: list[LabelRow], modalities: Sequence[str] | None, descriptions: bool
) -> tuple[dict[str, ModalityFile], list[str]]:
    """The modality files present (of the modalities asked for) and the modalities to load: those
    files, and text when there is a text column or descriptions to encode."""
    source = str(folder)
    has_text_column = any(r.text for r in rows)
    if modalities is not None:
        unknown = [m for m in modalities if m not in MODALITIES]
        if unknown:
            raise MsalignError(f"{source}: unknown modality {unknown[0]!r} (choose from {list(MODALITIES)})")
    candidates = [m for m in MODALITIES if modalities is None or m in modalities]
    files = {m: r for m in candidates if (r := read_modality(folder, m)) is not None}
    wanted = [m for m in candidates if m in files or (m == "text" and (has_text_column or descriptions))]
    if modalities is not None and len(wanted) < len(candidates):
        m = next(m for m in candidates if m not in wanted)
        raise MsalignError(
            f"{source}: no {m}.npz or {m}_utterance.npz" + (" and no text column" if m == "text" else "")
        )
    if not wanted:
        raise MsalignError(
            f"{source}: no feature files ({', '.join(f'{m}.npz' for m in MODALITIES)}, ...) and no text column"
        )
    return files, wanted


def _lexicon_groups(
    text_lexicon: bool | str | Sequence[str] | None, files: dict[str, ModalityFile], wanted: list[str], source: str
) -> tuple[str, ...]:
    """The lexicon groups asked for; they need text encoded from the text column."""
    groups = resolve_groups(text_lexicon, f"{source}: text_lexicon")
    if groups and "text" in files:
        raise MsalignError(
            f"{source}: text_lexicon: the lexicon descriptors are appended to text encoded from the text "
            f"column, but text comes from {files['text'].path.name}; remove it to encode the text column"
        )
    if groups and "text" not in wanted:
        raise MsalignError(f"{source}: text_lexicon: modality 'text' is not loaded (have {wanted})")
    return groups


def _describe(
    folder: Path,
    files: dict[str, ModalityFile],
    descriptions: bool | str | os.PathLike,
    ids: list[str],
    texts: list[str],
) -> tuple[list[str], DescriptionsUsed, dict[str, Any]]:
    """The transcripts with each clip's description appended, what the feature spec records of the
    file, and the describer's identity (recorded beside the modalities, for predict)."""
    if "text" in files:
        raise MsalignError(
            f"{folder}: descriptions are appended to the text column before encoding, "
            f"but text comes from {files['text'].path.name}; remove it to encode the text column"
        )
    # only called with descriptions given: a bool here is True
    notes_path = folder / DESCRIPTIONS_FILE if isinstance(descriptions, bool) else Path(descriptions)
    notes, described, describer_identity = read_descriptions(notes_path, ids)
    return [with_description(t, d) for t, d in zip(texts, notes, strict=True)], described, describer_identity


def _from_file(found: ModalityFile, ids: list[str]) -> _Modality:
    """A modality read from its file, with the file's row of every label.csv clip."""
    x = found.features
    spec = ModalitySpec(source=found.path.name, kind=found.kind, dim=int(x.shape[2]), max_len=int(x.shape[1]))
    return _Modality(x, found.lengths, _rows_of(found.path, found.ids, ids, x.shape), spec)


def _encode_text(
    encoder: TextEncoder, texts: list[str], descriptors: np.ndarray | None, described: DescriptionsUsed | None
) -> _Modality:
    """Text encoded from the transcripts (one row per label.csv clip), the lexicon descriptors appended."""
    x, n = encoder.encode(texts)
    if descriptors is not None:
        x = append_descriptors(x, n, descriptors)
    spec = ModalitySpec(
        source="text_encoder",
        kind="sequence",
        encoder=encoder.identity,
        descriptions=described,
        dim=int(x.shape[2]),
        max_len=int(x.shape[1]),
    )
    return _Modality(x, n, np.arange(len(texts)), spec)


def _split(
    rows: list[LabelRow],
    ids: list[str],
    texts: list[str] | None,
    labels: np.ndarray,
    loaded: dict[str, _Modality],
    folder: Path,
    label_path: Path,
) -> dict[str, Split]:
    """The train / valid / test splits by label.csv's ``mode``, each gathered with ONE copy per
    modality, padding zeroed and NaN/inf named; a split without clips is an error."""
    mode = np.array([r.mode for r in rows])
    splits: dict[str, Split] = {}
    for name in SPLITS:
        rows_idx = np.flatnonzero(mode == name)
        feats = {m: found.features[found.rows[rows_idx]] for m, found in loaded.items()}
        lens = {m: found.lengths[found.rows[rows_idx]] for m, found in loaded.items()}
        for m in feats:
            zero_padding(feats[m], lens[m])
            _check_finite(folder / str(loaded[m].spec.source), name, m, feats[m], [ids[i] for i in rows_idx])
        splits[name] = Split(
            name=name,
            features=feats,
            lengths=lens,
            labels=labels[rows_idx],
            ids=[ids[i] for i in rows_idx],
            raw_text=[texts[i] for i in rows_idx] if texts is not None else None,
        )
    for name, s in splits.items():
        if len(s) == 0:
            raise MsalignError(f"{label_path}: split {name!r}, key 'mode': no clips have mode {name!r}")
    return splits


def _groups(
    rows: list[LabelRow], ids: list[str], splits: dict[str, Split], group_column: str, label_path: Path
) -> dict[str, list[str]]:
    """Each split's ``group_column`` value per clip, for the grouped transforms."""
    if group_column not in rows[0].columns:
        raise MsalignError(
            f"{label_path}: no column {group_column!r} to group clips by "
            f"(group_column; header {[k for k in rows[0].columns if k not in ('id',)]})"
        )
    row_of = {clip: i for i, clip in enumerate(ids)}  # by id: --empty-clips drop may have left clips out
    return {name: [rows[row_of[clip]].columns[group_column] for clip in splits[name].ids] for name in SPLITS}


def _extraction_record(path: Path) -> dict[str, Any] | None:
    """The settings part of ``msalign extract``'s ``extract.json`` (not its timings or counts, which
    differ between runs of the same extraction), or None when the folder was not made by extract."""
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise MsalignError(f"{path}: unreadable extraction record ({error})") from None
    if not isinstance(record, dict) or not isinstance(record.get("spec"), dict):
        raise MsalignError(f"{path}: not an extraction record written by msalign extract (no 'spec')")
    return {"spec": record["spec"], "options": record.get("options", {})}


def _check_finite(path: Path, split: str, m: str, x: np.ndarray, ids: list[str]) -> None:
    """NaN/inf at a real position, named by file and clip id (before standardising would smear it)."""
    key = "features" if path.name == f"{m}.npz" else m
    found = first_nonfinite(x)
    if found is not None:
        row, kind = found
        raise MsalignError(
            f"{path}: split {split!r}, key {key!r}: {kind} at row {row} (clip {ids[row]!r}) (shape {x.shape})"
        )


def _rows_of(path: Path, file_ids: np.ndarray, wanted: list[str], shape: tuple[int, ...]) -> np.ndarray:
    """Row index into the file for every wanted id; errors name the first missing ids."""
    index: dict[str, int] = {}
    for i, k in enumerate(file_ids.tolist()):
        if k in index:
            raise MsalignError(f"{path}: key 'ids': duplicate id {k!r} at rows {index[k]} and {i} (shape {shape})")
        index[k] = i
    missing = [k for k in wanted if k not in index]
    if missing:
        few = ", ".join(repr(k) for k in missing[:3])
        raise MsalignError(
            f"{path}: {len(missing)} clips of {LABEL_FILE} have no features, e.g. {few} "
            f"(file has {len(file_ids)} ids, shape {shape})"
        )
    return np.array([index[k] for k in wanted], dtype=np.int64)


def _parse_labels(rows: list[LabelRow], path: Path, task: str) -> tuple[np.ndarray, list[str] | None]:
    raw = [r.label for r in rows]
    try:
        values = np.array([float(v) for v in raw], dtype=np.float64)
    except ValueError:
        if task == "regression":
            bad = next(i for i, v in enumerate(raw) if not _is_number(v))
            raise MsalignError(f"{path}: line {bad + 2}: label {raw[bad]!r} is not a number") from None
        classes = sorted(set(raw))
        lookup = {c: i for i, c in enumerate(classes)}
        return np.array([lookup[v] for v in raw], dtype=np.int64), classes
    if task == "regression":
        return values.astype(np.float32), None
    if not np.all(values == np.round(values)):
        bad = int(np.flatnonzero(values != np.round(values))[0])
        raise MsalignError(f"{path}: line {bad + 2}: classification label {raw[bad]!r} is not an integer class index")
    return values.astype(np.int64), None


def _is_number(v: str) -> bool:
    try:
        float(v)
        return True
    except ValueError:
        return False


def choose_task(
    rows: list[LabelRow], label_path: Path, folder: Path, task: Task | None, metric_set: MetricSet | None
) -> tuple[Task, MetricSet, str, tuple[str, ...]]:
    """(task, metric set, why, config keys) for a label.csv; integer labels never silently regress.

    Order: ``task`` (``--task``), else the metric set (``--metric-set``; iemocap is classification),
    else class names in the labels (classification), else a benchmark's name in the folder's path,
    else the labels: real-valued or negative -> regression; integers 0..C-1 only (class indices or
    not) -> an error asking for ``--task``.
    The metric set: ``metric_set``, else the path's, else iemocap's classification metrics (WAcc,
    WAF1) for classification and sims / mosi by the label range for regression.
    """
    raw = [r.label for r in rows]
    numeric = all(_is_number(v) for v in raw)
    y = np.array([float(v) for v in raw]) if numeric else None
    by_path = infer_metric_set(folder.resolve()) if _path_names_benchmark(folder) else None
    name = folder.resolve().name
    if metric_set is not None and metric_set not in ("mosi", "mosei", "sims", "iemocap"):
        raise MsalignError(f"{label_path}: metric set {metric_set!r} is not mosi/mosei/sims/iemocap")
    if task is not None:
        if task not in ("regression", "classification"):
            raise MsalignError(f"--task {task!r}: expected regression or classification")
        why = f"--task {task}"
    elif metric_set is not None:
        task = "classification" if metric_set == "iemocap" else "regression"
        why = f"--metric-set {metric_set}"
    elif not numeric:
        task, why = "classification", "labels are class names"
    elif by_path is not None:
        task = "classification" if by_path == "iemocap" else "regression"
        why = f"the path names {by_path}"
    elif y is not None and len(y) and np.all(y == np.round(y)) and y.min() >= 0:  # could be class indices 0..C-1
        values = sorted({int(v) for v in y})
        shown = ", ".join(map(str, values[:8])) + (", ..." if len(values) > 8 else "")
        raise MsalignError(
            f"{label_path}: key 'label': every label is an integer ({len(values)} values: {shown}); "
            "pass --task classification or --task regression"
        )
    else:
        task, why = (
            "regression",
            "labels are real numbers" if y is None or np.any(y != np.round(y)) else "labels below 0",
        )
    if metric_set is not None:
        if (metric_set == "iemocap") != (task == "classification"):
            raise MsalignError(f"--metric-set {metric_set} does not score {task} (iemocap is the classification set)")
        metrics_why = "--metric-set"
    elif task == "classification":
        metric_set, metrics_why = "iemocap", "the classification metrics"
    elif by_path is not None and by_path != "iemocap":
        metric_set, metrics_why = by_path, "named in the path"
    else:
        metric_set = infer_metric_set("", y, "regression")
        metrics_why = "labels within [-1, 1]" if metric_set == "sims" else "labels beyond [-1, 1]"
    if metric_set == "iemocap" and by_path == "iemocap":
        keys: tuple[str, ...] = (name, "iemocap")
    elif task == "classification":
        keys = (name, "classification")  # never another dataset's class count (e.g. iemocap's 6)
    else:
        keys = (name, metric_set)
    return task, metric_set, f"task: {why}; metric set: {metrics_why}", keys


def _path_names_benchmark(folder: Path) -> bool:
    return any(key in part.lower() for part in folder.resolve().parts for key in ("mosei", "mosi", "sims", "iemocap"))


__all__ = ["choose_task", "load_feature_dir"]

"""Load a feature directory: MMSA's ``label.csv`` plus one feature file per modality.

Convention. This module is the only reader and writer of the format: :func:`write_label_csv` /
:func:`read_label_csv` (:class:`LabelRow`), :func:`save_modality` (either kind) / :func:`read_modality`
(:class:`ModalityFile`), and :func:`write_descriptions_file` / :func:`read_descriptions` (:class:`Descriptions`);
``msalign extract`` and ``msalign describe`` write through them.

* ``label.csv`` - MMSA's label layout, header ``video_id,clip_id,text,label,annotation,mode``.
  A clip's id is ``"{video_id}_{clip_id}"``. ``mode`` is ``train`` / ``valid`` / ``test``
  (``dev``, ``val`` and ``validation`` are read as ``valid``). ``annotation`` is optional and
  ignored; ``text`` is needed only when text features are computed from it. ``label`` is a number
  (regression, or class index 0..C-1 for classification) or, for classification, a class name
  (names are sorted and numbered; the order is stored in ``feature_spec.classes``).
* ``<modality>.npz`` (modality = text, audio or vision) - a sequence modality: arrays ``ids``
  (N,) str, ``features`` (N, L, D) float and optionally ``lengths`` (N,) int. Without
  ``lengths`` each row's length is its last non-zero frame + 1.
* ``<modality>_utterance.npz`` - an utterance-level modality: arrays ``ids`` (N,) str and
  ``<modality>`` (N, D) float, one vector per clip; loaded as length-1 sequences.
* A file may hold more clips than ``label.csv`` (extra ids are ignored) and in any order; a
  labelled clip missing from a file is an error. Both kinds for one modality is an error. Other
  files are ignored. ``.npz`` files are read with ``allow_pickle=False``.
* Text with no ``text.npz`` / ``text_utterance.npz`` is computed from the ``text`` column by
  :class:`~msalign.data.text_encoder.TextEncoder` (token features, cached on disk).

Options: ``standardize`` (default True) z-scores each feature dimension with TRAIN statistics
over real positions: True = every modality, or a list of modalities, or a mapping
``{modality: {"mean": [...], "std": [...]}}`` of statistics to reuse (e.g. a checkpoint's
``feature_spec.options.standardize``; applied to the loaded modalities it covers). The
statistics used are stored there (False when nothing was standardised): ``feature_spec.options``
holds the load options that reproduce the features, and ``msalign evaluate``/``predict`` pass a
checkpoint's options back to :func:`~msalign.data.load_dataset`.
``descriptions`` (True, or a path) appends each clip's description from ``descriptions.json``
(written by ``msalign describe``, :mod:`msalign.describe`) to its transcript, "text [SEP]
description", before the text encoder runs (with ``DESCRIPTION_TOKENS`` more tokens of room);
recorded in ``feature_spec`` (:class:`~msalign.data.feature_spec.FeatureSpec`; the describer with its fitted
thresholds under ``feature_spec.describer``,
so ``msalign predict`` describes new media alike). A missing file or clip is an error naming the file.
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
modality's width doubles. Order: lexicon, then group standardisation, then group context, then
``standardize``. Both read no label and are recorded in ``feature_spec.options`` (with
``group_column``) so evaluate, report and predict make the same features.
``empty_clips="drop"`` leaves out the clips that are all padding in every modality (counted per split in
the dataset's ``dropped``); the default ``"error"`` refuses them. ``task`` and the metric set: see :func:`choose_task`.
``metric_set`` overrides the one inferred from the path (mosi/mosei/sims/iemocap in the folder's
name, innermost first) or, failing that, from the labels (class names or ``metric_set="iemocap"``
-> classification; regression labels within [-1, 1] -> sims; else mosi).
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from msalign.atomic import atomic_path, atomic_savez, atomic_write_text
from msalign.data.feature_spec import DescriptionsUsed, FeatureSpec, LoadOptions, ModalitySpec
from msalign.data.group_context import append_group_context
from msalign.data.group_context import resolve_modalities as resolve_context_modalities
from msalign.data.group_norm import DEFAULT_STRENGTH, fit_prior, resolve_modalities, standardize_groups
from msalign.data.lexicon import append_descriptors, lexicon_features, resolve_groups
from msalign.data.text_encoder import TextEncoder
from msalign.data.types import MODALITIES, SPLITS, MetricSet, MultimodalDataset, Split, Task
from msalign.data.validate import (
    drop_empty_clips,
    first_nonfinite,
    infer_metric_set,
    trailing_lengths,
    validate_dataset,
    zero_padding,
)
from msalign.errors import MsalignError
from msalign.limits import check_npz, read_regular_json, regular_file, short_repr

LABEL_FILE = "label.csv"
LABEL_HEADER = ("video_id", "clip_id", "text", "label", "annotation", "mode")
DESCRIPTIONS_FILE = "descriptions.json"
DESCRIPTIONS_FORMAT = 1
_MODES = {"train": "train", "valid": "valid", "dev": "valid", "val": "valid", "validation": "valid", "test": "test"}
_REQUIRED = ("video_id", "clip_id", "label", "mode")
Standardize = bool | Sequence[str] | Mapping[str, Mapping[str, Sequence[float]]]
DESCRIPTION_TOKENS = 48  # text length added for ``descriptions`` (a rule description is 15-40 tokens)


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


def clip_id(video_id: str, clip: str) -> str:
    return f"{video_id}_{clip}"


# -- label.csv -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class LabelRow:
    """One clip of ``label.csv``; ``mode`` normalised to train/valid/test."""

    video_id: str
    clip_id: str
    label: str
    mode: str
    text: str = ""
    annotation: str = ""
    # every column as read (stripped; ``mode`` normalised) plus ``id``: what ``group_column`` names
    columns: Mapping[str, str] = field(default_factory=dict, compare=False)

    @property
    def id(self) -> str:
        """The clip's id in every feature file: ``"{video_id}_{clip_id}"``."""
        return clip_id(self.video_id, self.clip_id)


def write_label_csv(folder: str | Path, rows: Sequence[LabelRow]) -> Path:
    """Write ``folder/label.csv`` (MMSA's header, one line per row), atomically; returns its path."""
    path = Path(folder) / LABEL_FILE
    with atomic_path(path) as temporary, open(temporary, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(LABEL_HEADER)
        for row in rows:
            writer.writerow([row.video_id, row.clip_id, row.text, row.label, row.annotation, row.mode])
    return path


def read_label_csv(path: Path) -> list[LabelRow]:
    """The rows of ``label.csv`` with normalised ``mode``; one-line errors."""
    try:
        regular_file(path)
        # utf-8-sig: a byte-order mark (Excel's "CSV UTF-8") is not part of the first column's name
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            fields = [c.strip() for c in reader.fieldnames or []]
            missing = [c for c in _REQUIRED if c not in fields]
            if missing:
                raise MsalignError(
                    f"{path}: missing column {missing[0]!r} (header {fields}; "
                    "expected video_id,clip_id,text,label,annotation,mode)"
                )
            rows = []
            for line, raw in enumerate(reader, start=2):
                row = {k.strip(): (v or "").strip() for k, v in raw.items() if k is not None}
                mode = _MODES.get(row["mode"].lower())
                if mode is None:
                    raise MsalignError(f"{path}: line {line}: mode {row['mode']!r} is not train/valid/test")
                row["mode"] = mode
                row["id"] = clip_id(row["video_id"], row["clip_id"])
                rows.append(
                    LabelRow(
                        video_id=row["video_id"],
                        clip_id=row["clip_id"],
                        label=row["label"],
                        mode=mode,
                        text=row.get("text", ""),
                        annotation=row.get("annotation", ""),
                        columns=row,
                    )
                )
    except MsalignError:
        raise
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise MsalignError(f"{path}: cannot read: {e}") from None
    if not rows:
        raise MsalignError(f"{path}: no clips")
    return rows


# -- modality files ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModalityFile:
    """One modality file as read: every row, utterance-level ones as length-1 sequences."""

    path: Path
    kind: str  # "sequence" (<m>.npz) or "utterance" (<m>_utterance.npz)
    ids: np.ndarray  # (K,) str
    features: np.ndarray  # (K, L, D) float32
    lengths: np.ndarray  # (K,) int64
    present: np.ndarray | None = None  # (K,) bool, when the writer recorded it (msalign extract, describe)


def save_modality(
    folder: str | Path,
    modality: str,
    ids: Sequence[str] | np.ndarray,
    features: np.ndarray,
    lengths: np.ndarray | None = None,
    extra: Mapping[str, np.ndarray] | None = None,
) -> Path:
    """Write one modality in the convention above: (N, D) -> utterance file, (N, L, D) -> sequence file.
    ``extra`` arrays (e.g. ``present``, msalign extract's ``face_mask``) are stored after them; the loader
    ignores them."""
    if modality not in MODALITIES:
        raise MsalignError(f"unknown modality {modality!r} (choose from {list(MODALITIES)})")
    features = np.asarray(features, dtype=np.float32)
    ids_arr = np.asarray([str(i) for i in ids])
    if len(ids_arr) != len(features):
        raise MsalignError(f"{modality}: {len(ids_arr)} ids for {len(features)} feature rows (shape {features.shape})")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if features.ndim == 2:
        path = folder / f"{modality}_utterance.npz"
        arrays = {"ids": ids_arr, modality: features}
    elif features.ndim == 3:
        path = folder / f"{modality}.npz"
        arrays = {"ids": ids_arr, "features": features}
        if lengths is not None:
            arrays["lengths"] = np.asarray(lengths, dtype=np.int64)
    else:
        raise MsalignError(f"{modality}: expected features of shape (N, D) or (N, L, D), got shape {features.shape}")
    arrays.update(extra or {})
    atomic_savez(path, **arrays)
    return path


def remove_modality(folder: str | Path, modality: str) -> None:
    """Delete the sequence file of ``modality`` if there is one (a re-extraction that no longer has it)."""
    (Path(folder) / f"{modality}.npz").unlink(missing_ok=True)


def read_modality(folder: Path, m: str) -> ModalityFile | None:
    """Modality ``m`` of a feature directory, checked (one-line errors naming file and key); None when absent."""
    seq, utt = folder / f"{m}.npz", folder / f"{m}_utterance.npz"
    if seq.exists() and utt.exists():
        raise MsalignError(f"{folder}: both {seq.name} and {utt.name}; keep one per modality")
    path = seq if seq.exists() else utt if utt.exists() else None
    if path is None:
        return None
    key = "features" if path is seq else m
    check_npz(path)  # a regular file whose declared sizes fit the limit, before numpy allocates
    try:
        with np.load(path, allow_pickle=False) as z:
            for k in ("ids", key):
                if k not in z:
                    raise MsalignError(f"{path}: key {k!r}: missing (has {sorted(z.files)})")
            ids, x = z["ids"], z[key]
            lengths = z.get("lengths", None)
            present = z["present"] if "present" in z.files else None
            for k, value in (("ids", ids), (key, x), ("lengths", lengths)):
                if value is not None and not isinstance(value, np.ndarray):  # numpy returns a non-.npy member as bytes
                    raise MsalignError(f"{path}: key {k!r}: not a .npy array")
    except MsalignError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError, MemoryError) as e:
        raise MsalignError(
            f"{path}: not a readable .npz ({str(e).splitlines()[0] if str(e) else type(e).__name__})"
        ) from None
    except Exception as e:  # a damaged .npy header also raises TypeError, tokenize.TokenError, ...
        raise MsalignError(f"{path}: not a readable .npz (corrupt array header: {type(e).__name__})") from None
    want = 3 if path is seq else 2
    if x.ndim != want:
        raise MsalignError(
            f"{path}: key {key!r}: expected shape {'(N, L, D)' if want == 3 else '(N, D)'}, got shape {x.shape}"
        )
    if 0 in x.shape[1:]:
        raise MsalignError(f"{path}: key {key!r}: empty time or feature axis (shape {x.shape})")
    if ids.ndim != 1 or len(ids) != len(x):
        raise MsalignError(f"{path}: key 'ids': shape {ids.shape} does not match {key!r} shape {x.shape}")
    try:
        x = x.astype(np.float32, copy=False)
    except (TypeError, ValueError):
        raise MsalignError(f"{path}: key {key!r}: not numeric (dtype {x.dtype}, shape {x.shape})") from None
    ids = _ids_as_str(path, ids)
    present = present if isinstance(present, np.ndarray) else None
    if want == 2:
        return ModalityFile(path, "utterance", ids, x[:, None, :], np.ones(len(x), dtype=np.int64), present)
    if lengths is None:
        lengths = trailing_lengths(x)
    elif lengths.shape != (len(x),) or not np.issubdtype(lengths.dtype, np.integer):
        raise MsalignError(
            f"{path}: key 'lengths': expected integer shape ({len(x)},), got {lengths.dtype} shape {lengths.shape}"
        )
    return ModalityFile(path, "sequence", ids, x, lengths.astype(np.int64), present)


# -- descriptions.json ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Descriptions:
    """``descriptions.json`` (written by ``msalign describe``): one description per clip and the
    describer's identity (for the rule describer: its fitted thresholds)."""

    describer: Mapping[str, Any]
    descriptions: Mapping[str, str]
    source: str = ""  # the folder that was described
    format: int = DESCRIPTIONS_FORMAT

    def to_json(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "source": self.source,
            "describer": dict(self.describer),
            "descriptions": dict(self.descriptions),
        }


def write_descriptions_file(path: str | Path, record: Descriptions) -> Path:
    """Write ``record`` to ``path`` atomically; returns the path."""
    path = Path(path)
    atomic_write_text(path, json.dumps(record.to_json(), indent=1) + "\n")
    return path


def descriptions_digest(raw: bytes) -> str:
    """What ties a checkpoint to its descriptions file (recorded at load, checked by predict)."""
    return hashlib.sha256(raw).hexdigest()[:16]


def read_descriptions_file(path: Path) -> Descriptions:
    """The whole file, read leniently (a describer that is not an object is empty), for msalign predict."""
    data = read_regular_json(path, "descriptions file")
    describer = data.get("describer")
    table = data.get("descriptions")
    return Descriptions(
        describer=describer if isinstance(describer, dict) else {},
        descriptions=table if isinstance(table, dict) else {},
        source=str(data.get("source", "")),
        format=data.get("format", DESCRIPTIONS_FORMAT),
    )


def read_descriptions(path: str | Path, ids: Sequence[str]) -> tuple[list[str], DescriptionsUsed, dict[str, Any]]:
    """The description of every clip in ``ids``, what the feature spec records of the file, and the
    describer's identity; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise MsalignError(f"{path}: no such file (make it with `msalign describe {path.parent}`)")
    raw = path.read_bytes()
    try:
        record = json.loads(raw)
        table = record["descriptions"]
        if not isinstance(table, dict):
            raise TypeError
    except (ValueError, KeyError, TypeError):
        raise MsalignError(
            f"{path}: not a descriptions file written by msalign describe (no 'descriptions' mapping)"
        ) from None
    missing = [i for i in ids if not isinstance(table.get(i), str)]
    if missing:
        few = ", ".join(repr(i) for i in missing[:3])
        raise MsalignError(
            f"{path}: {len(missing)} clips have no description, e.g. {few} "
            f"(re-run `msalign describe` on the feature directory)"
        )
    identity = record.get("describer") if isinstance(record.get("describer"), dict) else {}
    # the describer's full identity (for rules: the fitted thresholds) travels in the feature spec,
    # so a checkpoint describes new media (msalign predict) without the training folder
    used = DescriptionsUsed(
        file=path.name, sha256=descriptions_digest(raw), describer=identity.get("describer", "unknown")
    )
    return [table[i] for i in ids], used, identity


def with_description(text: str, description: str) -> str:
    """The text a described clip is encoded from: "transcript [SEP] description" (the loader and predict)."""
    return f"{text} [SEP] {description}" if text else description


def _ids_as_str(path: Path, ids: np.ndarray) -> np.ndarray:
    """Ids as str; byte-string ids (dtype S) are decoded as UTF-8, and a bad one is named."""
    if ids.dtype.kind == "S":
        try:
            return np.array([i.decode("utf-8") for i in ids.tolist()], dtype=str)
        except UnicodeDecodeError:
            row = next(r for r, i in enumerate(ids.tolist()) if not _utf8(i))
            raise MsalignError(f"{path}: key 'ids': row {row} is not UTF-8 text ({short_repr(ids[row])})") from None
    if ids.dtype.kind not in "UiuS":
        raise MsalignError(f"{path}: key 'ids': expected strings, got dtype {ids.dtype} (shape {ids.shape})")
    return ids.astype(str)


def _utf8(value: bytes) -> bool:
    try:
        value.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


def _check_finite(path: Path, split: str, m: str, x: np.ndarray, ids: list[str]) -> None:
    """NaN/inf at a real position, named by file and clip id (before standardising would smear it)."""
    key = "features" if path.name == f"{m}.npz" else m
    found = first_nonfinite(x)
    if found is not None:
        row, kind = found
        raise MsalignError(
            f"{path}: split {split!r}, key {key!r}: {kind} at row {row} (clip {ids[row]!r}) (shape {x.shape})"
        )


def _gather(path: Path, file_ids: np.ndarray, wanted: list[str], shape: tuple[int, ...]) -> np.ndarray:
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


def _standardize(splits: dict[str, Split], option: Standardize, source: str) -> dict[str, dict[str, list[float]]]:
    present = splits["train"].modalities
    if option is True:
        option = list(present)
    elif option is False or option is None:
        return {}
    stats: dict[str, dict[str, list[float]]] = {}
    given = option if isinstance(option, Mapping) else None
    # Recorded statistics apply to the modalities loaded now; a list must name loaded modalities.
    for m in [m for m in option if m in present] if given is not None else option:
        if m not in present:
            raise MsalignError(f"{source}: cannot standardize modality {m!r}: not loaded (have {list(present)})")
        train = splits["train"]
        dim = train.features[m].shape[2]
        if given is not None:
            try:
                mean = np.asarray(given[m]["mean"], dtype=np.float32)
                std = np.asarray(given[m]["std"], dtype=np.float32)
            except (KeyError, TypeError, ValueError):
                raise MsalignError(f"{source}: standardize statistics for {m!r} need 'mean' and 'std' lists") from None
            if mean.shape != (dim,) or std.shape != (dim,) or not np.all(std > 0):
                raise MsalignError(
                    f"{source}: standardize statistics for {m!r} have shape {mean.shape}/{std.shape}, "
                    f"features have width {dim}"
                )
        else:
            real = train.features[m][train.mask(m)].astype(np.float64)
            mean = real.mean(axis=0).astype(np.float32)
            sd = real.std(axis=0)
            std = np.where(sd > 1e-6, sd, 1.0).astype(np.float32)
        for s in splits.values():
            x = s.features[m]
            x -= mean
            x /= std
            zero_padding(x, s.lengths[m])
        stats[m] = {"mean": mean.tolist(), "std": std.tolist()}
    return stats


def _has_width(values: Any, dim: int) -> bool:
    """Whether a prior's list (from the user's config, so of any type until checked) has ``dim`` numbers."""
    return np.shape(values) == (dim,)


def _group_standardize(
    splits: dict[str, Split], groups: dict[str, list[str]], option: Standardize, strength: float, source: str
) -> dict[str, dict[str, list[float]]]:
    """Per-group z-scores (msalign.data.group_norm), split by split; returns the priors used."""
    if option is False or option is None:
        return {}
    if not strength >= 0:
        raise MsalignError(f"{source}: group_strength {strength!r}: must be a number >= 0")
    present = splits["train"].modalities
    if isinstance(option, Mapping):
        given: Mapping[str, Mapping[str, Sequence[float]]] | None = option
        names = [m for m in option if m in present]
    else:
        given = None
        names = resolve_modalities(option, present, source)
    priors: dict[str, dict[str, list[float]]] = {}
    for m in names:
        dim = splits["train"].features[m].shape[2]
        prior: Mapping[str, Sequence[float]]
        if given is not None:
            prior = given[m]
            if (
                not isinstance(prior, Mapping)
                or not _has_width(prior.get("mean"), dim)
                or not _has_width(prior.get("var"), dim)
            ):
                raise MsalignError(
                    f"{source}: group_standardize prior for {m!r} needs 'mean' and 'var' lists of width {dim}"
                )
        else:
            train = splits["train"]
            prior = fit_prior(train.features[m], train.lengths[m], groups["train"])
        for name, s in splits.items():
            standardize_groups(s.features[m], s.lengths[m], groups[name], prior, strength)
        priors[m] = {"mean": list(prior["mean"]), "var": list(prior["var"])}
    return priors


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
    """Load, standardise and validate a feature directory; see the module docstring."""
    if empty_clips not in ("error", "drop"):
        raise MsalignError(f"--empty-clips {empty_clips!r}: expected drop or error")
    folder = Path(folder)
    source = str(folder)
    label_path = folder / LABEL_FILE
    if not label_path.is_file():
        if label_path.exists():  # a FIFO or device: named, never opened
            regular_file(label_path)
        raise MsalignError(f"{source}: no {LABEL_FILE} (a feature directory needs MMSA's label file)")
    rows = read_label_csv(label_path)
    has_text_column = any(r.text for r in rows)
    if modalities is not None:
        unknown = [m for m in modalities if m not in MODALITIES]
        if unknown:
            raise MsalignError(f"{source}: unknown modality {unknown[0]!r} (choose from {list(MODALITIES)})")
    candidates = [m for m in MODALITIES if modalities is None or m in modalities]
    files = {m: r for m in candidates if (r := read_modality(folder, m)) is not None}
    wanted = [m for m in candidates if m in files or (m == "text" and (has_text_column or bool(descriptions)))]
    if modalities is not None and len(wanted) < len(candidates):
        m = next(m for m in candidates if m not in wanted)
        raise MsalignError(
            f"{source}: no {m}.npz or {m}_utterance.npz" + (" and no text column" if m == "text" else "")
        )
    if not wanted:
        raise MsalignError(
            f"{source}: no feature files ({', '.join(f'{m}.npz' for m in MODALITIES)}, ...) and no text column"
        )

    lexicon_groups = resolve_groups(text_lexicon, f"{source}: text_lexicon")
    if lexicon_groups and "text" in files:
        raise MsalignError(
            f"{source}: text_lexicon: the lexicon descriptors are appended to text encoded from the text "
            f"column, but text comes from {files['text'].path.name}; remove it to encode the text column"
        )
    if lexicon_groups and "text" not in wanted:
        raise MsalignError(f"{source}: text_lexicon: modality 'text' is not loaded (have {wanted})")
    context_modalities = resolve_context_modalities(group_context, [m for m in MODALITIES if m in wanted], source)
    grouped = bool(context_modalities) or (group_standardize is not False and group_standardize is not None)

    task, metric_set, why, config_keys = choose_task(rows, label_path, folder, task, metric_set)
    labels, classes = _parse_labels(rows, label_path, task)
    ids = [r.id for r in rows]
    texts = [r.text for r in rows]
    # from the transcripts alone (before any description is appended), and before the slow encoding:
    # a missing extra fails fast
    descriptors = lexicon_features(texts, lexicon_groups) if lexicon_groups else None
    described: DescriptionsUsed | None = None
    describer_identity: dict[str, Any] = {}
    if descriptions:  # msalign describe's descriptions.json, appended to the transcripts (textalign)
        if "text" in files:
            raise MsalignError(
                f"{source}: descriptions are appended to the text column before encoding, "
                f"but text comes from {files['text'].path.name}; remove it to encode the text column"
            )
        notes_path = folder / DESCRIPTIONS_FILE if descriptions is True else Path(descriptions)
        # the describer's identity is recorded beside the modalities, for predict (below)
        notes, described, describer_identity = read_descriptions(notes_path, ids)
        texts = [with_description(t, d) for t, d in zip(texts, notes, strict=True)]
        has_text_column = True

    # Per modality: (all features, lengths, row of each label.csv clip); files first, so id
    # mismatches surface before any text is encoded. Each split is gathered with ONE copy.
    sources: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    spec_mods: dict[str, ModalitySpec] = {}
    for m in sorted(wanted, key=lambda m: m not in files):
        if m in files:
            found = files[m]
            x, n = found.features, found.lengths
            sources[m] = (x, n, _gather(found.path, found.ids, ids, x.shape))
            spec_mods[m] = ModalitySpec(
                source=found.path.name, kind=found.kind, dim=int(x.shape[2]), max_len=int(x.shape[1])
            )
        else:
            extra = DESCRIPTION_TOKENS if described else 0  # room for the description after the transcript
            encoder = TextEncoder(text_encoder, max_text_len + extra, batch_size, device, cache_dir, progress=progress)
            x, n = encoder.encode(texts)
            if descriptors is not None:
                x = append_descriptors(x, n, descriptors)
            sources[m] = (x, n, np.arange(len(rows)))
            spec_mods[m] = ModalitySpec(
                source="text_encoder",
                kind="sequence",
                encoder=encoder.identity,
                descriptions=described,
                dim=int(x.shape[2]),
                max_len=int(x.shape[1]),
            )

    mode = np.array([r.mode for r in rows])
    splits: dict[str, Split] = {}
    for name in SPLITS:
        rows_idx = np.flatnonzero(mode == name)
        feats = {m: sources[m][0][sources[m][2][rows_idx]] for m in wanted}
        lens = {m: sources[m][1][sources[m][2][rows_idx]] for m in wanted}
        for m in feats:
            zero_padding(feats[m], lens[m])
            _check_finite(folder / str(spec_mods[m].source), name, m, feats[m], [ids[i] for i in rows_idx])
        splits[name] = Split(
            name=name,
            features=feats,
            lengths=lens,
            labels=labels[rows_idx],
            ids=[ids[i] for i in rows_idx],
            raw_text=[texts[i] for i in rows_idx] if has_text_column else None,
        )
    for name, s in splits.items():
        if len(s) == 0:
            raise MsalignError(f"{label_path}: split {name!r}, key 'mode': no clips have mode {name!r}")
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
    groups: dict[str, list[str]] = {}
    if grouped:
        if group_column not in rows[0].columns:
            raise MsalignError(
                f"{label_path}: no column {group_column!r} to group clips by "
                f"(group_column; header {[k for k in rows[0].columns if k not in ('id',)]})"
            )
        row_of = {clip: i for i, clip in enumerate(ids)}  # by id: --empty-clips drop may have left clips out
        groups = {name: [rows[row_of[clip]].columns[group_column] for clip in splits[name].ids] for name in SPLITS}
    if group_standardize is not False and group_standardize is not None:
        strength = float(DEFAULT_STRENGTH if group_strength is None else group_strength)
        priors = _group_standardize(splits, groups, group_standardize, strength, source)
    else:
        priors = {}
    for m in context_modalities:  # after group standardisation, before the train-split z-scores
        for name, s in splits.items():
            s.features[m] = append_group_context(s.features[m], s.lengths[m], groups[name])
        spec_mods[m] = replace(spec_mods[m], dim=int(splits["train"].features[m].shape[2]))
    stats = _standardize(splits, standardize, source)
    # "options" = the load options that reproduce these features (the CLI passes a checkpoint's
    # options back to load_dataset, so evaluate/predict reuse the TRAINING statistics).
    # Unset options are absent from the JSON, so the feature specs of existing checkpoints stay equal.
    encoded_text = "text" in spec_mods and spec_mods["text"].source == "text_encoder"
    options = LoadOptions(
        standardize=stats or False,
        empty_clips="drop" if empty_clips == "drop" else None,  # evaluate / report reload the same clips
        group_standardize=priors or None,
        group_column=group_column if priors or context_modalities else None,
        group_strength=strength if priors else None,
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

"""The feature directory on disk: MMSA's ``label.csv`` plus one feature file per modality.

Convention. This module is the only reader and writer of the format: :func:`write_label_csv` /
:func:`read_label_csv` (:class:`LabelRow`) and :func:`save_modality` (either kind) / :func:`read_modality`
(:class:`ModalityFile`); ``msalign extract`` and ``msalign describe`` write through them. The folder's
``descriptions.json`` has its own owner (:mod:`msalign.data.descriptions_file`), and
:func:`msalign.data.feature_dir_loader.load_feature_dir` loads a folder as a dataset.

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
"""

from __future__ import annotations

import csv
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from msalign.atomic import atomic_path, atomic_savez
from msalign.data.types import MODALITIES
from msalign.data.validate import trailing_lengths
from msalign.errors import MsalignError
from msalign.limits import check_npz, regular_file, short_repr

LABEL_FILE = "label.csv"
LABEL_HEADER = ("video_id", "clip_id", "text", "label", "annotation", "mode")
_MODES = {"train": "train", "valid": "valid", "dev": "valid", "val": "valid", "validation": "valid", "test": "test"}
_REQUIRED = ("video_id", "clip_id", "label", "mode")


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


__all__ = [
    "LABEL_FILE",
    "LabelRow",
    "ModalityFile",
    "clip_id",
    "read_label_csv",
    "read_modality",
    "remove_modality",
    "save_modality",
    "write_label_csv",
]

"""Where clip signals come from: feature directories and image-text datasets.

* :func:`feature_dir_signals` reads a feature directory: ``msalign extract``'s ``vision.npz``
  (face frames, names in ``extract.json``), ``audio.npz`` (librosa frames, names in
  ``extract.json``) and ``transcripts.json`` (word timestamps, media path). Files without feature
  names are used honestly: an utterance-level (or unnamed) audio file is an opaque acoustic
  vector, unnamed visual features are "present, not described", a missing file is "no video" /
  "no audio".
* :func:`read_image_dataset` reads an image-text sentiment dataset in the MVSA-Single/Multiple
  and Twitter-2015/2017 style: a folder of images and a label file with, per row, the text, the
  image id and the label (a class name, e.g. positive / neutral / negative). Accepted label files
  (first found): ``labels.csv`` / ``labels.tsv`` (columns ``image_id``, ``text``, ``label`` and an
  optional ``mode``/``split``), or Twitter-style ``train.tsv`` + ``dev.tsv`` + ``test.tsv``
  (columns ``#1 Label``, ``#2 ImageID``, ``#3 String``; a second ``#3 String`` column is the
  aspect target and replaces ``$T$`` in the text). Images are looked up in ``images/``, ``data/``
  or the folder itself, with or without the extension in the id. Without a mode column the
  split is deterministic by row: 8 of every 10 train, 1 valid, 1 test.
* :func:`build_image_feature_dir` runs the MediaPipe face landmarker on every image and writes
  a feature directory: ``label.csv`` (``video_id`` = ``image``, ``clip_id`` = the image id,
  ``text``, ``label``, ``mode``), ``vision.npz`` (one frame per image: 52 blendshapes + yaw,
  pitch, roll; an all-zero frame and ``present`` False when no face is found) and
  ``features.json`` (feature names, image paths), which :func:`feature_dir_signals` reads back.
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from msalign.atomic import atomic_write_text
from msalign.data.feature_dir import LABEL_FILE, LabelRow, read_label_csv, read_modality, save_modality, write_label_csv
from msalign.describe.rules import ClipSignals
from msalign.errors import MsalignError
from msalign.extract.vision import DIM, FaceAnalyzer, feature_names

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff")
FEATURES_RECORD = "features.json"
_IMAGE_COLUMNS = ("image_id", "image", "imageid", "#2 imageid", "img", "img_id")
_TEXT_COLUMNS = ("text", "string", "tweet", "#3 string", "caption")
_LABEL_COLUMNS = ("label", "sentiment", "#1 label", "polarity")
_MODE_COLUMNS = ("mode", "split")


# -- feature directories ---------------------------------------------------------------------------


def feature_dir_signals(folder: str | Path) -> tuple[list[LabelRow], list[ClipSignals]]:
    """(label.csv rows, one ClipSignals per row) for a feature directory."""
    folder = Path(folder)
    if not (folder / LABEL_FILE).is_file():
        raise MsalignError(f"{folder}: no {LABEL_FILE}; not a feature directory")
    rows = read_label_csv(folder / LABEL_FILE)
    names: dict[str, Any] = {}
    frame_rate = None
    media: dict[str, str] = {}
    still = False
    for record_name in ("extract.json", FEATURES_RECORD):
        path = folder / record_name
        if path.is_file():
            try:
                record = json.loads(path.read_text())
            except ValueError as error:
                raise MsalignError(f"{path}: unreadable ({error})") from None
            names.update(record.get("feature_names", {}))
            media.update(record.get("media", {}))
            still = still or bool(record.get("still_images"))
            audio_spec = record.get("spec", {}).get("audio")
            if audio_spec:
                frame_rate = audio_spec["sample_rate"] / int(
                    round(audio_spec["hop_seconds"] * audio_spec["sample_rate"])
                )
    transcripts: dict[str, Any] = {}
    if (folder / "transcripts.json").is_file():
        transcripts = json.loads((folder / "transcripts.json").read_text())
    modal = {m: read_modality(folder, m) for m in ("audio", "vision")}
    lookup: dict[str, dict[str, Any]] = {}
    for m, found in modal.items():
        if found is None:
            continue
        index = {k: i for i, k in enumerate(found.ids.tolist())}
        lookup[m] = {
            "path": found.path,
            "kind": found.kind,
            "index": index,
            "x": found.features,
            "lengths": found.lengths,
            "present": found.present if found.present is not None else np.ones(len(found.ids), dtype=bool),
        }
    signals = []
    for row in rows:
        cid = row.id
        s = ClipSignals(
            clip_id=cid,
            face_note="no video" if "vision" not in lookup else "none detected",
            audio_note="none (no audio)",
        )
        info = transcripts.get(cid, {})
        s.media = info.get("media") or media.get(cid)
        if info.get("words"):
            s.words = [(float(w[1]), float(w[2])) for w in info["words"]]
        v = lookup.get("vision")
        if v is not None and cid in v["index"]:
            i = v["index"][cid]
            if v["present"][i]:
                s.face = v["x"][i, : v["lengths"][i]]
                s.face_names = names.get("vision") if s.face.shape[1] == len(names.get("vision", [])) else None
                s.is_image = v["kind"] == "utterance" or still
        a = lookup.get("audio")
        if a is not None and cid in a["index"]:
            i = a["index"][cid]
            frames = a["x"][i, : a["lengths"][i]]
            audio_names = names.get("audio")
            if not a["present"][i]:
                s.audio_note = "none (no audio track)"
            elif a["kind"] == "sequence" and audio_names is not None and frames.shape[1] == len(audio_names):
                s.audio, s.audio_names, s.audio_frame_rate = frames, audio_names, frame_rate
            else:  # utterance-level or unnamed frames: one opaque vector
                s.utterance_audio = frames.mean(axis=0)
        signals.append(s)
    return rows, signals


# -- image-text datasets ---------------------------------------------------------------------------


@dataclass
class ImageItem:
    image_id: str
    text: str
    label: str
    mode: str
    path: Path


def _optional_column(header: list[str], options: tuple[str, ...]) -> int | None:
    low = [h.strip().lower() for h in header]
    for option in options:
        if option in low:
            return low.index(option)
    return None


def _column(header: list[str], options: tuple[str, ...], path: Path, what: str) -> int:
    index = _optional_column(header, options)
    if index is None:
        raise MsalignError(f"{path}: no {what} column (header {header}; expected one of {', '.join(options)})")
    return index


def _read_table(path: Path, default_mode: str | None) -> list[tuple[str, str, str, str | None]]:
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            table = list(csv.reader(handle, delimiter=delimiter, quoting=csv.QUOTE_MINIMAL))
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise MsalignError(f"{path}: cannot read: {error}") from None
    if len(table) < 2:
        raise MsalignError(f"{path}: no rows")
    header = table[0]
    ci = _column(header, _IMAGE_COLUMNS, path, "image id")
    ct = _column(header, _TEXT_COLUMNS, path, "text")
    cl = _column(header, _LABEL_COLUMNS, path, "label")
    cm = _optional_column(header, _MODE_COLUMNS)
    low = [h.strip().lower() for h in header]
    target = next((i for i, h in enumerate(low) if h == "#3 string" and i != ct), None)  # Twitter's aspect
    out = []
    for line, row in enumerate(table[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) < len(header):
            raise MsalignError(f"{path}: line {line}: {len(row)} fields, header has {len(header)}")
        text = row[ct].strip()
        if target is not None:
            text = text.replace("$T$", row[target].strip())
        mode = row[cm].strip() if cm is not None else default_mode
        out.append((row[ci].strip(), text, row[cl].strip(), mode))
    return out


def _find_image(folder: Path, image_id: str) -> Path:
    for base in (folder / "images", folder / "data", folder):
        candidate = base / image_id
        if candidate.suffix.lower() in IMAGE_SUFFIXES and candidate.is_file():
            return candidate
        for suffix in IMAGE_SUFFIXES:
            if (base / f"{image_id}{suffix}").is_file():
                return base / f"{image_id}{suffix}"
    raise MsalignError(f"{folder}: image {image_id!r} not found (looked in images/, data/ and the folder itself)")


def is_image_dataset(folder: str | Path) -> bool:
    folder = Path(folder)
    return not (folder / "label.csv").exists() and any(
        (folder / name).is_file() for name in ("labels.csv", "labels.tsv", "train.tsv")
    )


def read_image_dataset(folder: str | Path) -> list[ImageItem]:
    """The rows of an image-text dataset (see the module docstring), images located."""
    folder = Path(folder)
    tables: list[tuple[str, str, str, str | None]] = []
    if (folder / "labels.csv").is_file() or (folder / "labels.tsv").is_file():
        path = folder / "labels.csv" if (folder / "labels.csv").is_file() else folder / "labels.tsv"
        tables = _read_table(path, None)
    elif (folder / "train.tsv").is_file():
        for table_mode, name in (("train", "train.tsv"), ("valid", "dev.tsv"), ("test", "test.tsv")):
            if not (folder / name).is_file():
                raise MsalignError(f"{folder}: has train.tsv but no {name} (Twitter-2015/2017 layout)")
            tables += _read_table(folder / name, table_mode)
    else:
        raise MsalignError(f"{folder}: no labels.csv, labels.tsv or train.tsv/dev.tsv/test.tsv (image-text dataset)")
    items, seen = [], set()
    for i, (image_id, text, label, mode) in enumerate(tables):
        if not label:
            raise MsalignError(f"{folder}: image {image_id!r} has no label")
        key = re.sub(r"[^A-Za-z0-9.-]+", "-", Path(image_id).stem) or f"row{i}"
        while key in seen:  # the same image with another text (Twitter: several aspects per tweet)
            key = f"{key}-{i}"
        seen.add(key)
        if mode is None:
            mode = (("train",) * 8 + ("valid", "test"))[i % 10]
        items.append(ImageItem(key, text, label, mode, _find_image(folder, image_id)))
    modes = {it.mode.lower() for it in items}
    if not any(m in modes for m in ("train",)):
        raise MsalignError(f"{folder}: no training rows")
    return items


def load_image(path: Path, max_width: int = 640) -> np.ndarray:
    """RGB uint8 (H, W, 3), scaled down to at most ``max_width`` wide."""
    try:
        from PIL import Image  # optional (the media extra)
    except ImportError:
        raise MsalignError("image datasets need Pillow (it comes with the media extra)") from None
    try:
        with Image.open(path) as opened:
            image = opened.convert("RGB")
            if image.width > max_width:
                image = image.resize((max_width, max(1, round(image.height * max_width / image.width))))
            return np.asarray(image, dtype=np.uint8)
    except OSError as error:
        raise MsalignError(f"{path}: not a readable image ({error})") from None


def build_image_feature_dir(
    folder: str | Path, out: str | Path, face_model: str | None = None, max_width: int = 640
) -> tuple[list[LabelRow], list[ClipSignals]]:
    """Face analysis of every image -> a feature directory at ``out`` (see the module docstring)."""
    items = read_image_dataset(folder)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    analyzer = FaceAnalyzer(face_model)
    features = np.zeros((len(items), 1, DIM), dtype=np.float32)
    present = np.zeros(len(items), dtype=bool)
    for i, item in enumerate(items):
        rows, found = analyzer.analyze([load_image(item.path, max_width)])
        if found[0]:
            features[i, 0], present[i] = rows[0], True
    ids = [f"image_{it.image_id}" for it in items]
    # the feature-directory layout of data/feature_dir.py, plus presence flags (as msalign extract writes)
    save_modality(out, "vision", ids, features, np.ones(len(items), dtype=np.int64), extra={"present": present})
    write_label_csv(
        out,
        [LabelRow(video_id="image", clip_id=it.image_id, text=it.text, label=it.label, mode=it.mode) for it in items],
    )
    record = {
        "source": "image-text dataset",
        "dataset": str(Path(folder).resolve()),
        "still_images": True,
        "feature_names": {"vision": feature_names()},
        "face_model": analyzer.identity,
        "media": {cid: str(it.path.resolve()) for cid, it in zip(ids, items, strict=True)},
    }
    atomic_write_text(out / FEATURES_RECORD, json.dumps(record, indent=1) + "\n")
    return feature_dir_signals(out)

"""``msalign describe``: write descriptions.json for a feature directory or an image-text dataset.

The file: ``{"format": 1, "describer": {...identity, thresholds...}, "descriptions": {clip id: text}}``,
read and written by :mod:`msalign.data.descriptions_file` (:class:`~msalign.data.descriptions_file.Descriptions`);
the feature directory loader appends the descriptions to the transcripts (``descriptions=True``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from msalign.data.descriptions_file import DESCRIPTIONS_FILE, Descriptions, write_descriptions_file
from msalign.describe import sources
from msalign.describe.model import ModelDescriber
from msalign.describe.rules import ClipSignals, Describer, RuleDescriber
from msalign.errors import MsalignError
from msalign.limits import regular_file


def make_describer(
    kind: str,
    signals: Sequence[ClipSignals],
    train: Sequence[bool],
    thresholds: str | Path | None = None,
    frames: int = 3,
) -> Describer:
    """``"rules"`` (fitted on ``signals`` unless ``thresholds`` names a descriptions.json / thresholds
    JSON to reuse) or an image-to-text model name / folder (with the rule voice part)."""
    if thresholds is not None:
        path = Path(thresholds)
        regular_file(path, f"--thresholds {path}")  # a FIFO would block read_text forever
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as error:
            raise MsalignError(f"--thresholds {path}: unreadable ({error})") from None
        rules = RuleDescriber.from_json(data.get("describer", data) if isinstance(data, dict) else data)
    else:
        rules = RuleDescriber().fit(signals, train)
    if kind == "rules":
        return rules
    return ModelDescriber(kind, frames=frames, voice=rules)


def describe_clips(describer: Describer, signals: Sequence[ClipSignals]) -> dict[str, str]:
    return {s.clip_id: describer.describe(s) for s in signals}


def write_descriptions(path: str | Path, describer: Describer, descriptions: dict[str, str], source: str) -> Path:
    """descriptions.json for ``descriptions`` made by ``describer`` (the file: msalign.data.descriptions_file)."""
    return write_descriptions_file(
        path, Descriptions(describer=describer.identity(), descriptions=descriptions, source=source)
    )


def describer_from_identity(identity: dict[str, Any], where: str) -> Describer:
    """Rebuild the describer recorded in descriptions.json / a feature spec, with its fitted thresholds."""
    kind = identity.get("describer") if isinstance(identity, dict) else None
    if kind == "rules":
        return RuleDescriber.from_json(identity)
    if kind == "model":
        voice = RuleDescriber.from_json(identity["voice"]) if identity.get("voice") else None
        try:
            return ModelDescriber(
                str(identity.get("model")),
                frames=int(identity.get("frames", 3)),
                max_new_tokens=int(identity.get("max_new_tokens", 30)),
                voice=voice,
            )
        except MsalignError as error:
            raise MsalignError(f"{where}: descriptions were made by {error}") from None
    raise MsalignError(f"{where}: unknown describer {kind!r} (expected rules or model)")


def describe_dataset(
    folder: str | Path,
    out: str | Path | None = None,
    describer: str = "rules",
    thresholds: str | Path | None = None,
    face_model: str | None = None,
    frames: int = 3,
    log=None,
) -> Path:
    """Describe every clip of ``folder`` (feature directory, or image-text dataset with ``out``);
    returns the descriptions.json written."""
    folder = Path(folder)
    if not folder.is_dir():
        raise MsalignError(f"{folder}: no such directory")
    if sources.is_image_dataset(folder):
        if out is None:
            raise MsalignError(
                f"{folder}: an image-text dataset; give --out FEATURE_DIR for the feature directory to write"
            )
        rows, signals = sources.build_image_feature_dir(folder, out, face_model)
        target, kind = Path(out) / DESCRIPTIONS_FILE, "image-text dataset"
    else:
        if out is None:  # never into the dataset folder unless asked: --out DATASET writes there
            raise MsalignError(
                f"{folder}: give --out: a .json file, or a folder for {DESCRIPTIONS_FILE} "
                f"(--out {folder} puts it where train --descriptions looks by default)"
            )
        rows, signals = sources.feature_dir_signals(folder)
        target = Path(out)
        if target.is_dir() or target.suffix.lower() != ".json":  # a folder (made if need be)
            target = target / DESCRIPTIONS_FILE
        kind = "feature directory"
    train = [r.mode == "train" for r in rows]
    made = make_describer(describer, signals, train, thresholds, frames)
    descriptions = describe_clips(made, signals)
    path = write_descriptions(target, made, descriptions, str(folder.resolve()))
    if log:
        faces = sum(s.face is not None and len(s.face) > 0 for s in signals)
        log(f"described {len(descriptions)} clips of {kind} {folder} ({faces} with a face) -> {path}")
        first = next(iter(descriptions.items()))
        log(f"e.g. {first[0]}: {first[1]}")
    return path

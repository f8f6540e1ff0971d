"""``descriptions.json``: one description per clip of a feature directory, and the describer that wrote them.

Convention. This module is the only reader and writer of the file: :func:`write_descriptions_file`
(``msalign describe``), :func:`read_descriptions` (the loader, every labelled clip) and
:func:`read_descriptions_file` (``msalign predict``, the whole file), all with :class:`Descriptions`.

* ``{"format": 1, "source": folder, "describer": {...}, "descriptions": {clip id: text}}``; the
  describer's identity holds, for the rule describer, its fitted thresholds.
* The loader option ``descriptions`` (:func:`msalign.data.feature_dir_loader.load_feature_dir`) appends
  each clip's description to its transcript (:func:`with_description`) before the text encoder runs,
  with :data:`DESCRIPTION_TOKENS` more tokens of room. A missing file or clip is an error naming the file.
* :func:`descriptions_digest` ties a checkpoint to the file it was trained on (recorded at load,
  checked by predict for checkpoints that do not record their describer).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from msalign.atomic import atomic_write_text
from msalign.data.feature_spec import DescriptionsUsed
from msalign.errors import MsalignError
from msalign.limits import read_regular_json

DESCRIPTIONS_FILE = "descriptions.json"
DESCRIPTIONS_FORMAT = 1
DESCRIPTION_TOKENS = 48  # text length added for ``descriptions`` (a rule description is 15-40 tokens)


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


__all__ = [
    "DESCRIPTIONS_FILE",
    "DESCRIPTIONS_FORMAT",
    "DESCRIPTION_TOKENS",
    "Descriptions",
    "descriptions_digest",
    "read_descriptions",
    "read_descriptions_file",
    "with_description",
    "write_descriptions_file",
]

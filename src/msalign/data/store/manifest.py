"""``store.json``, a feature store's manifest: :class:`StoreManifest` and its parts, the checks a reader
runs on it, and the record of the checks the writer ran (see :mod:`msalign.data.store` for the keys).

The JSON form is the format on disk: :meth:`StoreManifest.to_json` writes the keys in the order the
writer has always written them, and :meth:`StoreManifest.from_json` accepts every manifest the reader
has ever accepted, with the same one-line errors naming the file and key."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from msalign.data.feature_spec import FeatureSpec
from msalign.data.types import MODALITIES, SPLITS, MetricSet, Task
from msalign.errors import MsalignError
from msalign.limits import regular_file, short_repr

MANIFEST = "store.json"
FORMAT = "msalign-feature-store"
VERSION = 1
VALIDATED_CHECKS = ("finite", "lengths_in_range", "padding_zero", "not_all_padding", "labels", "ids")
METRIC_SETS: tuple[MetricSet, ...] = ("mosi", "mosei", "sims", "iemocap")
TASKS: tuple[Task, ...] = ("regression", "classification")
_MAX_MANIFEST = 64 * 2**20
# the keys the writer writes, in its order (StoreManifest.to_json); any others are kept in ``extra``
_KNOWN_KEYS = (
    "format",
    "version",
    "name",
    "metric_set",
    "task",
    "num_classes",
    "modalities",
    "splits",
    "feature_spec",
    "source",
    "msalign_version",
    "validated",
)


@dataclass(frozen=True)
class ModalityEntry:
    """One modality's feature array: ``<split>/<modality>.npy`` is (rows, max_len, dim) float32."""

    dim: int
    max_len: int

    def to_json(self) -> dict[str, int]:
        return {"dim": self.dim, "max_len": self.max_len}


@dataclass(frozen=True)
class SplitEntry:
    """One split: its row count, and whether ``<split>/raw_text.npy`` holds transcripts."""

    rows: int
    raw_text: bool

    def to_json(self) -> dict[str, Any]:
        return {"rows": self.rows, "raw_text": self.raw_text}


@dataclass(frozen=True)
class ValidationRecord:
    """The writer's record that every feature value was checked (``contents``) and by which checks."""

    contents: bool = True
    checks: tuple[str, ...] = VALIDATED_CHECKS

    def to_json(self) -> dict[str, Any]:
        return {"contents": self.contents, "checks": list(self.checks)}


@dataclass(frozen=True)
class StoreManifest:
    """A store's ``store.json``. ``feature_spec`` is the source's, unchanged (module docstring of
    :mod:`msalign.data.store`); ``num_classes`` is set for a classification store only; ``validated``
    is None when the manifest lacks the writer's record (the reader then rescans every value)."""

    name: str
    metric_set: MetricSet
    task: Task
    num_classes: int | None
    modalities: Mapping[str, ModalityEntry]  # in the order written (the MODALITIES order)
    splits: Mapping[str, SplitEntry]  # train, valid, test
    feature_spec: FeatureSpec
    # another producer's spec exactly as given, when FeatureSpec.to_json would order (or drop a null of)
    # it differently: written back unchanged, so a manifest round-trips byte for byte
    feature_spec_json: Mapping[str, Any] | None = None
    source: str | None = None  # what the store was converted from (written by the writer; not read)
    msalign_version: str | None = None  # the msalign that wrote it (not read)
    validated: ValidationRecord | None = None
    version: int = VERSION
    extra: Mapping[str, Any] = field(default_factory=dict)  # keys this msalign does not know, kept

    @property
    def contents_validated(self) -> bool:
        """True when the writer recorded that it checked every feature value."""
        return self.validated is not None and self.validated.contents

    def to_json(self) -> dict[str, Any]:
        """The JSON form, keys in the order the writer has always written them."""
        out: dict[str, Any] = {
            "format": FORMAT,
            "version": self.version,
            "name": self.name,
            "metric_set": self.metric_set,
            "task": self.task,
            "num_classes": self.num_classes,
            "modalities": {m: entry.to_json() for m, entry in self.modalities.items()},
            "splits": {name: entry.to_json() for name, entry in self.splits.items()},
            "feature_spec": (
                dict(self.feature_spec_json) if self.feature_spec_json is not None else self.feature_spec.to_json()
            ),
        }
        if self.source is not None:
            out["source"] = self.source
        if self.msalign_version is not None:
            out["msalign_version"] = self.msalign_version
        if self.validated is not None:
            out["validated"] = self.validated.to_json()
        out.update(self.extra)
        return out

    @classmethod
    def from_json(cls, manifest: Any, path: str | Path) -> StoreManifest:
        """The manifest from its JSON form, checked; one-line errors naming ``path`` and the key.

        Only what a reader uses is checked (as it always was): a manifest another producer wrote
        with extra keys, or without ``source``/``msalign_version``/``validated``, still loads."""
        if not isinstance(manifest, dict):
            raise MsalignError(f"{path}: expected a JSON object, got {type(manifest).__name__}")
        if manifest.get("format") != FORMAT:
            raise MsalignError(f"{path}: key 'format': expected {FORMAT!r}, got {short_repr(manifest.get('format'))}")
        for key, kind in (
            ("version", int),
            ("name", str),
            ("metric_set", str),
            ("task", str),
            ("feature_spec", dict),
            ("modalities", dict),
            ("splits", dict),
        ):
            if key not in manifest:
                raise MsalignError(f"{path}: key {key!r}: missing (has {sorted(manifest)})")
            if not isinstance(manifest[key], kind) or isinstance(manifest[key], bool):
                raise MsalignError(f"{path}: key {key!r}: expected {kind.__name__}, got {type(manifest[key]).__name__}")
        if manifest["version"] > VERSION:
            raise MsalignError(
                f"{path}: key 'version': store format {manifest['version']} is newer than this msalign "
                f"reads ({VERSION}); upgrade msalign"
            )
        metric_set = next((m for m in METRIC_SETS if m == manifest["metric_set"]), None)
        if metric_set is None:
            raise MsalignError(
                f"{path}: key 'metric_set': {short_repr(manifest['metric_set'])} is not mosi/mosei/sims/iemocap"
            )
        task = next((t for t in TASKS if t == manifest["task"]), None)
        if task is None:
            raise MsalignError(f"{path}: key 'task': {short_repr(manifest['task'])} is not regression/classification")
        num_classes: int | None = None  # a regression store's value is not read
        if task == "classification":
            if not isinstance(manifest.get("num_classes"), int):
                raise MsalignError(f"{path}: key 'num_classes': a classification store needs an integer class count")
            num_classes = manifest["num_classes"]
        mods = manifest["modalities"]
        if not mods or any(m not in MODALITIES for m in mods):
            raise MsalignError(f"{path}: key 'modalities': expected some of {list(MODALITIES)}, got {sorted(mods)}")
        modalities: dict[str, ModalityEntry] = {}
        for m, facts in mods.items():
            if not (
                isinstance(facts, dict)
                and all(isinstance(facts.get(k), int) and facts[k] >= 1 for k in ("dim", "max_len"))
            ):
                raise MsalignError(
                    f"{path}: key 'modalities.{m}': expected positive integers 'dim' and 'max_len', "
                    f"got {short_repr(facts)}"
                )
            modalities[m] = ModalityEntry(dim=facts["dim"], max_len=facts["max_len"])  # as written, also in errors
        splits: dict[str, SplitEntry] = {}
        for name in SPLITS:
            facts = manifest["splits"].get(name)
            if not isinstance(facts, dict) or not isinstance(facts.get("rows"), int) or facts["rows"] < 0:
                raise MsalignError(
                    f"{path}: key 'splits.{name}': expected {{'rows': N, 'raw_text': bool}}, got {short_repr(facts)}"
                )
            splits[name] = SplitEntry(rows=facts["rows"], raw_text=bool(facts.get("raw_text")))
        spec = read_feature_spec(manifest["feature_spec"], path)
        validated = manifest.get("validated")
        record = None
        if isinstance(validated, dict):  # anything else: no record, so the reader rescans
            checks = validated.get("checks")
            record = ValidationRecord(
                contents=validated.get("contents") is True,
                checks=tuple(str(c) for c in checks) if isinstance(checks, list) else (),
            )
        source, version = manifest.get("source"), manifest.get("msalign_version")
        return cls(
            name=manifest["name"],
            metric_set=metric_set,
            task=task,
            num_classes=num_classes,
            modalities=modalities,
            splits=splits,
            feature_spec=spec,
            feature_spec_json=spec_json_to_keep(spec, manifest["feature_spec"]),
            source=source if isinstance(source, str) else None,
            msalign_version=version if isinstance(version, str) else None,
            validated=record,
            version=manifest["version"],
            extra={k: v for k, v in manifest.items() if k not in _KNOWN_KEYS},
        )


def read_feature_spec(data: Mapping[str, Any], path: str | Path) -> FeatureSpec:
    """The ``feature_spec`` of the manifest at ``path`` as a :class:`FeatureSpec`; a wrong nested
    object is a one-line error naming the file and the dotted key."""
    return FeatureSpec.from_json(
        data, error=lambda key, value, want: MsalignError(f"{path}: key {key!r}: {short_repr(value)} ({want})")
    )


def spec_json_to_keep(spec: FeatureSpec, given: Mapping[str, Any]) -> dict[str, Any] | None:
    """``given`` (the JSON ``spec`` was read from) when ``spec.to_json()`` would not write it back
    exactly (key order included), else None (see StoreManifest.feature_spec_json)."""
    return None if json.dumps(spec.to_json()) == json.dumps(given) else dict(given)


def read_manifest(folder: str | Path) -> StoreManifest:
    """The checked ``store.json`` of a store folder; one-line errors naming the file and key."""
    path = Path(folder) / MANIFEST
    try:
        if path.exists() and regular_file(path).stat().st_size > _MAX_MANIFEST:
            raise MsalignError(f"{path}: {path.stat().st_size:,} bytes; a store manifest is a few KB")
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise MsalignError(f"{path}: missing (not a feature store)") from None
    except (OSError, UnicodeDecodeError) as e:
        raise MsalignError(f"{path}: cannot read ({getattr(e, 'strerror', None) or e})") from None
    except ValueError as e:
        raise MsalignError(f"{path}: not valid JSON ({e})") from None
    return StoreManifest.from_json(manifest, path)


def write_manifest(folder: str | Path, manifest: StoreManifest) -> None:
    """Writes ``store.json`` into ``folder`` (the writer's temporary folder: the whole store is renamed
    into place afterwards, so this write need not be atomic itself)."""
    (Path(folder) / MANIFEST).write_text(json.dumps(manifest.to_json(), indent=1) + "\n", encoding="utf-8")


def is_store(folder: str | Path) -> bool:
    """True when ``folder`` is a directory holding a store manifest."""
    return (Path(folder) / MANIFEST).is_file()

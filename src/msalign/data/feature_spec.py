"""``FeatureSpec``: how a dataset's features were made, the contract between loaders, checkpoints,
predict and the feature store.

Every loader returns one with its dataset. A checkpoint records it (``to_json()`` in the JSON
metadata), ``msalign evaluate``/``predict`` compare it with the data they score
(:func:`~msalign.training.checkpoint.check_feature_spec`), and a store keeps its source's spec in
``store.json``. The JSON form is the format on disk and stays exactly what it has always been:
``to_json()`` writes the same keys in the same order, ``from_json()`` reads every spec ever written
(unknown keys are kept in ``extra`` and written back unchanged).

The JSON forms, by source:

* feature directory: ``{"format": "feature_dir", "modalities": {m: {"source", "kind"[, "encoder"]
  [, "descriptions"], "dim", "max_len"}}, "options": {...}[, "describer"][, "extraction"][, "classes"]}``;
* MMSA pickle: ``{"format": "mmsa_pickle", "aligned", "modalities": {m: {"dim", "max_len"}},
  "text_source"[, "repairs"]}``;
* synthetic: ``{"kind": "synthetic", "version", <every generator parameter>}``;
* a store written by another producer: whatever that producer gave (kept in ``extra``).

``options`` (:class:`LoadOptions`) are the loader options that reproduce the features: the CLI
passes a checkpoint's options back to :func:`~msalign.data.load_dataset`. A blanked modality
(``blank``) adds ``options`` to any spec.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from msalign.errors import MsalignError
from msalign.limits import short_repr

MAX_CLASSES = 10_000  # classes of a classification head (as the checkpoint's output_dim)

# (key, value, what was expected) -> the error to raise; checkpoints and stores word it their way
SpecError = Callable[[str, Any, str], MsalignError]


def _default_error(key: str, value: Any, want: str) -> MsalignError:
    return MsalignError(f"feature spec key {key!r}: {short_repr(value)} ({want})")


@dataclass(frozen=True)
class DescriptionsUsed:
    """The descriptions.json a text modality's transcripts were extended with (its sha256 pins it)."""

    file: str | None = None
    sha256: str | None = None
    describer: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return _known_then_extra(self, ("file", "sha256", "describer"))

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> DescriptionsUsed:
        return cls(**_split_known(data, ("file", "sha256", "describer")))


@dataclass(frozen=True)
class ModalitySpec:
    """How one modality's features were made: their file (or ``text_encoder``), kind, width and length."""

    source: str | None = None  # "audio.npz", "text_encoder", ... (feature directories)
    kind: str | None = None  # "sequence" or "utterance" (feature directories)
    encoder: str | None = None  # the text encoder's identity (TextEncoder.identity)
    descriptions: DescriptionsUsed | None = None
    dim: int | None = None
    max_len: int | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    _KEYS = ("source", "kind", "encoder", "descriptions", "dim", "max_len")

    def to_json(self) -> dict[str, Any]:
        out = _known_then_extra(self, self._KEYS)
        if self.descriptions is not None:
            out["descriptions"] = self.descriptions.to_json()
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ModalitySpec:
        known = _split_known(data, cls._KEYS)
        if isinstance(known.get("descriptions"), Mapping):
            known["descriptions"] = DescriptionsUsed.from_json(known["descriptions"])
        elif "descriptions" in known:  # not written by msalign: kept as it is
            known["extra"] = {**known.get("extra", {}), "descriptions": known.pop("descriptions")}
        return cls(**known)


@dataclass(frozen=True)
class LoadOptions:
    """The loader options that reproduce a dataset's features (None: not set, absent from the JSON)."""

    # False, or {modality: {"mean": [...], "std": [...]}}: the training split's statistics
    standardize: bool | Mapping[str, Mapping[str, Sequence[float]]] | None = None
    empty_clips: str | None = None  # "drop" when all-padding clips were left out
    # {modality: {"mean": [...], "var": [...]}}: the per-group z-score priors (msalign.data.group_norm)
    group_standardize: Mapping[str, Mapping[str, Sequence[float]]] | None = None
    group_column: str | None = None
    group_strength: float | None = None
    text_encoder: str | None = None
    max_text_len: int | None = None
    descriptions: bool | str | None = None  # True (the folder's descriptions.json) or a path
    blank: Sequence[str] | None = None  # modalities whose features are all zero
    text_lexicon: Sequence[str] | None = None  # lexicon descriptor groups appended to the text (msalign.data.lexicon)
    group_context: Sequence[str] | None = None  # modalities carrying their group's mean (msalign.data.group_context)
    extra: Mapping[str, Any] = field(default_factory=dict)

    _KEYS = (
        "standardize",
        "empty_clips",
        "group_standardize",
        "group_column",
        "group_strength",
        "text_encoder",
        "max_text_len",
        "descriptions",
        "blank",
        "text_lexicon",
        "group_context",
    )

    def to_json(self) -> dict[str, Any]:
        return _known_then_extra(self, self._KEYS)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> LoadOptions:
        return cls(**_split_known(data, cls._KEYS))


@dataclass(frozen=True)
class FeatureSpec:
    """How a dataset's features were made; see the module docstring. Empty: made by nobody in particular."""

    format: str | None = None  # "feature_dir" or "mmsa_pickle"
    kind: str | None = None  # "synthetic" (or another producer's name)
    version: Any = None  # the synthetic generator's version
    generator: Mapping[str, Any] = field(default_factory=dict)  # the synthetic generator's parameters
    aligned: bool | None = None  # MMSA pickles: word-aligned features
    modalities: Mapping[str, ModalitySpec] | None = None
    options: LoadOptions | None = None
    text_source: str | None = None  # MMSA pickles (written even when None)
    repairs: Mapping[str, int] | None = None  # MMSA pickles: values the loader repaired
    describer: Mapping[str, Any] | None = None  # the describer with its fitted thresholds (msalign describe)
    extraction: Mapping[str, Any] | None = None  # msalign extract's record: {"spec": ..., "options": ...}
    classes: Sequence[str] | None = None  # class names, in class-index order
    extra: Mapping[str, Any] = field(default_factory=dict)

    _KEYS = (
        "format",
        "kind",
        "version",
        "aligned",
        "modalities",
        "options",
        "text_source",
        "repairs",
        "describer",
        "extraction",
        "classes",
    )

    def to_json(self) -> dict[str, Any]:
        """The JSON form (see the module docstring), keys in the order the loaders have always written them."""
        out: dict[str, Any] = {}
        for key in ("format", "kind", "version"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        out.update(self.generator)
        if self.aligned is not None:
            out["aligned"] = self.aligned
        if self.modalities is not None:
            out["modalities"] = {m: facts.to_json() for m, facts in self.modalities.items()}
        if self.options is not None and self.format == "feature_dir":
            out["options"] = self.options.to_json()
        if self.text_source is not None or self.format == "mmsa_pickle":
            out["text_source"] = self.text_source
        for key in ("repairs", "describer", "extraction", "classes"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        out.update(self.extra)
        if self.options is not None and self.format != "feature_dir":  # added by blank_modalities: last
            out["options"] = self.options.to_json()
        return out

    @classmethod
    def from_json(
        cls, data: Mapping[str, Any] | None, error: SpecError = _default_error, prefix: str = "feature_spec"
    ) -> FeatureSpec:
        """A spec from its JSON form (None or {} -> the empty spec). The nested objects are checked and a
        wrong one raises ``error(key, value, what was expected)`` with the dotted key, e.g.
        ``feature_spec.options``; the values inside them are checked where they are used."""
        data = data or {}
        for key in ("options", "modalities", "extraction"):
            if data.get(key) is not None and not isinstance(data[key], Mapping):
                raise error(f"{prefix}.{key}", data[key], "expected a JSON object")
        for modality, facts in (data.get("modalities") or {}).items():
            if not isinstance(facts, Mapping):
                raise error(f"{prefix}.modalities.{str(modality)[:20]}", facts, "expected a JSON object")
        classes = data.get("classes")
        if classes is not None and not (isinstance(classes, list) and len(classes) <= MAX_CLASSES):
            raise error(f"{prefix}.classes", data["classes"], "expected a list of class names")
        known: dict[str, Any] = {}
        extra: dict[str, Any] = {}
        generator: dict[str, Any] = {}
        synthetic = data.get("kind") == "synthetic"
        for key, value in data.items():
            if key in cls._KEYS and (value is not None or key == "text_source"):
                known[key] = value
            elif synthetic:
                generator[key] = value
            else:
                extra[key] = value
        if known.get("modalities") is not None:
            known["modalities"] = {m: ModalitySpec.from_json(facts) for m, facts in known["modalities"].items()}
        if known.get("options") is not None:
            known["options"] = LoadOptions.from_json(known["options"])
        return cls(**known, generator=generator, extra=extra)

    # -- what the loaders and their users ask of it ----------------------------------------------

    def modality(self, name: str) -> ModalitySpec:
        """The facts recorded for modality ``name`` (empty when none are)."""
        return (self.modalities or {}).get(name) or ModalitySpec()

    @property
    def load_options(self) -> LoadOptions:
        """The recorded loader options (empty when none are)."""
        return self.options or LoadOptions()

    def load_kwargs(self) -> dict[str, Any]:
        """The recorded loader options as keyword arguments of :func:`~msalign.data.load_dataset`."""
        return self.load_options.to_json()

    def with_blank(self, modalities: Sequence[str]) -> FeatureSpec:
        """This spec with ``options.blank`` set (see MultimodalDataset.blank_modalities)."""
        return replace(self, options=replace(self.load_options, blank=list(modalities)))

    def for_modalities(self, keep: Sequence[str]) -> FeatureSpec:
        """This spec with its per-modality entries trimmed to ``keep``, as the feature-directory and
        pickle loaders record a subset load (other specs are not keyed by modality: unchanged)."""
        if self.format not in ("mmsa_pickle", "feature_dir"):
            return self
        spec = self
        if self.modalities is not None:
            spec = replace(spec, modalities={m: v for m, v in self.modalities.items() if m in keep})
        if self.options is not None and isinstance(self.options.standardize, Mapping):
            kept = {m: v for m, v in self.options.standardize.items() if m in keep}
            spec = replace(spec, options=replace(self.options, standardize=kept or False))
        return spec

    def difference(self, other: FeatureSpec, ignore: Sequence[str] = ()) -> tuple[str, Any, Any] | None:
        """The first top-level key (sorted) whose JSON values differ, as (key, this value, other value)."""
        mine, theirs = self.to_json(), other.to_json()
        for key in sorted(set(mine) | set(theirs)):
            if key not in ignore and mine.get(key) != theirs.get(key):
                return key, mine.get(key), theirs.get(key)
        return None


def _known_then_extra(obj: Any, keys: Sequence[str]) -> dict[str, Any]:
    """The set fields among ``keys`` in that order, then the unknown keys kept from the JSON."""
    out = {key: getattr(obj, key) for key in keys if getattr(obj, key) is not None}
    out.update(obj.extra)
    return out


def _split_known(data: Mapping[str, Any], keys: Sequence[str]) -> dict[str, Any]:
    """Constructor arguments: the known keys with a value, everything else (also a known key set to
    null, which the dataclass could not tell from unset) under ``extra``."""
    known = {key: value for key, value in data.items() if key in keys and value is not None}
    extra = {key: value for key, value in data.items() if key not in known}
    return {**known, "extra": extra} if extra else known


__all__ = ["DescriptionsUsed", "FeatureSpec", "LoadOptions", "ModalitySpec"]

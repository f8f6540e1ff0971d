"""``load_dataset(spec)``: one entry point for every dataset source.

* ``"synthetic"`` or ``"synthetic:key=value,..."`` -> :func:`msalign.data.synthetic.generate_synthetic`
  (values parsed as int, float, true/false/none, else kept as strings);
* a path ending in ``.pkl`` -> an MMSA feature pickle (:mod:`msalign.data.mmsa_pickle`);
* a directory holding ``store.json`` -> an on-disk feature store, read row by row
  (:mod:`msalign.data.store`; ``msalign convert`` writes one);
* another directory -> a feature directory (:mod:`msalign.data.feature_dir`, loaded by
  :mod:`msalign.data.feature_dir_loader`).

Options: ``modalities`` and ``blank`` (modalities whose features are replaced by zeros: the same
model with that stream carrying nothing) apply to every source; ``metric_set`` and ``num_classes`` to pickles,
stores and feature directories; ``verify`` (rescan every feature value) to stores;
``text_encoder``, ``standardize``, ``max_text_len``, ``cache_dir``, ``batch_size``, ``device``,
``progress``, ``descriptions`` (msalign describe's text, for textalign) and ``group_standardize``,
``group_column``, ``group_strength`` (per-speaker z-scores, :mod:`msalign.data.group_norm`),
``text_lexicon`` (:mod:`msalign.data.lexicon`) and ``group_context`` (:mod:`msalign.data.group_context`) to
feature directories.
An option that does not apply to the source is ignored; an unknown option is an error. Options set to None are
ignored. Exceptions: ``text_lexicon`` and ``group_context`` make new features, so a source that cannot
make them refuses them (synthetic data and MMSA pickles always; a feature store unless it was converted
with the same option, whose features then already hold them).
Every dataset is validated (:func:`msalign.data.validate.validate_dataset`) before it is returned.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from msalign.config import parse_key_values, parse_plain_value
from msalign.data.feature_dir_loader import load_feature_dir
from msalign.data.group_context import resolve_modalities as resolve_context_modalities
from msalign.data.lexicon import resolve_groups
from msalign.data.mmsa_pickle import load_mmsa_pickle
from msalign.data.store import load_store
from msalign.data.synthetic import generate_synthetic
from msalign.data.types import MultimodalDataset
from msalign.data.validate import validate_dataset
from msalign.errors import MsalignError

_PICKLE_OPTIONS = {"modalities", "metric_set", "num_classes", "task"}
_DIR_OPTIONS = _PICKLE_OPTIONS | {
    "text_encoder",
    "standardize",
    "max_text_len",
    "cache_dir",
    "batch_size",
    "device",
    "progress",
    "descriptions",
    "empty_clips",
    "group_standardize",
    "group_column",
    "group_strength",
    "text_lexicon",
    "group_context",
}
_STORE_OPTIONS = _PICKLE_OPTIONS | {"verify"}
_KNOWN_OPTIONS = _DIR_OPTIONS | _STORE_OPTIONS | {"blank"}
_FEATURE_MAKING = {"text_lexicon": "--text-lexicon", "group_context": "--group-context"}  # refused, not ignored


def parse_synthetic(spec: str) -> dict[str, Any]:
    """``"synthetic:seed=3,n_train=64"`` -> ``{"seed": 3, "n_train": 64}``."""
    _, _, rest = spec.partition(":")
    return dict(
        parse_key_values(rest, lambda item: f"dataset {spec!r}: expected key=value, got {item!r}", parse_plain_value)
    )


def load_dataset(spec: str | os.PathLike, **options: Any) -> MultimodalDataset:
    """Load the dataset ``spec`` names (see the module docstring), validated."""
    blank = options.pop("blank", None)
    if isinstance(blank, str):
        blank = [m.strip() for m in blank.split(",") if m.strip()]
    ds = _load(spec, **options)
    return ds.blank_modalities(blank) if blank else ds


def _load(spec: str | os.PathLike, **options: Any) -> MultimodalDataset:
    options = {k: v for k, v in options.items() if v is not None}
    unknown = sorted(set(options) - _KNOWN_OPTIONS)
    if unknown:
        raise MsalignError(
            f"dataset {str(spec)!r}: unknown option {unknown[0]!r} (known: {', '.join(sorted(_KNOWN_OPTIONS))})"
        )
    text = str(spec)
    modalities = options.get("modalities")
    if isinstance(modalities, str):
        options["modalities"] = modalities = [m.strip() for m in modalities.split(",") if m.strip()]
    if text == "synthetic" or text.startswith("synthetic:"):
        _refuse_feature_making(text, "synthetic data", options)
        kwargs = parse_synthetic(text)
        if "task" in options and kwargs.setdefault("task", options["task"]) != options["task"]:
            raise MsalignError(f"dataset {text!r}: task={kwargs['task']} in the spec, but --task {options['task']}")
        ds = generate_synthetic(**kwargs)
        ds.source = text  # the whole spec: a report reloads exactly this data
        ds.why = "the synthetic generator" + (
            ": task=" + kwargs["task"] if "task" in kwargs else ", MOSI's label scale"
        )
        validate_dataset(ds)
        return ds.select_modalities(modalities) if modalities else ds
    path = Path(text).expanduser()
    if not path.exists():
        raise MsalignError(f"dataset {text!r}: no such file or directory")
    if not os.access(path, os.R_OK) or (path.is_dir() and not os.access(path, os.X_OK)):
        raise MsalignError(f"dataset {text!r}: permission denied")
    if path.is_dir() and (path / "store.json").is_file():
        ds = load_store(path, **{k: v for k, v in options.items() if k in _STORE_OPTIONS})
        _check_store_made_them(text, ds, options)
        return ds
    if path.is_dir():
        return load_feature_dir(path, **{k: v for k, v in options.items() if k in _DIR_OPTIONS})
    if path.suffix.lower() == ".pkl":
        _refuse_feature_making(text, "an MMSA pickle", options)
        return load_mmsa_pickle(path, **{k: v for k, v in options.items() if k in _PICKLE_OPTIONS})
    raise MsalignError(
        f"dataset {text!r}: not a dataset "
        "(expected 'synthetic[:key=value,...]', an MMSA .pkl file or a feature directory)"
    )


def _refuse_feature_making(spec: str, what: str, options: dict[str, Any]) -> None:
    """One line for ``text_lexicon`` / ``group_context`` on a source that has no transcripts or label.csv groups."""
    for key, flag in _FEATURE_MAKING.items():
        if options.get(key) not in (None, False):
            raise MsalignError(
                f"dataset {spec!r}: {flag} ({key}) applies to feature directories (label.csv transcripts and "
                f"groups), not to {what}"
            )


def _check_store_made_them(spec: str, ds: MultimodalDataset, options: dict[str, Any]) -> None:
    """A store's features are its source's: ``text_lexicon`` / ``group_context`` are accepted only when
    the store was converted with the same setting (then they are already in the features)."""
    recorded = ds.feature_spec.load_options
    for key, flag in _FEATURE_MAKING.items():
        given = options.get(key)
        if given in (None, False):
            continue
        have = list(getattr(recorded, key) or [])
        if key == "text_lexicon":
            wanted = list(resolve_groups(given, f"dataset {spec!r}: text_lexicon"))
        else:
            wanted = resolve_context_modalities(given, list(ds.modalities), f"dataset {spec!r}")
        if wanted != have:
            raise MsalignError(
                f"dataset {spec!r}: {flag} {','.join(wanted)}: a feature store holds the features it was "
                f"converted with ({key} {','.join(have) or 'not set'}); convert the feature directory with {flag}"
            )

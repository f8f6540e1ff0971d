"""``store.json``, a feature store's manifest: its names, the checks a reader runs on it, and the
record of the checks the writer ran (see :mod:`msalign.data.store` for the keys)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from msalign.data.types import MODALITIES, SPLITS
from msalign.errors import MsalignError
from msalign.limits import regular_file, short_repr

MANIFEST = "store.json"
FORMAT = "msalign-feature-store"
VERSION = 1
VALIDATED_CHECKS = ["finite", "lengths_in_range", "padding_zero", "not_all_padding", "labels", "ids"]
_MAX_MANIFEST = 64 * 2**20


def read_manifest(folder: str | Path) -> dict[str, Any]:
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
    if manifest["metric_set"] not in ("mosi", "mosei", "sims", "iemocap"):
        raise MsalignError(
            f"{path}: key 'metric_set': {short_repr(manifest['metric_set'])} is not mosi/mosei/sims/iemocap"
        )
    if manifest["task"] not in ("regression", "classification"):
        raise MsalignError(f"{path}: key 'task': {short_repr(manifest['task'])} is not regression/classification")
    if manifest["task"] == "classification" and not isinstance(manifest.get("num_classes"), int):
        raise MsalignError(f"{path}: key 'num_classes': a classification store needs an integer class count")
    mods = manifest["modalities"]
    if not mods or any(m not in MODALITIES for m in mods):
        raise MsalignError(f"{path}: key 'modalities': expected some of {list(MODALITIES)}, got {sorted(mods)}")
    for m, facts in mods.items():
        if not (
            isinstance(facts, dict) and all(isinstance(facts.get(k), int) and facts[k] >= 1 for k in ("dim", "max_len"))
        ):
            raise MsalignError(
                f"{path}: key 'modalities.{m}': expected positive integers 'dim' and 'max_len', got {short_repr(facts)}"
            )
    for name in SPLITS:
        facts = manifest["splits"].get(name)
        if not isinstance(facts, dict) or not isinstance(facts.get("rows"), int) or facts["rows"] < 0:
            raise MsalignError(
                f"{path}: key 'splits.{name}': expected {{'rows': N, 'raw_text': bool}}, got {short_repr(facts)}"
            )
    return manifest


def is_store(folder: str | Path) -> bool:
    """True when ``folder`` is a directory holding a store manifest."""
    return (Path(folder) / MANIFEST).is_file()

"""The loader options a command gives for a dataset (``--dataset``, ``--modalities``, ``--cache-dir``, ...),
as one typed value, and the dataset they load.

:class:`DatasetOptions` holds what the user asked for (None: not given); :func:`load_dataset_from_options`
hands the options that were given to :func:`msalign.data.spec.load_dataset`, over the options a
trained checkpoint recorded (which an option given again replaces, except that a checkpoint's fitted
group priors win). :func:`config_keys_for_spec` names the dataset's config files from the spec alone,
so a wrong ``--set`` fails before any data loads.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from msalign.data.spec import load_dataset
from msalign.data.types import MultimodalDataset


@dataclass(frozen=True)
class DatasetOptions:
    """A dataset source and its load options (see :mod:`msalign.data.spec`); None means not given."""

    dataset: str  # synthetic[:key=value,...], an MMSA .pkl, a feature directory or a feature store
    modalities: str | None = None  # comma-separated subset
    blank: str | None = None  # modalities whose features become zeros
    text_encoder: str | None = None
    task: str | None = None
    metric_set: str | None = None
    empty_clips: str | None = None
    cache_dir: str | None = None
    descriptions: str | bool | None = None  # True: DATASET/descriptions.json
    group_standardize: str | bool | None = None  # True: every non-text modality; else comma-separated
    group_column: str | None = None
    group_strength: float | None = None
    text_lexicon: str | bool | None = None  # True: every lexicon group; else comma-separated (msalign.data.lexicon)
    group_context: str | bool | None = None  # True: text; else comma-separated (msalign.data.group_context)


def load_dataset_from_options(options: DatasetOptions, recorded: Mapping[str, Any] | None = None) -> MultimodalDataset:
    """The dataset ``options`` name, loaded with the options given over ``recorded`` (a trained
    checkpoint's loader options, so it is scored on the features it was trained on)."""
    kwargs = dict(recorded or {})
    for key in (
        "text_encoder",
        "metric_set",
        "task",
        "cache_dir",
        "modalities",
        "descriptions",
        "empty_clips",
        "group_column",
        "group_strength",
        "blank",
    ):
        if getattr(options, key) is not None:
            kwargs[key] = getattr(options, key)
    group: str | bool | list[str] | None = options.group_standardize
    if isinstance(group, str):
        group = [m.strip() for m in group.split(",") if m.strip()]
    if group is not None and not isinstance(kwargs.get("group_standardize"), dict):  # a checkpoint's priors win
        kwargs["group_standardize"] = group
    for key in ("text_lexicon", "group_context"):  # given: replaces the recorded list
        value = getattr(options, key)
        if isinstance(value, str):
            value = [name.strip() for name in value.split(",") if name.strip()] or True
        if value is not None:
            kwargs[key] = value
    return load_dataset(options.dataset, **kwargs)


def config_keys_for_spec(spec: str, metric_set: str | None) -> tuple[str, ...] | None:
    """The config keys (configs/MODEL/<key>.yaml) the dataset ``spec`` will choose once loaded, as far
    as the spec and ``--metric-set`` tell; None when only the loaded data can say (no metric set in
    the path or the options)."""
    if spec == "synthetic" or spec.startswith("synthetic:"):
        return ("synthetic", "mosi")
    if metric_set:
        return (metric_set,)
    found = [
        key
        for part in reversed(Path(spec).parts)
        for key in ("mosei", "mosi", "sims", "iemocap")
        if key in part.lower()
    ]
    return (found[0],) if found else None


__all__ = ["DatasetOptions", "config_keys_for_spec", "load_dataset_from_options"]

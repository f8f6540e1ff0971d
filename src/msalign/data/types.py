"""The in-memory dataset representation every loader produces and every model consumes.

A dataset is three splits (train / valid / test). Each split holds, per modality, a padded
float32 array (N, L, D) plus the true lengths (N,), so padding positions can be masked
downstream. Utterance-level features (one vector per clip, no time axis) are stored as
sequences of length 1. A dataset may lack any modality; models declare which they need.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np

from msalign.data.feature_spec import FeatureSpec
from msalign.errors import MsalignError

MODALITIES: tuple[str, ...] = ("text", "audio", "vision")
SPLITS: tuple[str, ...] = ("train", "valid", "test")
MetricSet = Literal["mosi", "mosei", "sims", "iemocap"]
Task = Literal["regression", "classification"]


@dataclass
class Split:
    """One split: padded features, true lengths, labels, ids and raw text."""

    name: str
    features: dict[str, np.ndarray]  # modality -> (N, L, D) float32, zero beyond lengths
    lengths: dict[str, np.ndarray]  # modality -> (N,) int64, 1 <= length <= L
    labels: np.ndarray  # (N,) float32 scores, or int64 class indices
    ids: list[str]
    raw_text: list[str] | None = None

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(m for m in MODALITIES if m in self.features)

    def mask(self, modality: str) -> np.ndarray:
        """Boolean (N, L) mask, True at real (non-padding) positions."""
        length = self.features[modality].shape[1]
        return np.arange(length)[None, :] < self.lengths[modality][:, None]

    def subset(self, index: np.ndarray) -> Split:
        index = np.asarray(index)
        return Split(
            name=self.name,
            features={m: x[index] for m, x in self.features.items()},
            lengths={m: x[index] for m, x in self.lengths.items()},
            labels=self.labels[index],
            ids=[self.ids[i] for i in index],
            raw_text=None if self.raw_text is None else [self.raw_text[i] for i in index],
        )


@dataclass
class MultimodalDataset:
    """Three splits plus what a model and the metrics need to know about them."""

    name: str  # "synthetic", "mosi", a folder name, ...
    splits: dict[str, Split]
    metric_set: MetricSet = "mosi"
    task: Task = "regression"
    num_classes: int | None = None  # classification only
    source: str = ""  # where it was loaded from, for error messages and results.json
    # How the features were made (encoder names, normalisation statistics, ...).
    # A checkpoint records it; evaluate/predict refuse a dataset whose spec differs.
    feature_spec: FeatureSpec = field(default_factory=FeatureSpec)
    # why the task and metric set are what they are ("--task classification", "labels are class
    # names", ...), for the one-line summary; and the configs/<model>/<key>.yaml keys to try, most
    # specific first (empty: the name, then the metric set)
    why: str = ""
    config_keys: tuple[str, ...] = ()
    dropped: dict = field(default_factory=dict)  # all-padding clips left out per split (--empty-clips drop)

    @property
    def modalities(self) -> tuple[str, ...]:
        return self.splits["train"].modalities

    @property
    def dims(self) -> dict[str, int]:
        return {m: int(x.shape[2]) for m, x in self.splits["train"].features.items()}

    @property
    def max_lengths(self) -> dict[str, int]:
        return {m: int(x.shape[1]) for m, x in self.splits["train"].features.items()}

    @property
    def output_dim(self) -> int:
        return 1 if self.task == "regression" else int(self.num_classes or 0)

    def split(self, name: str) -> Split:
        if name not in self.splits:
            raise MsalignError(f"dataset {self.source or self.name}: no split {name!r} (has {sorted(self.splits)})")
        return self.splits[name]

    def select_modalities(self, modalities: tuple[str, ...] | list[str]) -> MultimodalDataset:
        """A view keeping only ``modalities`` (in canonical order)."""
        missing = [m for m in modalities if m not in self.modalities]
        if missing:
            raise MsalignError(
                f"dataset {self.source or self.name}: lacks modality {missing} (has {list(self.modalities)})"
            )
        keep = [m for m in MODALITIES if m in modalities]
        splits = {
            name: replace(s, features={m: s.features[m] for m in keep}, lengths={m: s.lengths[m] for m in keep})
            for name, s in self.splits.items()
        }
        return replace(self, splits=splits, dropped=dict(self.dropped))

    def blank_modalities(self, modalities: tuple[str, ...] | list[str]) -> MultimodalDataset:
        """A copy whose ``modalities`` carry nothing: every feature zero, lengths and masks kept.

        The same model then trains without that stream's information (e.g. DecAlign on text only,
        which needs two streams): the ablation that shows what a modality adds. Recorded in
        ``feature_spec.options.blank`` so evaluate and predict blank it too.
        """
        missing = [m for m in modalities if m not in self.modalities]
        if missing:
            raise MsalignError(
                f"dataset {self.source or self.name}: cannot blank modality {missing} (has {list(self.modalities)})"
            )
        splits = {
            name: replace(s, features={m: np.zeros_like(x) if m in modalities else x for m, x in s.features.items()})
            for name, s in self.splits.items()
        }
        spec = self.feature_spec.with_blank([m for m in MODALITIES if m in modalities])
        return replace(self, splits=splits, feature_spec=spec, dropped=dict(self.dropped))

    def describe(self) -> str:
        sizes = ", ".join(f"{n} {len(s)}" for n, s in self.splits.items())
        shapes = ", ".join(f"{m} {self.max_lengths[m]}x{d}" for m, d in self.dims.items())
        task = f"task {self.task}" + (f" ({self.num_classes} classes)" if self.task == "classification" else "")
        why = f" ({self.why})" if self.why else ""
        dropped = ""
        if self.dropped:
            dropped = "; dropped all-padding clips: " + ", ".join(f"{n} {k}" for n, k in self.dropped.items())
        return f"{self.name}: {sizes}; {shapes}; {task}; metrics {self.metric_set}{why}{dropped}"

    def resolved_config_keys(self) -> tuple[str, ...]:
        """The keys whose ``configs/<model>/<key>.yaml`` apply to this dataset, most specific first."""
        if self.config_keys:
            return self.config_keys
        if self.task == "classification":
            return (self.name, "iemocap" if "iemocap" in self.name.lower() else "classification")
        return (self.name, self.metric_set)

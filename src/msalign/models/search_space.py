"""Hyperparameter search spaces: what ``msalign tune`` may vary, declared by each model next to its config.

A model class declares ``search_space = SearchSpace(...)`` (see :class:`msalign.models.base.MSAModel`):
the shared training keys (:data:`TRAIN_SPACE`: learning rate, weight decay, batch size) plus its own
model keys. Each key is typed:

* :class:`FloatParam` — uniform, or log-uniform with ``log=True`` (learning rates, decays, loss weights);
* :class:`IntParam` — an integer range;
* :class:`CategoricalParam` — a fixed list of values (widths, layer counts, batch sizes, switches).

Keys name a config field with its section, ``train.lr`` or ``model.width``; a value drawn from the
space is applied through the config layer's own override path (:func:`apply_params`, which type-checks
and runs the config dataclass's checks), so a drawn point is always a valid configuration.
A parameter with ``requires="train.finetune_text"`` is searched only when that key is true in the
configuration the search starts from (e.g. the text encoder's learning rate).

This module has no Optuna import: :mod:`msalign.experiments.tune_search` turns a space into Optuna distributions.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from msalign.config import update_dataclass
from msalign.errors import MsalignError

SECTIONS = ("model", "train")


def _check_key(key: str) -> None:
    section, _, name = key.partition(".")
    if section not in SECTIONS or not name or "." in name:
        raise ValueError(f"search-space key {key!r}: expected 'model.NAME' or 'train.NAME'")


@dataclass(frozen=True)
class FloatParam:
    """A float in [low, high]: uniform, or log-uniform (``log=True``)."""

    key: str
    low: float
    high: float
    log: bool = False
    requires: str | None = None

    def __post_init__(self) -> None:
        _check_key(self.key)
        if not self.low < self.high or (self.log and self.low <= 0):
            raise ValueError(f"search-space key {self.key}: bad range [{self.low}, {self.high}] (log={self.log})")

    def describe(self) -> dict[str, Any]:
        return {"key": self.key, "kind": "log-uniform" if self.log else "uniform", "low": self.low, "high": self.high}


@dataclass(frozen=True)
class IntParam:
    """An integer in [low, high] (inclusive), in steps of ``step``."""

    key: str
    low: int
    high: int
    step: int = 1
    requires: str | None = None

    def __post_init__(self) -> None:
        _check_key(self.key)
        if not self.low < self.high or self.step < 1:
            raise ValueError(f"search-space key {self.key}: bad range [{self.low}, {self.high}] step {self.step}")

    def describe(self) -> dict[str, Any]:
        return {"key": self.key, "kind": "int", "low": self.low, "high": self.high, "step": self.step}


@dataclass(frozen=True)
class CategoricalParam:
    """One of ``choices`` (plain bool / int / float / str values)."""

    key: str
    choices: tuple[Any, ...]
    requires: str | None = None

    def __post_init__(self) -> None:
        _check_key(self.key)
        if len(self.choices) < 2 or len(set(map(repr, self.choices))) != len(self.choices):
            raise ValueError(f"search-space key {self.key}: needs at least two distinct choices")
        if not all(isinstance(c, (bool, int, float, str)) for c in self.choices):
            raise ValueError(f"search-space key {self.key}: choices must be bool, int, float or str")

    def describe(self) -> dict[str, Any]:
        return {"key": self.key, "kind": "categorical", "choices": list(self.choices)}


Param = FloatParam | IntParam | CategoricalParam


@dataclass(frozen=True)
class SearchSpace:
    """The keys a search varies, in a fixed order (the order Optuna draws them in)."""

    params: tuple[Param, ...]

    def __post_init__(self) -> None:
        keys = [p.key for p in self.params]
        if len(set(keys)) != len(keys):
            raise ValueError(f"search space: a key is declared twice ({keys})")

    def __add__(self, other: SearchSpace) -> SearchSpace:
        return SearchSpace(self.params + other.params)

    @property
    def keys(self) -> list[str]:
        return [p.key for p in self.params]

    def active(self, model_config: Any, train_config: Any) -> SearchSpace:
        """The parameters searched from this starting configuration (``requires`` keys that are true)."""
        return SearchSpace(
            tuple(
                p for p in self.params if p.requires is None or bool(read_key(p.requires, model_config, train_config))
            )
        )

    def without(self, keys: list[str] | set[str]) -> SearchSpace:
        """The space minus ``keys`` (keys the user fixed with ``--set``)."""
        return SearchSpace(tuple(p for p in self.params if p.key not in set(keys)))

    def describe(self) -> list[dict[str, Any]]:
        return [p.describe() for p in self.params]


def read_key(key: str, model_config: Any, train_config: Any) -> Any:
    section, _, name = key.partition(".")
    config = model_config if section == "model" else train_config
    if name not in {f.name for f in dataclasses.fields(config)}:
        raise MsalignError(f"search-space key {key}: not a field of {type(config).__name__}")
    return getattr(config, name)


def apply_params(
    model_config: Any, train_config: Any, params: dict[str, Any], source: str = "search space"
) -> tuple[Any, Any]:
    """``(model_config, train_config)`` with ``params`` (``{"train.lr": 1e-3, "model.width": 64}``)
    applied through :func:`msalign.config.update_dataclass` (types coerced, unknown keys and values
    the config's own checks refuse are one-line MsalignErrors)."""
    sections: dict[str, dict[str, Any]] = {"model": {}, "train": {}}
    for key, value in params.items():
        section, _, name = key.partition(".")
        if section not in sections or not name:
            raise MsalignError(f"{source}: key {key!r} is not 'model.NAME' or 'train.NAME'")
        sections[section][name] = value
    model_config = update_dataclass(model_config, sections["model"], "model", source)
    train_config = update_dataclass(train_config, sections["train"], "train", source)
    return model_config, train_config


# the training keys every model searches (a model may add its own training keys after these)
TRAIN_SPACE = SearchSpace(
    (
        FloatParam("train.lr", 5e-5, 3e-3, log=True),
        FloatParam("train.weight_decay", 1e-6, 1e-2, log=True),
        CategoricalParam("train.batch_size", (16, 32, 64)),
        CategoricalParam("train.loss", ("mse", "l1")),  # l1 optimises MAE, the regression selection metric
        FloatParam("train.text_dropout", 0.0, 0.5),  # dropout on the text features: text dominates and overfits first
        FloatParam("train.text_lr", 1e-5, 2e-4, log=True, requires="train.finetune_text"),
    )
)


__all__ = [
    "TRAIN_SPACE",
    "CategoricalParam",
    "FloatParam",
    "IntParam",
    "Param",
    "SearchSpace",
    "apply_params",
    "read_key",
]

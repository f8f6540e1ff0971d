"""Name -> model class, timm style: ``create_model("decalign", dims=..., output_dim=1, alpha=0.1)``."""

from __future__ import annotations

import dataclasses
from typing import Any

from msalign.errors import MsalignError, suggest
from msalign.models.base import MSAModel

_REGISTRY: dict[str, type[MSAModel]] = {}


def register_model(cls: type[MSAModel]) -> type[MSAModel]:
    """Class decorator: registers ``cls`` under ``cls.name``."""
    if not cls.name:
        raise ValueError(f"{cls.__qualname__} has no name")
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise ValueError(f"model name {cls.name!r} registered twice")
    _REGISTRY[cls.name] = cls
    return cls


# The built-in models register themselves when msalign.models is imported, which Python does
# before it runs this module (a submodule's package comes first): the registry is full by the
# time any caller outside msalign.models can reach it.


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def get_model_class(name: str) -> type[MSAModel]:
    if name not in _REGISTRY:
        raise MsalignError(f"unknown model {name!r}; registered: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def build_config(name: str, overrides: dict[str, Any] | None = None) -> Any:
    """The model's config dataclass with the paper defaults, updated by ``overrides``."""
    cls = get_model_class(name)
    overrides = dict(overrides or {})
    known = {f.name for f in dataclasses.fields(cls.Config)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise MsalignError(
            f"model {name}: unknown config key {unknown[0]!r}{suggest(unknown[0], sorted(known))}; "
            f"'msalign models {name}' lists the keys"
        )
    return cls.Config(**overrides)


def create_model(
    name: str, dims: dict[str, int], output_dim: int = 1, config: Any = None, **overrides: Any
) -> MSAModel:
    cls = get_model_class(name)
    if config is None:
        config = build_config(name, overrides)
    elif overrides:
        config = dataclasses.replace(config, **overrides)
    usable = {m: d for m, d in dims.items() if m in cls.supported_modalities}
    cls.check_modalities(list(dims))
    return cls(config, usable, output_dim)

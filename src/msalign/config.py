"""Run configuration: a model config (the model's dataclass) plus a TrainConfig, from files and --set.

A config file is YAML with two optional sections::

    model:            # fields of the model's Config dataclass
      width: 64
    train:            # fields of TrainConfig
      lr: 1.0e-3

Look-up order for defaults: the dataclasses' defaults (the papers' values), then
``configs/<model>/default.yaml``, then the first of ``configs/<model>/<key>.yaml`` that exists for the
dataset's keys (its name, then its metric set: synthetic.yaml, else mosi.yaml; a classification dataset
tries classification.yaml, or iemocap.yaml when its path names IEMOCAP), then ``--config FILE``, then
``--set key=value`` overrides (:func:`config_files` lists the files; the CLI prints them). A bare key
resolves to the model section first, then train; ``model.x`` / ``train.x`` are explicit. Unknown
keys and values of the wrong type are errors naming the key.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from msalign.errors import MsalignError

CONFIG_DIR = Path(__file__).resolve().parent / "configs"


@dataclass
class TrainConfig:
    epochs: int = 30  # maximum training epochs
    batch_size: int = 32  # clips per training batch
    lr: float = 1e-3  # AdamW learning rate
    weight_decay: float = 1e-4  # AdamW weight decay
    patience: int = 8  # early stopping on the validation selection metric
    grad_clip: float = 1.0  # gradient clipping threshold (0: off); see grad_clip_algorithm
    # "value" clips each gradient entry to [-grad_clip, grad_clip] (MMSA's clip_grad_value_), "norm" the global norm
    grad_clip_algorithm: typing.Literal["norm", "value"] = "norm"
    # "l1" optimises MAE, the selection metric, directly (MMSA's MulT trainer); "mse" is the papers' L2
    loss: typing.Literal["mse", "l1"] = "mse"
    accumulate_batches: int = 1  # gradient accumulation: one optimiser step per this many batches (MMSA: 8)
    scheduler: typing.Literal["plateau", "none"] = "plateau"  # plateau: reduce lr when validation stalls
    plateau_factor: float = 0.5  # ReduceLROnPlateau's lr multiplier (MMSA's MulT: 0.1)
    plateau_patience: int | None = None  # epochs without improvement before the lr drops; None: patience // 3
    text_dropout: float = 0.0  # dropout on the text features before the model, training only (MulT's text_dropout)
    num_workers: int = 0  # DataLoader worker processes
    accelerator: str = "auto"  # auto | cpu | gpu | mps ...
    devices: int = 1  # > 1: one process per device (GPUs, or CPU processes with gloo); see docs/scaling.md
    num_nodes: int = 1  # machines of a multi-node DDP job (SLURM: --nodes); devices is per machine
    strategy: str = "auto"  # Lightning strategy: auto | ddp | ddp_spawn | fsdp ...; auto picks ddp for devices > 1
    precision: str = "32-true"  # Lightning precision, e.g. 32-true, bf16-mixed
    max_train_batches: float = 1.0  # fraction or count of training batches per epoch (quick runs)
    threads: int = 0  # torch intra-op threads; 0 keeps torch's default (small models often run best on 1)
    # fine-tune the dataset's text encoder end to end (models/text_tuning.py); slow on CPU, so off
    finetune_text: bool = False
    text_lr: float = 5e-5  # the text encoder's learning rate when fine-tuned (the papers' BERT rate)
    # k > 0: fine-tune only the encoder's top k layers over cached lower-layer states (CPU-cheap;
    # models/text_tuning.py); exclusive with finetune_text, which tunes the whole encoder
    finetune_layers: int = 0
    # a Lightning logger writing seed_N/logs/ while a run trains, to watch it (metrics.csv, or
    # TensorBoard events: tensorboard --logdir OUT); not part of a run's identity
    logger: typing.Literal["none", "csv", "tensorboard"] = "none"


def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def coerce(value: Any, annotation: Any, key: str) -> Any:
    """Check/convert ``value`` to the field type ``annotation``; error names ``key``."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(annotation)
        if value is None and type(None) in options:
            return None
        last: MsalignError | None = None
        for option in options:
            if option is type(None):
                continue
            try:
                return coerce(value, option, key)
            except MsalignError as error:
                last = error
        raise last or MsalignError(f"config key {key!r}: bad value {value!r}")
    if origin is typing.Literal:
        if value not in typing.get_args(annotation):
            raise MsalignError(f"config key {key!r}: {value!r} is not one of {list(typing.get_args(annotation))}")
        return value
    if origin in (tuple, list):
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise MsalignError(f"config key {key!r}: expected a list, got {value!r}")
        args = typing.get_args(annotation)
        item = args[0] if args else Any
        items = [coerce(v, item, key) if item is not Any else v for v in value]
        return tuple(items) if origin is tuple else items
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "on", "off", "1", "0"):
            return value.lower() in ("true", "yes", "on", "1")
        raise MsalignError(f"config key {key!r}: expected true or false, got {value!r}")
    if annotation is int:
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            return int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise MsalignError(f"config key {key!r}: expected an integer, got {value!r}")
        return value
    if annotation is float:
        if isinstance(value, str):
            try:  # "1e-3" and list items like "2.5" arrive as strings
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise MsalignError(f"config key {key!r}: expected a number, got {value!r}")
        return float(value)
    if annotation is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise MsalignError(f"config key {key!r}: expected a string, got {value!r}")
        return str(value)
    return value


def update_dataclass(obj: Any, values: dict[str, Any], section: str, source: str) -> Any:
    hints = _field_types(type(obj))
    for key in values:
        if key not in hints:
            from msalign.config_docs import suggest

            raise MsalignError(f"{source}: unknown {section} config key {key!r}{suggest(key, sorted(hints))}; "
                               f"'msalign models MODEL' lists the keys")
    return dataclasses.replace(obj, **{k: coerce(v, hints[k], f"{section}.{k}") for k, v in values.items()})


def read_config_file(path: str | Path) -> dict[str, dict[str, Any]]:
    path = Path(path)
    if not path.is_file():
        raise MsalignError(f"config file {path}: no such file")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise MsalignError(f"config file {path}: not valid YAML ({first})") from None
    if not isinstance(data, dict) or not set(data) <= {"model", "train"}:
        raise MsalignError(f"config file {path}: expected top-level sections 'model' and/or 'train'")
    for section, values in data.items():
        if values is not None and not isinstance(values, dict):
            raise MsalignError(f"config file {path}: section {section!r} must be a mapping")
    return {section: dict(values or {}) for section, values in data.items()}


def parse_overrides(items: list[str]) -> list[tuple[str, Any]]:
    """``["alpha=0.1", "train.lr=1e-3"]`` -> [(key, YAML-parsed value)]."""
    parsed = []
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise MsalignError(f"--set {item!r}: expected key=value")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        if isinstance(value, str):
            try:  # YAML 1.1 reads "1e-3" as a string
                value = float(value)
            except ValueError:
                pass
        parsed.append((key.strip(), value))
    return parsed


def config_files(model_name: str, dataset_keys: list[str] | tuple[str, ...] = (),
                 config_file: str | Path | None = None) -> list[Path]:
    """The files :func:`resolve_config` applies, in order (see the module docstring)."""
    files = [p for p in [CONFIG_DIR / model_name / "default.yaml"] if p.is_file()]
    # Only the most specific dataset file applies (e.g. synthetic.yaml, not also mosi.yaml).
    specific = [CONFIG_DIR / model_name / f"{key}.yaml" for key in dataset_keys]
    files += [p for p in specific if p.is_file()][:1]
    if config_file is not None:
        files.append(Path(config_file))
    return files


def describe_files(files: list[Path]) -> str:
    """``configs/decalign/mosi.yaml, my.yaml`` (the package's files relative to it), or ``none``."""
    names = [f"configs/{p.relative_to(CONFIG_DIR)}" if p.is_relative_to(CONFIG_DIR) else str(p) for p in files]
    return ", ".join(names) or "none (the dataclass defaults)"


def resolve_config(
    model_name: str,
    model_config: Any,
    dataset_keys: list[str] | tuple[str, ...] = (),
    config_file: str | Path | None = None,
    overrides: list[str] | None = None,
) -> tuple[Any, TrainConfig]:
    """Builds (model config, train config) in the look-up order described in the module docstring."""
    train = TrainConfig()
    for path in config_files(model_name, dataset_keys, config_file):
        sections = read_config_file(path)
        model_config = update_dataclass(model_config, sections.get("model", {}), "model", str(path))
        train = update_dataclass(train, sections.get("train", {}), "train", str(path))
    model_keys = {f.name for f in dataclasses.fields(model_config)}
    train_keys = {f.name for f in dataclasses.fields(train)}
    for key, value in parse_overrides(overrides or []):
        section, _, name = key.rpartition(".")
        if not section:
            section = "model" if name in model_keys else "train" if name in train_keys else ""
        if section == "model" and name in model_keys:
            model_config = update_dataclass(model_config, {name: value}, "model", "--set")
        elif section == "train" and name in train_keys:
            train = update_dataclass(train, {name: value}, "train", "--set")
        else:
            from msalign.config_docs import suggest

            known = sorted(model_keys) + sorted(f"train.{k}" for k in train_keys)
            raise MsalignError(f"--set {key}: unknown config key for model {model_name}{suggest(key, known)}; "
                               f"'msalign models {model_name}' lists every key with its type, default and meaning")
    return model_config, train


def config_to_dict(config: Any) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(config).items()}

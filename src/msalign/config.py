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

import contextlib
import dataclasses
import math
import os
import types
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from msalign.errors import MsalignError, suggest
from msalign.limits import regular_file, short_repr

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
# Field metadata of options added after runs were recorded: at its default such a field is left out
# of config_to_dict, so run identities, results.json and checkpoints written before it existed
# still match (a resumed run is not retrained, a recorded table row is still found).
OMITTED_WHEN_DEFAULT = {"omitted_when_default": True}


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
    # > 0: validation, early stopping, the saved model and every score use an exponential moving
    # average of the weights, updated after each optimiser step with this decay (Lightning's
    # EMAWeightAveraging; training/weight_averaging.py); 0: off. Absent from run records when off.
    ema_decay: float = dataclasses.field(default=0.0, metadata=OMITTED_WHEN_DEFAULT)

    def __post_init__(self) -> None:
        check_ranges(self, "train")


# --- ranges: every config dataclass (TrainConfig and each model's Config) calls check_ranges from
# its __post_init__, so a value out of range is refused where the config is built (from files,
# --set or a checkpoint's metadata), before any data loads or any layer is built. Bounds are by
# field name; the upper bounds are far above any real setting and only stop a crafted value from
# building a million layers or allocating a 384 GB weight.
_CPUS = os.cpu_count() or 1
_INT_RANGES: dict[str, tuple[int, int]] = {
    "epochs": (1, 10**6),
    "batch_size": (1, 10**6),
    "patience": (0, 10**6),
    "devices": (1, 1024),
    "num_nodes": (1, 10**4),
    "num_workers": (0, max(64, 4 * _CPUS)),
    "threads": (0, max(16, 4 * _CPUS)),
    "width": (1, 16384),
    "ff_width": (1, 65536),
    "heads": (1, 1024),
    "head_hidden": (1, 65536),
    "kernel_size": (1, 64),
    "projection_kernel": (1, 64),
    "max_length": (1, 10**6),
    "num_prototypes": (1, 1024),
    "gmm_steps": (1, 10**4),
    "ot_max_iter": (1, 10**6),
    "top_k": (1, 10**6),
    "bottleneck_tokens": (1, 1024),
    "mining_pool": (1, 10**6),
    "mining_refresh": (1, 10**6),
    "accumulate_batches": (1, 10**4),
}
_LAYERS = (0, 64)
_INT_DEFAULT = (0, 10**6)
_SIGNED: set[str] = set()  # float fields that may be negative (every float so far is a rate, weight or bound)
_POSITIVE = {
    "lr",
    "text_lr",
    "temperature",
    "selection_temperature",
    "uniformity_t",
    "ot_epsilon",
    "ot_tol",
    "var_floor",
}


def check_heads(model: str, width: int, heads: int) -> None:
    """Multi-head attention splits the width evenly across the heads."""
    if width % heads:
        raise MsalignError(f"{model}: width {width} is not divisible by heads {heads}")


def _bad(section: str, key: str, value: Any, want: str) -> MsalignError:
    return MsalignError(f"config key '{section}.{key}': {short_repr(value)} is out of range ({want})")


def check_ranges(config: Any, section: str) -> None:
    """Refuse a config whose values are out of range; the error names ``section.key``.

    Integers lie in their field's range (``_INT_RANGES``; ``*layers`` 0-64; others 0-10^6), floats
    are finite, ``*dropout`` lies in [0, 1), rates and temperatures are > 0, other floats >= 0
    (a new field that may be negative goes in ``_SIGNED``),
    ``max_train_batches`` is a fraction in (0, 1] or a whole count. Checks between fields (width
    divisible by heads, ...) follow in each config's own ``__post_init__``."""
    for field in dataclasses.fields(config):
        key, value = field.name, getattr(config, field.name)
        values = value if isinstance(value, (tuple, list)) else (value,)
        for item in values:
            if isinstance(item, bool) or item is None or isinstance(item, str):
                continue
            if isinstance(item, int):
                lo, hi = _INT_RANGES.get(key, _LAYERS if key.endswith("layers") else _INT_DEFAULT)
                if not lo <= item <= hi:
                    raise _bad(section, key, value, f"an integer from {lo} to {hi}")
            elif isinstance(item, float):
                if not math.isfinite(item):
                    raise _bad(section, key, value, "a finite number")
                if key.endswith("dropout") and not 0 <= item < 1:
                    raise _bad(section, key, value, "a probability in [0, 1)")
                if (key in _POSITIVE or key == "mmd_bandwidths") and item <= 0:
                    raise _bad(section, key, value, "a number > 0")
                if item < 0 and key not in _SIGNED:
                    raise _bad(section, key, value, "a number >= 0")
                if key == "ema_decay" and not 0 <= item < 1:
                    raise _bad(section, key, value, "0 (off) or a decay in (0, 1)")
                if key == "plateau_factor" and not 0 < item < 1:
                    raise _bad(section, key, value, "a factor in (0, 1)")
                if key == "max_train_batches" and (item == 0 or (item > 1 and not item.is_integer())):
                    raise _bad(section, key, value, "a fraction in (0, 1] or a whole number of batches")


def field_types(cls: type) -> dict[str, Any]:
    """The resolved type annotation of every field of the dataclass ``cls``."""
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
        raise last or MsalignError(f"config key {key!r}: bad value {short_repr(value)}")
    if origin is typing.Literal:
        if value not in typing.get_args(annotation):
            raise MsalignError(
                f"config key {key!r}: {short_repr(value)} is not one of {list(typing.get_args(annotation))}"
            )
        return value
    if origin in (tuple, list):
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise MsalignError(f"config key {key!r}: expected a list, got {short_repr(value)}")
        args = typing.get_args(annotation)
        item = args[0] if args else Any
        items = [coerce(v, item, key) if item is not Any else v for v in value]
        return tuple(items) if origin is tuple else items
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "on", "off", "1", "0"):
            return value.lower() in ("true", "yes", "on", "1")
        raise MsalignError(f"config key {key!r}: expected true or false, got {short_repr(value)}")
    if annotation is int:
        # ASCII digits only: str.isdigit() also accepts "²", which int() refuses
        if isinstance(value, str) and value.strip().lstrip("-").isdigit() and value.strip().isascii():
            try:
                return int(value)
            except ValueError:  # beyond Python's 4300-digit limit for str -> int
                raise MsalignError(f"config key {key!r}: integer {short_repr(value)} is too long") from None
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise MsalignError(f"config key {key!r}: expected an integer, got {short_repr(value)}")
        return value
    if annotation is float:
        if isinstance(value, str):
            try:  # "1e-3" and list items like "2.5" arrive as strings
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise MsalignError(f"config key {key!r}: expected a number, got {short_repr(value)}")
        return float(value)
    if annotation is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise MsalignError(f"config key {key!r}: expected a string, got {short_repr(value)}")
        return str(value)
    return value


def update_dataclass(obj: Any, values: dict[str, Any], section: str, source: str) -> Any:
    hints = field_types(type(obj))
    for key in values:
        if key not in hints:
            raise MsalignError(
                f"{source}: unknown {section} config key {short_repr(key)}{suggest(key, sorted(hints))}; "
                f"'msalign models MODEL' lists the keys"
            )
    try:  # types, then the config class's ranges (__post_init__); errors name the source and key
        return dataclasses.replace(obj, **{k: coerce(v, hints[k], f"{section}.{k}") for k, v in values.items()})
    except MsalignError as error:
        text = str(error)
        raise MsalignError(text if text.startswith(source) else f"{source}: {text}") from None


class _NoAliasLoader(yaml.SafeLoader):
    """SafeLoader that refuses aliases (``*name``): a config needs none, and a 1 KB file of
    aliases to aliases expands to billions of nodes in whatever walks it (an "alias bomb")."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(
                None,
                None,
                f"alias *{short_repr(event.anchor, 40)} is not accepted (write the value out)",
                event.start_mark,
            )
        return super().compose_node(parent, index)


def safe_yaml(text: str) -> Any:
    """``yaml.safe_load`` without aliases; see :class:`_NoAliasLoader`."""
    loader = _NoAliasLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


_MAX_CONFIG_BYTES = 1 << 20  # a config file is a few hundred bytes


def read_config_file(path: str | Path) -> dict[str, dict[str, Any]]:
    path = Path(path)
    if not path.is_file():
        raise MsalignError(f"config file {path}: no such file")
    regular_file(path, f"config file {path}")
    if path.stat().st_size > _MAX_CONFIG_BYTES:
        raise MsalignError(f"config file {path}: {path.stat().st_size:,} bytes; a config file is at most 1 MB")
    try:
        data = safe_yaml(path.read_text()) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise MsalignError(f"config file {path}: not valid YAML ({first})") from None
    if not isinstance(data, dict) or not set(data) <= {"model", "train"}:
        raise MsalignError(f"config file {path}: expected top-level sections 'model' and/or 'train'")
    for section, values in data.items():
        if values is not None and not isinstance(values, dict):
            raise MsalignError(f"config file {path}: section {section!r} must be a mapping")
    return {section: dict(values or {}) for section, values in data.items()}


# --- key=value text: the one parser of every ``key=value`` list (--set, --grid, --shapes,
# benchmark entries' [key=value,...], synthetic:key=value,...) and the one reader of a value's text
def parse_value(text: str) -> Any:
    """A value as written after ``key=``: a YAML scalar or list (``0.1``, ``true``, ``null``, ``[1, 2]``),
    numbers YAML 1.1 leaves as strings (``1e-3``) as floats, an empty text as ``""``; text YAML
    cannot read stays as written. :func:`coerce` then checks it against the field's type."""
    try:
        value = safe_yaml(text) if text.strip() else ""
    except yaml.YAMLError:
        value = text
    if isinstance(value, str):
        with contextlib.suppress(ValueError):  # YAML 1.1 reads "1e-3" as a string
            value = float(value)
    return value


def parse_plain_value(text: str) -> Any:
    """A value of a dataset spec (``synthetic:seed=3,task=classification``): ``true``/``false`` and
    ``none``/``null`` in any case, a decimal integer, a float, else the stripped text. Not YAML: a spec
    is a path-like name, where ``none`` means no value and ``010`` is ten (YAML 1.1 reads it as octal 8)."""
    low = text.strip().lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text.strip()


def parse_key_values(
    items: str | Sequence[str], error: Callable[[str], str], convert: Callable[[str], Any] | None = parse_value
) -> list[tuple[str, Any]]:
    """``key=value`` items -> ``[(key, convert(value))]``, in order (a key may repeat; the caller decides).

    ``items`` is one comma-separated text (``"a=1, b=2"``: items stripped, empty ones skipped) or a
    sequence of items, one pair each (``["a=1", "b=x,y"]``: a value may hold commas). Keys are
    stripped; an item without ``=`` or with an empty key, or whose value ``convert`` refuses with
    ValueError, is a one-line MsalignError ``error(item)``. ``convert=None`` keeps the value's text."""
    if isinstance(items, str):
        items = [item for item in (part.strip() for part in items.split(",")) if item]
    pairs = []
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise MsalignError(error(item))
        try:
            pairs.append((key.strip(), raw if convert is None else convert(raw)))
        except ValueError:
            raise MsalignError(error(item)) from None
    return pairs


def parse_overrides(items: list[str]) -> list[tuple[str, Any]]:
    """``["alpha=0.1", "train.lr=1e-3"]`` (--set) -> [(key, value read by :func:`parse_value`)]."""
    return parse_key_values(items, lambda item: f"--set {item!r}: expected key=value")


def parse_seeds(text: str) -> list[int]:
    """``--seeds 1111,1112`` -> [1111, 1112]; one-line errors for anything else."""
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise MsalignError(f"--seeds {text!r}: expected comma-separated integers, e.g. 1111,1112") from None
    if not seeds:
        raise MsalignError("--seeds: no seed given")
    return seeds


def config_files(
    model_name: str, dataset_keys: list[str] | tuple[str, ...] = (), config_file: str | Path | None = None
) -> list[Path]:
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
    # all --set values of a section are applied at once, so --set width=30 --set heads=5 is checked
    # as a whole (not as width 30 with the old heads first)
    sets: dict[str, dict[str, Any]] = {"model": {}, "train": {}}
    for key, value in parse_overrides(overrides or []):
        section, _, name = key.rpartition(".")
        if not section:
            section = "model" if name in model_keys else "train" if name in train_keys else ""
        if section == "model" and name in model_keys:
            sets["model"][name] = value
        elif section == "train" and name in train_keys:
            sets["train"][name] = value
        else:
            known = sorted(model_keys) + sorted(f"train.{k}" for k in train_keys)
            raise MsalignError(
                f"--set {short_repr(key)[1:-1]}: unknown config key for model {model_name}"
                f"{suggest(key, known)}; 'msalign models {model_name}' lists every key with its type, "
                "default and meaning"
            )
    model_config = update_dataclass(model_config, sets["model"], "model", "--set")
    train = update_dataclass(train, sets["train"], "train", "--set")
    check_ranges(model_config, "model")  # for model configs that do not call it themselves
    return model_config, train


@dataclass(frozen=True)
class ConfigSources:
    """Where a run's config comes from beyond the package's configs/MODEL/*.yaml: ``--config FILE``,
    the ``--set`` overrides and the command-line shortcuts for train fields (None: not given)."""

    config_file: str | None = None
    overrides: tuple[str, ...] = ()
    epochs: int | None = None
    devices: int | None = None
    strategy: str | None = None
    accelerator: str | None = None
    logger: str | None = None


def resolve_run_config(
    model_name: str,
    model_config: Any,
    dataset_keys: Sequence[str],
    sources: ConfigSources,
    extra_overrides: Sequence[str] = (),
) -> tuple[Any, TrainConfig]:
    """:func:`resolve_config` for ``model_config`` (the model's defaults) and the dataset's config
    keys, with ``extra_overrides`` (a benchmark entry's ``[key=value,...]``) after ``--set``, then the
    shortcuts ``--epochs``, ``--devices``, ``--strategy``, ``--accelerator``, ``--logger``."""
    model_config, train_config = resolve_config(
        model_name, model_config, tuple(dataset_keys), sources.config_file, [*sources.overrides, *extra_overrides]
    )
    if sources.epochs is not None:
        if sources.epochs < 1:
            raise MsalignError(f"--epochs {sources.epochs}: must be at least 1")
        train_config.epochs = sources.epochs
    if sources.devices is not None:
        if sources.devices < 1:
            raise MsalignError(f"--devices {sources.devices}: must be at least 1")
        train_config.devices = sources.devices
    for key in ("strategy", "accelerator", "logger"):
        if getattr(sources, key) is not None:
            setattr(train_config, key, getattr(sources, key))
    return model_config, train_config


def describe_config_sources(
    model_names: Sequence[str], dataset_keys: Sequence[str], config_file: str | Path | None = None
) -> str:
    """The config files each model's run applies, as the run's summary line names them (one list
    when every model applies the same files)."""
    files = {m: describe_files(config_files(m, tuple(dataset_keys), config_file)) for m in dict.fromkeys(model_names)}
    if len(set(files.values())) == 1:
        return next(iter(files.values()))
    return "; ".join(f"{m}: {f}" for m, f in files.items())


def config_to_dict(config: Any) -> dict[str, Any]:
    """The config's fields as JSON-ready values (tuples become lists), without the fields marked
    :data:`OMITTED_WHEN_DEFAULT` that hold their default."""
    omitted = {
        f.name
        for f in dataclasses.fields(config)
        if f.metadata.get("omitted_when_default") and getattr(config, f.name) == f.default
    }
    return {
        k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(config).items() if k not in omitted
    }

"""Checkpoints: safetensors weights with the run's description in the file's JSON metadata.

Nothing in a checkpoint is executable (no pickle): the weights are safetensors, and the header
metadata ``msalign`` holds JSON with the model name, its config, the dataset's feature spec,
dims, task and metrics. Loading rebuilds the model from the registry and refuses a checkpoint
whose feature spec differs from the data it is asked to score.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file

from msalign.atomic import atomic_path
from msalign.config import update_dataclass
from msalign.data.feature_spec import MAX_CLASSES, FeatureSpec
from msalign.data.types import MODALITIES
from msalign.errors import MsalignError
from msalign.limits import check_alloc, regular_file, short_repr
from msalign.models import MSAModel, build_config, create_model, get_model_class
from msalign.models.text_tuning import rebuild_text_encoder

FORMAT_VERSION = 1


# The keys a checkpoint's metadata may hold, in the order they are written; any other key read from a
# file is kept in ``CheckpointMeta.extra`` and written back after these.
_KEYS = (
    "format",
    "model",
    "dims",
    "output_dim",
    "model_config",
    "train_config",
    "feature_spec",
    "dataset",
    "metric_set",
    "task",
    "modalities",
    "seed",
    "metrics",
    "text_tuning",
)
_REQUIRED = ("model", "model_config", "dims", "output_dim")


@dataclass(frozen=True)
class CheckpointMeta:
    """A checkpoint's metadata (the JSON in the safetensors header key ``msalign``).

    ``None`` in an optional field means the file does not record it (``task`` then reads as
    regression and ``metric_set`` as mosi). ``train_config``, ``dataset``, ``modalities``, ``seed``
    and ``metrics`` are descriptive only: read back as written, never built from. ``text_tuning`` is
    the fine-tuned text encoder's own record (see ``models.text_tuning``)."""

    model: str
    dims: dict[str, int]
    output_dim: int
    model_config: dict[str, Any]
    train_config: dict[str, Any] | None = None
    feature_spec: dict[str, Any] | None = None
    dataset: str | None = None
    metric_set: str | None = None
    task: str | None = None
    modalities: list[str] | None = None
    seed: int | None = None
    metrics: dict[str, Any] | None = None
    text_tuning: dict[str, Any] | None = None
    format: int = FORMAT_VERSION
    extra: Mapping[str, Any] = field(default_factory=dict)  # keys this version does not know

    @classmethod
    def describe(cls, model: MSAModel, model_config: dict[str, Any], **fields: Any) -> CheckpointMeta:
        """The metadata of ``model``'s checkpoint: its name, dims and output size come from the model."""
        return cls(model.name, dict(model.dims), model.output_dim, model_config, **fields)

    def to_json(self) -> dict[str, Any]:
        """The JSON object written to the file: the known keys in their fixed order (unrecorded ones
        left out), then ``extra``."""
        data = {key: getattr(self, key) for key in _KEYS}
        data = {key: value for key, value in data.items() if value is not None or key in _REQUIRED}
        return {**data, **self.extra}

    @classmethod
    def from_json(cls, data: Any, path: str | Path) -> CheckpointMeta:
        """Checks a checkpoint's decoded metadata (see :func:`check_meta`); each wrong field is one
        line naming the file and key."""
        if not isinstance(data, dict):
            raise MsalignError(f"checkpoint {path}: metadata is a {type(data).__name__}, not a JSON object")
        for key in _REQUIRED:
            if key not in data:
                raise MsalignError(f"checkpoint {path}: metadata lacks {key!r}")
        check_meta(data, path)
        known = {key: data[key] for key in _KEYS if key in data}
        return cls(**known, extra={key: value for key, value in data.items() if key not in _KEYS})


def save_checkpoint(path: str | Path, model: MSAModel, meta: CheckpointMeta) -> None:
    """Writes ``model``'s weights with ``meta`` (which must describe this model) atomically to ``path``."""
    if (meta.model, meta.dims, meta.output_dim) != (model.name, model.dims, model.output_dim):
        raise ValueError(f"checkpoint metadata describes {meta.model} {meta.dims}, not the model saved")
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(path) as temporary:
        save_file(state, str(temporary), metadata={"msalign": json.dumps(meta.to_json())})


def checkpoint_file(path: str | Path) -> Path:
    """``path``, or for a seed folder its ``model.safetensors``; a run folder (several seeds) is one
    line naming the seed files to choose from."""
    path = Path(path)
    if not path.is_dir():
        return path
    if (path / "model.safetensors").is_file():  # OUT/seed_N
        return path / "model.safetensors"
    seeds = sorted(path.glob("seed_*/model.safetensors"))
    if seeds:
        more = f" (or another of its {len(seeds)} seeds)" if len(seeds) > 1 else ""
        raise MsalignError(f"checkpoint {path}: is a run folder; pass a seed's file, e.g. {seeds[0]}{more}")
    raise MsalignError(f"checkpoint {path}: is a folder without model.safetensors; pass OUT/seed_N/model.safetensors")


def read_checkpoint_meta(path: str | Path) -> CheckpointMeta:
    """The metadata of the checkpoint at ``path`` (a file or a seed folder), checked; one line naming
    the file and key when it is not a readable, sane msalign checkpoint."""
    path = checkpoint_file(path)
    regular_file(path, f"checkpoint {path}")  # missing, a directory or a FIFO: one line, no hang
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
    except (SafetensorError, OSError, ValueError) as error:
        raise MsalignError(f"checkpoint {path}: not a safetensors file ({str(error).splitlines()[0]})") from None
    if "msalign" not in metadata:
        raise MsalignError(f"checkpoint {path}: no msalign metadata (was it written by msalign?)")
    try:
        info = json.loads(metadata["msalign"])
    except json.JSONDecodeError:
        raise MsalignError(f"checkpoint {path}: corrupt msalign metadata") from None
    return CheckpointMeta.from_json(info, path)


MAX_DIM = 1 << 16  # a feature dimension (BERT: 768, OpenFace: 709, COVAREP: 74)
MAX_OUTPUT = MAX_CLASSES  # classes of a classification head


def _meta_error(path: str | Path, key: str, value: Any, want: str) -> MsalignError:
    return MsalignError(f"checkpoint {path}: metadata key {key!r}: {short_repr(value)} ({want})")


def _positive_int(value: Any, hi: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= hi


def check_meta(info: dict[str, Any], path: str | Path) -> None:
    """Check a checkpoint's decoded metadata (the JSON object, before it becomes a
    :class:`CheckpointMeta`) against the model's config class and sane bounds before
    anything is built from it: a tampered file would otherwise build a million layers, allocate a
    384 GB weight or fail deep inside torch. Each wrong field is one line naming the file and key."""
    if not isinstance(info["model"], str):
        raise _meta_error(path, "model", info["model"], "expected a model name")
    try:
        get_model_class(info["model"])
    except MsalignError as error:
        raise MsalignError(f"checkpoint {path}: metadata key 'model': {error}") from None
    dims = info["dims"]
    if not isinstance(dims, dict) or not dims:
        raise _meta_error(path, "dims", dims, "expected an object of modality: feature dimension")
    for modality, dim in dims.items():
        if modality not in MODALITIES:
            raise _meta_error(path, f"dims.{str(modality)[:20]}", modality, f"not one of {list(MODALITIES)}")
        if not _positive_int(dim, MAX_DIM):
            raise _meta_error(path, f"dims.{modality}", dim, f"expected an integer from 1 to {MAX_DIM}")
    if not _positive_int(info["output_dim"], MAX_OUTPUT):
        raise _meta_error(path, "output_dim", info["output_dim"], f"expected an integer from 1 to {MAX_OUTPUT}")
    if not isinstance(info["model_config"], dict):
        raise _meta_error(path, "model_config", info["model_config"], "expected a JSON object")
    _model_config(info["model"], info["model_config"], path)  # keys known, types and ranges checked
    for key in ("feature_spec", "text_tuning", "metrics"):
        if info.get(key) is not None and not isinstance(info[key], dict):
            raise _meta_error(path, key, info[key], "expected a JSON object")
    tuning = info.get("text_tuning")
    if tuning:  # a fine-tuned text encoder: its name, token limit and standardisation statistics
        if not isinstance(tuning.get("encoder"), str) or not tuning["encoder"]:
            raise _meta_error(path, "text_tuning.encoder", tuning.get("encoder"), "expected an encoder name or folder")
        if not _positive_int(tuning.get("max_length"), 1 << 16):
            raise _meta_error(
                path, "text_tuning.max_length", tuning.get("max_length"), "expected an integer from 1 to 65536"
            )
        stats = tuning.get("standardize")
        if stats is not None and not (
            isinstance(stats, dict)
            and all(
                isinstance(stats.get(k), list)
                and len(stats[k]) <= MAX_DIM
                and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in stats[k])
                for k in ("mean", "std")
            )
        ):
            raise _meta_error(path, "text_tuning.standardize", stats, "expected lists 'mean' and 'std' of numbers")
    if info.get("task", "regression") not in ("regression", "classification"):
        raise _meta_error(path, "task", info.get("task"), "expected regression or classification")
    if info.get("metric_set", "mosi") not in ("mosi", "mosei", "sims", "iemocap"):
        raise _meta_error(path, "metric_set", info.get("metric_set"), "expected mosi, mosei, sims or iemocap")
    _feature_spec(info.get("feature_spec"), path)  # its nested objects (options, modalities, extraction, classes)


def checkpoint_feature_spec(meta: CheckpointMeta, path: str | Path = "") -> FeatureSpec:
    """The feature spec a checkpoint's metadata records (the empty spec when it records none); a wrong
    nested object is one line naming the file and key, e.g. ``feature_spec.options``."""
    return _feature_spec(meta.feature_spec, path)


def _feature_spec(recorded: Any, path: str | Path) -> FeatureSpec:
    return FeatureSpec.from_json(recorded, error=lambda key, value, want: _meta_error(path, key, value, want))


def _model_config(model: str, model_config: dict[str, Any], path: str | Path) -> Any:
    """The model's config from the metadata, coerced and range-checked (see config.check_ranges)."""
    try:
        where = f"checkpoint {path}: metadata key 'model_config'"
        return update_dataclass(build_config(model), model_config, "model", where)
    except MsalignError as error:
        text = str(error)
        raise MsalignError(text if text.startswith(where) else f"{where}: {text}") from None


def _check_model_size(info: CheckpointMeta, config: Any, path: str | Path) -> None:
    """Count the parameters the metadata describes on torch's meta device (no memory) and refuse a
    model larger than the weights the file holds or than the allocation limit."""
    try:
        with torch.device("meta"):
            shell = create_model(info.model, dims=info.dims, output_dim=info.output_dim, config=config)
    except MsalignError as error:
        raise MsalignError(f"checkpoint {path}: {error}") from None
    except Exception:  # a model that cannot be built on the meta device is sized by the real build
        return
    nbytes = sum(t.numel() * t.element_size() for t in [*shell.parameters(), *shell.buffers()])
    check_alloc(nbytes, f"checkpoint {path}: metadata (model_config, dims)")
    size = Path(path).stat().st_size
    if nbytes > 4 * size + (1 << 20):  # far more than the file: a near miss is load_state_dict's to name
        raise MsalignError(
            f"checkpoint {path}: metadata describes a model of {nbytes:,} bytes of weights, "
            f"the file holds {size:,} bytes (tampered metadata or another model's file)"
        )


def load_checkpoint(path: str | Path, expect_model: str | None = None) -> tuple[MSAModel, CheckpointMeta]:
    """Rebuilds the model and loads its weights. ``expect_model`` refuses another model's file."""
    path = checkpoint_file(path)
    info = read_checkpoint_meta(path)
    if expect_model is not None and info.model != expect_model:
        raise MsalignError(f"checkpoint {path}: holds model {info.model!r}, not {expect_model!r}")
    config = _model_config(info.model, info.model_config, path)
    _check_model_size(info, config, path)
    model = create_model(info.model, dims=info.dims, output_dim=info.output_dim, config=config)
    if info.text_tuning:  # a fine-tuned text encoder travels inside the checkpoint
        rebuild_text_encoder(model, info.text_tuning)
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError) as error:
        raise MsalignError(f"checkpoint {path}: cannot read weights ({str(error).splitlines()[0]})") from None
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as error:  # a tensor of another shape: another model or config
        detail = next((line.strip() for line in str(error).splitlines()[1:] if line.strip()), str(error))
        raise MsalignError(f"checkpoint {path}: weights do not fit model {info.model} ({detail})") from None
    if missing or unexpected:
        raise MsalignError(
            f"checkpoint {path}: weights do not fit model {info.model} "
            f"(missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    model.eval()
    return model, info


def check_feature_spec(info: CheckpointMeta, dataset_spec: FeatureSpec, dims: dict[str, int], path: str | Path) -> None:
    """Refuse scoring data whose features were made differently from the training data (``info``: the
    checkpoint's metadata)."""
    for modality, dim in info.dims.items():
        if modality not in dims:
            raise MsalignError(f"checkpoint {path}: model needs modality {modality!r}, which the data lacks")
        if dims[modality] != dim:
            raise MsalignError(
                f"checkpoint {path}: trained on {modality} features of dim {dim}, the data has {dims[modality]}"
            )
    # where the data came from and how much of it do not change the features; the describer is
    # pinned by the descriptions file's sha256 in modalities.text.descriptions
    differs = checkpoint_feature_spec(info, path).difference(
        dataset_spec, ignore=("source", "n_train", "n_valid", "n_test", "describer")
    )
    if differs is not None:
        key, trained, data = differs
        raise MsalignError(f"checkpoint {path}: trained on feature spec {key}={trained!r}, the data has {key}={data!r}")

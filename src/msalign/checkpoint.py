"""Checkpoints: safetensors weights with the run's description in the file's JSON metadata.

Nothing in a checkpoint is executable (no pickle): the weights are safetensors, and the header
metadata ``msalign`` holds JSON with the model name, its config, the dataset's feature spec,
dims, task and metrics. Loading rebuilds the model from the registry and refuses a checkpoint
whose feature spec differs from the data it is asked to score.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file

from msalign.atomic import atomic_path
from msalign.errors import MsalignError
from msalign.models import MSAModel, build_config, create_model

FORMAT_VERSION = 1


def save_checkpoint(path: str | Path, model: MSAModel, meta: dict[str, Any]) -> None:
    info = {"format": FORMAT_VERSION, "model": model.name, "dims": model.dims, "output_dim": model.output_dim, **meta}
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(path) as temporary:
        save_file(state, str(temporary), metadata={"msalign": json.dumps(info)})


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


def read_checkpoint_meta(path: str | Path) -> dict[str, Any]:
    path = checkpoint_file(path)
    if not path.is_file():
        raise MsalignError(f"checkpoint {path}: no such file")
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
    for key in ("model", "model_config", "dims", "output_dim"):
        if key not in info:
            raise MsalignError(f"checkpoint {path}: metadata lacks {key!r}")
    return info


def load_checkpoint(path: str | Path, expect_model: str | None = None) -> tuple[MSAModel, dict[str, Any]]:
    """Rebuilds the model and loads its weights. ``expect_model`` refuses another model's file."""
    path = checkpoint_file(path)
    info = read_checkpoint_meta(path)
    if expect_model is not None and info["model"] != expect_model:
        raise MsalignError(f"checkpoint {path}: holds model {info['model']!r}, not {expect_model!r}")
    config = build_config(info["model"], info["model_config"])
    model = create_model(info["model"], dims=info["dims"], output_dim=info["output_dim"], config=config)
    if info.get("text_tuning"):  # a fine-tuned text encoder travels inside the checkpoint
        from msalign.models.text_tuning import rebuild_text_encoder

        rebuild_text_encoder(model, info["text_tuning"])
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError) as error:
        raise MsalignError(f"checkpoint {path}: cannot read weights ({str(error).splitlines()[0]})") from None
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as error:  # a tensor of another shape: another model or config
        detail = next((line.strip() for line in str(error).splitlines()[1:] if line.strip()), str(error))
        raise MsalignError(f"checkpoint {path}: weights do not fit model {info['model']} ({detail})") from None
    if missing or unexpected:
        raise MsalignError(
            f"checkpoint {path}: weights do not fit model {info['model']} "
            f"(missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    model.eval()
    return model, info


def check_feature_spec(info: dict[str, Any], dataset_spec: dict[str, Any], dims: dict[str, int], path: str | Path) -> None:
    """Refuse scoring data whose features were made differently from the training data."""
    for modality, dim in info["dims"].items():
        if modality not in dims:
            raise MsalignError(f"checkpoint {path}: model needs modality {modality!r}, which the data lacks")
        if dims[modality] != dim:
            raise MsalignError(
                f"checkpoint {path}: trained on {modality} features of dim {dim}, the data has {dims[modality]}"
            )
    trained = info.get("feature_spec", {})
    for key in sorted(set(trained) | set(dataset_spec)):
        if key in ("source", "n_train", "n_valid", "n_test", "describer"):
            # where the data came from and how much of it do not change the features; the describer
            # is pinned by the descriptions file's sha256 in modalities.text.descriptions
            continue
        if trained.get(key) != dataset_spec.get(key):
            raise MsalignError(
                f"checkpoint {path}: trained on feature spec {key}={trained.get(key)!r}, "
                f"the data has {key}={dataset_spec.get(key)!r}"
            )

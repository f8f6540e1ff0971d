"""The checkpoint metadata's typed form: CheckpointMeta writes exactly the JSON it reads back."""

from __future__ import annotations

import json

import pytest
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from msalign.models import create_model
from msalign.training.checkpoint import CheckpointMeta, load_checkpoint, read_checkpoint_meta, save_checkpoint


def _header(path) -> str:
    with safe_open(str(path), framework="pt") as handle:
        return handle.metadata()["msalign"]


def test_metadata_round_trip_keeps_key_order_and_unknown_keys(tmp_path):
    model = create_model("text_only", dims={"text": 6}, output_dim=1)
    meta = CheckpointMeta.describe(model, {}, feature_spec={}, task="regression", seed=3)
    path = tmp_path / "a.safetensors"
    save_checkpoint(path, model, meta)
    written = json.loads(_header(path))
    assert list(written) == ["format", "model", "dims", "output_dim", "model_config", "feature_spec", "task", "seed"]
    read = read_checkpoint_meta(path)
    assert read == meta and json.dumps(read.to_json()) == _header(path)
    # a key this version does not know survives reading and writing, after the known ones
    newer = tmp_path / "b.safetensors"
    save_file(load_file(str(path)), str(newer), metadata={"msalign": json.dumps({**written, "future": [1]})})
    _, loaded = load_checkpoint(newer)
    assert loaded.extra == {"future": [1]} and loaded.to_json() == {**written, "future": [1]}


def test_save_refuses_metadata_of_another_model(tmp_path):
    model = create_model("text_only", dims={"text": 6}, output_dim=1)
    other = create_model("text_only", dims={"text": 7}, output_dim=1)
    with pytest.raises(ValueError):
        save_checkpoint(tmp_path / "c.safetensors", model, CheckpointMeta.describe(other, {}))

"""Bounded fuzzing of hostile inputs (issue 17), in-process: the pickle interpreter (mutated numpy
pickles of every protocol and opcode soups), config YAML and checkpoint metadata. Every input either
loads or raises MsalignError with one line; nothing else escapes (a crash by signal kills the run,
a hang trips the per-example time bound). label.csv and .npz mutations: tests/test_inputs_damaged_files.py."""

from __future__ import annotations

import json
import pickle
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from msalign.data import safe_pickle
from msalign.errors import MsalignError
from support import mutate, mutations

FUZZ = settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture],
)
SECONDS = 5.0  # per example: far above a real load of these few-KB inputs; a hang would exceed it


def refused_or_loaded(fn, *args):
    started = time.monotonic()
    try:
        value = fn(*args)
    except MsalignError as error:
        assert "\n" not in str(error) and len(str(error)) < 2000, str(error)[:300]
        value = None
    assert time.monotonic() - started < SECONDS
    return value


_VALUE = {
    "train": {
        "text": np.arange(12, dtype=np.float32).reshape(1, 3, 4),
        "id": list(np.array(["a_1", "b_2"])),
        "raw_text": np.array(["hi", "yo"], dtype=object),
        "labels": np.array([1.5, -2.0]),
        "meta": [1, 2.5, None, True, "s", b"b", (1, 2), {3}, frozenset({4})],
    }
}
PICKLES = {p: pickle.dumps(_VALUE, protocol=p) for p in (0, 2, 3, 5)}


@FUZZ
@given(protocol=st.sampled_from(sorted(PICKLES)), edits=mutations(400), data=st.data())
def test_mutated_pickles_of_every_protocol(protocol, edits, data):
    blob = PICKLES[protocol]
    refused_or_loaded(safe_pickle.loads, mutate(blob, [(e[0], e[1] * len(blob) // 400, *e[2:]) for e in edits]))


# opcodes and short arguments, assembled at random: stack and memo misuse, marks, huge lengths
_SNIPPETS = [
    b"(",
    b".",
    b"0",
    b"1",
    b"2",
    b"N",
    b"\x88",
    b"\x89",
    b")",
    b"]",
    b"}",
    b"\x8f",
    b"t",
    b"l",
    b"d",
    b"a",
    b"e",
    b"s",
    b"u",
    b"\x85",
    b"\x86",
    b"\x87",
    b"\x90",
    b"\x91",
    b"R",
    b"b",
    b"\x81",
    b"\x93",
    b"\x94",
    b"h\x00",
    b"h\x01",
    b"q\x00",
    b"q\x01",
    b"j\xff\xff\xff\xff",
    b"K\x05",
    b"J\xff\xff\xff\x7f",
    b"\x8a\x01\x05",
    b"\x8b\xff\xff\xff\x7f",
    b"X\x01\x00\x00\x00a",
    b"\x8c\x01b",
    b"C\x02ab",
    b"\x8e\xff\xff\xff\xff\xff\xff\xff\x7f",
    b"\x96\x03\x00\x00\x00\x00\x00\x00\x00abc",
    b"G" + bytes(8),
    b"cnumpy\ndtype\n",
    b"cnumpy\nndarray\n",
    b"cnumpy.core.multiarray\n_reconstruct\n",
    b"cnumpy._core.multiarray\nscalar\n",
    b"cbuiltins\nbytearray\n",
    b"cbuiltins\nset\n",
    b"cos\nsystem\n",
    b"\x8c\x02f4",
    b"\x8c\x02O8",
    b"\x8c\x01<",
    b"\x8c\x01|",
    b"I01\n",
    b"F1.5\n",
    b"S'x'\n",
    b"Vab\n",
    b"p0\n",
    b"g0\n",
    b"\x95" + bytes(8),
    b"\x97",
    b"\x98",
]


@FUZZ
@given(ops=st.lists(st.sampled_from(_SNIPPETS), min_size=1, max_size=60))
def test_opcode_soups(ops):
    refused_or_loaded(safe_pickle.loads, b"\x80\x04" + b"".join(ops) + b".")


# ---- config YAML: text edits of a valid file, including anchors, aliases, merges and tags

_CONFIG = "model:\n  width: 32\n  dropout: 0.2\ntrain:\n  lr: 1.0e-3\n  batch_size: 8\n  epochs: 2\n"
_YAML_BITS = [
    "&a ",
    "*a",
    "<<: *a",
    "!!python/object:os.system ",
    "!!binary ",
    "[",
    "]",
    "{",
    "}",
    ": ",
    "- ",
    "\n",
    "  ",
    "'",
    '"',
    "1e999",
    "-1",
    "nan",
    ".inf",
    "~",
    "?",
    "%YAML 1.1\n",
    "---\n",
    "\t",
    "\\x00",
    "é",
]


@FUZZ
@given(
    edits=st.lists(
        st.tuples(st.integers(0, len(_CONFIG)), st.sampled_from(_YAML_BITS), st.integers(0, 3)), min_size=1, max_size=6
    )
)
def test_mutated_config_yaml(edits, tmp_path_factory):
    from msalign.config import resolve_config
    from msalign.models import build_config

    text = _CONFIG
    for pos, bit, drop in edits:
        text = text[:pos] + bit + text[pos + drop :]
    path = tmp_path_factory.mktemp("yaml") / "c.yaml"
    path.write_text(text)
    refused_or_loaded(resolve_config, "late_fusion", build_config("late_fusion"), (), path, [])


# ---- checkpoint metadata: any JSON value in any field

_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> tuple[Path, dict, dict]:
    from safetensors.torch import load_file

    from msalign.models import create_model
    from msalign.training.checkpoint import CheckpointMeta, read_checkpoint_meta, save_checkpoint

    path = tmp_path_factory.mktemp("ckpt") / "good.safetensors"
    model = create_model("text_only", dims={"text": 6}, output_dim=1)
    save_checkpoint(
        path,
        model,
        CheckpointMeta.describe(model, {"width": 8, "heads": 2, "head_hidden": 8}, feature_spec={"options": {}}),
    )
    return path, read_checkpoint_meta(path).to_json(), load_file(str(path))


@FUZZ
@given(
    key=st.sampled_from(
        [
            "model",
            "dims",
            "output_dim",
            "model_config",
            "feature_spec",
            "task",
            "metric_set",
            "text_tuning",
            "model_config.width",
            "model_config.layers",
            "model_config.dropout",
            "model_config.heads",
            "model_config.head_hidden",
            "dims.text",
            "feature_spec.options",
            "feature_spec.modalities",
            "feature_spec.classes",
        ]
    ),
    value=_JSON,
)
def test_tampered_checkpoint_metadata(key, value, checkpoint, tmp_path_factory):
    from safetensors.torch import save_file

    from msalign.training.checkpoint import load_checkpoint

    _, info, state = checkpoint
    meta = json.loads(json.dumps(info))
    target, *rest = key.split(".")
    if rest:
        if not isinstance(meta.get(target), dict):
            meta[target] = {}
        meta[target][rest[0]] = value
    else:
        meta[target] = value
    try:
        text = json.dumps(meta, allow_nan=True)
    except ValueError:
        return
    tampered = tmp_path_factory.mktemp("t") / "t.safetensors"
    save_file(state, str(tampered), metadata={"msalign": text})
    refused_or_loaded(load_checkpoint, tampered)

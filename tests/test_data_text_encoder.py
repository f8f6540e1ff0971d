"""TextEncoder: token-level MiniLM features, deterministic, cached on disk, resumable."""

from __future__ import annotations

import re

import numpy as np
import pytest

from msalign.data.text_encoder import TextEncoder
from msalign.errors import MsalignError

TEXTS = ["hello world", "anyhow it was really good", "", "i mean they did a little bit of it", "hello world"]


@pytest.fixture(scope="module")
def loaded() -> TextEncoder:
    enc = TextEncoder("minilm", cache=False)
    enc._load()
    return enc


def make(loaded: TextEncoder, **kw) -> TextEncoder:
    """A new encoder sharing the already-loaded model (loading it again costs seconds)."""
    enc = TextEncoder("minilm", **kw)
    enc._model, enc._tokenizer = loaded._model, loaded._tokenizer
    return enc


@pytest.fixture
def count_batches(monkeypatch) -> list[int]:
    """Records the size of every batch the model runs on."""
    calls: list[int] = []
    original = TextEncoder._encode_batch

    def counting(self, texts):
        calls.append(len(texts))
        return original(self, texts)

    monkeypatch.setattr(TextEncoder, "_encode_batch", counting)
    return calls


def test_shapes_lengths_padding(loaded):
    x, n = loaded.encode(TEXTS)
    assert x.shape == (5, 50, 384) and x.dtype == np.float32 and loaded.dim == 384
    assert n.dtype == np.int64
    expected = [len(loaded._tokenizer(t)["input_ids"]) for t in TEXTS]
    assert n.tolist() == expected and n[0] == 4 and n[2] == 2  # [CLS] ... [SEP] counted
    for i, length in enumerate(n):
        assert not x[i, length:].any() and np.abs(x[i, :length]).sum(axis=1).min() > 0
    np.testing.assert_array_equal(x[0], x[4])
    assert loaded.device == "cpu"
    assert "minilm" in loaded.identity and "sha256:" in loaded.identity


def test_truncation(loaded, tmp_path):
    enc = make(loaded, max_length=8, cache_dir=tmp_path)
    x, n = enc.encode(["one two three four five six seven eight nine ten", "hi"])
    assert x.shape == (2, 8, 384) and n.tolist() == [8, 3]


def test_deterministic_and_batch_independent(loaded):
    a, na = make(loaded, cache=False).encode(TEXTS)
    b, _ = make(loaded, cache=False).encode(TEXTS)
    np.testing.assert_array_equal(a, b)
    c, nc = make(loaded, cache=False, batch_size=1).encode(TEXTS)
    np.testing.assert_array_equal(na, nc)
    np.testing.assert_allclose(a, c, atol=1e-4)


def test_cache_hit_does_not_run_model(loaded, tmp_path, count_batches):
    first, n1 = make(loaded, cache_dir=tmp_path).encode(TEXTS)
    assert count_batches == [4]  # duplicates encoded once
    second, n2 = make(loaded, cache_dir=tmp_path).encode(list(reversed(TEXTS)))
    assert count_batches == [4]
    np.testing.assert_array_equal(second, first[::-1])
    np.testing.assert_array_equal(n2, n1[::-1])
    make(loaded, cache_dir=tmp_path).encode([*TEXTS, "something new"])
    assert count_batches == [4, 1]
    make(loaded, cache_dir=tmp_path, max_length=20).encode(TEXTS[:1])  # other max_length: other cache
    assert count_batches == [4, 1, 1]


def test_cache_hit_needs_no_model_load(loaded, tmp_path, monkeypatch):
    make(loaded, cache_dir=tmp_path).encode(TEXTS)
    fresh = TextEncoder("minilm", cache_dir=tmp_path)
    monkeypatch.setattr(TextEncoder, "_load", lambda self: pytest.fail("model loaded on a cache hit"))
    x, _ = fresh.encode(TEXTS)
    assert x.shape == (5, 50, 384)


def test_interrupted_run_keeps_finished_batches(loaded, tmp_path, monkeypatch):
    texts = [f"sentence number {i} is {'very ' * i}good" for i in range(7)]
    original = TextEncoder._encode_batch
    calls: list[int] = []

    def flaky(self, batch):
        calls.append(len(batch))
        if len(calls) == 3:
            raise KeyboardInterrupt
        return original(self, batch)

    monkeypatch.setattr(TextEncoder, "_encode_batch", flaky)
    with pytest.raises(KeyboardInterrupt):
        make(loaded, cache_dir=tmp_path, batch_size=2).encode(texts)
    enc = make(loaded, cache_dir=tmp_path, batch_size=2)
    assert len(list(enc.shard_dir.glob("*.npz"))) == 2
    assert not list(enc.shard_dir.glob("*.tmp"))
    calls.clear()
    monkeypatch.setattr(TextEncoder, "_encode_batch", lambda self, b: (calls.append(len(b)), original(self, b))[1])
    x, n = enc.encode(texts)
    assert calls == [2, 1]  # only the 3 texts not finished before the interruption
    ref, nref = make(loaded, cache=False).encode(texts)
    np.testing.assert_array_equal(n, nref)
    np.testing.assert_allclose(x, ref, atol=1e-4)


def test_damaged_shard_is_a_cache_miss(loaded, tmp_path, count_batches):
    enc = make(loaded, cache_dir=tmp_path)
    enc.encode(TEXTS[:2])
    for shard in enc.shard_dir.glob("*.npz"):
        shard.write_bytes(b"garbage")
    make(loaded, cache_dir=tmp_path).encode(TEXTS[:2])
    assert count_batches == [2, 2]


def test_default_cache_dir_from_env(monkeypatch, tmp_path):
    monkeypatch.setenv("MSALIGN_CACHE", str(tmp_path / "c"))
    assert TextEncoder("minilm").cache_dir == tmp_path / "c"


def test_encoder_name_errors(tmp_path):
    with pytest.raises(MsalignError, match="no such folder"):
        TextEncoder(str(tmp_path / "missing"))
    with pytest.raises(MsalignError, match=re.escape("no config.json")):
        TextEncoder(str(tmp_path))
    with pytest.raises(MsalignError, match=r"not in the Hugging Face cache .*never downloads"):
        TextEncoder("no-such-org-xyz/no-such-model-xyz")
    with pytest.raises(MsalignError, match="max_length"):
        TextEncoder("minilm", max_length=1)


def test_local_folder_is_accepted(loaded):
    enc = TextEncoder(str(loaded.path), cache=False)
    assert enc.dim == 384 and enc.identity.split()[-1] == loaded.identity.split()[-1]

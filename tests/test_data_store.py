"""The on-disk feature store: exact round trips through DiskArray, the same training result as in
memory, cheap pickling into worker processes, msalign convert, and one-line errors for damaged
stores. Loading reads no feature bytes; the value checks ran when the store was written."""

from __future__ import annotations

import json
import multiprocessing
import operator
import pickle
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from msalign.cli import main
from msalign.config import resolve_config
from msalign.data import load_dataset
from msalign.data.mmsa_pickle import load_mmsa_pickle
from msalign.data.store import (
    MANIFEST,
    DiskArray,
    StoreManifest,
    StoreWriter,
    load_store,
    read_manifest,
    write_store,
)
from msalign.data.synthetic import generate_synthetic
from msalign.errors import MsalignError
from msalign.evaluation.ablation import modality_contribution, train_mean
from msalign.models import build_config, create_model
from msalign.training import RunSpec, train
from msalign.training.checkpoint import CheckpointMeta, check_feature_spec
from msalign.training.data import SplitIndex, collate_rows
from support import error, mmsa_data, write_pickle

SPEC = "synthetic:seed=3,n_train=48,n_valid=20,n_test=24"


@pytest.fixture(scope="module")
def memory():
    return load_dataset(SPEC)


@pytest.fixture(scope="module")
def store_dir(memory, tmp_path_factory) -> Path:
    # 5 rows per chunk: many appends per split, the last one short
    return write_store(memory, tmp_path_factory.mktemp("stores") / "synthetic-store", chunk_rows=5)


@pytest.fixture()
def copy_store(store_dir, tmp_path) -> Path:
    import shutil

    return Path(shutil.copytree(store_dir, tmp_path / "copy"))


def test_round_trip_is_exact_for_every_index_kind(memory, store_dir):
    disk = load_dataset(store_dir)
    assert disk.name == memory.name and disk.metric_set == memory.metric_set and disk.task == memory.task
    assert disk.feature_spec == memory.feature_spec  # the source's spec: checkpoints move both ways
    assert disk.dims == memory.dims and disk.max_lengths == memory.max_lengths
    rng = np.random.default_rng(0)
    for name in ("train", "valid", "test"):
        a, b = memory.split(name), disk.split(name)
        assert a.ids == b.ids and a.raw_text == b.raw_text
        np.testing.assert_array_equal(a.labels, b.labels)
        for m in a.modalities:
            x, y = a.features[m], b.features[m]
            assert (
                isinstance(y, DiskArray)
                and y.shape == x.shape
                and y.dtype == x.dtype
                and y.ndim == 3
                and len(y) == len(x)
            )
            np.testing.assert_array_equal(a.lengths[m], b.lengths[m])
            n, length = x.shape[:2]
            sorted_rows = np.sort(rng.choice(n, 9, replace=False))
            cases = [
                sorted_rows,
                rng.permutation(n)[:11],
                rng.integers(0, n, 15),  # sorted, unsorted, duplicates
                np.array([n - 1, 0, n - 1, 0]),
                np.arange(n),
                np.array([-1, -n]),
                [2, 1],
                np.array([], dtype=np.int64),
            ]
            for rows in cases:
                for longest in (1, int(rng.integers(1, length + 1)), length):
                    np.testing.assert_array_equal(y[rows, :longest], x[rows, :longest])
                np.testing.assert_array_equal(y[rows], x[rows])
            for key in (
                slice(3, 11),
                slice(None),
                slice(n - 2, n + 5),
                slice(None, None, 3),
                slice(5, 1, -1),
                0,
                n - 1,
                -2,
                (4, 2),
                (slice(1, 6), slice(2, 5)),
                (slice(None), slice(None), slice(1, 3)),
                (..., 0),
                (np.arange(n) % 2 == 0,),
                (sorted_rows, slice(None, None, 2)),
            ):
                np.testing.assert_array_equal(y[key], x[key])
            np.testing.assert_array_equal(np.asarray(y), x)
            np.testing.assert_array_equal(np.load(y.path, mmap_mode="r"), x)  # plain .npy for everyone
            with pytest.raises(IndexError):
                y[np.array([n])]


def test_collate_reads_the_same_batch(memory, store_dir):
    disk = load_dataset(store_dir)
    rows = np.array([7, 3, 3, 30, 0])
    a = collate_rows(memory.split("train"), memory.modalities, rows)
    b = collate_rows(disk.split("train"), disk.modalities, rows)
    for m in memory.modalities:
        assert torch.equal(a["features"][m], b["features"][m]) and torch.equal(a["masks"][m], b["masks"][m])
    assert torch.equal(a["labels"], b["labels"])


def test_training_on_the_store_equals_training_in_memory(memory, store_dir, tmp_path):
    disk = load_dataset(store_dir)
    results = []
    for name, data in (("memory", memory), ("store", disk)):
        model_config, train_config = resolve_config(
            "late_fusion",
            build_config("late_fusion"),
            (data.name, data.metric_set),
            None,
            ["epochs=1", "batch_size=16", "threads=1", "width=16"],
        )
        results.append(
            train(
                RunSpec("late_fusion", model_config, train_config, seeds=[7], out_dir=tmp_path / name),
                data,
                progress=False,
                log=lambda line: None,
            )
        )
    assert results[0].per_seed[0].test == results[1].per_seed[0].test
    assert results[0].per_seed[0].valid == results[1].per_seed[0].valid


def test_modality_ablation_reads_the_store_lazily(memory, store_dir):
    disk = load_dataset(store_dir)
    for m in memory.modalities:
        np.testing.assert_allclose(
            train_mean(disk.split("train"), m), train_mean(memory.split("train"), m), rtol=1e-5, atol=1e-6
        )
    torch.manual_seed(0)
    model = create_model("late_fusion", dims=memory.dims, output_dim=1, config=build_config("late_fusion"))
    model.eval()
    a = modality_contribution(model, memory, "test", repeats=2)
    b = modality_contribution(model, disk, "test", repeats=2)
    assert a.keys() == b.keys()
    for key in a:
        for metric in a[key]:
            assert a[key][metric] == pytest.approx(b[key][metric], rel=1e-5, abs=1e-6), (key, metric)


def test_disk_array_pickles_cheaply_and_reads_in_workers(memory, store_dir):
    disk = load_dataset(store_dir)
    x = disk.split("train").features["audio"]
    x[0]  # the parent opens its descriptor first; children must open their own
    blob = pickle.dumps(x)
    assert len(blob) < 400 and b"\x00" * 64 not in blob  # path, offset and shape, no data
    clone = pickle.loads(blob)
    np.testing.assert_array_equal(clone[[5, 1]], memory.split("train").features["audio"][[5, 1]])
    # a forked DataLoader worker receives the split (with its open DiskArrays) and reads batches
    index = SplitIndex(disk.split("train"), disk.modalities)
    loader = DataLoader(
        index,
        batch_size=16,
        collate_fn=index.collate,
        num_workers=1,
        multiprocessing_context=multiprocessing.get_context("fork"),
    )
    got = torch.cat([batch["features"]["text"][:, :5] for batch in loader])
    expected = torch.from_numpy(memory.split("train").features["text"][:, :5])
    assert torch.equal(got, expected)
    # a spawned process (process pools, Ray) unpickles it and reads
    rows = np.array([9, 2, 9])
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        remote = pool.submit(operator.getitem, x, (rows, slice(0, 7))).result(timeout=120)
    np.testing.assert_array_equal(remote, memory.split("train").features["audio"][rows, :7])


def test_loading_reads_no_feature_bytes(store_dir, monkeypatch):
    def refuse(self, view, position):
        raise AssertionError(f"feature bytes read from {self.path}")

    monkeypatch.setattr(DiskArray, "_read_into", refuse)
    ds = load_store(store_dir)  # the manifest's validation record: metadata checks only
    assert len(ds.split("train")) == 48
    with pytest.raises(AssertionError, match="feature bytes read"):
        load_store(store_dir, verify=True)


def test_bad_values_behind_a_validated_manifest_are_found_by_verify(copy_store):
    path = copy_store / "train" / "audio.npy"
    x = np.load(path, mmap_mode="r")
    offset = path.stat().st_size - x.nbytes
    row = 3
    with open(path, "r+b") as f:  # same size, NaN payload in row 3
        f.seek(offset + row * x.shape[1] * x.shape[2] * 4)
        f.write(np.full(x.shape[2], np.nan, dtype="<f4").tobytes())
    del x
    ds = load_store(copy_store)  # the record says validated: no scan
    assert np.isnan(ds.split("train").features["audio"][row]).any()
    msg = error(load_store, copy_store, verify=True)
    assert msg == f"{copy_store}: split 'train', key 'audio': NaN at row {row} (shape (48, 40, 8))"
    manifest = json.loads((copy_store / MANIFEST).read_text())
    del manifest["validated"]  # a store without the record is always scanned
    (copy_store / MANIFEST).write_text(json.dumps(manifest))
    assert "NaN at row 3" in error(load_dataset, copy_store)


def test_damaged_stores_give_one_line_errors_naming_the_file(store_dir, tmp_path):
    import shutil

    def fresh(name: str) -> Path:
        return Path(shutil.copytree(store_dir, tmp_path / name))

    s = fresh("truncated")
    audio = s / "train" / "audio.npy"
    with open(audio, "r+b") as f:
        f.truncate(audio.stat().st_size - 100)
    assert error(load_dataset, s) == (
        f"{audio}: split 'train', key 'audio': truncated: "
        f"{48 * 40 * 8 * 4 - 100} of {48 * 40 * 8 * 4} data bytes (shape (48, 40, 8))"
    )
    s = fresh("nokey")
    manifest = json.loads((s / MANIFEST).read_text())
    del manifest["splits"]
    (s / MANIFEST).write_text(json.dumps(manifest))
    assert error(load_dataset, s).startswith(f"{s / MANIFEST}: key 'splits': missing")
    s = fresh("badjson")
    (s / MANIFEST).write_text("{not json")
    assert error(load_dataset, s).startswith(f"{s / MANIFEST}: not valid JSON")
    s = fresh("shape")  # a well-formed .npy of the wrong shape
    np.save(s / "valid" / "vision.npy", np.zeros((20, 31, 12), dtype=np.float32))
    assert error(load_dataset, s) == (
        f"{s / 'valid' / 'vision.npy'}: split 'valid', key 'vision': shape (20, 31, 12), "
        f"but {s / MANIFEST} says (20, 30, 12)"
    )
    s = fresh("dtype")
    np.save(s / "valid" / "vision.npy", np.zeros((20, 30, 12), dtype=np.float64))
    assert "key 'vision': expected C-order float32 (N, L, D), got float64" in error(load_dataset, s)
    s = fresh("lengths")
    np.save(s / "test" / "text_lengths.npy", np.ones(23, dtype=np.int64))
    assert (
        error(load_dataset, s)
        == f"{s / 'test' / 'text_lengths.npy'}: split 'test', key 'text_lengths': expected shape (24,), got shape (23,)"
    )
    s = fresh("length-range")
    lengths = np.load(s / "test" / "text_lengths.npy")
    lengths[5] = 99
    np.save(s / "test" / "text_lengths.npy", lengths)
    assert "split 'test', key 'text_lengths': length 99 at row 5 outside 1..20" in error(load_dataset, s)
    s = fresh("missing")
    (s / "train" / "ids.npy").unlink()
    assert error(load_dataset, s) == f"{s / 'train' / 'ids.npy'}: split 'train', key 'id': missing file"
    s = fresh("header")
    (s / "train" / "vision.npy").write_bytes(b"\x93NUMPY\x01\x00garbage")
    assert error(load_dataset, s).startswith(
        f"{s / 'train' / 'vision.npy'}: split 'train', key 'vision': not a readable .npy file"
    )
    s = fresh("newer")
    manifest = json.loads((s / MANIFEST).read_text())
    manifest["version"] = 99
    (s / MANIFEST).write_text(json.dumps(manifest))
    assert "newer than this msalign reads" in error(load_dataset, s)


def test_a_file_replaced_after_loading_is_an_error_not_garbage(copy_store):
    ds = load_store(copy_store)
    x = ds.split("train").features["text"]
    with open(x.path, "r+b") as f:
        f.truncate(x.offset + 10)
    assert "changed on disk" in error(operator.getitem, x, 0)


def _chunk(n=4, start=0, **over):
    rng = np.random.default_rng(start)
    lengths = {"text": np.full(n, 3), "audio": rng.integers(1, 6, n)}
    features = {
        "text": rng.normal(size=(n, 3, 2)).astype(np.float32),
        "audio": rng.normal(size=(n, 5, 4)).astype(np.float32),
    }
    features["audio"][np.arange(5)[None] >= lengths["audio"][:, None]] = 0
    chunk = {
        "features": features,
        "lengths": lengths,
        "labels": rng.uniform(-3, 3, n),
        "ids": [f"c{start + i}" for i in range(n)],
    }
    chunk.update(over)
    return chunk


def _writer(folder, **kw):
    return StoreWriter(folder, modalities={"text": (3, 2), "audio": (5, 4)}, name="made", metric_set="mosei", **kw)


def test_streaming_writer_builds_a_store_chunk_by_chunk(tmp_path):
    out = tmp_path / "made"
    with _writer(out, feature_spec={"kind": "producer", "v": 1}) as writer:
        for split, starts in (("test", [100]), ("train", [0, 4, 8]), ("valid", [50])):
            for start in starts:
                c = _chunk(start=start)
                if start == 8:  # a chunk shorter in time is padded to max_len
                    c["features"]["audio"] = c["features"]["audio"][:, :3]
                    c["lengths"]["audio"] = np.minimum(c["lengths"]["audio"], 3)
                    c["features"]["audio"][np.arange(3)[None] >= c["lengths"]["audio"][:, None]] = 0
                writer.append(split, c["features"], c["lengths"], c["labels"], c["ids"])
        assert not out.exists()  # nothing visible before finish
        writer.finish()
    ds = load_dataset(out)
    assert ds.describe() == "made: train 12, valid 4, test 4; text 3x2, audio 5x4; task regression; metrics mosei"
    assert ds.feature_spec.to_json() == {"kind": "producer", "v": 1} and ds.split("train").raw_text is None
    assert ds.split("train").ids == [f"c{i}" for i in range(12)]
    c = _chunk(start=4)
    np.testing.assert_array_equal(ds.split("train").features["text"][4:8], c["features"]["text"])
    np.testing.assert_array_equal(ds.split("train").features["audio"][[5, 4]], c["features"]["audio"][[1, 0]])
    assert ds.split("train").features["audio"][8:12, 3:].any() == False  # noqa: E712 (padded to max_len with zeros)
    assert not list(tmp_path.glob(".made.*"))  # no temporary folder left


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda c: c["features"]["audio"].__setitem__((2, 0, 1), np.nan), "split 'train', key 'audio': NaN at row 6"),
        (lambda c: c["features"]["text"].__setitem__((1, 0, 0), np.inf), "split 'train', key 'text': inf at row 5"),
        (
            lambda c: c["lengths"]["audio"].__setitem__(3, 6),
            "split 'train', key 'audio_lengths': length 6 at row 7 outside 1..5",
        ),
        (
            lambda c: c["lengths"]["audio"].__setitem__(0, 0),
            "split 'train', key 'audio_lengths': length 0 at row 4 outside 1..5",
        ),
        (
            lambda c: (c["lengths"]["audio"].__setitem__(0, 1), c["features"]["audio"].__setitem__((0, 4, 0), 1.0)),
            "split 'train', key 'audio': non-zero features beyond length 1 at row 4",
        ),
        (
            lambda c: (c["features"]["text"].__setitem__(2, 0), c["features"]["audio"].__setitem__(2, 0)),
            "split 'train', key 'text/audio': row 6 (id 'c6') is all padding in every modality",
        ),
        (lambda c: c["labels"].__setitem__(1, 3.5), "split 'train', key 'labels': label 3.5 at row 5 outside [-3, 3]"),
        (
            lambda c: c["ids"].__setitem__(2, "c1"),
            "split 'train', key 'id': duplicate id 'c1' at row 6 (already in split 'train')",
        ),
        (
            lambda c: c["features"].__setitem__("audio", np.zeros((4, 5, 3))),
            "split 'train', key 'audio': expected shape (4, <= 5, 4), got shape (4, 5, 3)",
        ),
    ],
)
def test_writer_checks_every_chunk(tmp_path, change, message):
    out = tmp_path / "made"
    with pytest.raises(MsalignError) as e, _writer(out) as writer:
        c = _chunk(start=0)
        writer.append("train", c["features"], c["lengths"], c["labels"], c["ids"])
        c = _chunk(start=4)
        change(c)
        writer.append("train", c["features"], c["lengths"], c["labels"], c["ids"])
    assert str(e.value) == f"{out}: {message}" or str(e.value).startswith(f"{out}: {message}"), str(e.value)
    assert not out.exists() and not list(tmp_path.iterdir())  # the temporary folder is gone too


def test_duplicate_ids_across_splits_and_missing_splits(tmp_path):
    out = tmp_path / "made"
    with _writer(out) as writer:
        c = _chunk()
        writer.append("train", c["features"], c["lengths"], c["labels"], c["ids"])
        assert error(writer.append, "test", c["features"], c["lengths"], c["labels"], c["ids"]) == (
            f"{out}: split 'test', key 'id': duplicate id 'c0' at row 0 (already in split 'train')"
        )
        assert error(writer.finish) == f"{out}: split 'valid': no rows written (a store needs train, valid and test)"
    assert not out.exists() and not list(tmp_path.iterdir())


def test_an_interrupted_conversion_leaves_no_store_that_loads(memory, tmp_path):
    out = tmp_path / "store"
    writer = _writer(out)
    c = _chunk()
    writer.append("train", c["features"], c["lengths"], c["labels"], c["ids"])
    del writer  # as if killed: no finish, no abort
    assert not out.exists()
    partial = list(tmp_path.glob(".store.*.partial"))
    assert len(partial) == 1 and not (partial[0] / MANIFEST).exists()
    assert (
        error(load_dataset, partial[0]) == f"{partial[0]}: no label.csv (a feature directory needs MMSA's label file)"
    )
    assert error(load_store, partial[0]) == f"{partial[0] / MANIFEST}: missing (not a feature store)"


def test_convert_a_pickle_and_checkpoints_move_both_ways(tmp_path, capsys):
    source = write_pickle(tmp_path / "mosi_unaligned_50.pkl", mmsa_data())
    out = tmp_path / "mosi-store"
    assert main(["convert", str(source), str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"wrote feature store {out}: text 8x16, audio 10x5, vision 12x4" in printed
    assert "train        6 rows" in printed and "total       13 rows" in printed and " GB" in printed
    original, disk = load_mmsa_pickle(source), load_dataset(out)
    assert disk.feature_spec == original.feature_spec and disk.name == original.name
    for name in ("train", "valid", "test"):
        for m in original.modalities:
            np.testing.assert_array_equal(disk.split(name).features[m][:], original.split(name).features[m])
        assert disk.split(name).raw_text == original.split(name).raw_text
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["source"] == str(source) and manifest["validated"]["contents"] is True
    # a subset of modalities has the spec the pickle loader gives for that subset
    sub_disk = load_dataset(out, modalities="text,audio")
    sub_pickle = load_mmsa_pickle(source, modalities=["text", "audio"])
    assert sub_disk.modalities == ("text", "audio") and sub_disk.feature_spec == sub_pickle.feature_spec
    info = CheckpointMeta("late_fusion", sub_pickle.dims, 1, {}, feature_spec=sub_pickle.feature_spec.to_json())
    check_feature_spec(info, sub_disk.feature_spec, sub_disk.dims, "model.safetensors")  # no error
    check_feature_spec(
        CheckpointMeta("late_fusion", disk.dims, 1, {}, feature_spec=disk.feature_spec.to_json()),
        original.feature_spec,
        original.dims,
        "m",
    )
    with pytest.raises(MsalignError, match="feature spec modalities"):
        check_feature_spec(info, disk.feature_spec, disk.dims, "m")


def test_convert_synthetic_overwrite_rules(tmp_path, capsys):
    spec = "synthetic:n_train=20,n_valid=8,n_test=8"
    out = tmp_path / "syn"
    assert main(["convert", spec, str(out), "--modalities", "text,audio"]) == 0
    assert load_dataset(out).modalities == ("text", "audio")
    assert main(["convert", spec, str(out)]) == 0  # an existing store is replaced
    assert load_dataset(out).modalities == ("text", "audio", "vision")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    capsys.readouterr()
    assert main(["convert", spec, str(busy)]) == 2
    assert "not empty and not a feature store" in capsys.readouterr().err
    assert main(["convert", spec, str(busy), "--force"]) == 0
    assert (busy / "notes.txt").read_text() == "mine" and len(load_dataset(busy).split("test")) == 8
    (tmp_path / "clash").mkdir()
    (tmp_path / "clash" / "train").mkdir()
    assert main(["convert", spec, str(tmp_path / "clash"), "--force"]) == 2
    assert "has ['train'], which a store would replace" in capsys.readouterr().err
    assert main(["convert", "synthetic:nope=1", str(tmp_path / "x")]) == 2
    assert not (tmp_path / "x").exists()


def test_the_manifest_round_trips_byte_for_byte(store_dir, tmp_path):
    text = (store_dir / MANIFEST).read_text()
    manifest = read_manifest(store_dir)
    assert isinstance(manifest, StoreManifest) and manifest.contents_validated
    assert list(manifest.splits) == ["train", "valid", "test"] and manifest.splits["valid"].rows == 20
    assert json.dumps(manifest.to_json(), indent=1) + "\n" == text
    assert StoreManifest.from_json(json.loads(text), store_dir / MANIFEST) == manifest
    # another producer's spec is written as given (key order and nulls that FeatureSpec.to_json would change)
    given = {"v": 1, "kind": "producer", "text_source": None}
    out = tmp_path / "made"
    with _writer(out, feature_spec=given, source="here") as writer:
        for split, start in (("train", 0), ("valid", 50), ("test", 100)):
            c = _chunk(start=start)
            writer.append(split, c["features"], c["lengths"], c["labels"], c["ids"])
        writer.finish()
    text = (out / MANIFEST).read_text()
    assert list(json.loads(text)["feature_spec"].items()) == list(given.items())
    assert list(json.loads(text)) == [
        "format",
        "version",
        "name",
        "metric_set",
        "task",
        "num_classes",
        "modalities",
        "splits",
        "feature_spec",
        "source",
        "msalign_version",
        "validated",
    ]
    assert json.dumps(read_manifest(out).to_json(), indent=1) + "\n" == text
    assert load_dataset(out).feature_spec.to_json() == {"kind": "producer", "v": 1}


def test_store_options_and_metric_set(store_dir):
    assert load_dataset(store_dir, metric_set="mosei", text_encoder="ignored").metric_set == "mosei"
    assert "does not fit the store's regression labels" in error(load_dataset, store_dir, metric_set="iemocap")
    assert (
        error(load_store, store_dir, modalities=["x"])
        == f"{store_dir}: unknown modality 'x' (choose from ['text', 'audio', 'vision'])"
    )
    assert (
        generate_synthetic(seed=3, n_train=48, n_valid=20, n_test=24).feature_spec
        == load_dataset(store_dir).feature_spec
    )

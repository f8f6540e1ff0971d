"""Every validation error is one MsalignError line naming source, split, key and shape."""

from __future__ import annotations

import numpy as np
import pytest

from msalign.data.types import MultimodalDataset, Split
from msalign.data.validate import (
    infer_metric_set,
    trailing_lengths,
    validate_dataset,
    validate_split,
    zero_padding,
)
from support import error

SRC = "data/foo.pkl"


def make_split(name: str = "train", n: int = 6, seed: int = 0, prefix: str | None = None) -> Split:
    rng = np.random.default_rng(seed)
    feats = {
        "text": rng.normal(size=(n, 7, 4)).astype(np.float32),
        "audio": rng.normal(size=(n, 9, 3)).astype(np.float32),
    }
    lengths = {"text": rng.integers(1, 8, n), "audio": rng.integers(1, 10, n)}
    for m in feats:
        zero_padding(feats[m], lengths[m])
    labels = rng.uniform(-3, 3, n).astype(np.float32)
    ids = [f"{prefix or name}_{i}" for i in range(n)]
    return Split(name=name, features=feats, lengths=lengths, labels=labels, ids=ids)


def make_ds(**kw) -> MultimodalDataset:
    splits = {name: make_split(name, n=6 - i, seed=i) for i, name in enumerate(("train", "valid", "test"))}
    return MultimodalDataset(name="t", splits=splits, source=SRC, **kw)


def test_valid_split_and_dataset_pass():
    validate_split(make_split(), SRC, label_range=(-3, 3))
    validate_dataset(make_ds())


def test_nan_in_features_names_row_key_and_shape():
    s = make_split()
    s.features["audio"][4, 0, 1] = np.nan
    s.lengths["audio"][4] = 5
    assert error(validate_split, s, SRC) == "data/foo.pkl: split 'train', key 'audio': NaN at row 4 (shape (6, 9, 3))"


def test_inf_in_features_and_nan_labels():
    s = make_split()
    s.features["text"][2, 0, 0] = np.inf
    assert "key 'text': inf at row 2 (shape (6, 7, 4))" in error(validate_split, s, SRC)
    s = make_split()
    s.labels[3] = np.nan
    assert "split 'train', key 'labels': NaN at row 3 (shape (6,))" in error(validate_split, s, SRC)


def test_n_mismatch():
    s = make_split()
    s.features["audio"] = s.features["audio"][:5]
    assert "key 'audio': 5 rows but 6 labels (shape (5, 9, 3))" in error(validate_split, s, SRC)
    s = make_split()
    s.lengths["text"] = s.lengths["text"][:4]
    assert "key 'text_lengths': expected shape (6,), got shape (4,)" in error(validate_split, s, SRC)
    s = make_split()
    s.ids = s.ids[:5]
    assert "key 'id': 5 ids but 6 labels" in error(validate_split, s, SRC)


@pytest.mark.parametrize("bad", [0, -2, 10, 1000])
def test_lengths_outside_range(bad):
    s = make_split()
    s.lengths["audio"][1] = bad
    assert f"split 'train', key 'audio_lengths': length {bad} at row 1 outside 1..9 (shape (6, 9, 3))" in error(
        validate_split, s, SRC
    )


def test_missing_lengths_and_wrong_rank():
    s = make_split()
    del s.lengths["audio"]
    assert "key 'audio_lengths': missing (features shape (6, 9, 3))" in error(validate_split, s, SRC)
    s = make_split()
    s.features["audio"] = s.features["audio"][:, 0]
    assert "key 'audio': expected shape (N, L, D), got shape (6, 3)" in error(validate_split, s, SRC)


def test_wrong_dims_expected_and_between_splits():
    assert "key 'audio': feature width 3, expected 5 (shape (6, 9, 3))" in error(
        validate_split, make_split(), SRC, dims={"audio": 5}
    )
    ds = make_ds()
    ds.splits["test"].features["text"] = np.ones((4, 7, 6), np.float32)
    assert "split 'test', key 'text': feature width 6, expected 4 (shape (4, 7, 6))" in error(validate_dataset, ds)


def test_modalities_differ_between_splits():
    ds = make_ds()
    del ds.splits["valid"].features["audio"]
    assert "split 'valid' has modalities ['text']" in error(validate_dataset, ds)


@pytest.mark.parametrize(("metric_set", "value"), [("mosi", 3.5), ("mosei", -3.2), ("sims", 1.5)])
def test_regression_label_out_of_range(metric_set, value):
    ds = make_ds(metric_set=metric_set)
    if metric_set == "sims":
        for s in ds.splits.values():
            s.labels = np.clip(s.labels / 3, -1, 1)
    ds.splits["valid"].labels[2] = value
    assert f"split 'valid', key 'labels': label {value:g} at row 2 outside" in error(validate_dataset, ds)


def test_classification_labels():
    ds = make_ds(task="classification", num_classes=3, metric_set="iemocap")
    for s in ds.splits.values():
        s.labels = np.arange(len(s)) % 3
    validate_dataset(ds)
    ds.splits["train"].labels[5] = 3
    assert "split 'train', key 'labels': class 3 at row 5 outside 0..2 (shape (6,))" in error(validate_dataset, ds)
    ds.splits["train"].labels = ds.splits["train"].labels.astype(np.float32)
    assert "classification labels must be integers" in error(validate_dataset, ds)


def test_empty_and_missing_splits():
    ds = make_ds()
    ds.splits["test"] = ds.splits["test"].subset(np.array([], dtype=np.int64))
    assert "split 'test', key 'labels': split is empty (shape (0,))" in error(validate_dataset, ds)
    ds = make_ds()
    del ds.splits["valid"]
    assert "data/foo.pkl: missing split 'valid'" in error(validate_dataset, ds)


def test_duplicate_ids_within_and_across_splits():
    s = make_split()
    s.ids[4] = s.ids[1]
    assert "split 'train', key 'id': duplicate id 'train_1' at rows 1 and 4" in error(validate_split, s, SRC)
    ds = make_ds()
    ds.splits["test"].ids[0] = "train_2"
    assert "split 'test', key 'id': id 'train_2' is also in split 'train'" in error(validate_dataset, ds)


def test_all_padding_row():
    s = make_split()
    for m in s.features:
        s.features[m][3] = 0
    msg = error(validate_split, s, SRC)
    assert "split 'train', key 'text/audio': row 3 (id 'train_3') is all padding" in msg
    assert "(6, 9, 3)" in msg
    s = make_split()
    s.features["audio"][3] = 0  # one empty modality is allowed (e.g. no face found)
    validate_split(s, SRC)


def test_helpers():
    x = np.ones((3, 4, 2), np.float32)
    x[1, 2:] = 0
    x[2] = 0
    assert trailing_lengths(x).tolist() == [4, 2, 1]
    zero_padding(x, np.array([1, 4, 4]))
    assert x[0, 1:].sum() == 0 and x[0, 0].sum() == 2
    assert infer_metric_set("/data/MOSEI/aligned_50.pkl") == "mosei"
    assert infer_metric_set("/home/mosi_runs/ch-sims/unaligned.pkl") == "sims"  # innermost name wins
    assert infer_metric_set("/x/y.pkl", np.array([0.5, -1.0])) == "sims"
    assert infer_metric_set("/x/y.pkl", np.array([2.5])) == "mosi"
    assert infer_metric_set("/x/y.pkl", None, "classification") == "iemocap"

"""MMSA feature pickles: a real-layout file loads; unsafe or damaged files give one-line errors."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from msalign.data import load_dataset
from msalign.data.mmsa_pickle import load_mmsa_pickle, read_pickle
from support import LA, LT, LV, SIZES, error, mmsa_data, write_pickle


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_unaligned_pickle_loads(tmp_path, protocol):
    data = mmsa_data()
    ds = load_mmsa_pickle(write_pickle(tmp_path / "mosi_unaligned_50.pkl", data, protocol))
    assert ds.metric_set == "mosi" and ds.task == "regression"
    assert {n: len(s) for n, s in ds.splits.items()} == SIZES
    assert ds.dims == {"text": 16, "audio": 5, "vision": 4}
    assert ds.max_lengths == {"text": LT, "audio": LA, "vision": LV}
    assert ds.feature_spec.to_json()["aligned"] is False
    valid, raw = ds.splits["valid"], data["valid"]
    assert valid.ids[0] == "vidvalid$_$0" and valid.raw_text[1] == "clip valid 1"
    np.testing.assert_array_equal(valid.lengths["audio"], raw["audio_lengths"])
    np.testing.assert_array_equal(valid.lengths["text"], raw["text_bert"][:, 1].sum(1))
    np.testing.assert_allclose(valid.labels, raw["regression_labels"])
    for m in ("text", "audio", "vision"):
        x, mask = valid.features[m], valid.mask(m)
        assert x.dtype == np.float32
        assert not x[~mask].any()  # padding zeroed
        np.testing.assert_array_equal(x[mask], raw[m][mask])


def test_aligned_pickle_derives_lengths(tmp_path):
    data = mmsa_data(aligned=True)
    del data["test"]["text_bert"]
    ds = load_mmsa_pickle(write_pickle(tmp_path / "aligned_50.pkl", data), metric_set="mosei")
    assert ds.metric_set == "mosei" and ds.feature_spec.to_json()["aligned"] is True
    train = ds.splits["train"]
    assert (train.lengths["audio"] == 6).all()  # trailing all-zero frames dropped
    assert (train.lengths["vision"] == LT).all()
    np.testing.assert_array_equal(train.lengths["text"], data["train"]["text_bert"][:, 1].sum(1))
    assert (ds.splits["test"].lengths["text"] == LT).all()  # no text_bert: all L


def test_modalities_and_classification(tmp_path):
    data = mmsa_data()
    for d in data.values():
        del d["regression_labels"]
    ds = load_dataset(write_pickle(tmp_path / "iemocap_feats.pkl", data), modalities=["text", "audio"])
    assert ds.task == "classification" and ds.metric_set == "iemocap"
    assert ds.modalities == ("text", "audio")
    assert ds.splits["train"].labels.dtype == np.int64
    assert ds.num_classes == max(int(d["classification_labels"].max()) for d in data.values()) + 1
    for d in data.values():
        d["labels"] = d.pop("classification_labels").astype(np.int64)
    assert (
        load_mmsa_pickle(write_pickle(tmp_path / "x.pkl", data), metric_set="iemocap", num_classes=6).num_classes == 6
    )


class WritesMarker:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


class RunsShell:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize(("cls", "name"), [(WritesMarker, "open"), (RunsShell, "system")])
def test_code_executing_pickle_is_refused(tmp_path, cls, name):
    marker = tmp_path / "pwned"
    data = mmsa_data()
    data["valid"]["annotations"] = [cls(marker)]
    path = write_pickle(tmp_path / "evil.pkl", data)
    # Sanity check that the payload is real: the standard unpickler runs it.
    pickle.loads(path.read_bytes())
    assert marker.exists()
    marker.unlink()
    msg = error(load_dataset, str(path))
    assert msg.startswith(f"refusing to load {path}: it references ") and f"{name}, which could execute code" in msg
    assert not marker.exists()


def test_other_globals_refused(tmp_path):
    path = write_pickle(tmp_path / "x.pkl", {"train": {"f": Path("a")}})
    assert "it references pathlib." in error(read_pickle, path)


def test_numpy1_module_names_accepted(tmp_path):
    blob = pickle.dumps({"a": np.arange(6, dtype=np.float32).reshape(2, 3)}, protocol=2)
    assert b"numpy._core" in blob
    path = tmp_path / "old.pkl"
    path.write_bytes(blob.replace(b"numpy._core", b"numpy.core"))
    np.testing.assert_array_equal(read_pickle(path)["a"], np.arange(6).reshape(2, 3))


def test_truncated_and_corrupt(tmp_path):
    blob = pickle.dumps(mmsa_data())
    (tmp_path / "trunc.pkl").write_bytes(blob[: len(blob) // 2])
    msg = error(load_dataset, str(tmp_path / "trunc.pkl"))
    assert msg.startswith(f"{tmp_path / 'trunc.pkl'}: not a readable pickle (truncated or corrupt")
    (tmp_path / "junk.pkl").write_bytes(b"this is not a pickle at all")
    assert "not a readable pickle" in error(load_dataset, str(tmp_path / "junk.pkl"))
    (tmp_path / "empty.pkl").write_bytes(b"")
    assert "not a readable pickle" in error(load_dataset, str(tmp_path / "empty.pkl"))


def test_missing_key_and_split(tmp_path):
    data = mmsa_data()
    del data["valid"]["audio"]
    msg = error(load_mmsa_pickle, write_pickle(tmp_path / "a.pkl", data))
    assert "a.pkl: split 'valid', key 'audio': missing (has [" in msg
    data = mmsa_data()
    del data["test"]["regression_labels"]
    msg = error(load_mmsa_pickle, write_pickle(tmp_path / "b.pkl", data))
    assert "split 'test', key 'regression_labels': missing" in msg
    data = mmsa_data()
    del data["test"]
    msg = error(load_mmsa_pickle, write_pickle(tmp_path / "c.pkl", data))
    assert "split 'test': missing or not a dict" in msg
    assert "expected a dict of splits" in error(load_mmsa_pickle, write_pickle(tmp_path / "d.pkl", [1, 2]))


def test_wrong_shapes(tmp_path):
    data = mmsa_data()
    data["train"]["vision"] = data["train"]["vision"][:, :, 0]
    msg = error(load_mmsa_pickle, write_pickle(tmp_path / "a.pkl", data))
    assert "split 'train', key 'vision': expected shape (N, L, D), got shape (6, 12)" in msg
    data = mmsa_data()
    data["train"]["audio"] = data["train"]["audio"][:5]
    data["train"]["audio_lengths"] = data["train"]["audio_lengths"][:5]
    msg = error(load_mmsa_pickle, write_pickle(tmp_path / "b.pkl", data))
    assert "split 'train', key 'audio': 5 rows but 6 labels (shape (5, 10, 5))" in msg
    data = mmsa_data()
    data["test"]["audio"] = np.zeros((4, LA, 7), np.float32) + 1
    msg = error(load_mmsa_pickle, write_pickle(tmp_path / "c.pkl", data))
    assert "split 'test', key 'audio': feature width 7, expected 5 (shape (4, 10, 7))" in msg
    data = mmsa_data()
    data["valid"]["vision_lengths"] = [LV + 5] * 3
    msg = error(load_mmsa_pickle, write_pickle(tmp_path / "d.pkl", data))
    assert "key 'vision_lengths': length 17 at row 0 outside 1..12 (shape (3, 12, 4))" in msg


def test_nan_and_inf(tmp_path):
    data = mmsa_data()
    data["train"]["audio"][2, 0, 1] = np.nan
    msg = error(load_mmsa_pickle, write_pickle(tmp_path / "nan.pkl", data))
    assert msg == f"{tmp_path / 'nan.pkl'}: split 'train', key 'audio': NaN at row 2 (shape (6, 10, 5))"
    data = mmsa_data()
    data["valid"]["regression_labels"][1] = np.nan
    assert "split 'valid', key 'labels': NaN at row 1 (shape (3,))" in error(
        load_mmsa_pickle, write_pickle(tmp_path / "y.pkl", data)
    )
    data = mmsa_data()
    data["test"]["vision"][3, 0, 0] = np.inf
    assert "split 'test', key 'vision': inf at row 3" in error(
        load_mmsa_pickle, write_pickle(tmp_path / "inf.pkl", data)
    )
    data = mmsa_data()  # -inf in audio is COVAREP's log(0): zeroed and counted, as MMSA does
    data["train"]["audio"][0, 0, :2] = -np.inf
    ds = load_mmsa_pickle(write_pickle(tmp_path / "neginf.pkl", data))
    assert ds.feature_spec.to_json()["repairs"] == {"audio_neg_inf_to_zero": 2}
    assert (ds.splits["train"].features["audio"][0, 0, :2] == 0).all()


def test_label_out_of_range(tmp_path):
    data = mmsa_data()
    for d in data.values():
        d["regression_labels"] /= 3
    assert load_mmsa_pickle(write_pickle(tmp_path / "sims_ok.pkl", data)).metric_set == "sims"
    data["train"]["regression_labels"][4] = 2.5
    assert "label 2.5 at row 4 outside [-1, 1]" in error(load_mmsa_pickle, write_pickle(tmp_path / "sims_a.pkl", data))


def test_load_dataset_paths(tmp_path):
    assert (
        error(load_dataset, str(tmp_path / "nope.pkl"))
        == f"dataset '{tmp_path / 'nope.pkl'}': no such file or directory"
    )
    (tmp_path / "x.txt").write_text("hi")
    assert "not a dataset" in error(load_dataset, str(tmp_path / "x.txt"))
    assert "unknown option 'colour'" in error(load_dataset, "synthetic", colour="red")

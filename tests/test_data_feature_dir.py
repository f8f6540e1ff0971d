"""Feature directories: label.csv + <modality>.npz / <modality>_utterance.npz files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from msalign.data import load_dataset
from msalign.data.feature_dir import save_modality
from msalign.data.feature_dir_loader import load_feature_dir
from msalign.data.text_encoder import TextEncoder
from support import error, make_folder, write_labels

MOSI = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mosi"


def test_folder_loads(tmp_path):
    folder = tmp_path / "mydata"
    ids = make_folder(folder)
    ds = load_dataset(str(folder), standardize=False)
    assert ds.name == "mydata" and ds.metric_set == "mosi" and ds.task == "regression"
    assert {n: len(s) for n, s in ds.splits.items()} == {"train": 6, "valid": 3, "test": 3}
    assert ds.dims == {"text": 8, "audio": 7, "vision": 4}
    assert ds.max_lengths == {"text": 6, "audio": 1, "vision": 5}
    train = ds.splits["train"]
    assert train.ids == ids[:6] and train.raw_text[0] == "clip, number 0"
    assert (train.lengths["audio"] == 1).all()
    with np.load(folder / "audio_utterance.npz") as z:
        row = list(z["ids"]).index(ids[7])
        np.testing.assert_array_equal(ds.splits["valid"].features["audio"][1, 0], z["audio"][row])
    with np.load(folder / "vision.npz") as z:
        row = list(z["ids"]).index(ids[0])
        assert train.lengths["vision"][0] == z["lengths"][row]
    for s in ds.splits.values():
        for m in s.features:
            assert not s.features[m][~s.mask(m)].any()
    spec = ds.feature_spec.to_json()
    assert spec["modalities"]["audio"] == {"source": "audio_utterance.npz", "kind": "utterance", "dim": 7, "max_len": 1}
    assert spec["modalities"]["vision"]["kind"] == "sequence" and spec["options"] == {"standardize": False}


def test_standardize_uses_train_statistics(tmp_path):
    make_folder(tmp_path / "d")
    raw = load_feature_dir(tmp_path / "d", standardize=False)
    ds = load_feature_dir(tmp_path / "d")
    stats = json.loads(json.dumps(ds.feature_spec.to_json()))["options"]["standardize"]  # survives a JSON checkpoint
    assert set(stats) == {"text", "audio", "vision"} and len(stats["audio"]["mean"]) == 7
    for m in ("audio", "vision"):
        train = ds.splits["train"]
        real = train.features[m][train.mask(m)]
        np.testing.assert_allclose(real.mean(0), 0, atol=1e-5)
        np.testing.assert_allclose(real.std(0), 1, atol=1e-4)
        test_raw, test = raw.splits["test"], ds.splits["test"]
        expected = (test_raw.features[m] - np.float32(stats[m]["mean"])) / np.float32(stats[m]["std"])
        mask = test.mask(m)
        np.testing.assert_allclose(test.features[m][mask], expected[mask], rtol=1e-5, atol=1e-5)
        assert not test.features[m][~mask].any()
    again = load_feature_dir(tmp_path / "d", standardize=stats)  # reuse recorded statistics
    np.testing.assert_array_equal(again.splits["valid"].features["vision"], ds.splits["valid"].features["vision"])
    subset = load_feature_dir(tmp_path / "d", modalities=["audio"], standardize=stats)
    np.testing.assert_array_equal(subset.splits["test"].features["audio"], ds.splits["test"].features["audio"])
    assert "cannot standardize modality 'text'" in error(
        load_feature_dir, tmp_path / "d", modalities=["audio"], standardize=["text"]
    )
    only = load_feature_dir(tmp_path / "d", standardize=["audio"])
    assert set(only.feature_spec.to_json()["options"]["standardize"]) == {"audio"}
    np.testing.assert_array_equal(only.splits["train"].features["text"], raw.splits["train"].features["text"])


def test_modalities_selection(tmp_path):
    make_folder(tmp_path / "d")
    ds = load_dataset(str(tmp_path / "d"), modalities="audio,vision")
    assert ds.modalities == ("audio", "vision")
    assert "unknown modality 'smell'" in error(load_feature_dir, tmp_path / "d", modalities=["smell"])
    (tmp_path / "d" / "vision.npz").unlink()
    assert "no vision.npz or vision_utterance.npz" in error(load_feature_dir, tmp_path / "d", modalities=["vision"])


def test_missing_ids_named(tmp_path):
    folder = tmp_path / "d"
    ids = make_folder(folder)
    with np.load(folder / "audio_utterance.npz") as z:
        keep = ~np.isin(z["ids"], [ids[2], ids[9]])
        save_modality(folder, "audio", z["ids"][keep], z["audio"][keep])
    msg = error(load_feature_dir, folder)
    assert msg.startswith(
        f"{folder / 'audio_utterance.npz'}: 2 clips of label.csv have no features, e.g. '{ids[2]}', '{ids[9]}'"
    )
    assert "(file has 12 ids, shape (12, 1, 7))" in msg


def test_feature_file_errors(tmp_path):
    folder = tmp_path / "d"
    ids = make_folder(folder)
    save_modality(folder, "audio", ids, np.ones((12, 3, 7)))
    assert "both audio.npz and audio_utterance.npz" in error(load_feature_dir, folder)
    (folder / "audio.npz").unlink()
    np.savez(folder / "audio_utterance.npz", ids=np.array(ids), audio=np.ones((12, 2, 7)))
    assert "key 'audio': expected shape (N, D), got shape (12, 2, 7)" in error(load_feature_dir, folder)
    np.savez(folder / "audio_utterance.npz", ids=np.array(ids), feats=np.ones((12, 7)))
    assert "key 'audio': missing (has ['feats', 'ids'])" in error(load_feature_dir, folder)
    np.savez(folder / "audio_utterance.npz", ids=np.array(ids[:11] + ids[:1]), audio=np.ones((12, 7)))
    assert f"key 'ids': duplicate id '{ids[0]}' at rows 0 and 11" in error(load_feature_dir, folder)
    (folder / "audio_utterance.npz").write_bytes(b"broken")
    assert "not a readable .npz" in error(load_feature_dir, folder)
    (folder / "audio_utterance.npz").unlink()
    x = np.ones((12, 7), np.float32)
    x[4, 3] = np.nan
    save_modality(folder, "audio", ids, x)
    assert "split 'train', key 'audio': NaN at row 4" in error(load_feature_dir, folder, standardize=False)


def test_label_csv_errors(tmp_path):
    folder = tmp_path / "d"
    make_folder(folder)
    text = (folder / "label.csv").read_text()
    (folder / "label.csv").write_text(text.replace(",train", ",training", 1))
    assert "line 2: mode 'training' is not train/valid/test" in error(load_feature_dir, folder)
    (folder / "label.csv").write_text(text.replace("mode", "fold"))
    assert "missing column 'mode'" in error(load_feature_dir, folder)
    write_labels(folder, ["1.0"] * 6 + ["x"] + ["0"] * 5)
    assert "line 8: label 'x' is not a number" in error(load_feature_dir, folder, metric_set="mosi")
    write_labels(folder, [0.5] * 9 + [4.0] * 3)
    assert "split 'test', key 'labels': label 4 at row 0 outside [-3, 3] (shape (3,))" in error(
        load_feature_dir, folder
    )
    write_labels(folder, [0.5] * 12, modes=["train"] * 9 + ["test"] * 3)
    assert "split 'valid', key 'mode': no clips" in error(load_feature_dir, folder)
    (folder / "label.csv").unlink()
    assert "no label.csv" in error(load_dataset, str(folder))


def test_metric_set_inference_and_classification(tmp_path):
    make_folder(tmp_path / "ch_sims_feats", labels=np.linspace(-1, 1, 12).round(2))
    assert load_feature_dir(tmp_path / "ch_sims_feats").metric_set == "sims"
    make_folder(tmp_path / "other", labels=np.linspace(-0.9, 0.9, 12).round(2))
    assert load_feature_dir(tmp_path / "other").metric_set == "sims"  # from the label range
    assert load_feature_dir(tmp_path / "other", metric_set="mosei").metric_set == "mosei"
    make_folder(tmp_path / "emo", labels=["sad", "hap", "ang"] * 4)
    ds = load_feature_dir(tmp_path / "emo")
    assert ds.task == "classification" and ds.metric_set == "iemocap" and ds.num_classes == 3
    assert ds.feature_spec.to_json()["classes"] == ["ang", "hap", "sad"]
    assert ds.splits["train"].labels.tolist() == [2, 1, 0, 2, 1, 0]
    make_folder(tmp_path / "iemocap_ints", labels=[0, 1, 2, 3, 4, 5] * 2)
    ds = load_feature_dir(tmp_path / "iemocap_ints")
    assert ds.task == "classification" and ds.num_classes == 6 and ds.splits["train"].labels.dtype == np.int64


def test_text_from_label_csv(tmp_path, monkeypatch):
    folder = tmp_path / "d"
    ids = make_folder(folder)
    (folder / "text.npz").unlink()
    ds = load_feature_dir(folder, cache_dir=tmp_path / "cache", max_text_len=16, standardize=False)
    assert ds.dims["text"] == 384 and ds.max_lengths["text"] == 16
    spec = ds.feature_spec.to_json()["modalities"]["text"]
    assert spec["source"] == "text_encoder" and "minilm" in spec["encoder"] and spec["max_len"] == 16
    x, _ = TextEncoder(cache_dir=tmp_path / "cache", max_length=16).encode(["clip, number 7"])
    np.testing.assert_array_equal(ds.splits["valid"].features["text"][1], x[0])
    assert ds.splits["valid"].ids[1] == ids[7]
    monkeypatch.setattr(TextEncoder, "_encode_batch", lambda self, b: pytest.fail("re-encoded cached text"))
    again = load_dataset(str(folder), cache_dir=tmp_path / "cache", **ds.feature_spec.to_json()["options"])
    assert again.feature_spec == ds.feature_spec
    assert ds.feature_spec.to_json()["options"] == {"standardize": False, "text_encoder": "minilm", "max_text_len": 16}


@pytest.mark.slow
@pytest.mark.skipif(not (MOSI / "label.csv").exists(), reason="real MOSI folder not present")
def test_real_mosi(mosi_cache, monkeypatch):
    cache = mosi_cache
    ds = load_dataset(str(MOSI), cache_dir=cache)
    assert ds.metric_set == "mosi" and ds.task == "regression" and ds.modalities == ("text", "audio")
    assert {n: len(s) for n, s in ds.splits.items()} == {"train": 1284, "valid": 229, "test": 686}
    for s in ds.splits.values():
        assert s.features["audio"].shape == (len(s), 1, 73)
        assert s.features["text"].shape == (len(s), 50, 384)
        assert s.lengths["text"].min() >= 3 and s.lengths["text"].max() <= 50
        assert s.features["text"].dtype == np.float32
    assert ds.splits["train"].labels.min() >= -3 and ds.splits["train"].labels.max() <= 3
    assert len(ds.feature_spec.to_json()["options"]["standardize"]["audio"]["mean"]) == 73
    monkeypatch.setattr(TextEncoder, "_encode_batch", lambda self, b: pytest.fail("re-encoded cached text"))
    again = load_dataset(str(MOSI), cache_dir=cache)
    np.testing.assert_array_equal(again.splits["test"].features["text"], ds.splits["test"].features["text"])

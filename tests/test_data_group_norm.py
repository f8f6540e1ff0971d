"""Per-group (per-speaker) standardisation of features: msalign.data.group_norm and the loader option."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from msalign.data import load_dataset
from msalign.data.feature_dir import save_modality
from msalign.data.group_norm import fit_prior, standardize_groups
from msalign.errors import MsalignError


def test_closed_form_with_shrinkage_toward_the_prior():
    x = np.array([1.0, 3.0, 5.0], dtype=np.float32).reshape(3, 1, 1)
    out = standardize_groups(
        x.copy(), np.ones(3, dtype=np.int64), ["a", "a", "b"], {"mean": [0.0], "var": [1.0]}, strength=1.0
    )
    # a: n=2, m=2, v=1 -> centre (2*2 + 0)/3 = 4/3, var (2*1 + 1)/3 = 1
    # b: n=1, m=5, v=0 -> centre (5 + 0)/2 = 2.5, var (0 + 1)/2 = 0.5
    np.testing.assert_allclose(out.ravel(), [-1 / 3, 5 / 3, 2.5 / np.sqrt(0.5)], rtol=1e-6)
    # strength 0: each group's own z-scores; a lone clip (no spread) is only centred
    own = standardize_groups(x.copy(), np.ones(3, dtype=np.int64), ["a", "a", "b"], {"mean": [0.0], "var": [1.0]}, 0.0)
    np.testing.assert_allclose(own.ravel(), [-1.0, 1.0, 0.0], atol=1e-6)


def test_a_single_clip_is_the_training_z_score_shrunk():
    rng = np.random.default_rng(0)
    prior = {"mean": rng.normal(size=4).tolist(), "var": rng.uniform(0.5, 2, size=4).tolist()}
    x = rng.normal(size=(1, 1, 4)).astype(np.float32)
    out = standardize_groups(x.copy(), np.ones(1, dtype=np.int64), ["new speaker"], prior, strength=3.0)
    expected = np.sqrt(3 / 4) * (x[0, 0] - prior["mean"]) / np.sqrt(prior["var"])
    np.testing.assert_allclose(out[0, 0], expected, rtol=1e-5)


def test_sequences_use_real_positions_and_keep_padding_zero():
    x = np.zeros((2, 3, 1), dtype=np.float32)
    x[0, :2, 0] = [1.0, 3.0]
    x[1, :1, 0] = [5.0]
    lengths = np.array([2, 1])
    prior = fit_prior(x, lengths, ["a", "a"])
    assert prior["mean"] == [3.0] and prior["var"] == pytest.approx([8 / 3])  # frames 1, 3, 5
    out = standardize_groups(x.copy(), lengths, ["a", "a"], prior, strength=0.0)
    np.testing.assert_allclose(out[0, :2, 0], (np.array([1.0, 3.0]) - 3) / np.sqrt(8 / 3), rtol=1e-6)
    assert out[0, 2, 0] == 0 and not out[1, 1:].any()
    # the prior's variance is pooled WITHIN groups: two groups far apart add nothing to it
    two = fit_prior(
        np.array([0.0, 2.0, 100.0, 102.0], dtype=np.float32).reshape(4, 1, 1),
        np.ones(4, dtype=np.int64),
        ["a", "a", "b", "b"],
    )
    assert two["var"] == [1.0] and two["mean"] == [51.0]


def _write(folder, labels, audio, speakers, modes):
    folder.mkdir(parents=True, exist_ok=True)
    ids = []
    with open(folder / "label.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["video_id", "clip_id", "text", "label", "annotation", "mode", "speaker"])
        for i, (label, mode) in enumerate(zip(labels, modes, strict=True)):
            writer.writerow([f"v{i // 3}", str(i % 3), "", label, "", mode, speakers[i]])
            ids.append(f"v{i // 3}_{i % 3}")
    save_modality(folder, "audio", ids, audio)
    save_modality(folder, "vision", ids, audio[:, ::-1] * 2)


@pytest.fixture()
def clips():
    rng = np.random.default_rng(1)
    n = 27  # 9 videos of 3 clips: 5 train, 2 valid, 2 test videos
    modes = ["train"] * 15 + ["valid"] * 6 + ["test"] * 6
    audio = rng.normal(size=(n, 4)) + np.repeat(rng.normal(scale=3, size=(9, 4)), 3, axis=0)  # a per-video shift
    labels = np.round(rng.uniform(-3, 3, size=n), 2)
    speakers = [f"s{i // 6}" for i in range(n)]
    return labels, audio, speakers, modes


def test_group_statistics_never_read_labels(tmp_path, clips):
    labels, audio, speakers, modes = clips
    _write(tmp_path / "a", labels, audio, speakers, modes)
    _write(tmp_path / "b", np.random.default_rng(5).permutation(labels), audio, speakers, modes)
    a = load_dataset(str(tmp_path / "a"), group_standardize=True)
    b = load_dataset(str(tmp_path / "b"), group_standardize=True)
    assert (
        a.feature_spec.to_json()["options"]["group_standardize"]
        == b.feature_spec.to_json()["options"]["group_standardize"]
    )
    for split in ("train", "valid", "test"):
        for m in ("audio", "vision"):
            np.testing.assert_array_equal(a.split(split).features[m], b.split(split).features[m])
    assert not np.array_equal(a.split("train").labels, b.split("train").labels)


def test_a_test_group_uses_only_its_own_features(tmp_path, clips):
    labels, audio, speakers, modes = clips
    _write(tmp_path / "a", labels, audio, speakers, modes)
    changed = audio.copy()
    changed[24:27] += 10.0  # the last test video (v8) only
    _write(tmp_path / "b", labels, changed, speakers, modes)
    options = {"group_standardize": ["audio"], "standardize": False}
    a, b = load_dataset(str(tmp_path / "a"), **options), load_dataset(str(tmp_path / "b"), **options)
    for split in ("train", "valid"):
        np.testing.assert_array_equal(a.split(split).features["audio"], b.split(split).features["audio"])
    np.testing.assert_array_equal(a.split("test").features["audio"][:3], b.split("test").features["audio"][:3])
    assert not np.allclose(a.split("test").features["audio"][3:], b.split("test").features["audio"][3:])
    # closed form for that test video, from its own three clips and the training prior
    prior = a.feature_spec.to_json()["options"]["group_standardize"]["audio"]
    own = audio[24:27]
    n, k = 3, a.feature_spec.to_json()["options"]["group_strength"]
    centre = (n * own.mean(0) + k * np.array(prior["mean"])) / (n + k)
    spread = np.sqrt((n * own.var(0) + k * np.array(prior["var"])) / (n + k))
    np.testing.assert_allclose(a.split("test").features["audio"][3:, 0], (own - centre) / spread, rtol=1e-4, atol=1e-5)
    # only non-text modalities named: vision is untouched by group statistics
    assert a.feature_spec.to_json()["options"]["group_standardize"].keys() == {"audio"}


def test_recorded_priors_reproduce_the_features(tmp_path, clips):
    labels, audio, speakers, modes = clips
    _write(tmp_path / "a", labels, audio, speakers, modes)
    first = load_dataset(str(tmp_path / "a"), group_standardize=True, group_column="speaker", group_strength=1.0)
    options = first.feature_spec.to_json()["options"]
    assert options["group_column"] == "speaker" and set(options["group_standardize"]) == {"audio", "vision"}
    again = load_dataset(str(tmp_path / "a"), **options)  # as evaluate passes a checkpoint's options back
    assert again.feature_spec == first.feature_spec
    for split in ("train", "valid", "test"):
        np.testing.assert_array_equal(again.split(split).features["audio"], first.split(split).features["audio"])
    plain = load_dataset(str(tmp_path / "a"))
    assert "group_standardize" not in plain.feature_spec.to_json()["options"]  # old checkpoints' specs unchanged


def test_missing_group_column_is_one_line_naming_it(tmp_path, clips):
    labels, audio, speakers, modes = clips
    _write(tmp_path / "a", labels, audio, speakers, modes)
    with pytest.raises(MsalignError, match=r"label.csv: no column 'speakr' to group clips by") as error:
        load_dataset(str(tmp_path / "a"), group_standardize=True, group_column="speakr")
    assert "\n" not in str(error.value)
    with pytest.raises(MsalignError, match="group_standardize: modality 'text' is not loaded"):
        load_dataset(str(tmp_path / "a"), group_standardize=["text"])


def test_cli_options_reach_the_loader(tmp_path, clips):
    from msalign.cli import build_parser
    from msalign.cli.options import load_dataset as load_from_args

    labels, audio, speakers, modes = clips
    _write(tmp_path / "a", labels, audio, speakers, modes)
    args = build_parser().parse_args(
        [
            "train",
            "--model",
            "text_only",
            "--dataset",
            str(tmp_path / "a"),
            "--out",
            "x",
            "--group-standardize",
            "audio",
            "--group-column",
            "speaker",
            "--group-strength",
            "0.5",
        ]
    )
    options = load_from_args(args).feature_spec.to_json()["options"]
    assert set(options["group_standardize"]) == {"audio"} and options["group_column"] == "speaker"
    assert options["group_strength"] == 0.5


def test_predict_groups_the_clips_given_together():
    from msalign.inference.predict import _group_standardize
    from msalign.training.checkpoint import CheckpointMeta

    prior = {"mean": [0.0], "var": [1.0]}
    options = {"group_standardize": {"audio": prior}, "group_strength": 1.0}
    info = CheckpointMeta("late_fusion", {"audio": 1}, 1, {}, feature_spec={"options": options})
    clips = [{"audio": np.array([[1.0]], dtype=np.float32)}, {"audio": np.array([[3.0]], dtype=np.float32)}]
    _group_standardize(clips, info)
    np.testing.assert_allclose([c["audio"][0, 0] for c in clips], [-1 / 3, 5 / 3], rtol=1e-6)
    single = [{"audio": np.array([[5.0]], dtype=np.float32)}]
    _group_standardize(single, info)
    np.testing.assert_allclose(single[0]["audio"][0, 0], 2.5 / np.sqrt(0.5), rtol=1e-6)

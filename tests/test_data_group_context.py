"""Group context (msalign.data.group_context): each clip carries its group's mean features, from
features alone, split by split; the loader option and predict's use of the same function."""

from __future__ import annotations

import numpy as np
import pytest

from msalign.data import load_dataset
from msalign.data.feature_dir import read_modality, save_modality
from msalign.data.group_context import append_group_context, clip_means
from msalign.errors import MsalignError
from msalign.inference import predict as predict_module
from support import error, make_folder, mmsa_data, write_pickle


def _oracle(x, lengths, groups):
    """The definition with loops: mean over the group's clips of each clip's mean over its real positions."""
    n, steps, dim = x.shape
    means = np.zeros((n, dim))
    for i in range(n):
        for t in range(lengths[i]):
            means[i] += x[i, t]
        means[i] /= max(lengths[i], 1)
    out = np.zeros((n, steps, 2 * dim), dtype=np.float32)
    for i in range(n):
        members = [j for j in range(n) if groups[j] == groups[i]]
        context = sum(means[j] for j in members) / len(members)
        for t in range(lengths[i]):
            out[i, t, :dim] = x[i, t]
            out[i, t, dim:] = context
    return out


def _ragged(seed: int, n: int = 11, steps: int = 6, dim: int = 3):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, steps + 1, n)
    x = rng.normal(size=(n, steps, dim)).astype(np.float32)
    x[np.arange(steps)[None, :] >= lengths[:, None]] = 0
    groups = [f"g{k}" for k in rng.integers(0, 4, n)]
    return x, lengths, groups


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_equals_a_loop_oracle_on_ragged_data(seed):
    x, lengths, groups = _ragged(seed)
    before = x.copy()
    out = append_group_context(x, lengths, groups)
    np.testing.assert_allclose(out, _oracle(x, lengths, groups), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(x, before)  # pure: the input is not modified
    assert out.dtype == np.float32 and out.shape == (*x.shape[:2], 2 * x.shape[2])


def test_padding_stays_zero():
    x, lengths, groups = _ragged(3)
    out = append_group_context(x, lengths, groups)
    padding = np.arange(x.shape[1])[None, :] >= lengths[:, None]
    assert not out[padding].any()


def test_a_single_clip_group_is_its_own_mean():
    x = np.zeros((2, 4, 2), dtype=np.float32)
    x[0, :3] = [[1, 2], [3, 4], [5, 9]]
    x[1, :1] = [[7, 7]]
    out = append_group_context(x, np.array([3, 1]), ["alone", "other"])
    np.testing.assert_allclose(out[0, :3, 2:], np.tile([3.0, 5.0], (3, 1)))
    np.testing.assert_allclose(out[1, 0, 2:], [7.0, 7.0])
    np.testing.assert_allclose(clip_means(x, np.array([3, 1])), [[3, 5], [7, 7]])


def test_one_line_for_a_wrong_group_count():
    x, lengths, _ = _ragged(0)
    assert "group values" in error(append_group_context, x, lengths, ["a"])


# -- the loader ---------------------------------------------------------------------------------


def _video(clip_ids):
    return [c.rsplit("_", 1)[0] for c in clip_ids]


def test_loader_appends_the_context_split_by_split(tmp_path):
    make_folder(tmp_path / "d")  # videos of 4 clips: vid1 has 2 train and 2 valid clips
    plain = load_dataset(str(tmp_path / "d"), standardize=False)
    ctx = load_dataset(str(tmp_path / "d"), standardize=False, group_context="audio,vision")
    assert ctx.dims == {**plain.dims, "audio": 2 * plain.dims["audio"], "vision": 2 * plain.dims["vision"]}
    for name in ("train", "valid", "test"):
        a, b = plain.split(name), ctx.split(name)
        for m in ("audio", "vision"):
            want = _oracle(a.features[m], a.lengths[m], _video(a.ids))  # groups within this split only
            np.testing.assert_allclose(b.features[m], want, rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(b.features["text"], a.features["text"])  # not named: unchanged
    options = ctx.feature_spec.to_json()["options"]
    assert options["group_context"] == ["audio", "vision"] and options["group_column"] == "video_id"
    assert ctx.feature_spec.modality("audio").dim == 2 * plain.dims["audio"]
    assert "group_context" not in plain.feature_spec.to_json()["options"]
    assert "group_column" not in plain.feature_spec.to_json()["options"]


def test_labels_are_never_read(tmp_path):
    labels = np.round(np.random.default_rng(4).uniform(-3, 3, 12), 2)
    make_folder(tmp_path / "a", labels)
    make_folder(tmp_path / "b", np.random.default_rng(5).permutation(labels))
    a = load_dataset(str(tmp_path / "a"), group_context="audio,vision,text")
    b = load_dataset(str(tmp_path / "b"), group_context="audio,vision,text")
    for name in ("train", "valid", "test"):
        for m in ("audio", "vision", "text"):
            np.testing.assert_array_equal(a.split(name).features[m], b.split(name).features[m])
    assert not np.array_equal(a.split("train").labels, b.split("train").labels)


def test_a_test_video_changes_only_its_own_context(tmp_path):
    ids = make_folder(tmp_path / "a")  # the test split is clips 9-11, all of vid2
    make_folder(tmp_path / "b")
    found = read_modality(tmp_path / "b", "audio")
    x = found.features[:, 0].copy()
    x[[i for i, k in enumerate(found.ids) if k in ids[10:]]] += 5.0  # two of vid2's three test clips
    save_modality(tmp_path / "b", "audio", found.ids, x)
    options = {"group_context": ["audio"], "standardize": False}
    a, b = load_dataset(str(tmp_path / "a"), **options), load_dataset(str(tmp_path / "b"), **options)
    for name in ("train", "valid"):  # vid2's valid clip (8) is another group: untouched
        np.testing.assert_array_equal(a.split(name).features["audio"], b.split(name).features["audio"])
    shift = b.split("test").features["audio"][:, 0] - a.split("test").features["audio"][:, 0]
    own = [5.0 if k in ids[10:] else 0.0 for k in a.split("test").ids]
    np.testing.assert_allclose(shift[:, :7], np.tile(np.array(own)[:, None], (1, 7)), atol=1e-5)
    np.testing.assert_allclose(shift[:, 7:], 10.0 / 3, rtol=1e-5)  # the mean over the video's 3 test clips


def test_recorded_options_reproduce_the_features(tmp_path):
    make_folder(tmp_path / "d")
    first = load_dataset(str(tmp_path / "d"), group_context=True, group_standardize=["audio"])
    again = load_dataset(str(tmp_path / "d"), **first.feature_spec.load_kwargs())  # as evaluate does
    assert again.feature_spec == first.feature_spec
    for name in ("train", "valid", "test"):
        np.testing.assert_array_equal(again.split(name).features["text"], first.split(name).features["text"])


def test_one_line_refusals(tmp_path):
    make_folder(tmp_path / "d")
    folder = str(tmp_path / "d")
    with pytest.raises(MsalignError, match=r"label.csv: no column 'speaker' to group clips by"):
        load_dataset(folder, group_context=True, group_column="speaker")
    assert "group_context: modality 'vision' is not loaded" in error(
        load_dataset, folder, modalities="text,audio", group_context="vision"
    )
    pickle_path = write_pickle(tmp_path / "mosi.pkl", mmsa_data())
    assert "--group-context (group_context) applies to feature directories" in error(
        load_dataset, str(pickle_path), group_context=True
    )
    assert "not to synthetic data" in error(load_dataset, "synthetic:n_train=8", group_context=True)


# -- predict --------------------------------------------------------------------------------------


def test_predict_uses_the_loaders_function_over_the_call(monkeypatch):
    calls = []
    real = predict_module.append_group_context

    def spy(features, lengths, groups):
        calls.append(list(groups))
        return real(features, lengths, groups)

    monkeypatch.setattr(predict_module, "append_group_context", spy)
    rng = np.random.default_rng(0)
    clips = [{"audio": rng.normal(size=(n, 3)).astype(np.float32)} for n in (2, 5, 1)]
    originals = [c["audio"].copy() for c in clips]
    predict_module.group_context(clips, ["audio"])
    assert calls == [["predict"] * 3]  # the clips of one call are one group
    mean = np.mean([x.mean(axis=0) for x in originals], axis=0)
    for clip, x in zip(clips, originals, strict=True):
        np.testing.assert_allclose(clip["audio"], np.concatenate([x, np.tile(mean, (len(x), 1))], axis=1), rtol=1e-6)
    single = [{"audio": originals[1].copy()}]
    predict_module.group_context(single, ["audio"])
    np.testing.assert_allclose(single[0]["audio"][:, 3:], np.tile(originals[1].mean(axis=0), (5, 1)), rtol=1e-6)

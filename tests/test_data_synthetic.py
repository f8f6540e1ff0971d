"""The built-in synthetic dataset: shapes, masks, determinism, and that the signal needs all modalities."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from sklearn.linear_model import RidgeCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from msalign.data.synthetic import (
    _NEGATIVE,
    _POSITIVE,
    SyntheticConfig,
    generate_synthetic,
)
from msalign.data.types import MODALITIES, SPLITS, MultimodalDataset, Split
from msalign.errors import MsalignError

DEFAULTS = SyntheticConfig()


@pytest.fixture(scope="module")
def dataset() -> MultimodalDataset:
    return generate_synthetic(seed=0)


def _arrays(ds: MultimodalDataset) -> list[bytes]:
    out = []
    for name in SPLITS:
        s = ds.split(name)
        out += [s.labels.tobytes()] + [s.features[m].tobytes() + s.lengths[m].tobytes() for m in MODALITIES]
    return out


# ----------------------------------------------------------------------------------------------
# Structure


def test_metadata(dataset: MultimodalDataset) -> None:
    assert dataset.name == "synthetic"
    assert dataset.source == "synthetic"
    assert dataset.task == "regression" and dataset.metric_set == "mosi" and dataset.num_classes is None
    assert dataset.output_dim == 1
    assert dataset.modalities == MODALITIES
    spec = dataset.feature_spec.to_json()
    assert spec["kind"] == "synthetic" and spec["seed"] == 0 and spec["n_train"] == DEFAULTS.n_train
    assert set(spec) >= set(SyntheticConfig.__dataclass_fields__)
    json.dumps(spec)  # serialisable as is (checkpoints and results.json record it)
    assert {n: len(dataset.split(n)) for n in SPLITS} == {
        "train": DEFAULTS.n_train,
        "valid": DEFAULTS.n_valid,
        "test": DEFAULTS.n_test,
    }


def test_shapes_dtypes_and_masks(dataset: MultimodalDataset) -> None:
    expected = {m: (getattr(DEFAULTS, f"{m}_len"), getattr(DEFAULTS, f"{m}_dim")) for m in MODALITIES}
    # Unaligned: every modality has its own sequence length.
    assert len({length for length, _ in expected.values()}) == 3
    for name in SPLITS:
        s = dataset.split(name)
        n = len(s)
        for m in MODALITIES:
            x, lengths = s.features[m], s.lengths[m]
            assert x.shape == (n, *expected[m]) and x.dtype == np.float32
            assert lengths.shape == (n,) and lengths.dtype == np.int64
            assert lengths.min() >= 1 and lengths.max() <= expected[m][0]
            assert len(np.unique(lengths)) > 3  # true lengths vary per clip
            mask = s.mask(m)
            assert np.all(x[~mask] == 0.0), f"{name}/{m}: padding is not zero"
            last_real = x[np.arange(n), lengths - 1]
            assert np.all(np.abs(last_real).sum(axis=1) > 0), f"{name}/{m}: a real frame is all zero"
            assert np.isfinite(x).all()
        assert s.labels.shape == (n,) and s.labels.dtype == np.float32
        assert s.ids == [f"synthetic_{name}_{i:05d}" for i in range(n)]
        assert s.raw_text is not None and len(s.raw_text) == n
        assert all(isinstance(t, str) and re.fullmatch(r"[a-z' ]+", t) for t in s.raw_text)


def test_label_distribution_resembles_mosi(dataset: MultimodalDataset) -> None:
    y = np.concatenate([dataset.split(n).labels for n in SPLITS])
    assert y.min() >= -3.0 and y.max() <= 3.0
    assert abs(float(y.mean())) < 0.2
    assert 1.1 < float(y.std()) < 1.7
    assert 0.3 < np.mean(np.abs(y) < 1.0) < 0.6  # mass near 0 ...
    assert np.mean(y > 2.0) > 0.05 and np.mean(y < -2.0) > 0.05  # ... and real spread to +-3
    assert np.mean(np.abs(y) >= 3.0) < 0.08


def test_raw_text_polarity_follows_sentiment(dataset: MultimodalDataset) -> None:
    s = dataset.split("train")
    pos = [w for words in _POSITIVE.values() for w in words]
    neg = [w for words in _NEGATIVE.values() for w in words]
    is_pos = np.array([any(t.endswith(f"was {w}") or f"was {w} " in t for w in pos) for t in s.raw_text])
    is_neg = np.array([any(t.endswith(f"was {w}") or f"was {w} " in t for w in neg) for t in s.raw_text])
    assert is_pos.sum() > 100 and is_neg.sum() > 100
    assert s.labels[is_pos].mean() > 0.8 and s.labels[is_neg].mean() < -0.8


# ----------------------------------------------------------------------------------------------
# Determinism and parameters


def test_same_seed_is_byte_identical_other_seed_differs(dataset: MultimodalDataset) -> None:
    again = generate_synthetic(seed=0)
    assert _arrays(again) == _arrays(dataset)
    assert all(again.split(n).raw_text == dataset.split(n).raw_text for n in SPLITS)
    assert again.feature_spec == dataset.feature_spec
    other = generate_synthetic(seed=1)
    for a, b in zip(_arrays(other), _arrays(dataset), strict=True):
        assert a != b
    assert other.feature_spec != dataset.feature_spec


def test_split_sizes_do_not_change_other_splits(dataset: MultimodalDataset) -> None:
    smaller = generate_synthetic(seed=0, n_test=50)
    for m in MODALITIES:
        np.testing.assert_array_equal(smaller.split("train").features[m], dataset.split("train").features[m])
    np.testing.assert_array_equal(smaller.split("valid").labels, dataset.split("valid").labels)


def test_kwargs_set_shapes() -> None:
    ds = generate_synthetic(
        seed=3, n_train=7, n_valid=2, n_test=1, text_len=5, text_dim=3, audio_len=9, audio_dim=2, vision_len=4
    )
    assert {n: len(ds.split(n)) for n in SPLITS} == {"train": 7, "valid": 2, "test": 1}
    assert ds.max_lengths == {"text": 5, "audio": 9, "vision": 4}
    assert ds.dims == {"text": 3, "audio": 2, "vision": DEFAULTS.vision_dim}
    assert ds.feature_spec.to_json()["text_len"] == 5 and ds.feature_spec.to_json()["seed"] == 3


@pytest.mark.parametrize(
    "kwargs",
    [
        {"bogus": 1},
        {"seed": -1},
        {"seed": 1.5},
        {"n_train": 0},
        {"text_len": 1},
        {"window_frac": 0.0},
        {"audio_noise": -1.0},
        {"task": "ranking"},
        {"num_classes": 6},
        {"task": "classification", "num_classes": 1},
    ],
)
def test_bad_parameters_raise_msalign_error(kwargs: dict) -> None:
    with pytest.raises(MsalignError, match="synthetic dataset"):
        generate_synthetic(**kwargs)


def test_classification_variant() -> None:
    ds = generate_synthetic(seed=0, task="classification")
    assert ds.task == "classification" and ds.metric_set == "iemocap"
    assert ds.num_classes == 6 and ds.output_dim == 6
    y = np.concatenate([ds.split(n).labels for n in SPLITS])
    assert y.dtype == np.int64 and y.min() == 0 and y.max() == 5
    counts = np.bincount(y, minlength=6)
    assert counts.min() > 0.6 * len(y) / 6  # equal-probability bins: roughly balanced
    # Same latent process as the regression variant: the classes are ordered bins of it.
    reg = generate_synthetic(seed=0).split("train").labels
    cls = ds.split("train").labels
    assert np.all(np.diff([reg[cls == c].mean() for c in range(6)]) > 0)
    assert generate_synthetic(seed=0, task="classification", num_classes=3).split("test").labels.max() == 2


def test_evidence_sits_in_a_window_at_a_per_modality_offset() -> None:
    """Without noise, nuisance and decoys, a clip's frames are non-zero exactly in its evidence window."""
    quiet = {f"{m}_noise": 0.0 for m in MODALITIES} | {"nuisance_strength": 0.0, "decoy_strength": 0.0}
    ds = generate_synthetic(seed=0, n_train=200, n_valid=1, n_test=1, **quiet)
    s = ds.split("train")
    relative_start = {}
    for m in MODALITIES:
        active = np.abs(s.features[m]).sum(axis=2) > 0  # (N, L)
        lengths = s.lengths[m]
        start = active.argmax(axis=1)
        width = active.sum(axis=1)
        # one contiguous window of about window_frac of the true length, inside it
        assert np.all(active.any(axis=1))
        end = start + width
        assert all(active[i, start[i] : end[i]].all() for i in range(len(s)))
        expected = np.maximum(1, np.round(DEFAULTS.window_frac * lengths))
        np.testing.assert_array_equal(width, expected)
        assert np.all(end <= lengths)
        assert len(np.unique(start)) > 3  # the offset varies per clip
        relative_start[m] = start / np.maximum(lengths - width, 1)
        # distractor dimensions carry nothing
        dead = np.abs(s.features[m]).sum(axis=(0, 1)) == 0
        assert dead.sum() == round(DEFAULTS.distractor_frac * getattr(DEFAULTS, f"{m}_dim"))
    # the window is not at the same (relative) position across modalities
    assert np.corrcoef(relative_start["text"], relative_start["audio"])[0, 1] < 0.3
    assert np.corrcoef(relative_start["text"], relative_start["vision"])[0, 1] < 0.3


# ----------------------------------------------------------------------------------------------
# The signal really spreads over the modalities


def _pooled(split: Split, modalities: tuple[str, ...]) -> np.ndarray:
    """Masked mean and max over time, per modality (max picks up windowed evidence)."""
    parts = []
    for m in modalities:
        x = split.features[m].astype(np.float64)
        mask = split.mask(m)[:, :, None]
        parts.append(x.sum(axis=1) / split.lengths[m][:, None])
        parts.append(np.where(mask, x, -np.inf).max(axis=1))
    return np.concatenate(parts, axis=1)


def _ridge_test_mae(ds: MultimodalDataset, modalities: tuple[str, ...]) -> float:
    train, test = ds.split("train"), ds.split("test")
    model = make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-2, 3, 11)))
    model.fit(_pooled(train, modalities), train.labels)
    return float(np.abs(model.predict(_pooled(test, modalities)) - test.labels).mean())


@pytest.fixture(scope="module")
def ridge_maes(dataset: MultimodalDataset) -> dict[str, float]:
    combos = {
        "T": ("text",),
        "A": ("audio",),
        "V": ("vision",),
        "TA": ("text", "audio"),
        "TV": ("text", "vision"),
        "TAV": ("text", "audio", "vision"),
    }
    maes = {k: _ridge_test_mae(dataset, v) for k, v in combos.items()}
    test = dataset.split("test").labels
    maes["const"] = float(np.abs(test - np.median(dataset.split("train").labels)).mean())
    return maes


def test_all_modalities_beat_text_only(ridge_maes: dict[str, float]) -> None:
    m = ridge_maes
    assert m["T"] >= 1.25 * m["TAV"], m  # text alone is clearly short of the multimodal optimum


def test_audio_and_vision_each_add_information_beyond_text(ridge_maes: dict[str, float]) -> None:
    m = ridge_maes
    assert m["TA"] <= 0.93 * m["T"], m
    assert m["TV"] <= 0.93 * m["T"], m
    assert m["TAV"] <= 0.85 * min(m["TA"], m["TV"]), m


def test_no_single_modality_reaches_all_and_text_is_strongest(ridge_maes: dict[str, float]) -> None:
    m = ridge_maes
    for single in ("T", "A", "V"):
        assert m[single] >= 1.25 * m["TAV"], m
        assert m[single] <= 0.95 * m["const"], m  # every modality is informative on its own
    assert m["T"] < 0.85 * min(m["A"], m["V"]), m

"""``blank``: the same model with a modality's features replaced by zeros (what the stream adds)."""

import numpy as np
import pytest

from msalign.data import load_dataset
from msalign.errors import MsalignError

SMALL = "synthetic:n_train=24,n_valid=8,n_test=8"


def test_blank_zeroes_only_the_named_modality_and_keeps_masks():
    full = load_dataset(SMALL)
    blank = load_dataset(SMALL, blank="audio")
    for name in ("train", "valid", "test"):
        s, b = full.split(name), blank.split(name)
        assert not np.any(b.features["audio"]) and np.any(s.features["audio"])
        np.testing.assert_array_equal(b.lengths["audio"], s.lengths["audio"])
        np.testing.assert_array_equal(b.features["text"], s.features["text"])
        np.testing.assert_array_equal(b.labels, s.labels)
    assert blank.feature_spec.to_json()["options"]["blank"] == ["audio"]
    assert "blank" not in full.feature_spec.to_json().get("options", {})


def test_blank_unknown_modality_is_one_clear_error():
    with pytest.raises(MsalignError, match="cannot blank modality \\['smell'\\]"):
        load_dataset(SMALL, blank="smell")


def test_blank_is_replayed_from_a_checkpoint_spec(tmp_path):
    """evaluate passes a checkpoint's options back to load_dataset: the blanked stream stays blank."""
    trained = load_dataset(SMALL, blank=["vision", "audio"])
    replayed = load_dataset(SMALL, **trained.feature_spec.to_json()["options"])
    assert replayed.feature_spec.to_json()["options"]["blank"] == ["audio", "vision"]
    assert not np.any(replayed.split("test").features["vision"])

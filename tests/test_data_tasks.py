"""Explicit tasks and all-padding clips (issue 19, items 4 and 5): integer labels never silently
regress, the summary line says why, classification configs are chosen for the task."""

from __future__ import annotations

import json

import numpy as np
import pytest

from msalign.cli import main
from msalign.config import config_files
from msalign.data import load_dataset
from msalign.data.feature_dir import save_modality
from support import error, make_folder, write_labels


def test_integer_labels_need_a_task(tmp_path):
    make_folder(tmp_path / "mine", labels=[0, 1, 2] * 4)
    message = error(load_dataset, str(tmp_path / "mine"))
    assert "label.csv: key 'label': every label is an integer (3 values: 0, 1, 2)" in message
    assert "--task classification or --task regression" in message
    ds = load_dataset(str(tmp_path / "mine"), task="classification")
    assert (ds.task, ds.metric_set, ds.num_classes) == ("classification", "iemocap", 3)
    assert "--task classification" in ds.describe() and "3 classes" in ds.describe()
    assert ds.resolved_config_keys() == ("mine", "classification")
    ds = load_dataset(str(tmp_path / "mine"), task="regression")
    assert (ds.task, ds.metric_set) == ("regression", "mosi")
    make_folder(tmp_path / "binary", labels=[0, 1] * 6)  # binary 0/1 too
    assert "every label is an integer (2 values: 0, 1)" in error(load_dataset, str(tmp_path / "binary"))


def test_real_valued_and_named_labels_and_the_path_decide_alone(tmp_path):
    make_folder(tmp_path / "reals", labels=np.linspace(-2.5, 2.5, 12).round(2))
    ds = load_dataset(str(tmp_path / "reals"))
    assert ds.task == "regression" and "labels are real numbers" in ds.why
    make_folder(tmp_path / "names", labels=["neg", "neu", "pos"] * 4)
    assert "labels are class names" in load_dataset(str(tmp_path / "names")).why
    make_folder(tmp_path / "ints", labels=[-2, 0, 2] * 4)  # negative: not class indices
    assert load_dataset(str(tmp_path / "ints")).why.startswith("task: labels below 0")
    make_folder(tmp_path / "my_mosi", labels=[0, 1, 2] * 4)  # the path names a regression benchmark
    ds = load_dataset(str(tmp_path / "my_mosi"))
    assert ds.task == "regression" and ds.metric_set == "mosi" and "path names mosi" in ds.why
    assert "iemocap is the classification set" in error(
        load_dataset, str(tmp_path / "reals"), task="regression", metric_set="iemocap"
    )
    small = "synthetic:n_train=32,n_valid=16,n_test=16"
    ds = load_dataset(small, task="classification")
    assert ds.task == "classification" and ds.source == small and "task=classification" in ds.describe()
    assert "but --task regression" in error(load_dataset, small + ",task=classification", task="regression")


def test_classification_configs_are_chosen_for_the_task_not_iemocap(tmp_path):
    make_folder(tmp_path / "three", labels=[0, 1, 2] * 4)
    ds = load_dataset(str(tmp_path / "three"), task="classification")
    assert [p.name for p in config_files("decalign", ds.resolved_config_keys())] == ["classification.yaml"]
    make_folder(tmp_path / "IEMOCAP_feats", labels=[0, 1, 2, 3, 4, 5] * 2)
    iemocap = load_dataset(str(tmp_path / "IEMOCAP_feats"))
    assert [p.name for p in config_files("decalign", iemocap.resolved_config_keys())] == ["iemocap.yaml"]


def test_train_summary_names_task_metrics_and_config_files(tmp_path, capsys):
    make_folder(tmp_path / "three", labels=[0, 1, 2] * 4)
    args = [
        "train",
        "--model",
        "late_fusion",
        "--dataset",
        str(tmp_path / "three"),
        "--epochs",
        "1",
        "--out",
        str(tmp_path / "run"),
    ]
    assert main(args) == 2
    assert "pass --task classification" in capsys.readouterr().err
    assert main([*args, "--task", "classification"]) == 0
    summary = capsys.readouterr().err.splitlines()[0]
    assert "task classification (3 classes); metrics iemocap (task: --task classification" in summary
    assert summary.endswith("config files: configs/late_fusion/classification.yaml")
    # evaluate takes the task from the checkpoint
    assert (
        main(
            [
                "evaluate",
                "--checkpoint",
                str(tmp_path / "run" / "seed_1111"),
                "--dataset",
                str(tmp_path / "three"),
                "--json",
            ]
        )
        == 0
    )
    assert set(json.loads(capsys.readouterr().out)["metrics"]) >= {"WAcc", "WAF1"}


def test_empty_clips_drop_or_error(tmp_path, capsys):
    folder = tmp_path / "gaps"
    ids = write_labels(folder, np.linspace(-2, 2, 12).round(2), texts=[""] * 12)
    rng = np.random.default_rng(0)
    audio, vision = rng.normal(size=(12, 4, 3)), rng.normal(size=(12, 5, 2))
    for row in (0, 1, 7):  # two training clips and one validation clip with no input at all
        audio[row] = vision[row] = 0
    save_modality(folder, "audio", np.array(ids), audio)
    save_modality(folder, "vision", np.array(ids), vision)
    message = error(load_dataset, str(folder))
    assert "all padding in every modality (2 such rows" in message and "--empty-clips drop" in message
    ds = load_dataset(str(folder), empty_clips="drop")
    assert ds.dropped == {"train": 2, "valid": 1, "test": 0}
    assert [len(s) for s in ds.splits.values()] == [4, 2, 3] and ids[0] not in ds.splits["train"].ids
    assert "dropped all-padding clips: train 2, valid 1, test 0" in ds.describe()
    assert (
        main(
            [
                "train",
                "--model",
                "late_fusion",
                "--dataset",
                str(folder),
                "--epochs",
                "1",
                "--empty-clips",
                "drop",
                "--out",
                str(tmp_path / "run"),
            ]
        )
        == 0
    )
    assert "dropped all-padding clips: train 2, valid 1, test 0" in capsys.readouterr().err
    # recorded in the checkpoint: evaluate (and report) reload the same clips without the option
    assert main(["evaluate", "--checkpoint", str(tmp_path / "run" / "seed_1111"), "--dataset", str(folder)]) == 0
    assert ds.feature_spec.to_json()["options"]["empty_clips"] == "drop"
    for row in (9, 10, 11):
        audio[row] = vision[row] = 0
    save_modality(folder, "audio", np.array(ids), audio)
    save_modality(folder, "vision", np.array(ids), vision)
    assert "nothing left after --empty-clips drop" in error(load_dataset, str(folder), empty_clips="drop")


@pytest.mark.parametrize("option", ["--task", "--empty-clips"])
def test_options_are_on_every_data_command(option, capsys):
    for command in ("train", "evaluate", "benchmark", "sweep"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        assert option in capsys.readouterr().out


def test_text_encoding_says_when_it_starts(tmp_path, capsys):
    from msalign.data.text_encoder import TextEncoder

    encoder = TextEncoder(cache_dir=tmp_path / "cache", max_length=8)
    encoder.encode(["a good film", "a bad one"])
    err = capsys.readouterr().err
    assert "encoding 2 transcripts with minilm" in err and str(tmp_path / "cache") in err
    encoder.encode(["a good film", "a bad one", "new"])
    err = capsys.readouterr().err
    assert "encoding 1 transcripts with minilm" in err and "2 cached" in err
    encoder.encode(["a good film"])
    assert "encoding" not in capsys.readouterr().err  # nothing to encode: nothing said


def test_a_classification_pickle_gets_classification_yaml_unless_it_is_iemocap(tmp_path):
    import pickle

    from test_data_pickle import mmsa_data

    data = mmsa_data()
    for split in data.values():
        n = len(split["regression_labels"])
        split["classification_labels"] = np.arange(n) % 3
        del split["regression_labels"]
    (tmp_path / "emotions.pkl").write_bytes(pickle.dumps(data))
    ds = load_dataset(str(tmp_path / "emotions.pkl"))
    assert ds.task == "classification" and "the pickle's classification_labels" in ds.why
    assert [p.name for p in config_files("decalign", ds.resolved_config_keys())] == ["classification.yaml"]
    (tmp_path / "iemocap.pkl").write_bytes(pickle.dumps(data))
    iemocap = load_dataset(str(tmp_path / "iemocap.pkl"))
    assert [p.name for p in config_files("decalign", iemocap.resolved_config_keys())] == ["iemocap.yaml"]

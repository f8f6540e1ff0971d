"""msalign tune's files (experiments/tune_record.py): the search record written as it always was and
read back typed, older records without ``inputs``, one-line refusals, and the tuned config beside it."""

from __future__ import annotations

import dataclasses
import json
import os

import pytest
import yaml

from msalign.errors import MsalignError
from msalign.experiments.tune_record import (
    TrialRecord,
    TuneResult,
    read_search_record,
    search_record_path,
    tuned_config_path,
    write_search_record,
    write_tuned,
)


def _record() -> TuneResult:
    best = TrialRecord(1, "COMPLETE", {"train.lr": 0.001, "model.layers": 2}, 0.71, {"MAE": 0.71}, "search/trial_b")
    return TuneResult(
        model="text_only",
        dataset="synthetic",
        dataset_key="synthetic",
        metric_set="mosi",
        inputs={"describe": "synthetic", "encoders": {}, "feature_spec": "0123456789abcdef"},
        selection={"split": "valid", "metric": "MAE", "mode": "min", "rule": "lowest validation MAE"},
        space=[{"key": "train.lr", "kind": "float", "low": 1e-4, "high": 1e-2, "log": True}],
        fixed=["model.width"],
        budget={"trials": 2, "epochs": 1, "patience": 5, "search_seeds": [1111]},
        sampler={"name": "TPESampler", "seed": 0},
        base_config={"model": {"layers": 1}, "train": {"lr": 0.0005}},
        trials=[
            TrialRecord(0, "FAIL", {"train.lr": 0.01, "model.layers": 1}, None, None, None, "seed 1111: diverged"),
            best,
        ],
        best=best,
        config={"model": {"layers": 2}, "train": {"lr": 0.001}},
        seeds=[1111, 1112],
        final={"dir": "final", "valid": {"MAE": 0.7}, "valid_std": {}, "test": {"MAE": 0.8}, "test_std": {}},
        date="2025-01-01T00:00:00+00:00",
        git_revision="abc",
        versions={"msalign": "0.1.0"},
        files={"config": "synthetic.yaml", "record": "synthetic.search.json"},
    )


def test_a_record_is_written_as_before_and_read_back_typed(tmp_path):
    record = _record()
    path = search_record_path(tmp_path, "synthetic")
    write_search_record(path, record)
    text = path.read_text()
    assert text == json.dumps(dataclasses.asdict(record), indent=2) + "\n"  # the on-disk format
    assert list(json.loads(text)) == [f.name for f in dataclasses.fields(TuneResult)]
    again = read_search_record(path)
    assert again == record and isinstance(again.best, TrialRecord) and isinstance(again.trials[0], TrialRecord)


def test_a_record_from_before_inputs_reads(tmp_path):
    value = json.loads(_record().to_json())
    del value["inputs"]  # records written before the inputs were recorded (configs/mult/mosi.search.json)
    path = tmp_path / "mosi.search.json"
    path.write_text(json.dumps(value))
    assert read_search_record(path).inputs == {}


def test_the_tuned_config_and_the_record_go_side_by_side(tmp_path):
    record = _record()
    write_tuned(tmp_path, record, {"model": {"layers": 2}, "train": {"lr": 0.001}})
    text = tuned_config_path(tmp_path, "synthetic").read_text()
    assert text.startswith("# text_only on synthetic: tuned by `msalign tune` on the VALIDATION split only")
    assert yaml.safe_load(text) == {"model": {"layers": 2}, "train": {"lr": 0.001}}
    assert read_search_record(tmp_path / "synthetic.search.json") == record


def _without_best_params(value: dict) -> None:
    del value["best"]["params"]


@pytest.mark.parametrize(
    "text, change, message",
    [
        ("{", None, "the search record is not valid JSON"),
        ("[]", None, "the search record is not a JSON object"),
        ('{"model": "m"}', None, "key 'dataset_key': missing (not written by msalign tune?)"),
        (None, lambda value: value.update(trials={"0": {}}), "key 'trials': expected a JSON list"),
        (None, lambda value: value.update(trials=[3]), "key 'trials[0]': expected a trial object"),
        (None, _without_best_params, "key 'best.params': missing"),
    ],
)
def test_a_damaged_record_is_one_line_naming_file_and_key(tmp_path, text, change, message):
    path = tmp_path / "synthetic.search.json"
    if text is None:
        value = json.loads(_record().to_json())
        change(value)
        text = json.dumps(value)
    path.write_text(text)
    with pytest.raises(MsalignError) as error:
        read_search_record(path)
    assert str(error.value).startswith(f"{path}: ") and message in str(error.value)
    assert "\n" not in str(error.value)


def test_a_missing_or_special_record_is_refused_without_blocking(tmp_path):
    with pytest.raises(MsalignError, match="no such file"):
        read_search_record(tmp_path / "none.search.json")
    fifo = tmp_path / "fifo.search.json"
    os.mkfifo(fifo)
    with pytest.raises(MsalignError, match="not a regular file"):
        read_search_record(fifo)

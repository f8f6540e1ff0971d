"""msalign.metrics: golden values from the peers' metric code, plus hand-made edge cases."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from msalign.errors import MsalignError
from msalign.metrics import (
    METRIC_SETS,
    compute,
    format_table,
    headline_keys,
    selection_metric,
    summarize,
)

# MMSA's and the DecAlign code's outputs on fixed inputs (a copy of ../shared/reference/metrics_golden.json)
GOLDEN = Path(__file__).resolve().parent / "data" / "metrics_golden.json"


def _golden_cases() -> list:
    cases = json.loads(GOLDEN.read_text())["cases"]
    return [
        pytest.param(c, id=f"{i}-{c['dataset']}-{len(c.get('truth', c.get('labels')))}") for i, c in enumerate(cases)
    ]


@pytest.mark.parametrize("case", _golden_cases())
def test_golden(case: dict) -> None:
    preds = case["preds"] if "preds" in case else case["logits"]
    truth = case["truth"] if "truth" in case else case["labels"]
    got = compute(preds, truth, case["dataset"])
    for key, want in case["expected"].items():
        assert key in got, key
        assert abs(got[key] - want) <= 5e-5, (key, got[key], want)
        assert type(got[key]) is float


def test_golden_through_float32_tensor() -> None:
    """Peers evaluate float32 tensors; tensors and lists must give the same result."""
    case = next(c for c in json.loads(GOLDEN.read_text())["cases"] if c["dataset"] == "SIMS")
    got = compute(torch.tensor(case["preds"]), torch.tensor(case["truth"]), "sims")
    assert got == compute(case["preds"], case["truth"], "SIMS")


def test_acc7_rounds_halves_to_even() -> None:
    # np.round: 0.5 -> 0, 1.5 -> 2, 2.5 -> 2, -0.5 -> -0; clip to [-3, 3] first (3.7 -> 3).
    preds = [0.5, 1.5, 2.5, -0.5, 3.7, -2.5]
    truth = [0.0, 2.0, 2.0, 0.0, 3.0, -3.0]
    r = compute(preds, truth, "mosi")
    assert r["Mult_acc_7"] == round(5 / 6, 4)
    # Acc-5 clips to [-2, 2]: 2.5 -> 2 and 3.7 -> 2 both match truth 2 (3 -> 2); -2.5 -> -2 == clip(-3).
    assert r["Mult_acc_5"] == 1.0


def test_non0_excludes_zero_truth_and_has0_counts_it() -> None:
    preds = [0.3, -0.2, -1.0, 1.0]
    truth = [0.0, 0.0, -2.0, 2.0]
    r = compute(np.array(preds), np.array(truth), "MOSEI")
    assert r["Non0_acc_2"] == 1.0 and r["Non0_F1_score"] == 1.0
    # Has0: truth 0 counts as positive (>= 0): the -0.2 prediction is wrong.
    assert r["Has0_acc_2"] == 0.75
    assert r["MAE"] == round((0.3 + 0.2 + 1 + 1) / 4, 4)


def test_mosi_metrics_are_unclipped_for_mae() -> None:
    r = compute([5.0, -5.0], [3.0, -3.0], "mosi")
    assert r["MAE"] == 2.0 and r["Corr"] == 1.0 and r["Mult_acc_7"] == 1.0


def test_sims_bucket_edges_are_lo_exclusive_hi_inclusive() -> None:
    # 3-class edges (-1.01, -0.1, 0.1, 1.01): -0.1 is negative, 0.1 is neutral.
    r = compute([-0.1, 0.1, 0.05], [-0.5, 0.0, 0.1], "sims")
    assert r["Mult_acc_3"] == 1.0
    # 2-class edge 0: 0.0 belongs to the negative class, anything above to the positive one.
    r = compute([0.0, 0.01], [-0.3, 0.3], "sims")
    assert r["Mult_acc_2"] == 1.0 and r["F1_score"] == 1.0
    # 5-class edges (..., -0.7, -0.1, 0.1, 0.7, ...): -0.7 stays in the lowest class; values clip to [-1, 1].
    r = compute([-0.7, 0.7, -3.0], [-0.9, 0.5, -1.0], "sims")
    assert r["Mult_acc_5"] == 1.0
    assert r["MAE"] == round((0.2 + 0.2 + 0.0) / 3, 4)


def test_constant_input_gives_zero_corr() -> None:
    r = compute([0.5, 0.5, 0.5], [1.0, -1.0, 2.0], "mosi")
    assert r["Corr"] == 0.0
    assert compute([0.2, 0.4], [0.3, 0.3], "sims")["Corr"] == 0.0


def test_iemocap_argmax_and_weighted_f1() -> None:
    logits = np.eye(6)[[0, 1, 2, 3, 4, 5, 0, 0]]
    labels = [0, 1, 2, 3, 4, 5, 1, 0]
    r = compute(logits, labels, "IEMOCAP")
    assert r["WAcc"] == r["Acc"] == 0.875
    assert r["WAF1"] == r["F1_score"]
    assert 0.8 < r["WAF1"] < 0.875
    with pytest.raises(MsalignError, match="logits"):
        compute(np.zeros(8), labels, "iemocap")
    with pytest.raises(MsalignError, match="labels"):
        compute(logits, [0, 1, 2, 3, 4, 6, 1, 0], "iemocap")


@pytest.mark.parametrize(
    ("preds", "truth", "dataset", "match"),
    [
        ([0.1, 0.2], [0.1], "mosi", r"length.*\(2,\).*\(1,\)"),
        ([], [], "mosi", "empty"),
        ([0.1, float("nan")], [0.1, 0.2], "sims", "non-finite"),
        ([0.1, 0.2], [0.1, float("inf")], "mosi", "non-finite"),
        ([0.1, 0.2], [0.1, 0.2], "cmu-mosi", "unknown metric set"),
        ([["a"], ["b"]], [0.1, 0.2], "mosi", "not numeric"),
    ],
)
def test_invalid_inputs_raise(preds: list, truth: list, dataset: str, match: str) -> None:
    with pytest.raises(MsalignError, match=match) as exc:
        compute(preds, truth, dataset)
    assert "\n" not in str(exc.value)


def test_summarize_uses_population_std() -> None:
    mean, std = summarize([{"MAE": 1.0, "Corr": 0.5}, {"MAE": 2.0, "Corr": 0.7, "extra": 1.0}])
    assert mean == {"MAE": 1.5, "Corr": 0.6}
    assert std == {"MAE": 0.5, "Corr": 0.1}  # ddof=0; sample std would be 0.7071
    with pytest.raises(MsalignError):
        summarize([])


def test_selection_and_headline_keys() -> None:
    assert METRIC_SETS == ("mosi", "mosei", "sims", "iemocap")
    assert selection_metric("MOSI") == ("MAE", "min")
    assert selection_metric("sims") == ("MAE", "min")
    assert selection_metric("iemocap") == ("WAF1", "max")
    for ds in METRIC_SETS:  # every headline key is produced by compute
        preds = np.eye(6)[[0, 1]] if ds == "iemocap" else [0.3, -0.4]
        truth = [0, 1] if ds == "iemocap" else [0.5, -0.2]
        assert set(headline_keys(ds)) <= set(compute(preds, truth, ds))
    with pytest.raises(MsalignError):
        selection_metric("foo")


def test_format_table() -> None:
    rows = {"a": {"Non0_acc_2": 0.80071, "MAE": 0.99771}, "b": {"MAE": 1.2}}
    table = format_table(rows, ["Non0_acc_2", "MAE"])
    lines = table.splitlines()
    assert lines[0] == "| name | Non0_acc_2 | MAE |"
    assert lines[2] == "| a | 80.07 | 0.998 |"
    assert lines[3] == "| b | – | 1.200 |"
    assert format_table(rows).splitlines()[0] == "| name | Non0_acc_2 | MAE |"

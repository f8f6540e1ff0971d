"""msalign sweep: grid points trained and summarised, selection on validation only, resumable, one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from msalign.cli import main
from msalign.errors import MsalignError
from msalign.experiments import sweep
from msalign.models import build_config
from msalign.training.run_folder import SweepPoint

TINY = "synthetic:n_train=160,n_valid=48,n_test=48"
SMALL = ["--epochs", "2", "--set", "width=16", "heads=2", "layers=1", "train.threads=1"]
GRID = ["--grid", "alpha=0.01,0.1", "beta=0.01,0.1"]


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sweep") / "run"
    assert main(["sweep", "--model", "decalign", "--dataset", TINY, *GRID, *SMALL, "--out", str(out)]) == 0
    return out


def test_sweep_writes_every_point_and_both_summaries(sweep_dir):
    summary = json.loads((sweep_dir / "sweep.json").read_text())
    assert summary["model"] == "decalign" and summary["complete"] is True
    assert summary["grid"] == {"alpha": [0.01, 0.1], "beta": [0.01, 0.1]}
    assert [p["params"] for p in summary["points"]] == [
        {"alpha": 0.01, "beta": 0.01},
        {"alpha": 0.01, "beta": 0.1},
        {"alpha": 0.1, "beta": 0.01},
        {"alpha": 0.1, "beta": 0.1},
    ]
    for point in summary["points"]:
        results = json.loads((sweep_dir / point["dir"] / "results.json").read_text())
        # each point really ran with its own weights, and the summary holds that run's numbers
        assert results["config"]["model"]["alpha"] == point["params"]["alpha"]
        assert results["config"]["model"]["beta"] == point["params"]["beta"]
        assert point["test"] == results["mean"]
        assert point["valid"]["MAE"] == pytest.approx(results["per_seed"][0]["valid"]["MAE"])
    table = (sweep_dir / "sweep.md").read_text()
    assert table.count("← best on valid") == 1
    assert "validation MAE" in table and len([line for line in table.splitlines() if line.startswith("| 0.")]) == 4


def test_best_point_is_the_lowest_validation_mae(sweep_dir):
    summary = json.loads((sweep_dir / "sweep.json").read_text())
    lowest = min(summary["points"], key=lambda p: p["valid"]["MAE"])
    assert summary["best"]["label"] == lowest["label"]
    assert summary["selection"] == {
        "split": "valid",
        "metric": "MAE",
        "mode": "min",
        "rule": summary["selection"]["rule"],
    }


def test_selection_ignores_the_test_split():
    def point(label, params, valid, test):
        return SweepPoint(label, params, label, valid, {}, test, {})

    points = [
        point("a", {"alpha": 1}, {"MAE": 0.90}, {"MAE": 0.70}),
        point("b", {"alpha": 2}, {"MAE": 0.80}, {"MAE": 0.99}),
        point("c", {"alpha": 3}, {"MAE": 0.80}, {"MAE": 0.50}),  # tie: earlier wins
    ]
    assert sweep.select_best(points, "MAE", "min").label == "b"
    f1 = [point("a", {}, {"WAF1": 0.4}, {"WAF1": 0.9}), point("b", {}, {"WAF1": 0.6}, {"WAF1": 0.1})]
    assert sweep.select_best(f1, "WAF1", "max").label == "b"


def test_second_run_trains_nothing(sweep_dir, monkeypatch, capsys):
    import msalign.training.run as run

    before = (sweep_dir / "sweep.json").read_text()

    def no_training(*args, **kwargs):
        raise AssertionError("a finished seed was trained again")

    monkeypatch.setattr(run, "train_seed", no_training)
    capsys.readouterr()
    assert main(["sweep", "--model", "decalign", "--dataset", TINY, *GRID, *SMALL, "--out", str(sweep_dir)]) == 0
    assert capsys.readouterr().err.count("already finished") == 4
    assert (sweep_dir / "sweep.json").read_text() == before


@pytest.mark.parametrize(
    ("grid", "message"),
    [
        (["gamma=1,2"], "--grid gamma: not a config key of model decalign"),
        (["alpha=abc"], "--grid: config key 'model.alpha': expected a number"),
        (["alpha=0.1,"], "--grid 'alpha=0.1,': empty value"),
        (["alpha"], "--grid 'alpha': expected key=value1,value2"),
        (["alpha=0.1,0.1"], "--grid alpha: a value is listed twice"),
        (["alpha=0.1", "alpha=0.2"], "--grid alpha: key given twice"),
        (["width=30"], "--grid point width=30: decalign: width 30 is not divisible by heads"),
    ],
)
def test_bad_grid_is_one_line_error_before_training(tmp_path, capsys, grid, message):
    out = tmp_path / "never"
    assert main(["sweep", "--model", "decalign", "--dataset", TINY, "--grid", *grid, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("msalign:")]
    assert len(errors) == 1 and errors[0].startswith(f"msalign: error: {message}"), err
    assert "Traceback" not in err
    assert not out.exists()


def test_a_sweep_of_another_model_is_refused_in_the_same_directory(sweep_dir, capsys):
    assert (
        main(
            [
                "sweep",
                "--model",
                "late_fusion",
                "--dataset",
                TINY,
                "--grid",
                "dropout=0.1",
                "--epochs",
                "1",
                "--out",
                str(sweep_dir),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("msalign: error: ") and f"a sweep of model decalign on {TINY}, not late_fusion" in err[-1]
    assert not (sweep_dir / "dropout=0.1").exists()


def test_parse_and_check_grid_types_and_order():
    grid = sweep.check_grid(
        "decalign",
        build_config("decalign"),
        sweep.parse_grid(["model.width=16,32", "homo=true,false", "covariance=diag"]),
    )
    assert grid == {"width": [16, 32], "homo": [True, False], "covariance": ["diag"]}
    points = sweep.grid_points(grid)
    assert len(points) == 4 and points[0] == {"width": 16, "homo": True, "covariance": "diag"}
    assert sweep.point_label(points[1]) == "width=16_homo=false_covariance=diag"
    with pytest.raises(MsalignError, match="no key given"):
        sweep.parse_grid([])

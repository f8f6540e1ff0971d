"""The CLI end to end: train / evaluate / models / benchmark, and one-line user errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from msalign.cli import main

TINY = "synthetic:n_train=160,n_valid=48,n_test=48"


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    return subprocess.run(
        [sys.executable, "-m", "msalign.cli", *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=600
    )


def test_train_text_only_writes_results_json(tmp_path):
    """The issue's command, verbatim, in a fresh process."""
    out = tmp_path / "run"
    proc = run_cli(
        "train",
        "--model",
        "text_only",
        "--dataset",
        "synthetic",
        "--seeds",
        "1111",
        "--epochs",
        "2",
        "--out",
        str(out),
        "--set",
        "train.threads=1",
    )
    assert proc.returncode == 0, proc.stderr
    results = json.loads((out / "results.json").read_text())
    assert set(results) >= {"model", "dataset", "config", "seeds", "per_seed", "mean", "std"}
    assert results["model"] == "text_only" and results["seeds"] == [1111]
    assert set(results["config"]) == {"model", "train"} and results["config"]["train"]["epochs"] == 2
    (seed,) = results["per_seed"]
    assert set(seed) >= {"seed", "best_epoch", "valid", "test"} and seed["seed"] == 1111
    assert 0 <= seed["best_epoch"] < 2
    for split in ("valid", "test"):
        assert set(seed[split]) >= {"Has0_acc_2", "Non0_acc_2", "Non0_F1_score", "Mult_acc_7", "MAE", "Corr"}
    assert results["mean"] == seed["test"] and all(v == 0 for v in results["std"].values())
    assert (out / "seed_1111" / "model.safetensors").is_file()
    assert "| text_only |" in proc.stdout and "Traceback" not in proc.stderr


def test_two_seeds_mean_and_population_std(tmp_path):
    assert (
        main(
            [
                "train",
                "--model",
                "text_only",
                "--dataset",
                TINY,
                "--seeds",
                "1111,1112",
                "--epochs",
                "1",
                "--out",
                str(tmp_path),
            ]
        )
        == 0
    )
    results = json.loads((tmp_path / "results.json").read_text())
    maes = [s["test"]["MAE"] for s in results["per_seed"]]
    assert results["mean"]["MAE"] == pytest.approx(sum(maes) / 2, abs=1e-4)
    assert results["std"]["MAE"] == pytest.approx(abs(maes[0] - maes[1]) / 2, abs=1e-4)  # population std


def test_same_command_twice_gives_identical_results(tmp_path):
    args = ["train", "--model", "late_fusion", "--dataset", TINY, "--seeds", "1111", "--epochs", "2"]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    assert main([*args, "--out", str(tmp_path / "b")]) == 0
    first = (tmp_path / "a" / "results.json").read_text()
    assert first == (tmp_path / "b" / "results.json").read_text()


def test_finished_seeds_are_skipped(tmp_path, capsys):
    args = [
        "train",
        "--model",
        "text_only",
        "--dataset",
        TINY,
        "--seeds",
        "1111",
        "--epochs",
        "1",
        "--out",
        str(tmp_path),
    ]
    assert main(args) == 0
    before = (tmp_path / "results.json").read_text()
    capsys.readouterr()
    assert main(args) == 0
    assert "already finished" in capsys.readouterr().err
    assert (tmp_path / "results.json").read_text() == before


def test_evaluate_reproduces_the_test_metrics(tmp_path, capsys):
    assert main(["train", "--model", "late_fusion", "--dataset", TINY, "--epochs", "2", "--out", str(tmp_path)]) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    capsys.readouterr()
    ckpt = tmp_path / "seed_1111" / "model.safetensors"
    assert main(["evaluate", "--checkpoint", str(ckpt), "--dataset", TINY, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["metrics"] == results["per_seed"][0]["test"]
    assert main(["evaluate", "--checkpoint", str(ckpt), "--dataset", TINY, "--split", "valid", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["metrics"] == results["per_seed"][0]["valid"]


def test_evaluate_refuses_other_feature_spec(tmp_path, capsys):
    assert main(["train", "--model", "text_only", "--dataset", TINY, "--epochs", "1", "--out", str(tmp_path)]) == 0
    ckpt = str(tmp_path / "seed_1111" / "model.safetensors")
    capsys.readouterr()
    assert main(["evaluate", "--checkpoint", ckpt, "--dataset", TINY + ",text_dim=16"]) == 2
    assert "text features of dim 32, the data has 16" in capsys.readouterr().err
    capsys.readouterr()
    assert main(["evaluate", "--checkpoint", ckpt, "--dataset", TINY.replace("synthetic:", "synthetic:seed=5,")]) == 2
    assert "feature spec seed=0" in capsys.readouterr().err


def test_models_lists_the_registry(capsys):
    assert main(["models"]) == 0
    listed = capsys.readouterr().out
    for name in ("text_only", "late_fusion", "mult", "decalign"):
        assert name in listed


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "--model", "nope", "--dataset", TINY, "--out", "X"], "unknown model 'nope'"),
        (["train", "--model", "text_only", "--dataset", "/no/such/dir", "--out", "X"], "/no/such/dir"),
        (["train", "--model", "text_only", "--dataset", TINY, "--out", "X", "--set", "widht=3"], "widht"),
        (
            ["train", "--model", "text_only", "--dataset", TINY, "--out", "X", "--set", "width=wide"],
            "expected an integer",
        ),
        (["train", "--model", "text_only", "--dataset", TINY, "--out", "X", "--seeds", "a,b"], "--seeds"),
        (["train", "--model", "text_only", "--dataset", TINY, "--out", "X", "--epochs", "0"], "--epochs"),
        (["train", "--model", "text_only", "--dataset", "synthetic:bogus=1", "--out", "X"], "bogus"),
        (["train", "--model", "decalign", "--dataset", TINY, "--modalities", "text", "--out", "X"], "at least 2"),
        (["evaluate", "--checkpoint", "/no/such.safetensors", "--dataset", TINY], "no such file"),
    ],
)
def test_user_errors_are_one_line(tmp_path, capsys, args, message):
    args = [str(tmp_path / "out") if a == "X" else a for a in args]
    assert main(args) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in lines if line.startswith("msalign: error:")]
    assert len(errors) == 1 and errors[0] == lines[-1] and message in errors[0]
    assert not (tmp_path / "out" / "results.json").exists()


def test_user_error_in_a_real_process_has_no_traceback(tmp_path):
    proc = run_cli(
        "train", "--model", "text_only", "--dataset", str(tmp_path / "missing"), "--out", str(tmp_path / "o")
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_late_fusion_on_real_mosi(tmp_path, mosi_dir, mosi_cache):
    """The issue's command on the real text + audio data (2 epochs)."""
    assert (
        main(
            [
                "train",
                "--model",
                "late_fusion",
                "--dataset",
                str(mosi_dir),
                "--epochs",
                "2",
                "--out",
                str(tmp_path),
                "--cache-dir",
                str(mosi_cache),
                "--set",
                "train.threads=1",
            ]
        )
        == 0
    )
    results = json.loads((tmp_path / "results.json").read_text())
    test = results["per_seed"][0]["test"]
    # a trained model on real transcripts is far above chance (50%) and the constant predictor (MAE ~1.2)
    assert test["Non0_acc_2"] > 0.65 and test["MAE"] < 1.2


def test_set_takes_several_pairs_per_flag():
    from msalign.cli import build_parser

    args = build_parser().parse_args(
        [
            "train",
            "--model",
            "decalign",
            "--dataset",
            "synthetic",
            "--set",
            "width=16",
            "heads=2",
            "--set",
            "lr=0.01",
            "--out",
            "x",
        ]
    )
    assert args.set == ["width=16", "heads=2", "lr=0.01"]


def test_benchmark_runs_model_variants(tmp_path, capsys):
    out = tmp_path / "bench"
    args = [
        "benchmark",
        "--models",
        "text_only,text_only[layers=0,width=8]",
        "--dataset",
        TINY,
        "--seeds",
        "1111",
        "--epochs",
        "1",
        "--set",
        "threads=1",
        "--out",
        str(out),
    ]
    assert main(args) == 0
    table = json.loads((out / "table.json").read_text())
    assert list(table["models"]) == ["text_only", "text_only[layers=0,width=8]"]
    variant = json.loads((out / "text_only[layers=0,width=8]" / "results.json").read_text())
    assert variant["model"] == "text_only" and variant["config"]["model"]["width"] == 8
    assert json.loads((out / "text_only" / "results.json").read_text())["config"]["model"]["width"] != 8
    assert "| text_only[layers=0,width=8] |" in capsys.readouterr().out


@pytest.mark.parametrize(
    "models, message",
    [
        ("decalign[hete=false", "unbalanced"),
        ("decalign[hete]", "not key=value"),
        ("text_only,text_only", "twice"),
        ("decalign[hete=false]x", "trailing"),
    ],
)
def test_benchmark_rejects_bad_model_lists(tmp_path, capsys, models, message):
    assert main(["benchmark", "--models", models, "--dataset", TINY, "--out", str(tmp_path / "b")]) == 2
    assert message in capsys.readouterr().err

"""Crash safety and determinism: kill -9 mid-training, ``--resume``, and the same metrics as an
uninterrupted run; finished (model, seed) pairs of a benchmark are never redone; the same command
twice gives a byte-identical results.json."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from msalign.cli import main
from msalign.training import module as module_mod

TINY = "synthetic:n_train=64,n_valid=24,n_test=24"


def _args(model: str, out: Path, epochs: int = 4, sets: tuple[str, ...] = ()) -> list[str]:
    return [
        "train",
        "--model",
        model,
        "--dataset",
        TINY,
        "--epochs",
        str(epochs),
        "--seeds",
        "1111",
        "--set",
        "train.threads=1",
        *sets,
        "--out",
        str(out),
    ]


def _train_and_kill(model: str, out: Path, sets: tuple[str, ...] = ()) -> None:
    """A real process, killed with SIGKILL as soon as the first epoch's last.ckpt exists."""
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    proc = subprocess.Popen(
        [sys.executable, "-m", "msalign.cli", *_args(model, out, sets=sets)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    last = out / "seed_1111" / "lightning" / "last.ckpt"
    deadline = time.monotonic() + 300
    while not last.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, err.decode()[-2000:]
    assert last.exists() and not (out / "results.json").exists()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("model", "sets"),
    [("decalign", ()), ("dashfusion", ()), ("late_fusion", ("train.ema_decay=0.8",))],  # EMA: the average resumes too
)
def test_kill_then_resume_matches_an_uninterrupted_run(model, sets, tmp_path, monkeypatch, capsys):
    _train_and_kill(model, tmp_path / "killed", sets)

    epochs_started = []
    original = module_mod.MSALightningModule.on_train_epoch_start

    def record(self):
        epochs_started.append(self.current_epoch)
        return original(self)

    monkeypatch.setattr(module_mod.MSALightningModule, "on_train_epoch_start", record)
    assert main([*_args(model, tmp_path / "killed", sets=sets), "--resume"]) == 0
    assert "resuming from" in capsys.readouterr().err
    assert (
        epochs_started and epochs_started[0] >= 1 and epochs_started == sorted(set(epochs_started))
    )  # no epoch redone

    assert main(_args(model, tmp_path / "whole", sets=sets)) == 0
    for name in ("results.json", "seed_1111/history.json"):
        assert (tmp_path / "killed" / name).read_text() == (tmp_path / "whole" / name).read_text(), name


def test_resume_refuses_a_checkpoint_of_another_run(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(_args("late_fusion", out, epochs=1)) == 0
    (out / "seed_1111" / "result.json").unlink()  # as if killed before the seed finished
    capsys.readouterr()
    assert main([*_args("late_fusion", out, epochs=1), "--set", "train.lr=0.5", "--resume"]) == 2
    err = capsys.readouterr().err.strip().splitlines()  # the dataset's description, then the error
    assert err[-1].startswith("msalign: error: --resume: ") and "last.ckpt is from another run" in err[-1]
    assert "Traceback" not in "".join(err) and sum(line.startswith("msalign:") for line in err) == 1


def test_resume_without_a_checkpoint_starts_fresh(tmp_path):
    assert main([*_args("text_only", tmp_path / "a", epochs=1), "--resume"]) == 0
    assert main(_args("text_only", tmp_path / "b", epochs=1)) == 0
    assert (tmp_path / "a" / "results.json").read_text() == (tmp_path / "b" / "results.json").read_text()


def test_benchmark_killed_midway_does_not_redo_finished_runs(tmp_path, monkeypatch, capsys):
    from msalign.training import run

    trained = []
    original = run.train_seed

    def counting(spec, seed, *args, **kwargs):
        trained.append((spec.model_name, seed))
        if len(trained) == 3 and kill:
            raise KeyboardInterrupt  # the third (model, seed) pair is cut off
        return original(spec, seed, *args, **kwargs)

    monkeypatch.setattr(run, "train_seed", counting)
    args = [
        "benchmark",
        "--models",
        "text_only,late_fusion",
        "--dataset",
        TINY,
        "--seeds",
        "1111,1112",
        "--epochs",
        "1",
        "--set",
        "train.threads=1",
        "--out",
        str(tmp_path / "bench"),
    ]
    kill = True
    assert main(args) == 130
    assert not (tmp_path / "bench" / "table.json").exists()
    kill = False
    trained.clear()
    assert main([*args, "--resume"]) == 0
    assert trained == [("late_fusion", 1111), ("late_fusion", 1112)]
    assert capsys.readouterr().err.count("already finished") == 2
    first = (tmp_path / "bench" / "table.json").read_text()
    trained.clear()
    assert main(args) == 0 and trained == []  # everything finished: nothing is trained again
    assert (tmp_path / "bench" / "table.json").read_text() == first


@pytest.mark.parametrize("model", ["decalign", "dashfusion"])
def test_same_command_twice_gives_identical_results_json(model, tmp_path):
    assert main(_args(model, tmp_path / "a", epochs=2)) == 0
    assert main(_args(model, tmp_path / "b", epochs=2)) == 0
    assert (tmp_path / "a" / "results.json").read_bytes() == (tmp_path / "b" / "results.json").read_bytes()

"""Multi-process training (DDP through Lightning): metrics are computed once over the whole split,
from predictions gathered over all ranks, and equal those of the same model scored on one process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from msalign import metrics
from msalign.data import load_dataset
from msalign.training.checkpoint import load_checkpoint
from msalign.training.data import MSADataModule
from msalign.training.module import _first_occurrences, predict_split

# 37 test and 31 valid clips: odd sizes, so the distributed sampler pads each split with repeated
# rows and the two ranks' shards end in a partial batch
DATASET = "synthetic:n_train=96,n_valid=31,n_test=37"


def test_first_occurrences_keeps_each_row_once_in_index_order():
    index = torch.tensor([4, 0, 2, 4, 0, 7])
    unique, first = _first_occurrences(index)
    assert unique.tolist() == [0, 2, 4, 7]
    assert first.tolist() == [1, 2, 0, 5]


def _run_ddp(args: list[str], out: Path) -> subprocess.CompletedProcess:
    """``msalign ARGS`` in 2 CPU processes (gloo) in a child interpreter; it succeeds and only rank 0
    prints the table (rank 1's stdout goes nowhere)."""
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    two_processes = ["--devices", "2", "--strategy", "ddp", "--accelerator", "cpu"]
    command = [sys.executable, "-m", "msalign.cli", *args, *two_processes, "--out", str(out)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("| name |") == 1, done.stdout
    return done


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory) -> Path:
    """decalign trained for 2 epochs by 2 CPU processes (gloo), through the CLI."""
    out = tmp_path_factory.mktemp("ddp") / "run"
    train = ["train", "--model", "decalign", "--dataset", DATASET, "--epochs", "2", "--seeds", "1111"]
    _run_ddp([*train, "--set", "threads=1", "batch_size=8"], out)
    return out


@pytest.mark.slow
def test_ddp_metrics_equal_single_process_metrics_of_the_same_model(ddp_run: Path):
    results = json.loads((ddp_run / "results.json").read_text())
    seed = results["per_seed"][0]
    assert results["config"]["train"]["devices"] == 2 and results["config"]["train"]["strategy"] == "ddp"

    model, info = load_checkpoint(ddp_run / "seed_1111" / "model.safetensors")
    dataset = load_dataset(DATASET)
    data = MSADataModule(dataset, model.modalities, batch_size=8, seed=0)
    saved = np.load(ddp_run / "seed_1111" / "predictions.npz")
    for split, loader in (("valid", data.val_dataloader()), ("test", data.test_dataloader())):
        preds, labels = predict_split(model, loader, "cpu")  # one process, the whole split in order
        # every clip once, in split order: the sampler's padding repeats were dropped
        assert saved[f"{split}_ids"].tolist() == dataset.split(split).ids
        np.testing.assert_allclose(saved[f"{split}_predictions"], preds, rtol=0, atol=1e-5)
        np.testing.assert_array_equal(saved[f"{split}_labels"], labels)
        single = metrics.compute(preds, labels, dataset.metric_set)
        for key, value in single.items():
            assert abs(seed[split][key] - value) <= 1e-4, (split, key, seed[split][key], value)
    assert info.metrics is not None and info.metrics["test"] == seed["test"]


def test_ddp_history_has_one_row_per_epoch_with_losses_over_both_ranks(ddp_run: Path):
    history = json.loads((ddp_run / "seed_1111" / "history.json").read_text())
    # the post-fit validate/test passes that score the best weights add no rows
    assert [row["epoch"] for row in history] == [0, 1]
    assert all(np.isfinite(row["train/loss"]) and row["train/loss"] > 0 for row in history)
    assert all("valid/MAE" in row for row in history)


@pytest.mark.parametrize(
    "option, message",
    [
        (["--strategy", "nonsense"], "train.strategy 'nonsense'"),
        (["--accelerator", "warp-drive"], "train.accelerator 'warp-drive'"),
        (["--devices", "0"], "--devices 0: must be at least 1"),
        (["--set", "train.num_nodes=0"], "'train.num_nodes': 0 is out of range (an integer from 1 to 10000)"),
    ],
)
def test_device_settings_lightning_refuses_are_one_line_errors(tmp_path, capsys, option, message):
    from msalign.cli import main

    code = main(
        [
            "train",
            "--model",
            "text_only",
            "--dataset",
            "synthetic:n_train=32,n_valid=16,n_test=16",
            "--epochs",
            "1",
            *option,
            "--out",
            str(tmp_path / "run"),
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].startswith("msalign: error: ") and message in err[-1], err
    assert not (tmp_path / "run" / "results.json").exists()


@pytest.mark.slow
def test_a_ddp_benchmark_prints_and_writes_its_table_once(tmp_path):
    out = tmp_path / "bench"
    benchmark = ["benchmark", "--models", "text_only,late_fusion", "--dataset", DATASET, "--epochs", "1"]
    done = _run_ddp([*benchmark, "--seeds", "1111", "--set", "threads=1"], out)
    assert done.stderr.count("[late_fusion seed 1111] best epoch") == 1, done.stderr  # nor its log lines
    table = json.loads((out / "table.json").read_text())
    for label in ("text_only", "late_fusion"):
        seed = json.loads((out / label / "results.json").read_text())["per_seed"][0]
        assert table["models"][label]["mean"] == seed["test"]
        assert len(np.load(out / label / "seed_1111" / "predictions.npz")["test_ids"]) == 37

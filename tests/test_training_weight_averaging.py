"""``train.ema_decay``: an exponential moving average of the weights is what validation, early
stopping, the saved model and the scores see (training/weight_averaging.py)."""

from __future__ import annotations

import json

import pytest
import torch
from lightning.pytorch.callbacks import Callback

import msalign.training.run as run
from msalign.cli import main
from msalign.config import TrainConfig
from msalign.data import load_dataset
from msalign.models import build_config
from msalign.training.run_spec import RunSpec

SMALL = "synthetic:n_train=24,n_valid=8,n_test=8"
STEPS_PER_EPOCH = 3  # 24 training clips in batches of 8


class _RecordWeights(Callback):
    """The raw (not averaged) parameters after every optimiser step, and the module they belong to."""

    def __init__(self) -> None:
        self.steps: list[dict[str, torch.Tensor]] = []
        self.module = None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.module = pl_module
        self.steps.append({k: v.detach().clone() for k, v in pl_module.named_parameters()})


def _train(monkeypatch, tmp_path, ema_decay: float, epochs: int = 5):
    recorder = _RecordWeights()
    make_trainer = run._trainer

    def with_recorder(train_config, **options):
        options["callbacks"] = [*options["callbacks"], recorder]
        return make_trainer(train_config, **options)

    monkeypatch.setattr(run, "_trainer", with_recorder)
    train = TrainConfig(epochs=epochs, batch_size=8, patience=epochs, threads=1, ema_decay=ema_decay, lr=3e-3)
    spec = RunSpec("late_fusion", build_config("late_fusion", {}), train, [1111], tmp_path)
    result = run.train_seed(spec, 1111, load_dataset(SMALL))
    return result, recorder


def _oracle_average(steps: list[dict[str, torch.Tensor]], decay: float) -> dict[str, torch.Tensor]:
    """avg_1 = w_1; avg_k = decay * avg_{k-1} + (1 - decay) * w_k (torch.optim.swa_utils' EMA)."""
    average = dict(steps[0])
    for weights in steps[1:]:
        average = {k: decay * average[k] + (1 - decay) * weights[k] for k in average}
    return average


def test_the_scored_weights_are_the_average_at_the_best_epoch(monkeypatch, tmp_path):
    result, recorder = _train(monkeypatch, tmp_path, ema_decay=0.7)
    assert len(recorder.steps) == 5 * STEPS_PER_EPOCH
    best_steps = recorder.steps[: (result.best_epoch + 1) * STEPS_PER_EPOCH]
    expected = _oracle_average(best_steps, 0.7)
    restored = dict(recorder.module.named_parameters())
    for name, value in expected.items():
        torch.testing.assert_close(restored[name].detach(), value, rtol=1e-5, atol=1e-6, msg=name)
    # and not the raw weights of that epoch
    raw = best_steps[-1]
    assert any(not torch.allclose(raw[k], expected[k]) for k in expected)


def test_the_final_scores_repeat_the_validation_that_chose_the_epoch(monkeypatch, tmp_path):
    """After fit the restored best weights are scored as they are: Lightning's callback would swap
    its last average in for this pass (training/weight_averaging.py)."""
    result, _ = _train(monkeypatch, tmp_path, ema_decay=0.7)
    row = next(r for r in result.history if r["epoch"] == result.best_epoch)
    assert result.valid["MAE"] == pytest.approx(row["valid/MAE"], abs=1e-9)


def test_off_by_default_and_absent_from_the_run_records_when_off(tmp_path):
    assert TrainConfig().ema_decay == 0.0
    common = ["train", "--model", "late_fusion", "--dataset", SMALL, "--epochs", "1", "--seeds", "1111"]
    assert main([*common, "--out", str(tmp_path / "off")]) == 0
    assert main([*common, "--set", "train.ema_decay=0.9", "--out", str(tmp_path / "on")]) == 0
    off = json.loads((tmp_path / "off" / "results.json").read_text())
    on = json.loads((tmp_path / "on" / "results.json").read_text())
    assert "ema_decay" not in off["config"]["train"]
    assert "ema_decay" not in json.loads((tmp_path / "off" / "seed_1111" / "run.json").read_text())["config"]["train"]
    assert on["config"]["train"]["ema_decay"] == 0.9


@pytest.mark.parametrize("value", ["1.0", "-0.1", "nan"])
def test_a_decay_out_of_range_is_one_line_naming_the_key(value, tmp_path, capsys):
    code = main(["train", "--model", "late_fusion", "--dataset", SMALL, "--set", f"train.ema_decay={value}",
                 "--out", str(tmp_path)])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert code == 2 and "train.ema_decay" in err and len(err.splitlines()) == 1

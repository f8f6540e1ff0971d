"""Training options from the MMSA MulT comparison: L1 loss, text dropout, plateau settings, accumulation."""

import numpy as np
import pytest
import torch

from msalign.config import TrainConfig
from msalign.data import load_dataset
from msalign.errors import MsalignError
from msalign.models import build_config, create_model
from msalign.models.base import task_loss
from msalign.training.data import collate_rows
from msalign.training.module import MSALightningModule
from msalign.training.run_spec import RunSpec

SMALL = "synthetic:n_train=24,n_valid=8,n_test=8"


def test_l1_loss_is_the_mean_absolute_error_and_mse_the_default():
    prediction, target = torch.tensor([0.5, -1.0, 2.0]), torch.tensor([1.0, 1.0, -1.0])
    assert task_loss(prediction, target, 1, "l1").item() == pytest.approx((0.5 + 2.0 + 3.0) / 3)
    assert task_loss(prediction, target, 1).item() == pytest.approx((0.25 + 4.0 + 9.0) / 3)


def _module(**train):
    dataset = load_dataset(SMALL)
    model = create_model("late_fusion", dims=dataset.dims, config=build_config("late_fusion", {}))
    module = MSALightningModule(model, TrainConfig(**train), dataset.metric_set)
    batch = collate_rows(dataset.split("train"), model.modalities, np.arange(8))
    return module, batch


def test_text_dropout_drops_text_features_in_training_only():
    module, batch = _module(text_dropout=0.5)
    text = batch["features"]["text"]
    torch.manual_seed(0)
    module.train()
    features, _ = module._inputs(batch)
    dropped = features["text"] == 0
    kept = ~dropped & (text != 0)
    assert 0.3 < dropped[text != 0].float().mean().item() < 0.7  # about half of the real values
    torch.testing.assert_close(features["text"][kept], 2 * text[kept])  # inverted dropout scaling
    torch.testing.assert_close(features["audio"], batch["features"]["audio"])  # other streams untouched
    module.eval()
    torch.testing.assert_close(module._inputs(batch)[0]["text"], text)


def test_plateau_factor_and_patience_reach_the_scheduler():
    module, _ = _module(plateau_factor=0.1, plateau_patience=5, patience=9)
    scheduler = module.configure_optimizers()["lr_scheduler"]["scheduler"]
    assert scheduler.factor == pytest.approx(0.1) and scheduler.patience == 5
    module, _ = _module(patience=9)  # default: a third of the early-stopping patience
    scheduler = module.configure_optimizers()["lr_scheduler"]["scheduler"]
    assert scheduler.factor == pytest.approx(0.5) and scheduler.patience == 3


@pytest.mark.parametrize(
    "values, key",
    [
        ({"accumulate_batches": 0}, "accumulate_batches"),
        ({"plateau_factor": 1.0}, "plateau_factor"),
        ({"text_dropout": 1.0}, "text_dropout"),
        ({"loss": "huber"}, "loss"),
    ],
)
def test_out_of_range_options_name_the_key(values, key):
    from msalign.config import update_dataclass

    with pytest.raises(MsalignError, match=key):
        update_dataclass(TrainConfig(), values, "train", "--set")


def test_accumulation_and_clipping_reach_lightning(monkeypatch, tmp_path):
    import msalign.training.run as run

    seen = {}

    def spy(train_config, **options):
        seen.update(options)
        raise RuntimeError("stop before fitting")

    monkeypatch.setattr(run, "_trainer", spy)
    dataset = load_dataset(SMALL)
    train = TrainConfig(accumulate_batches=3, grad_clip=0.6, grad_clip_algorithm="value", threads=1)
    with pytest.raises(RuntimeError, match="stop before fitting"):
        run.train_seed(RunSpec("late_fusion", build_config("late_fusion", {}), train, [1111], tmp_path), 1111, dataset)
    assert seen["accumulate_grad_batches"] == 3
    assert seen["gradient_clip_val"] == pytest.approx(0.6) and seen["gradient_clip_algorithm"] == "value"

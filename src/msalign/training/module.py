"""The LightningModule: task loss + the model's weighted auxiliary losses, metrics per epoch."""

from __future__ import annotations

import random
from typing import Any, cast

import lightning as L
import numpy as np
import torch
from lightning.pytorch.trainer.states import TrainerFn
from torch import Tensor

from msalign import metrics
from msalign.config import TrainConfig
from msalign.errors import MsalignError
from msalign.models.base import ModelOutput, MSAModel, task_loss
from msalign.models.text_tuning import model_inputs
from msalign.training.data import batch_to_device
from msalign.training.mining import HardNegativeSampler


class MSALightningModule(L.LightningModule):
    def __init__(self, model: MSAModel, train_config: TrainConfig, metric_set: str):
        super().__init__()
        self.model = model
        self.train_config = train_config
        self.metric_set = metric_set
        self.monitor_key, self.monitor_mode = metrics.selection_metric(metric_set)
        self._outputs: dict[str, list[tuple[Tensor, Tensor, Tensor]]] = {"valid": [], "test": []}
        self._train_sums: dict[str, list[float]] = {}  # name -> [weighted sum, count] this epoch
        self.last_metrics: dict[str, dict[str, float]] = {}
        # stage -> (row index, prediction, label) of the last pass over the whole split, in split order
        self.last_predictions: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        self.history: list[dict[str, float]] = []  # one row per epoch: train losses + valid metrics
        self.sampler: HardNegativeSampler | None = None  # for models that mine contrastive samples
        self._resumed: dict | None = None  # our part of a checkpoint being resumed from

    def forward(self, batch: dict) -> ModelOutput:
        return self.model(*self._inputs(batch))

    def _inputs(self, batch: dict) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        features, masks = model_inputs(self.model, batch)
        rate = self.train_config.text_dropout
        if rate > 0 and self.training and "text" in features:
            # MulT's text_dropout: the frozen text features are the strongest and most overfit input
            features = {**features, "text": torch.nn.functional.dropout(features["text"], rate, training=True)}
        return features, masks

    def on_fit_start(self) -> None:
        spec = self.model.mining
        datamodule = getattr(self.trainer, "datamodule", None)  # None when fit is given loaders, not a DataModule
        if spec is not None and datamodule is not None:
            dataset = datamodule.dataset
            # torch's seed is the run's seed here (seed_everything), so the draws are reproducible
            self.sampler = HardNegativeSampler(
                spec, dataset.split("train"), self.model.modalities, dataset.task, torch.initial_seed()
            )
            if self._resumed is not None and self._resumed.get("sampler") is not None:
                self.sampler.load_state_dict(self._resumed["sampler"])

    # Resuming (msalign train --resume): Lightning restores weights, optimizer, scheduler, loops and
    # callbacks; these hooks add what makes the continued run identical to an uninterrupted one:
    # the epoch history, the random generators (dropout, ...) and the hard-negative sampler.
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        numpy_state = np.random.get_state(legacy=True)
        assert isinstance(numpy_state, tuple)  # the global generator is MT19937: its legacy tuple state
        checkpoint["msalign"] = {
            "history": self.history,
            "rng": {
                "torch": torch.get_rng_state(),
                "numpy": [
                    numpy_state[0],
                    torch.from_numpy(numpy_state[1].astype(np.int64)),
                    *map(float, numpy_state[2:]),
                ],
                "python": random.getstate(),
            },
            "sampler": self.sampler.state_dict() if self.sampler is not None else None,
        }

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self._resumed = checkpoint.get("msalign")
        if self._resumed is not None:
            self.history = [dict(row) for row in self._resumed["history"]]

    def on_train_start(self) -> None:
        # the generators as they were when the checkpoint was written (the end of its epoch)
        if self._resumed is not None:
            rng = self._resumed["rng"]
            torch.set_rng_state(rng["torch"])
            name, keys, pos, has_gauss, cached = rng["numpy"]
            np.random.set_state((name, keys.numpy().astype(np.uint32), int(pos), int(has_gauss), cached))
            random.setstate(rng["python"])
            self._resumed = None

    def on_train_epoch_start(self) -> None:
        if self.sampler is not None and self.sampler.due(self.current_epoch):
            self.sampler.refresh(self.model, self.device)

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        if self.sampler is not None:
            contrast = self.sampler.draw(batch["index"], self.device, self.model)
            output = self.model(*self._inputs(batch), contrast=contrast)
        else:
            output = self(batch)
        loss = task_loss(output.prediction, batch["labels"], self.model.output_dim, self.train_config.loss)
        values = {"train/task": loss.detach()}
        for name, value in output.aux_losses.items():
            values[f"train/{name}"] = value.detach()
            loss = loss + value
        values.update({f"diag/{name}": value.detach() for name, value in output.diagnostics.items()})
        values["train/loss"] = loss.detach()
        size = batch["labels"].shape[0]
        self.log("train/loss", values["train/loss"], on_step=True, on_epoch=False, prog_bar=True, batch_size=size)
        for name, value in values.items():
            total = self._train_sums.setdefault(name, [0.0, 0])
            total[0] += float(value) * size
            total[1] += size
        return loss

    def _collect(self, stage: str, batch: dict) -> None:
        output = self(batch)
        self._outputs[stage].append(
            (batch["index"].to(self.device), output.prediction.detach().float(), batch["labels"].detach())
        )

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._collect("valid", batch)

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._collect("test", batch)

    def _gathered(self, stage: str) -> tuple[Tensor, Tensor, Tensor] | None:
        """This stage's (row index, prediction, label) over the WHOLE split, in split order.

        Under DDP each rank scored a shard, and the distributed sampler pads the shards to equal
        size by repeating rows; so the shards are gathered from every rank and each row is kept
        once, by its index. Metrics are then computed once over the whole split: a metric averaged
        over ranks' partial sets would differ from the single-process value (MAE weights, F1, Corr)."""
        outputs = self._outputs[stage]
        self._outputs[stage] = []
        if not outputs and self.trainer.world_size == 1:
            return None
        index = (
            torch.cat([i for i, _, _ in outputs]) if outputs else torch.zeros(0, dtype=torch.long, device=self.device)
        )
        preds = torch.cat([p for _, p, _ in outputs]) if outputs else torch.zeros(0, device=self.device)
        labels = torch.cat([t for _, _, t in outputs]) if outputs else torch.zeros(0, device=self.device)
        if self.trainer.world_size > 1:
            # all_gather needs equal shapes on every rank; the sampler gives every rank the same
            # number of rows, and the padding repeats are dropped below
            # all_gather of a tensor is a tensor (its (world_size, ...) stack)
            index, preds, labels = (cast(Tensor, self.all_gather(x)).flatten(0, 1) for x in (index, preds, labels))
        index, first = _first_occurrences(index)
        return index, preds[first], labels[first]

    def _finish(self, stage: str) -> None:
        gathered = self._gathered(stage)
        if gathered is None:
            return
        index, preds, labels = gathered
        values = metrics.compute(preds.cpu().numpy(), labels.cpu().numpy(), self.metric_set)
        self.last_metrics[stage] = values
        self.last_predictions[stage] = (index.cpu().numpy(), preds.cpu().numpy(), labels.cpu().numpy())
        for key, value in values.items():
            # the same value on every rank (computed from the gathered split), so no sync_dist
            self.log(f"{stage}/{key}", float(value), prog_bar=key == self.monitor_key, sync_dist=False)
        if stage == "valid" and self.trainer.state.fn == TrainerFn.FITTING and not self.trainer.sanity_checking:
            # Validation runs after the epoch's last training step, so the epoch's losses are complete.
            row: dict[str, float] = {"epoch": self.current_epoch}
            row.update(self._epoch_losses())
            row.update({f"valid/{key}": value for key, value in values.items()})
            self.history.append(row)

    def _epoch_losses(self) -> dict[str, float]:
        """The epoch's mean training losses, over all ranks' samples under DDP."""
        sums, self._train_sums = self._train_sums, {}
        names = sorted(sums)
        totals = torch.tensor([sums[n] for n in names], dtype=torch.float64).reshape(-1, 2)
        if self.trainer.world_size > 1 and names:
            totals = self.trainer.strategy.reduce(totals.to(self.device), reduce_op="sum").cpu()
        return {
            name: round(float(total / max(count, 1)), 6)
            for name, (total, count) in zip(names, totals.tolist(), strict=True)
        }

    def on_validation_epoch_end(self) -> None:
        self._finish("valid")

    def on_test_epoch_end(self) -> None:
        self._finish("test")

    def configure_optimizers(self):
        c = self.train_config
        params = [p for p in self.model.parameters() if p.requires_grad]
        # a fine-tuned text encoder learns at its own (smaller) rate, as BERT is fine-tuned in the papers
        encoder = self.model.text_encoder
        tuned = {id(p) for p in encoder.parameters()} if encoder is not None else set()
        groups: list[dict[str, Any]] = [{"params": [p for p in params if id(p) not in tuned]}]
        if tuned:
            groups.append({"params": [p for p in params if id(p) in tuned], "lr": c.text_lr})
        # the fused kernel is ~3x faster than the per-tensor loop on CPU (~10% of a DecAlign step)
        fused = all(p.device.type in ("cpu", "cuda") for p in params)
        optimizer = torch.optim.AdamW(groups, lr=c.lr, weight_decay=c.weight_decay, fused=fused or None)
        if c.scheduler == "none":
            return optimizer
        if c.scheduler != "plateau":
            raise MsalignError(f"train.scheduler: unknown scheduler {c.scheduler!r}; use plateau or none")
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer,
            mode=self.monitor_mode,
            factor=c.plateau_factor,
            patience=max(1, c.patience // 3) if c.plateau_patience is None else c.plateau_patience,
        )
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "monitor": f"valid/{self.monitor_key}", "interval": "epoch"},
        }


def _first_occurrences(index: Tensor) -> tuple[Tensor, Tensor]:
    """Sorted unique row indices and, for each, the position of its first occurrence in ``index``."""
    unique, inverse = torch.unique(index, sorted=True, return_inverse=True)
    positions = torch.arange(len(index), device=index.device)
    first = torch.full((len(unique),), len(index), dtype=torch.long, device=index.device)
    first = first.scatter_reduce(0, inverse, positions, reduce="amin")
    return unique, first


@torch.no_grad()
def predict_split(model: MSAModel, loader, device: torch.device | str) -> tuple[np.ndarray, np.ndarray]:
    """Predictions and labels over a loader, in order, with the model in eval mode."""
    model.eval()
    preds, labels = [], []
    for batch in loader:
        preds.append(model(*model_inputs(model, batch_to_device(batch, device))).prediction.float().cpu())
        labels.append(batch["labels"])
    return torch.cat(preds).numpy(), torch.cat(labels).numpy()

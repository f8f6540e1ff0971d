"""An exponential moving average of the weights (``train.ema_decay``), as a Lightning callback.

Lightning's :class:`~lightning.pytorch.callbacks.EMAWeightAveraging` keeps the average (updated
after every optimiser step: ``avg = decay * avg + (1 - decay) * weights``, the first update copying
the weights) and swaps it in for each validation pass. So early stopping and the best-on-validation
checkpoint see the averaged weights, and ``best.ckpt`` stores them
(``WeightAveraging.on_save_checkpoint``), which is what :func:`msalign.training.run.train_seed`
restores and scores. A resumed run restores the average from ``last.ckpt`` too.

One change to Lightning's behaviour: it also swaps its latest average in for validation and test
passes after fit ends, which would replace the restored best-on-validation weights by the last
epoch's average. Here the swap happens while fitting only.

Why: on small benchmarks (MOSI's 1284 training clips, 40 steps per epoch) the validation score of
the raw weights jumps from step to step, and early stopping picks a lucky epoch; the average is a
smoother function of training time (Polyak and Juditsky 1992; the EMA of timm and of most
transformer recipes). Measured in ``benchmarks/results/mosi_parity.md``.
"""

from __future__ import annotations

from typing import Any

from lightning.pytorch.callbacks import EMAWeightAveraging
from lightning.pytorch.trainer.states import TrainerFn


class FitEMA(EMAWeightAveraging):
    """:class:`EMAWeightAveraging` (update after every optimiser step) whose average replaces the
    weights for validation during fit only."""

    def __init__(self, decay: float) -> None:
        super().__init__(decay=decay)

    def on_validation_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        if trainer.state.fn == TrainerFn.FITTING:
            super().on_validation_epoch_start(trainer, pl_module)

    def on_validation_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        if trainer.state.fn == TrainerFn.FITTING:
            super().on_validation_epoch_end(trainer, pl_module)

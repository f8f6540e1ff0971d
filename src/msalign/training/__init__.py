"""The training loop (Lightning): data module, LightningModule, multi-seed runs."""

from msalign.training.run import SeedResult, train, train_seed

__all__ = ["SeedResult", "train", "train_seed"]

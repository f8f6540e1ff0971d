"""The training loop (Lightning): data module, LightningModule, multi-seed runs."""

from msalign.training.run import SeedResult, run_seed, summarize_run, train, train_seed

__all__ = ["SeedResult", "run_seed", "summarize_run", "train", "train_seed"]

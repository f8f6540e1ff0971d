"""The training loop (Lightning): data module, LightningModule, multi-seed runs and the run folder."""

from msalign.training.run import SeedResult, run_seed, summarize_run, train, train_seed
from msalign.training.run_spec import RunSpec

__all__ = ["RunSpec", "SeedResult", "run_seed", "summarize_run", "train", "train_seed"]

"""Batches from the in-memory dataset: Lightning DataModule and the collate function.

A batch is ``{"features": {m: (B, L_m, D_m)}, "masks": {m: (B, L_m) bool}, "labels": (B,), "index": (B,),
"texts": list of B transcripts or None}``.
Each modality is trimmed to the longest real sequence in the batch, so padding costs nothing
beyond the batch maximum; masks carry what is padding.
"""

from __future__ import annotations

import lightning as L
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from msalign.data.types import MultimodalDataset, Split

# batch size of every pass that scores a split outside training (evaluate, report, modality ablation):
# no gradients are kept, so it need not follow train.batch_size
EVAL_BATCH_SIZE = 64


class SplitIndex(Dataset):
    """Items are row indices; ``collate`` slices the split's arrays once per batch (vectorised)."""

    def __init__(self, split: Split, modalities: tuple[str, ...]):
        self.split = split
        self.modalities = modalities

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, index: int) -> int:
        return index

    def collate(self, indices: list[int]) -> dict:
        return collate_rows(self.split, self.modalities, np.asarray(indices, dtype=np.int64))


def collate_rows(split: Split, modalities: tuple[str, ...], rows: np.ndarray) -> dict:
    features, masks = {}, {}
    for m in modalities:
        lengths = split.lengths[m][rows]
        longest = max(int(lengths.max()), 1)
        features[m] = torch.from_numpy(np.ascontiguousarray(split.features[m][rows, :longest]))
        masks[m] = torch.arange(longest)[None, :] < torch.from_numpy(lengths)[:, None]
    labels = torch.from_numpy(np.asarray(split.labels[rows]))
    # transcripts ride along for a model that fine-tunes its text encoder (models/text_tuning.py)
    texts = [split.raw_text[i] for i in rows.tolist()] if split.raw_text is not None else None
    return {"features": features, "masks": masks, "labels": labels, "index": torch.from_numpy(rows), "texts": texts}


def default_device() -> torch.device:
    """The machine's accelerator (CUDA, MPS, XPU, ...) when torch sees one, else the CPU: for scoring
    outside a Trainer (evaluate, report), which otherwise picks its own devices."""
    accelerator = torch.accelerator.current_accelerator() if torch.accelerator.is_available() else None
    return accelerator if accelerator is not None else torch.device("cpu")


def batch_to_device(batch: dict, device: torch.device | str) -> dict:
    """The batch with its feature and mask tensors on ``device`` (labels, index and texts stay)."""
    return {
        **batch,
        "features": {m: x.to(device) for m, x in batch["features"].items()},
        "masks": {m: x.to(device) for m, x in batch["masks"].items()},
    }


class MSADataModule(L.LightningDataModule):
    """Loaders over a dataset's splits for the Trainer: training rows shuffled by ``seed``, validation
    and test rows in split order."""

    def __init__(
        self, dataset: MultimodalDataset, modalities: tuple[str, ...], batch_size: int, seed: int, num_workers: int = 0
    ):
        super().__init__()
        self.dataset = dataset
        self.modalities = modalities
        self.batch_size = batch_size
        self.seed = seed
        self.num_workers = num_workers
        self._shuffle_generator: torch.Generator | None = None
        self._restored_state: Tensor | None = None  # from a checkpoint, applied to the next shuffling loader

    def state_dict(self) -> dict:
        """The shuffling generator's state, saved in Lightning checkpoints so a resumed run sees the same batches."""
        return {"shuffle_generator": self._shuffle_generator.get_state()} if self._shuffle_generator is not None else {}

    def load_state_dict(self, state: dict) -> None:
        self._restored_state = state.get("shuffle_generator")

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        index = SplitIndex(self.dataset.split(split), self.modalities)
        generator = torch.Generator().manual_seed(self.seed) if shuffle else None
        if generator is not None:
            if self._restored_state is not None:
                generator.set_state(self._restored_state)
                self._restored_state = None
            self._shuffle_generator = generator
        return DataLoader(
            index,
            batch_size=self.batch_size,
            shuffle=shuffle,  # never for valid/test (MMSA shuffles them; we do not)
            generator=generator,
            collate_fn=index.collate,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("valid", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)


def eval_loader(
    dataset: MultimodalDataset, modalities: tuple[str, ...], split: str, batch_size: int = EVAL_BATCH_SIZE
) -> DataLoader:
    """The rows of ``split`` in split order, unshuffled, in batches of ``batch_size``: for scoring a
    model outside a Trainer (:func:`msalign.training.module.predict_split`)."""
    return MSADataModule(dataset, modalities, batch_size, seed=0)._loader(split, shuffle=False)

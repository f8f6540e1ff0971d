"""The hard-negative sampler of DashFusion's supervised contrastive learning (Sec. III-D), on
the training loop's side: similarities over the whole training split, recomputed from the
model's own embeddings on a schedule, and mined samples delivered with every batch.

A model opts in through the hooks :class:`~msalign.models.base.MSAModel` declares: ``mining``
(a :class:`~msalign.losses.contrastive.MiningSpec`, or None), ``mining_embedding(features, masks)
-> (B, D)`` and the ``contrast`` argument of ``forward``. The mining itself is the pure
:func:`~msalign.losses.contrastive.mine_candidates`.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from torch import Tensor

from msalign.data.types import Split
from msalign.losses.contrastive import (
    CandidatePools,
    ContrastBatch,
    MiningSpec,
    draw_candidates,
    label_classes,
    mine_candidates,
)
from msalign.models.base import MSAModel
from msalign.models.text_tuning import model_inputs
from msalign.training.data import batch_to_device, collate_rows


class HardNegativeSampler:
    """Candidate pools over ``split`` (refreshed by :meth:`refresh`) and per-batch draws (:meth:`draw`)."""

    def __init__(
        self, spec: MiningSpec, split: Split, modalities: tuple[str, ...], task: str, seed: int, batch_size: int = 256
    ):
        self.spec = spec
        self.split = split
        self.modalities = modalities
        self.classes = label_classes(torch.as_tensor(np.asarray(split.labels)), task)
        self.generator = torch.Generator().manual_seed(seed)
        self.batch_size = batch_size
        self.pools: CandidatePools | None = None

    def state_dict(self) -> dict:
        """The generator's state and the candidate pools: what a resumed run needs to draw the same samples."""
        pools = dataclasses.asdict(self.pools) if self.pools is not None else None
        return {"generator": self.generator.get_state(), "pools": pools}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
        self.pools = CandidatePools(**state["pools"]) if state.get("pools") is not None else None

    def due(self, epoch: int) -> bool:
        return self.pools is None or epoch % max(1, self.spec.refresh_every) == 0

    @torch.no_grad()
    def refresh(self, model: MSAModel, device: torch.device) -> None:
        """Embed every training clip with the model (eval mode) and rebuild the candidate pools."""
        was_training = model.training
        model.eval()
        chunks = []
        for start in range(0, len(self.split), self.batch_size):
            rows = np.arange(start, min(start + self.batch_size, len(self.split)))
            batch = batch_to_device(collate_rows(self.split, self.modalities, rows), device)
            chunks.append(model.mining_embedding(*model_inputs(model, batch)).float().cpu())
        model.train(was_training)
        self.pools = mine_candidates(torch.cat(chunks), self.classes, pool=self.spec.pool)

    def draw(self, anchors: Tensor, device: torch.device, model: MSAModel | None = None) -> ContrastBatch:
        """Mined samples for the batch's training-split rows ``anchors`` (B,): positives first,
        then hard, then easy negatives, K = spec.per_anchor per anchor. ``model`` re-encodes their
        text when it fine-tunes its text encoder."""
        if self.pools is None:
            raise RuntimeError("HardNegativeSampler.draw before refresh")
        anchors = anchors.cpu()
        p = self.pools
        drawn = [
            draw_candidates(p.positives[anchors], p.positives_valid[anchors], self.spec.positives, self.generator),
            draw_candidates(p.hard[anchors], p.hard_valid[anchors], self.spec.hard, self.generator),
            draw_candidates(p.easy[anchors], p.easy_valid[anchors], self.spec.easy, self.generator),
        ]
        rows = torch.cat([index for index, _ in drawn], dim=1)
        valid = torch.cat([ok for _, ok in drawn], dim=1)
        positive = torch.zeros_like(valid)
        positive[:, : self.spec.positives] = True
        batch = batch_to_device(collate_rows(self.split, self.modalities, rows.reshape(-1).numpy()), device)
        features, masks = model_inputs(model, batch) if model is not None else (batch["features"], batch["masks"])
        return ContrastBatch(features, masks, positive.to(device), valid.to(device))


__all__ = ["HardNegativeSampler"]

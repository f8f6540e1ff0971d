"""late_fusion: one sequence encoder per modality, pooled vectors concatenated, MLP head.

The naive multimodal baseline: no alignment, no cross-modal interaction before the head.
Works with any subset of text / audio / vision.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from msalign.config import check_heads, check_ranges
from msalign.losses.contrastive import ContrastBatch
from msalign.models.base import ModelOutput, MSAModel
from msalign.models.blocks import MLPHead, SequenceEncoder
from msalign.models.registry import register_model
from msalign.models.search_space import TRAIN_SPACE, CategoricalParam, FloatParam, SearchSpace


@dataclass
class LateFusionConfig:
    width: int = 64  # hidden width of the per-modality encoder
    layers: int = 1  # transformer encoder layers (0: projection only)
    heads: int = 4  # attention heads (width must divide by it)
    dropout: float = 0.1  # dropout in the encoder and the head
    head_hidden: int = 128  # hidden units of the MLP head
    kernel_size: int = 1  # temporal conv kernel of the input projections (1: pointwise)

    def __post_init__(self) -> None:
        check_ranges(self, "model")  # one place for ranges: msalign.config.check_ranges
        check_heads("late_fusion", self.width, self.heads)


@register_model
class LateFusion(MSAModel):
    name = "late_fusion"
    Config = LateFusionConfig
    search_space = TRAIN_SPACE + SearchSpace(
        (
            CategoricalParam("model.width", (32, 64, 128)),
            CategoricalParam("model.layers", (1, 2, 3)),
            FloatParam("model.dropout", 0.0, 0.4),
            CategoricalParam("model.head_hidden", (64, 128, 256)),
            CategoricalParam("model.kernel_size", (1, 3)),
        )
    )

    def __init__(self, config: LateFusionConfig, dims: dict[str, int], output_dim: int):
        super().__init__(config, dims, output_dim)
        c = config
        self.encoders = nn.ModuleDict(
            {m: SequenceEncoder(dims[m], c.width, c.layers, c.heads, c.dropout, c.kernel_size) for m in self.modalities}
        )
        self.head = MLPHead(c.width * len(self.modalities), c.head_hidden, output_dim, c.dropout)

    def forward(
        self, features: dict[str, Tensor], masks: dict[str, Tensor], contrast: ContrastBatch | None = None
    ) -> ModelOutput:
        """``contrast`` is unused: this model mines no samples (it is here to match :meth:`MSAModel.forward`)."""
        pooled: dict[str, Tensor] = {m: self.encoders[m](features[m], masks[m])[1] for m in self.modalities}
        fused = torch.cat([pooled[m] for m in self.modalities], dim=-1)
        return ModelOutput(self.head(fused), representations=pooled)

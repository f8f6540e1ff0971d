"""text_only: a transformer sequence encoder over the text features, mean-pooled, MLP head.

The honest unimodal baseline: every multimodal model should beat it on data where the other
modalities carry signal.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from msalign.config import check_heads, check_ranges
from msalign.losses.contrastive import ContrastBatch
from msalign.models.base import ModelOutput, MSAModel
from msalign.models.blocks import MLPHead, SequenceEncoder
from msalign.models.registry import register_model
from msalign.models.search_space import TRAIN_SPACE, CategoricalParam, FloatParam, SearchSpace


@dataclass
class TextOnlyConfig:
    width: int = 64  # hidden width of the text encoder
    layers: int = 1  # transformer encoder layers (0: projection only)
    heads: int = 4  # attention heads (width must divide by it)
    dropout: float = 0.1  # dropout in the encoder and the head
    head_hidden: int = 64  # hidden units of the MLP head
    kernel_size: int = 1  # temporal conv kernel of the input projection (1: pointwise)

    def __post_init__(self) -> None:
        check_ranges(self, "model")  # one place for ranges: msalign.config.check_ranges
        check_heads("text_only", self.width, self.heads)


@register_model
class TextOnly(MSAModel):
    name = "text_only"
    Config = TextOnlyConfig
    supported_modalities = ("text",)
    required_modalities = ("text",)
    search_space = TRAIN_SPACE + SearchSpace(
        (
            CategoricalParam("model.width", (32, 64, 128)),
            CategoricalParam("model.layers", (1, 2, 3)),
            FloatParam("model.dropout", 0.0, 0.4),
            CategoricalParam("model.head_hidden", (32, 64, 128)),
            CategoricalParam("model.kernel_size", (1, 3)),
        )
    )

    def __init__(self, config: TextOnlyConfig, dims: dict[str, int], output_dim: int):
        super().__init__(config, dims, output_dim)
        c = config
        self.encoder = SequenceEncoder(dims["text"], c.width, c.layers, c.heads, c.dropout, c.kernel_size)
        self.head = MLPHead(c.width, c.head_hidden, output_dim, c.dropout)

    def forward(
        self, features: dict[str, Tensor], masks: dict[str, Tensor], contrast: ContrastBatch | None = None
    ) -> ModelOutput:
        """``contrast`` is unused: this model mines no samples (it is here to match :meth:`MSAModel.forward`)."""
        _, pooled = self.encoder(features["text"], masks["text"])
        return ModelOutput(self.head(pooled), representations={"text": pooled})

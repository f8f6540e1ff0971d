"""mult: the Multimodal Transformer of Tsai et al. (ACL 2019), for unaligned sequences.

Each modality is projected by a temporal 1D convolution to a shared width. For every target
modality m and every other modality n, a crossmodal transformer CM(n -> m) lets m's sequence
attend to n's; the outputs for a target are concatenated along features and passed through a
self-attention transformer; the result is mean-pooled over m's real positions (Tsai et al. take
the last time step, which is a padding position for right-padded batches; the masked mean is
the padding-safe equivalent). Pooled targets are concatenated and fed to a residual MLP head.
Works for any M >= 2 modalities.

Padding costs little: every sequence is trimmed to its last real frame, a batch with uneven
lengths runs in a few row groups of similar length (``attention.length_groups``), and the
encoders run their position-wise layers on real frames only; all of it is exact.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from msalign.config import check_heads, check_ranges
from msalign.losses.contrastive import ContrastBatch
from msalign.models.attention import MultimodalTransformer
from msalign.models.base import ModelOutput, MSAModel
from msalign.models.blocks import TemporalProjection
from msalign.models.dropout import Dropout
from msalign.models.registry import register_model
from msalign.models.search_space import TRAIN_SPACE, CategoricalParam, FloatParam, SearchSpace


@dataclass
class MulTConfig:
    width: int = 40  # Tsai et al.: 40-d, 8 heads (their code: 10 heads on 40 - we keep width % heads == 0)
    heads: int = 8  # attention heads (width must divide by it)
    layers: int = 4  # crossmodal transformer layers per modality pair
    self_layers: int = 3  # self-attention layers over each target's concatenated crossmodal outputs
    kernel_size: int = 1  # temporal conv kernel of the input projections (1: pointwise)
    dropout: float = 0.1  # residual and feed-forward dropout
    # 0 keeps SDPA on its fused kernel (see models/attention.py); MulT used 0.1 on text attention only
    attn_dropout: float = 0.0
    embed_dropout: float = 0.25  # dropout on the projected input sequences
    head_dropout: float = 0.1  # dropout inside the residual output MLP (MMSA's MulT: output_dropout 0.5)

    def __post_init__(self) -> None:
        check_ranges(self, "model")  # one place for ranges: msalign.config.check_ranges
        check_heads("mult", self.width, self.heads)


@register_model
class MulT(MSAModel):
    name = "mult"
    Config = MulTConfig
    min_modalities = 2
    search_space = TRAIN_SPACE + SearchSpace(
        (
            CategoricalParam("model.width", (32, 40, 64)),  # all divisible by the 8 heads
            CategoricalParam("model.layers", (2, 3, 4, 5)),
            CategoricalParam("model.self_layers", (1, 2, 3)),
            CategoricalParam("model.kernel_size", (1, 3)),
            FloatParam("model.dropout", 0.0, 0.4),
            FloatParam("model.attn_dropout", 0.0, 0.3),
            FloatParam("model.embed_dropout", 0.0, 0.4),
            FloatParam("model.head_dropout", 0.0, 0.5),
        )
    )

    def __init__(self, config: MulTConfig, dims: dict[str, int], output_dim: int):
        super().__init__(config, dims, output_dim)
        c = config
        self.project = nn.ModuleDict({m: TemporalProjection(dims[m], c.width, c.kernel_size) for m in self.modalities})
        self.embed_dropout = Dropout(c.embed_dropout)
        self.transformer = MultimodalTransformer(
            self.modalities, c.width, c.heads, c.layers, c.self_layers, c.dropout, c.attn_dropout
        )
        total = self.transformer.output_width * len(self.modalities)
        self.head_in = nn.Sequential(
            nn.Linear(total, total), nn.GELU(), Dropout(c.head_dropout), nn.Linear(total, total)
        )
        self.head_out = nn.Linear(total, output_dim)

    def forward(
        self, features: dict[str, Tensor], masks: dict[str, Tensor], contrast: ContrastBatch | None = None
    ) -> ModelOutput:
        """``contrast`` is unused: this model mines no samples (it is here to match :meth:`MSAModel.forward`)."""
        projected = {m: self.embed_dropout(self.project[m](features[m], masks[m])) for m in self.modalities}
        pooled = self.transformer(projected, masks)
        fused = torch.cat([pooled[m] for m in self.modalities], dim=-1)
        out = self.head_out(fused + self.head_in(fused))
        return ModelOutput(out.squeeze(-1) if self.output_dim == 1 else out, representations=pooled)

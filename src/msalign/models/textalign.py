"""textalign: text-centric explicit alignment (describe non-verbal streams in words, select tokens, uniformity).

The method of "Explicit Representation Alignment for Multimodal Sentiment Analysis" (arXiv
2606.09148; only the abstract is available, ../shared/papers/explicit_alignment_abstract.txt):
heterogeneous modalities are projected into ONE shared linguistic space by turning them into
structured textual descriptions, then everything is learned on text.

* Alignment happens before the model: :mod:`msalign.describe` writes a description per clip
  ("Face: smiling strongly, brows raised. Head: nodding. Voice: high pitch, loud, fast.") and the
  feature-directory loader option ``descriptions=True`` appends it to the transcript, so utterance
  and description are encoded by the SAME text encoder into one token sequence. The model itself
  therefore reads only the ``text`` modality and works with or without descriptions (the
  "no descriptions" ablation is the dataset option, not a model switch).
* Token encoder: the frozen encoder's token features -> linear projection, LayerNorm, sinusoidal
  positions, a pre-norm transformer layer (contextualises transcript and description tokens with
  each other; ``layers=0`` keeps the projection only).
* Semantic token selection (``token_selection``): a learned relevance score per token; exactly
  ``top_k`` real tokens are kept (all real tokens when a clip has fewer; padding never) and the
  head reads their mean. Differentiable with a straight-through estimator, see
  :func:`straight_through_top_k` for why it and not a Gumbel relaxation.
* Batch-level uniformity (``uniformity``): Wang & Isola's L_uniform
  (:func:`msalign.losses.uniformity.uniformity_loss`) on the pooled, L2-normalised features,
  weighted by ``uniformity_weight`` with temperature ``uniformity_t``; it keeps the global feature
  space dispersed against the pull of near-identical generated descriptions.
* Head: MLP (GELU) -> 1 score or class logits. Loss = task + uniformity_weight * L_uniform.

Ablations: ``--set token_selection=false`` (masked mean over every real token),
``--set uniformity=false``, and loading without ``descriptions`` (text only).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from msalign.config import check_ranges
from msalign.errors import MsalignError
from msalign.losses.contrastive import ContrastBatch
from msalign.losses.uniformity import uniformity_loss
from msalign.models.base import ModelOutput, MSAModel
from msalign.models.blocks import MLPHead, SequenceEncoder
from msalign.models.registry import register_model
from msalign.models.search_space import TRAIN_SPACE, CategoricalParam, FloatParam, SearchSpace


@dataclass
class TextAlignConfig:
    width: int = 128  # width the text tokens are projected to
    layers: int = 1  # transformer layers over the projected tokens (0: projection only)
    heads: int = 4  # attention heads (width must divide by it)
    dropout: float = 0.1  # dropout in the encoder and the head
    head_hidden: int = 128  # hidden units of the MLP head
    token_selection: bool = True  # keep the top_k tokens by learned relevance (False: mean over all)
    top_k: int = 16  # tokens kept per clip (a MiniLM transcript + description is ~30-90 tokens)
    selection_temperature: float = 1.0  # slope of the sigmoid whose gradient the hard mask borrows
    uniformity: bool = True  # add the batch-level uniformity term
    uniformity_weight: float = 0.1  # weight of the uniformity loss
    uniformity_t: float = 2.0  # Wang & Isola's t (their default)

    def __post_init__(self) -> None:
        check_ranges(self, "model")  # ranges first: heads >= 1 before width % heads below
        if self.top_k < 1:
            raise MsalignError(f"textalign: top_k must be >= 1, got {self.top_k}")
        if self.selection_temperature <= 0 or self.uniformity_t <= 0:
            raise MsalignError("textalign: selection_temperature and uniformity_t must be positive")
        if self.uniformity_weight < 0:
            raise MsalignError(f"textalign: uniformity_weight must be >= 0, got {self.uniformity_weight}")
        if self.width % self.heads:
            raise MsalignError(f"textalign: width {self.width} is not divisible by heads {self.heads}")


def straight_through_top_k(scores: Tensor, mask: Tensor, k: int, temperature: float = 1.0) -> tuple[Tensor, Tensor]:
    """Keep the ``k`` highest-scoring real tokens of each row, differentiably.

    ``scores`` (B, L) float, ``mask`` (B, L) bool (True = real token). Returns ``(gate, hard)``:
    ``hard`` (B, L) is the exact 0/1 selection (k ones per row, or every real token when a row has
    fewer than k; never a padding position) and ``gate = hard + (soft - soft.detach())`` with
    ``soft = sigmoid(scores / temperature)`` at real positions: its VALUE is ``hard`` exactly, its
    GRADIENT is the soft one's, so every real token's score (selected or not) learns from how much
    the loss would change if that token weighed more.

    Why straight-through and not a Gumbel top-k relaxation: the forward pass is the hard
    selection itself, identical in training and evaluation (no sampling noise, no annealing
    schedule, no train / test mismatch between a relaxed and a hard mask), and exactly k tokens
    contribute at every step, which is what "keep top-k" promises. The price is a biased gradient;
    on the small sentiment datasets this targets, the noise of Gumbel sampling is the larger cost.
    """
    if scores.shape != mask.shape or scores.dim() != 2:
        raise MsalignError(f"top-k: scores {tuple(scores.shape)} and mask {tuple(mask.shape)} must both be (B, L)")
    mask = mask.bool()
    k = min(int(k), scores.shape[1])
    ranked = scores.detach().masked_fill(~mask, float("-inf"))
    index = ranked.topk(k, dim=1).indices
    hard = torch.zeros_like(scores).scatter(1, index, 1.0) * mask.to(scores.dtype)
    soft = torch.sigmoid(scores / temperature) * mask.to(scores.dtype)
    return hard + (soft - soft.detach()), hard  # (soft - soft) is exactly 0: the value is hard, bit for bit


@register_model
class TextAlign(MSAModel):
    name = "textalign"
    Config = TextAlignConfig
    search_space = TRAIN_SPACE + SearchSpace(
        (
            CategoricalParam("model.width", (64, 128, 256)),  # all divisible by the 4 heads
            CategoricalParam("model.layers", (0, 1, 2)),
            FloatParam("model.dropout", 0.0, 0.4),
            CategoricalParam("model.head_hidden", (64, 128, 256)),
            CategoricalParam("model.top_k", (8, 16, 32)),
            FloatParam("model.uniformity_weight", 0.01, 0.5, log=True),
        )
    )
    supported_modalities = ("text",)
    required_modalities = ("text",)

    def __init__(self, config: TextAlignConfig, dims: dict[str, int], output_dim: int):
        super().__init__(config, dims, output_dim)
        c = config
        self.encoder = SequenceEncoder(dims["text"], c.width, c.layers, c.heads, c.dropout)
        self.scorer = nn.Linear(c.width, 1) if c.token_selection else None
        self.head = MLPHead(c.width, c.head_hidden, output_dim, c.dropout)

    def forward(
        self, features: dict[str, Tensor], masks: dict[str, Tensor], contrast: ContrastBatch | None = None
    ) -> ModelOutput:
        """``contrast`` is unused: this model mines no samples (it is here to match :meth:`MSAModel.forward`)."""
        c = self.config
        mask = masks["text"].bool()
        tokens, mean = self.encoder(features["text"], mask)
        diagnostics: dict[str, Tensor] = {}
        if self.scorer is not None:
            gate, hard = straight_through_top_k(self.scorer(tokens).squeeze(-1), mask, c.top_k, c.selection_temperature)
            pooled = (gate.unsqueeze(-1) * tokens).sum(dim=1) / hard.sum(dim=1, keepdim=True).clamp_min(1.0)
            diagnostics["selected_fraction"] = (hard.sum() / mask.sum().clamp_min(1)).detach()
        else:
            pooled = mean
        aux: dict[str, Tensor] = {}
        if c.uniformity:
            uniform = uniformity_loss(pooled, c.uniformity_t)
            aux["uniformity"] = c.uniformity_weight * uniform
            diagnostics["uniformity"] = uniform.detach()
        return ModelOutput(self.head(pooled), aux_losses=aux, representations={"text": pooled}, diagnostics=diagnostics)

"""dashfusion: Dual-stream Alignment with Hierarchical Bottleneck Fusion (Wen et al., Sec. III).

Pipeline (equation numbers are the paper's):

* Modality encoding (III-B): text tokens -> 2-layer GELU MLP -> LayerNorm (the BERT output scaled
  to the shared width); audio / vision -> Linear, a learned CLS token, learned positions and a
  post-LN transformer encoder (eq. 1). The first token of every sequence is its summary.
* Temporal alignment (eq. 4): ``H = X_t + CA(X_t, X_a) + CA(X_t, X_v)`` with padding masks.
* Semantic alignment (eq. 5): NT-Xent with text as the only anchor, in-batch negatives.
* Supervised contrastive learning with hard-negative mining (III-D): for every anchor, mined
  positives / hard / easy negatives (``training.mining`` draws them from similarities over the
  training set) are encoded too, and eq. 5 is applied to every unimodal feature and to H.
* Fusion (Table V): ``hbf`` (eq. 6-9, the paper's), ``bf`` (no compression), ``ca``
  (H attends to the modalities), ``concat_sa`` (self-attention over all sequences), ``concat``.
* Head: MLP with ReLU over the first tokens of the fused modalities and of the fused
  multimodal sequence (4 x 128 = 512 -> 256 -> 128 -> 1); loss eq. 12 = task + lambda * L_con.
  ``summary="mean"`` reads masked means instead of first tokens (see the config).

Readings where the paper is ambiguous (each the better-founded one, see the docstrings below):
eq. 7-8's Multi-CA adds the residual B once (eq. 8 writes it inside Multi-CA and eq. 7 adds it
again; the official code adds it once); eq. 9's modalities attend to the *refined* bottleneck
H^l (the text: "updated by cross-modal attention with the refined bottleneck representation"),
not the pre-fusion B^l; L_con sums eq. 5 over the semantic pairs and over the supervised
representations, averaged over anchors (eq. 11). A missing modality drops its stream everywhere
(its CA terms, its contrastive pairs, its head slot).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import torch
from einops import repeat
from torch import Tensor, nn

from msalign.config import check_ranges
from msalign.errors import MsalignError
from msalign.losses.contrastive import (
    ContrastBatch,
    MiningSpec,
    semantic_alignment_loss,
    supervised_contrastive_loss,
)
from msalign.models.attention import Attention, PostNormBlock
from msalign.models.base import ModelOutput, MSAModel, masked_mean
from msalign.models.dropout import Dropout
from msalign.models.registry import register_model
from msalign.models.search_space import TRAIN_SPACE, CategoricalParam, FloatParam, SearchSpace

FUSIONS = ("concat", "concat_sa", "ca", "bf", "hbf")
BOTTLENECK_SOURCES = ("aligned", "learned")


@dataclass
class DashFusionConfig:
    width: int = 128  # Sec. IV-B: 128-d encoders
    heads: int = 8  # attention heads (width must divide by it)
    ff_width: int = 256  # feed-forward width of the transformer layers
    # Sec. IV-B: single-layer audio / vision encoders on MOSI and CH-SIMS, 3 layers on MOSEI
    # (the official code uses 2 and 4; anchors.md)
    encoder_layers: int = 1
    max_length: int = 1024  # learned positions for audio / vision sequences up to this length
    fusion: str = "hbf"  # Table V: concat | concat_sa | ca | bf | hbf
    fusion_layers: int = 2  # Sec. IV-B: 2 on MOSI / CH-SIMS, 3 on MOSEI
    bottleneck_tokens: int = 8  # p (Fig. 4: 8 is best)
    bottleneck_source: str = "aligned"  # "learned": Table IV "w/o dual-stream" (random initial tokens)
    temporal: bool = True  # eq. 4 (False: H = X_t)
    semantic: bool = True  # eq. 5 text-anchored pairs
    scl: bool = True  # Sec. III-D supervised contrast with mined samples
    contrastive_weight: float = 0.2  # lambda of eq. 12
    temperature: float = 0.5  # temperature of the contrastive losses
    positives: int = 2  # same-class positives mined per anchor
    hard_negatives: int = 2  # hard negatives mined per anchor (most similar of another class)
    easy_negatives: int = 2  # easy negatives mined per anchor (least similar of another class)
    mining_pool: int = 10  # draw from the 10 best-ranked candidates of each kind
    mining_refresh: int = 2  # recompute similarities every other epoch (official code)
    head_hidden: tuple[int, ...] = (256, 128)  # hidden widths of the MLP head
    # what the head reads of each fused sequence: "first" token (the paper: BERT's [CLS], the
    # audio / vision CLS token, the first bottleneck token) or the masked "mean" over time, the
    # better summary for frozen sentence-transformer features trained with mean pooling (MiniLM)
    summary: str = "first"
    dropout: float = 0.1  # dropout in encoders, fusion and head

    def __post_init__(self) -> None:
        check_ranges(self, "model")  # ranges first: heads >= 1 before width % heads below
        if self.fusion not in FUSIONS:
            raise MsalignError(f"dashfusion: fusion {self.fusion!r} is not one of {', '.join(FUSIONS)}")
        if self.bottleneck_source not in BOTTLENECK_SOURCES:
            raise MsalignError(
                f"dashfusion: bottleneck_source {self.bottleneck_source!r} is not one of "
                f"{', '.join(BOTTLENECK_SOURCES)}"
            )
        if self.summary not in ("first", "mean"):
            raise MsalignError(f"dashfusion: summary {self.summary!r} is not 'first' or 'mean'")
        if self.width % self.heads:
            raise MsalignError(f"dashfusion: width {self.width} is not divisible by heads {self.heads}")
        if self.bottleneck_tokens < 1 or self.fusion_layers < 0 or self.encoder_layers < 0:
            raise MsalignError("dashfusion: bottleneck_tokens must be >= 1 and layer counts >= 0")


class TextProjection(nn.Module):
    """BERT-like token features -> the shared width (2-layer GELU MLP, LayerNorm)."""

    def __init__(self, in_dim: int, width: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_dim, width), nn.GELU(), nn.Linear(width, width), nn.LayerNorm(width))

    def forward(self, x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        return self.net(x), mask


class ClsTransformerEncoder(nn.Module):
    """Audio / vision encoder: Linear, a learned CLS token in front, learned positions, post-LN layers."""

    def __init__(
        self,
        modality: str,
        in_dim: int,
        width: int,
        heads: int,
        ff_width: int,
        layers: int,
        max_length: int,
        dropout: float,
    ):
        super().__init__()
        self.modality = modality
        self.project = nn.Linear(in_dim, width)
        self.cls = nn.Parameter(torch.randn(1, 1, width) * 0.02)
        self.positions = nn.Parameter(torch.randn(1, max_length + 1, width) * 0.02)
        self.dropout = Dropout(dropout)
        self.layers = nn.ModuleList(PostNormBlock(width, heads, ff_width, dropout) for _ in range(layers))

    def forward(self, x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        if x.shape[1] + 1 > self.positions.shape[1]:
            raise MsalignError(
                f"dashfusion: {self.modality} sequence of length {x.shape[1]} exceeds max_length "
                f"{self.positions.shape[1] - 1} (raise it with --set max_length=N)"
            )
        hidden = torch.cat([repeat(self.cls, "1 1 d -> b 1 d", b=len(x)), self.project(x)], dim=1)
        hidden = self.dropout(hidden + self.positions[:, : hidden.shape[1]])
        mask = torch.cat([mask.new_ones(len(mask), 1), mask], dim=1)
        for layer in self.layers:
            hidden = layer(hidden, mask)
        return hidden, mask


@dataclass
class Encoded:
    """Encoder outputs: per-modality sequences (first token = summary) and the aligned H."""

    sequences: dict[str, Tensor]
    masks: dict[str, Tensor]
    aligned: Tensor  # H of eq. 4, on the text time axis
    aligned_mask: Tensor

    def pooled(self) -> dict[str, Tensor]:
        """Average pooling along time (the global features X-bar of eq. 5), and of H."""
        pooled = {m: masked_mean(x, self.masks[m]) for m, x in self.sequences.items()}
        pooled["aligned"] = masked_mean(self.aligned, self.aligned_mask)
        return pooled


Sequences = list[tuple[Tensor, Tensor]]  # (sequence (B, L, D), mask (B, L)) pairs


class Fusion(nn.Module):
    """Base of the Table V variants: ``forward`` returns the fused multimodal sequence and each
    fused modality's sequence, with masks; the head reads their first tokens (or means)."""

    def forward(self, encoded: Encoded) -> Sequences:  # pragma: no cover - interface
        raise NotImplementedError


class ConcatFusion(Fusion):
    """Table V "Concat": the first tokens as they are (no parameters, no multiply-adds)."""

    def __init__(self, modalities: tuple[str, ...]):
        super().__init__()
        self.modalities = modalities

    def forward(self, encoded: Encoded) -> Sequences:
        return [(encoded.aligned, encoded.aligned_mask)] + [
            (encoded.sequences[m], encoded.masks[m]) for m in self.modalities
        ]


class ConcatSelfAttentionFusion(Fusion):
    """Table V "Concat&SA": self-attention layers over the concatenation of H and every modality."""

    def __init__(self, modalities: tuple[str, ...], width: int, heads: int, ff_width: int, layers: int, dropout: float):
        super().__init__()
        self.modalities = modalities
        self.layers = nn.ModuleList(PostNormBlock(width, heads, ff_width, dropout) for _ in range(layers))

    def forward(self, encoded: Encoded) -> Sequences:
        parts = [encoded.aligned] + [encoded.sequences[m] for m in self.modalities]
        masks = [encoded.aligned_mask] + [encoded.masks[m] for m in self.modalities]
        joined, mask = torch.cat(parts, dim=1), torch.cat(masks, dim=1)
        for layer in self.layers:
            joined = layer(joined, mask)
        pieces = joined.split([p.shape[1] for p in parts], dim=1)
        return list(zip(pieces, masks, strict=True))


class MultiCrossAttention(nn.Module):
    """Multi-CA (eq. 7-8): ``LN(q + sum_m CA(q, X_m))`` then ``LN(h + FFN(h))``.

    The residual q is added once: eq. 8 writes it inside Multi-CA and eq. 7 adds it again, which
    would double the query's weight before the LayerNorm; the official code adds it once.
    """

    def __init__(self, modalities: tuple[str, ...], width: int, heads: int, ff_width: int, dropout: float):
        super().__init__()
        self.attend = nn.ModuleDict({m: Attention(width, heads) for m in modalities})
        self.norm_attention = nn.LayerNorm(width)
        self.feed_forward = nn.Sequential(
            nn.Linear(width, ff_width), nn.ReLU(), Dropout(dropout), nn.Linear(ff_width, width)
        )
        self.norm_ff = nn.LayerNorm(width)
        self.dropout = Dropout(dropout)

    def forward(self, query: Tensor, sequences: dict[str, Tensor], masks: dict[str, Tensor]) -> Tensor:
        gathered = query
        for m, attend in self.attend.items():
            gathered = gathered + self.dropout(attend(query, sequences[m], masks[m]))
        hidden = self.norm_attention(gathered)
        return self.norm_ff(hidden + self.dropout(self.feed_forward(hidden)))


class CrossAttentionFusion(Fusion):
    """Table V "CA": H gathers from every modality by cross-attention, layer after layer;
    the modalities are not updated (one-directional)."""

    def __init__(self, modalities: tuple[str, ...], width: int, heads: int, ff_width: int, layers: int, dropout: float):
        super().__init__()
        self.modalities = modalities
        self.layers = nn.ModuleList(
            MultiCrossAttention(modalities, width, heads, ff_width, dropout) for _ in range(layers)
        )

    def forward(self, encoded: Encoded) -> Sequences:
        fused = encoded.aligned
        for layer in self.layers:
            fused = layer(fused, encoded.sequences, encoded.masks)
        return [(fused, encoded.aligned_mask)] + [(encoded.sequences[m], encoded.masks[m]) for m in self.modalities]


class BottleneckFusion(Fusion):
    """Hierarchical bottleneck fusion (eq. 6-9); ``hierarchical=False`` is Table V's "BF".

    Layer l (1-based): ``B^l = Transformer-layer(H^{l-1})[:, :p_l]`` (eq. 6) with
    ``p_l = p / 2^(l-1)`` (at least 1) or ``p`` without compression; ``H^l = MultiCA(B^l, X^{l-1})``
    (eq. 7-8); ``X_m^l = LN(Z + FFN(Z))``, ``Z = LN(X_m^{l-1} + CA(X_m^{l-1}, H^l))`` (eq. 9,
    with the refined bottleneck H^l). H^0 is the temporally aligned H, or learned tokens with
    ``learned_start`` (Table IV's "w/o dual-stream alignment": randomly initialised tokens).
    """

    def __init__(
        self,
        modalities: tuple[str, ...],
        width: int,
        heads: int,
        ff_width: int,
        layers: int,
        tokens: int,
        hierarchical: bool,
        learned_start: bool,
        dropout: float,
    ):
        super().__init__()
        self.modalities = modalities
        self.sizes = [max(1, tokens // 2**level) if hierarchical else tokens for level in range(layers)]
        self.start_tokens = nn.Parameter(torch.randn(1, tokens, width) * 0.02) if learned_start else None
        self.select = nn.ModuleList(PostNormBlock(width, heads, ff_width, dropout) for _ in range(layers))
        self.gather = nn.ModuleList(
            MultiCrossAttention(modalities, width, heads, ff_width, dropout) for _ in range(layers)
        )
        self.scatter = nn.ModuleList(
            nn.ModuleDict({m: PostNormBlock(width, heads, ff_width, dropout) for m in modalities})
            for _ in range(layers)
        )

    def forward(self, encoded: Encoded) -> Sequences:
        sequences, masks = dict(encoded.sequences), encoded.masks
        fused, fused_mask = encoded.aligned, encoded.aligned_mask
        for level, size in enumerate(self.sizes):
            if level == 0 and self.start_tokens is not None:
                bottleneck = repeat(self.start_tokens, "1 p d -> b p d", b=len(fused))
                bottleneck_mask = fused_mask.new_ones(bottleneck.shape[:2])
            else:
                bottleneck = self.select[level](fused, fused_mask)[:, :size]  # eq. 6
                bottleneck_mask = fused_mask[:, :size]
            fused, fused_mask = self.gather[level](bottleneck, sequences, masks), bottleneck_mask  # eq. 7-8
            scatter = cast(nn.ModuleDict, self.scatter[level])  # ModuleList's stubs type its items as Module
            sequences = {m: scatter[m](x, masks[m], fused, fused_mask) for m, x in sequences.items()}  # eq. 9
        return [(fused, fused_mask)] + [(sequences[m], masks[m]) for m in self.modalities]


@register_model
class DashFusion(MSAModel):
    name = "dashfusion"
    Config = DashFusionConfig
    search_space = TRAIN_SPACE + SearchSpace(
        (
            CategoricalParam("model.width", (64, 128)),  # both divisible by the 8 heads
            CategoricalParam("model.encoder_layers", (1, 2)),
            CategoricalParam("model.fusion_layers", (1, 2, 3)),
            CategoricalParam("model.bottleneck_tokens", (4, 8, 16)),
            FloatParam("model.contrastive_weight", 0.02, 0.5, log=True),
            FloatParam("model.temperature", 0.1, 1.0, log=True),
            CategoricalParam("model.summary", ("first", "mean")),
            FloatParam("model.dropout", 0.0, 0.4),
        )
    )
    required_modalities = ("text",)
    min_modalities = 2

    def __init__(self, config: DashFusionConfig, dims: dict[str, int], output_dim: int):
        super().__init__(config, dims, output_dim)
        c = config
        self.nonverbal = tuple(m for m in self.modalities if m != "text")
        self.encoders = nn.ModuleDict({"text": TextProjection(dims["text"], c.width)})
        for m in self.nonverbal:
            self.encoders[m] = ClsTransformerEncoder(
                m, dims[m], c.width, c.heads, c.ff_width, c.encoder_layers, c.max_length, c.dropout
            )
        self.temporal = nn.ModuleDict({m: Attention(c.width, c.heads) for m in self.nonverbal}) if c.temporal else None
        self.temporal_dropout = Dropout(c.dropout)
        self.fusion = self._build_fusion(c)
        head_in = c.width * (1 + len(self.modalities))
        layers: list[nn.Module] = []
        for hidden in c.head_hidden:
            layers += [nn.Linear(head_in, hidden), nn.ReLU(), Dropout(c.dropout)]
            head_in = hidden
        self.head = nn.Sequential(*layers, nn.Linear(head_in, output_dim))

    def _build_fusion(self, c: DashFusionConfig) -> Fusion:
        args = (self.modalities, c.width, c.heads, c.ff_width, c.fusion_layers)
        if c.fusion == "concat":
            return ConcatFusion(self.modalities)
        if c.fusion == "concat_sa":
            return ConcatSelfAttentionFusion(*args, c.dropout)
        if c.fusion == "ca":
            return CrossAttentionFusion(*args, c.dropout)
        return BottleneckFusion(
            *args, c.bottleneck_tokens, c.fusion == "hbf", c.bottleneck_source == "learned", c.dropout
        )

    @property
    def mining(self) -> MiningSpec | None:
        """The hard-negative sampler this model asks the training loop for (None without SCL)."""
        c = self.config
        if not c.scl or c.contrastive_weight == 0:
            return None
        return MiningSpec(c.positives, c.hard_negatives, c.easy_negatives, c.mining_pool, c.mining_refresh)

    def encode(self, features: dict[str, Tensor], masks: dict[str, Tensor]) -> Encoded:
        """Modality encoding and temporal alignment (eq. 4)."""
        sequences: dict[str, Tensor] = {}
        seq_masks: dict[str, Tensor] = {}
        for m in self.modalities:
            sequences[m], seq_masks[m] = self.encoders[m](features[m], masks[m].bool())
        aligned = sequences["text"]
        if self.temporal is not None:
            for source, attend in self.temporal.items():
                attended = attend(sequences["text"], sequences[source], seq_masks[source])
                aligned = aligned + self.temporal_dropout(attended)
        return Encoded(sequences, seq_masks, aligned, seq_masks["text"])

    @torch.no_grad()
    def mining_embedding(self, features: dict[str, Tensor], masks: dict[str, Tensor]) -> Tensor:
        """The features the sampler compares (cosine): the pooled aligned H, which carries every modality."""
        return self.encode(features, masks).pooled()["aligned"]

    def forward(
        self, features: dict[str, Tensor], masks: dict[str, Tensor], contrast: ContrastBatch | None = None
    ) -> ModelOutput:
        encoded = self.encode(features, masks)
        fused = self.fusion(encoded)
        if self.config.summary == "first":
            summaries = [sequence[:, 0] for sequence, _ in fused]
        else:
            summaries = [masked_mean(sequence, mask) for sequence, mask in fused]
        out = self.head(torch.cat(summaries, dim=-1))
        prediction = out.squeeze(-1) if self.output_dim == 1 else out
        pooled = encoded.pooled()
        aux, diagnostics = {}, {}
        c = self.config
        if self.training and c.contrastive_weight > 0:
            terms = []
            if c.semantic:
                for m in self.nonverbal:
                    semantic = semantic_alignment_loss(pooled["text"], pooled[m], c.temperature)
                    diagnostics[f"semantic_{m}"] = semantic.detach()
                    terms.append(semantic)
            if c.scl and contrast is not None:
                mined = self.encode(contrast.features, contrast.masks).pooled()
                anchors = len(prediction)
                for kind, anchor in pooled.items():
                    candidates = mined[kind].reshape(anchors, -1, anchor.shape[-1])
                    scl = supervised_contrastive_loss(
                        anchor, candidates, contrast.positive, contrast.valid, c.temperature
                    )
                    diagnostics[f"scl_{kind}"] = scl.detach()
                    terms.append(scl)
            if terms:
                aux["contrastive"] = c.contrastive_weight * torch.stack(terms).sum()
        return ModelOutput(prediction, aux, pooled, diagnostics)

"""decalign: DecAlign (Qian et al.), hierarchical cross-modal alignment of decoupled features.

Section 3 of the paper, for any M >= 2 modalities:

1. temporal 1D-conv projection of each modality to a shared width d (3.1);
2. a modality-unique encoder per modality and ONE modality-common encoder shared by all,
   with the decoupling loss, eq. 1 (``losses.decoupling``);
3. heterogeneity alignment (3.2) of the unique features: per-batch GMM prototypes (eq. 2-4;
   with diagonal covariances the M fits run batched, see ``DecAlign.prototypes``),
   a multi-marginal entropic OT plan between the modalities' prototypes under the Gaussian
   (Bures-Wasserstein) cost (eq. 5-8), and the sample-to-prototype calibration (eq. 9);
4. homogeneity alignment (3.3) of the common features: mean / covariance / skewness matching
   (eq. 10) and multi-bandwidth MMD (eq. 11-12);
5. a cross-modal transformer over the unique sequences (3.4): each target modality queries the
   concatenation of the other modalities' sequences, then (``self_layers``) attends to itself, as
   in MulT [35] (padding is dropped first: keys packed
   real-first and trimmed, queries trimmed, long and uneven batches split into length groups or,
   when that still leaves much padding, attended clip by clip (``_cross_modal_rows``),
   position-wise layers run on real frames only; targets with few keys, e.g. one-frame
   utterance-level streams, take ``_cross_modal_small``; all exact, see ``models.attention``
   and docs/speed.md);
6. fusion: pooled transformer outputs concatenated with pooled common features, then a
   two-layer MLP head (dropout, linear, GELU, dropout, linear; the paper says one fully
   connected layer); loss eq. 13: task + dec + alpha * hete + beta * homo.

The unique and common encoders are per-frame two-layer MLPs (the official code: one 1x1 conv).
Dropout on attention weights is off by default (``attn_dropout``; see the config).

Readings where the paper is ambiguous (each documented where it is implemented):
- eq. 1 uses the *squared* cosine: plain cosine is minimised by anti-parallel features, which are
  no less redundant than parallel ones.
- eq. 9's target prototypes are matched to each source prototype through the OT plan
  (``calibration="plan"``); ``"index"`` is the equal-index reading of the official code.
- The OT plan is computed without gradient and L_OT = <T*, C> is differentiated w.r.t. the cost
  only: by the envelope theorem this is the gradient of the entropic OT value, and it avoids
  back-propagating through the Sinkhorn iterations.
- Ablation switches follow the paper's Tables 3 and 4: ``decoupling`` (MFD: without it there are no
  separate unique/common encoders, one projected representation feeds both streams, no L_dec),
  ``hete`` (both proto-OT and the cross-modal transformer), ``homo`` (sem and MMD), and the finer
  ``proto_ot`` (eq. 9 in full), ``cross_transformer`` (CT; without it unique sequences are pooled
  directly), ``sem`` (eq. 10) and ``mmd`` (eq. 11).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from itertools import combinations
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from msalign.config import check_ranges
from msalign.errors import MsalignError
from msalign.losses import (
    GMM,
    decoupling_loss,
    fit_gmm,
    joint_cost,
    moment_matching,
    multimarginal_sinkhorn,
    ot_loss,
    pairwise_mmd,
    pairwise_prototype_cost,
    pairwise_prototype_costs,
    prototype_loss,
)
from msalign.losses.contrastive import ContrastBatch
from msalign.models.attention import (
    CrossModalEncoder,
    MultimodalTransformer,
    Packed,
    cached_positions,
    length_groups,
    pack_keys,
    query_span,
    row_by_row_pays,
)
from msalign.models.base import ModelOutput, MSAModel, masked_mean
from msalign.models.blocks import TemporalProjection
from msalign.models.dropout import Dropout
from msalign.models.registry import register_model
from msalign.models.search_space import TRAIN_SPACE, CategoricalParam, FloatParam, SearchSpace


@dataclass
class DecAlignConfig:
    # architecture (the official MOSI configuration: d = 64, 8 heads, 5 layers)
    width: int = 64  # shared width d of the projected features
    heads: int = 8  # attention heads (width must divide by it)
    layers: int = 5  # cross-modal transformer layers
    # Self-attention layers over each target's cross-modal output: the second stage of the
    # multimodal transformer [35] (MulT) that section 3.4 incorporates "to model global temporal
    # information". The official code stops after the cross-attention (a target's frames never
    # attend to each other); 0 reproduces that and is the default: on the synthetic data one
    # self-attention layer changed test MAE by +0.01 (seed 1111), within seed noise.
    self_layers: int = 0
    # How a target attends to the other modalities. "concat" (default, the official code): one
    # encoder per target over the other modalities' sequences concatenated in time, the sources
    # competing in one softmax. "pairwise": MulT's own design, one crossmodal encoder per
    # (source -> target) pair, outputs concatenated over sources; (M - 1) times the encoders, and
    # on the synthetic data no better (test MAE 0.461 vs 0.457, seed 1111).
    cross_context: str = "concat"  # concat | pairwise
    # LayerNorm on each projected frame. Off by default: it rescales every frame to unit norm,
    # which erases how strongly a frame carries a cue (on the synthetic data test MAE 0.46 with
    # it, see the closing note of issue 3); the transformer blocks normalise their own inputs.
    projection_norm: bool = False
    projection_kernel: int = 3  # temporal conv kernel; 1 = the official code's pointwise projection
    dropout: float = 0.1  # residual, feed-forward and head dropout
    # Dropout on the attention weights forces SDPA's unfused path, which materialises every
    # (B, heads, Lq, Lk) weight: at MOSI's unaligned lengths ~4x the step time and ~9 GB RSS.
    # Off by default (residual and feed-forward dropout stay); the official code uses 0.1.
    attn_dropout: float = 0.0
    # loss weights, eq. 13 (the paper's sensitivity study: alpha = beta = 0.05)
    alpha: float = 0.05  # weight of the heterogeneity (prototype OT) loss
    beta: float = 0.05  # weight of the homogeneity (moments + MMD) loss
    dec_weight: float = 1.0  # weight of the decoupling loss (eq. 1)
    # prototypes and OT (eq. 2-9)
    num_prototypes: int = 7  # 6 for IEMOCAP
    gmm_steps: int = 5  # EM steps of the per-batch GMM fit
    covariance: str = "diag"  # diag | full
    var_floor: float = 1e-4  # lower bound on GMM variances
    # eq. 6 summed over d dimensions grows with d (costs ~100 at d = 64), which leaves a plan at
    # epsilon = 0.1 far from converged; "mean" divides by d (as the official code does) so epsilon
    # keeps one meaning at any width. "sum" is eq. 6 as printed.
    prototype_cost: str = "mean"  # mean | sum
    ot_epsilon: float = 0.1  # entropic regularisation of the Sinkhorn OT
    ot_max_iter: int = 200  # Sinkhorn iteration cap
    ot_tol: float = 1e-5  # Sinkhorn convergence tolerance
    calibration: str = "plan"  # plan | index
    # eq. 10's squared norms: "sum" as printed grows with d^2 (the covariance term: 7.3 at d = 64 on
    # MOSI, larger than the task loss at beta = 0.05); "mean" (mean squared entry, the official
    # code's MSE) keeps each term independent of d, which is what the paper's beta was tuned with.
    sem_reduction: str = "mean"  # mean | sum
    # MMD (eq. 11-12): None = multi-bandwidth around the median heuristic
    mmd_bandwidths: tuple[float, ...] | None = None
    # ablation switches (Tables 3 and 4)
    decoupling: bool = True  # MFD: separate unique / common encoders and L_dec
    hete: bool = True  # heterogeneity alignment: prototype OT and the cross-modal transformer
    homo: bool = True  # homogeneity alignment: moment matching and MMD
    proto_ot: bool = True  # prototype-guided OT (eq. 2-9)
    cross_transformer: bool = True  # CT: cross-modal transformer over the unique sequences
    sem: bool = True  # moment matching of the common features (eq. 10)
    mmd: bool = True  # MMD between the common features (eq. 11-12)

    def __post_init__(self) -> None:
        check_ranges(self, "model")  # ranges first: heads >= 1 before width % heads below
        if self.covariance not in ("diag", "full"):
            raise MsalignError(f"decalign: covariance must be diag or full, got {self.covariance!r}")
        if self.prototype_cost not in ("mean", "sum"):
            raise MsalignError(f"decalign: prototype_cost must be mean or sum, got {self.prototype_cost!r}")
        if self.cross_context not in ("pairwise", "concat"):
            raise MsalignError(f"decalign: cross_context must be pairwise or concat, got {self.cross_context!r}")
        if self.sem_reduction not in ("mean", "sum"):
            raise MsalignError(f"decalign: sem_reduction must be mean or sum, got {self.sem_reduction!r}")
        if self.calibration not in ("plan", "index"):
            raise MsalignError(f"decalign: calibration must be plan or index, got {self.calibration!r}")
        if self.width % self.heads:
            raise MsalignError(f"decalign: width {self.width} is not divisible by heads {self.heads}")
        if self.num_prototypes < 1 or self.gmm_steps < 1 or self.ot_epsilon <= 0:
            raise MsalignError("decalign: num_prototypes and gmm_steps must be >= 1 and ot_epsilon > 0")


def position_wise_encoder(width: int, dropout: float) -> nn.Module:
    """A per-time-step two-layer MLP (the paper's unique / common encoders)."""
    return nn.Sequential(nn.Linear(width, width), nn.GELU(), Dropout(dropout), nn.Linear(width, width))


@register_model
class DecAlign(MSAModel):
    name = "decalign"
    Config = DecAlignConfig
    search_space = TRAIN_SPACE + SearchSpace(
        (
            CategoricalParam("model.width", (32, 64, 96)),  # all divisible by the 8 heads
            CategoricalParam("model.layers", (2, 3, 4, 5)),
            CategoricalParam("model.projection_kernel", (1, 3)),
            FloatParam("model.dropout", 0.0, 0.4),
            FloatParam("model.alpha", 0.005, 0.5, log=True),  # eq. 13's loss weights
            FloatParam("model.beta", 0.005, 0.5, log=True),
            FloatParam("model.dec_weight", 0.1, 2.0, log=True),
            CategoricalParam("model.num_prototypes", (3, 5, 7, 9)),
        )
    )
    min_modalities = 2

    def __init__(self, config: DecAlignConfig, dims: dict[str, int], output_dim: int):
        super().__init__(config, dims, output_dim)
        c = config
        self.project = nn.ModuleDict(
            {m: TemporalProjection(dims[m], c.width, c.projection_kernel) for m in self.modalities}
        )
        self.project_norm = nn.ModuleDict(
            {m: nn.LayerNorm(c.width) if c.projection_norm else nn.Identity() for m in self.modalities}
        )
        if c.decoupling:
            self.unique = nn.ModuleDict({m: position_wise_encoder(c.width, c.dropout) for m in self.modalities})
            self.common = position_wise_encoder(c.width, c.dropout)  # ONE encoder shared by all modalities
        heterogeneous_width = c.width
        # pairwise: one MultimodalTransformer; concat: a CrossModalEncoder per target (see concat_encoders)
        self.transformer: MultimodalTransformer | nn.ModuleDict
        if self.use_cross_transformer and c.cross_context == "pairwise":
            self.transformer = MultimodalTransformer(
                self.modalities, c.width, c.heads, c.layers, c.self_layers, c.dropout, c.attn_dropout
            )
            heterogeneous_width = self.transformer.output_width
        elif self.use_cross_transformer:
            # Tells the keys of different source modalities apart inside the concatenated context.
            self.modality_embedding = nn.ParameterDict(
                {m: nn.Parameter(torch.randn(c.width) * 0.02) for m in self.modalities}
            )
            self.transformer = nn.ModuleDict(
                {
                    m: CrossModalEncoder(c.width, c.heads, c.layers, c.dropout, c.attn_dropout, positions=False)
                    for m in self.modalities
                }
            )
            if c.self_layers:
                self.memory = nn.ModuleDict(
                    {
                        m: CrossModalEncoder(
                            c.width, c.heads, c.self_layers, c.dropout, c.attn_dropout, positions=False
                        )
                        for m in self.modalities
                    }
                )
        fused = (heterogeneous_width + c.width) * len(self.modalities)
        self.head = nn.Sequential(
            Dropout(c.dropout), nn.Linear(fused, fused), nn.GELU(), Dropout(c.dropout), nn.Linear(fused, output_dim)
        )

    @property
    def use_cross_transformer(self) -> bool:
        return self.config.hete and self.config.cross_transformer

    @property
    def concat_encoders(self) -> Mapping[str, CrossModalEncoder]:
        """``transformer`` under ``cross_context="concat"``, typed: ModuleDict's stubs say Module."""
        return cast("Mapping[str, CrossModalEncoder]", self.transformer)

    # --- the forward pass -------------------------------------------------------------------
    # frames are handled as padded (B, L, d) sequences, or as the (N, d) real frames of one when
    # at most this share of its positions is real (``attention.Packed``); the results are the same
    pack_below: float = 0.9

    def forward(
        self, features: dict[str, Tensor], masks: dict[str, Tensor], contrast: ContrastBatch | None = None
    ) -> ModelOutput:
        """``contrast`` is unused: DecAlign mines no samples (it is here to match :meth:`MSAModel.forward`)."""
        c = self.config
        layouts = {m: self._layout(masks[m]) for m in self.modalities}
        projected = {
            m: self.project_norm[m](self._project(m, features[m], masks[m], layouts[m])) for m in self.modalities
        }
        if c.decoupling:
            unique = {m: self.unique[m](x) for m, x in projected.items()}
            # the shared encoder runs once over the frames of all modalities
            flat = [projected[m].reshape(-1, c.width) for m in self.modalities]
            shared = self.common(torch.cat(flat)).split([f.shape[0] for f in flat])
            common = {m: x.view(projected[m].shape) for m, x in zip(self.modalities, shared, strict=True)}
        else:  # MFD off: one representation per modality feeds both streams
            unique = common = projected
        pooled_unique = {m: self._pool(unique[m], masks[m], layouts[m]) for m in self.modalities}
        pooled_common = (
            pooled_unique
            if not c.decoupling
            else {m: self._pool(common[m], masks[m], layouts[m]) for m in self.modalities}
        )

        if self.use_cross_transformer:
            padded: dict[str, Tensor] = {
                m: x if (layout := layouts[m]) is None else layout.unpack(x) for m, x in unique.items()
            }
            if c.cross_context == "pairwise":
                heterogeneous = self.transformer(padded, masks)
            else:
                heterogeneous = self.cross_modal(padded, masks)
        else:
            heterogeneous = pooled_unique
        fused = torch.cat([heterogeneous[m] for m in self.modalities] + [pooled_common[m] for m in self.modalities], -1)
        prediction = self.head(fused)
        prediction = prediction.squeeze(-1) if self.output_dim == 1 else prediction

        if self.training:
            # packed frames are all real: no mask
            frame_masks = {m: masks[m] if layouts[m] is None else None for m in self.modalities}
            aux, diagnostics = self.alignment_losses(unique, common, frame_masks, pooled_unique, pooled_common)
        else:
            aux, diagnostics = {}, {}
        representations = {f"unique_{m}": v for m, v in pooled_unique.items()}
        representations.update({f"common_{m}": v for m, v in pooled_common.items()})
        representations.update({f"fused_{m}": v for m, v in heterogeneous.items()})
        return ModelOutput(prediction, aux, representations, diagnostics)

    def representations(self, batch: dict) -> dict[str, dict[str, Tensor]]:
        """Utterance-level features per modality before and after alignment, for modality-gap plots.

        ``batch``: ``{"features": {m: (B, L, D)}, "masks": {m: (B, L)}, ...}`` (a collated batch).
        Returns ``{"before": {m: (B, d)}, "after": {m: (B, d)}}``: "before" is the masked time-mean of
        the temporal projection (3.1, after ``project_norm``), each modality still in its own learned
        space; "after" the masked time-mean of the ONE modality-common encoder's output (3.3's
        features, which the homogeneity losses pull together). Without decoupling there is no common
        encoder and "after" equals "before". Dropout follows the module's mode: call ``eval()``
        first (and wrap in ``torch.no_grad()``) for analysis.
        """
        features, masks = batch["features"], batch["masks"]
        missing = [m for m in self.modalities if m not in features or m not in masks]
        if missing:
            raise MsalignError(
                f"decalign.representations: batch lacks modality {missing} (model uses {list(self.modalities)})"
            )
        before: dict[str, Tensor] = {}
        after: dict[str, Tensor] = {}
        for m in self.modalities:
            projected = self.project_norm[m](self.project[m](features[m], masks[m]))
            before[m] = masked_mean(projected, masks[m])
            after[m] = masked_mean(self.common(projected), masks[m]) if self.config.decoupling else before[m]
        return {"before": before, "after": after}

    def _layout(self, mask: Tensor) -> Packed | None:
        if mask.shape[1] > 1 and int(mask.sum()) <= self.pack_below * mask.numel():
            return Packed.from_mask(mask)
        return None

    def _project(self, m: str, x: Tensor, mask: Tensor, layout: Packed | None) -> Tensor:
        """The temporal projection (3.1): (B, L, d), or the (N, d) real frames with ``layout``."""
        projection = cast(TemporalProjection, self.project[m])
        if layout is None:
            return projection(x, mask)
        if projection.kernel_size == 1:  # pointwise: only the real frames need computing
            conv = projection.conv
            return F.linear(layout.pack(x), conv.weight[..., 0], conv.bias)
        return layout.pack(projection(x, mask))

    @staticmethod
    def _pool(x: Tensor, mask: Tensor, layout: Packed | None) -> Tensor:
        """Mean over each clip's real frames (``masked_mean``); 0 for a clip without any."""
        if layout is None:
            return masked_mean(x, mask)
        sums = x.new_zeros(layout.batch, x.shape[-1]).index_add_(0, layout.rows, x)
        counts = mask.sum(dim=1, keepdim=True).to(x.dtype).clamp_min(1.0)
        return sums / counts

    def cross_modal(self, unique: dict[str, Tensor], masks: dict[str, Tensor]) -> dict[str, Tensor]:
        """``cross_context="concat"``: each target's unique sequence attends to the others'
        sequences concatenated in time (the official code's cross-modal transformer).

        ``unique``: padded (B, L_m, d) sequences. Every sequence gets sinusoidal positions on its
        own time axis plus a learned modality embedding, and is zeroed at padding. Padding is then
        dropped, exactly: the context is packed real-first and trimmed (``pack_keys``), the query
        trimmed to its last real frame, when lengths vary enough the rows run in a few length
        groups (``length_groups``), and the encoder's position-wise layers see real query frames
        only. Targets with few (query frame, key) pairs take ``_cross_modal_small`` instead (the same
        function, without SDPA's per-block overhead). Returns each target's transformer output
        mean-pooled over its real positions.
        """
        c = self.config
        positioned: dict[str, Tensor] = {}
        for m, x in unique.items():
            offset = cached_positions(x.shape[1], x.shape[2], x.device, x.dtype) + self.modality_embedding[m]
            positioned[m] = (x + offset) * masks[m].unsqueeze(-1).to(x.dtype)
        key_counts: dict[str, Tensor] = {m: masks[m].sum(dim=1) for m in self.modalities}
        small: dict[str, Tensor] = {}
        for target in self.modalities:
            # a Tensor: every target has at least one other modality (min_modalities = 2)
            keys = cast(Tensor, sum(key_counts[m] for m in self.modalities if m != target))
            pairs = int(key_counts[target].sum()) * max(int(keys.max()), 1)
            if not c.self_layers and pairs <= self.small_attention:
                small[target] = keys
        pooled = self._cross_modal_small(positioned, masks, key_counts, small) if small else {}
        for target in self.modalities:
            if target in small:
                continue
            sources = [m for m in self.modalities if m != target]
            joined, joined_mask = (
                torch.cat([positioned[m] for m in sources], dim=1),
                torch.cat([masks[m] for m in sources], dim=1),
            )
            spans, context_counts = query_span(masks[target]), joined_mask.sum(dim=1)
            groups = length_groups(spans, context_counts, c.width, c.heads)
            query_list, context_list = key_counts[target].tolist(), context_counts.tolist()
            if row_by_row_pays(query_list, context_list, groups, spans, context_counts, c.width, c.heads):
                pooled[target] = self._cross_modal_rows(
                    target, positioned[target], masks[target], joined, joined_mask, query_list, context_list
                )
                continue
            context, context_mask = pack_keys(joined, joined_mask)
            parts = []
            for rows in groups:
                whole = len(groups) == 1
                lq, lk = max(int(spans[rows].max()), 1), max(int(context_counts[rows].max()), 1)
                query = positioned[target][:, :lq] if whole else positioned[target][rows, :lq]
                query_mask = masks[target][:, :lq] if whole else masks[target][rows, :lq]
                keys = context[:, :lk] if whole else context[rows, :lk]
                keys_mask = context_mask[:, :lk] if whole else context_mask[rows, :lk]
                out = self.concat_encoders[target](query, query_mask, keys, keys_mask)
                if c.self_layers:
                    out = self.memory[target](out, query_mask)
                parts.append(masked_mean(out, query_mask))
            if len(groups) == 1:
                pooled[target] = parts[0]
            else:
                inverse = torch.argsort(torch.cat(groups))
                pooled[target] = torch.cat(parts)[inverse]
        return {m: pooled[m] for m in self.modalities}

    def _cross_modal_rows(
        self,
        target: str,
        query: Tensor,
        query_mask: Tensor,
        context: Tensor,
        context_mask: Tensor,
        query_counts: list[int],
        context_counts: list[int],
    ) -> Tensor:
        """One target of ``cross_modal`` row by row on real frames (``CrossModalEncoder.forward_rows``),
        exact: the same keys per query frame, no padded pairs. Returns the (B, d) pooled output."""
        query_layout = Packed.from_mask(query_mask)
        frames = query_layout.pack(query)
        keys = Packed.from_mask(context_mask).pack(context)
        out = self.concat_encoders[target].forward_rows(frames, query_counts, keys, context_counts)
        if self.config.self_layers:
            out = cast(CrossModalEncoder, self.memory[target]).forward_rows(out, query_counts)
        sums = out.new_zeros(query_layout.batch, out.shape[-1]).index_add_(0, query_layout.rows, out)
        counts = torch.tensor(query_counts, dtype=out.dtype, device=out.device).clamp_min(1.0)
        return sums / counts.unsqueeze(-1)

    # targets with at most this many (real query frame, key) pairs take ``_cross_modal_small``
    small_attention: int = 16384

    def _cross_modal_small(
        self,
        positioned: dict[str, Tensor],
        masks: dict[str, Tensor],
        key_counts: dict[str, Tensor],
        small: dict[str, Tensor],
    ) -> dict[str, Tensor]:
        """``cross_modal`` for targets with few keys (``small``: target -> (B,) key counts), exact.

        Each modality's real frames are normalised once (LayerNorm without affine, shared by every
        block of every target they feed), each target's context is laid out per row real-first
        (as ``pack_keys`` does), and its encoder runs on its real query frames without forming
        keys or values (``CrossModalEncoder.forward_frames``).
        """
        width, batch = self.config.width, next(iter(masks.values())).shape[0]
        eps = self.concat_encoders[next(iter(small))].typed_blocks[0].norm_context.eps
        frames: dict[str, Tensor] = {}
        rows: dict[str, Tensor | None] = {}
        ranks: dict[str, Tensor] = {}
        for m, x in positioned.items():
            mask = masks[m]
            if mask.shape[1] == 1 and bool(mask.all()):  # one real frame per row: frame n is row n
                frames[m], rows[m] = x[:, 0], None
                ranks[m] = torch.zeros(batch, dtype=torch.long, device=mask.device)
            else:
                layout = Packed.from_mask(mask)
                frames[m], rows[m] = layout.pack(x), layout.rows
                ranks[m] = (mask.cumsum(dim=1) - 1).reshape(-1).index_select(0, layout.index)
        normalised = {
            m: F.layer_norm(frames[m], (width,), eps=eps) for m in self.modalities if any(t != m for t in small)
        }
        pooled = {}
        for target, counts in small.items():
            length = max(int(counts.max()), 1)
            offset = torch.zeros_like(counts)
            slots: list[Tensor] = []
            parts: list[Tensor] = []
            for source in (m for m in self.modalities if m != target):
                source_rows = rows[source]
                if source_rows is None:
                    source_rows = torch.arange(batch, device=counts.device)
                slots.append(source_rows * length + offset.index_select(0, source_rows) + ranks[source])
                parts.append(normalised[source])
                offset = offset + key_counts[source]
            stacked = torch.cat(parts)
            context = stacked.new_zeros(batch * length, width).index_copy(0, torch.cat(slots), stacked)
            key_mask = torch.arange(length, device=counts.device)[None, :] < counts[:, None]
            out = self.concat_encoders[target].forward_frames(
                frames[target], rows[target], context.view(batch, length, width), key_mask
            )
            query_rows = rows[target]
            if query_rows is None:
                pooled[target] = out
            else:
                sums = out.new_zeros(batch, width).index_add_(0, query_rows, out)
                pooled[target] = sums / key_counts[target].unsqueeze(-1).to(out.dtype).clamp_min(1.0)
        return pooled

    # --- the alignment losses (training only: predictions do not depend on them) -------------
    def alignment_losses(self, unique, common, masks, pooled_unique, pooled_common):
        """The weighted aux losses of eq. 13 and their unweighted parts (diagnostics).

        ``unique`` / ``common``: per modality, padded (B, L, d) frames with their (B, L) mask in
        ``masks``, or (N, d) real frames with mask None; ``pooled_*``: (B, d) clip means.
        """
        c = self.config
        aux: dict[str, Tensor] = {}
        diagnostics: dict[str, Tensor] = {}
        if c.decoupling:
            dec = decoupling_loss(
                [unique[m] for m in self.modalities],
                [common[m] for m in self.modalities],
                [masks[m] for m in self.modalities],
            )
            aux["dec"] = c.dec_weight * dec
            diagnostics["dec"] = dec.detach()
        if c.hete and c.proto_ot:
            ot, calibration = self.heterogeneity_loss([pooled_unique[m] for m in self.modalities])
            aux["hete"] = c.alpha * (ot + calibration)
            diagnostics["ot"] = ot.detach()
            diagnostics["proto"] = calibration.detach()
        if c.homo and (c.sem or c.mmd):
            commons = [pooled_common[m] for m in self.modalities]
            homo = commons[0].new_zeros(())
            if c.sem:
                sem = moment_matching(commons, reduction=c.sem_reduction)
                homo = homo + sem
                diagnostics["sem"] = sem.detach()
            if c.mmd:
                mmd = pairwise_mmd(commons, bandwidths=c.mmd_bandwidths)
                homo = homo + mmd
                diagnostics["mmd"] = mmd.detach()
            aux["homo"] = c.beta * homo
        return aux, diagnostics

    def prototypes(self, pooled: list[Tensor]) -> list[GMM]:
        """Eq. 2-4: one GMM per modality on its pooled unique features (N, d), fitted by ``fit_gmm``.

        With diagonal covariances the M fits run as one batched computation (``torch.func.vmap``
        over the stacked modalities: the same EM, M times fewer kernel launches); full covariances
        take the Cholesky path, whose jitter retry is data-dependent, so they are fitted one by one.
        """
        c = self.config

        def fit(x: Tensor) -> GMM:
            return fit_gmm(x, c.num_prototypes, num_steps=c.gmm_steps, covariance=c.covariance, var_floor=c.var_floor)

        if c.covariance != "diag":
            return [fit(x) for x in pooled]
        means, covs, mixing, responsibilities = torch.func.vmap(lambda x: tuple(fit(x)))(torch.stack(pooled))
        return [GMM(means[i], covs[i], mixing[i], responsibilities[i]) for i in range(len(pooled))]

    def heterogeneity_loss(self, pooled: list[Tensor]) -> tuple[Tensor, Tensor]:
        """Eq. 9: L_OT = <T*, C> over the joint prototype cost, plus the calibration term."""
        c = self.config
        mixtures = self.prototypes(pooled)
        count = len(pooled)
        pairs = list(combinations(range(count), 2))
        if count > 2:  # every pair in one broadcast computation (the same matrices)
            costs = pairwise_prototype_costs(
                torch.stack([g.means for g in mixtures]),
                torch.stack([g.covs for g in mixtures]),
                reduction=c.prototype_cost,
            )
            pairwise = dict(zip(pairs, costs.unbind(0), strict=True))
        else:
            pairwise = {
                (i, j): pairwise_prototype_cost(
                    mixtures[i].means, mixtures[i].covs, mixtures[j].means, mixtures[j].covs, reduction=c.prototype_cost
                )
                for i, j in pairs
            }
        cost = joint_cost(pairwise, count)
        # marginals nu_i: each modality's mean posterior over the batch (eq. 8)
        marginals = [g.responsibilities.mean(dim=0).detach() for g in mixtures]
        with torch.no_grad():
            plan = multimarginal_sinkhorn(
                cost.detach(),
                marginals,
                c.ot_epsilon,
                max_iter=c.ot_max_iter,
                tol=c.ot_tol,
                epsilon_scaling=0.5,
                check_every=5,
            )
        ot = ot_loss(cost, plan)
        calibration = prototype_loss(
            pooled, [g.responsibilities for g in mixtures], [g.means for g in mixtures], plan=plan, mode=c.calibration
        )
        return ot, calibration

"""decalign: DecAlign (Qian et al.), hierarchical cross-modal alignment of decoupled features.

Section 3 of the paper, for any M >= 2 modalities:

1. temporal 1D-conv projection of each modality to a shared width d (3.1);
2. a modality-unique encoder per modality and ONE modality-common encoder shared by all,
   with the decoupling loss, eq. 1 (``losses.decoupling``);
3. heterogeneity alignment (3.2) of the unique features: per-batch GMM prototypes (eq. 2-4),
   a multi-marginal entropic OT plan between the modalities' prototypes under the Gaussian
   (Bures-Wasserstein) cost (eq. 5-8), and the sample-to-prototype calibration (eq. 9);
4. homogeneity alignment (3.3) of the common features: mean / covariance / skewness matching
   (eq. 10) and multi-bandwidth MMD (eq. 11-12);
5. a cross-modal transformer over the unique sequences (3.4): each target modality queries the
   concatenation of the other modalities' sequences;
6. fusion: pooled transformer outputs concatenated with pooled common features, a fully
   connected head; loss eq. 13: task + dec + alpha * hete + beta * homo.

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

from dataclasses import dataclass
from itertools import combinations

import torch
from torch import Tensor, nn

from msalign.losses import (
    decoupling_loss,
    fit_gmm,
    joint_cost,
    moment_matching,
    multimarginal_sinkhorn,
    ot_loss,
    pairwise_mmd,
    pairwise_prototype_cost,
    prototype_loss,
)
from msalign.models.attention import CrossModalEncoder
from msalign.models.base import ModelOutput, MSAModel, masked_mean
from msalign.models.blocks import TemporalProjection, sinusoidal_positions
from msalign.models.registry import register_model


@dataclass
class DecAlignConfig:
    # architecture (the official MOSI configuration: d = 64, 8 heads, 5 layers)
    width: int = 64
    heads: int = 8
    layers: int = 5
    projection_kernel: int = 3  # temporal conv kernel; 1 = the official code's pointwise projection
    dropout: float = 0.1
    attn_dropout: float = 0.1
    # loss weights, eq. 13 (the paper's sensitivity study: alpha = beta = 0.05)
    alpha: float = 0.05
    beta: float = 0.05
    dec_weight: float = 1.0
    # prototypes and OT (eq. 2-9)
    num_prototypes: int = 7  # 6 for IEMOCAP
    gmm_steps: int = 5
    covariance: str = "diag"  # diag | full
    var_floor: float = 1e-4
    # eq. 6 summed over d dimensions grows with d (costs ~100 at d = 64), which leaves a plan at
    # epsilon = 0.1 far from converged; "mean" divides by d (as the official code does) so epsilon
    # keeps one meaning at any width. "sum" is eq. 6 as printed.
    prototype_cost: str = "mean"  # mean | sum
    ot_epsilon: float = 0.1
    ot_max_iter: int = 200
    ot_tol: float = 1e-5
    calibration: str = "plan"  # plan | index
    # MMD (eq. 11-12): None = multi-bandwidth around the median heuristic
    mmd_bandwidths: tuple[float, ...] | None = None
    # ablation switches (Tables 3 and 4)
    decoupling: bool = True
    hete: bool = True
    homo: bool = True
    proto_ot: bool = True
    cross_transformer: bool = True
    sem: bool = True
    mmd: bool = True

    def __post_init__(self) -> None:
        from msalign.errors import MsalignError

        if self.covariance not in ("diag", "full"):
            raise MsalignError(f"decalign: covariance must be diag or full, got {self.covariance!r}")
        if self.prototype_cost not in ("mean", "sum"):
            raise MsalignError(f"decalign: prototype_cost must be mean or sum, got {self.prototype_cost!r}")
        if self.calibration not in ("plan", "index"):
            raise MsalignError(f"decalign: calibration must be plan or index, got {self.calibration!r}")
        if self.width % self.heads:
            raise MsalignError(f"decalign: width {self.width} is not divisible by heads {self.heads}")
        if self.num_prototypes < 1 or self.gmm_steps < 1 or self.ot_epsilon <= 0:
            raise MsalignError("decalign: num_prototypes and gmm_steps must be >= 1 and ot_epsilon > 0")


def position_wise_encoder(width: int, dropout: float) -> nn.Module:
    """A per-time-step two-layer MLP (the paper's unique / common encoders)."""
    return nn.Sequential(nn.Linear(width, width), nn.GELU(), nn.Dropout(dropout), nn.Linear(width, width))


@register_model
class DecAlign(MSAModel):
    name = "decalign"
    Config = DecAlignConfig
    min_modalities = 2

    def __init__(self, config: DecAlignConfig, dims: dict[str, int], output_dim: int):
        super().__init__(config, dims, output_dim)
        c = config
        self.project = nn.ModuleDict({m: TemporalProjection(dims[m], c.width, c.projection_kernel) for m in self.modalities})
        self.project_norm = nn.ModuleDict({m: nn.LayerNorm(c.width) for m in self.modalities})
        if c.decoupling:
            self.unique = nn.ModuleDict({m: position_wise_encoder(c.width, c.dropout) for m in self.modalities})
            self.common = position_wise_encoder(c.width, c.dropout)  # ONE encoder shared by all modalities
        if self.use_cross_transformer:
            # Tells the keys of different source modalities apart inside the concatenated context.
            self.modality_embedding = nn.ParameterDict(
                {m: nn.Parameter(torch.randn(c.width) * 0.02) for m in self.modalities}
            )
            self.transformer = nn.ModuleDict(
                {m: CrossModalEncoder(c.width, c.heads, c.layers, c.dropout, c.attn_dropout, positions=False)
                 for m in self.modalities}
            )
        fused = 2 * c.width * len(self.modalities)
        self.head = nn.Sequential(nn.Dropout(c.dropout), nn.Linear(fused, fused), nn.GELU(), nn.Dropout(c.dropout),
                                  nn.Linear(fused, output_dim))

    @property
    def use_cross_transformer(self) -> bool:
        return self.config.hete and self.config.cross_transformer

    # --- the forward pass -------------------------------------------------------------------
    def forward(self, features: dict[str, Tensor], masks: dict[str, Tensor]) -> ModelOutput:
        c = self.config
        projected = {m: self.project_norm[m](self.project[m](features[m], masks[m])) for m in self.modalities}
        if c.decoupling:
            unique = {m: self.unique[m](x) for m, x in projected.items()}
            common = {m: self.common(x) for m, x in projected.items()}
        else:  # MFD off: one representation per modality feeds both streams
            unique = common = projected
        pooled_unique = {m: masked_mean(unique[m], masks[m]) for m in self.modalities}
        pooled_common = {m: masked_mean(common[m], masks[m]) for m in self.modalities}

        heterogeneous = self.cross_modal(unique, masks) if self.use_cross_transformer else pooled_unique
        fused = torch.cat([heterogeneous[m] for m in self.modalities] + [pooled_common[m] for m in self.modalities], -1)
        prediction = self.head(fused)
        prediction = prediction.squeeze(-1) if self.output_dim == 1 else prediction

        aux, diagnostics = ({}, {}) if not self.training else self.alignment_losses(unique, common, masks, pooled_unique, pooled_common)
        representations = {f"unique_{m}": v for m, v in pooled_unique.items()}
        representations.update({f"common_{m}": v for m, v in pooled_common.items()})
        representations.update({f"fused_{m}": v for m, v in heterogeneous.items()})
        return ModelOutput(prediction, aux, representations, diagnostics)

    def cross_modal(self, unique: dict[str, Tensor], masks: dict[str, Tensor]) -> dict[str, Tensor]:
        """Each target modality's unique sequence attends to the others' (concatenated in time)."""
        positioned = {
            m: (x + sinusoidal_positions(x.shape[1], x.shape[2], x.device, x.dtype) + self.modality_embedding[m])
            * masks[m].unsqueeze(-1).to(x.dtype)
            for m, x in unique.items()
        }
        pooled = {}
        for target in self.modalities:
            sources = [m for m in self.modalities if m != target]
            context = torch.cat([positioned[m] for m in sources], dim=1)
            context_mask = torch.cat([masks[m] for m in sources], dim=1)
            out = self.transformer[target](positioned[target], masks[target], context, context_mask)
            pooled[target] = masked_mean(out, masks[target])
        return pooled

    # --- the alignment losses (training only: predictions do not depend on them) -------------
    def alignment_losses(self, unique, common, masks, pooled_unique, pooled_common):
        c = self.config
        aux: dict[str, Tensor] = {}
        diagnostics: dict[str, Tensor] = {}
        if c.decoupling:
            dec = decoupling_loss([unique[m] for m in self.modalities], [common[m] for m in self.modalities],
                                  [masks[m] for m in self.modalities])
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
                sem = moment_matching(commons)
                homo = homo + sem
                diagnostics["sem"] = sem.detach()
            if c.mmd:
                mmd = pairwise_mmd(commons, bandwidths=c.mmd_bandwidths)
                homo = homo + mmd
                diagnostics["mmd"] = mmd.detach()
            aux["homo"] = c.beta * homo
        return aux, diagnostics

    def heterogeneity_loss(self, pooled: list[Tensor]) -> tuple[Tensor, Tensor]:
        """Eq. 9: L_OT = <T*, C> over the joint prototype cost, plus the calibration term."""
        c = self.config
        mixtures = [fit_gmm(x, c.num_prototypes, num_steps=c.gmm_steps, covariance=c.covariance, var_floor=c.var_floor)
                    for x in pooled]
        count = len(pooled)
        pairwise = {
            (i, j): pairwise_prototype_cost(mixtures[i].means, mixtures[i].covs, mixtures[j].means, mixtures[j].covs,
                                            reduction=c.prototype_cost)
            for i, j in combinations(range(count), 2)
        }
        cost = joint_cost(pairwise, count)
        # marginals nu_i: each modality's mean posterior over the batch (eq. 8)
        marginals = [g.responsibilities.mean(dim=0).detach() for g in mixtures]
        with torch.no_grad():
            plan = multimarginal_sinkhorn(cost.detach(), marginals, c.ot_epsilon, max_iter=c.ot_max_iter, tol=c.ot_tol,
                                          epsilon_scaling=0.5, check_every=5)
        ot = ot_loss(cost, plan)
        calibration = prototype_loss(pooled, [g.responsibilities for g in mixtures], [g.means for g in mixtures],
                                     plan=plan, mode=c.calibration)
        return ot, calibration

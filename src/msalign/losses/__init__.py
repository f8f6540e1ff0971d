"""Alignment losses as pure functions (DecAlign eq. 1-12): no state, any dtype / device.

* :mod:`.decoupling`: unique / common decoupling (eq. 1)
* :mod:`.gmm`: differentiable EM for GMM prototypes (eq. 2-4)
* :mod:`.gaussian`: Bures-Wasserstein prototype costs (eq. 6)
* :mod:`.ot`: joint cost, multi-marginal Sinkhorn, transport cost (eq. 5, 7-9)
* :mod:`.prototype`: sample-to-prototype calibration, heterogeneity loss (eq. 9)
* :mod:`.moments`: mean / covariance / skewness matching (eq. 10)
* :mod:`.mmd`: multi-bandwidth Gaussian-kernel MMD (eq. 11-12)
"""

from msalign.losses.decoupling import decoupling_loss
from msalign.losses.gaussian import bures_wasserstein, pairwise_prototype_cost, pairwise_prototype_costs, sqrtm_psd
from msalign.losses.gmm import GMM, e_step, em_step, fit_gmm, log_gaussian
from msalign.losses.mmd import median_bandwidth, mmd, pairwise_mmd
from msalign.losses.moments import mean_cov_skew, moment_matching
from msalign.losses.ot import (
    SinkhornInfo,
    joint_cost,
    multimarginal_sinkhorn,
    ot_loss,
    pairwise_plan,
    transport_cost,
)
from msalign.losses.prototype import heterogeneity_loss, prototype_calibration, prototype_loss

__all__ = [
    "GMM",
    "SinkhornInfo",
    "bures_wasserstein",
    "decoupling_loss",
    "e_step",
    "em_step",
    "fit_gmm",
    "heterogeneity_loss",
    "joint_cost",
    "log_gaussian",
    "mean_cov_skew",
    "median_bandwidth",
    "mmd",
    "moment_matching",
    "multimarginal_sinkhorn",
    "ot_loss",
    "pairwise_mmd",
    "pairwise_plan",
    "pairwise_prototype_cost",
    "pairwise_prototype_costs",
    "prototype_calibration",
    "prototype_loss",
    "sqrtm_psd",
    "transport_cost",
]

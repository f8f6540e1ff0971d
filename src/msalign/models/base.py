"""What every msalign model is: a config dataclass, a constructor, a forward returning ModelOutput.

A model is built as ``Model(config, dims, output_dim)`` where ``dims`` maps each modality the
dataset provides (and the model supports) to its feature width, and ``output_dim`` is 1 for
regression or the number of classes. ``forward(features, masks)`` takes per-modality padded
tensors (B, L, D) and boolean masks (B, L), True at real positions, and returns the prediction
and the model's auxiliary losses, *already weighted* by the model's own coefficients (for DecAlign,
eq. 13's 1, alpha, beta); the training loop adds the task loss and sums everything.

Hooks a model may provide, declared here with the defaults the training loop relies on:

* ``text_encoder``: a fine-tuned copy of the dataset's text encoder, attached by
  :func:`msalign.models.text_tuning.attach_text_encoder` (None: the cached text features are used);
* ``mining``: the hard-negative sampler the model asks for (:class:`~msalign.losses.contrastive.MiningSpec`,
  None: no mining), with ``mining_embedding`` (what the sampler compares) and the ``contrast=``
  argument of ``forward`` (the mined samples of each training batch).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from msalign.errors import MsalignError
from msalign.losses.contrastive import ContrastBatch, MiningSpec
from msalign.models.search_space import SearchSpace


@dataclass
class ModelOutput:
    prediction: Tensor  # (B,) for regression, (B, C) logits for classification
    aux_losses: dict[str, Tensor] = field(default_factory=dict)  # weighted, summed into the loss
    # pooled features by name, for analysis and reports (modality gap, prototypes, ...)
    representations: dict[str, Tensor] = field(default_factory=dict)
    # unweighted loss components and other scalars worth logging; never added to the loss
    diagnostics: dict[str, Tensor] = field(default_factory=dict)


class TextEncoderModule(nn.Module):
    """Base of the fine-tuned text encoders :func:`msalign.models.text_tuning.attach_text_encoder` sets as
    ``MSAModel.text_encoder``: transcripts -> (token features, mask)."""

    def metadata(self) -> dict[str, Any]:
        """What a checkpoint records to rebuild this encoder (its weights come with the model's state)."""
        raise NotImplementedError


class MSAModel(nn.Module):
    """Base class: subclasses set ``name``, ``Config`` and the modalities they handle."""

    name: ClassVar[str] = ""
    Config: ClassVar[type] = object
    supported_modalities: ClassVar[tuple[str, ...]] = ("text", "audio", "vision")
    required_modalities: ClassVar[tuple[str, ...]] = ()
    min_modalities: ClassVar[int] = 1
    # what ``msalign tune`` may vary (msalign.models.search_space): TRAIN_SPACE plus the model's own keys
    search_space: ClassVar[SearchSpace | None] = None

    def __init__(self, config: Any, dims: dict[str, int], output_dim: int):
        super().__init__()
        self.config = config
        self.modalities = tuple(m for m in ("text", "audio", "vision") if m in dims)
        self.dims = dict(dims)
        self.output_dim = output_dim
        # set by attach_text_encoder (a Module then, registered as a submodule and saved with the weights)
        self.text_encoder: TextEncoderModule | None = None
        self.check_modalities(self.modalities)

    @classmethod
    def check_modalities(cls, available: tuple[str, ...] | list[str]) -> None:
        missing = [m for m in cls.required_modalities if m not in available]
        if missing:
            raise MsalignError(f"model {cls.name} needs modality {missing}; the dataset has {list(available)}")
        usable = [m for m in available if m in cls.supported_modalities]
        if len(usable) < cls.min_modalities:
            raise MsalignError(
                f"model {cls.name} needs at least {cls.min_modalities} of {list(cls.supported_modalities)}; "
                f"the dataset has {list(available)}"
            )

    @property
    def mining(self) -> MiningSpec | None:
        """The hard-negative sampler this model asks the training loop for (msalign.training.mining);
        None, the default: no mining. A model that returns a spec also overrides :meth:`mining_embedding`
        and uses ``contrast`` in :meth:`forward`."""
        return None

    def mining_embedding(self, features: dict[str, Tensor], masks: dict[str, Tensor]) -> Tensor:
        """(B, D) features the sampler compares (cosine) to mine positives and negatives; only called
        when :attr:`mining` is not None."""
        raise NotImplementedError(f"model {self.name} asks for mining but defines no mining_embedding")

    def forward(
        self, features: dict[str, Tensor], masks: dict[str, Tensor], contrast: ContrastBatch | None = None
    ) -> ModelOutput:  # pragma: no cover
        """Prediction and weighted auxiliary losses. ``contrast``: the mined samples of a training batch,
        passed only when :attr:`mining` is not None (a model without mining may leave the argument out)."""
        raise NotImplementedError


def masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    """Mean over time of (B, L, D) at real positions only; rows with no real position give 0."""
    weights = mask.to(x.dtype).unsqueeze(-1)
    return (x * weights).sum(dim=1) / weights.sum(dim=1).clamp_min(1.0)


def task_loss(prediction: Tensor, target: Tensor, output_dim: int, regression_loss: str = "mse") -> Tensor:
    """MSE (or L1 with ``regression_loss="l1"``) for regression (output_dim 1), cross-entropy for classification."""
    if output_dim == 1:
        error = nn.functional.l1_loss if regression_loss == "l1" else nn.functional.mse_loss
        return error(prediction.reshape(-1), target.to(prediction.dtype).reshape(-1))
    return nn.functional.cross_entropy(prediction, target.long())


__all__ = ["MSAModel", "ModelOutput", "TextEncoderModule", "masked_mean", "task_loss", "torch"]

"""Small building blocks shared by the models: padding-aware sequence encoders and pooling."""

from __future__ import annotations

import math

import torch
from einops import rearrange
from torch import Tensor, nn

from msalign.models.base import masked_mean
from msalign.models.dropout import Dropout


def sinusoidal_positions(length: int, width: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """(length, width) fixed sinusoidal position table (Vaswani et al. 2017)."""
    position = torch.arange(length, device=device, dtype=torch.float32)[:, None]
    frequency = torch.exp(torch.arange(0, width, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / width))
    table = torch.zeros(length, width, device=device)
    table[:, 0::2] = torch.sin(position * frequency)
    table[:, 1::2] = torch.cos(position * frequency[: width // 2])
    return table.to(dtype)


class TemporalProjection(nn.Module):
    """1D temporal convolution from a modality's width to the shared width; keeps the length.

    Padding positions are zeroed before and after the convolution so they never leak into
    real frames through the kernel.
    """

    def __init__(self, in_dim: int, width: int, kernel_size: int = 1, bias: bool = False):
        super().__init__()
        self.conv = nn.Conv1d(in_dim, width, kernel_size, padding=kernel_size // 2, bias=bias)
        self.kernel_size = kernel_size

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        keep = mask.unsqueeze(-1).to(x.dtype)
        out = self.conv(rearrange(x * keep, "b l d -> b d l"))
        if self.kernel_size % 2 == 0:  # even kernels grow the length by one
            out = out[..., : x.shape[1]]
        return rearrange(out, "b d l -> b l d") * keep


class SequenceEncoder(nn.Module):
    """Project -> (positions) -> pre-norm transformer encoder with padding mask -> masked mean.

    Used by the baselines; a length-1 sequence (utterance-level features) works unchanged.
    """

    def __init__(self, in_dim: int, width: int, layers: int, heads: int, dropout: float, kernel_size: int = 1):
        super().__init__()
        self.project = TemporalProjection(in_dim, width, kernel_size, bias=True)
        self.input_norm = nn.LayerNorm(width)
        layer = nn.TransformerEncoderLayer(
            width, heads, dim_feedforward=4 * width, dropout=dropout, batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False) if layers > 0 else None
        self.output_norm = nn.LayerNorm(width)

    def forward(self, x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """Returns (sequence (B, L, W), pooled (B, W))."""
        hidden = self.input_norm(self.project(x, mask))
        hidden = hidden + sinusoidal_positions(hidden.shape[1], hidden.shape[2], hidden.device, hidden.dtype)
        if self.encoder is not None:
            # A row with no real position would make attention all -inf; let such rows attend to
            # themselves (their output is discarded by the masked mean anyway).
            empty = ~mask.any(dim=1)
            padding = ~mask
            if empty.any():
                padding = padding.clone()
                padding[empty, 0] = False
            hidden = self.encoder(hidden, src_key_padding_mask=padding)
        hidden = self.output_norm(hidden)
        return hidden, masked_mean(hidden, mask)


class MLPHead(nn.Module):
    """Dropout -> Linear -> GELU -> Dropout -> Linear; the prediction head of the baselines."""

    def __init__(self, in_dim: int, hidden: int, output_dim: int, dropout: float):
        super().__init__()
        self.net = nn.Sequential(
            Dropout(dropout), nn.Linear(in_dim, hidden), nn.GELU(), Dropout(dropout), nn.Linear(hidden, output_dim)
        )

    def forward(self, x: Tensor) -> Tensor:
        out = self.net(x)
        return out.squeeze(-1) if out.shape[-1] == 1 else out

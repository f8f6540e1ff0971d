"""Dropout that is cheap on CPU.

``torch.nn.Dropout`` draws one 32-bit uniform per element from the CPU generator, which costs
~18 ns per element: at MOSI's shapes that is ~20% of a DecAlign training step on one thread
(``benchmarks/decalign_speed.py``). Here one 64-bit draw serves four elements (16-bit lanes), ~8x
cheaper. Each element is kept with probability ``1 - p'``, ``p' = round(65536 p) / 65536`` (p to
within 8e-6), and scaled by ``1 / (1 - p')``: the expectation is exact. ``torch.manual_seed``
makes it reproducible. On other devices (their generators are fast) and for small tensors, where
launch overhead dominates, it calls ``F.dropout``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

SMALL = 8192  # elements below which F.dropout is used


def dropout(x: Tensor, p: float, training: bool = True) -> Tensor:
    """Inverted dropout, as ``F.dropout(x, p, training)``; see the module docstring."""
    if not training or p <= 0.0:
        return x
    dropped = round(p * 65536)
    if dropped >= 65536:
        return x * 0.0
    if x.device.type != "cpu" or x.numel() < SMALL or dropped == 0:
        return F.dropout(x, p, True) if dropped else x
    count = x.numel()
    lanes = torch.empty((count + 3) // 4, dtype=torch.int64, device=x.device).random_(-(2**63), 2**63 - 1)
    bits = lanes.view(torch.int16)[:count].view(x.shape)  # uniform on [-32768, 32767]
    # keep iff bits >= dropped - 32768, i.e. with probability (65536 - dropped) / 65536
    keep = bits.to(torch.float32).sub_(dropped - 32768 - 1).clamp_(0.0, 1.0)
    return x * keep.mul_(65536.0 / (65536 - dropped)).to(x.dtype)


class Dropout(nn.Module):
    """Drop-in for ``nn.Dropout(p)`` (same ``p`` attribute and train/eval behaviour)."""

    def __init__(self, p: float = 0.5):
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"dropout probability has to be between 0 and 1, got {p}")
        self.p = float(p)

    def forward(self, x: Tensor) -> Tensor:
        return dropout(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"


__all__ = ["Dropout", "dropout"]

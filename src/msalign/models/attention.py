"""Padding-aware (cross-)attention blocks on torch's scaled_dot_product_attention.

Shared by MulT and DecAlign's cross-modal transformer: a block attends from a query sequence to
a key/value sequence (the same one for self-attention), pre-LayerNorm, residual, 4x feed-forward.
Masks are boolean (B, L), True at real positions; padded keys are never attended to.
"""

from __future__ import annotations


import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from msalign.models.blocks import sinusoidal_positions


def key_padding_bias(key_mask: Tensor) -> Tensor:
    """(B, Lk) bool -> (B, 1, 1, Lk) bool attention mask for SDPA (True = may attend).

    A row whose keys are all padding would give softmax over nothing (NaN); such rows attend to
    every (zero) key instead, and their output is masked out downstream.
    """
    empty = ~key_mask.any(dim=1, keepdim=True)
    return (key_mask | empty)[:, None, None, :]


class Attention(nn.Module):
    def __init__(self, width: int, heads: int, dropout: float = 0.0):
        super().__init__()
        if width % heads:
            raise ValueError(f"width {width} is not divisible by heads {heads}")
        self.heads = heads
        self.to_q = nn.Linear(width, width)
        self.to_kv = nn.Linear(width, 2 * width)
        self.out = nn.Linear(width, width)
        self.dropout = dropout

    def forward(self, query: Tensor, context: Tensor, context_mask: Tensor) -> Tensor:
        q = rearrange(self.to_q(query), "b l (h d) -> b h l d", h=self.heads)
        k, v = rearrange(self.to_kv(context), "b l (two h d) -> two b h l d", two=2, h=self.heads)
        attended = F.scaled_dot_product_attention(
            q, k, v, attn_mask=key_padding_bias(context_mask), dropout_p=self.dropout if self.training else 0.0
        )
        return self.out(rearrange(attended, "b h l d -> b l (h d)"))


class CrossModalBlock(nn.Module):
    """query <- LN(query) attends to LN(context); then a pre-LN feed-forward; both residual."""

    def __init__(self, width: int, heads: int, dropout: float = 0.1, attn_dropout: float = 0.0):
        super().__init__()
        self.norm_query = nn.LayerNorm(width)
        self.norm_context = nn.LayerNorm(width)
        self.attention = Attention(width, heads, attn_dropout)
        self.norm_ff = nn.LayerNorm(width)
        self.feed_forward = nn.Sequential(
            nn.Linear(width, 4 * width), nn.GELU(), nn.Dropout(dropout), nn.Linear(4 * width, width)
        )
        self.dropout = nn.Dropout(dropout)

    def forward(self, query: Tensor, context: Tensor, context_mask: Tensor) -> Tensor:
        query = query + self.dropout(self.attention(self.norm_query(query), self.norm_context(context), context_mask))
        return query + self.dropout(self.feed_forward(self.norm_ff(query)))


class CrossModalEncoder(nn.Module):
    """A stack of CrossModalBlocks from a target sequence to a source sequence (MulT's CM(source -> target)).

    Sinusoidal positions are added to both sequences once (each modality's own time axis). With
    ``context is None`` it is a self-attention encoder over the query.
    """

    def __init__(self, width: int, heads: int, layers: int, dropout: float = 0.1, attn_dropout: float = 0.0,
                 positions: bool = True):
        super().__init__()
        self.blocks = nn.ModuleList(CrossModalBlock(width, heads, dropout, attn_dropout) for _ in range(layers))
        self.norm = nn.LayerNorm(width)
        self.positions = positions

    def forward(self, query: Tensor, query_mask: Tensor, context: Tensor | None = None,
                context_mask: Tensor | None = None) -> Tensor:
        if self.positions:
            query = query + sinusoidal_positions(query.shape[1], query.shape[2], query.device, query.dtype)
        if context is not None and self.positions:
            context = context + sinusoidal_positions(context.shape[1], context.shape[2], context.device, context.dtype)
        for block in self.blocks:
            if context is None:
                query = block(query, query, query_mask)
            else:
                query = block(query, context, context_mask)
        return self.norm(query) * query_mask.unsqueeze(-1).to(query.dtype)


__all__ = ["Attention", "CrossModalBlock", "CrossModalEncoder", "key_padding_bias"]

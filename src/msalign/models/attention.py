"""Padding-aware (cross-)attention blocks on torch's scaled_dot_product_attention.

Shared by MulT and DecAlign's cross-modal transformer: a block attends from a query sequence to
a key/value sequence (the same one for self-attention), pre-LayerNorm, residual, 4x feed-forward.
Masks are boolean (B, L), True at real positions; padded keys are never attended to.

Speed notes (CPU, measured in ``benchmarks/decalign_speed.py``):

* With ``attn_dropout == 0`` (or in eval mode) SDPA runs its fused flash kernel, which never
  materialises the (B, heads, Lq, Lk) weights and accepts the boolean key mask. Dropout on the
  attention weights forces SDPA's unfused "math" path, which does materialise them (several GB
  and ~4x the step time at MOSI's unaligned lengths); it is supported but costly.
* A single key (utterance-level features stored as length-1 sequences) makes the softmax 1 for
  every query, so the output is the value itself; that case skips SDPA (exact).
* :class:`~msalign.models.dropout.Dropout` draws its mask from 16-bit random lanes, several times
  cheaper than ``torch.nn.Dropout`` on CPU.
* :func:`pack_keys`, :func:`query_span` and :func:`length_groups` let callers drop padding before a
  stack of blocks: keys are reordered real-first and trimmed (attention has no notion of key
  order), queries are trimmed to the last real position, and a batch whose lengths vary a lot is
  split into a few row groups sorted by length, each trimmed to its own maximum. All are exact:
  every real position sees the same keys as before.
* :class:`CrossModalEncoder` runs the position-wise layers (LayerNorms, projections, feed-forward,
  dropout) on the real query frames only when a good share of the queries is padding, and pads
  them back just around the attention call (:class:`Packed`); exact as well.
* :meth:`CrossModalEncoder.forward_frames` serves contexts of a few keys (one-frame utterance-level
  streams): the context is normalised once for all blocks, and keys / values are folded into the
  queries or projected once per clip; no padding, no SDPA call (exact; ``docs/speed.md``).
* :meth:`CrossModalEncoder.forward_rows` attends clip by clip on real frames only, for long ragged
  batches where even length groups leave most pairs padded (:func:`row_by_row_pays`; exact).
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Sequence
from typing import NamedTuple, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from msalign.models.base import masked_mean
from msalign.models.blocks import sinusoidal_positions
from msalign.models.dropout import Dropout, dropout


@functools.lru_cache(maxsize=64)
def _position_table(length: int, width: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    return sinusoidal_positions(length, width, device, dtype)


def cached_positions(length: int, width: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """``blocks.sinusoidal_positions``, computed once per (length, width, device, dtype). Read-only."""
    return _position_table(int(length), int(width), torch.device(device), dtype)


def key_padding_bias(key_mask: Tensor) -> Tensor:
    """(B, Lk) bool -> (B, 1, 1, Lk) bool attention mask for SDPA (True = may attend).

    A row whose keys are all padding would give softmax over nothing (NaN); such rows attend to
    every (zero) key instead, and their output is masked out downstream.
    """
    empty = ~key_mask.any(dim=1, keepdim=True)
    return (key_mask | empty)[:, None, None, :]


def attention_mask(key_mask: Tensor | None) -> Tensor | None:
    """The SDPA mask for ``key_mask``, or None when every key is real (lets SDPA skip masking)."""
    if key_mask is None or bool(key_mask.all()):
        return None
    return key_padding_bias(key_mask)


class Packed(NamedTuple):
    """Where the real frames of a padded (B, L, D) batch live, for running position-wise layers on
    the (N, D) real frames only (used by :class:`CrossModalEncoder` and DecAlign's encoders).

    ``index``: (N,) flat positions ``b * L + t`` of the real frames (row-major); ``rows``: (N,)
    their batch rows.
    """

    index: Tensor  # type: ignore[assignment]  # a field named like tuple.index, on purpose; never called
    rows: Tensor
    batch: int
    length: int

    @classmethod
    def from_mask(cls, mask: Tensor) -> Packed:
        index = mask.reshape(-1).nonzero().squeeze(1)
        return cls(index, torch.div(index, mask.shape[1], rounding_mode="floor"), mask.shape[0], mask.shape[1])

    def pack(self, x: Tensor) -> Tensor:
        """(B, L, D) -> (N, D) real frames."""
        return x.reshape(-1, x.shape[-1]).index_select(0, self.index)

    def unpack(self, x: Tensor) -> Tensor:
        """(N, D) -> (B, L, D), zeros at padding."""
        flat = x.new_zeros(self.batch * self.length, x.shape[-1])
        flat.index_copy_(0, self.index, x)  # in place on a fresh buffer: no copy of the zeros
        return flat.view(self.batch, self.length, x.shape[-1])


class Attention(nn.Module):
    def __init__(self, width: int, heads: int, dropout: float = 0.0):
        super().__init__()
        if width % heads:
            raise ValueError(f"width {width} is not divisible by heads {heads}")
        self.heads = heads
        self.to_q = nn.Linear(width, width)
        self.to_kv = nn.Linear(width, 2 * width)  # rows [:width] make the keys, [width:] the values
        self.out = nn.Linear(width, width)
        self.dropout = dropout

    def forward(
        self,
        query: Tensor,
        context: Tensor,
        context_mask: Tensor | None,
        mask_ready: bool = False,
        layout: Packed | None = None,
        context_layout: Packed | None = None,
    ) -> Tensor:
        """Attend from ``query`` to ``context``; returns the query's shape.

        ``query``: (B, Lq, D), or its (N, D) real frames with ``layout``; ``context``: (B, Lk, D),
        or its real frames with ``context_layout``. ``context_mask``: (B, Lk) bool, or with
        ``mask_ready`` the output of :func:`attention_mask` (None = every key real).
        """
        width = self.to_q.in_features
        if context_layout is None and context.shape[1] == 1:
            # One key: its softmax weight is 1 for every query (also when it is padding, see
            # key_padding_bias), so the output is its value; attention dropout drops that weight.
            value = F.linear(context[:, 0], self.to_kv.weight[width:], self.to_kv.bias[width:])  # (B, D)
            if not (self.dropout > 0 and self.training):
                out = self.out(value)  # once per row, then broadcast to the row's queries
                return out[layout.rows] if layout is not None else out[:, None].expand(-1, query.shape[1], -1)
            value = value[layout.rows] if layout is not None else value[:, None].expand(-1, query.shape[1], -1)
            heads = value.unflatten(-1, (self.heads, -1))
            weights = F.dropout(value.new_ones((*heads.shape[:-1], 1)), self.dropout)
            return self.out((weights * heads).flatten(-2))
        mask = context_mask if mask_ready else attention_mask(context_mask)
        q = self.to_q(query)
        if layout is not None:
            q = layout.unpack(q)
        if context_layout is not None:
            k, v = context_layout.unpack(self.to_kv(context)).split(width, dim=-1)
        else:  # two products: their gradients need no concatenation in the backward
            k = F.linear(context, self.to_kv.weight[:width], self.to_kv.bias[:width])
            v = F.linear(context, self.to_kv.weight[width:], self.to_kv.bias[width:])
        q, k, v = (t.unflatten(-1, (self.heads, -1)).transpose(1, 2) for t in (q, k, v))  # (B, H, L, D/H)
        attended = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0
        )
        attended = attended.transpose(1, 2).flatten(-2)
        if layout is not None:
            attended = layout.pack(attended)
        return self.out(attended)

    def forward_rows(
        self,
        query: Tensor,
        context: Tensor,
        counts: Sequence[int],
        context_counts: Sequence[int],
        empty_context: Tensor | None = None,
    ) -> Tensor:
        """Attend row by row over packed frames: no padding, no mask (exact; :meth:`CrossModalEncoder.forward_rows`).

        ``query``: (N, D) frames, row r's ``counts[r]`` frames consecutive in row order; ``context``:
        (M, D) key frames likewise (``context_counts``). A row with queries but no keys attends to
        ``empty_context`` (1, D) instead (what an all-padding row attends to in :meth:`forward`).
        """
        width = self.to_q.in_features
        heads = self.heads
        dropout_p = self.dropout if self.training else 0.0
        q = self.to_q(query)
        kv_weight, kv_bias = self.to_kv.weight, self.to_kv.bias
        # two products: their gradients need no concatenation in the backward
        k = F.linear(context, kv_weight[:width], kv_bias[:width])
        v = F.linear(context, kv_weight[width:], kv_bias[width:])
        empty_k = empty_v = None
        if empty_context is not None:
            empty_k = F.linear(empty_context, kv_weight[:width], kv_bias[:width])
            empty_v = F.linear(empty_context, kv_weight[width:], kv_bias[width:])
        parts = []
        for q_row, k_row, v_row in zip(
            q.split(list(counts)), k.split(list(context_counts)), v.split(list(context_counts)), strict=True
        ):
            if not q_row.shape[0]:
                continue
            if not k_row.shape[0]:
                k_row, v_row = cast(Tensor, empty_k), cast(Tensor, empty_v)
            # (L, D) -> (1, H, L, D/H): heads as SDPA's batch of independent softmaxes
            q4, k4, v4 = (t.view(1, t.shape[0], heads, -1).transpose(1, 2) for t in (q_row, k_row, v_row))
            attended = F.scaled_dot_product_attention(q4, k4, v4, dropout_p=dropout_p)
            parts.append(attended.transpose(1, 2).reshape(q_row.shape[0], width))
        return self.out(torch.cat(parts) if parts else q.new_zeros(0, width))


class CrossModalBlock(nn.Module):
    """query <- LN(query) attends to LN(context); then a pre-LN feed-forward; both residual."""

    def __init__(self, width: int, heads: int, dropout: float = 0.1, attn_dropout: float = 0.0):
        super().__init__()
        self.norm_query = nn.LayerNorm(width)
        self.norm_context = nn.LayerNorm(width)
        self.attention = Attention(width, heads, attn_dropout)
        self.norm_ff = nn.LayerNorm(width)
        self.feed_forward = nn.Sequential(
            nn.Linear(width, 4 * width), nn.GELU(), Dropout(dropout), nn.Linear(4 * width, width)
        )
        self.dropout = Dropout(dropout)

    def forward(
        self,
        query: Tensor,
        context: Tensor | None,
        context_mask: Tensor | None,
        mask_ready: bool = False,
        layout: Packed | None = None,
        context_layout: Packed | None = None,
    ) -> Tensor:
        """``context=None`` is self-attention (the keys are ``query``, laid out by ``layout``);
        the other arguments are as in :meth:`Attention.forward`."""
        if context is None:
            context, context_layout = query, layout
        one_key = context_layout is None and context.shape[1] == 1
        # with a single key the query does not enter the attention (see Attention.forward)
        normed = query if one_key else self.norm_query(query)
        attended = self.attention(normed, self.norm_context(context), context_mask, mask_ready, layout, context_layout)
        query = query + self.dropout(attended)
        return query + self.dropout(self.feed_forward(self.norm_ff(query)))

    def forward_rows(
        self,
        query: Tensor,
        context: Tensor | None,
        counts: Sequence[int],
        context_counts: Sequence[int],
        empty_rows: bool,
    ) -> Tensor:
        """:meth:`forward` on packed frames attended row by row (:meth:`Attention.forward_rows`);
        ``context=None`` is self-attention. ``empty_rows``: some row has queries but no keys."""
        normed = self.norm_query(query)
        normed_context = self.norm_context(query if context is None else context)
        empty = self.norm_context(query.new_zeros(1, query.shape[-1])) if empty_rows else None
        attended = self.attention.forward_rows(normed, normed_context, counts, context_counts, empty)
        query = query + self.dropout(attended)
        return query + self.dropout(self.feed_forward(self.norm_ff(query)))


class PostNormBlock(nn.Module):
    """The post-LN transformer layer of DashFusion's eq. 1 (and eq. 7 / 9 for cross-attention):
    ``z = LN(x + Attn(x, context))``, ``out = LN(z + FFN(z))`` with a ReLU feed-forward.

    ``context=None`` is self-attention over ``x`` (keys masked by ``mask``); otherwise ``x``
    attends to ``context`` (keys masked by ``context_mask``). Padded query rows are computed
    but meaningless; callers mask them.
    """

    def __init__(self, width: int, heads: int, ff_width: int, dropout: float = 0.1):
        super().__init__()
        self.attention = Attention(width, heads)
        self.norm_attention = nn.LayerNorm(width)
        self.feed_forward = nn.Sequential(
            nn.Linear(width, ff_width), nn.ReLU(), Dropout(dropout), nn.Linear(ff_width, width)
        )
        self.norm_ff = nn.LayerNorm(width)
        self.dropout = Dropout(dropout)

    def forward(
        self, x: Tensor, mask: Tensor | None = None, context: Tensor | None = None, context_mask: Tensor | None = None
    ) -> Tensor:
        if context is None:
            context, context_mask = x, mask
        z = self.norm_attention(x + self.dropout(self.attention(x, context, context_mask)))
        return self.norm_ff(z + self.dropout(self.feed_forward(z)))


class CrossModalEncoder(nn.Module):
    """A stack of CrossModalBlocks from a target sequence to a source sequence (MulT's CM(source -> target)).

    Sinusoidal positions are added to both sequences once (each modality's own time axis). With
    ``context is None`` it is a self-attention encoder over the query. The key mask is turned into
    the SDPA mask once for all blocks. When at most ``pack_below`` of the query positions are
    real, the position-wise layers (LayerNorms, projections, feed-forward, dropout) run on the
    real query frames only (see :class:`Packed`), padded back just around the attention; the
    result is the same. Returns the final LayerNorm of the query, (B, Lq, D), zero at padding.
    """

    def __init__(
        self,
        width: int,
        heads: int,
        layers: int,
        dropout: float = 0.1,
        attn_dropout: float = 0.0,
        positions: bool = True,
        pack_below: float = 0.9,
    ):
        super().__init__()
        self.blocks = nn.ModuleList(CrossModalBlock(width, heads, dropout, attn_dropout) for _ in range(layers))
        self.norm = nn.LayerNorm(width)
        self.positions = positions
        self.pack_below = pack_below

    @property
    def typed_blocks(self) -> Sequence[CrossModalBlock]:
        """``blocks`` as what it holds: ModuleList's stubs type its items as plain Modules."""
        return cast("Sequence[CrossModalBlock]", self.blocks)

    def _layout(self, mask: Tensor) -> Packed | None:
        if mask.shape[1] > 1 and int(mask.sum()) <= self.pack_below * mask.numel():
            return Packed.from_mask(mask)
        return None

    def forward(
        self, query: Tensor, query_mask: Tensor, context: Tensor | None = None, context_mask: Tensor | None = None
    ) -> Tensor:
        if self.positions:
            query = query + cached_positions(query.shape[1], query.shape[2], query.device, query.dtype)
        if context is not None and self.positions:
            context = context + cached_positions(context.shape[1], context.shape[2], context.device, context.dtype)
        mask = attention_mask(query_mask if context is None else context_mask)
        layout = self._layout(query_mask)
        hidden = layout.pack(query) if layout is not None else query
        # A separate context stays padded: its per-key work (LayerNorm, K/V projection) is small
        # next to the cost of padding the projected keys back for every block.
        for block in self.blocks:
            hidden = block(hidden, context, mask, mask_ready=True, layout=layout)
        if layout is not None:
            return layout.unpack(self.norm(hidden))
        return self.norm(hidden) * query_mask.unsqueeze(-1).to(hidden.dtype)

    def forward_rows(
        self,
        frames: Tensor,
        counts: Sequence[int],
        context: Tensor | None = None,
        context_counts: Sequence[int] | None = None,
    ) -> Tensor:
        """The encoder on packed frames, attending row by row; same result as :meth:`forward`.

        ``frames``: (N, D) real query frames (positions already added), row r's ``counts[r]``
        frames consecutive, rows in order; ``context``: (M, D) real context frames laid out the
        same way by ``context_counts`` (key order within a row does not matter), or None for
        self-attention. Each row's attention sees exactly its real keys, so no work is spent on
        padding (a batch padded to its longest row, or to each length group's, computes every
        query against every padded key) and no mask is applied; the price is one attention call
        per row and block, which pays for long ragged sequences (:func:`row_by_row_pays`).
        Returns the final LayerNorm, (N, D).
        """
        if self.positions:
            raise ValueError("forward_rows takes frames with positions already added (positions=False)")
        key_counts = counts if context is None else context_counts
        if key_counts is None:
            raise ValueError("forward_rows: a context needs context_counts")
        empty_rows = any(q and not k for q, k in zip(counts, key_counts, strict=True))
        hidden = frames
        for block in self.typed_blocks:
            hidden = block.forward_rows(hidden, context, counts, key_counts, empty_rows)
        return self.norm(hidden)

    def folded_kv(self) -> tuple[Tensor, Tensor]:
        """Every block's key/value projection of its LayerNormed context as a map of the context
        normalised WITHOUT affine: ``to_kv(LN(x)) = (W * g) xhat + (W beta + c)``.

        Returns (layers, 2 * width, width) weights and (layers, 2 * width) biases (keys first).
        """
        blocks = self.typed_blocks
        weight = torch.stack([b.attention.to_kv.weight for b in blocks])
        gain = torch.stack([b.norm_context.weight for b in blocks])
        shift = torch.stack([b.norm_context.bias for b in blocks])
        bias = torch.stack([b.attention.to_kv.bias for b in blocks])
        return weight * gain[:, None, :], torch.bmm(weight, shift.unsqueeze(-1)).squeeze(-1) + bias

    def forward_frames(self, frames: Tensor, rows: Tensor | None, context: Tensor, key_mask: Tensor) -> Tensor:
        """The encoder on packed query frames, for contexts of a few keys; same result as :meth:`forward`.

        ``frames``: (N, D) real query frames (positions already added) of batch rows ``rows``
        (None: frame n is row n). ``context``: (B, Lk, D) each row's context frames normalised
        by LayerNorm without affine, zero at padding (= LN of a zero frame before the affine, what
        an all-padding row attends to in :meth:`forward`); ``key_mask``: (B, Lk) bool.

        The keys and values are never formed. With ``W_k``, ``W_v`` the blocks' projections with
        the context LayerNorm's gain folded in, ``q . k_j = (W_k^T q) . xhat_j + q . b_k``, and the
        second term is the same for every key, so the softmax ignores it; the output is ``W_v``
        applied to the weighted mean of the ``xhat_j``, plus ``b_v`` times the sum of the weights
        (1 unless attention dropout dropped some). So one (N, Lk, D) context serves every block,
        and the per-block work on the keys is two small batched products instead of a projection
        of every key. Returns the final LayerNorm, (N, D).
        """
        if self.positions:
            raise ValueError("forward_frames takes frames with positions already added (positions=False)")
        width, count = frames.shape[-1], context.shape[1]
        heads = self.typed_blocks[0].attention.heads
        scale = (width // heads) ** -0.5
        weight, bias = self.folded_kv()
        # more query frames than keys: project the keys; fewer: fold the projections into the queries
        query_heavy = frames.shape[0] > context.shape[0] * count
        if count > 1:
            if rows is not None:
                key_mask = key_mask.index_select(0, rows)
                context = context if query_heavy else context.index_select(0, rows)
            keep = key_mask | ~key_mask.any(dim=1, keepdim=True)  # see key_padding_bias
            score_bias = torch.zeros(keep.shape, dtype=frames.dtype, device=frames.device)
            score_bias = score_bias.masked_fill_(~keep, float("-inf"))  # (N, Lk)
            keys_t = context.transpose(1, 2)  # (N, D, Lk)
        hidden = frames
        # one unbind instead of indexing per block: each index's backward would fill a zero tensor of all blocks
        for block, block_weight, block_bias in zip(self.typed_blocks, weight.unbind(0), bias.unbind(0), strict=True):
            attention = block.attention
            value_weight, value_bias = block_weight[width:], block_bias[width:]
            training_dropout = attention.dropout > 0 and attention.training
            if count == 1:  # one key: the output is its value (as in Attention.forward)
                value = F.linear(context[:, 0], value_weight, value_bias)
                if training_dropout:
                    value = value if rows is None else value.index_select(0, rows)
                    weights = dropout(value.new_ones(value.shape[0], heads, 1), attention.dropout)
                    attended = _linear(attention.out, (weights * value.unflatten(-1, (heads, -1))).flatten(-2))
                else:
                    attended = _linear(attention.out, value)
                    attended = attended if rows is None else attended.index_select(0, rows)
            elif query_heavy:
                q = _query(block, hidden).unflatten(-1, (heads, -1)) * scale  # (N, H, dh)
                kv = F.linear(context, block_weight, block_bias)
                kv = kv if rows is None else kv.index_select(0, rows)
                keys, values = kv.unflatten(-1, (2, heads, -1)).unbind(2)  # (N, Lk, H, dh)
                weights = ((q.unsqueeze(1) * keys).sum(-1) + score_bias.unsqueeze(-1)).softmax(dim=1)
                if training_dropout:
                    weights = dropout(weights, attention.dropout)
                attended = _linear(attention.out, (weights.unsqueeze(-1) * values).sum(1).flatten(-2))
            else:
                q = _query(block, hidden).unflatten(-1, (heads, -1)) * scale  # (N, H, dh)
                key_weight = block_weight[:width].unflatten(0, (heads, -1))  # (H, dh, D)
                query = torch.bmm(q.transpose(0, 1), key_weight).transpose(0, 1)  # (N, H, D); per head, as einsum
                weights = torch.baddbmm(score_bias.unsqueeze(1), query, keys_t).softmax(dim=-1)  # (N, H, Lk)
                if training_dropout:
                    weights = dropout(weights, attention.dropout)
                mixed = torch.bmm(weights, context)  # (N, H, D)
                out = torch.bmm(mixed.transpose(0, 1), value_weight.unflatten(0, (heads, -1)).mT).transpose(0, 1)
                total = weights.sum(-1, keepdim=True) if training_dropout else 1.0
                attended = _linear(attention.out, (out + total * value_bias.unflatten(0, (heads, -1))).flatten(-2))
            hidden = hidden + _dropout(attended, block.dropout)
            hidden = hidden + _dropout(_feed_forward(block, hidden), block.dropout)
        return self.norm(hidden)


def _feed_forward(block: CrossModalBlock, hidden: Tensor) -> Tensor:
    """``block.feed_forward(block.norm_ff(hidden))`` as functional calls (no module dispatch per layer)."""
    norm = block.norm_ff
    # the layers CrossModalBlock builds (Sequential's stubs type its items as plain Modules)
    first, activation, drop, second = cast("tuple[nn.Linear, nn.Module, Dropout, nn.Linear]", tuple(block.feed_forward))
    x = F.layer_norm(hidden, norm.normalized_shape, norm.weight, norm.bias, norm.eps)
    x = activation(F.linear(x, first.weight, first.bias))
    return F.linear(_dropout(x, drop), second.weight, second.bias)


def _query(block: CrossModalBlock, hidden: Tensor) -> Tensor:
    """``block.attention.to_q(block.norm_query(hidden))`` as functional calls."""
    norm = block.norm_query
    normed = F.layer_norm(hidden, norm.normalized_shape, norm.weight, norm.bias, norm.eps)
    return _linear(block.attention.to_q, normed)


def _linear(layer: nn.Linear, x: Tensor) -> Tensor:
    """``layer(x)`` without the module call."""
    return F.linear(x, layer.weight, layer.bias)


def _dropout(x: Tensor, module: Dropout) -> Tensor:
    """``module(x)`` without the module call (the same function, the same random draws)."""
    return dropout(x, module.p) if module.p > 0 and module.training else x


class MultimodalTransformer(nn.Module):
    """MulT's fusion stage (Tsai et al. 2019, sec. 3): for every target modality, one crossmodal
    encoder per source modality (CM source -> target, the source's keys and values), outputs
    concatenated over sources, then a self-attention encoder over them ("memory").

    ``forward(sequences, masks)`` takes per-modality (B, L_m, width) sequences and boolean masks
    and returns, per target, the memory output mean-pooled over the target's real positions,
    (B, (M - 1) * width). Sequences are trimmed to the last real frame and long uneven batches run
    in row groups of similar length (:func:`length_groups`); both are exact.
    """

    def __init__(
        self,
        modalities: tuple[str, ...],
        width: int,
        heads: int,
        layers: int,
        self_layers: int,
        dropout: float = 0.1,
        attn_dropout: float = 0.0,
    ):
        super().__init__()
        self.modalities, self.width, self.heads = tuple(modalities), width, heads
        self.crossmodal = nn.ModuleDict(
            {
                f"{source}_to_{target}": CrossModalEncoder(width, heads, layers, dropout, attn_dropout)
                for target in self.modalities
                for source in self.modalities
                if source != target
            }
        )
        self.output_width = width * (len(self.modalities) - 1)
        memory_heads = max(h for h in range(1, heads + 1) if self.output_width % h == 0)
        self.memory = (
            nn.ModuleDict(
                {
                    m: CrossModalEncoder(self.output_width, memory_heads, self_layers, dropout, attn_dropout)
                    for m in self.modalities
                }
            )
            if self_layers
            else None
        )

    def forward(self, sequences: dict[str, Tensor], masks: dict[str, Tensor]) -> dict[str, Tensor]:
        spans = {m: query_span(masks[m]) for m in self.modalities}
        pooled = {}
        for target in self.modalities:
            sources = [m for m in self.modalities if m != target]
            # a Tensor: every target has at least one source (two or more modalities)
            key_spans = cast(Tensor, sum(spans[m] for m in sources))
            groups = length_groups(spans[target], key_spans, self.width, self.heads)
            parts = []
            for rows in groups:
                whole = len(groups) == 1

                def take(m: str, rows: Tensor = rows, whole: bool = whole) -> tuple[Tensor, Tensor]:
                    # trimmed to the group's last real frame: positions keep their indices
                    length = max(int(spans[m][rows].max()), 1)
                    if whole:
                        return sequences[m][:, :length], masks[m][:, :length]
                    return sequences[m][rows, :length], masks[m][rows, :length]

                query, query_mask = take(target)
                crossed = torch.cat(
                    [self.crossmodal[f"{source}_to_{target}"](query, query_mask, *take(source)) for source in sources],
                    dim=-1,
                )
                if self.memory is not None:
                    crossed = self.memory[target](crossed, query_mask)
                parts.append(masked_mean(crossed, query_mask))
            pooled[target] = parts[0] if len(groups) == 1 else torch.cat(parts)[torch.argsort(torch.cat(groups))]
        return pooled


# --- dropping padding before a stack of blocks ---------------------------------------------------


def query_span(mask: Tensor) -> Tensor:
    """(B,) index of each row's last real position + 1 (0 for an all-padding row)."""
    steps = torch.arange(1, mask.shape[1] + 1, device=mask.device)
    return (mask * steps).amax(dim=1)


def pack_keys(x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """Reorder each row's real positions first and trim to the longest row: (B, L', D), (B, L').

    For keys only (attention ignores key order; positions must already be added). Keeps at least
    one column. Prefix masks (what the collate function makes) are only trimmed, never gathered.
    """
    counts = mask.sum(dim=1)
    longest = max(int(counts.max()) if counts.numel() else 1, 1)
    prefix = torch.arange(mask.shape[1], device=mask.device)[None, :] < counts[:, None]
    if bool(torch.equal(prefix, mask)):
        return x[:, :longest], mask[:, :longest]
    order = torch.argsort((~mask).to(torch.int8), dim=1, stable=True)[:, :longest]
    packed = x.gather(1, order.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
    return packed, prefix[:, :longest]


def length_groups(
    query_lengths: Tensor, key_lengths: Tensor, width: int, heads: int, max_groups: int = 8, overhead: float = 2.0e7
) -> list[Tensor]:
    """Split a batch into row groups of similar length when that saves enough work.

    Rows are sorted by query length (longest first) and cut into G equal contiguous chunks,
    G in 1..max_groups; each chunk would run trimmed to its own longest query and key row. The
    cost of one block is estimated in multiply-adds of the parts that padding inflates: attention,
    2 d + 10 h per query-key pair, and the K/V projection, 2 d^2 per key (the position-wise
    query layers run on real frames only, see :class:`CrossModalEncoder`, whatever the grouping),
    plus ``overhead`` per extra group (the fixed cost of running the blocks once more). Returns
    the row indices of each group (one group with every row when splitting does not pay).
    """
    rows = query_lengths.shape[0]
    everything = [torch.arange(rows, device=query_lengths.device)]
    if rows < 2 or max_groups < 2:
        return everything
    order = torch.argsort(query_lengths, descending=True, stable=True)
    q = query_lengths[order].tolist()
    k = key_lengths[order].tolist()
    pair, per_key = 2 * width + 10 * heads, 2 * width * width

    def cost(groups: int) -> float:
        total, bounds = 0.0, [round(i * rows / groups) for i in range(groups + 1)]
        for lo, hi in itertools.pairwise(bounds):
            lq, lk = max(q[lo:hi]), max(k[lo:hi])
            total += (hi - lo) * (lq * lk * pair + lk * per_key)
        return total + (groups - 1) * overhead

    best = min(range(1, min(max_groups, rows) + 1), key=cost)
    if best == 1:
        return everything
    return list(torch.tensor_split(order, best))


def row_by_row_pays(
    query_counts: Sequence[int],
    key_counts: Sequence[int],
    groups: Sequence[Tensor],
    query_spans: Tensor,
    key_spans: Tensor,
    width: int,
    heads: int,
    overhead: float = 2.0e7,
    row_overhead: float = 4.0e5,
) -> bool:
    """Whether :meth:`CrossModalEncoder.forward_rows` (one attention call per row, real frames only)
    is estimated cheaper than the padded attention over ``groups`` (from :func:`length_groups`).

    Same cost units as :func:`length_groups` (multiply-adds per block); a row costs its exact
    query-key pairs and keys plus ``row_overhead``, the fixed cost of one more attention call
    forward and backward (~0.1 ms on this project's CPU). Long ragged batches (MOSEI's 500-frame
    audio and vision) favour rows: the padded groups compute ~1.7x their real pairs.
    """
    pair, per_key = 2 * width + 10 * heads, 2 * width * width
    rows = sum(1 for q in query_counts if q)
    by_row = float(sum(q * k * pair + k * per_key for q, k in zip(query_counts, key_counts, strict=True) if q))
    by_row += rows * row_overhead
    padded = float(
        sum(
            len(g)
            * (
                max(int(query_spans[g].max()), 1) * max(int(key_spans[g].max()), 1) * pair
                + max(int(key_spans[g].max()), 1) * per_key
            )
            for g in groups
        )
    )
    padded += (len(groups) - 1) * overhead
    return by_row < padded


__all__ = [
    "Attention",
    "CrossModalBlock",
    "CrossModalEncoder",
    "MultimodalTransformer",
    "Packed",
    "attention_mask",
    "cached_positions",
    "key_padding_bias",
    "length_groups",
    "pack_keys",
    "query_span",
    "row_by_row_pays",
]

"""What the sequential competitors (SASRec, BERT4Rec, PAUP, ComiRec, PeterRec) share.

* :class:`SequenceModel`: a :class:`~peace.baselines.base.TransferModel` that reads a user's
  source-domain entity tokens as one sequence, domain blocks in domain order, ending at the last
  position (:func:`~peace.baselines.base.left_align`), optionally cut to a recent window first.
  It owns the token embedding, whose rows (entities and the zero padding row) are the encoder
  table, and pre-trains by the entity-oriented loss of A.3 unless a model adds its own terms.
* :class:`PreNormBlock`: the Transformer block of the self-attentive ones (SASRec, BERT4Rec,
  PAUP): ``x + Dropout(W_o Attention(LN(x)))``, then ``x + Dropout(FFN(LN(x)))``. The models
  differ only in the attention (causal or bidirectional self-attention, attention over segments).
* :func:`add_recent_positions`: learned positions that count back from the last slot.

Sequence length: the self-attentive encoders read the last ``per_domain`` (20) entity tokens of
each source domain (:class:`~peace.baselines.base.RecentWindow`), where PEACE reads H per domain;
self-attention over PEACE's full |S| * H tokens costs a multiple of L^2 per record, more than the
public benchmark's CPU budget allows for these models.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from peace.baselines.base import (
    RecentWindow,
    SourceContext,
    TokenEmbedding,
    TransferModel,
    left_align,
)


class SequenceModel(TransferModel):
    """A model over the user's entity tokens as one right-aligned sequence.

    Args:
        ctx: the id spaces (the token embedding has ``|E| + 1 + extra_tokens`` rows).
        dim: d.
        per_domain: read the last this many tokens of each source domain (None: all of them).
        extra_tokens: special tokens after the padding row (BERT4Rec's [MASK]).
    """

    def __init__(
        self, ctx: SourceContext, dim: int, per_domain: int | None = None, extra_tokens: int = 0
    ) -> None:
        super().__init__()
        self.window = None if per_domain is None else RecentWindow(ctx, per_domain)
        self.pad = ctx.pad
        self.embedding = TokenEmbedding(ctx.num_entities, dim, extra=extra_tokens)

    def encoder_table(self, graph: object | None = None) -> Tensor:
        return self.embedding.table()

    def sequence(self, tokens: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """The history ``[B, |S| * H]`` as one right-aligned sequence ``[B, L]`` (in the window)."""
        if self.window is not None:
            tokens, mask = self.window(tokens, mask)
        return left_align(tokens, mask, self.pad)


class PreNormBlock(nn.Module):
    """The pre-norm residual Transformer block (multi-head attention, feed-forward, dropout).

    A subclass sets ``heads`` and creates its attention's norm and projections, then ``out``
    (``W_o``), ``norm_ff``, ``ff`` (:meth:`feed_forward`) and ``dropout``, in the order that fixes
    their initial values and state-dict names, and ends its ``forward`` with :meth:`residual`.
    """

    heads: int
    out: nn.Linear
    norm_ff: nn.LayerNorm
    ff: nn.Sequential
    dropout: nn.Dropout

    @staticmethod
    def feed_forward(
        dim: int, hidden: int, activation: nn.Module, dropout: float | None = None
    ) -> nn.Sequential:
        """The position-wise network ``W_2 act(W_1 x)`` (dropout after the activation if set)."""
        inner = [activation] if dropout is None else [activation, nn.Dropout(dropout)]
        return nn.Sequential(nn.Linear(dim, hidden), *inner, nn.Linear(hidden, dim))

    def split_heads(self, x: Tensor, parts: int = 1) -> Tensor:
        """``[B, N, parts * d]`` -> ``[parts, B, heads, N, d / heads]`` (e.g. fused q, k, v)."""
        b, n, _ = x.shape
        return x.view(b, n, parts, self.heads, -1).permute(2, 0, 3, 1, 4)

    @staticmethod
    def merge_heads(x: Tensor) -> Tensor:
        """``[B, heads, N, d / heads]`` -> ``[B, N, d]``."""
        b, heads, n, dh = x.shape
        return x.transpose(1, 2).reshape(b, n, heads * dh)

    def residual(self, x: Tensor, attended: Tensor) -> Tensor:
        """Inputs ``[B, Q, d]`` and their merged attention outputs ``[B, Q, d]`` -> outputs."""
        x = x + self.dropout(self.out(attended))
        return x + self.dropout(self.ff(self.norm_ff(x)))


def add_recent_positions(x: Tensor, position: nn.Embedding) -> Tensor:
    """``x * sqrt(d)`` plus learned positions counted back from the last slot ``[B, L, d]``, so
    the most recent token always has the same position embedding."""
    end = position.num_embeddings
    positions = torch.arange(end - x.shape[1], end)
    return x * math.sqrt(x.shape[-1]) + position(positions)

"""SASRec (Kang and McAuley, ICDM 2018): self-attentive sequential recommendation.

Followed: causal self-attention blocks over the item (here: entity) sequence with learned
positional embeddings; the output at the last position is the user vector, scored against the
next item by inner product with binary cross-entropy over positives and sampled negatives.
A.3: 2 blocks, learned positions, d = 64.

Choices: the entity-oriented strategy of A.3 replaces the next item by its entities (the pairs of
the pre-training batch); one head per block; the feed-forward width equals d as in the paper;
dropout 0.2; the sequence is the user's entity tokens of all source domains, domain blocks in
domain order (:func:`peace.baselines.base.left_align`).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from peace.baselines.base import (
    SourceContext,
    TokenEmbedding,
    TransferModel,
    entity_loss,
    left_align,
)
from peace.config import PeaceConfig


class CausalTransformer(nn.Module):
    """Transformer blocks with learned positions over right-aligned sequences ``[B, L]``.

    Shapes:
        tokens ``[B, L]``, mask ``[B, L]`` -> outputs ``[B, L, d]`` (rows of empty histories: 0).
    """

    def __init__(
        self,
        max_length: int,
        dim: int,
        blocks: int,
        heads: int,
        dropout: float,
        causal: bool = True,
        ff_dim: int | None = None,
    ) -> None:
        super().__init__()
        self.dim, self.causal = dim, causal
        self.position = nn.Embedding(max_length, dim)
        layer = nn.TransformerEncoderLayer(
            dim, heads, ff_dim or dim, dropout, batch_first=True, norm_first=True
        )
        self.blocks = nn.TransformerEncoder(layer, blocks, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        length = x.shape[1]
        positions = torch.arange(
            self.position.num_embeddings - length, self.position.num_embeddings
        )
        x = self.dropout(x * math.sqrt(self.dim) + self.position(positions))
        empty = ~mask.any(1)
        # An empty history attends to its last (padding) slot only, and is zeroed afterwards.
        keys = mask.clone()
        keys[empty, -1] = True
        attn_mask = None
        if self.causal:
            attn_mask = torch.triu(torch.ones(length, length, dtype=torch.bool), diagonal=1)
        out = self.blocks(x, mask=attn_mask, src_key_padding_mask=~keys)
        return self.norm(out) * mask.unsqueeze(-1)


class SASRec(TransferModel):
    """SASRec on entity sequences; the user vector is the last position's output ``[B, d]``."""

    display_name = "SASRec"
    reference = "Kang and McAuley, Self-Attentive Sequential Recommendation, ICDM 2018"

    def __init__(
        self,
        ctx: SourceContext,
        cfg: PeaceConfig,
        blocks: int = 2,
        heads: int = 1,
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        self.pad = ctx.pad
        self.embedding = TokenEmbedding(ctx.num_entities, cfg.model.dim)
        self.encoder = CausalTransformer(ctx.sequence_length, cfg.model.dim, blocks, heads, dropout)

    def encoder_table(self, graph: object | None = None) -> Tensor:
        return self.embedding.table()

    def encode_users(self, table: Tensor, users: Tensor, tokens: Tensor, mask: Tensor) -> Tensor:
        tokens, mask = left_align(tokens, mask, self.pad)
        out = self.encoder(nn.functional.embedding(tokens, table), mask)
        return out[:, -1]

    def pretrain_losses(self, table: Tensor, batch, tau: float, gamma: float) -> dict[str, Tensor]:
        users = self.encode_users(table, batch.users, batch.tokens, batch.mask)
        loss = entity_loss(users, table, batch)
        return {"et": loss, "total": loss}

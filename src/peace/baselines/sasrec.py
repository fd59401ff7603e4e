"""SASRec (Kang and McAuley, ICDM 2018): self-attentive sequential recommendation.

Followed: causal self-attention blocks over the item (here: entity) sequence with learned
positional embeddings; the output at the last position is the user vector, scored against the
next item by inner product with binary cross-entropy over positives and sampled negatives.
A.3: 2 blocks, learned positions, d = 64.

Choices: the entity-oriented strategy of A.3 replaces the next item by its entities (the pairs of
the pre-training batch); one head per block; the feed-forward width equals d as in the paper;
dropout 0.2; padding keys are not masked in causal attention but carry zero inputs, as in the
paper's timeline mask; the sequence is the user's entity tokens of all source domains, domain blocks in
domain order (:func:`peace.baselines.base.left_align`).

Sequence length: the encoder reads the last 20 entity tokens of each source domain
(:class:`peace.baselines.base.RecentWindow`, ``per_domain``), where PEACE reads H per domain;
self-attention over PEACE's full |S| * H tokens costs a multiple of L^2 per record, more than the
public benchmark's CPU budget allows for this model.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from peace.baselines.base import (
    RecentWindow,
    SourceContext,
    TokenEmbedding,
    TransferModel,
    entity_loss,
    left_align,
)
from peace.config import PeaceConfig


class AttentionBlock(nn.Module):
    """Pre-norm self-attention and feed-forward block (multi-head, dropout, residuals).

    Causal blocks use the fused causal attention kernel; keys at padding positions are then not
    masked but carry zero inputs (the "timeline mask" of SASRec). Bidirectional blocks mask
    padding keys explicitly.
    """

    def __init__(self, dim: int, heads: int, ff_dim: int, dropout: float) -> None:
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.ff = nn.Sequential(
            nn.Linear(dim, ff_dim), nn.ReLU(), nn.Dropout(dropout), nn.Linear(ff_dim, dim)
        )
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, key_mask: Tensor | None, causal: bool) -> Tensor:
        b, length, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, length, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        attn_mask = None if key_mask is None else key_mask[:, None, None, :]
        a = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=attn_mask,
            dropout_p=self.dropout if self.training else 0.0,
            is_causal=causal,
        )
        x = x + self.drop(self.out(a.transpose(1, 2).reshape(b, length, d)))
        return x + self.drop(self.ff(self.norm2(x)))


class CausalTransformer(nn.Module):
    """Attention blocks with learned positions over right-aligned sequences ``[B, L]``.

    ``causal=False`` gives a bidirectional encoder (BERT4Rec). Positions count back from the
    last slot, so the most recent token always has the same position embedding.

    Shapes:
        inputs ``[B, L, d]``, mask ``[B, L]`` -> outputs ``[B, L, d]`` (zero at padding).
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
        self.blocks = nn.ModuleList(
            AttentionBlock(dim, heads, ff_dim or dim, dropout) for _ in range(blocks)
        )
        self.norm = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        length = x.shape[1]
        positions = torch.arange(
            self.position.num_embeddings - length, self.position.num_embeddings
        )
        keep = mask.unsqueeze(-1).to(x.dtype)
        x = self.dropout(x * math.sqrt(self.dim) + self.position(positions)) * keep
        key_mask = None
        if not self.causal:
            key_mask = mask.clone()
            key_mask[~mask.any(1), -1] = True  # an empty history attends to one (zero) slot
        for block in self.blocks:
            x = block(x, key_mask, self.causal) * keep
        return self.norm(x) * keep


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
        per_domain: int = 20,
    ) -> None:
        super().__init__()
        self.window = RecentWindow(ctx, per_domain)
        self.pad = ctx.pad
        self.embedding = TokenEmbedding(ctx.num_entities, cfg.model.dim)
        self.encoder = CausalTransformer(self.window.length, cfg.model.dim, blocks, heads, dropout)

    def encoder_table(self, graph: object | None = None) -> Tensor:
        return self.embedding.table()

    def encode_users(self, table: Tensor, users: Tensor, tokens: Tensor, mask: Tensor) -> Tensor:
        tokens, mask = left_align(*self.window(tokens, mask), self.pad)
        out = self.encoder(F.embedding(tokens, table), mask)
        return out[:, -1]

    def pretrain_losses(self, table: Tensor, batch, tau: float, gamma: float) -> dict[str, Tensor]:
        users = self.encode_users(table, batch.users, batch.tokens, batch.mask)
        loss = entity_loss(users, table, batch)
        return {"et": loss, "total": loss}

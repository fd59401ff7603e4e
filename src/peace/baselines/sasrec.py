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

Sequence length: the last 20 entity tokens of each source domain (``per_domain``, see
:mod:`peace.baselines.sequence`).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from peace.baselines.base import SourceContext
from peace.baselines.options import SASRecOptions
from peace.baselines.sequence import PreNormBlock, SequenceModel, add_recent_positions
from peace.config import PeaceConfig


class AttentionBlock(PreNormBlock):
    """The pre-norm causal block with one fused q, k, v projection and a ReLU feed-forward
    (dropout after the ReLU).

    Attention runs in the fused causal kernel; keys at padding positions are not masked but carry
    zero inputs (the "timeline mask" of SASRec).
    """

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads, self.p = heads, dropout
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.ff = self.feed_forward(dim, dim, nn.ReLU(), dropout)
        self.dropout = nn.Dropout(dropout)

    @property
    def norm_ff(self) -> nn.LayerNorm:
        return self.norm2

    def forward(self, x: Tensor) -> Tensor:
        q, k, v = self.split_heads(self.qkv(self.norm1(x)), parts=3)
        p = self.p if self.training else 0.0
        a = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True)
        return self.residual(x, self.merge_heads(a))


class CausalTransformer(nn.Module):
    """Causal attention blocks with learned positions over right-aligned sequences ``[B, L]``.

    Positions count back from the last slot, so the most recent token always has the same
    position embedding.

    Shapes:
        inputs ``[B, L, d]``, mask ``[B, L]`` -> outputs ``[B, L, d]`` (zero at padding).
    """

    def __init__(self, max_length: int, dim: int, blocks: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.position = nn.Embedding(max_length, dim)
        self.blocks = nn.ModuleList(AttentionBlock(dim, heads, dropout) for _ in range(blocks))
        self.norm = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        keep = mask.unsqueeze(-1).to(x.dtype)
        x = self.dropout(add_recent_positions(x, self.position)) * keep
        for block in self.blocks:
            x = block(x) * keep
        return self.norm(x) * keep


class SASRec(SequenceModel):
    """SASRec on entity sequences; the user vector is the last position's output ``[B, d]``."""

    def __init__(
        self, ctx: SourceContext, cfg: PeaceConfig, options: SASRecOptions = SASRecOptions()
    ) -> None:
        super().__init__(ctx, cfg.model.dim, options.per_domain)
        self.encoder = CausalTransformer(
            self.window.length, cfg.model.dim, options.blocks, options.heads, options.dropout
        )

    def encode_users(self, table: Tensor, users: Tensor, tokens: Tensor, mask: Tensor) -> Tensor:
        tokens, mask = self.sequence(tokens, mask)
        return self.encoder(F.embedding(tokens, table), mask)[:, -1]

    # the name in result tables, and the paper the model follows
    display_name = "SASRec"
    reference = "Kang and McAuley, Self-Attentive Sequential Recommendation, ICDM 2018"

"""Hierarchical-attentive user representation across domains (Sec. 4.1.1, Eq. 1 and Eq. 2).

Eq. 1, interest extraction with M kernels over the concatenated entity sequence H_u:

    z_u^(i) = SoftMax( w_i^T tanh(W^A H_u^T) ) H_u            i = 1..M

Eq. 2, attentive fusion of the interest-specific encodings into the universal encoding:

    z_u = sum_A SoftMax_A( v^T tanh(W z_u^A) ) z_u^A

Padding tokens are masked out of the softmax of Eq. 1; a user with no history at all gets zero
interest vectors (and so a zero universal vector), never NaN.

With ``recency`` (``model.recency``) each kernel's score of Eq. 1 also adds a learned bias per
recency slot, w_i^T tanh(W^A h_l) + r_i[slot(l)], where slot(l) counts back from the newest
token of l's source-domain block (blocks of H tokens, right-aligned, so the newest token of every
domain is slot 0). A kernel can so prefer recent behaviour; the pooled values stay the entity
vectors, so z^A lives in the entity space as before.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def masked_softmax(scores: Tensor, mask: Tensor, dim: int = -1) -> Tensor:
    """Softmax over ``dim`` ignoring positions where ``mask`` is False; all-masked rows give 0."""
    scores = scores.masked_fill(~mask, float("-inf"))
    weights = torch.softmax(scores, dim=dim)
    return torch.nan_to_num(weights, nan=0.0)


class InterestExtractor(nn.Module):
    """Eq. 1: M attentive-pooling interest kernels over an entity sequence.

    Args:
        dim: d, width of the entity vectors.
        n_interests: M.
        attention_dim: rows of W^A.
        recency: H, tokens per source-domain block, to add a learned bias per kernel and recency
            slot to the scores of Eq. 1 (0: none, the paper's form).
        attentive: False scores every token 0, so each interest is the plain mean of the user's
            history vectors (a reference without Eq. 1's attention).

    Shapes:
        sequence ``[B, L, d]``, mask ``[B, L]`` (True = token) -> interests ``[B, M, d]``.
        With ``recency``, L is a multiple of H (one right-aligned block per source domain).
    """

    def __init__(
        self,
        dim: int,
        n_interests: int,
        attention_dim: int,
        recency: int = 0,
        attentive: bool = True,
    ) -> None:
        super().__init__()
        self.dim, self.n_interests, self.attention_dim = dim, n_interests, attention_dim
        self.attentive = attentive
        self.W_A = nn.Linear(dim, attention_dim, bias=False)
        self.kernels = nn.Linear(attention_dim, n_interests, bias=False)  # rows are w_1..w_M
        # r_i[slot]: column j is the j-th slot of a block, the newest token at column H - 1.
        self.recency = nn.Parameter(torch.zeros(n_interests, recency)) if recency > 0 else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.xavier_uniform_(self.W_A.weight)
        nn.init.xavier_uniform_(self.kernels.weight)
        if self.recency is not None:
            nn.init.zeros_(self.recency)

    def _add_recency(self, scores: Tensor) -> Tensor:
        """``scores [B, M, L]`` plus each kernel's bias at each token's recency slot."""
        if self.recency is None:
            return scores
        return scores + self._recency_bias(scores.shape[-1])

    def _recency_bias(self, length: int) -> Tensor:
        """``[M, length]``: each kernel's recency bias at each position of a sequence."""
        assert self.recency is not None
        block = self.recency.shape[1]
        if length % block:
            raise ValueError(
                f"sequence length {length} is not a multiple of the recency block "
                f"{block} (model.history_length): expected one block per source domain."
            )
        return self.recency.repeat(1, length // block)

    def attention(self, sequence: Tensor, mask: Tensor) -> Tensor:
        """[B, M, L] attention of each interest kernel over the sequence."""
        scores = self.token_scores(sequence).transpose(1, 2)  # [B, M, L]
        return masked_softmax(self._add_recency(scores), mask.unsqueeze(1), dim=-1)

    def forward(self, sequence: Tensor, mask: Tensor) -> Tensor:
        return self.attention(sequence, mask) @ sequence  # Eq. 1

    def forward_tokens(self, table: Tensor, tokens: Tensor, mask: Tensor) -> Tensor:
        """Eq. 1 for sequences of entity ids ``[B, L]`` over an entity table ``[E, d]``.

        The score w_i^T tanh(W^A h) depends on the token's entity alone, so it is computed once
        per entity and gathered, instead of once per sequence position: the same numbers at a
        fraction of the cost when sequences are long and share entities.
        """
        per_entity = self.entity_scores(table)  # [E, M]
        # F.embedding: its backward accumulates rows far faster than advanced indexing does.
        scores = self._add_recency(F.embedding(tokens, per_entity).transpose(1, 2))  # [B, M, L]
        attention = masked_softmax(scores, mask.unsqueeze(1), dim=-1)
        return attention @ F.embedding(tokens, table)  # Eq. 1

    def token_scores(self, vectors: Tensor) -> Tensor:
        """w_i^T tanh(W^A h) of each vector ``[..., d]``: ``[..., M]`` (zeros if not attentive)."""
        if not self.attentive:
            return vectors.new_zeros(*vectors.shape[:-1], self.n_interests)
        return self.kernels(torch.tanh(self.W_A(vectors)))

    def entity_scores(self, table: Tensor) -> Tensor:
        """:meth:`token_scores` of every entity of ``table [E, d]``: ``[E, M]``."""
        return self.token_scores(table)

    def pooling_scores(self, table: Tensor, pad: int) -> Tensor:
        """The entity scores that :meth:`pool_tokens` takes: :meth:`entity_scores` ``[E, M]``
        with the padding entity ``pad`` scored a finite -1e30.

        A padding token then weighs nothing in the softmax of Eq. 1 without a mask (-1e30 plus a
        recency bias rounds back to -1e30), and a user without history gets uniform weights over
        padding rows, which are zero vectors: zeros, no NaN to clean up.
        """
        scores = self.entity_scores(table)
        scores[pad] = -1e30
        return scores

    def pool_tokens(self, table: Tensor, tokens: Tensor, pooling_scores: Tensor) -> Tensor:
        """Eq. 1 as :meth:`forward_tokens`, for inference on many users.

        ``tokens [B, L]`` are left-padded with the padding entity of ``pooling_scores``
        (:meth:`pooling_scores`, computed once by a caller that encodes users chunk by chunk), so
        no mask is needed. The weighted sum over the sequence runs as B * M weighted bags of
        token rows (``embedding_bag``), which never writes the ``[B, L, d]`` gathered sequence.
        Equal to :meth:`forward_tokens` up to float rounding (the sums run in another order).
        """
        b, length = tokens.shape
        m = pooling_scores.shape[1]
        # Gathered by rows (one cache line per token), then laid out [B, M, L] once.
        scores = F.embedding(tokens, pooling_scores).transpose(1, 2).contiguous()
        if self.recency is not None:
            scores += self._recency_bias(length)
        attention = torch.softmax(scores, dim=-1)  # [B, M, L]
        rows = tokens.to(torch.int32).unsqueeze(1).expand(b, m, length).reshape(-1)
        starts = torch.arange(0, b * m * length, length, dtype=torch.int32, device=tokens.device)
        # Padding tokens have weight 0; a padding_idx would take a far slower kernel.
        pooled = F.embedding_bag(
            rows, table, starts, mode="sum", per_sample_weights=attention.view(-1)
        )
        return pooled.view(b, m, -1)

    def __repr__(self) -> str:
        recency = "" if self.recency is None else f", recency={self.recency.shape[1]}"
        mean = "" if self.attentive else ", attentive=False"
        return (
            f"InterestExtractor({self.dim}, n_interests={self.n_interests}, "
            f"attention_dim={self.attention_dim}{recency}{mean})"
        )


class AttentiveFusion(nn.Module):
    """Eq. 2: fuse M interest vectors into one universal user vector.

    With ``prior`` a learned vector b shared by all users is added, z_u = sum(...) + b: the
    interests are convex combinations of entity vectors, so without it z_u . z_i has no term that
    every user shares, and an item's prior appeal (b . z_i, learned from the source domains
    through the item's entities) has nowhere to live.

    Shapes:
        interests ``[*, M, d]`` -> ``[*, d]``.
    """

    def __init__(self, dim: int, attention_dim: int, prior: bool = False) -> None:
        super().__init__()
        self.dim, self.attention_dim = dim, attention_dim
        self.W = nn.Linear(dim, attention_dim, bias=False)
        self.v = nn.Linear(attention_dim, 1, bias=False)
        self.prior = nn.Parameter(torch.zeros(dim)) if prior else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.xavier_uniform_(self.W.weight)
        nn.init.xavier_uniform_(self.v.weight)
        if self.prior is not None:
            nn.init.zeros_(self.prior)

    def forward(self, interests: Tensor) -> Tensor:
        weights = torch.softmax(self.v(torch.tanh(self.W(interests))), dim=-2)  # [*, M, 1]
        fused = (weights * interests).sum(dim=-2)  # Eq. 2
        return fused if self.prior is None else fused + self.prior

    def __repr__(self) -> str:
        prior = ", prior=True" if self.prior is not None else ""
        return f"AttentiveFusion({self.dim}, attention_dim={self.attention_dim}{prior})"

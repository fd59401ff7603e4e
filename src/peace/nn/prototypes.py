"""Prototype learning (Sec. 4.2 and 4.3): Eq. 5-9.

A learnable matrix P in R^{n x d} holds n latent prototypes of the entity graph.

* Eq. 5, similarity of an entity to the prototypes:  s_e = SoftMax(P h_e)
* Eq. 6, the entity's prototype-level view:          h^_e = P^T s_e
* Eq. 7, contrastive prototype learning (InfoNCE in both directions, cosine similarity delta,
  temperature tau, in-batch negatives):
      L_CP = - sum_e [ log exp(d(h_e, h^_e)/tau) / sum_e' exp(d(h_e, h^_e')/tau)
                     + log exp(d(h^_e, h_e)/tau) / sum_e' exp(d(h^_e, h_e')/tau) ]
* Eq. 8, top-K mask of the target entity's prototypes:  m_i = 0 if s_i >= eps(s, K) else -inf
* Eq. 9, prototype-enhanced attention of an interest vector z^A:
      z^^A = MLP( P^T SoftMax((P z^A + m) / sqrt(d)) + z^A )
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from peace.nn.mlp import MLP


class Prototypes(nn.Module):
    """n learnable prototypes with contrastive prototype learning and enhanced attention.

    Args:
        dim: d.
        n_prototypes: n.
        top_k: K of Eq. 8 (clipped to n).
        mlp_hidden: hidden widths of the MLP of Eq. 9.

    Shapes:
        entities ``[*, d]`` -> similarities ``[*, n]`` (Eq. 5), views ``[*, d]`` (Eq. 6);
        interests ``[B, M, d]`` with target similarities ``[B, C, n]`` -> ``[B, C, M, d]`` (Eq. 9).
    """

    def __init__(
        self, dim: int, n_prototypes: int, top_k: int, mlp_hidden: tuple[int, ...] = (64, 32)
    ) -> None:
        super().__init__()
        self.dim, self.n_prototypes = dim, n_prototypes
        self.top_k = max(1, min(top_k, n_prototypes))
        self.weight = nn.Parameter(torch.empty(n_prototypes, dim))  # P
        self.enhance_mlp = MLP(dim, mlp_hidden, dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.normal_(self.weight, std=1.0 / math.sqrt(self.dim))

    # Eq. 5
    def similarity(self, entities: Tensor) -> Tensor:
        """s_e = SoftMax(P h_e) over the n prototypes."""
        return torch.softmax(entities @ self.weight.T, dim=-1)

    # Eq. 6
    def prototype_view(self, similarity: Tensor) -> Tensor:
        """h^_e = P^T s_e."""
        return similarity @ self.weight

    # Eq. 7
    def contrastive_loss(self, entities: Tensor, tau: float) -> Tensor:
        """L_CP over a batch of distinct entity vectors ``[N, d]``, averaged over entities.

        Negatives are the other entities of the batch (P_neg uniform over the batch).
        """
        views = self.prototype_view(self.similarity(entities))
        h = F.normalize(entities, dim=-1)
        hv = F.normalize(views, dim=-1)
        logits = h @ hv.T / tau  # delta(h_e, h^_e') / tau
        target = torch.arange(len(entities), device=entities.device)
        return F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)

    # Eq. 8
    def top_k_mask(self, similarity: Tensor) -> Tensor:
        """Additive mask m: 0 for the K most similar prototypes (ties kept), -inf elsewhere."""
        kth = similarity.topk(self.top_k, dim=-1).values[..., -1:]
        zero = torch.zeros((), dtype=similarity.dtype, device=similarity.device)
        return torch.where(similarity >= kth, zero, torch.full_like(similarity, float("-inf")))

    def interest_logits(self, interests: Tensor) -> Tensor:
        """P z^A / sqrt(d) for every interest: ``[B, M, d] -> [B, M, n]`` (target independent)."""
        return interests @ self.weight.T / math.sqrt(self.dim)

    # Eq. 9
    def enhance(self, interests: Tensor, target_similarity: Tensor) -> Tensor:
        """Prototype-enhanced interests z^^A for each of C targets per user.

        Args:
            interests: ``[B, M, d]`` interest vectors z^A of Eq. 1.
            target_similarity: ``[B, C, n]`` s of each target entity (Eq. 5).

        Returns:
            ``[B, C, M, d]``.
        """
        logits = self.interest_logits(interests)  # [B, M, n]
        mask = self.top_k_mask(target_similarity)  # [B, C, n]; the 1/sqrt(d) keeps -inf
        attn = torch.softmax(logits.unsqueeze(1) + mask.unsqueeze(2), dim=-1)  # [B, C, M, n]
        return self.enhance_mlp(attn @ self.weight + interests.unsqueeze(1))

    def __repr__(self) -> str:
        return (
            f"Prototypes({self.dim}, n_prototypes={self.n_prototypes}, top_k={self.top_k}, "
            f"mlp_hidden={list(self.enhance_mlp.hidden)})"
        )

"""ComiRec-SA (Cen et al., KDD 2020): controllable multi-interest recommendation, self-attentive.

Followed: K interest vectors from self-attentive pooling of the (position-aware) sequence,
``A = softmax(W_2 tanh(W_1 H^T))`` ``[K, L]`` and ``V_u = A H`` ``[K, d]``; against a target the
interest with the largest inner product is used (the paper's training selects it by argmax, its
serving takes the maximum over interests). A.3: 8 interests, the self-attentive variant.

Choices: the entity-oriented strategy of A.3 (targets are entities of the next item, binary
cross-entropy over positives and sampled negatives instead of the paper's sampled softmax); the
hidden width of W_1 is 4d as in the paper; learned positions over the right-aligned sequence.
In the fine-tuned ranker the DeepFM head sees, for each candidate item, the interest that
matches it best.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from peace.baselines.base import SourceContext, entity_loss
from peace.baselines.options import ComiRecOptions
from peace.baselines.sequence import SequenceModel
from peace.config import PeaceConfig
from peace.nn.user_encoder import masked_softmax


class ComiRec(SequenceModel):
    """ComiRec-SA on entity sequences; user states are ``[B, K, d]`` interest vectors."""

    def __init__(
        self, ctx: SourceContext, cfg: PeaceConfig, options: ComiRecOptions = ComiRecOptions()
    ) -> None:
        d = cfg.model.dim
        super().__init__(ctx, d)
        self.position = nn.Embedding(ctx.sequence_length, d)
        nn.init.normal_(self.position.weight, std=0.1)
        self.W1 = nn.Linear(d, 4 * d, bias=False)
        self.W2 = nn.Linear(4 * d, options.interests, bias=False)

    def encode_users(self, table: Tensor, users: Tensor, tokens: Tensor, mask: Tensor) -> Tensor:
        tokens, mask = self.sequence(tokens, mask)
        h = F.embedding(tokens, table)  # [B, L, d]
        length = tokens.shape[1]
        pos = self.position.weight[self.position.num_embeddings - length :]
        scores = self.W2(torch.tanh(self.W1(h + pos)))  # [B, L, K]
        attention = masked_softmax(scores.transpose(1, 2), mask.unsqueeze(1), dim=-1)
        return attention @ h  # [B, K, d]

    def user_vectors(
        self, states: Tensor, items: Tensor, parts: nn.ModuleDict | None = None
    ) -> Tensor:
        """For each candidate, the interest with the largest inner product: ``[B, C, d]`` (no
        parameters, so no :meth:`user_parts` to fine-tune)."""
        match = items @ states.transpose(1, 2)  # [B, C, K]
        best = match.argmax(-1)  # [B, C]
        return torch.gather(states, 1, best.unsqueeze(-1).expand(-1, -1, states.shape[-1]))

    def pretrain_losses(self, table: Tensor, batch, tau: float, gamma: float) -> dict[str, Tensor]:
        states = self.encode_users(table, batch.users, batch.tokens, batch.mask)
        users = self.user_vectors(states, F.embedding(batch.targets, table))
        loss = entity_loss(users, table, batch)
        return {"et": loss, "total": loss}

    # the name in result tables, and the paper the model follows
    display_name = "ComiRec"
    reference = "Cen et al., Controllable Multi-Interest Framework for Recommendation, KDD 2020"

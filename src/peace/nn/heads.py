"""The normal ranker of a target domain (Sec. 4.4, Eq. 11-12).

Eq. 11:  y^_ui = sigma( MLP( z_u^T || z_i^T || DeepFM(x_u^T || x_i^T) ) )
Eq. 12:  L_FT = sum C(y_ui, y^_ui)   (binary cross-entropy over positives and sampled negatives)

z_u^T is the user's universal encoding (prototype-enhanced towards the item when PEA is on),
z_i^T the mean of the item's entity vectors (footnote 4). DeepFM contributes its FM term and the
output of its 64-32-8 deep network (A.3).

With ``interactions`` (``finetune.interaction_features``) the MLP also sees z_u^T * z_i^T and the
zero-shot score (the universal encoding . z_i, Sec. 4.4): an MLP over a concatenation learns
additive terms easily and user-item products poorly, so the head is handed them.

With ``user_dropout`` p (``finetune.user_dropout``), during training each (user, item) pair
sees z_u^T (and z_u^T * z_i^T) as zeros with probability p and scaled by 1 / (1 - p)
otherwise, so the head cannot lean on z_u^T as a user identity; the zero-shot score is kept.

With ``bag_field`` (``finetune.target_history``) x_u^T also holds the user's earlier items of the
target domain (Sec. 5.1.1, "behaviours in current domains"), a multi-valued field of DeepFM that
shares the item-id field's vectors (:class:`peace.nn.deepfm.DeepFM`).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from peace.nn.deepfm import DeepFM
from peace.nn.mlp import MLP


class FineTuneHead(nn.Module):
    """MLP over ``[z_u || z_i || DeepFM(x_u || x_i)]`` (Eq. 11).

    Args:
        dim: d of user and item vectors.
        cardinalities: codes per profile field (user fields then item fields).
        mlp_hidden: two hidden widths of the MLP.
        fm_dim, deepfm_hidden: DeepFM sizes (A.3: 8 and 64-32-8).
        interactions: also feed z_u * z_i and the zero-shot score.
        user_dropout: share of training pairs that see the user vector as zeros.
        bag_field: the field (item id) whose codes the user's target-domain history holds.

    Shapes:
        users ``[B, C, d]``, items ``[B, C, d]``, codes ``[B, C, F]``, bag ``[B, L]`` -> logits
        ``[B, C]``.
    """

    def __init__(
        self,
        dim: int,
        cardinalities: list[int],
        mlp_hidden: tuple[int, ...] = (64, 32),
        fm_dim: int = 8,
        deepfm_hidden: tuple[int, ...] = (64, 32, 8),
        interactions: bool = False,
        user_dropout: float = 0.0,
        bag_field: int | None = None,
    ) -> None:
        super().__init__()
        if not 0.0 <= user_dropout < 1.0:
            raise ValueError(
                f"finetune.user_dropout = {user_dropout!r}: expected a share in [0, 1), e.g. 0.5."
            )
        self.dim = dim
        self.interactions = interactions
        self.user_dropout = user_dropout
        self.deepfm = DeepFM(cardinalities, fm_dim, deepfm_hidden, bag_field)
        extra = dim + 1 if interactions else 0
        self.mlp = MLP(2 * dim + extra + self.deepfm.out_dim, mlp_hidden, 1)

    def forward(
        self,
        users: Tensor,
        items: Tensor,
        codes: Tensor,
        affinity: Tensor | None = None,
        bag: Tensor | None = None,
    ) -> Tensor:
        """Logits ``[B, C]``; ``affinity`` ``[B, C]`` is the zero-shot score (with interactions),
        ``bag`` ``[B, L]`` the user's earlier target items (with ``bag_field``)."""
        if self.training and self.user_dropout > 0:
            keep = torch.rand(users.shape[:-1] + (1,), device=users.device) >= self.user_dropout
            users = users * keep.to(users.dtype) / (1.0 - self.user_dropout)
        return self.score(users, items, self.deepfm.representation(codes, bag), affinity)

    def score(
        self, users: Tensor, items: Tensor, profile: Tensor, affinity: Tensor | None = None
    ) -> Tensor:
        """Eq. 11's MLP given DeepFM's representation ``profile`` ``[*, 1 + h]`` of the codes
        (the online ranker builds it from per-item and per-user parts)."""
        parts = [users, items]
        if self.interactions:
            if affinity is None:
                raise ValueError("a head with interaction features needs the zero-shot score.")
            parts += [users * items, affinity.unsqueeze(-1)]
        x = torch.cat([*parts, profile], dim=-1)
        return self.mlp(x).squeeze(-1)  # Eq. 11 (the sigmoid lives in the loss, Eq. 12)

    def __repr__(self) -> str:
        d = self.deepfm
        return (
            f"FineTuneHead({self.dim}, {d.cardinalities}, mlp_hidden={list(self.mlp.hidden)}, "
            f"fm_dim={d.fm_dim}, deepfm_hidden={list(d.hidden)}"
            + (", interactions=True" if self.interactions else "")
            + (f", user_dropout={self.user_dropout})" if self.user_dropout else ")")
        )

"""Eq. 8-9 then Eq. 2 on each target's K kept prototypes, with the linear steps merged.

Eq. 8 keeps the K prototypes most similar to the target and gives the others the weight 0, so
Eq. 9's attention of an interest z^A needs its logits P z^A / sqrt(d) at those K columns only and
mixes K prototype rows instead of all n. The result equals the dense computation of
:meth:`peace.nn.prototypes.Prototypes.enhance` up to float rounding; targets whose K-th and
(K+1)-th similarities (nearly) tie are computed densely, which keeps ties as Eq. 8 does.

The linear steps around Eq. 9 are merged (:class:`FoldedWeights`): the MLP's first layer is
applied to the prototype rows and to the user's interests instead of to every (target, interest)
mix, and Eq. 2's attention reads the MLP's last hidden layer through the product of the two
matrices, so the enhanced interests are never formed; only their weighted sum goes through the
last layer. tanh(x) is evaluated as 2 sigmoid(2x) - 1 (several times faster on CPUs where torch's
tanh is not vectorised), and the constant the identity leaves in Eq. 2's logits cancels in the
softmax over the interests. Every step is differentiable: pre-training, fine-tuning and serving
compute the user vectors this way.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from peace.nn.prototypes import Prototypes
from peace.nn.user_encoder import AttentiveFusion

TIE_TOLERANCE = 1e-6
"""Relative gap below which the K-th and (K+1)-th prototype similarities count as a tie."""


@dataclass(frozen=True)
class ItemKeys:
    """Target-side part of Eq. 8: each target's top-K prototypes, and targets with (near) ties."""

    top: Tensor
    """[*, K] prototype indices."""
    ties: Tensor
    """[*] bool: the K-th and (K+1)-th similarities (nearly) tie; computed densely."""

    def take(self, rows: Tensor | slice) -> ItemKeys:
        """The keys of ``rows``: a slice, or row indices of any shape ``[*]`` (-> ``[*, K]``)."""
        if isinstance(rows, slice) or rows.dim() != 1:
            return ItemKeys(self.top[rows], self.ties[rows])
        return ItemKeys(self.top.index_select(0, rows), self.ties.index_select(0, rows))

    @staticmethod
    def cat(a: ItemKeys | None, b: ItemKeys | None) -> ItemKeys | None:
        if a is None or b is None:
            return None
        return ItemKeys(torch.cat([a.top, b.top]), torch.cat([a.ties, b.ties]))


@torch.no_grad()
def item_keys(prototypes: Prototypes, targets: Tensor) -> ItemKeys:
    """Top-K prototypes of targets ``[*, d]`` (Eq. 5 and 8, which depend on the target alone)."""
    k, n = prototypes.top_k, prototypes.n_prototypes
    lead = targets.shape[:-1]
    if targets.numel() == 0 or k >= n:
        top = torch.arange(n if k >= n else k, device=targets.device).expand(*lead, -1)
        return ItemKeys(top.contiguous(), torch.zeros(lead, dtype=torch.bool, device=top.device))
    values, top = prototypes.similarity(targets).topk(k + 1, dim=-1)  # Eq. 5
    kth, nxt = values[..., k - 1], values[..., k]
    ties = (kth - nxt) <= TIE_TOLERANCE * kth.abs().clamp(min=1e-30)
    return ItemKeys(top[..., :k].contiguous(), ties)


@dataclass(frozen=True)
class FoldedWeights:
    """Eq. 9's MLP and Eq. 2's attention with their linear steps merged.

    With the MLP ``L_1 -> ReLU -> ... -> ReLU -> L_last`` (hidden widths H_1 ... H_last) and
    Eq. 2's v^T tanh(W e): for a (target, interest) pair with prototype mix a = P^T s and
    interest z, ``L_1(a + z) = sum_k s_k (W_1 p_k) + W_1 z + b_1``; the enhanced interest is
    e = W_L h + b_L with h the last hidden layer, so ``v^T tanh(W e) = 2 v^T sigmoid(2 W W_L h +
    2 W b_L) - sum(v)``, and the fused vector is ``W_L (sum_m w_m h_m) + b_L`` (the weights sum
    to one). Built with gradients where the parts train; the service builds it once.
    """

    first: Tensor
    """[n, H_1]: W_1 p_k for every prototype."""
    w1: Tensor
    b1: Tensor
    middle: tuple[nn.Linear, ...]
    """The hidden-to-hidden layers, unchanged."""
    key: Tensor
    """[A, H_last]: 2 W W_L."""
    key_bias: Tensor
    """[A]: 2 W b_L."""
    v2: Tensor
    """[A]: 2 v."""
    last_w: Tensor
    last_b: Tensor
    prior: Tensor | None

    @classmethod
    def of(cls, prototypes: Prototypes, fusion: AttentiveFusion) -> FoldedWeights:
        linears = [m for m in prototypes.enhance_mlp.net if isinstance(m, nn.Linear)]
        if len(linears) < 2 or len(linears) != len(prototypes.enhance_mlp.net) // 2 + 1:
            raise ValueError("Eq. 9's MLP must be Linear -> ReLU -> ... -> Linear (no dropout).")
        first, last = linears[0], linears[-1]
        w = fusion.W.weight
        return cls(
            first=(prototypes.weight @ first.weight.T).contiguous(),
            w1=first.weight,
            b1=first.bias,
            middle=tuple(linears[1:-1]),
            key=(2.0 * w @ last.weight).contiguous(),
            key_bias=2.0 * w @ last.bias,
            v2=2.0 * fusion.v.weight[0],
            last_w=last.weight,
            last_b=last.bias,
            prior=fusion.prior,
        )


def enhanced_user_vectors(
    prototypes: Prototypes,
    fusion: AttentiveFusion,
    interests: Tensor,
    targets: Tensor,
    keys: ItemKeys | None = None,
    folded: FoldedWeights | None = None,
) -> Tensor:
    """Eq. 8-9 then Eq. 2 for C targets per user, on each target's K kept prototypes.

    Args:
        prototypes, fusion: Eq. 9's prototypes and MLP, Eq. 2's attention.
        interests: ``[B, M, d]`` interest vectors z^A of Eq. 1.
        targets: ``[B, C, d]`` target entity (or item) vectors.
        keys: the targets' :func:`item_keys` ``[B, C, K]`` (computed here when None).
        folded: ``FoldedWeights.of(prototypes, fusion)`` (computed here when None).

    Returns:
        ``[B, C, d]``, equal to ``fusion(prototypes.enhance(interests, s))`` with s the targets'
        similarities (Eq. 5) up to float rounding.
    """
    if keys is None:
        keys = item_keys(prototypes, targets)
    fw = FoldedWeights.of(prototypes, fusion) if folded is None else folded
    b, c, k = keys.top.shape
    m = interests.shape[1]
    logits = prototypes.interest_logits(interests)  # [B, M, n]
    index = keys.top.unsqueeze(2).expand(b, c, m, k)
    selected = logits.unsqueeze(1).expand(b, c, m, -1).gather(3, index)  # Eq. 8 kept, [B,C,M,K]
    attn = torch.softmax(selected, dim=-1)
    # The first layer of Eq. 9's MLP on P^T SoftMax(.) + z^A: B * C * M weighted sums of K rows
    # of W_1 P^T, plus W_1 z^A + b_1 per interest.
    first = F.linear(interests, fw.w1, fw.b1).unsqueeze(1)  # W_1 z^A + b_1, [B, 1, M, H_1]
    if grad := torch.is_grad_enabled():  # F.embedding's backward sums in a fixed order
        h = attn @ F.embedding(keys.top, fw.first)  # [B, C, M, K] @ [B, C, K, H_1]
        h = torch.relu(h + first)
    else:  # one call on int32 rows, then in place: faster for the service's single user
        rows = keys.top.to(torch.int32).unsqueeze(2).expand(b, c, m, k).reshape(-1)
        h = F.embedding_bag(
            rows,
            fw.first,
            torch.arange(0, b * c * m * k, k, dtype=torch.int32, device=rows.device),
            mode="sum",
            per_sample_weights=attn.reshape(-1),
        ).view(b, c, m, -1)
        h = torch.relu_(h.add_(first))
    for layer in fw.middle:
        h = torch.relu(layer(h)) if grad else torch.relu_(layer(h))
    # Eq. 2 on the enhanced interests W_L h + b_L, without forming them.
    key = F.linear(h, fw.key, fw.key_bias)
    logit = (torch.sigmoid(key) if grad else torch.sigmoid_(key)) @ fw.v2  # [B, C, M]
    weights = torch.softmax(logit, dim=-1).unsqueeze(-1)  # [B, C, M, 1]
    fused = F.linear((weights * h).sum(2), fw.last_w, fw.last_b)
    if fw.prior is not None:
        fused = fused + fw.prior
    if bool(keys.ties.any()):  # the few (near) ties: exactly Eq. 8's dense mask
        rows, cols = torch.nonzero(keys.ties, as_tuple=True)
        dense = fusion(
            prototypes.enhance(interests[rows], prototypes.similarity(targets[rows, cols][:, None]))
        )[:, 0]
        fused = fused.index_put((rows, cols), dense)
    return fused

"""DeepFM over categorical profile fields (Guo et al., IJCAI 2017), as used by Eq. 11.

A.3: the deep network is 64-32-8 and the FM latent dimension is 8. As a stand-alone recommender
(the "DeepFM" reference) the logit is first-order + FM + a linear read-out of the deep part; inside
Eq. 11 its representation ``[FM term || deep output]`` (1 + 8 values) is concatenated with the
user and item vectors.

With ``bag_field`` the model has one more, multi-valued user field: a bag of codes of field
``bag_field`` (e.g. the items the user already had in the domain, Sec. 5.1.1's "behaviours in
current domains"), embedded as the mean of that field's vectors, so the FM pairs a candidate
item's id with the user's earlier items. An empty bag adds zeros.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass(frozen=True)
class FieldSums:
    """What a group of fields adds to DeepFM's representation: its first-order terms, the sum
    of its latent vectors and of their squares (FM), and its part of the deep network's first
    layer (before the bias). Rows ``[*]`` are whatever the codes were (users, items)."""

    linear: Tensor
    """[*] sum of the first-order weights."""
    latent: Tensor
    """[*, k] sum of the latent vectors."""
    squares: Tensor
    """[*] sum of the squared latent entries."""
    deep: Tensor
    """[*, hidden[0]] the fields' columns of the deep network's first layer times their vectors."""

    def take(self, rows: Tensor) -> FieldSums:
        return FieldSums(
            *(t.index_select(0, rows) for t in (self.linear, self.latent, self.squares, self.deep))
        )


class DeepFM(nn.Module):
    """Factorisation machine plus deep network over F categorical fields.

    Args:
        cardinalities: number of codes of each field (code 0 = unknown).
        fm_dim: latent dimension of the FM (A.3: 8).
        hidden: deep network widths (A.3: 64-32-8).
        bag_field: the field whose codes (and vectors) a multi-valued user field holds; None: no
            such field.

    Shapes:
        codes ``[*, F]`` -> ``representation`` ``[*, 1 + hidden[-1]]``, ``forward`` ``[*]``; with a
        bag, codes ``[B, C, F]`` and bag ``[B, L]`` (0 pads), one bag per row of candidates.
    """

    def __init__(
        self,
        cardinalities: list[int],
        fm_dim: int = 8,
        hidden: tuple[int, ...] = (64, 32, 8),
        bag_field: int | None = None,
    ) -> None:
        super().__init__()
        self.cardinalities = list(cardinalities)
        self.fm_dim, self.hidden = fm_dim, tuple(hidden)
        if bag_field is not None and not 0 <= bag_field < len(self.cardinalities):
            raise ValueError(
                f"bag_field = {bag_field}: expected a field in 0..{len(cardinalities) - 1}."
            )
        self.bag_field = bag_field
        offsets = torch.tensor([0] + self.cardinalities[:-1]).cumsum(0)
        self.register_buffer("offsets", offsets, persistent=False)
        total = max(sum(self.cardinalities), 1)
        self.first_order = nn.Embedding(total, 1)
        self.latent = nn.Embedding(total, fm_dim)
        layers: list[nn.Module] = []
        width = fm_dim * (len(self.cardinalities) + (bag_field is not None))
        for h in self.hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        self.deep = nn.Sequential(*layers)
        self.readout = nn.Linear(width, 1)
        self.bias = nn.Parameter(torch.zeros(()))
        self.reset_parameters()

    @property
    def out_dim(self) -> int:
        return 1 + self.hidden[-1]

    def reset_parameters(self) -> None:
        nn.init.zeros_(self.first_order.weight)
        nn.init.normal_(self.latent.weight, std=0.01)

    def _fm(self, codes: Tensor, bag: Tensor | None = None) -> tuple[Tensor, Tensor]:
        idx = codes + self.offsets
        v = self.latent(idx)  # [*, F, k]
        first = self.first_order(idx).sum((-2, -1))
        if self.bag_field is not None:
            if bag is None:
                bag = torch.zeros(codes.shape[:-2] + (0,), dtype=torch.long, device=codes.device)
            keep = (bag > 0).unsqueeze(-1).to(v.dtype)  # [B, L, 1]
            count = keep.sum(-2).clamp(min=1.0)
            bag_idx = bag + self.offsets[self.bag_field]
            v_bag = (self.latent(bag_idx) * keep).sum(-2) / count  # [B, k]
            first = first + ((self.first_order(bag_idx) * keep).sum(-2) / count)  # [B, 1]
            v_bag = v_bag.unsqueeze(-2).expand(v.shape[:-2] + (self.fm_dim,))
            v = torch.cat([v, v_bag.unsqueeze(-2)], dim=-2)  # [B, C, F + 1, k]
        square_of_sum = v.sum(-2).pow(2)
        sum_of_square = v.pow(2).sum(-2)
        fm = 0.5 * (square_of_sum - sum_of_square).sum(-1) + first
        return fm, v

    def representation(self, codes: Tensor, bag: Tensor | None = None) -> Tensor:
        fm, v = self._fm(codes, bag)
        deep = self.deep(v.flatten(-2))
        return torch.cat([fm.unsqueeze(-1), deep], dim=-1)

    def field_sums(self, codes: Tensor, first_field: int) -> FieldSums:
        """The contribution of fields ``first_field ..`` (codes ``[*, F']``) to the representation.

        FM and the deep network's first layer are sums over fields, so a representation is
        :meth:`combine` of the user fields' sums and the item fields' sums: the online ranker
        computes the items' once per catalogue and the user's once per request. Not for a model
        with a bag field.
        """
        if self.bag_field is not None:
            raise ValueError("field sums are not defined for a model with a bag field.")
        n = codes.shape[-1]
        idx = codes + self.offsets[first_field : first_field + n]
        v = self.latent(idx)  # [*, F', k]
        k = self.fm_dim
        first_layer = self.deep[0]
        assert isinstance(first_layer, nn.Linear)
        cols = first_layer.weight[:, first_field * k : (first_field + n) * k]
        return FieldSums(
            linear=self.first_order(idx).sum((-2, -1)),
            latent=v.sum(-2),
            squares=v.pow(2).sum((-2, -1)),
            deep=F.linear(v.flatten(-2), cols),
        )

    def combine(self, a: FieldSums, b: FieldSums) -> Tensor:
        """:meth:`representation` of all fields from the sums of two disjoint groups that
        together cover them (shapes broadcast: one user against C items)."""
        fm = 0.5 * ((a.latent + b.latent).pow(2).sum(-1) - a.squares - b.squares)
        fm = fm + a.linear + b.linear
        first_layer = self.deep[0]
        assert isinstance(first_layer, nn.Linear)
        deep = self.deep[2:](torch.relu(a.deep + b.deep + first_layer.bias))
        return torch.cat([fm.unsqueeze(-1), deep], dim=-1)

    def forward(self, codes: Tensor, bag: Tensor | None = None) -> Tensor:
        fm, v = self._fm(codes, bag)
        return fm + self.readout(self.deep(v.flatten(-2))).squeeze(-1) + self.bias

    def __repr__(self) -> str:
        bag = "" if self.bag_field is None else f", bag_field={self.bag_field}"
        return (
            f"DeepFM({self.cardinalities}, fm_dim={self.fm_dim}, hidden={list(self.hidden)}{bag})"
        )

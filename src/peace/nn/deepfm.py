"""DeepFM over categorical profile fields (Guo et al., IJCAI 2017), as used by Eq. 11.

A.3: the deep network is 64-32-8 and the FM latent dimension is 8. As a stand-alone recommender
(the "DeepFM" reference) the logit is first-order + FM + a linear read-out of the deep part; inside
Eq. 11 its representation ``[FM term || deep output]`` (1 + 8 values) is concatenated with the
user and item vectors.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class DeepFM(nn.Module):
    """Factorisation machine plus deep network over F categorical fields.

    Args:
        cardinalities: number of codes of each field (code 0 = unknown).
        fm_dim: latent dimension of the FM (A.3: 8).
        hidden: deep network widths (A.3: 64-32-8).

    Shapes:
        codes ``[*, F]`` -> ``representation`` ``[*, 1 + hidden[-1]]``, ``forward`` ``[*]``.
    """

    def __init__(
        self, cardinalities: list[int], fm_dim: int = 8, hidden: tuple[int, ...] = (64, 32, 8)
    ) -> None:
        super().__init__()
        self.cardinalities = list(cardinalities)
        self.fm_dim, self.hidden = fm_dim, tuple(hidden)
        offsets = torch.tensor([0] + self.cardinalities[:-1]).cumsum(0)
        self.register_buffer("offsets", offsets, persistent=False)
        total = max(sum(self.cardinalities), 1)
        self.first_order = nn.Embedding(total, 1)
        self.latent = nn.Embedding(total, fm_dim)
        layers: list[nn.Module] = []
        width = fm_dim * len(self.cardinalities)
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

    def _fm(self, codes: Tensor) -> tuple[Tensor, Tensor]:
        idx = codes + self.offsets
        v = self.latent(idx)  # [*, F, k]
        square_of_sum = v.sum(-2).pow(2)
        sum_of_square = v.pow(2).sum(-2)
        fm = 0.5 * (square_of_sum - sum_of_square).sum(-1) + self.first_order(idx).sum((-2, -1))
        return fm, v

    def representation(self, codes: Tensor) -> Tensor:
        fm, v = self._fm(codes)
        deep = self.deep(v.flatten(-2))
        return torch.cat([fm.unsqueeze(-1), deep], dim=-1)

    def forward(self, codes: Tensor) -> Tensor:
        fm, v = self._fm(codes)
        return fm + self.readout(self.deep(v.flatten(-2))).squeeze(-1) + self.bias

    def __repr__(self) -> str:
        return f"DeepFM({self.cardinalities}, fm_dim={self.fm_dim}, hidden={list(self.hidden)})"

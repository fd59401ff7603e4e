"""The MLP used throughout PEACE: two ReLU hidden layers (A.3)."""

from __future__ import annotations

from torch import Tensor, nn


class MLP(nn.Module):
    """``Linear -> ReLU -> Linear -> ReLU -> Linear``.

    Args:
        in_dim: input width.
        hidden: widths of the two hidden layers.
        out_dim: output width.
        dropout: dropout after each hidden layer.

    Shapes:
        input ``[*, in_dim]``, output ``[*, out_dim]``.
    """

    def __init__(
        self, in_dim: int, hidden: tuple[int, ...], out_dim: int, dropout: float = 0.0
    ) -> None:
        super().__init__()
        self.in_dim, self.hidden, self.out_dim = in_dim, tuple(hidden), out_dim
        self.dropout = dropout
        layers: list[nn.Module] = []
        width = in_dim
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = h
        layers.append(nn.Linear(width, out_dim))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def __repr__(self) -> str:
        extra = f", dropout={self.dropout}" if self.dropout > 0 else ""
        return f"MLP({self.in_dim}, {list(self.hidden)}, {self.out_dim}{extra})"

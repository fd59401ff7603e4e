"""DisenGCN's neighbourhood routing (Ma et al., ICML 2019) over blocks of weighted messages.

Used by PCRec-D (:class:`peace.baselines.pcrec.PCRecD`): each node's K factors are refined by
messages from its neighbours, each message split over the factors by how well it matches them.
Messages are grouped by receiving node and cut into blocks of consecutive nodes, so that every
block is routed with cache-sized tensors.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass
class Messages:
    """Weighted messages grouped by receiving node, cut into blocks of consecutive nodes.

    Attributes:
        src, dst, weight: ``[M]`` sender, receiver (non-decreasing) and weight of each message.
        blocks: ``(first node, end node, first message, end message)`` spans covering every node,
            each holding exactly the messages its nodes receive.
        fan_in: when every node receives exactly this many messages (``M = N * fan_in``), blocks
            are routed as dense ``[n, fan_in, K, D]`` tensors; None for a general graph.
    """

    src: Tensor
    dst: Tensor
    weight: Tensor
    blocks: list[tuple[int, int, int, int]]
    fan_in: int | None = None


def uniform_blocks(num: int, fan_in: int, budget: int) -> list[tuple[int, int, int, int]]:
    """:func:`message_blocks` for ``num`` nodes receiving ``fan_in`` messages each."""
    step = max(budget // fan_in, 1)
    return [
        (n0, min(n0 + step, num), n0 * fan_in, min(n0 + step, num) * fan_in)
        for n0 in range(0, num, step)
    ]


def message_blocks(pointer: Tensor, budget: int) -> list[tuple[int, int, int, int]]:
    """Spans of consecutive nodes with at most ``budget`` messages each (or one node).

    ``pointer`` ``[N + 1]``: node n receives messages ``pointer[n]:pointer[n + 1]``.
    """
    ptr = pointer.tolist()
    blocks, n0, num = [], 0, len(ptr) - 1
    while n0 < num:
        n1 = max(bisect.bisect_right(ptr, ptr[n0] + budget, lo=n0 + 1) - 1, n0 + 1)
        blocks.append((n0, n1, ptr[n0], ptr[n1]))
        n0 = n1
    return blocks


def neighbour_routing(
    z: Tensor,
    messages: Messages,
    iterations: int,
    tau: float = 1.0,
    centres: Tensor | None = None,
) -> Tensor:
    """DisenGCN's neighbourhood routing: one layer over weighted messages to every node.

    For every node u and factor k, starting from c_{u,k} = z_{u,k}, repeat: each message from v
    is split over the factors by p_{v,k} = softmax_k(z_{v,k} . c_{u,k} / tau), and
    c_{u,k} = normalize(z_{u,k} + sum_v w_{uv} p_{v,k} z_{v,k}). A node's result depends only on
    the z of its senders, so each block of nodes is routed on its own, with cache-sized tensors.
    The routing weights p of the last iteration are computed without gradient; the output is
    differentiable in the messages and centres (``iterations`` >= 1).

    Shapes:
        z ``[N, K, D]`` (unit-norm per factor) -> c ``[N, K, D]``; with ``centres`` ``[R, K, D]``
        (the receivers' own z when they are not ``z``'s rows ``0..R-1``), messages are sent by
        rows of ``z`` to rows of ``centres`` and the result is ``[R, K, D]``.
    """
    centres = z if centres is None else centres
    out = []
    for n0, n1, m0, m1 in messages.blocks:
        centre = centres[n0:n1]
        if m1 == m0:
            out.append(centre)
            continue
        neigh = z[messages.src[m0:m1]]  # [m, K, D]
        weight = messages.weight[m0:m1]
        if messages.fan_in is not None:
            out.append(_route_dense(centre, neigh, weight, messages.fan_in, iterations, tau))
        else:
            local = messages.dst[m0:m1] - n0
            out.append(_route_sparse(centre, neigh, local, weight, iterations, tau))
    return torch.cat(out)


def _route_dense(
    centre: Tensor, neigh: Tensor, weight: Tensor, fan_in: int, iterations: int, tau: float
) -> Tensor:
    """Routing of ``[n, K, D]`` centres, each receiving ``fan_in`` consecutive messages."""
    neigh = neigh.view(len(centre), fan_in, *centre.shape[1:])  # [n, S, K, D]
    weight = weight.view(len(centre), fan_in, 1)
    with torch.no_grad():  # routing weights are constants of the backward pass
        c = centre
        for step in range(iterations):
            logits = (neigh * c.unsqueeze(1)).sum(-1)  # [n, S, K]
            p = torch.softmax(logits if tau == 1.0 else logits / tau, dim=-1) * weight
            if step < iterations - 1:
                c = F.normalize(centre + (neigh * p.unsqueeze(-1)).sum(1), dim=-1)
    return F.normalize(centre + (neigh * p.unsqueeze(-1)).sum(1), dim=-1)


def _route_sparse(
    centre: Tensor, neigh: Tensor, local: Tensor, weight: Tensor, iterations: int, tau: float
) -> Tensor:
    """Routing of ``[n, K, D]`` centres over messages ``[m, K, D]`` sent to ``local`` ids."""
    weight = weight.unsqueeze(-1)
    with torch.no_grad():  # routing weights are constants of the backward pass
        c = centre
        for step in range(iterations):
            logits = (neigh * c[local]).sum(-1)  # [m, K]
            p = torch.softmax(logits if tau == 1.0 else logits / tau, dim=-1) * weight
            if step < iterations - 1:
                agg = torch.zeros_like(centre).index_add(0, local, neigh * p.unsqueeze(-1))
                c = F.normalize(centre + agg, dim=-1)
    agg = torch.zeros_like(centre).index_add(0, local, neigh * p.unsqueeze(-1))
    return F.normalize(centre + agg, dim=-1)

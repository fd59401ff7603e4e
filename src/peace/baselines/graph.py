"""What the graph competitors (SimGCL, PCRec-L, PCRec-D, Tiger) share.

* :class:`GraphModel`: a model over a graph of entities, padding and users (and any further
  nodes), its layered encoder table, LightGCN propagation (:meth:`GraphModel.propagate`) and
  pre-training by the entity-oriented loss plus weighted terms (L2 of the batch's input rows);
  :class:`ContrastiveGraphModel` adds InfoNCE between two views of the batch's users and
  entities (SimGCL, PCRec).
* :class:`SymmetricGraph`: the normalised adjacency D^-1/2 A D^-1/2 of an undirected graph, with
  a fixed sparsity pattern so that edge dropout is cheap, and :func:`symmetric_mm`, its product.
* :class:`NodeEmbedding`: input embeddings with a zero padding row.
* :func:`history_step` and :class:`LayeredTable`: users propagated from their history.

Users are propagated from their history, not looked up as graph nodes. A graph model trained
on the pre-training records knows a node only for users with a positive record before the
held-out part; on MovieLens-1M 64% of the held-out records and 24-42% of each target domain's
test users have none, and a node lookup gives them a zero vector, where PEACE and the sequence
models read their history. So a user's edges are its history at the time of the query: the
entity tokens of its positive source items strictly before that time, the input every model
receives. LightGCN's step into a node u is ``sum_{v in N(u)} h_v / sqrt(|N(u)| |N(v)|)``; with
N(u) the history tokens and |N(v)| the entity's degree in the pre-training graph, user layer k
is computed from entity layer k - 1 (:func:`history_step`). The graph keeps its user nodes,
through which entities reach each other; a user's own input embedding (layer 0, where a model
uses it) is the trained row of its node, and zero for a user with no node edge.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from peace.baselines.base import SourceContext, TransferModel, info_nce
from peace.baselines.options import ContrastiveOptions, GraphOptions


class _SymmetricProduct(torch.autograd.Function):
    """``A @ x`` for a symmetric sparse ``A``; the backward pass is ``A @ grad`` (no transpose).

    The product runs in float32 also under ``torch.autocast`` (``pretrain.precision = "bf16"``):
    sparse CSR products have no bfloat16 kernel."""

    @staticmethod
    def forward(ctx, adjacency: Tensor, x: Tensor) -> Tensor:
        ctx.adjacency = adjacency
        with torch.autocast(x.device.type, enabled=False):
            return adjacency @ x.float()

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[None, Tensor]:
        return None, ctx.adjacency @ grad.float().contiguous()


def symmetric_mm(adjacency: Tensor, x: Tensor) -> Tensor:
    """``A @ x`` ``[N, d]`` for a symmetric sparse CSR ``A`` ``[N, N]``, differentiable in x."""
    return _SymmetricProduct.apply(adjacency, x)


class SymmetricGraph:
    """An undirected graph as a symmetrically normalised CSR adjacency with a fixed pattern.

    The sparsity pattern (both directions of every edge) is sorted once; a view that drops edges
    only recomputes degrees and values (a dropped edge keeps its slot with value 0), so an
    augmented adjacency costs a few vector operations instead of a sparse sort.

    Args:
        pairs: ``[P, 2]`` distinct undirected edges (u, v), u != v, as node ids.
        num_nodes: N.

    Attributes:
        src, dst: ``[2P]`` directed edges in CSR order (row = dst, the node that receives).
        pair: ``[2P]`` the undirected edge of each directed slot (for edge dropout).
        degree: ``[N]`` node degrees (float).
        adjacency: D^-1/2 A D^-1/2 as a sparse CSR ``[N, N]``.
    """

    def __init__(self, pairs: Tensor | np.ndarray, num_nodes: int) -> None:
        pairs = torch.as_tensor(np.asarray(pairs), dtype=torch.long).reshape(-1, 2)
        self.num_nodes = num_nodes
        self.num_pairs = len(pairs)
        dst = torch.cat([pairs[:, 0], pairs[:, 1]])
        src = torch.cat([pairs[:, 1], pairs[:, 0]])
        pair = torch.arange(self.num_pairs).repeat(2)
        order = torch.argsort(dst * num_nodes + src)
        self.dst, self.src, self.pair = dst[order], src[order], pair[order]
        counts = torch.bincount(self.dst, minlength=num_nodes)
        self.crow = torch.cat([torch.zeros(1, dtype=torch.long), torch.cumsum(counts, 0)])
        self.degree = counts.float()
        self.adjacency = self.normalised()

    def normalised(self, keep: Tensor | None = None) -> Tensor:
        """D^-1/2 A D^-1/2 over the kept undirected edges (``keep`` ``[P]`` bool; None: all)."""
        if keep is None:
            weight = torch.ones(len(self.dst))
            degree = self.degree
        else:
            weight = keep[self.pair].float()
            degree = torch.zeros(self.num_nodes).index_add_(0, self.dst, weight)
        inv = degree.clamp(min=1.0).pow(-0.5)
        values = inv[self.dst] * inv[self.src] * weight
        with warnings.catch_warnings():  # "sparse CSR support is in beta"
            warnings.simplefilter("ignore", UserWarning)
            return torch.sparse_csr_tensor(
                self.crow,
                self.src,
                values,
                (self.num_nodes, self.num_nodes),
                check_invariants=False,
            )

    def dropped(self, rate: float) -> Tensor:
        """The adjacency after dropping each undirected edge with probability ``rate``.

        Draws from torch's global generator.
        """
        return self.normalised(torch.rand(self.num_pairs) >= rate)


def user_entity_pairs(ctx: SourceContext) -> Tensor:
    """``[P, 2]`` user-entity edges as node ids: entities ``0..|E|-1``, users ``|E| + 1 ..``."""
    ue = torch.as_tensor(ctx.user_entities, dtype=torch.long).reshape(-1, 2)
    return torch.stack([ue[:, 0] + ctx.num_entities + 1, ue[:, 1]], 1)


class NodeEmbedding(nn.Module):
    """Input embeddings ``[N, d]`` of a graph's nodes whose padding row ``pad`` stays zero."""

    def __init__(self, num_nodes: int, dim: int, pad: int, init: str = "xavier") -> None:
        super().__init__()
        self.pad = pad
        self.weight = nn.Parameter(torch.empty(num_nodes, dim))
        if init == "xavier":
            nn.init.xavier_uniform_(self.weight)
        else:
            nn.init.normal_(self.weight, std=0.1)
        keep = torch.ones(num_nodes, 1)
        keep[pad] = 0.0
        self._keep = keep

    def forward(self) -> Tensor:
        return self.weight * self._keep  # padding row exactly zero, with no gradient


def history_weights(mask: Tensor, tokens: Tensor, inv_sqrt_degree: Tensor) -> Tensor:
    """``[B, L]`` LightGCN edge weights ``1 / sqrt(|N(u)| |N(e)|)`` of each real history token."""
    count = mask.sum(1, keepdim=True).clamp(min=1).float()
    return mask.float() * inv_sqrt_degree[tokens] * count.rsqrt()


def history_step(rows: Tensor, tokens: Tensor, weights: Tensor) -> Tensor:
    """One propagation step into users whose edges are their history tokens.

    Shapes: entity rows ``[|E| + 1, d]`` of layer k - 1, tokens and weights ``[B, L]`` ->
    user layer k ``[B, d]``. A token repeated in a history (an entity of several of the user's
    items) counts as often as it occurs.
    """
    return torch.einsum("bl,bld->bd", weights, F.embedding(tokens, rows))


class LayeredTable:
    """The encoder table of a graph model with history-propagated users.

    Layout (rows): the final entity vectors ``0..|E|`` (row ``|E|`` = padding, zero), then for
    k = 0..L-1 the entity rows of layer k (``|E| + 1`` each), then the users' input rows ``[U]``
    (zero for users with no edge in the graph). Items read rows ``0..|E|`` only (footnote 4).

    Args:
        graph: the model's graph; nodes ``0..|E|`` are entities and padding, ``|E| + 1 ..
            |E| + U`` users.
        num_entities, num_users: |E| and U.
        layers: L, propagation layers.
    """

    def __init__(self, graph: SymmetricGraph, num_entities: int, num_users: int, layers: int):
        self.rows = num_entities + 1
        self.num_users, self.layers = num_users, layers
        self.inv_sqrt_degree = graph.degree[: self.rows].clamp(min=1.0).rsqrt()
        users = graph.degree[self.rows : self.rows + num_users]
        self.warm = (users > 0).float().unsqueeze(1)  # [U, 1]

    def pack(self, final: Tensor, layers: list[Tensor]) -> Tensor:
        """``[(L + 1)(|E| + 1) + U, d]`` from the final rows and the node layers ``0..L`` (the
        entity rows of layers ``0..L-1``, the users' input rows of layer 0)."""
        user_inputs = layers[0][self.rows : self.rows + self.num_users] * self.warm
        parts = [final[: self.rows]] + [h[: self.rows] for h in layers[:-1]]
        return torch.cat(parts + [user_inputs])

    def layer(self, table: Tensor, k: int) -> Tensor:
        """Entity rows of layer k ``[|E| + 1, d]`` (k = 0 .. L-1)."""
        return table[(k + 1) * self.rows : (k + 2) * self.rows]

    def user_inputs(self, table: Tensor, users: Tensor) -> Tensor:
        """The users' own input rows ``[B, d]`` (layer 0; zero without a graph edge)."""
        return table[(self.layers + 1) * self.rows + users]

    def user_layers(
        self, table: Tensor, users: Tensor, tokens: Tensor, mask: Tensor
    ) -> list[Tensor]:
        """User layers ``0..L``, each ``[B, d]``: the input row, then history steps."""
        weights = history_weights(mask, tokens, self.inv_sqrt_degree)
        out = [self.user_inputs(table, users)]
        for k in range(self.layers):
            out.append(history_step(self.layer(table, k), tokens, weights))
        return out


def batch_nodes(batch: object, num_entities: int) -> tuple[Tensor, Tensor]:
    """The batch's rows with distinct users (first occurrence) and its distinct real targets."""
    users, inverse = torch.unique(batch.users, return_inverse=True)
    first = torch.full((len(users),), len(inverse), dtype=torch.long)
    first = first.scatter_reduce(0, inverse, torch.arange(len(inverse)), reduce="amin")
    entities = torch.unique(batch.targets[batch.valid])
    return first, entities[entities != num_entities]


def l2_penalty(ego: Tensor, batch: object, num_entities: int) -> Tensor:
    """Squared norm of the batch's users' and targets' input rows over the batch size."""
    users = ego[batch.users + num_entities + 1]
    targets = ego[batch.targets] * batch.valid.unsqueeze(-1)
    return (users.pow(2).sum() + targets.pow(2).sum()) / len(batch.users)


class GraphModel(TransferModel):
    """A model over a graph of entities ``0..|E|-1``, padding ``|E|``, users ``|E| + 1 ..`` and
    ``extra_nodes`` further nodes, with users propagated from their history.

    The graph is ``pairs`` (default: the pre-training user-entity pairs,
    :func:`user_entity_pairs`); the table is laid out by :class:`LayeredTable`. Pre-training
    minimises the entity-oriented loss plus the weighted terms of :meth:`penalties` (training
    mode only). A subclass sets ``self.embedding`` (:class:`NodeEmbedding`).
    """

    embedding: NodeEmbedding

    def __init__(
        self,
        ctx: SourceContext,
        options: GraphOptions,
        pairs: Tensor | np.ndarray | None = None,
        extra_nodes: int = 0,
    ) -> None:
        super().__init__()
        layers, self.l2 = options.layers, options.l2
        self.num_entities, self.layers = ctx.num_entities, layers
        self.num_nodes = ctx.num_entities + 1 + ctx.num_users + extra_nodes
        pairs = user_entity_pairs(ctx) if pairs is None else pairs
        self.graph = SymmetricGraph(pairs, self.num_nodes)
        self.layout = LayeredTable(self.graph, ctx.num_entities, ctx.num_users, layers)

    def propagate(
        self, x: Tensor, adjacency: Tensor | None = None, perturb: Callable | None = None
    ) -> list[Tensor]:
        """LightGCN layers ``0..L`` ``[N, d]`` of ``x`` (``A^k x``, each step's output passed
        through ``perturb`` when given) over ``adjacency`` (default: the full graph's)."""
        adjacency = self.graph.adjacency if adjacency is None else adjacency
        out = [x]
        for _ in range(self.layers):
            h = symmetric_mm(adjacency, out[-1])
            out.append(h if perturb is None else perturb(h))
        return out

    def mean_table(self, layers: list[Tensor]) -> Tensor:
        """The encoder table whose entity rows are the mean of layers ``0..L``."""
        return self.layout.pack(torch.stack(layers).mean(0), layers)

    def penalties(self, table: Tensor, batch: object) -> list[Tensor]:
        """Weighted terms added, in order, to the entity loss: here L2 of the input rows."""
        return [self.l2 * l2_penalty(self.embedding(), batch, self.num_entities)]

    def pretrain_losses(
        self, table: Tensor, batch: object, tau: float, gamma: float
    ) -> dict[str, Tensor]:
        out = super().pretrain_losses(table, batch, tau, gamma)
        if self.training:
            for term in self.penalties(table, batch):
                out["total"] = out["total"] + term
        return out


class ContrastiveGraphModel(GraphModel):
    """Pre-training by entity BCE + lambda InfoNCE(view a, view b) + L2 (SimGCL, PCRec).

    The InfoNCE (cosine, temperature ``cl_tau``) is taken over the batch's distinct users and,
    separately, its distinct target entities. A subclass implements :meth:`views`.
    """

    def __init__(self, ctx: SourceContext, options: ContrastiveOptions) -> None:
        super().__init__(ctx, options)
        self.cl_weight, self.cl_tau = options.cl_weight, options.cl_tau

    def views(self, table: Tensor, batch: object) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """Two augmented views of the batch's distinct users ``[n, d]`` and of its distinct
        target entities ``[m, d]`` (users a, users b, entities a, entities b), and the input rows
        ``[N, d]`` the L2 term reads (training mode only)."""
        raise NotImplementedError

    def penalties(self, table: Tensor, batch: object) -> list[Tensor]:
        users_a, users_b, entities_a, entities_b, ego = self.views(table, batch)
        cl = info_nce(users_a, users_b, self.cl_tau)
        if len(entities_a):
            cl = cl + info_nce(entities_a, entities_b, self.cl_tau)
        reg = l2_penalty(ego, batch, self.num_entities)
        return [self.cl_weight * cl, self.l2 * reg]

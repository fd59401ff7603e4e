"""SimGCL (Yu et al., SIGIR 2022): graph contrastive learning with uniform noise, no graph edits.

Followed: a LightGCN encoder (no feature transformation, no non-linearity, symmetric
normalisation) over the user-entity bipartite graph; the final representation is the mean of the
propagated layers ``1..L``, skipping the input embeddings as SimGCL does; two contrastive views
are made by adding, at every layer, a random vector of length eps with the sign of the embedding
(``delta = eps * sign(e) * normalize(U(0, 1))``); InfoNCE with cosine similarity and temperature
tau between the two views of the same node, over the batch's distinct users and, separately, its
distinct entities, weighted by lambda; L2 regularisation of the batch's input embeddings.
A.3: L2 1e-4, tau 0.2, 2 GNN layers, d = 64.

Choices: the recommendation loss is the entity-oriented binary cross-entropy of A.3
(:func:`peace.baselines.base.entity_loss`) over the batch's user-entity pairs, on the clean
(noise-free) propagation, where SimGCL uses BPR over user-item pairs; eps = 0.1; the L2 term is
the squared norm of the batch's users' and target entities' input rows divided by the batch size;
input embeddings are Xavier-uniform as in LightGCN. lambda = 3e-4 was chosen by the held-out
criterion on MovieLens-1M (benchmark configuration, 400 steps): at lambda = 0.1 the
contrastive gradient, which grows as 1 / |e| on the small propagated vectors of this dense graph,
outweighs the recommendation gradient so far that the held-out cross-entropy stays at chance
(0.693); 1e-3, 3e-4, 1e-4, 3e-5 and 0 gave 0.6868, 0.6856, 0.6856, 0.6858 and 0.6859. Keeping
the input layer in the mean (LightGCN's layers 0..L) gave 0.692 and is not used. Noise is drawn
from torch's global generator and only in training mode, so inference is deterministic.

This module also holds :class:`SymmetricGraph`, the fixed-pattern normalised adjacency with cheap
edge dropout and a symmetric sparse product that the graph competitors share.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from peace.baselines.base import SourceContext, TransferModel, entity_loss, info_nce
from peace.config import PeaceConfig


class _SymmetricProduct(torch.autograd.Function):
    """``A @ x`` for a symmetric sparse ``A``; the backward pass is ``A @ grad`` (no transpose)."""

    @staticmethod
    def forward(ctx, adjacency: Tensor, x: Tensor) -> Tensor:
        ctx.adjacency = adjacency
        return adjacency @ x

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[None, Tensor]:
        return None, ctx.adjacency @ grad.contiguous()


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
    """``[P, 2]`` user-entity edges in encoder-table node ids (users after the padding node)."""
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


def batch_nodes(batch: object, num_entities: int) -> tuple[Tensor, Tensor]:
    """The batch's distinct user nodes and distinct real target entities (table row ids)."""
    users = torch.unique(batch.users) + num_entities + 1
    entities = torch.unique(batch.targets[batch.valid])
    return users, entities[entities != num_entities]


def l2_penalty(ego: Tensor, batch: object, num_entities: int) -> Tensor:
    """Squared norm of the batch's users' and targets' input rows over the batch size."""
    users = ego[batch.users + num_entities + 1]
    targets = ego[batch.targets] * batch.valid.unsqueeze(-1)
    return (users.pow(2).sum() + targets.pow(2).sum()) / len(batch.users)


class SimGCL(TransferModel):
    """SimGCL on the user-entity graph: table ``[|E| + 1 + U, d]``, user vectors ``[B, d]``."""

    display_name = "SimGCL"
    reference = (
        "Yu et al., Are Graph Augmentations Necessary? Simple Graph Contrastive Learning for "
        "Recommendation, SIGIR 2022"
    )

    def __init__(
        self,
        ctx: SourceContext,
        cfg: PeaceConfig,
        layers: int = 2,
        eps: float = 0.1,
        cl_weight: float = 3e-4,
        cl_tau: float = 0.2,
        l2: float = 1e-4,
        skip_input: bool = True,
    ) -> None:
        super().__init__()
        self.num_entities = ctx.num_entities
        self.layers, self.eps, self.cl_weight, self.cl_tau, self.l2 = (
            layers,
            eps,
            cl_weight,
            cl_tau,
            l2,
        )
        self.skip_input = skip_input
        num_nodes = ctx.num_entities + 1 + ctx.num_users
        self.graph = SymmetricGraph(user_entity_pairs(ctx), num_nodes)
        self.embedding = NodeEmbedding(num_nodes, cfg.model.dim, ctx.pad)

    def _propagate(self, x: Tensor, views: int = 0) -> Tensor:
        """Mean of layers ``1..L``; with ``views`` > 0, ``x`` holds that many column blocks, each
        perturbed by its own sign-aligned uniform noise at every layer."""
        h, total = x, torch.zeros_like(x) if self.skip_input else x
        for _ in range(self.layers):
            h = symmetric_mm(self.graph.adjacency, h)
            if views:
                noise = torch.rand_like(h).view(len(h), views, -1)
                noise = F.normalize(noise, dim=-1).view_as(h) * self.eps
                h = h + torch.sign(h) * noise
            total = total + h
        return total / (self.layers if self.skip_input else self.layers + 1)

    def encoder_table(self, graph: object | None = None) -> Tensor:
        """Clean propagation ``[|E| + 1 + U, d]``; padding and isolated nodes are zero rows."""
        return self._propagate(self.embedding())

    def encode_users(self, table: Tensor, users: Tensor, tokens: Tensor, mask: Tensor) -> Tensor:
        return table[users + self.num_entities + 1]

    def pretrain_losses(self, table: Tensor, batch, tau: float, gamma: float) -> dict[str, Tensor]:
        users = self.encode_users(table, batch.users, batch.tokens, batch.mask)
        loss = entity_loss(users, table, batch)
        out = {"et": loss, "total": loss}
        if self.training:
            ego = self.embedding()
            views = self._propagate(torch.cat([ego, ego], 1), views=2)
            a, b = views.chunk(2, dim=1)
            user_nodes, entity_nodes = batch_nodes(batch, self.num_entities)
            cl = info_nce(a[user_nodes], b[user_nodes], self.cl_tau)
            if len(entity_nodes):
                cl = cl + info_nce(a[entity_nodes], b[entity_nodes], self.cl_tau)
            reg = l2_penalty(ego, batch, self.num_entities)
            out["total"] = loss + self.cl_weight * cl + self.l2 * reg
        return out

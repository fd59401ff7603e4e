"""Entity encoder: graph attention over the entity graph (Sec. 4.1, H^G).

Two GAT layers (A.3) over the entity graph G = {E, R} turn input entity vectors (learned id
embeddings, or a linear map of the original ``entity_features``) into H^G in R^{|E| x d}.
Relation types enter the attention as edge features; triplets are used in both directions unless
configured otherwise. With ``use_graph = False`` (ablation "w/o GL") the inputs are returned as they
are. The encoder runs either on the full graph or on a sampled subgraph around a batch's entities
(:class:`NeighbourSampler`), so very large graphs stay tractable.

Each layer is :class:`GraphAttention`: the graph attention layer of PyTorch Geometric's
``GATConv`` (Velickovic et al., with edge features; its parameters, their names and their
initialisation), computed per relation type and with the messages summed in one pass
(:func:`relational_attention`); a test checks values and gradients against the library's layer.
The library itself is not imported at run time (importing it takes seconds, every process).
"""

from __future__ import annotations

import copy
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn


class EntityGraph:
    """The entity graph as message-passing edges (source -> destination) with relation types.

    Args:
        triplets: ``[T, 3]`` head, relation, tail indices.
        num_entities: |E|.
        num_relations: |R|.
        undirected: add every triplet reversed too, with its own inverse relation type.
    """

    def __init__(
        self, triplets: np.ndarray, num_entities: int, num_relations: int, undirected: bool = True
    ) -> None:
        head, rel, tail = (torch.as_tensor(triplets[:, k], dtype=torch.long) for k in range(3))
        src, dst, types = [head], [tail], [rel]
        if undirected:
            src.append(tail)
            dst.append(head)
            types.append(rel + num_relations)
        src_t, dst_t, type_t = torch.cat(src), torch.cat(dst), torch.cat(types)
        order = torch.argsort(dst_t * (num_entities + 1) + src_t, stable=True)
        self.edge_index = torch.stack([src_t[order], dst_t[order]])
        self.edge_type = type_t[order]
        self.num_entities = num_entities
        self.num_edge_types = num_relations * (2 if undirected else 1)
        counts = torch.bincount(self.edge_index[1], minlength=num_entities)
        self.indptr = torch.zeros(num_entities + 1, dtype=torch.long)
        self.indptr[1:] = torch.cumsum(counts, 0)  # incoming edges of v: indptr[v]:indptr[v+1]

    def to(self, device: torch.device | str) -> EntityGraph:
        """The same graph with its edge tensors on ``device`` (self when already there)."""
        device = torch.device(device)
        if self.edge_index.device == device:
            return self
        moved = copy.copy(self)
        moved.edge_index = self.edge_index.to(device)
        moved.edge_type = self.edge_type.to(device)
        moved.indptr = self.indptr.to(device)
        return moved


class NeighbourSampler:
    """Samples the L-hop incoming neighbourhood of seed entities, ``fanout[l]`` edges per node.

    Plain torch; deterministic for a given ``torch.Generator``. Returns the subgraph's nodes
    (seeds first) and its edges in local indices.
    """

    def __init__(self, graph: EntityGraph, fanout: tuple[int, ...]) -> None:
        self.graph = graph
        self.fanout = tuple(fanout)

    def sample(
        self, seeds: Tensor, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        g = self.graph
        nodes = torch.unique(seeds)
        frontier = nodes
        edge_ids: list[Tensor] = []
        for fan in self.fanout:
            start, stop = g.indptr[frontier], g.indptr[frontier + 1]
            deg = stop - start
            if deg.sum() == 0:
                break
            # A node with at most ``fan`` incoming edges keeps them all; only the others draw.
            few = deg <= fan
            picked = [_edge_ranges(start[few], deg[few])[0]]
            if not bool(few.all()):
                eids, owner, rank = _edge_ranges(start[~few], deg[~few])
                keys = torch.rand(len(eids), generator=generator)
                order = torch.argsort(owner.double() + keys.double() * 0.5, stable=True)
                picked.append(eids[order][rank < fan])  # sorted by owner: the same ranks
            edge_ids.append(torch.cat(picked))
            new = torch.unique(g.edge_index[0, edge_ids[-1]])
            frontier = new[~torch.isin(new, nodes)]
            nodes = torch.cat([nodes, frontier])
        eid = torch.unique(torch.cat(edge_ids)) if edge_ids else torch.empty(0, dtype=torch.long)
        local = torch.full((g.num_entities,), -1, dtype=torch.long)
        local[nodes] = torch.arange(len(nodes))
        edge_index = local[g.edge_index[:, eid]]
        return nodes, edge_index, g.edge_type[eid]


def _edge_ranges(start: Tensor, deg: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Node i's edge ids ``start[i] .. start[i] + deg[i] - 1`` for every i, concatenated, with
    each id's node i and its position in that node's range."""
    owner = torch.repeat_interleave(torch.arange(len(deg)), deg)
    rank = torch.arange(len(owner)) - torch.repeat_interleave(torch.cumsum(deg, 0) - deg, deg)
    return start[owner] + rank, owner, rank


def aggregate(
    xs: Tensor, alpha: Tensor, src: Tensor, dst: Tensor, n_out: int | None = None
) -> Tensor:
    """Attention-weighted sum of messages, ``h[v, k] = sum over edges (u, v) of alpha[e, k] *
    xs[u, k]``: ``xs`` ``[N, H, C]``, ``alpha`` ``[E, H]`` -> ``[n_out, H, C]`` (``n_out``
    defaults to N; every ``dst`` must be below it).

    One weighted bag per (node, head) over the edges sorted by target (``embedding_bag`` with
    the attention as per-sample weights): gather, product and sum in one pass, without the
    ``[E, H, C]`` message tensor of gather-multiply-scatter, forwards and backwards.
    """
    n, heads, width = xs.shape
    m = n if n_out is None else n_out
    order = torch.argsort(dst, stable=True)
    head = torch.arange(heads, device=xs.device)
    # Bag k * m + v sums head k's messages into node v; row u * H + k of the table is xs[u, k].
    rows = (src[order].unsqueeze(0) * heads + head.unsqueeze(1)).reshape(-1)
    weights = alpha[order].T.reshape(-1)
    counts = torch.bincount(dst, minlength=m).repeat(heads)
    out = F.embedding_bag(
        rows,
        xs.reshape(n * heads, width),
        torch.cumsum(counts, 0) - counts,
        mode="sum",
        per_sample_weights=weights,
    )
    return out.view(heads, m, width).transpose(0, 1)


def edge_softmax(logits: Tensor, dst: Tensor, n: int) -> Tensor:
    """Softmax of edge logits ``[E, H]`` over each target node's incoming edges (the maximum,
    taken without gradient, is subtracted first; 1e-16 guards an empty sum)."""
    index = dst.unsqueeze(1).expand_as(logits)
    top = torch.full((n, logits.shape[1]), float("-inf"), dtype=logits.dtype, device=logits.device)
    top = top.scatter_reduce(0, index, logits.detach(), reduce="amax", include_self=True)
    e = (logits - top.index_select(0, dst)).exp()
    total = torch.zeros_like(top).index_add(0, dst, e) + 1e-16
    return e / total.index_select(0, dst)


def layer_sizes(edge_index: Tensor, outputs: int, layers: int) -> list[int]:
    """How many leading nodes each of ``layers`` GAT layers must compute so that the first
    ``outputs`` nodes' final encodings are exact.

    The last layer computes the ``outputs`` nodes; each earlier one also every source of an edge
    into the nodes of the layer after it. The nodes are assumed ordered by distance from the
    outputs, as :class:`NeighbourSampler` returns them (seeds, then each hop's new nodes), so each
    set is a prefix: its size is one past the largest index it needs.
    """
    src, dst = edge_index
    sizes = [outputs]
    for _ in range(layers - 1):
        into = dst < sizes[0]
        reach = int(src[into].max()) + 1 if bool(into.any()) else 0
        sizes.insert(0, max(sizes[0], reach))
    return sizes


class _Weight(nn.Module):
    """A bias-free linear map whose weight is set by :class:`GraphAttention` (``lin.weight``)."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_dim, in_dim))

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight)


def _glorot(t: Tensor) -> None:
    bound = math.sqrt(6.0 / (t.size(-2) + t.size(-1)))
    with torch.no_grad():
        t.uniform_(-bound, bound)


class GraphAttention(nn.Module):
    """One graph attention layer with relation types as edge features (``GATConv(dim, dim,
    heads, concat=False, edge_dim=dim or None)`` of PyTorch Geometric: the same parameters under
    the same names, initialised with the same random draws in the same order, so a seed gives
    the same model as with the library's layer).

    Shapes:
        ``forward(x [N, d], edge_index [2, E], edge_type [E], relation)`` -> ``[N, d]``;
        with ``n_out``, ``[n_out, d]`` (see :func:`relational_attention`).
    """

    negative_slope = 0.2
    dropout = 0.0
    concat = False

    def __init__(self, dim: int, heads: int = 1, edge_dim: int | None = None) -> None:
        super().__init__()
        self.heads, self.out_channels = heads, dim
        self.lin = _Weight(dim, heads * dim)
        _glorot(self.lin.weight)  # the library draws each weight when it is created, then again
        self.att_src = nn.Parameter(torch.empty(1, heads, dim))
        self.att_dst = nn.Parameter(torch.empty(1, heads, dim))
        self.lin_edge: _Weight | None = None
        self.att_edge: nn.Parameter | None = None
        if edge_dim is not None:
            self.lin_edge = _Weight(edge_dim, heads * dim)
            _glorot(self.lin_edge.weight)
            self.att_edge = nn.Parameter(torch.empty(1, heads, dim))
        self.bias = nn.Parameter(torch.empty(dim))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        _glorot(self.lin.weight)
        if self.lin_edge is not None:
            _glorot(self.lin_edge.weight)
        _glorot(self.att_src)
        _glorot(self.att_dst)
        if self.att_edge is not None:
            _glorot(self.att_edge)
        nn.init.zeros_(self.bias)

    def forward(
        self,
        x: Tensor,
        edge_index: Tensor,
        edge_type: Tensor,
        relation: nn.Embedding | None,
        n_out: int | None = None,
    ) -> Tensor:
        return relational_attention(self, x, edge_index, edge_type, relation, n_out)

    def __repr__(self) -> str:
        edge = "" if self.lin_edge is None else f", edge_dim={self.lin_edge.weight.shape[1]}"
        return f"GraphAttention({self.out_channels}, heads={self.heads}{edge})"


def relational_attention(
    conv: GraphAttention,
    x: Tensor,
    edge_index: Tensor,
    edge_type: Tensor,
    relation: nn.Embedding | None,
    n_out: int | None = None,
) -> Tensor:
    """One GAT layer, ``conv(x, edge_index, edge_attr=relation(edge_type))``, computed per
    relation type: the edge term of the attention, a_e . W_e r, depends on the edge's type alone,
    so it is computed once per type instead of once per edge (the per-edge projection was most of
    a pre-training step). Same parameters, same result up to float rounding.

    ``edge_index`` must hold no self loops; every node gets one, whose edge term is the mean of
    its incoming edges' terms (GATConv's ``fill_value="mean"``, which is linear in the edge
    features), or 0 without incoming edges.

    With ``n_out``, only the first ``n_out`` nodes are computed (``[n_out, d]``): ``edge_index``
    must then hold every incoming edge of those nodes and no other edge.
    """
    n = x.shape[0]
    m = n if n_out is None else n_out
    heads, out = conv.heads, conv.out_channels
    xs = conv.lin(x).view(n, heads, out)
    a_src = (xs * conv.att_src).sum(-1)  # [N, H]
    targets = xs if m == n else xs[:m]  # (no slice on the whole graph: the same autograd graph)
    a_dst = (targets * conv.att_dst).sum(-1)  # [m, H]
    src, dst = edge_index
    nodes = torch.arange(m, device=x.device)
    a_self = a_src if m == n else a_src[:m]
    alpha = torch.cat([a_src[src] + a_dst[dst], a_self + a_dst])  # edges, then self loops
    if relation is not None and conv.lin_edge is not None:
        per_type = (conv.lin_edge(relation.weight).view(-1, heads, out) * conv.att_edge).sum(-1)
        a_edge = per_type[edge_type]  # [E, H]
        total = torch.zeros(m, heads, dtype=a_edge.dtype, device=x.device)
        total = total.index_add(0, dst, a_edge)
        count = torch.bincount(dst, minlength=m).clamp(min=1).unsqueeze(1)
        alpha = alpha + torch.cat([a_edge, total / count])
    src_all, dst_all = torch.cat([src, nodes]), torch.cat([dst, nodes])
    alpha = F.leaky_relu(alpha, conv.negative_slope)
    alpha = edge_softmax(alpha, dst_all, m)
    alpha = F.dropout(alpha, conv.dropout, conv.training)
    h = aggregate(xs, alpha, src_all, dst_all, m)  # [m, H, C]
    h = h.mean(1) if not conv.concat else h.view(m, heads * out)
    return h + conv.bias if conv.bias is not None else h


class EntityEncoder(nn.Module):
    """Input entity vectors followed by ``layers`` GAT layers.

    Args:
        num_entities: |E|; row |E| of every output is a zero padding vector.
        num_edge_types: relation types seen by the attention (0 = none).
        dim: d.
        layers: GAT layers (A.3: 2).
        heads: attention heads per layer (averaged).
        feature_dim: width of original entity features, or None for learned id embeddings.
        use_graph: False skips message passing (ablation "w/o GL").
        inductive: entities marked private by :meth:`set_private` (those that stand for a single
            item, e.g. a movie's own graph node) share one learned input vector, so their
            encoding comes from their graph neighbourhood: a new domain's items, whose own nodes
            pre-training never sees, are then encoded by the same trained function as the
            source's, instead of from untrained id vectors.
        residual: each layer adds its messages to its input (x + GAT(x)) instead of replacing
            it, so an entity keeps its own vector and the graph refines it.
        unseen: with ``"zero"``, entities marked by :meth:`set_unseen` (linked to no source
            item) get a zero input outside training; ``"keep"`` leaves every input as it is.
        input_dropout: in training, each entity's input is zeroed with this probability at
            every step (the whole vector, not rescaled), as an unseen entity's is when served.
        degree_buckets: when > 0, every input adds a learned vector for the entity's degree
            bucket (floor(log2(1 + degree)), capped), set by :meth:`set_degrees`: attention
            averages messages, so without it an encoding cannot tell a richly described entity
            from a sparsely described one.

    Shapes:
        ``forward(graph) -> [|E| + 1, d]``; ``forward_subgraph(nodes, edge_index, edge_type)``
        ``-> [len(nodes), d]``, or ``[outputs, d]`` with ``outputs``.
    """

    def __init__(
        self,
        num_entities: int,
        num_edge_types: int,
        dim: int = 64,
        layers: int = 2,
        heads: int = 1,
        feature_dim: int | None = None,
        use_graph: bool = True,
        dropout: float = 0.0,
        inductive: bool = False,
        degree_buckets: int = 0,
        residual: bool = False,
        unseen: str = "keep",
        input_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if not 0.0 <= input_dropout < 1.0:
            raise ValueError(
                f"model.entity_dropout = {input_dropout!r}: expected a share in [0, 1), e.g. 0.2."
            )
        self.input_dropout = input_dropout
        if unseen not in ("keep", "zero"):
            raise ValueError(f"unseen entities {unseen!r}: expected keep or zero.")
        self.unseen_mode = unseen
        # Data about the entities (set_features, set_private, set_unseen, set_degrees): buffers
        # outside the state dict, so they follow the module to its device but are not weights.
        for name in ("features", "private", "unseen", "degree_bucket"):
            self.register_buffer(name, None, persistent=False)
        self.num_entities, self.dim, self.layers = num_entities, dim, layers
        self.num_edge_types, self.heads, self.feature_dim = num_edge_types, heads, feature_dim
        self.use_graph = use_graph
        self.residual = residual
        self.dropout = dropout
        if feature_dim is None:
            self.embedding = nn.Embedding(num_entities, dim)
            self.project = None
        else:
            self.embedding = None
            self.project = nn.Linear(feature_dim, dim)
        self.relation = nn.Embedding(max(num_edge_types, 1), dim) if num_edge_types else None
        edge_dim = dim if num_edge_types else None
        self.convs = nn.ModuleList(GraphAttention(dim, heads, edge_dim) for _ in range(layers))
        self.private_input = nn.Parameter(torch.empty(dim)) if inductive else None
        self.degree_embedding = nn.Embedding(degree_buckets, dim) if degree_buckets else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if self.embedding is not None:
            nn.init.normal_(self.embedding.weight, std=0.1)
        if self.relation is not None:
            nn.init.normal_(self.relation.weight, std=0.1)
        for conv in self.convs:
            conv.reset_parameters()
        if self.private_input is not None:
            nn.init.normal_(self.private_input, std=0.1)
        if self.degree_embedding is not None:
            nn.init.normal_(self.degree_embedding.weight, std=0.1)

    def _data(self, values: Tensor) -> Tensor:
        """``values`` on the device of the module's weights."""
        return values.to(next(self.parameters()).device)

    def set_features(self, features: np.ndarray | Tensor | None) -> None:
        """Original entity features [|E|, D] (kept outside the state dict: they are data)."""
        self.features = None if features is None else self._data(torch.as_tensor(features).float())

    def set_private(self, private: np.ndarray | Tensor | None) -> None:
        """``[|E|]`` bool: the entities that share one input vector when ``inductive`` (data,
        kept outside the state dict, like the features)."""
        self.private = (
            None if private is None else self._data(torch.as_tensor(private, dtype=torch.bool))
        )

    def set_unseen(self, unseen: np.ndarray | Tensor | None) -> None:
        """``[|E|]`` bool: entities linked to no source item (data, kept outside the state
        dict); used when ``unseen = "zero"``."""
        self.unseen = (
            None if unseen is None else self._data(torch.as_tensor(unseen, dtype=torch.bool))
        )

    def set_degrees(self, degree: np.ndarray | Tensor | None) -> None:
        """``[|E|]`` entity degrees in the graph (data, kept outside the state dict)."""
        if degree is None or self.degree_embedding is None:
            self.degree_bucket = None
            return
        deg = torch.as_tensor(degree, dtype=torch.float64)
        buckets = torch.floor(torch.log2(1.0 + deg)).long()
        self.degree_bucket = self._data(buckets.clamp(max=self.degree_embedding.num_embeddings - 1))

    def inputs(self, nodes: Tensor | None = None) -> Tensor:
        if self.embedding is not None:
            x = self.embedding.weight if nodes is None else self.embedding(nodes)
        else:
            assert self.features is not None, "entity features were not set (set_features)"
            x = self.project(self.features if nodes is None else self.features[nodes])
        if self.private_input is not None and self.private is not None:
            private = self.private if nodes is None else self.private[nodes]
            x = torch.where(private.unsqueeze(-1), self.private_input, x)
        if self.degree_embedding is not None and self.degree_bucket is not None:
            bucket = self.degree_bucket if nodes is None else self.degree_bucket[nodes]
            x = x + self.degree_embedding(bucket)
        if self.unseen_mode == "zero" and self.unseen is not None and not self.training:
            unseen = self.unseen if nodes is None else self.unseen[nodes]
            x = x.masked_fill(unseen.unsqueeze(-1), 0.0)
        if self.training and self.input_dropout > 0:
            drop = torch.rand(x.shape[0], device=x.device) < self.input_dropout
            x = x.masked_fill(drop.unsqueeze(-1), 0.0)
        return x

    def propagate(
        self, x: Tensor, edge_index: Tensor, edge_type: Tensor, outputs: int | None = None
    ) -> Tensor:
        """The GAT layers on inputs ``x`` ``[N, d]``; with ``outputs``, only the first
        ``outputs`` nodes' encodings are returned, and each layer computes only the nodes that
        the next ones read (:func:`layer_sizes`)."""
        if not self.use_graph or not self.convs:
            return x if outputs is None else x[:outputs]
        loops = edge_index[0] == edge_index[1]
        if bool(loops.any()):  # GATConv replaces a graph's own self loops by its own
            edge_index, edge_type = edge_index[:, ~loops], edge_type[~loops]
        sizes = (
            [None] * len(self.convs)
            if outputs is None
            else layer_sizes(edge_index, outputs, len(self.convs))
        )
        for k, (conv, m) in enumerate(zip(self.convs, sizes, strict=True)):
            ei, et = edge_index, edge_type
            if m is not None and m < x.shape[0]:
                keep = edge_index[1] < m
                ei, et = edge_index[:, keep], edge_type[keep]
            h = conv(x, ei, et, self.relation, m)
            if k < len(self.convs) - 1:
                h = F.elu(h)
                h = F.dropout(h, self.dropout, self.training)
            if self.residual:
                x = (x if h.shape[0] == x.shape[0] else x[: h.shape[0]]) + h
            else:
                x = h
        return x

    def forward(self, graph: EntityGraph) -> Tensor:
        h = self.propagate(self.inputs(), graph.edge_index, graph.edge_type)
        return torch.cat([h, h.new_zeros(1, self.dim)])

    def forward_subgraph(
        self, nodes: Tensor, edge_index: Tensor, edge_type: Tensor, outputs: int | None = None
    ) -> Tensor:
        """Encodings of a sampled subgraph's nodes (:class:`NeighbourSampler`), ``[len(nodes),
        d]``; with ``outputs``, of its first ``outputs`` nodes only (the seeds), ``[outputs,
        d]``, which skips the work on the outer nodes that the seeds' encodings do not read."""
        return self.propagate(self.inputs(nodes), edge_index, edge_type, outputs)

    def __repr__(self) -> str:
        return (
            f"EntityEncoder({self.num_entities}, {self.num_edge_types}, dim={self.dim}, "
            f"layers={self.layers}, heads={self.heads}, feature_dim={self.feature_dim}, "
            f"use_graph={self.use_graph}, dropout={self.dropout})"
        )

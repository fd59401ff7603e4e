"""PCRec (Wang et al., 2021): contrastive pre-training of a graph encoder for cross-domain use.

Followed: PCRec pre-trains a graph encoder on the source domain with self-supervised contrastive
learning in the manner of GCC: two randomly sampled subgraph instances around the same node form
a positive pair, the instances of other nodes are its negatives, and InfoNCE is minimised; the
pre-trained encoder then initialises the node representations used on the target domain. The
PEACE paper runs it with two backbones (Sec. 5.1.2, A.3), both here:

* :class:`PCRecL` (PCRec-L): LightGCN, 2 layers, layer combination weights alpha_k = 1/3 for
  layers 0, 1, 2, L2 regularisation 1e-4.
* :class:`PCRecD` (PCRec-D): a disentangled GNN with DisenGCN's neighbourhood routing
  (Ma et al., ICML 2019): 8 factors (channels of d / 8), 2 layers.

Choices: the graph is the user-entity bipartite graph of the pre-training positives (nodes in
the order of :class:`peace.baselines.graph.LayeredTable`); users are propagated from their
history at the query's time (:mod:`peace.baselines.graph`), so a user without a pre-training node
still gets a vector. The recommendation loss is the entity-oriented binary cross-entropy of A.3
(:func:`peace.baselines.base.entity_loss`) over the batch's user-entity pairs (PCRec fine-tunes
with BPR on user-item pairs), with L2 1e-4 on the batch's input rows (squared norms over the
batch size); the contrastive term (temperature 0.2) is taken over the batch's distinct users and,
separately, its distinct target entities, as in :mod:`peace.baselines.simgcl`. The subgraph
instances are made cheaply instead of by GCC's random walks with restart:

* PCRec-L: each view drops every interaction with probability 0.2, graph edges (both directions,
  propagated with the renormalised adjacency) and the users' history tokens alike; the
  recommendation loss uses the full graph.
* PCRec-D: a view samples 8 neighbours per node with replacement at every layer, as DisenGCN's
  own training does; a user samples 8 of its history tokens. The recommendation loss uses one
  such view of the whole graph; the second view of an entity is sampled only around the batch's
  nodes (their 2-hop sampled subgraph, as GCC samples a subgraph per query node), and each view
  of a user draws its own tokens over the first view's entity layers. At inference (eval mode)
  every neighbour is used; messages are averaged (weight 1 / sample size, or 1 / degree), so
  sampled training and full inference agree in scale.

The contrastive weight lambda was chosen by the held-out criterion on MovieLens-1M (benchmark
configuration, 400 steps, learning rate 0.005): a larger weight makes the cosine InfoNCE gradient,
which grows as 1 / |e| on the small propagated vectors of this dense graph, outweigh the
recommendation gradient. PCRec-L, lambda = 1e-4 (0, 1e-4, 3e-4, 1e-3, 0.1 gave 0.6709, 0.6686,
0.6700, 0.6768, 0.6931); PCRec-D, lambda = 1e-4 (0, 1e-4, 3e-4, 1e-3, 0.01 gave 0.6342, 0.6350,
0.6369, 0.6419, 0.6804): the non-zero weight with the lowest held-out loss. Randomness comes
from torch's global generator and only in training mode.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from peace.baselines.base import SourceContext
from peace.baselines.graph import (
    ContrastiveGraphModel,
    NodeEmbedding,
    batch_nodes,
)
from peace.baselines.options import PCRecDOptions, PCRecLOptions
from peace.baselines.routing import (
    Messages,
    _route_dense,
    message_blocks,
    neighbour_routing,
    uniform_blocks,
)
from peace.config import PeaceConfig


class _PCRec(ContrastiveGraphModel):
    """PCRec's pre-training: two subgraph views of the batch's users and entities per step.

    Subclasses set ``self.embedding`` and implement :meth:`encoder_table`,
    :meth:`encode_users` and :meth:`_view`.
    """

    def _view(
        self, table: Tensor, batch, rows: Tensor, entities: Tensor, first: bool
    ) -> tuple[Tensor, Tensor]:
        """One augmented view (training mode only): the users of batch ``rows`` ``[n, d]`` and
        the ``entities`` ``[m, d]``; ``first`` tells the two views of a step apart."""
        raise NotImplementedError

    def views(self, table: Tensor, batch) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        rows, entities = batch_nodes(batch, self.num_entities)
        users_a, entities_a = self._view(table, batch, rows, entities, first=True)
        users_b, entities_b = self._view(table, batch, rows, entities, first=False)
        return users_a, users_b, entities_a, entities_b, self.embedding()

    # the paper both backbones follow
    reference = (
        "Wang et al., Pre-training Graph Neural Network for Cross Domain Recommendation, 2021"
    )


class PCRecL(_PCRec):
    """PCRec with a LightGCN encoder; users from their history, vectors ``[B, d]``."""

    def __init__(
        self, ctx: SourceContext, cfg: PeaceConfig, options: PCRecLOptions = PCRecLOptions()
    ) -> None:
        super().__init__(ctx, options)
        self.drop_rate = options.drop_rate
        self.embedding = NodeEmbedding(self.num_nodes, cfg.model.dim, ctx.pad)

    def _table(self, adjacency: Tensor) -> Tensor:
        """sum_k alpha_k A^k x with alpha_k = 1 / (L + 1), k = 0..L, in the layered layout."""
        return self.mean_table(self.propagate(self.embedding(), adjacency))

    def encoder_table(self, graph: object | None = None) -> Tensor:
        return self._table(self.graph.adjacency)

    def encode_users(self, table: Tensor, users: Tensor, tokens: Tensor, mask: Tensor) -> Tensor:
        return torch.stack(self.layout.user_layers(table, users, tokens, mask)).mean(0)

    def _view(
        self, table: Tensor, batch, rows: Tensor, entities: Tensor, first: bool
    ) -> tuple[Tensor, Tensor]:
        """Every interaction dropped with probability ``drop_rate``: graph edges and the users'
        history tokens alike."""
        view = self._table(self.graph.dropped(self.drop_rate))
        mask = batch.mask[rows] & (torch.rand(batch.mask[rows].shape) >= self.drop_rate)
        users = self.encode_users(view, batch.users[rows], batch.tokens[rows], mask)
        return users, view[entities]

    # the name in result tables (the paper is the base class's)
    display_name = "PCRec-L"


class PCRecD(_PCRec):
    """PCRec with a disentangled (DisenGCN) encoder; users from their history, vectors ``[B, d]``.

    The input embeddings are projected by one linear map to K factors of d / K dimensions, each
    normalised (DisenGCN's first layer, here without a non-linearity so inner-product logits may
    be negative); every routing layer is parameter-free (3 routing iterations, routing
    temperature 1, no dropout) and its output feeds the next; the table is the last layer's
    factors concatenated (each factor unit-norm) times one learned scale, padding row zero.
    The routing weights are treated as constants of the backward pass (gradients flow through
    the messages, not through the choice of factor), which keeps the backward pass to one
    aggregation per layer; the forward values are DisenGCN's.
    """

    def __init__(
        self, ctx: SourceContext, cfg: PeaceConfig, options: PCRecDOptions = PCRecDOptions()
    ) -> None:
        super().__init__(ctx, options)
        dim, factors, iterations = cfg.model.dim, options.factors, options.iterations
        if dim % factors:
            raise ValueError(f"PCRec-D needs model.dim ({dim}) divisible by {factors} factors.")
        if iterations < 1:
            raise ValueError("PCRec-D needs at least one routing iteration.")
        self.factors, self.iterations, self.sample = factors, iterations, options.sample
        self.embedding = NodeEmbedding(self.num_nodes, dim, ctx.pad, init="normal")
        self.project = nn.Linear(dim, dim)
        # One learned output scale (rows start at unit norm) so that inner-product logits can be
        # calibrated; the factors themselves stay unit-norm as in DisenGCN.
        self.scale = nn.Parameter(torch.tensor(factors**-0.5))
        self._keep = self.embedding._keep
        g = self.graph
        self._full = Messages(
            g.src, g.dst, 1.0 / g.degree[g.dst], message_blocks(g.crow, self.BLOCK)
        )
        self._all_nodes = torch.arange(self.num_nodes)

    #: messages per routing block (tensors of about 4 MB at d = 64)
    BLOCK = 16384

    def _sample(self, centres: Tensor) -> tuple[Tensor, Tensor]:
        """``sample`` neighbours of each centre ``[r]``, with replacement (torch's global RNG).

        Returns senders ``[r * sample]`` (an isolated centre sends to itself) and weights
        ``[r * sample]`` (1 / sample; 0 for an isolated centre).
        """
        g = self.graph
        degree = g.degree.long()[centres, None]
        pick = (torch.rand(len(centres), self.sample) * degree).long()
        slot = (g.crow[centres, None] + pick).clamp(max=max(len(g.src) - 1, 0))
        senders = g.src[slot] if len(g.src) else centres[:, None].expand(-1, self.sample)
        senders = torch.where(degree > 0, senders, centres[:, None])
        weight = ((degree > 0).float() / self.sample).expand(-1, self.sample)
        return senders.flatten(), weight.flatten()

    def sampled_messages(self) -> Messages:
        """``sample`` sampled neighbours for every node (one random subgraph view)."""
        src, weight = self._sample(self._all_nodes)
        dst = self._all_nodes.repeat_interleave(self.sample)
        blocks = uniform_blocks(self.num_nodes, self.sample, self.BLOCK)
        return Messages(src, dst, weight, blocks, self.sample)

    def _factors(self, rows: Tensor | None = None) -> Tensor:
        """Input factors ``[N or r, K, D]``: projected input rows, unit-norm per factor."""
        x = self.embedding()
        x = self.project(x if rows is None else x[rows])
        return F.normalize(x.view(len(x), self.factors, -1), dim=-1)

    def _layers(self, messages: Messages) -> list[Tensor]:
        """Factors of layers ``0..L``, each ``[N, K, D]``."""
        z = [self._factors()]
        for _ in range(self.layers):
            z.append(neighbour_routing(z[-1], messages, self.iterations))
        return z

    def _user_neighbours(self, tokens: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """A user's senders ``[B, S]`` and their weights ``[B, S]``.

        In eval mode every history token (weight 1 / n); in training mode ``sample`` tokens drawn
        with replacement (weight 1 / sample), as the graph's nodes sample their neighbours. A
        user with no history gets weight 0 everywhere.
        """
        count = mask.sum(1, keepdim=True)
        if not self.training:
            return tokens, mask.float() / count.clamp(min=1)
        probs = mask.float() + (count == 0).float()  # no history: any position, weight 0
        pick = torch.multinomial(probs, self.sample, replacement=True)
        weights = ((count > 0).float() / self.sample).expand(-1, self.sample)
        return tokens.gather(1, pick), weights

    def encode_users(self, table: Tensor, users: Tensor, tokens: Tensor, mask: Tensor) -> Tensor:
        """Each layer routes the user's history entities of the layer below into its factors,
        starting from its own input factors (zero without a graph edge)."""
        tokens, weights = self._user_neighbours(tokens, mask)
        b, s = tokens.shape
        h = self.layout.user_inputs(table, users).view(b, self.factors, -1)
        for k in range(self.layers):
            rows = F.embedding(tokens, self.layout.layer(table, k))
            neigh = rows.view(b * s, self.factors, -1)
            h = _route_dense(h, neigh, weights.reshape(-1), s, self.iterations, 1.0)
        return h.flatten(1) * self.scale

    def subgraph_rows(self, nodes: Tensor) -> Tensor:
        """Rows ``[n, d]`` of a fresh sampled view, computed on the sampled subgraph of ``nodes``.

        Layer by layer from the top, each layer's receivers sample their senders; only the
        union of the receivers below is encoded, as GCC samples a subgraph per query node.
        """
        uniq, inverse = torch.unique(nodes, return_inverse=True)
        receivers, senders, weights = [uniq], [], []
        for _ in range(self.layers):
            src, weight = self._sample(receivers[0])
            senders.insert(0, src)
            weights.insert(0, weight)
            receivers.insert(0, torch.unique(torch.cat([receivers[0], src])))
        h = self._factors(receivers[0])
        for layer in range(1, self.layers + 1):
            below, here = receivers[layer - 1], receivers[layer]
            src = torch.searchsorted(below, senders[layer - 1])
            dst = torch.arange(len(here)).repeat_interleave(self.sample)
            blocks = uniform_blocks(len(here), self.sample, self.BLOCK)
            messages = Messages(src, dst, weights[layer - 1], blocks, self.sample)
            h = neighbour_routing(
                h, messages, self.iterations, centres=h[torch.searchsorted(below, here)]
            )
        return (h.flatten(1) * (self._keep[uniq] * self.scale))[inverse]

    def encoder_table(self, graph: object | None = None) -> Tensor:
        """Sampled neighbourhoods in training mode, every neighbour in eval mode."""
        z = self._layers(self.sampled_messages() if self.training else self._full)
        flat = [h.flatten(1) for h in z]
        return self.layout.pack(flat[-1] * (self._keep * self.scale), flat)

    def _view(
        self, table: Tensor, batch, rows: Tensor, entities: Tensor, first: bool
    ) -> tuple[Tensor, Tensor]:
        """Users: a fresh sample of their history tokens over the step's table (each view).
        Entities: the step's sampled table (first view) or a fresh sampled 2-hop subgraph
        around them (second view)."""
        users = self.encode_users(table, batch.users[rows], batch.tokens[rows], batch.mask[rows])
        return users, table[entities] if first else self.subgraph_rows(entities)

    # the name in result tables (the paper is the base class's)
    display_name = "PCRec-D"

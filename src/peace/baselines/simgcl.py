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
input embeddings are Xavier-uniform as in LightGCN. lambda = 1e-3 was chosen by the held-out
criterion on MovieLens-1M (benchmark configuration, 400 steps, learning rate 0.005): 0, 1e-4,
3e-4, 1e-3, 3e-3, 0.01 and 0.1 gave 0.6428, 0.6332, 0.6309, 0.6283, 0.6317, 0.6927 and 0.6929;
from 0.01 on, the contrastive gradient, which grows as 1 / |e| on the small propagated vectors
of this dense graph, outweighs the recommendation gradient so far that the held-out
cross-entropy stays at chance. Noise is drawn from torch's global generator and only in
training mode, so inference is deterministic.

Users are propagated from their history at the query's time (:mod:`peace.baselines.graph`):
user layer k is the normalised sum of the history entities' layer k - 1, so a user without a
pre-training node still gets a vector; the contrastive views of a user are made the same way from
the noisy entity layers, with the user's own noise added at every layer.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from peace.baselines.base import SourceContext
from peace.baselines.graph import (
    ContrastiveGraphModel,
    NodeEmbedding,
    batch_nodes,
    history_step,
    history_weights,
)
from peace.baselines.options import SimGCLOptions
from peace.config import PeaceConfig


class SimGCL(ContrastiveGraphModel):
    """SimGCL on the user-entity graph; users from their history, vectors ``[B, d]``."""

    def __init__(
        self, ctx: SourceContext, cfg: PeaceConfig, options: SimGCLOptions = SimGCLOptions()
    ) -> None:
        super().__init__(ctx, options)
        self.eps, self.skip_input = options.eps, options.skip_input
        self.embedding = NodeEmbedding(self.num_nodes, cfg.model.dim, ctx.pad)

    def _perturb(self, h: Tensor, views: int) -> Tensor:
        """``h`` plus sign-aligned uniform noise of length eps, per column block of ``views``."""
        noise = torch.rand_like(h).view(len(h), views, -1)
        noise = F.normalize(noise, dim=-1).view_as(h) * self.eps
        return h + torch.sign(h) * noise

    def _layers(self, x: Tensor, views: int = 0) -> list[Tensor]:
        """Layers ``0..L`` of the propagation of ``x``; with ``views`` > 0, ``x`` holds that many
        column blocks, each perturbed by its own noise at every layer from 1 on."""
        return self.propagate(x, perturb=(lambda h: self._perturb(h, views)) if views else None)

    def _combine(self, layers: list[Tensor]) -> Tensor:
        """Mean of layers ``1..L`` (or ``0..L`` without ``skip_input``)."""
        return torch.stack(layers[1:] if self.skip_input else layers).mean(0)

    def encoder_table(self, graph: object | None = None) -> Tensor:
        """Clean propagation in :class:`~peace.baselines.graph.LayeredTable`'s layout."""
        layers = self._layers(self.embedding())
        return self.layout.pack(self._combine(layers), layers)

    def encode_users(self, table: Tensor, users: Tensor, tokens: Tensor, mask: Tensor) -> Tensor:
        return self._combine(self.layout.user_layers(table, users, tokens, mask))

    def _user_views(self, views: list[Tensor], ego: Tensor, batch, rows: Tensor) -> Tensor:
        """Two noisy views ``[n, 2d]`` of the users of batch ``rows``, from the entity views."""
        tokens, users = batch.tokens[rows], batch.users[rows]
        weights = history_weights(batch.mask[rows], tokens, self.layout.inv_sqrt_degree)
        own = ego[users + self.num_entities + 1] * self.layout.warm[users]
        out = [torch.cat([own, own], 1)]
        for k in range(self.layers):
            step = history_step(views[k][: self.layout.rows], tokens, weights)
            out.append(self._perturb(step, 2))
        return self._combine(out)

    def views(self, table: Tensor, batch) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """Both views from one noisy propagation of the input rows, doubled column-wise."""
        ego = self.embedding()
        views = self._layers(torch.cat([ego, ego], 1), views=2)
        rows, entity_nodes = batch_nodes(batch, self.num_entities)
        users_a, users_b = self._user_views(views, ego, batch, rows).chunk(2, dim=1)
        entities_a, entities_b = self._combine(views)[entity_nodes].chunk(2, dim=1)
        return users_a, users_b, entities_a, entities_b, ego

    # the name in result tables, and the paper the model follows
    display_name = "SimGCL"
    reference = (
        "Yu et al., Are Graph Augmentations Necessary? Simple Graph Contrastive Learning for "
        "Recommendation, SIGIR 2022"
    )

"""Tiger (Zhuo et al., CIKM 2022): transferable interest graph embedding for zero-shot domains.

Followed: Tiger joins the source domains' collaborative data and a knowledge graph into one
interest graph of users, items and entities, and propagates it with a light GCN (normalised
neighbour sums, no transformation). Its observation is that the bottom GCN layers keep
domain-specific information while the upper layers carry transferable interest, so a user is
represented by its layers ``C..L`` (the C bottom layers are discarded), while items (here:
entities) keep every layer ``0..L``. A new domain's items reach users only through the shared
entities, which is what makes zero-shot scoring possible. A.3: 2 GNN layers, C = 1 (C is
Tiger's number of discarded bottom layers; with C = 1 the user's own input embedding, layer 0,
is left out of its representation).

Choices: nodes are entities ``0..|E|-1``, the padding node ``|E|``, users ``|E| + 1 ..`` (the
encoder-table order) and then the source items of the pre-training positives. Edges are the
user-item positives, each such item's entities (phi) and the knowledge graph's triplets taken as
undirected entity-entity edges (relation types and duplicates dropped); the adjacency is
D^-1/2 A D^-1/2. Target items are never nodes: like every model of the benchmark, an item is the
mean of its entities' rows (footnote 4), so a new target item gets a vector from its entities
alone and is scored zero-shot by the inner product with the user vector. Layers are averaged
(``1 / (L - C + 1)`` for users, ``1 / (L + 1)`` for entities). The recommendation loss is the
entity-oriented binary cross-entropy of A.3 (:func:`peace.baselines.base.entity_loss`) over the
batch's user-entity pairs (Tiger uses BPR over user-item pairs), with L2 1e-4 on the batch's
input rows. Users are propagated from their history at the query's time
(:mod:`peace.baselines.graph`): a user's neighbours are the entity tokens of its positive source
items (each item stands for its entities, as target items do), so user layer k is the normalised
sum of those entities' layer k - 1 in the interest graph, and a user without a pre-training node
still gets a vector. Tiger has no randomness beyond initialisation and batching.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from peace.baselines.base import SourceContext
from peace.baselines.graph import GraphModel, NodeEmbedding
from peace.baselines.options import TigerOptions
from peace.config import PeaceConfig


def interest_graph_pairs(ctx: SourceContext) -> tuple[np.ndarray, np.ndarray]:
    """Undirected edges of Tiger's interest graph and the item id of every item node.

    Returns:
        pairs ``[P, 2]`` distinct node pairs, and ``items`` ``[I_s]``: the dataset item ids of the
        item nodes ``|E| + 1 + U + j``, j = 0..I_s-1 (only items of ``ctx.user_items``).
    """
    num_e, num_u = ctx.num_entities, ctx.num_users
    ui = np.asarray(ctx.user_items, dtype=np.int64).reshape(-1, 2)
    items = np.unique(ui[:, 1])
    offset = num_e + 1 + num_u
    item_node = offset + np.searchsorted(items, ui[:, 1])
    user_item = np.stack([ui[:, 0] + num_e + 1, item_node], 1)
    ents = np.asarray(ctx.item_entities, dtype=np.int64)[items]  # [I_s, 3]
    rows = np.repeat(offset + np.arange(len(items)), ents.shape[1])
    flat = ents.reshape(-1)
    item_entity = np.stack([rows[flat >= 0], flat[flat >= 0]], 1)
    trip = np.asarray(ctx.triplets, dtype=np.int64).reshape(-1, 3)
    ee = np.sort(trip[:, [0, 2]], axis=1)
    ee = ee[ee[:, 0] != ee[:, 1]]
    pairs = [np.unique(p, axis=0) for p in (user_item, item_entity, ee) if len(p)]
    if not pairs:
        return np.zeros((0, 2), dtype=np.int64), items
    return np.concatenate(pairs), items


class Tiger(GraphModel):
    """Tiger's interest-graph GCN; users from their history, vectors ``[B, d]``.

    Attributes:
        items: ``[I_s]`` dataset ids of the source items that are nodes of the graph.
    """

    def __init__(
        self, ctx: SourceContext, cfg: PeaceConfig, options: TigerOptions = TigerOptions()
    ) -> None:
        layers, discarded = options.layers, options.discarded
        if not 0 <= discarded <= layers:
            raise ValueError(f"Tiger discards 0..{layers} bottom layers, not {discarded}.")
        pairs, items = interest_graph_pairs(ctx)
        super().__init__(ctx, options, pairs, extra_nodes=len(items))
        self.items, self.num_users, self.discarded = items, ctx.num_users, discarded
        self.embedding = NodeEmbedding(self.num_nodes, cfg.model.dim, ctx.pad)

    def encoder_table(self, graph: object | None = None) -> Tensor:
        """Entity rows: mean of layers ``0..L``, in :class:`LayeredTable`'s layout."""
        return self.mean_table(self.propagate(self.embedding()))

    def encode_users(self, table: Tensor, users: Tensor, tokens: Tensor, mask: Tensor) -> Tensor:
        """Mean of the user layers ``C..L``, propagated from the history."""
        layers = self.layout.user_layers(table, users, tokens, mask)
        return torch.stack(layers[self.discarded :]).mean(0)

    # the name in result tables, and the paper the model follows
    display_name = "Tiger"
    reference = (
        "Zhuo et al., Tiger: Transferable Interest Graph Embedding for Domain-Level Zero-Shot "
        "Recommendation, CIKM 2022"
    )

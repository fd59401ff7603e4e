"""The pre-trained models by name: PEACE and the ten competitors of Tables 2-3, in one registry.

Pre-training (:func:`peace.flows.pretrain.pretrain`) builds every model through
:func:`build_model`; the evaluation (``peace.eval``) reads the names and the setting each
competitor is evaluated in from here. The competitors themselves are in :mod:`peace.baselines`
(one file each, on the interface of :mod:`peace.baselines.base`); PEACE is
:class:`peace.nn.peace.PEACE`.
"""

from __future__ import annotations

import numpy as np

from peace.baselines import FINE_TUNED, ZERO_SHOT, build_competitor
from peace.baselines.base import SourceContext, TransferModel, build_context
from peace.config import PeaceConfig
from peace.data.dataset import Dataset
from peace.data.splits import kept_out_items
from peace.nn.entity_encoder import EntityGraph
from peace.nn.peace import PEACE

__all__ = [
    "COMPETITORS",
    "FINE_TUNED",
    "MODEL_NAMES",
    "PEACE_VARIANTS",
    "ZERO_SHOT",
    "Model",
    "SourceContext",
    "build_context",
    "build_model",
    "private_entities",
    "unseen_entities",
]

#: pre-trained competitors: normal setting only (Table 2); zero-shot competitors (Table 3)
COMPETITORS = FINE_TUNED + ZERO_SHOT
#: every model :func:`build_model` builds
MODEL_NAMES = ("PEACE", *COMPETITORS)

# name -> ModelConfig switches of the PEACE variants: the ablations of Sec. 5.3.1, and "Entity
# mean", the same flow with none of PEACE's encoders (no graph, no prototypes, one interest that
# is the plain mean of the user's history vectors): the simplest learned model of the task, which
# the architecture must beat. Every variant takes PEACE's searched values.
PEACE_VARIANTS: dict[str, dict[str, bool | int]] = {
    "PEACE": {},
    "PEACE w/o GL": {"use_graph": False},
    "PEACE w/o CPL": {"use_cpl": False},
    "PEACE w/o PEA": {"use_pea": False},
    "Entity mean": {
        "use_graph": False,
        "use_cpl": False,
        "use_pea": False,
        "interest_attention": False,
        "n_interests": 1,
        "recency": False,
    },
}

Model = PEACE | TransferModel
"""A pre-trained model: PEACE or a competitor (the interface of :mod:`peace.baselines.base`)."""


def build_model(
    ds: Dataset,
    cfg: PeaceConfig,
    architecture: str = "PEACE",
    context: SourceContext | None = None,
) -> tuple[Model, EntityGraph]:
    """PEACE, or the competitor ``architecture`` (a name of :data:`MODEL_NAMES`)."""
    triplets = ds.triplets
    share = cfg.model.graph_max_item_share
    if share != 1.0:  # hub_entities refuses a share outside (0, 1]
        hub = hub_entities(ds, share)
        triplets = triplets[~(hub[triplets[:, 0]] | hub[triplets[:, 2]])]
    graph = EntityGraph(triplets, ds.num_entities, ds.num_relations, cfg.model.undirected)
    if architecture != "PEACE":
        if context is None:
            raise ValueError(f"{architecture} is built from the pre-training records' context.")
        return build_competitor(architecture, context, cfg), graph
    feature_dim = None if ds.entity_features is None else ds.entity_features.shape[1]
    model = PEACE(ds.num_entities, graph.num_edge_types, cfg.model, feature_dim)
    model.entity_encoder.set_features(ds.entity_features)
    model.entity_encoder.set_private(private_entities(ds))
    model.entity_encoder.set_unseen(unseen_entities(ds, held_out_items(ds, cfg)))
    degree = np.bincount(ds.triplets[:, [0, 2]].reshape(-1), minlength=ds.num_entities)
    model.entity_encoder.set_degrees(degree)
    return model, graph


def hub_entities(ds: Dataset, max_item_share: float) -> np.ndarray:
    """``[|E|]`` bool: entities linked by a triplet to the own nodes (phi's rank 0) of more than
    ``max_item_share`` of the items and of at least phi's floor of items
    (``PhiRule.hub_min_items``; ``model.graph_max_item_share``)."""
    # imported here: the importers package costs every process ~20 ms at start-up otherwise
    from peace.data.importers.phi import PhiRule

    if not 0.0 < max_item_share <= 1.0:
        raise ValueError(
            f"model.graph_max_item_share = {max_item_share!r}: expected a share in (0, 1], "
            "e.g. 0.05 (1.0 keeps every edge)."
        )
    first = ds.item_entities[:, 0]
    items_of = np.bincount(first[first >= 0], minlength=ds.num_entities)  # items per own node
    head, tail = ds.triplets[:, 0], ds.triplets[:, 2]
    pairs = np.concatenate([np.stack([head, tail], 1), np.stack([tail, head], 1)])
    pairs = np.unique(pairs[items_of[pairs[:, 0]] > 0], axis=0)  # (own node, neighbour) once
    per_entity = np.bincount(pairs[:, 1], weights=items_of[pairs[:, 0]], minlength=ds.num_entities)
    return (per_entity > max_item_share * ds.num_items) & (per_entity >= PhiRule.hub_min_items)


def held_out_items(ds: Dataset, cfg: PeaceConfig) -> np.ndarray | None:
    """``[I]`` bool: the source items that ``pretrain.holdout_items`` keeps out of pre-training
    (fixed by the seed), or None when it keeps none."""
    share = cfg.pretrain.holdout_items
    return kept_out_items(ds, share, cfg.seed) if share > 0 else None


def unseen_entities(ds: Dataset, kept_out: np.ndarray | None = None) -> np.ndarray:
    """``[|E|]`` bool: entities that phi links to no item of a source domain (leaving out the
    ``kept_out`` items, which pre-training never sees)."""
    linked = np.zeros(ds.num_entities, dtype=bool)
    for d in ds.source_domains:
        items = ds.domain_items(d)
        if kept_out is not None:
            items = items[~kept_out[items]]
        ents = ds.item_entities[items]
        linked[ents[ents >= 0]] = True
    return ~linked


def private_entities(ds: Dataset) -> np.ndarray:
    """``[|E|]`` bool: entities that phi links to exactly one item."""
    ents = ds.item_entities[ds.item_entities >= 0]
    return np.bincount(ents, minlength=ds.num_entities) == 1

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
from peace.nn.entity_encoder import EntityGraph
from peace.nn.peace import PEACE

__all__ = [
    "COMPETITORS",
    "FINE_TUNED",
    "MODEL_NAMES",
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

Model = PEACE | TransferModel
"""A pre-trained model: PEACE or a competitor (the interface of :mod:`peace.baselines.base`)."""


def build_model(
    ds: Dataset,
    cfg: PeaceConfig,
    architecture: str = "PEACE",
    context: SourceContext | None = None,
) -> tuple[Model, EntityGraph]:
    """PEACE, or the competitor ``architecture`` (a name of :data:`MODEL_NAMES`)."""
    graph = EntityGraph(ds.triplets, ds.num_entities, ds.num_relations, cfg.model.undirected)
    if architecture != "PEACE":
        if context is None:
            raise ValueError(f"{architecture} is built from the pre-training records' context.")
        return build_competitor(architecture, context, cfg), graph
    feature_dim = None if ds.entity_features is None else ds.entity_features.shape[1]
    model = PEACE(ds.num_entities, graph.num_edge_types, cfg.model, feature_dim)
    model.entity_encoder.set_features(ds.entity_features)
    model.entity_encoder.set_private(private_entities(ds))
    model.entity_encoder.set_unseen(unseen_entities(ds))
    degree = np.bincount(ds.triplets[:, [0, 2]].reshape(-1), minlength=ds.num_entities)
    model.entity_encoder.set_degrees(degree)
    return model, graph


def unseen_entities(ds: Dataset) -> np.ndarray:
    """``[|E|]`` bool: entities that phi links to no item of a source domain."""
    linked = np.zeros(ds.num_entities, dtype=bool)
    for d in ds.source_domains:
        ents = ds.item_entities[ds.domain_items(d)]
        linked[ents[ents >= 0]] = True
    return ~linked


def private_entities(ds: Dataset) -> np.ndarray:
    """``[|E|]`` bool: entities that phi links to exactly one item."""
    ents = ds.item_entities[ds.item_entities >= 0]
    return np.bincount(ents, minlength=ds.num_entities) == 1

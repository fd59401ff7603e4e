"""phi, the map from items to at most 3 entities of the graph (DESIGN.md, decision 3), shared by
every importer.

:class:`PhiRule` says which entities an item gets (its own graph nodes, then ranked neighbours,
never hubs); :class:`EntityGraph` indexes the triplets (entity degrees, the neighbourhood of the
nodes items link to) and applies a rule; :func:`select_phi` maps a whole catalogue and says why
an item gets no entity (:class:`DropReasons`).
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Container, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pandas as pd

from peace.data.contract import MAX_ENTITIES_PER_ITEM, DataContractError
from peace.data.importers.files import load_toml
from peace.data.importers.report import ImportReport

K = TypeVar("K", bound=Hashable)


@dataclass(frozen=True)
class PhiRule:
    """How an item is mapped to at most 3 entities of the graph (DESIGN.md, decision 3).

    Rank 0.. are the item's own graph nodes (its MovieLens graph node, or its ``.link`` entities)
    when ``include_item_node``; then up to ``neighbours`` graph neighbours of those nodes, ranked by
    (relation priority, higher degree first, entity id). The degree of an entity is the number of
    triplets touching it: an entity shared by many items is what carries interest across domains.
    A first pass takes at most ``max_per_relation`` per relation; free slots are then filled in
    the same order. Neighbours whose degree is below ``min_degree`` and relations in
    ``skip_relations`` are never used. Relations missing from ``relation_priority`` come after the
    listed ones. Only entities that occur in the triplets are ever chosen.

    Hubs: a neighbour linked to more than ``max_item_share`` of all items (e.g. a genre shared by a
    fifth of the catalogue) says nothing about which of them a user prefers, and as a target of
    pre-training it turns positive and negative pairs into the same pair. Such entities are never
    picked; the import report lists them. ``max_item_share = 1.0`` turns the rule off. On a tiny
    catalogue a share says little, so an entity is a hub only when it is also linked to at least
    ``hub_min_items`` items.
    """

    include_item_node: bool = True
    neighbours: int = 2
    relation_priority: tuple[str, ...] = ()
    skip_relations: tuple[str, ...] = ()
    max_per_relation: int = 1
    min_degree: int = 2
    max_item_share: float = 0.05
    hub_min_items: int = 10

    @classmethod
    def from_table(cls, table: Any, where: str) -> PhiRule:
        """Build a rule from a ``[phi]`` TOML table; ``where`` names the file for errors."""
        if table is None:
            return cls()
        if not isinstance(table, dict):
            raise DataContractError(
                f"{where}: [phi] must be a table, e.g. '[phi]' followed by 'neighbours = 2'."
            )
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(table) - known)
        if unknown:
            raise DataContractError(
                f"{where}: [phi] has unknown key(s) {unknown}; the keys are {sorted(known)}."
            )
        values: dict[str, Any] = {}
        for key, value in table.items():
            if key == "include_item_node":
                if not isinstance(value, bool):
                    raise DataContractError(
                        f"{where}: [phi] include_item_node = {value!r}; set it to true or false."
                    )
            elif key == "max_item_share":
                if (
                    isinstance(value, bool)
                    or not isinstance(value, int | float)
                    or not (0.0 < value <= 1.0)
                ):
                    raise DataContractError(
                        f"{where}: [phi] max_item_share = {value!r}; give a share in (0, 1], "
                        "e.g. 0.05 (1.0 keeps hubs)."
                    )
                value = float(value)
            elif key in ("relation_priority", "skip_relations"):
                if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                    raise DataContractError(
                        f"{where}: [phi] {key} = {value!r}; give a list of relation names, "
                        'e.g. ["film.film.genre", "film.film.director"].'
                    )
                value = tuple(value)
            elif isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise DataContractError(
                    f"{where}: [phi] {key} = {value!r}; give a whole number >= 0."
                )
            values[key] = value
        rule = cls(**values)
        if rule.max_per_relation < 1:
            raise DataContractError(
                f"{where}: [phi] max_per_relation = 0 would pick nothing; give 1 or more."
            )
        if not rule.include_item_node and rule.neighbours == 0:
            raise DataContractError(
                f"{where}: [phi] include_item_node = false and neighbours = 0 leave every item "
                "without an entity; allow one of them."
            )
        return rule

    @classmethod
    def from_toml(cls, path: str | Path) -> PhiRule:
        """Read the ``[phi]`` table of a TOML file (other tables are ignored)."""
        path = Path(path)
        return cls.from_table(load_toml(path).get("phi"), str(path))


class EntityGraph:
    """The triplets, with entity degrees and the neighbourhood of the nodes that items link to."""

    def __init__(self, triplets: pd.DataFrame, anchors: Iterable[str]) -> None:
        heads = triplets["head"].to_numpy(dtype=object)
        tails = triplets["tail"].to_numpy(dtype=object)
        rels = triplets["relation"].to_numpy(dtype=object)
        counts = pd.Series(np.concatenate([heads, tails])).value_counts(sort=False)
        self.degree: dict[str, int] = {str(k): int(v) for k, v in counts.items()}
        anchor_set = set(anchors)
        self.num_anchors = len(anchor_set)
        self.adjacency: dict[str, list[tuple[str, str]]] = {}
        head_mask = triplets["head"].isin(anchor_set).to_numpy()
        tail_mask = triplets["tail"].isin(anchor_set).to_numpy()
        for node, rel, other in zip(
            heads[head_mask], rels[head_mask], tails[head_mask], strict=True
        ):
            self.adjacency.setdefault(node, []).append((rel, other))
        for node, rel, other in zip(
            tails[tail_mask], rels[tail_mask], heads[tail_mask], strict=True
        ):
            self.adjacency.setdefault(node, []).append((rel, other))
        linked: dict[str, set[str]] = {}
        for node, edges in self.adjacency.items():
            for _, other in edges:
                linked.setdefault(other, set()).add(node)
        self.item_links: dict[str, int] = {e: len(nodes) for e, nodes in linked.items()}
        """How many item nodes each neighbour entity is linked to."""
        self._hub_cache: dict[PhiRule, set[str]] = {}

    def __contains__(self, entity: object) -> bool:
        return entity in self.degree

    def hubs(self, rule: PhiRule) -> dict[str, float]:
        """Entities linked to more than ``rule.max_item_share`` of the items, with their share."""
        if rule.max_item_share >= 1.0 or self.num_anchors == 0:
            return {}
        return {
            e: n / self.num_anchors
            for e, n in sorted(self.item_links.items())
            if n / self.num_anchors > rule.max_item_share and n >= rule.hub_min_items
        }

    def select(self, nodes: Sequence[str], rule: PhiRule) -> list[str]:
        """The entities of one item, rank 0 first, by ``rule``; ``nodes`` are its own nodes."""
        own = [n for n in dict.fromkeys(nodes) if n in self.degree]
        chosen = own[:MAX_ENTITIES_PER_ITEM] if rule.include_item_node else []
        room = min(rule.neighbours, MAX_ENTITIES_PER_ITEM - len(chosen))
        if room <= 0:
            return chosen
        priority = {rel: i for i, rel in enumerate(rule.relation_priority)}
        skip = set(rule.skip_relations)
        hubs = self._hub_cache.get(rule)
        if hubs is None:
            hubs = self._hub_cache[rule] = set(self.hubs(rule))
        taken = set(own) | hubs
        best: dict[str, tuple[int, int, str, str]] = {}
        for node in own:
            for rel, other in self.adjacency.get(node, ()):
                if other in taken or rel in skip:
                    continue
                degree = self.degree[other]
                if degree < rule.min_degree:
                    continue
                key = (priority.get(rel, len(priority)), -degree, other, rel)
                if other not in best or key < best[other]:
                    best[other] = key
        ranked = sorted(best.values())
        picked: list[str] = []
        per_relation: Counter[str] = Counter()
        for _, _, entity, rel in ranked:
            if len(picked) == room:
                break
            if per_relation[rel] < rule.max_per_relation:
                picked.append(entity)
                per_relation[rel] += 1
        for _, _, entity, _ in ranked:
            if len(picked) == room:
                break
            if entity not in picked:
                picked.append(entity)
        return chosen + picked


def phi_graph(
    triplets: pd.DataFrame, anchors: Iterable[str], rule: PhiRule, report: ImportReport
) -> EntityGraph:
    """The :class:`EntityGraph` of ``triplets`` around the items' own nodes ``anchors``; the
    report notes the relations ``rule`` names that the graph lacks, and the hubs it skips."""
    graph = EntityGraph(triplets, anchors)
    note_unknown_relations(rule, triplets, report)
    note_hubs(graph, rule, report)
    return graph


def note_hubs(graph: EntityGraph, rule: PhiRule, report: ImportReport) -> None:
    """Record the hub entities that ``rule`` keeps out of phi, most linked first."""
    hubs = graph.hubs(rule)
    report.phi_hubs = {e: round(s, 4) for e, s in sorted(hubs.items(), key=lambda kv: -kv[1])}
    if hubs:
        top = ", ".join(f"{e} ({s:.0%})" for e, s in list(report.phi_hubs.items())[:5])
        report.notes.append(
            f"phi skips {len(hubs)} hub entit{'y' if len(hubs) == 1 else 'ies'} linked to more "
            f"than {rule.max_item_share:.0%} of the items: {top}"
            + (" ..." if len(hubs) > 5 else "")
        )


def note_unknown_relations(rule: PhiRule, triplets: pd.DataFrame, report: ImportReport) -> None:
    """Note relations named by ``rule`` that the graph does not have (a likely typo)."""
    named = [*rule.relation_priority, *rule.skip_relations]
    unknown = sorted(set(named) - set(triplets["relation"].unique()))
    if unknown:
        report.notes.append(f"phi rule names relation(s) not in the graph: {unknown}")


def phi_table(entities: Mapping[str, list[str]]) -> pd.DataFrame:
    """The ``item_entities`` table (item, entity, rank) of item -> ranked entities."""
    items = [item for item, ents in entities.items() for _ in ents]
    ents = [e for chosen in entities.values() for e in chosen]
    ranks = [r for chosen in entities.values() for r in range(len(chosen))]
    return pd.DataFrame(
        {"item": items, "entity": ents, "rank": np.array(ranks, dtype=np.int64)},
        columns=["item", "entity", "rank"],
    )


@dataclass(frozen=True)
class DropReasons:
    """Why an item of a catalogue gets no entity, in an import report's words."""

    no_domain: str
    """The item has no domain."""
    no_nodes: str
    """The item links to no graph node."""
    unlinked: str
    """None of the item's nodes is in a triplet."""
    empty: str
    """The rule picks no entity for it."""


def select_phi(
    graph: EntityGraph,
    rule: PhiRule,
    items: Iterable[K],
    domain_of: Container[K],
    nodes_of: Mapping[K, Sequence[str]],
    reasons: DropReasons,
) -> tuple[dict[K, list[str]], dict[K, str]]:
    """phi of every item of ``items`` (in order), and why the others have none.

    ``nodes_of`` maps an item to its own graph nodes. Returns item -> ranked entities and
    item -> reason.
    """
    entities_of: dict[K, list[str]] = {}
    reason_of: dict[K, str] = {}
    for item in items:
        if item not in domain_of:
            reason_of[item] = reasons.no_domain
        elif item not in nodes_of:
            reason_of[item] = reasons.no_nodes
        elif not any(n in graph for n in nodes_of[item]):
            reason_of[item] = reasons.unlinked
        else:
            chosen = graph.select(nodes_of[item], rule)
            if chosen:
                entities_of[item] = chosen
            else:
                reason_of[item] = reasons.empty
    return entities_of, reason_of

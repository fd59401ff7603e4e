"""The planted world: concepts, their super-categories and the entity graph with its noise.

Entity indices are internal (super-categories, then each concept's hubs, then leaves sorted by
concept, then generic entities); the public entity ids are shuffled labels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from peace.data.synthetic.draws import shuffled_labels, uniform_in, zipf_weights
from peace.data.synthetic.params import (
    BRAND_EVERY,
    CATEGORY_MISLABEL,
    GENERIC_FRACTION,
    HUBS_PER_CONCEPT,
    MIN_LEAVES_PER_CONCEPT,
    NOISE_EDGE_SHARE,
    RELATIONS,
    TARGET_LEAF_SHARE,
    SyntheticSize,
)


@dataclass
class World:
    """Concepts and the entity graph (entity indices are internal, labels are shuffled)."""

    n_groups: int
    concept_group: np.ndarray  # (C,) super-category of each concept
    concept_pop: np.ndarray  # (C,) how many users are drawn to each concept
    n_entities: int
    hub0: int  # index of the first hub; hub j of concept c is hub0 + c * H + j
    leaf_concept: np.ndarray  # (L,) concept of each leaf, leaves sorted by concept
    leaf0: int  # index of the first leaf
    leaf_start: np.ndarray  # (C,) first leaf of each concept (leaf-local)
    leaf_end: np.ndarray  # (C,)
    pool_start: np.ndarray  # (2C,) leaf-local segments: 2c = source-leaning, 2c+1 = target-leaning
    pool_end: np.ndarray
    leaf_cum: np.ndarray  # (L,) cumulative popularity of leaves within the layout
    generic0: int
    n_generic: int
    triplets: np.ndarray  # (E, 3) head, relation, tail
    labels: np.ndarray  # (n_entities,) public ids


def build_world(spec: SyntheticSize, rng: np.random.Generator) -> World:
    """Concepts, their super-categories and the entity graph with its noise."""
    n_c = spec.n_concepts
    n_groups = max(2, n_c // 4)
    concept_group = rng.permutation(n_c) % n_groups
    concept_pop = zipf_weights(n_c, 0.6, rng)

    hub0 = n_groups
    leaf0 = hub0 + n_c * HUBS_PER_CONCEPT
    n_generic = max(8, round(GENERIC_FRACTION * spec.n_entities))
    n_leaves = spec.n_entities - leaf0 - n_generic
    if n_leaves < MIN_LEAVES_PER_CONCEPT * n_c:  # pragma: no cover - guards the SIZES table
        raise ValueError(f"size {spec.name!r} has too few entities for {n_c} concepts")
    generic0 = leaf0 + n_leaves

    share = rng.lognormal(0.0, 0.5, n_c) * concept_pop**0.3
    per_concept = MIN_LEAVES_PER_CONCEPT + rng.multinomial(
        n_leaves - MIN_LEAVES_PER_CONCEPT * n_c, share / share.sum()
    )
    leaf_end = np.cumsum(per_concept)
    leaf_start = leaf_end - per_concept
    leaf_concept = np.repeat(np.arange(n_c), per_concept)
    local = np.arange(n_leaves) - leaf_start[leaf_concept]
    n_target_pool = np.maximum(1, np.round(TARGET_LEAF_SHARE * per_concept)).astype(np.int64)
    pool_start = np.empty(2 * n_c, dtype=np.int64)
    pool_end = np.empty(2 * n_c, dtype=np.int64)
    pool_start[0::2], pool_end[0::2] = leaf_start, leaf_end - n_target_pool
    pool_start[1::2], pool_end[1::2] = leaf_end - n_target_pool, leaf_end

    # Leaf popularity: Zipf within each concept, in a random order.
    within_rank = np.empty(n_leaves, dtype=np.int64)
    order = np.lexsort((rng.random(n_leaves), leaf_concept))
    within_rank[order] = np.arange(n_leaves) - leaf_start[leaf_concept[order]]
    leaf_cum = np.cumsum((within_rank + 1.0) ** -0.8)

    leaves = np.arange(n_leaves)
    group_order = np.argsort(concept_group, kind="stable")  # concepts sorted by group
    group_end = np.cumsum(np.bincount(concept_group, minlength=n_groups))
    group_start = group_end - np.bincount(concept_group, minlength=n_groups)

    def leaf_of(concepts: np.ndarray) -> np.ndarray:
        return leaf0 + uniform_in(leaf_start[concepts], leaf_end[concepts], rng)

    def concept_near(concepts: np.ndarray) -> np.ndarray:
        g = concept_group[concepts]
        return group_order[uniform_in(group_start[g], group_end[g], rng)]

    edges = []
    rel = {name: r for r, name in enumerate(RELATIONS)}
    # category: each leaf -> one hub of its concept (a few point at another concept's hub).
    cat_concept = np.where(
        rng.random(n_leaves) < CATEGORY_MISLABEL, rng.integers(0, n_c, n_leaves), leaf_concept
    )
    hub = hub0 + cat_concept * HUBS_PER_CONCEPT + rng.integers(0, HUBS_PER_CONCEPT, n_leaves)
    edges.append((leaf0 + leaves, rel["category"], hub))
    # subcategory_of: hub j > 0 -> the root hub; the root -> its super-category.
    hubs = np.arange(n_c * HUBS_PER_CONCEPT)
    hub_concept, hub_j = np.divmod(hubs, HUBS_PER_CONCEPT)
    sub = hub_j > 0
    edges.append(
        (hub0 + hubs[sub], rel["subcategory_of"], hub0 + hub_concept[sub] * HUBS_PER_CONCEPT)
    )
    roots = np.arange(n_c)
    edges.append((hub0 + roots * HUBS_PER_CONCEPT, rel["subcategory_of"], concept_group))
    # brand_of: each brand leaf -> two leaves of its concept.
    brands = leaves[local % BRAND_EVERY == 0].repeat(2)
    edges.append((leaf0 + brands, rel["brand_of"], leaf_of(leaf_concept[brands])))
    # related_to: each leaf -> a leaf of its concept, or of a concept of the same super-category.
    near = np.where(rng.random(n_leaves) < 0.8, leaf_concept, concept_near(leaf_concept))
    edges.append((leaf0 + leaves, rel["related_to"], leaf_of(near)))
    # co_occurs: behavioural co-occurrence across concepts of a super-category, or anywhere.
    some = leaves[rng.random(n_leaves) < 0.3]
    other = np.where(
        rng.random(len(some)) < 0.7,
        concept_near(leaf_concept[some]),
        rng.integers(0, n_c, len(some)),
    )
    edges.append((leaf0 + some, rel["co_occurs"], leaf_of(other)))
    generics = generic0 + np.arange(n_generic).repeat(3)
    edges.append((generics, rel["co_occurs"], leaf_of(rng.integers(0, n_c, len(generics)))))

    head = np.concatenate([e[0] for e in edges])
    relation = np.concatenate([np.full(len(e[0]), e[1]) for e in edges])
    tail = np.concatenate([e[2] for e in edges])
    # noise: uniformly random pairs of entities, as a share of the structured edges.
    n_noise = round(NOISE_EDGE_SHARE * len(head))
    head = np.concatenate([head, rng.integers(0, spec.n_entities, n_noise)])
    relation = np.concatenate([relation, np.full(n_noise, rel["noise"])])
    tail = np.concatenate([tail, rng.integers(0, spec.n_entities, n_noise)])

    keep = head != tail
    head, relation, tail = head[keep], relation[keep], tail[keep]
    key = (head * len(RELATIONS) + relation) * spec.n_entities + tail
    _, first = np.unique(key, return_index=True)
    first.sort()
    triplets = np.stack([head[first], relation[first], tail[first]], axis=1).astype(np.int64)

    return World(
        n_groups=n_groups,
        concept_group=concept_group,
        concept_pop=concept_pop,
        n_entities=spec.n_entities,
        hub0=hub0,
        leaf_concept=leaf_concept,
        leaf0=leaf0,
        leaf_start=leaf_start,
        leaf_end=leaf_end,
        pool_start=pool_start,
        pool_end=pool_end,
        leaf_cum=leaf_cum,
        generic0=generic0,
        n_generic=n_generic,
        triplets=triplets,
        labels=shuffled_labels("e", spec.n_entities, rng),
    )

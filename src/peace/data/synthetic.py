"""A synthetic online service platform: the default dataset of the library.

The generator plants a known structure that PEACE is meant to recover: latent *concepts* (think
"hotels", "hot pot", "car rental") own the entities of an entity graph, items of every domain are
tied to a concept through their entities, and users pick items of the concepts they are interested
in, in every domain alike. Source domains (``payment``, ``feed``, ``search``) are large and cover
the whole period; target domains (``travel``, ``rental``, ``dining``) launch later, are sparse,
cover a biased subset of the concepts and describe their items mostly with entities that source
items rarely use, so the entity graph is the bridge between the two. The full generative story is
in ``docs/synthetic.md``.

Everything is drawn from :func:`numpy.random.default_rng` generators derived from one
:class:`numpy.random.SeedSequence`, so a seed fixes every table. Interactions are generated and
written in chunks of users with :class:`pyarrow.parquet.ParquetWriter`, so the ``large`` size
streams to disk with modest memory.

Example::

    from peace.data.synthetic import generate

    summary = generate("data/synth-small", seed=0, size="small")
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from peace.data.contract import OPTIONAL_TABLES, REQUIRED_TABLES, write_table

__all__ = [
    "RELATIONS",
    "SIZES",
    "SOURCE_DOMAINS",
    "TARGET_DOMAINS",
    "SyntheticSize",
    "generate",
]

SOURCE_DOMAINS: tuple[str, ...] = ("payment", "feed", "search")
TARGET_DOMAINS: tuple[str, ...] = ("travel", "rental", "dining")
RELATIONS: tuple[str, ...] = (
    "category",
    "subcategory_of",
    "brand_of",
    "related_to",
    "co_occurs",
    "noise",
)

EPOCH = 1_672_531_200  # 2023-01-01 00:00:00 UTC, the first second of the period
DAY = 86_400
PERIOD_DAYS = 60
TARGET_LAUNCH_DAYS: tuple[int, ...] = (30, 33, 36)

HUBS_PER_CONCEPT = 3  # hub 0 is the concept's root category
MIN_LEAVES_PER_CONCEPT = 4
GENERIC_FRACTION = 0.04  # generic entities ("discount", "new", ...) tied to no concept
BRAND_EVERY = 4  # one leaf in four is a brand
TARGET_LEAF_SHARE = 0.3  # share of a concept's leaves that lean towards target items
CATEGORY_MISLABEL = 0.02  # share of "category" edges that point at another concept's hub
NOISE_EDGE_SHARE = 0.08  # "noise" edges, as a share of the structured edges

SOURCE_POOL_BIAS = 0.85  # source items take leaves from the source-leaning pool this often
TARGET_POOL_BIAS = 0.7  # target items take leaves from the target-leaning pool this often
ENTITIES_PER_ITEM_P = (0.15, 0.35, 0.5)  # P(|phi(i)| = 1, 2, 3)
HUB_IN_SLOT1 = 0.5  # rank 1 is the concept's category hub this often, else another leaf
NOISY_SLOT = 0.1  # ranks 1 and 2 are a random (generic or unrelated) entity this often
TARGET_COVERAGE = 0.5  # share of the concepts a target domain's catalogue covers
SOURCE_ZIPF = 0.9  # item popularity exponent in source domains
TARGET_ZIPF = 0.8

INTERESTS_P = (0.3, 0.4, 0.3)  # P(a user has 2, 3, 4 interest concepts)
SAME_GROUP_BOOST = 3.0  # extra interests favour the super-category of the first one
P_INTEREST = 0.8  # an interaction follows the user's interests, else item popularity
DRIFT_SIGMA = 0.5  # log-normal drift of the interest weights from the first to the last day
ACTIVITY_SIGMA = 0.7
SOURCE_PARTICIPATION = 0.75
NEWCOMER_FRACTION = 0.03  # users with no source history who arrive through a target domain
N_REGIONS = 8

AGE_BANDS = np.array(["18-24", "25-34", "35-44", "45-54", "55+"], dtype=object)
PRICE_LEVELS = np.array(["low", "mid", "high", "premium"], dtype=object)

_INTERACTION_SCHEMA = pa.schema(
    [
        ("user", pa.string()),
        ("item", pa.string()),
        ("domain", pa.string()),
        ("timestamp", pa.int64()),
        ("label", pa.int8()),
    ]
)


@dataclass(frozen=True)
class SyntheticSize:
    """The scale of one synthetic platform.

    Attributes:
        name: ``small``, ``medium`` or ``large``.
        n_concepts: planted concepts C.
        n_users: users, shared by all domains.
        n_entities: entities of the graph (super-categories, hubs, leaves and generic ones).
        source_items: items of each source domain.
        target_items: items of each target domain.
        source_rate: mean item draws of a participating user in one source domain.
        target_rate: mean item draws of a participating user in one target domain.
        target_participation: base probability that a user visits one target domain.
        chunk_users: users generated and written together.
    """

    name: str
    n_concepts: int
    n_users: int
    n_entities: int
    source_items: int
    target_items: int
    source_rate: float
    target_rate: float
    target_participation: float
    chunk_users: int


SIZES: dict[str, SyntheticSize] = {
    "small": SyntheticSize("small", 24, 1_800, 2_000, 360, 120, 28.0, 8.0, 0.36, 50_000),
    "medium": SyntheticSize("medium", 64, 20_000, 20_000, 2_500, 500, 28.0, 6.0, 0.33, 50_000),
    "large": SyntheticSize("large", 256, 500_000, 300_000, 30_000, 5_000, 11.0, 3.5, 0.3, 25_000),
}


@dataclass
class _World:
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


@dataclass
class _Domain:
    """One domain's catalogue and what is needed to sample its items."""

    name: str
    role: str
    start: int  # first second (relative to EPOCH) of the domain's activity
    item_offset: int  # global index of the domain's first item
    item_concept: np.ndarray  # (n,) concept of each item, sorted
    concept_start: np.ndarray  # (C,) first item of each concept (domain-local)
    concept_end: np.ndarray
    covered: np.ndarray  # (C,) bool, the domain has items of the concept
    cum: np.ndarray  # (n,) cumulative popularity in the sorted order
    popularity: np.ndarray  # (n,) normalised popularity


def generate(out: str | Path, seed: int = 0, size: str = "small", progress: bool = False) -> dict:
    """Generate a synthetic service platform and write it to ``out`` in the data contract.

    Args:
        out: folder to write ``interactions``, ``domains``, ``item_entities``, ``triplets``,
            ``user_profiles`` and ``item_profiles`` to (Parquet); created if missing.
        seed: seed of every random draw; the same seed gives identical tables.
        size: ``small`` (seconds on a laptop), ``medium`` (~1M interactions) or ``large``
            (millions of interactions, streamed to disk).
        progress: print the stages and their timings to standard error.

    Returns:
        ``{"size", "seed", "users", "entities", "triplets", "items": {domain: n},
        "interactions": {domain: n}}``.

    Raises:
        ValueError: ``size`` is not one of :data:`SIZES`, or ``seed`` is negative.
    """
    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}; valid sizes are {', '.join(SIZES)}.")
    if int(seed) < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed}.")
    spec = SIZES[size]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    clock = _Clock(progress)

    graph_seq, catalog_seq, user_seq, concept_seq = np.random.SeedSequence(int(seed)).spawn(4)
    world = _build_world(spec, np.random.default_rng(graph_seq))
    clock.tick(f"entity graph: {world.n_entities} entities, {len(world.triplets)} triplets")

    traits = _concept_traits(spec.n_concepts, np.random.default_rng(concept_seq))
    domains, item_entities, item_profiles = _build_catalog(
        spec, world, traits, np.random.default_rng(catalog_seq)
    )
    n_items = sum(len(d.item_concept) for d in domains)
    item_labels = _labels("i", n_items, np.random.default_rng(catalog_seq.spawn(1)[0]))
    clock.tick(f"catalogue: {n_items} items over {len(domains)} domains")

    counts = {d.name: 0 for d in domains}
    user_frames = []
    user_labels = _labels("u", spec.n_users, np.random.default_rng(user_seq.spawn(1)[0]))
    user_labels_pa = pa.array(user_labels, type=pa.string())
    item_labels_pa = pa.array(item_labels, type=pa.string())
    domain_names_pa = pa.array([d.name for d in domains], type=pa.string())
    starts = list(range(0, spec.n_users, spec.chunk_users))
    chunk_seqs = user_seq.spawn(len(starts))
    with pq.ParquetWriter(out / "interactions.parquet", _INTERACTION_SCHEMA) as writer:
        for k, (lo, chunk_seq) in enumerate(zip(starts, chunk_seqs, strict=True)):
            hi = min(lo + spec.chunk_users, spec.n_users)
            rows, profile = _user_chunk(
                spec, world, traits, domains, lo, hi, np.random.default_rng(chunk_seq)
            )
            user, item, dom, ts = rows
            for j, d in enumerate(domains):
                counts[d.name] += int(np.count_nonzero(dom == j))
            table = pa.Table.from_arrays(
                [
                    pc.take(user_labels_pa, pa.array(user)),
                    pc.take(item_labels_pa, pa.array(item)),
                    pc.take(domain_names_pa, pa.array(dom)),
                    pa.array(ts + EPOCH, type=pa.int64()),
                    pa.array(np.ones(len(user), dtype=np.int8)),
                ],
                schema=_INTERACTION_SCHEMA,
            )
            writer.write_table(table)
            profile.insert(0, "user", user_labels[lo:hi])
            user_frames.append(profile)
            clock.tick(f"users {lo}..{hi - 1} ({k + 1}/{len(starts)}): {len(user)} interactions")

    heads, rels, tails = world.triplets.T
    tables = {
        "domains": pd.DataFrame(
            {"domain": [d.name for d in domains], "role": [d.role for d in domains]}
        ),
        "item_entities": pd.DataFrame(
            {
                "item": item_labels[item_entities[:, 0]],
                "entity": world.labels[item_entities[:, 1]],
                "rank": item_entities[:, 2].astype(np.int64),
            }
        ),
        "triplets": pd.DataFrame(
            {
                "head": world.labels[heads],
                "relation": np.array(RELATIONS, dtype=object)[rels],
                "tail": world.labels[tails],
            }
        ),
        "user_profiles": pd.concat(user_frames, ignore_index=True),
        "item_profiles": item_profiles.assign(item=item_labels[item_profiles["item"]]),
    }
    for name, frame in tables.items():
        _write_table(frame, out, name)
    clock.tick(f"tables written to {out}")

    return {
        "size": spec.name,
        "seed": int(seed),
        "users": spec.n_users,
        "entities": world.n_entities,
        "triplets": len(world.triplets),
        "items": {d.name: len(d.item_concept) for d in domains},
        "interactions": counts,
    }


class _Clock:
    """Prints stage timings to standard error when asked to."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.start = time.perf_counter()

    def tick(self, message: str) -> None:
        """Report one finished stage with the seconds elapsed since the start."""
        if self.enabled:
            print(f"[{time.perf_counter() - self.start:7.2f}s] {message}", file=sys.stderr)


def _labels(prefix: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """Public string ids ``prefix + k`` for n objects, in a shuffled order."""
    return np.array([f"{prefix}{k}" for k in rng.permutation(n)], dtype=object)


def _write_table(frame: pd.DataFrame, out: Path, name: str) -> None:
    """Write one table of the contract as Parquet, with its id columns as strings."""
    columns = REQUIRED_TABLES.get(name) or OPTIONAL_TABLES[name]
    missing = [c for c in columns if c not in frame.columns]
    if missing:  # pragma: no cover - a bug in this module, not in user data
        raise AssertionError(f"table {name!r} lacks columns {missing}")
    write_table(frame, out, name)


def _zipf(n: int, exponent: float, rng: np.random.Generator) -> np.ndarray:
    """Zipf-like weights (rank ** -exponent) over n objects in a random order, summing to 1."""
    weights = (rng.permutation(n) + 1.0) ** -exponent
    return weights / weights.sum()


def _uniform_in(start: np.ndarray, end: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One uniform integer in [start, end) per row (segments must be non-empty)."""
    return start + np.floor(rng.random(len(start)) * (end - start)).astype(np.int64)


def _weighted_in(
    cum: np.ndarray, start: np.ndarray, end: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """One index per row, drawn in [start, end) with the weights whose running sum is ``cum``."""
    lo = np.where(start > 0, cum[np.maximum(start - 1, 0)], 0.0)
    hi = cum[end - 1]
    idx = np.searchsorted(cum, lo + rng.random(len(start)) * (hi - lo), side="right")
    return np.clip(idx, start, end - 1)


def _top_k_gumbel(logits: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k distinct columns per row, drawn without replacement with probabilities softmax(logits)."""
    keys = logits + rng.gumbel(size=logits.shape)
    return np.argsort(-keys, axis=1)[:, :k]


def _build_world(spec: SyntheticSize, rng: np.random.Generator) -> _World:
    """Concepts, their super-categories and the entity graph with its noise."""
    n_c = spec.n_concepts
    n_groups = max(2, n_c // 4)
    concept_group = rng.permutation(n_c) % n_groups
    concept_pop = _zipf(n_c, 0.6, rng)

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
        return leaf0 + _uniform_in(leaf_start[concepts], leaf_end[concepts], rng)

    def concept_near(concepts: np.ndarray) -> np.ndarray:
        g = concept_group[concepts]
        return group_order[_uniform_in(group_start[g], group_end[g], rng)]

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

    return _World(
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
        labels=_labels("e", spec.n_entities, rng),
    )


@dataclass
class _Traits:
    """Per-concept tastes that make profiles weakly informative."""

    gender_skew: np.ndarray  # (C,) in [-1, 1], positive leans "f"
    age_pref: np.ndarray  # (C,) preferred age band, in [0, 4]
    price_base: np.ndarray  # (C,) typical price level, in [0, 3]
    region_mult: np.ndarray  # (n_targets, N_REGIONS) how much each region likes a target domain


def _concept_traits(n_concepts: int, rng: np.random.Generator) -> _Traits:
    """Draw the tastes of each concept and the regional appetite for each target domain."""
    return _Traits(
        gender_skew=rng.uniform(-1.0, 1.0, n_concepts),
        age_pref=rng.uniform(0.0, 4.0, n_concepts),
        price_base=rng.uniform(0.0, 3.0, n_concepts),
        region_mult=rng.uniform(0.7, 1.3, (len(TARGET_DOMAINS), N_REGIONS)),
    )


def _build_catalog(
    spec: SyntheticSize, world: _World, traits: _Traits, rng: np.random.Generator
) -> tuple[list[_Domain], np.ndarray, pd.DataFrame]:
    """Items of every domain: concepts, popularity, entities phi(i) and profiles.

    Returns:
        The domains, the item-entity rows ``(item, entity, rank)`` as an int array and the item
        profiles (with the internal item index in the ``item`` column).
    """
    n_c = spec.n_concepts
    domains: list[_Domain] = []
    offset = 0
    names = [(n, "source") for n in SOURCE_DOMAINS] + [(n, "target") for n in TARGET_DOMAINS]
    for name, role in names:
        if role == "source":
            n_items, zipf, start = spec.source_items, SOURCE_ZIPF, 0
            support = np.arange(n_c)
            weights = world.concept_pop * rng.lognormal(0.0, 0.5, n_c)
        else:
            n_items, zipf = spec.target_items, TARGET_ZIPF
            start = TARGET_LAUNCH_DAYS[TARGET_DOMAINS.index(name)] * DAY
            favoured = rng.choice(world.n_groups, size=min(2, world.n_groups), replace=False)
            bias = np.where(np.isin(world.concept_group, favoured), SAME_GROUP_BOOST, 1.0)
            m = max(2, round(TARGET_COVERAGE * n_c))
            logits = np.log(world.concept_pop**0.5 * bias)[None, :]
            support = np.sort(_top_k_gumbel(logits, m, rng)[0])
            weights = np.zeros(n_c)
            weights[support] = rng.dirichlet(np.full(m, 2.0)) * bias[support]
        first = support if n_items >= len(support) else rng.choice(support, n_items, False)
        rest = rng.choice(n_c, size=n_items - len(first), p=weights / weights.sum())
        item_concept = np.sort(np.concatenate([first, rest]))
        per_concept = np.bincount(item_concept, minlength=n_c)
        concept_end = np.cumsum(per_concept)
        popularity = _zipf(n_items, zipf, rng)
        domains.append(
            _Domain(
                name=name,
                role=role,
                start=start,
                item_offset=offset,
                item_concept=item_concept,
                concept_start=concept_end - per_concept,
                concept_end=concept_end,
                covered=per_concept > 0,
                cum=np.cumsum(popularity),
                popularity=popularity,
            )
        )
        offset += n_items

    item_concept = np.concatenate([d.item_concept for d in domains])
    is_target = np.concatenate([np.full(len(d.item_concept), d.role == "target") for d in domains])
    phi = _item_entities(world, item_concept, is_target, rng)
    popularity = np.concatenate([d.popularity * len(d.popularity) for d in domains])
    profiles = _item_profiles(item_concept, popularity, traits, rng)
    return domains, phi, profiles


def _item_entities(
    world: _World, item_concept: np.ndarray, is_target: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """phi(i): 1 to 3 entities per item, rank 0 a leaf of its concept; rows (item, entity, rank)."""
    n = len(item_concept)

    def leaf() -> np.ndarray:
        target_pool = np.where(
            is_target, rng.random(n) < TARGET_POOL_BIAS, rng.random(n) >= SOURCE_POOL_BIAS
        )
        seg = 2 * item_concept + target_pool
        return world.leaf0 + _weighted_in(
            world.leaf_cum, world.pool_start[seg], world.pool_end[seg], rng
        )

    def noisy() -> np.ndarray:
        generic = world.generic0 + rng.integers(0, world.n_generic, n)
        anywhere = world.leaf0 + rng.integers(0, len(world.leaf_concept), n)
        return np.where(rng.random(n) < 0.5, generic, anywhere)

    hub = world.hub0 + item_concept * HUBS_PER_CONCEPT + rng.integers(0, HUBS_PER_CONCEPT, n)
    slots = np.stack(
        [
            leaf(),
            np.where(rng.random(n) < HUB_IN_SLOT1, hub, leaf()),
            leaf(),
        ],
        axis=1,
    )
    noise = rng.random((n, 2)) < NOISY_SLOT
    slots[:, 1] = np.where(noise[:, 0], noisy(), slots[:, 1])
    slots[:, 2] = np.where(noise[:, 1], noisy(), slots[:, 2])

    size = 1 + rng.choice(3, size=n, p=ENTITIES_PER_ITEM_P)
    valid = np.arange(3)[None, :] < size[:, None]
    valid[:, 1] &= slots[:, 1] != slots[:, 0]
    valid[:, 2] &= (slots[:, 2] != slots[:, 0]) & (slots[:, 2] != slots[:, 1])
    rank = np.cumsum(valid, axis=1) - 1
    items = np.broadcast_to(np.arange(n)[:, None], slots.shape)
    return np.stack([items[valid], slots[valid], rank[valid]], axis=1).astype(np.int64)


def _item_profiles(
    item_concept: np.ndarray, popularity: np.ndarray, traits: _Traits, rng: np.random.Generator
) -> pd.DataFrame:
    """price_level and brand (categorical) and quality (numeric, weakly tied to popularity)."""
    n = len(item_concept)
    n_c = len(traits.price_base)
    level = np.clip(np.round(traits.price_base[item_concept] + rng.normal(0.0, 0.9, n)), 0, 3)
    brand = np.where(
        rng.random(n) < 0.5,
        item_concept * 3 + rng.integers(0, 3, n),
        rng.integers(0, 3 * n_c, n),
    )
    log_pop = np.log(popularity)
    z = (log_pop - log_pop.mean()) / (log_pop.std() + 1e-12)
    quality = np.clip(0.5 + 0.12 * z + rng.normal(0.0, 0.12, n), 0.0, 1.0)
    return pd.DataFrame(
        {
            "item": np.arange(n),
            "price_level": PRICE_LEVELS[level.astype(np.int64)],
            "brand": np.array([f"brand_{b}" for b in brand], dtype=object),
            "quality": np.round(quality, 3),
        }
    )


def _user_chunk(
    spec: SyntheticSize,
    world: _World,
    traits: _Traits,
    domains: list[_Domain],
    lo: int,
    hi: int,
    rng: np.random.Generator,
) -> tuple[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray], pd.DataFrame]:
    """Users ``lo .. hi - 1``: interests, profiles and their interactions in every domain.

    Returns:
        ``(user, item, domain, timestamp)`` arrays (global user and item indices, domain
        position, seconds since :data:`EPOCH`) and the chunk's user profiles.
    """
    n = hi - lo
    n_c = spec.n_concepts
    # Interests: a first concept by popularity, then 1-3 more favouring its super-category.
    log_pop = np.log(world.concept_pop)
    first = _top_k_gumbel(np.broadcast_to(log_pop, (n, n_c)), 1, rng)[:, 0]
    logits = log_pop + np.log(SAME_GROUP_BOOST) * (
        world.concept_group[None, :] == world.concept_group[first][:, None]
    )
    logits[np.arange(n), first] = -np.inf
    interests = np.concatenate([first[:, None], _top_k_gumbel(logits, 3, rng)], axis=1)
    k = 2 + rng.choice(3, size=n, p=INTERESTS_P)
    has = np.arange(4)[None, :] < k[:, None]
    w0 = rng.gamma(1.5, size=(n, 4)) * has
    w0 /= w0.sum(axis=1, keepdims=True)
    w1 = w0 * rng.lognormal(0.0, DRIFT_SIGMA, (n, 4))
    w1 /= w1.sum(axis=1, keepdims=True)

    activity = rng.lognormal(-0.5 * ACTIVITY_SIGMA**2, ACTIVITY_SIGMA, n)
    region = rng.choice(N_REGIONS, size=n, p=_zipf(N_REGIONS, 0.5, rng))
    newcomer = rng.random(n) < NEWCOMER_FRACTION

    n_src = len(SOURCE_DOMAINS)
    joins = np.zeros((n, len(domains)), dtype=bool)
    joins[:, :n_src] = (rng.random((n, n_src)) < SOURCE_PARTICIPATION) & ~newcomer[:, None]
    lonely = ~joins[:, :n_src].any(axis=1) & ~newcomer
    joins[lonely, rng.integers(0, n_src, int(lonely.sum()))] = True
    for t, d in enumerate(domains[n_src:]):
        cover = (w0 * d.covered[interests]).sum(axis=1)
        p = spec.target_participation * (0.25 + 1.5 * cover) * traits.region_mult[t, region]
        joins[:, n_src + t] = rng.random(n) < np.clip(p, 0.0, 0.95)
    lost = newcomer & ~joins.any(axis=1)
    joins[lost, n_src + rng.integers(0, len(TARGET_DOMAINS), int(lost.sum()))] = True

    out_user, out_item, out_dom, out_ts = [], [], [], []
    end = PERIOD_DAYS * DAY
    for j, d in enumerate(domains):
        rate = spec.source_rate if d.role == "source" else spec.target_rate
        users = np.flatnonzero(joins[:, j])
        draws = 1 + rng.poisson(activity[users] * (rate - 1.0))
        user = np.repeat(users, draws)
        m = len(user)
        ts = rng.integers(d.start, end, m)
        tau = (ts / end)[:, None]
        w = ((1.0 - tau) * w0[user] + tau * w1[user]) * d.covered[interests[user]]
        wcum = np.cumsum(w, axis=1)
        total = wcum[:, -1]
        by_interest = (rng.random(m) < P_INTEREST) & (total > 0)
        column = (wcum < (rng.random(m) * total)[:, None]).sum(axis=1).clip(0, 3)
        concept = interests[user, column]
        local = np.searchsorted(d.cum, rng.random(m) * d.cum[-1], side="right").clip(
            0, len(d.cum) - 1
        )
        pick = np.flatnonzero(by_interest)
        c = concept[pick]
        local[pick] = _weighted_in(d.cum, d.concept_start[c], d.concept_end[c], rng)
        # A user meets an item once per domain: keep the earliest of repeated (user, item) draws.
        order = np.lexsort((ts, local, user))
        user, local, ts = user[order], local[order], ts[order]
        first_seen = np.ones(m, dtype=bool)
        first_seen[1:] = (user[1:] != user[:-1]) | (local[1:] != local[:-1])
        user, local, ts = user[first_seen], local[first_seen], ts[first_seen]
        order = np.lexsort((local, ts, user))
        out_user.append(lo + user[order])
        out_item.append(d.item_offset + local[order])
        out_dom.append(np.full(len(order), j, dtype=np.int64))
        out_ts.append(ts[order].astype(np.int64))

    rows = (
        np.concatenate(out_user),
        np.concatenate(out_item),
        np.concatenate(out_dom),
        np.concatenate(out_ts),
    )
    return rows, _user_profiles(interests, w0, activity, region, newcomer, traits, rng)


def _user_profiles(
    interests: np.ndarray,
    weights: np.ndarray,
    activity: np.ndarray,
    region: np.ndarray,
    newcomer: np.ndarray,
    traits: _Traits,
    rng: np.random.Generator,
) -> pd.DataFrame:
    """gender, age_band and region (categorical), activity and tenure_days (numeric)."""
    n = len(activity)
    skew = (weights * traits.gender_skew[interests]).sum(axis=1)
    gender = np.where(rng.random(n) < 0.5 + 0.25 * skew, "f", "m").astype(object)
    gender[rng.random(n) < 0.05] = "unknown"
    age_mean = (weights * traits.age_pref[interests]).sum(axis=1)
    age = 0.5 * age_mean + 0.5 * rng.uniform(0.0, 4.0, n) + rng.normal(0.0, 0.8, n)
    tenure = np.where(
        newcomer, rng.integers(0, PERIOD_DAYS, n), np.round(rng.lognormal(6.0, 0.6, n))
    )
    return pd.DataFrame(
        {
            "gender": gender,
            "age_band": AGE_BANDS[np.clip(np.round(age), 0, 4).astype(np.int64)],
            "region": np.array([f"region_{r}" for r in region], dtype=object),
            "activity": np.round(np.log(activity) + rng.normal(0.0, 0.3, n), 3),
            "tenure_days": tenure.astype(np.int64),
        }
    )

"""The catalogues: every domain's items with their concepts, popularity, entities phi(i) and
profiles, and the per-concept tastes that make profiles weakly informative."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from peace.data.synthetic.draws import top_k_gumbel, weighted_in, zipf_weights
from peace.data.synthetic.params import (
    DAY,
    ENTITIES_PER_ITEM_P,
    HUB_IN_SLOT1,
    HUBS_PER_CONCEPT,
    N_REGIONS,
    NOISY_SLOT,
    PRICE_LEVELS,
    SAME_GROUP_BOOST,
    SOURCE_DOMAINS,
    SOURCE_POOL_BIAS,
    SOURCE_ZIPF,
    TARGET_COVERAGE,
    TARGET_DOMAINS,
    TARGET_LAUNCH_DAYS,
    TARGET_POOL_BIAS,
    TARGET_ZIPF,
    SyntheticSize,
)
from peace.data.synthetic.world import World


@dataclass
class Domain:
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


@dataclass
class Traits:
    """Per-concept tastes that make profiles weakly informative."""

    gender_skew: np.ndarray  # (C,) in [-1, 1], positive leans "f"
    age_pref: np.ndarray  # (C,) preferred age band, in [0, 4]
    price_base: np.ndarray  # (C,) typical price level, in [0, 3]
    region_mult: np.ndarray  # (n_targets, N_REGIONS) how much each region likes a target domain


def concept_traits(n_concepts: int, rng: np.random.Generator) -> Traits:
    """Draw the tastes of each concept and the regional appetite for each target domain."""
    return Traits(
        gender_skew=rng.uniform(-1.0, 1.0, n_concepts),
        age_pref=rng.uniform(0.0, 4.0, n_concepts),
        price_base=rng.uniform(0.0, 3.0, n_concepts),
        region_mult=rng.uniform(0.7, 1.3, (len(TARGET_DOMAINS), N_REGIONS)),
    )


def build_catalog(
    spec: SyntheticSize, world: World, traits: Traits, rng: np.random.Generator
) -> tuple[list[Domain], np.ndarray, pd.DataFrame]:
    """Items of every domain: concepts, popularity, entities phi(i) and profiles.

    Returns:
        The domains, the item-entity rows ``(item, entity, rank)`` as an int array and the item
        profiles (with the internal item index in the ``item`` column).
    """
    n_c = spec.n_concepts
    domains: list[Domain] = []
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
            support = np.sort(top_k_gumbel(logits, m, rng)[0])
            weights = np.zeros(n_c)
            weights[support] = rng.dirichlet(np.full(m, 2.0)) * bias[support]
        first = support if n_items >= len(support) else rng.choice(support, n_items, False)
        rest = rng.choice(n_c, size=n_items - len(first), p=weights / weights.sum())
        item_concept = np.sort(np.concatenate([first, rest]))
        per_concept = np.bincount(item_concept, minlength=n_c)
        concept_end = np.cumsum(per_concept)
        popularity = zipf_weights(n_items, zipf, rng)
        domains.append(
            Domain(
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
    phi = item_entities(world, item_concept, is_target, rng)
    popularity = np.concatenate([d.popularity * len(d.popularity) for d in domains])
    profiles = item_profiles(item_concept, popularity, traits, rng)
    return domains, phi, profiles


def item_entities(
    world: World, item_concept: np.ndarray, is_target: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """phi(i): 1 to 3 entities per item, rank 0 a leaf of its concept; rows (item, entity, rank)."""
    n = len(item_concept)

    def leaf() -> np.ndarray:
        target_pool = np.where(
            is_target, rng.random(n) < TARGET_POOL_BIAS, rng.random(n) >= SOURCE_POOL_BIAS
        )
        seg = 2 * item_concept + target_pool
        return world.leaf0 + weighted_in(
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


def item_profiles(
    item_concept: np.ndarray, popularity: np.ndarray, traits: Traits, rng: np.random.Generator
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

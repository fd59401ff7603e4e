"""Users: interests drifting over the period, profiles, and their interactions in every domain,
generated one chunk of users at a time."""

from __future__ import annotations

import numpy as np
import pandas as pd

from peace.data.synthetic.catalog import Domain, Traits
from peace.data.synthetic.draws import top_k_gumbel, weighted_in, zipf_weights
from peace.data.synthetic.params import (
    ACTIVITY_SIGMA,
    AGE_BANDS,
    DAY,
    DRIFT_SIGMA,
    INTERESTS_P,
    N_REGIONS,
    NEWCOMER_FRACTION,
    P_INTEREST,
    PERIOD_DAYS,
    SAME_GROUP_BOOST,
    SOURCE_DOMAINS,
    SOURCE_PARTICIPATION,
    TARGET_DOMAINS,
    SyntheticSize,
)
from peace.data.synthetic.world import World


def user_chunk(
    spec: SyntheticSize,
    world: World,
    traits: Traits,
    domains: list[Domain],
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
    first = top_k_gumbel(np.broadcast_to(log_pop, (n, n_c)), 1, rng)[:, 0]
    logits = log_pop + np.log(SAME_GROUP_BOOST) * (
        world.concept_group[None, :] == world.concept_group[first][:, None]
    )
    logits[np.arange(n), first] = -np.inf
    interests = np.concatenate([first[:, None], top_k_gumbel(logits, 3, rng)], axis=1)
    k = 2 + rng.choice(3, size=n, p=INTERESTS_P)
    has = np.arange(4)[None, :] < k[:, None]
    w0 = rng.gamma(1.5, size=(n, 4)) * has
    w0 /= w0.sum(axis=1, keepdims=True)
    w1 = w0 * rng.lognormal(0.0, DRIFT_SIGMA, (n, 4))
    w1 /= w1.sum(axis=1, keepdims=True)

    activity = rng.lognormal(-0.5 * ACTIVITY_SIGMA**2, ACTIVITY_SIGMA, n)
    region = rng.choice(N_REGIONS, size=n, p=zipf_weights(N_REGIONS, 0.5, rng))
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
        local[pick] = weighted_in(d.cum, d.concept_start[c], d.concept_end[c], rng)
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
    return rows, user_profiles(interests, w0, activity, region, newcomer, traits, rng)


def user_profiles(
    interests: np.ndarray,
    weights: np.ndarray,
    activity: np.ndarray,
    region: np.ndarray,
    newcomer: np.ndarray,
    traits: Traits,
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

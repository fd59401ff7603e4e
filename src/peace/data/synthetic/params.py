"""The knobs of the synthetic platform: its domains and relations, its sizes, and the constants
of the generative story (``docs/synthetic.md``)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

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

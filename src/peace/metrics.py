"""Top-K metrics of a full ranking (DESIGN.md, decision 9): Hit@K and NDCG@K.

Binary relevance; Hit@K is 1 when any relevant item is in the top K; NDCG@K divides the DCG of
the top K by the ideal DCG over min(|relevant|, K) items. Ties in scores are broken by a seeded
random order, never by item index (which would favour low ids).
"""

from __future__ import annotations

import numpy as np
import torch


def top_k_items(scores: torch.Tensor, k: int, tie_break: torch.Tensor) -> torch.Tensor:
    """Indices of the ``k`` best columns per row; ``tie_break`` ``[I]`` in [0, 1) orders ties."""
    k = min(k, scores.shape[1])
    # Exact: sort by score, then by the tie-break key (a lexicographic sort in two stable passes).
    order = torch.argsort(tie_break.expand_as(scores), dim=1, stable=True)
    s = torch.gather(scores, 1, order)
    second = torch.argsort(-s, dim=1, stable=True)
    return torch.gather(order, 1, second)[:, :k]


def _listed_pairs(per_user: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """``(user, id)`` of every id listed per user, as two flat arrays (repeats kept)."""
    lengths = np.fromiter((len(a) for a in per_user), dtype=np.int64, count=len(per_user))
    users = np.repeat(np.arange(len(per_user)), lengths)
    ids = np.concatenate([np.asarray(a).ravel() for a in per_user]) if len(per_user) else []
    return users, np.asarray(ids, dtype=np.int64)


class _PairSet:
    """A set of ``(user, id)`` pairs, asked about many pairs at once.

    Each pair is one int64 key, ``user * width + code``, where ``code`` is the id's place among
    the listed ids and those in ``asked`` (every id a later question names), so the keys cannot
    overflow whatever the ids' range."""

    def __init__(self, users: np.ndarray, ids: np.ndarray, asked: np.ndarray) -> None:
        self._values = np.unique(np.concatenate([ids, np.asarray(asked, np.int64).ravel()]))
        self.width = max(len(self._values), 1)
        self.keys = np.unique(self.key(users, ids))

    def key(self, users: np.ndarray, ids: np.ndarray) -> np.ndarray:
        return users * self.width + np.searchsorted(self._values, ids)

    def holds(self, users: np.ndarray, ids: np.ndarray) -> np.ndarray:
        return np.isin(self.key(users, ids), self.keys)

    def per_user(self, n_users: int) -> np.ndarray:
        """How many distinct ids each user has."""
        return np.bincount(self.keys // self.width, minlength=n_users)


def hit_ndcg(
    ranked: np.ndarray, relevant: list[np.ndarray], k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per-user Hit@k and NDCG@k for ranked item ids ``[U, >=k]`` and relevant id sets."""
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    # the ideal DCG by number of relevant items (none: NDCG is 0, set below, not divided by 0)
    ideal = np.array([1.0] + [discounts[:m].sum() for m in range(1, k + 1)])
    top = np.asarray(ranked, dtype=np.int64)[:, :k]
    rel = _PairSet(*_listed_pairs(relevant), asked=top)  # an id listed twice is one item
    n_rel = rel.per_user(len(relevant))
    gains = rel.holds(np.arange(len(relevant))[:, None], top)
    has = n_rel > 0
    hits = (gains.any(axis=1) & has).astype(np.float64)
    dcg = (gains * discounts[: top.shape[1]]).sum(axis=1)
    ndcg = np.where(has, dcg / ideal[np.minimum(n_rel, k)], 0.0)
    return hits, ndcg


def ranking_metrics(
    scores: torch.Tensor,
    catalogue: np.ndarray,
    relevant: list[np.ndarray],
    exclude: list[np.ndarray] | None,
    ks: tuple[int, ...] = (5, 10),
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Per-user metrics for ``scores`` ``[U, I]`` over ``catalogue`` (item ids of the columns).

    Args:
        relevant: per user, the relevant item ids.
        exclude: per user, item ids removed from the ranking (seen in train / validation);
            relevant items are never excluded.
        seed: fixes the tie-break order.

    Returns:
        ``{"hit@5": [U], "ndcg@5": [U], ...}``.
    """
    scores = scores.clone().float()
    if exclude is not None:
        if len(exclude) != len(relevant):
            raise ValueError(f"{len(exclude)} exclude lists for {len(relevant)} users.")
        users, ids = _listed_pairs(exclude)
        catalogue = np.asarray(catalogue, dtype=np.int64)
        by_id = np.argsort(catalogue, kind="stable")
        at = np.searchsorted(catalogue, ids, sorter=by_id).clip(max=max(len(catalogue) - 1, 0))
        listed = catalogue[by_id[at]] == ids if len(catalogue) else np.zeros(len(ids), bool)
        rel = _PairSet(*_listed_pairs(relevant), asked=ids)
        drop = listed & ~rel.holds(users, ids)  # a relevant item is never excluded
        scores[torch.as_tensor(users[drop]), torch.as_tensor(by_id[at[drop]])] = float("-inf")
    gen = torch.Generator().manual_seed(seed)
    tie = torch.rand(scores.shape[1], generator=gen)
    ranked_cols = top_k_items(scores, max(ks), tie).numpy()
    ranked = np.asarray(catalogue)[ranked_cols]
    out = {}
    for k in ks:
        hits, ndcg = hit_ndcg(ranked, relevant, k)
        out[f"hit@{k}"] = hits
        out[f"ndcg@{k}"] = ndcg
    return out

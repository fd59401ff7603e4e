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


def hit_ndcg(
    ranked: np.ndarray, relevant: list[np.ndarray], k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per-user Hit@k and NDCG@k for ranked item ids ``[U, >=k]`` and relevant id sets."""
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    hits = np.zeros(len(relevant))
    ndcg = np.zeros(len(relevant))
    for u, rel in enumerate(relevant):
        rel = np.unique(rel)  # a set: an id listed twice is still one relevant item
        gains = np.isin(ranked[u, :k], rel)
        if not len(rel):
            continue
        hits[u] = float(gains.any())
        ideal = discounts[: min(len(rel), k)].sum()
        ndcg[u] = float((gains * discounts[: len(gains)]).sum() / ideal)
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
    col = {int(item): j for j, item in enumerate(catalogue)}
    if exclude is not None:
        for u, (ex, rel) in enumerate(zip(exclude, relevant, strict=True)):
            drop = [col[int(i)] for i in np.setdiff1d(ex, rel) if int(i) in col]
            if drop:
                scores[u, drop] = float("-inf")
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

"""Hit@K and NDCG@K of a full ranking (DESIGN.md, decision 9), checked against numbers by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from peace.metrics import hit_ndcg, ranking_metrics, top_k_items

# 1 / log2(rank + 1), written out.
D1, D2, D3, D4, D5, D6 = 1.0, 0.6309297536, 0.5, 0.4306765581, 0.3868528072, 0.3562071871


def _scores_for_order(order: list[int]) -> torch.Tensor:
    """One user's scores that rank the catalogue columns in ``order`` (best first)."""
    scores = torch.zeros(1, len(order))
    for rank, col in enumerate(order):
        scores[0, col] = float(len(order) - rank)
    return scores


# (ranked positions 1-based of the relevant items, K, hit, ndcg)
CASES = [
    ([1], 5, 1.0, 1.0),
    ([3], 5, 1.0, D3),  # 1 / log2(4) = 0.5
    ([6], 5, 0.0, 0.0),  # just outside the top 5
    ([6], 10, 1.0, D6),  # 1 / log2(7)
    ([1, 3], 5, 1.0, (D1 + D3) / (D1 + D2)),  # 1.5 / 1.6309 = 0.9197
    ([2, 3], 5, 1.0, (D2 + D3) / (D1 + D2)),
    ([1, 2], 1, 1.0, 1.0),  # IDCG over min(2, K=1) = 1 position
    ([2, 7, 8, 9, 10, 11], 5, 1.0, D2 / (D1 + D2 + D3 + D4 + D5)),  # 6 relevant, IDCG over 5
    ([7, 8], 5, 0.0, 0.0),
]


@pytest.mark.parametrize(("positions", "k", "hit", "ndcg"), CASES)
def test_hand_computed_cases(positions: list[int], k: int, hit: float, ndcg: float) -> None:
    catalogue = np.arange(100, 112)  # item ids differ from column indices on purpose
    ranked = catalogue[None, :]  # the ranking is the catalogue in order
    relevant = [catalogue[np.array(positions) - 1]]
    hits, ndcgs = hit_ndcg(ranked, relevant, k)
    assert hits[0] == pytest.approx(hit)
    assert ndcgs[0] == pytest.approx(ndcg, abs=1e-8)


def test_hand_computed_values_through_ranking_metrics() -> None:
    catalogue = np.array([40, 41, 42, 43, 44, 45, 46, 47])
    order = [5, 2, 7, 0, 1, 3, 6, 4]  # columns, best first: items 45, 42, 47, 40, 41, 43, 46, 44
    scores = torch.cat([_scores_for_order(order)] * 3)
    relevant = [np.array([45]), np.array([47]), np.array([42, 46])]
    out = ranking_metrics(scores, catalogue, relevant, exclude=None, ks=(1, 5))
    assert out["hit@1"].tolist() == [1.0, 0.0, 0.0]
    assert out["hit@5"].tolist() == [1.0, 1.0, 1.0]
    assert out["ndcg@1"].tolist() == [1.0, 0.0, 0.0]
    # user 0: rank 1; user 1: rank 3; user 2: 42 at rank 2, 46 at rank 7 (outside the top 5)
    np.testing.assert_allclose(out["ndcg@5"], [1.0, D3, D2 / (D1 + D2)], atol=1e-8)


def test_user_without_relevant_items_scores_zero() -> None:
    hits, ndcg = hit_ndcg(np.array([[1, 2, 3]]), [np.array([], dtype=np.int64)], 3)
    assert hits[0] == 0.0 and ndcg[0] == 0.0


def test_relevant_ids_are_a_set() -> None:
    hits, ndcg = hit_ndcg(np.array([[7, 8, 9]]), [np.array([7, 7])], 3)
    assert hits[0] == 1.0
    assert ndcg[0] == pytest.approx(1.0)  # one relevant item at rank 1 is a perfect ranking


def test_catalogue_smaller_than_k() -> None:
    scores = _scores_for_order([2, 0, 1])
    out = ranking_metrics(scores, np.array([5, 6, 7]), [np.array([5])], None, ks=(10,))
    assert out["ndcg@10"][0] == pytest.approx(D2)


def test_seen_items_are_excluded_but_relevant_ones_never() -> None:
    catalogue = np.array([10, 11, 12, 13, 14, 15])
    order = [0, 1, 2, 3, 4, 5]
    scores = torch.cat([_scores_for_order(order)] * 2)
    relevant = [np.array([13]), np.array([13])]
    exclude = [np.array([10, 11, 99]), np.array([10, 13])]  # 99 is not in the catalogue
    out = ranking_metrics(scores, catalogue, relevant, exclude, ks=(1, 2))
    # user 0: 10 and 11 removed, 13 moves from rank 4 to rank 2
    assert out["hit@1"][0] == 0.0 and out["hit@2"][0] == 1.0
    assert out["ndcg@2"][0] == pytest.approx(D2)
    # user 1: 10 removed, 13 kept although listed as seen -> rank 3
    assert out["hit@2"][1] == 0.0
    without = ranking_metrics(scores, catalogue, relevant, None, ks=(2,))
    assert without["hit@2"].tolist() == [0.0, 0.0]
    assert scores[0, 0] == 6.0  # the caller's scores are left untouched


def test_top_k_breaks_ties_by_the_key_not_the_index() -> None:
    scores = torch.tensor([[1.0, 3.0, 3.0, 3.0, 0.0, 3.0]])
    key = torch.tensor([0.1, 0.9, 0.2, 0.5, 0.0, 0.3])
    assert top_k_items(scores, 6, key).tolist() == [[2, 5, 3, 1, 0, 4]]
    assert top_k_items(scores, 2, key).tolist() == [[2, 5]]
    assert top_k_items(scores, 99, key).shape == (1, 6)
    # Scores decide before the key does.
    assert top_k_items(torch.tensor([[0.0, 1.0]]), 2, torch.tensor([0.0, 0.9])).tolist() == [[1, 0]]


def test_ties_follow_the_seeded_key_and_are_deterministic() -> None:
    n = 6
    catalogue = np.arange(n)
    scores = torch.zeros(1, n)  # every item tied

    def first_ranked(seed: int) -> int:
        """The item at rank 1: the only one whose Hit@1 is 1."""
        for item in range(n):
            out = ranking_metrics(scores, catalogue, [np.array([item])], None, (1,), seed=seed)
            if out["hit@1"][0] == 1.0:
                return item
        raise AssertionError("no item at rank 1")

    firsts = []
    for seed in range(60):
        first = [first_ranked(seed), first_ranked(seed)]
        assert first[0] == first[1]  # same seed, same order
        firsts.append(first[0])
        key = torch.rand(n, generator=torch.Generator().manual_seed(seed))
        assert first[0] == int(torch.argmin(key))  # the seeded key decides
    counts = np.bincount(firsts, minlength=n)
    assert counts[0] < 30, "ties must not favour low item ids"
    assert (counts > 0).sum() >= 4


def _by_definition(scores, catalogue, relevant, exclude, k, tie):
    """Hit@k and NDCG@k one user at a time, straight from the definitions."""
    hits, ndcgs = [], []
    for u, rel in enumerate(relevant):
        rel = set(int(i) for i in rel)
        seen = set() if exclude is None else set(int(i) for i in exclude[u]) - rel
        kept = [j for j, item in enumerate(catalogue) if int(item) not in seen]
        kept.sort(key=lambda j: (-float(scores[u, j]), float(tie[j])))
        top = [int(catalogue[j]) for j in kept[:k]]
        gains = [1.0 if item in rel else 0.0 for item in top]
        dcg = sum(g / np.log2(r + 2) for r, g in enumerate(gains))
        ideal = sum(1 / np.log2(r + 2) for r in range(min(len(rel), k)))
        hits.append(float(any(gains)) if rel else 0.0)
        ndcgs.append(dcg / ideal if rel else 0.0)
    return np.array(hits), np.array(ndcgs)


@pytest.mark.parametrize("seed", range(20))
def test_random_cases_match_the_definition(seed: int) -> None:
    """Ties, ids listed twice, relevant or excluded ids outside the catalogue, users without
    relevant items, a catalogue smaller than k."""
    rng = np.random.default_rng(seed)
    n_users, n_items = int(rng.integers(1, 12)), int(rng.integers(1, 15))
    catalogue = rng.choice(500, n_items, replace=False)
    scores = torch.tensor(rng.integers(0, 3, (n_users, n_items)), dtype=torch.float32)
    pool = np.concatenate([catalogue, [900, 901]])
    relevant = [rng.choice(pool, int(rng.integers(0, 4))) for _ in range(n_users)]
    exclude = (
        None if seed % 4 == 0 else [rng.choice(pool, int(rng.integers(0, 6))) for _ in relevant]
    )
    out = ranking_metrics(scores, catalogue, relevant, exclude, ks=(1, 3, 10), seed=seed)
    tie = torch.rand(n_items, generator=torch.Generator().manual_seed(seed))
    for k in (1, 3, 10):
        hits, ndcg = _by_definition(scores, catalogue, relevant, exclude, k, tie)
        np.testing.assert_array_equal(out[f"hit@{k}"], hits)
        np.testing.assert_allclose(out[f"ndcg@{k}"], ndcg, rtol=1e-12, atol=0)

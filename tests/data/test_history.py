"""HistoryIndex: the entity tokens of a user's positive source behaviour strictly before a time."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import toy_tables

from peace.data.contract import write_dataset
from peace.data.dataset import Dataset, load_dataset
from peace.data.history import HistoryIndex, _PairSearch, _sort_rows, _TimeRanks


def _history_tables() -> dict[str, pd.DataFrame]:
    """toy_tables() plus what the toy lacks: negatives, 1- and 3-entity items, equal timestamps,
    and a user with target rows only."""
    tables = toy_tables(seed=3, n_users=30)
    inter = tables["interactions"]
    rng = np.random.default_rng(7)
    negatives = inter[inter["domain"].str.startswith("s")].sample(60, random_state=1).copy()
    negatives["timestamp"] = rng.integers(0, 1000, len(negatives))
    negatives["label"] = 0
    ties = pd.DataFrame(
        {
            "user": ["u1"] * 4,
            "item": ["s1_i4", "s1_i9", "s1_i2", "s2_i7"],
            "domain": ["s1", "s1", "s1", "s2"],
            "timestamp": [1234, 1234, 1234, 1234],
            "label": [1, 1, 1, 1],
        }
    )
    loner = pd.DataFrame(
        {
            "user": ["loner"] * 2,
            "item": ["t1_i0", "t2_i1"],
            "domain": ["t1", "t2"],
            "timestamp": [700, 800],
            "label": [1, 1],
        }
    )
    inter = pd.concat([inter, negatives, ties, loner], ignore_index=True)
    tables["interactions"] = inter.drop_duplicates(["user", "item", "domain", "timestamp"])
    phi = tables["item_entities"]
    phi = phi[~((phi["item"].isin(["s1_i1", "s2_i5", "s3_i2"])) & (phi["rank"] == 1))]
    extra = pd.DataFrame(
        {"item": ["s1_i4", "s2_i7", "s3_i0"], "entity": ["e7_3", "e1_5", "e2_2"], "rank": [2, 2, 2]}
    )
    tables["item_entities"] = pd.concat([phi, extra], ignore_index=True)
    return tables


@pytest.fixture(scope="module")
def history_ds(tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    root: Path = tmp_path_factory.mktemp("history")
    return load_dataset(write_dataset(_history_tables(), root / "ds"))


def _reference(ds: Dataset, user: int, time: float, h: int, domains: list[int]):
    """Brute force with pandas: tokens and mask of one (user, time)."""
    inter = ds.interactions
    tokens: list[int] = []
    mask: list[bool] = []
    for d in domains:
        rows = inter[
            (inter["user"] == user)
            & (inter["domain"] == d)
            & (inter["label"] == 1)
            & (inter["timestamp"] < time)
        ].sort_values(["timestamp", "item"])
        seq = [int(e) for i in rows["item"] for e in ds.item_entities[i] if e >= 0][-h:]
        tokens += [ds.num_entities] * (h - len(seq)) + seq
        mask += [False] * (h - len(seq)) + [True] * len(seq)
    return np.array(tokens), np.array(mask)


def _queries(ds: Dataset, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    users = rng.integers(0, ds.num_users, n)
    existing = ds.interactions["timestamp"].to_numpy()
    times = np.where(
        rng.random(n) < 0.5,
        rng.choice(existing, n),  # exactly an existing timestamp
        rng.uniform(-10, 1300, n),
    )
    return users, times


@pytest.mark.parametrize("h", [1, 4, 7, 40])
def test_lookup_matches_brute_force(history_ds: Dataset, h: int) -> None:
    ds = history_ds
    index = HistoryIndex(ds, history_length=h)
    users, times = _queries(ds, 200, seed=h)
    tokens, mask = index.lookup(users, times)
    assert tokens.shape == mask.shape == (200, 3 * h) == (200, index.sequence_length)
    assert tokens.dtype == torch.long and mask.dtype == torch.bool
    for b, (u, t) in enumerate(zip(users, times, strict=True)):
        ref_tokens, ref_mask = _reference(ds, int(u), float(t), h, ds.source_domains)
        np.testing.assert_array_equal(tokens[b].numpy(), ref_tokens, err_msg=f"user {u} t {t}")
        np.testing.assert_array_equal(mask[b].numpy(), ref_mask)


def test_queries_at_an_existing_timestamp_exclude_that_row(history_ds: Dataset) -> None:
    ds = history_ds
    u1 = int(ds.index_of("user", ["u1"])[0])
    index = HistoryIndex(ds, history_length=200)
    before, _ = index.lookup(np.array([u1]), np.array([1234.0]))
    after, _ = index.lookup(np.array([u1]), np.array([1234.5]))
    tied = ds.index_of("item", ["s1_i4", "s1_i9", "s1_i2", "s2_i7"])
    gained = int((after != ds.num_entities).sum() - (before != ds.num_entities).sum())
    assert gained == int((ds.item_entities[tied] >= 0).sum()) == 3 + 2 + 2 + 3
    # The newest tokens after 1234 are the tied items, their entities in rank order, items by id.
    s1 = after[0][:200].tolist()
    order = sorted(tied[:3].tolist())
    expected_tail = [int(e) for i in order for e in ds.item_entities[i] if e >= 0]
    assert s1[-len(expected_tail) :] == expected_tail


def test_positions_and_token_times(history_ds: Dataset) -> None:
    ds = history_ds
    h = 5
    index = HistoryIndex(ds, history_length=h)
    users, times = _queries(ds, 200, seed=11)
    positions = index.positions(users, times)
    assert positions.shape == (200, 3, 2)
    for k, per_row in enumerate(index.token_times(positions)):
        for b, tt in enumerate(per_row):
            assert len(tt) <= h
            assert (tt < times[b]).all()
            assert (np.diff(tt) >= 0).all()  # oldest first
            assert positions[b, k, 1] - positions[b, k, 0] == len(tt)
    # gather(positions) is what lookup returns.
    a, am = index.gather(positions)
    b, bm = index.lookup(users, times)
    assert (a == b).all() and (am == bm).all()


def test_only_positive_source_rows_count(history_ds: Dataset) -> None:
    ds = history_ds
    index = HistoryIndex(ds, history_length=1000)
    users = np.arange(ds.num_users)
    tokens, mask = index.lookup(users, np.full(ds.num_users, np.inf))
    inter = ds.interactions
    pos = inter[(inter["label"] == 1) & inter["domain"].isin(ds.source_domains)]
    per_user = (ds.item_entities[pos["item"].to_numpy()] >= 0).sum(1)
    expected = np.bincount(pos["user"].to_numpy(), weights=per_user, minlength=ds.num_users)
    np.testing.assert_array_equal(mask.sum(1).numpy(), expected)
    source_entities = set(ds.item_entities[pos["item"].to_numpy()].ravel().tolist())
    assert set(tokens[mask].tolist()) <= source_entities


def test_excluded_items_leave_every_history(history_ds: Dataset) -> None:
    ds = history_ds
    inter = ds.interactions
    pos = inter[(inter["label"] == 1) & inter["domain"].isin(ds.source_domains)]
    excluded = np.zeros(ds.num_items, dtype=bool)
    excluded[pos["item"].unique()[::3]] = True
    index = HistoryIndex(ds, history_length=1000, exclude_items=excluded)
    users = np.arange(ds.num_users)
    tokens, mask = index.lookup(users, np.full(ds.num_users, np.inf))
    kept = pos[~excluded[pos["item"].to_numpy()]]
    per_user = (ds.item_entities[kept["item"].to_numpy()] >= 0).sum(1)
    expected = np.bincount(kept["user"].to_numpy(), weights=per_user, minlength=ds.num_users)
    np.testing.assert_array_equal(mask.sum(1).numpy(), expected)
    _, full = HistoryIndex(ds, history_length=1000).lookup(users, np.full(ds.num_users, np.inf))
    assert 0 < mask.sum() < full.sum()


def test_user_without_history_is_all_padding(history_ds: Dataset) -> None:
    ds = history_ds
    loner = int(ds.index_of("user", ["loner"])[0])
    index = HistoryIndex(ds, history_length=6)
    tokens, mask = index.lookup(np.array([loner, 0]), np.array([1e9, -1.0]))
    assert (tokens == ds.num_entities).all()  # no source rows; and nothing before t = -1
    assert not mask.any()
    assert index.pad == ds.num_entities


def test_padding_is_on_the_left_and_masked(history_ds: Dataset) -> None:
    ds = history_ds
    index = HistoryIndex(ds, history_length=30)
    tokens, mask = index.lookup(np.arange(ds.num_users), np.full(ds.num_users, 600.0))
    for block in range(3):
        m = mask[:, block * 30 : (block + 1) * 30]
        t = tokens[:, block * 30 : (block + 1) * 30]
        assert (m.int().diff(dim=1) >= 0).all()  # False... then True...
        assert ((t == ds.num_entities) == ~m).all()


def test_restricted_source_domains(history_ds: Dataset) -> None:
    ds = history_ds
    index = HistoryIndex(ds, history_length=4, source_domains=[1])
    assert index.sequence_length == 4
    users, times = _queries(ds, 100, seed=5)
    tokens, mask = index.lookup(users, times)
    for b, (u, t) in enumerate(zip(users, times, strict=True)):
        ref_tokens, ref_mask = _reference(ds, int(u), float(t), 4, [1])
        np.testing.assert_array_equal(tokens[b].numpy(), ref_tokens)
        np.testing.assert_array_equal(mask[b].numpy(), ref_mask)


def test_recent_items_are_the_latest_before_the_time() -> None:
    """RecentItems: a user's last L codes strictly before the query time, newest last, 0 pads,
    checked against a direct filter of the rows."""
    from peace.data.history import RecentItems

    rng = np.random.default_rng(0)
    users = rng.integers(0, 5, 80)
    times = rng.integers(0, 20, 80).astype(float)
    codes = rng.integers(1, 30, 80)
    recent = RecentItems(users, times, codes, length=3, num_users=6)
    q_users = np.array([0, 1, 2, 3, 4, 5, 0, 1])
    q_times = np.array([0.0, 5.0, 10.0, 19.0, 20.0, 7.0, np.inf, 10.5])
    got = recent.lookup(q_users, q_times)
    assert got.shape == (8, 3)
    for row, (u, t) in enumerate(zip(q_users, q_times, strict=True)):
        keep = (users == u) & (times < t)
        order = np.lexsort((codes[keep], times[keep]))
        expected = list(codes[keep][order][-3:])
        assert got[row].tolist() == [0] * (3 - len(expected)) + expected, (u, t)
    assert got[5].tolist() == [0, 0, 0]  # user 5 has no rows
    with pytest.raises(ValueError, match="length"):
        RecentItems(users, times, codes, length=0, num_users=6)


def test_pair_search_is_the_first_row_not_below_the_query() -> None:
    rng = np.random.default_rng(0)
    keys = np.sort(rng.integers(0, 30, 500))
    times = rng.integers(0, 40, 500).astype(np.float64)  # many equal times
    order = np.lexsort((times, keys))
    keys, times = keys[order], times[order]
    search = _PairSearch(keys, times)
    q_keys = rng.integers(-1, 32, 400)  # keys before, between and after the rows' keys too
    q_times = np.concatenate([rng.integers(-5, 45, 396).astype(np.float64), [np.inf] * 2, [0, 39]])
    rows = list(zip(keys.tolist(), times.tolist(), strict=True))
    expected = [
        next((i for i, row in enumerate(rows) if row >= (k, t)), len(rows))
        for k, t in zip(q_keys.tolist(), q_times.tolist(), strict=True)
    ]
    assert search(q_keys, q_times).tolist() == expected
    assert _PairSearch(np.zeros(0, np.int64), np.zeros(0))(q_keys, q_times).tolist() == [0] * 400


def test_row_order_is_the_same_with_and_without_the_packed_key() -> None:
    rng = np.random.default_rng(1)
    n = 2_000
    domain, user = rng.integers(0, 3, n), rng.integers(0, 50, n)
    rank, item = rng.integers(0, 40, n), rng.integers(0, 30, n)  # many equal rows: stable
    packed = _sort_rows(domain, user, rank, item, num_users=50, num_items=30)
    fallback = _sort_rows(domain, user, rank, item, num_users=50, num_items=2**60)
    order = np.lexsort((item, rank, user, domain))
    expected = [a[order].tolist() for a in (domain, user, rank, item)]
    assert [a.tolist() for a in packed] == expected
    assert [a.tolist() for a in fallback] == expected
    assert all(a.dtype == np.int64 for a in packed)


def test_pair_search_with_shared_time_ranks() -> None:
    rng = np.random.default_rng(2)
    keys = np.sort(rng.integers(0, 20, 300))
    times = rng.integers(0, 30, 300).astype(np.float64)
    order = np.lexsort((times, keys))
    keys, times = keys[order], times[order]
    q_keys, q_times = rng.integers(-1, 22, 500), rng.uniform(-5, 40, 500)
    alone = _PairSearch(keys, times)(q_keys, q_times).tolist()
    # ranks of a superset of the rows' times, as HistoryIndex shares them between domains:
    # distinct values (halves) and whole-number offsets
    for superset in (np.arange(-3.0, 35.0, 0.5), np.arange(-3.0, 35.0)):
        ranks = _TimeRanks(np.concatenate([superset, times]))
        shared = _PairSearch(keys, times, ranks, ranks.rows[len(superset) :])
        assert shared(q_keys, q_times).tolist() == alone
    with pytest.raises(ValueError, match="row_ranks"):
        _PairSearch(keys, times, _TimeRanks(times))


def test_time_ranks_offsets_order_as_distinct_values() -> None:
    rng = np.random.default_rng(3)
    times = rng.integers(1_600_000_000, 1_600_000_500, 400).astype(np.float64)
    offsets, distinct = _TimeRanks(times), _TimeRanks(times, max_width=10)  # the span is 500
    assert offsets._start is not None and distinct._start is None
    assert offsets.rows.tolist() == (times - times.min()).astype(np.int64).tolist()
    queries = np.concatenate(
        [times[:50], times[:50] + 0.5, times[:50] - 1e-3, [-np.inf, np.inf, np.nan, 0.0, 2e9]]
    )
    for ranks in (offsets, distinct):
        at_or_after = ranks.rows[None, :] >= ranks.query(queries)[:, None]
        with np.errstate(invalid="ignore"):
            expected = times[None, :] >= np.where(np.isnan(queries), np.inf, queries)[:, None]
        assert (at_or_after == expected).all()
        assert ranks.query(queries).max() < ranks.width
        assert ranks.times(ranks.rows).tolist() == times.tolist()  # exact inverse
    for other in (times + 0.25, np.append(times, [np.inf, -np.inf]), np.array([-(2.0**51), 5.0])):
        assert _TimeRanks(other).times(_TimeRanks(other).rows).tolist() == other.tolist()
    # a negative start and fractional queries far from it
    far = _TimeRanks(np.array([-(2.0**51), 0.0, 5.0]))
    assert far._start is not None
    assert far.query(np.array([0.1, 0.0, 4.9, 5.0, 5.1])).tolist() == [
        2**51 + 1,
        2**51,
        2**51 + 5,
        2**51 + 5,
        2**51 + 6,
    ]
    # other times rank among their distinct values
    assert _TimeRanks(times + 0.25)._start is None
    assert _TimeRanks(np.append(times, np.inf))._start is None

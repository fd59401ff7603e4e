"""Chronological 70/15/15 splits of target domains and the pre-training cut-off (decision 1)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import toy_tables

from peace.data.contract import write_dataset
from peace.data.dataset import Dataset, load_dataset
from peace.data.splits import (
    first_times,
    pretrain_cutoff,
    pretrain_rows,
    ranking_targets,
    split_target,
    split_targets,
)

KEY = ["timestamp", "user", "item"]


@pytest.fixture(scope="module")
def ds(tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    tables = toy_tables(seed=1)
    inter = tables["interactions"]
    # Equal timestamps in a target domain, so that the (user, item) tie-break matters.
    t1 = inter[inter["domain"] == "t1"].index[:12]
    inter.loc[t1, "timestamp"] = 800
    tables["interactions"] = inter.drop_duplicates(["user", "item", "domain", "timestamp"])
    root: Path = tmp_path_factory.mktemp("splits")
    return load_dataset(write_dataset(tables, root / "ds"))


def _keys(frame: pd.DataFrame) -> list[tuple]:
    return list(frame[KEY].itertuples(index=False, name=None))


@pytest.mark.parametrize("fractions", [(0.7, 0.15, 0.15), (0.8, 0.1, 0.1), (0.5, 0.25, 0.25)])
def test_split_is_chronological_and_complete(ds: Dataset, fractions) -> None:
    for domain in ds.target_domains:
        split = split_target(ds, domain, fractions)
        rows = ds.interactions[ds.interactions["domain"] == domain]
        n = len(rows)
        sizes = (len(split.train), len(split.valid), len(split.test))
        assert sum(sizes) == n
        for size, fraction in zip(sizes, fractions, strict=True):
            assert abs(size - fraction * n) <= 1, (sizes, n)
        # Ordered by (timestamp, user, item) within and across the parts.
        keys = _keys(split.train) + _keys(split.valid) + _keys(split.test)
        assert keys == sorted(keys)
        assert len(set(keys)) == n  # no row twice, so no overlap between the parts
        assert set(keys) == set(_keys(rows))
        assert (split.train["domain"] == domain).all() and (split.test["domain"] == domain).all()
        pd.testing.assert_frame_equal(
            split.all, pd.concat([split.train, split.valid, split.test], ignore_index=True)
        )
        assert split.test_start == split.test["timestamp"].min()
        assert split.train["timestamp"].max() <= split.valid["timestamp"].min()
        assert split.valid["timestamp"].max() <= split.test["timestamp"].min()


def test_default_split_is_70_15_15(ds: Dataset) -> None:
    splits = split_targets(ds)
    assert sorted(splits) == ds.target_domains
    for domain, split in splits.items():
        n = (ds.interactions["domain"] == domain).sum()
        assert abs(len(split.train) - 0.7 * n) <= 1
        assert abs(len(split.valid) - 0.15 * n) <= 1
        assert abs(len(split.test) - 0.15 * n) <= 1


def test_ties_in_time_are_ordered_by_user_then_item(ds: Dataset) -> None:
    domain = ds.domain_index("t1")
    tied = split_target(ds, domain).all
    tied = tied[tied["timestamp"] == 800]
    assert len(tied) >= 5 and tied["user"].nunique() >= 2
    pairs = list(zip(tied["user"], tied["item"], strict=True))
    assert pairs == sorted(pairs)


@pytest.mark.parametrize("fractions", [(0.7, 0.2, 0.2), (0.7, 0.4, -0.1)])
def test_bad_fractions(ds: Dataset, fractions) -> None:
    with pytest.raises(ValueError, match="sum to 1"):
        split_target(ds, ds.target_domains[0], fractions)


def test_cutoff_is_the_earliest_test_start(ds: Dataset) -> None:
    splits = split_targets(ds)
    cutoff = pretrain_cutoff(splits)
    assert cutoff == min(float(s.test["timestamp"].min()) for s in splits.values())
    assert any(s.test_start == cutoff for s in splits.values())
    assert pretrain_cutoff(splits, "612.5") == 612.5
    assert pretrain_cutoff({}) == float("inf")
    with pytest.raises(ValueError, match="auto"):
        pretrain_cutoff(splits, "last tuesday")


def test_pretrain_rows_are_source_rows_strictly_before_the_cutoff(ds: Dataset) -> None:
    cutoff = pretrain_cutoff(split_targets(ds))
    rows = pretrain_rows(ds, cutoff)
    inter = ds.interactions
    assert rows["domain"].isin(ds.source_domains).all()
    assert (rows["timestamp"] < cutoff).all()
    expected = inter[inter["domain"].isin(ds.source_domains) & (inter["timestamp"] < cutoff)]
    assert len(rows) == len(expected) > 0
    assert set(_keys(rows)) == set(_keys(expected))
    assert _keys(rows) == sorted(_keys(rows))
    # A row exactly at the cut-off is excluded.
    at = float(inter.loc[inter["domain"].isin(ds.source_domains), "timestamp"].iloc[0])
    assert not (pretrain_rows(ds, at)["timestamp"] == at).any()
    assert (pretrain_rows(ds, np.nextafter(at, np.inf))["timestamp"] == at).any()


def test_first_times_and_ranking_targets() -> None:
    rows = pd.DataFrame(
        {
            "user": [2, 2, 5, 5, 5],
            "item": [10, 11, 10, 12, 12],
            "timestamp": [30.0, 20.0, 50.0, 40.0, 60.0],
            "label": [1, 0, 1, 1, 1],
        }
    )
    first = first_times(rows)
    assert first.to_dict("list") == {"user": [2, 5], "time": [20.0, 40.0]}
    targets = ranking_targets(rows)
    assert sorted(targets) == [2, 5]
    assert targets[2].tolist() == [10]  # the negative item 11 is not relevant
    assert targets[5].tolist() == [10, 12]

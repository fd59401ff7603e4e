"""Tests of the synthetic service platform (peace.data.synthetic)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from peace.data import synthetic
from peace.data.contract import MAX_ENTITIES_PER_ITEM, OPTIONAL_TABLES, REQUIRED_TABLES
from peace.data.synthetic import SIZES, SOURCE_DOMAINS, TARGET_DOMAINS, generate

TABLES = (*REQUIRED_TABLES, "user_profiles", "item_profiles")


def _read(root: Path) -> dict[str, pd.DataFrame]:
    return {name: pd.read_parquet(root / f"{name}.parquet") for name in TABLES}


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, dict[str, pd.DataFrame]]:
    root = tmp_path_factory.mktemp("synth") / "small"
    summary = generate(root, seed=7, size="small")
    return summary, _read(root)


def _roles(tables: dict[str, pd.DataFrame]) -> dict[str, str]:
    return dict(zip(tables["domains"]["domain"], tables["domains"]["role"], strict=True))


def test_tables_have_the_contract_columns(small):
    _, tables = small
    for name in TABLES:
        columns = REQUIRED_TABLES.get(name) or OPTIONAL_TABLES[name]
        assert set(columns) <= set(tables[name].columns), name
        assert len(tables[name]) > 0, name
    inter = tables["interactions"]
    assert inter["timestamp"].dtype == np.int64
    assert (inter["label"] == 1).all()
    for column in ("user", "item", "domain"):
        assert inter[column].map(type).eq(str).all()
    assert tables["user_profiles"].shape[1] >= 4 and tables["item_profiles"].shape[1] >= 3


def test_domains_and_roles(small):
    _, tables = small
    roles = _roles(tables)
    assert [d for d, r in roles.items() if r == "source"] == list(SOURCE_DOMAINS)
    targets = [d for d, r in roles.items() if r == "target"]
    assert targets == list(TARGET_DOMAINS) and len(targets) >= 3
    assert set(tables["interactions"]["domain"]) == set(roles)


def test_item_sets_are_disjoint_across_domains(small):
    _, tables = small
    pairs = tables["interactions"][["item", "domain"]].drop_duplicates()
    assert not pairs["item"].duplicated().any()


def test_item_entities(small):
    _, tables = small
    phi = tables["item_entities"]
    assert not phi.duplicated(["item", "entity"]).any()
    sizes = phi.groupby("item").size()
    assert sizes.max() <= MAX_ENTITIES_PER_ITEM and sizes.min() >= 1
    # Ranks are 0 .. k-1 for an item with k entities.
    ranks = phi.sort_values(["item", "rank"]).groupby("item")["rank"].apply(list)
    assert all(r == list(range(len(r))) for r in ranks)
    graph = set(tables["triplets"]["head"]) | set(tables["triplets"]["tail"])
    assert set(phi["entity"]) <= graph
    assert set(tables["interactions"]["item"]) <= set(phi["item"])


def test_entity_graph(small):
    _, tables = small
    trip = tables["triplets"]
    assert trip["relation"].nunique() >= 4
    assert {"category", "noise"} <= set(trip["relation"])
    assert not (trip["head"] == trip["tail"]).any()
    assert not trip.duplicated().any()


def test_no_duplicate_interactions_and_profiles(small):
    _, tables = small
    inter = tables["interactions"]
    assert not inter.duplicated(["user", "item", "domain", "timestamp"]).any()
    assert not inter.duplicated(["user", "item", "domain"]).any()
    users, items = tables["user_profiles"]["user"], tables["item_profiles"]["item"]
    assert users.is_unique and items.is_unique
    assert set(inter["user"]) <= set(users)
    assert set(tables["item_entities"]["item"]) == set(items)


def test_target_domains_are_later_sparser_and_warm(small):
    _, tables = small
    inter = tables["interactions"]
    inter = inter.assign(role=inter["domain"].map(_roles(tables)))
    source, target = inter[inter["role"] == "source"], inter[inter["role"] == "target"]
    assert target["timestamp"].min() >= source["timestamp"].min() + 20 * 86_400
    per_domain = inter.groupby("domain").size()
    assert per_domain[list(TARGET_DOMAINS)].max() * 3 < per_domain[list(SOURCE_DOMAINS)].min()
    target_users = target["user"].unique()
    assert np.isin(target_users, source["user"].unique()).mean() > 0.8


def test_small_sizes(small):
    summary, tables = small
    inter = tables["interactions"]
    assert summary["size"] == "small" and summary["seed"] == 7
    assert summary["interactions"] == inter.groupby("domain").size().to_dict()
    assert summary["users"] == inter["user"].nunique() == len(tables["user_profiles"])
    assert summary["triplets"] == len(tables["triplets"])
    assert 1_500 <= summary["users"] <= 2_000
    assert 1_500 <= summary["entities"] <= 3_000
    for domain in SOURCE_DOMAINS:
        assert 200 <= summary["items"][domain] <= 400
        assert 15_000 <= summary["interactions"][domain] <= 25_000
    for domain in TARGET_DOMAINS:
        assert 80 <= summary["items"][domain] <= 150
        assert 2_000 <= summary["interactions"][domain] <= 5_000


def _concept_of(tables: dict[str, pd.DataFrame]) -> dict[str, pd.Series]:
    """Concepts as the graph tells them: leaf -category-> hub -subcategory_of-> root hub.

    Returns:
        ``leaf``: the root hub of each leaf; ``hub``: the root hub of each hub; ``item``: the
        root hub of each item's rank-0 entity.
    """
    trip = tables["triplets"]
    category = trip[trip["relation"] == "category"].set_index("head")["tail"]
    hubs = pd.Index(category.unique())
    sub = trip[
        (trip["relation"] == "subcategory_of") & trip["head"].isin(hubs) & trip["tail"].isin(hubs)
    ]
    hub_root = pd.Series(hubs, index=hubs)
    hub_root.update(sub.set_index("head")["tail"])
    leaf_root = category.map(hub_root)
    first = tables["item_entities"].query("rank == 0").set_index("item")["entity"]
    return {"leaf": leaf_root, "hub": hub_root, "item": first.map(leaf_root)}


def test_source_interests_predict_target_behaviour(small):
    """Target interactions fall on the user's top source concepts far more often than chance."""
    _, tables = small
    inter = tables["interactions"]
    inter = inter.assign(
        role=inter["domain"].map(_roles(tables)),
        concept=inter["item"].map(_concept_of(tables)["item"]),
    )
    source = inter[inter["role"] == "source"]
    counts = source.groupby(["user", "concept"]).size().rename("n").reset_index()
    top = counts.sort_values(["user", "n"], ascending=[True, False]).groupby("user").head(3)
    top_pairs = pd.MultiIndex.from_frame(top[["user", "concept"]])
    target = inter[inter["role"] == "target"]

    def hit_rate(users: np.ndarray) -> float:
        pairs = pd.MultiIndex.from_arrays([users, target["concept"].to_numpy()])
        return float(pairs.isin(top_pairs).mean())

    observed = hit_rate(target["user"].to_numpy())
    chance = hit_rate(np.random.default_rng(0).permutation(target["user"].to_numpy()))
    assert observed > 0.5
    assert observed > 2.0 * chance


def test_item_entities_agree_with_the_graph(small):
    """An item's category hub (when phi has one) is the hub of its rank-0 leaf's concept."""
    _, tables = small
    concept = _concept_of(tables)
    phi = tables["item_entities"]
    hubs = phi[(phi["rank"] > 0) & phi["entity"].isin(concept["hub"].index)]
    agree = (
        hubs["entity"].map(concept["hub"]).to_numpy() == concept["item"][hubs["item"]].to_numpy()
    )
    assert len(hubs) > 100 and agree.mean() > 0.9


def test_same_seed_same_tables(tmp_path, small):
    summary, tables = small
    again = generate(tmp_path / "again", seed=7, size="small")
    assert again == summary
    for name, frame in _read(tmp_path / "again").items():
        pd.testing.assert_frame_equal(frame, tables[name], obj=name)


def test_different_seed_different_tables(tmp_path, small):
    _, tables = small
    generate(tmp_path / "other", seed=8, size="small")
    other = _read(tmp_path / "other")
    for name in ("interactions", "item_entities", "triplets", "user_profiles"):
        assert not other[name].equals(tables[name]), name


def test_unknown_size_names_the_valid_ones(tmp_path):
    with pytest.raises(ValueError, match="small, medium, large"):
        generate(tmp_path / "x", size="huge")


def test_interactions_stream_in_chunks(tmp_path, monkeypatch):
    """Chunks of users are written one after another and make a valid dataset."""
    spec = dataclasses.replace(SIZES["small"], chunk_users=400)
    monkeypatch.setitem(synthetic.SIZES, "small", spec)
    summary = generate(tmp_path / "chunked", seed=3, size="small")
    path = tmp_path / "chunked" / "interactions.parquet"
    assert pq.ParquetFile(path).metadata.num_row_groups == 5
    inter = pd.read_parquet(path)
    assert summary["interactions"] == inter.groupby("domain").size().to_dict()
    assert inter["user"].nunique() == spec.n_users
    assert not inter.duplicated(["user", "item", "domain", "timestamp"]).any()


def test_medium_and_large_parameters():
    """The larger sizes are set for ~1M and >10M interactions; large streams in many chunks."""
    for name, low, high in (("medium", 0.8e6, 2.0e6), ("large", 1.0e7, 4.0e7)):
        spec = SIZES[name]
        draws = spec.n_users * len(SOURCE_DOMAINS) * synthetic.SOURCE_PARTICIPATION
        draws *= spec.source_rate
        assert low <= draws <= high, name
        assert spec.source_items > 4 * spec.target_items
    medium, large = SIZES["medium"], SIZES["large"]
    assert 15_000 <= medium.n_users <= 25_000 and 15_000 <= medium.n_entities <= 25_000
    assert large.n_entities >= 100_000 and large.n_users // large.chunk_users >= 10

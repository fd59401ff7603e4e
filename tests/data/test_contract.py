"""The data contract: every broken dataset ends in one clear DataContractError; valid ones load."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import assert_refused, toy_tables

from peace.data.contract import DataContractError, read_chunks, table_path, write_dataset
from peace.data.dataset import load_dataset

Tables = dict[str, pd.DataFrame]


def _set(frame: pd.DataFrame, row: int, column: str, value: object) -> None:
    frame.loc[frame.index[row], column] = value


def _share_item(first: str, second: str) -> Callable[[Tables], None]:
    """Give a row of domain ``second`` the first item of domain ``first``."""

    def mutate(t: Tables) -> None:
        inter = t["interactions"]
        row = int(np.flatnonzero(inter["domain"].to_numpy() == second)[0])
        _set(inter, row, "item", f"{first}_i0")

    return mutate


def _drop_column(table: str, column: str) -> Callable[[Tables], None]:
    def mutate(t: Tables) -> None:
        t[table] = t[table].drop(columns=[column])

    return mutate


def _retyped(
    table: str, column: str, dtype: type, row: int, value: object
) -> Callable[[Tables], None]:
    """Cast ``column`` of ``table`` to ``dtype``, then set one of its cells to ``value``."""

    def mutate(t: Tables) -> None:
        frame = t[table]
        frame[column] = frame[column].astype(dtype)
        _set(frame, row, column, value)

    return mutate


def _repeated(table: str, row: int) -> Callable[[Tables], None]:
    """Append a copy of one row of ``table``."""

    def mutate(t: Tables) -> None:
        t[table] = pd.concat([t[table], t[table].iloc[[row]]], ignore_index=True)

    return mutate


_duplicate_row = _repeated("interactions", 3)


def _label(value: int) -> Callable[[Tables], None]:
    def mutate(t: Tables) -> None:
        _set(t["interactions"], 7, "label", value)

    return mutate


def _bad_role(t: Tables) -> None:
    _set(t["domains"], 1, "role", "sink")


def _no_entity(t: Tables) -> None:
    phi = t["item_entities"]
    t["item_entities"] = phi[phi["item"] != "t2_i5"]


def _unknown_entity(t: Tables) -> None:
    phi = t["item_entities"]
    _set(phi, int(np.flatnonzero(phi["item"].to_numpy() == "s2_i3")[0]), "entity", "ghost")


def _listed_domain_without_rows(t: Tables) -> None:
    t["domains"] = pd.concat(
        [t["domains"], pd.DataFrame({"domain": ["t3"], "role": ["target"]})], ignore_index=True
    )


def _domain_rows_removed(t: Tables) -> None:
    inter = t["interactions"]
    t["interactions"] = inter[inter["domain"] != "s2"]


def _too_many_entities(t: Tables) -> None:
    extra = pd.DataFrame({"item": ["s1_i0", "s1_i0"], "entity": ["e0_2", "e0_3"], "rank": [2, 3]})
    t["item_entities"] = pd.concat([t["item_entities"], extra], ignore_index=True)


def _unknown_domain(t: Tables) -> None:
    _set(t["interactions"], 9, "domain", "s9")


def _no_target(t: Tables) -> None:
    t["domains"]["role"] = "source"


# (mutation, file named, offending value quoted, words of the fix)
BROKEN = {
    "missing column": (_drop_column("interactions", "label"), "interactions", "'label'", "add"),
    "missing phi column": (_drop_column("item_entities", "rank"), "item_entities", "'rank'", "add"),
    "item in source and target": (_share_item("s1", "t1"), "interactions", "'s1_i0'", "own id"),
    "item in two sources": (_share_item("s2", "s3"), "interactions", "'s2_i0'", "own id"),
    "item in two targets": (_share_item("t1", "t2"), "interactions", "'t1_i0'", "own id"),
    "item in target and source": (_share_item("t2", "s1"), "interactions", "'t2_i0'", "own id"),
    "item without entity": (_no_entity, "item_entities", "'t2_i5'", "map every item"),
    "unknown entity": (_unknown_entity, "item_entities", "'ghost'", "add a triplet"),
    "listed domain, no rows": (_listed_domain_without_rows, "interactions", "'t3'", "remove it"),
    "domain rows removed": (_domain_rows_removed, "interactions", "'s2'", "remove it"),
    "NaN timestamp": (
        _retyped("interactions", "timestamp", float, 5, np.nan),
        "interactions",
        "row 5: timestamp nan",
        "numeric timestamp",
    ),
    "text timestamp": (
        _retyped("interactions", "timestamp", str, 5, "yesterday"),
        "interactions",
        "row 5: timestamp 'yesterday'",
        "numeric timestamp",
    ),
    "duplicate row": (_duplicate_row, "interactions", "user=", "drop duplicate rows"),
    "label 2": (_label(2), "interactions", "row 7: label 2 ", "use 1 for a positive"),
    "label -1": (_label(-1), "interactions", "row 7: label -1 ", "use 1 for a positive"),
    "bad role": (_bad_role, "domains", "'sink'", "set it to source or target"),
    "four entities": (_too_many_entities, "item_entities", "'s1_i0' maps to 4", "at most 3"),
    "unknown domain": (_unknown_domain, "interactions", "row 9: domain 's9'", "add it"),
    "domain listed twice": (
        _repeated("domains", 0),
        "domains",
        "'s1' is listed twice",
        "keep one row",
    ),
    "no target domain": (_no_target, "domains", "'target'", "at least one of each"),
    "rank not a number": (
        _retyped("item_entities", "rank", str, 4, "first"),
        "item_entities",
        "row 4: rank 'first'",
        "number each",
    ),
    "entity listed twice": (
        _repeated("item_entities", 2),
        "item_entities",
        "twice",
        "keep one row",
    ),
}


@pytest.mark.parametrize("case", list(BROKEN), ids=list(BROKEN))
def test_broken_dataset_raises_one_clear_error(tmp_path: Path, case: str) -> None:
    mutate, file, value, fix = BROKEN[case]
    tables = toy_tables()
    mutate(tables)
    assert_refused(write_dataset(tables, tmp_path / "broken"), file, value, fix)


def test_duplicate_row_message_names_the_row(tmp_path: Path) -> None:
    tables = toy_tables()
    _duplicate_row(tables)
    r = tables["interactions"].iloc[-1]
    with pytest.raises(DataContractError) as info:
        load_dataset(write_dataset(tables, tmp_path / "dup"))
    message = str(info.value)
    assert f"row {len(tables['interactions']) - 1} repeats" in message
    assert f"user={r['user']!r}, item={r['item']!r}" in message


def _block_tables() -> Tables:
    """The toy tables with 16 users (512 interactions, every item seen): reading them in blocks
    of a few rows costs a few milliseconds a block, so block tests use fewer rows."""
    return toy_tables(n_users=16)


def _message(root: Path, **load: int) -> str:
    with pytest.raises(DataContractError) as info:
        load_dataset(root, **load)
    return str(info.value)


@pytest.mark.parametrize("case", list(BROKEN), ids=list(BROKEN))
def test_read_in_small_blocks_the_same_error_names_the_same_row(tmp_path: Path, case: str) -> None:
    """The interactions are read block by block; a block of 5 rows (the table has hundreds)
    refuses every broken dataset with the message of the whole-table read, rows numbered as in
    the file."""
    mutate = BROKEN[case][0]
    tables = _block_tables()
    mutate(tables)
    root = write_dataset(tables, tmp_path / "broken")
    assert _message(root, chunk_rows=5) == _message(root)


def test_error_in_a_later_block_names_the_files_row(tmp_path: Path) -> None:
    tables = toy_tables()
    _set(tables["interactions"], 23, "label", 3)
    root = _as_csv(tables, tmp_path / "csv")
    assert "interactions.csv: row 23: label '3' " in _message(root, chunk_rows=10)
    lines = (root / "interactions.csv").read_text().splitlines()
    lines[38] = "," + lines[38].split(",", 1)[1]  # row 37 loses its user; row 23 comes first
    (root / "interactions.csv").write_text("\n".join(lines) + "\n")
    message = _message(root, chunk_rows=10)
    assert "interactions.csv: row 23: label '3' " in message
    _set(tables["interactions"], 23, "label", 1)
    root = write_dataset(tables, tmp_path / "pq")
    frame = pd.read_parquet(root / "interactions.parquet")
    frame.loc[37, "user"] = " "
    frame.to_parquet(root / "interactions.parquet", index=False, row_group_size=8)
    message = _message(root, chunk_rows=10)
    assert message.startswith(str(root / "interactions.parquet") + ": empty 'user' at row 37")


@pytest.mark.parametrize("form", ["parquet", "csv"])
def test_blocks_and_row_groups_load_the_same_dataset(tmp_path: Path, form: str) -> None:
    tables = _block_tables()
    root = write_dataset(tables, tmp_path / "ds")
    if form == "parquet":  # many small row groups, read in blocks that cut across them
        frame = pd.read_parquet(root / "interactions.parquet")
        frame.to_parquet(root / "interactions.parquet", index=False, row_group_size=16)
    else:
        root = _as_csv(tables, tmp_path / "csv")
    whole = load_dataset(root)
    for rows in (1, 7, 100):
        blocks = load_dataset(root, chunk_rows=rows)
        pd.testing.assert_frame_equal(blocks.interactions, whole.interactions)
        for name in ("users", "items", "entities", "item_domain", "item_entities", "triplets"):
            np.testing.assert_array_equal(getattr(blocks, name), getattr(whole, name))
    raw = tables["interactions"]
    assert list(whole.users[whole.interactions["user"]]) == list(raw["user"])
    assert list(whole.items[whole.interactions["item"]]) == list(raw["item"])


def test_read_chunks_numbers_the_files_rows(tmp_path: Path) -> None:
    root = write_dataset(toy_tables(), tmp_path / "ds")
    whole = pd.read_parquet(root / "interactions.parquet")
    blocks = list(read_chunks(root, "interactions", rows=50))
    assert [len(b) for b in blocks[:-1]] == [50] * (len(blocks) - 1)
    assert sum(len(b) for b in blocks) == len(whole)
    joined = pd.concat(blocks)
    assert list(joined.index) == list(range(len(whole)))
    assert list(joined["user"]) == list(whole["user"].astype(str))
    (root / "interactions.parquet").unlink()
    with pytest.raises(DataContractError, match="missing table 'interactions'"):
        next(read_chunks(root, "interactions"))


@pytest.mark.parametrize("table", ["interactions", "domains", "item_entities", "triplets"])
def test_missing_table(tmp_path: Path, table: str) -> None:
    root = write_dataset(toy_tables(), tmp_path / "ds")
    (root / f"{table}.parquet").unlink()
    with pytest.raises(DataContractError) as info:
        load_dataset(root)
    message = str(info.value)
    assert message.startswith(str(root / f"{table}.parquet"))
    assert f"missing table {table!r}" in message
    assert "create it" in message


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(DataContractError, match="no such dataset folder"):
        load_dataset(tmp_path / "nowhere")


def test_unreadable_table(tmp_path: Path) -> None:
    root = write_dataset(toy_tables(), tmp_path / "ds")
    (root / "triplets.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(DataContractError, match="triplets.parquet: cannot be read as PARQUET"):
        load_dataset(root)


def test_write_dataset_requires_the_required_tables(tmp_path: Path) -> None:
    tables = toy_tables()
    del tables["triplets"]
    with pytest.raises(DataContractError, match="'triplets' was not given"):
        write_dataset(tables, tmp_path / "ds")


# ------------------------------------------------------------------------- valid datasets


def _as_csv(tables: Tables, root: Path) -> Path:
    root.mkdir(parents=True)
    for name, frame in tables.items():
        frame.to_csv(root / f"{name}.csv", index=False)
    return root


def test_csv_is_accepted_and_loads_like_parquet(tmp_path: Path) -> None:
    tables = toy_tables()
    from_parquet = load_dataset(write_dataset(tables, tmp_path / "pq"))
    from_csv = load_dataset(_as_csv(tables, tmp_path / "csv"))
    for name in ("users", "items", "entities", "relations", "item_domain", "item_entities"):
        np.testing.assert_array_equal(getattr(from_csv, name), getattr(from_parquet, name))
    np.testing.assert_array_equal(from_csv.triplets, from_parquet.triplets)
    pd.testing.assert_frame_equal(from_csv.interactions, from_parquet.interactions)
    assert from_csv.domains == from_parquet.domains and from_csv.roles == from_parquet.roles
    for side in ("user_profiles", "item_profiles"):
        a, b = getattr(from_csv, side), getattr(from_parquet, side)
        assert a.columns == b.columns and a.cardinalities == b.cardinalities
        np.testing.assert_array_equal(a.codes, b.codes)


def test_parquet_is_preferred_over_csv(tmp_path: Path) -> None:
    root = write_dataset(toy_tables(), tmp_path / "ds")
    (root / "triplets.csv").write_text("head,relation,tail\nx,y,z\n")
    assert table_path(root, "triplets") == root / "triplets.parquet"
    (root / "triplets.parquet").unlink()
    assert table_path(root, "triplets") == root / "triplets.csv"


def test_csv_with_an_empty_id_names_the_row(tmp_path: Path) -> None:
    root = _as_csv(toy_tables(), tmp_path / "csv")
    lines = (root / "triplets.csv").read_text().splitlines()
    lines[3] = "," + lines[3].split(",", 1)[1]  # row 2 loses its head
    (root / "triplets.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataContractError, match=r"triplets.csv: empty 'head' at row 2"):
        load_dataset(root)


def test_ids_are_mapped_to_contiguous_integers(tmp_path: Path) -> None:
    tables = toy_tables()
    ds = load_dataset(write_dataset(tables, tmp_path / "ds"))
    inter, raw = ds.interactions, tables["interactions"].reset_index(drop=True)

    assert list(ds.users) == sorted(raw["user"].unique())
    assert list(ds.items) == sorted(raw["item"].unique())
    assert set(inter["user"]) == set(range(ds.num_users))
    assert set(inter["item"]) == set(range(ds.num_items))
    assert inter["domain"].between(0, len(ds.domains) - 1).all()
    for column in ("user", "item", "domain", "timestamp", "label"):
        assert inter[column].dtype.kind in "if", column
    # Decoding the integers gives the original rows back, in their order.
    assert list(ds.users[inter["user"]]) == list(raw["user"])
    assert list(ds.items[inter["item"]]) == list(raw["item"])
    assert [ds.domains[d] for d in inter["domain"]] == list(raw["domain"])
    np.testing.assert_array_equal(inter["timestamp"], raw["timestamp"].astype(float))
    # Item -> domain, phi in rank order, and the graph.
    for item, domain in zip(raw["item"], raw["domain"], strict=True):
        assert ds.domains[ds.item_domain[ds.index_of("item", [item])[0]]] == domain
    phi = tables["item_entities"].sort_values(["item", "rank"])
    for item, group in phi.groupby("item"):
        row = ds.item_entities[ds.index_of("item", [item])[0]]
        assert list(ds.entities[row[row >= 0]]) == list(group["entity"])
        assert (row[len(group) :] == -1).all()
    trip = tables["triplets"]
    assert list(ds.entities[ds.triplets[:, 0]]) == list(trip["head"])
    assert list(ds.relations[ds.triplets[:, 1]]) == list(trip["relation"])
    assert list(ds.entities[ds.triplets[:, 2]]) == list(trip["tail"])
    assert ds.index_of("user", ["u0", "nobody"]).tolist() == [list(ds.users).index("u0"), -1]
    assert ds.source_domains == [0, 1, 2] and ds.target_domains == [3, 4]


def test_phi_is_ordered_by_rank_not_by_row(tmp_path: Path) -> None:
    tables = toy_tables()
    tables["item_entities"] = tables["item_entities"].iloc[::-1]  # rank 1 rows come first
    ds = load_dataset(write_dataset(tables, tmp_path / "ds"))
    row = ds.item_entities[ds.index_of("item", ["s1_i3"])[0]]
    assert list(ds.entities[row[:2]]) == ["e3_4", "e3_0"]


def test_integer_ids_on_disk_become_strings(tmp_path: Path) -> None:
    tables = toy_tables()
    inter = tables["interactions"]
    inter["user"] = inter["user"].str[1:].astype(int)  # "u12" -> 12
    tables["user_profiles"]["user"] = tables["user_profiles"]["user"].str[1:].astype(int)
    ds = load_dataset(write_dataset(tables, tmp_path / "ds"))
    assert all(isinstance(u, str) for u in ds.users)
    assert ds.index_of("user", [12])[0] >= 0
    assert (ds.user_profiles.codes > 0).all()


def test_profiles_are_encoded(tmp_path: Path) -> None:
    tables = toy_tables()
    uprof = tables["user_profiles"]
    tables["user_profiles"] = pd.concat(
        [uprof[uprof["user"] != "u3"], pd.DataFrame({"user": ["stranger"], "group": ["9"]})]
    )
    iprof = tables["item_profiles"]
    _set(iprof, 4, "brand", None)  # a missing value is unknown
    ds = load_dataset(write_dataset(tables, tmp_path / "ds"), profile_bins=4)

    users = ds.user_profiles
    assert users.columns == ["group"]
    assert users.codes.shape == (ds.num_users, 1)
    assert users.cardinalities == [3]  # unknown + "0" + "1"; "9" belongs to no known user
    u3 = ds.index_of("user", ["u3"])[0]
    assert users.codes[u3, 0] == 0
    others = np.delete(users.codes[:, 0], u3)
    assert set(others) == {1, 2}
    group = uprof.set_index("user")["group"]
    for u, code in zip(ds.users, users.codes[:, 0], strict=True):
        if u != "u3":
            assert code == {"0": 1, "1": 2}[group[u]]

    items = ds.item_profiles
    assert items.columns == ["brand", "price"]
    raw = iprof.set_index("item")
    idx = ds.index_of("item", list(raw.index))
    brand, price = items.codes[idx, 0], items.codes[idx, 1]
    assert items.cardinalities[0] == 4  # unknown + three brands
    assert brand[4] == 0 and (np.delete(brand, 4) >= 1).all()
    for b in ("0", "1", "2"):  # one code per brand, distinct across brands
        assert len(set(brand[(raw["brand"] == b).to_numpy()])) == 1
    assert len(set(np.delete(brand, 4))) == 3
    # price has 12 values > 4 bins: quantile-binned, codes follow the order of prices.
    assert items.cardinalities[1] == 5  # unknown + 4 bins
    order = np.argsort(raw["price"].to_numpy(), kind="stable")
    assert (np.diff(price[order]) >= 0).all()
    assert set(price) == {1, 2, 3, 4}


def test_numeric_profile_with_a_missing_value_is_still_binned(tmp_path: Path) -> None:
    tables = toy_tables()
    _set(tables["item_profiles"], 0, "price", np.nan)
    ds = load_dataset(write_dataset(tables, tmp_path / "ds"), profile_bins=4)
    raw = tables["item_profiles"]
    codes = ds.item_profiles.codes[ds.index_of("item", list(raw["item"])), 1]
    assert codes[0] == 0
    assert ds.item_profiles.cardinalities[1] == 5
    assert set(codes[1:]) == {1, 2, 3, 4}


def test_summary_counts_every_row(tmp_path: Path) -> None:
    tables = toy_tables()
    ds = load_dataset(write_dataset(tables, tmp_path / "ds"))
    summary = ds.summary().set_index("domain")
    counts = tables["interactions"]["domain"].value_counts()
    for name in ds.domains:
        assert summary.loc[name, "interactions"] == counts[name]
        assert summary.loc[name, "items"] == 12
    assert summary["interactions"].sum() == len(tables["interactions"])

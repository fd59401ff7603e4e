"""Broken datasets: each one ends in one clear error (file, value, fix) and exit code 2 from
``peace data check``; none gives a traceback and none is accepted."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import assert_refused, toy_tables
from typer.testing import CliRunner

from peace.cli import app as peace_app
from peace.data.contract import DataContractError, write_dataset
from peace.data.dataset import load_dataset

Tables = dict[str, pd.DataFrame]
Mutation = Callable[[Tables], None]
FEATURES = "entity_features"


def _set(table: str, row: int, column: str, value: object) -> Mutation:
    def mutate(t: Tables) -> None:
        frame = t[table]
        if not isinstance(value, str) and frame[column].dtype == object:
            frame[column] = frame[column].astype(object)
        elif isinstance(value, float) and frame[column].dtype.kind in "iu":
            frame[column] = frame[column].astype(float)
        elif isinstance(value, str) and frame[column].dtype != object:
            frame[column] = frame[column].astype(str)
        frame.loc[frame.index[row], column] = value

    return mutate


def _features(extra: dict[str, object] | None = None, columns: int = 2) -> Mutation:
    """Add an entity_features table (every graph entity, ``columns`` features), then edit it."""

    def mutate(t: Tables) -> None:
        trip = t["triplets"]
        entities = sorted(set(trip["head"]) | set(trip["tail"]))
        frame = pd.DataFrame({"entity": entities})
        for j in range(columns):
            frame[f"f{j}"] = np.linspace(0.0, 1.0, len(entities)) + j
        for (row, column), value in (extra or {}).items():
            if isinstance(value, str):
                frame[column] = frame[column].astype(str)
            frame.loc[row, column] = value
        t[FEATURES] = frame

    return mutate


def _duplicate_feature_row(t: Tables) -> None:
    _features()(t)
    t[FEATURES] = pd.concat([t[FEATURES], t[FEATURES].iloc[[4]]], ignore_index=True)


def _source_labels_zero(t: Tables) -> None:
    inter = t["interactions"]
    inter.loc[inter["domain"].str.startswith("s"), "label"] = 0


def _target_rows(n: int) -> Mutation:
    def mutate(t: Tables) -> None:
        inter = t["interactions"]
        keep = inter[inter["domain"] == "t2"].sort_values("timestamp").index[:n]
        t["interactions"] = inter[(inter["domain"] != "t2") | inter.index.isin(keep)]

    return mutate


def _target_negative(t: Tables) -> None:
    inter = t["interactions"]
    inter.loc[inter["domain"] == "t2", "label"] = 0


def _target_late_negatives(t: Tables) -> None:
    """t2's last 40% of rows are negatives: validation and test have no positive row."""
    inter = t["interactions"]
    rows = inter[inter["domain"] == "t2"].sort_values(["timestamp", "user", "item"])
    inter.loc[rows.index[int(len(rows) * 0.6) :], "label"] = 0


def _rename_domain(old: str, new: str) -> Mutation:
    def mutate(t: Tables) -> None:
        t["domains"]["domain"] = t["domains"]["domain"].replace(old, new)
        t["interactions"]["domain"] = t["interactions"]["domain"].replace(old, new)

    return mutate


def _long_id(table: str, column: str, length: int) -> Mutation:
    def mutate(t: Tables) -> None:
        old = str(t[table][column].iloc[0])
        new = old + "x" * (length - len(old))
        for name, frame in t.items():
            for col in frame.columns:
                if col in ("user", "item", "entity", "head", "tail", "relation"):
                    if frame[col].astype(str).eq(old).any() and col in (column, "entity"):
                        frame[col] = frame[col].astype(str).replace(old, new)
            t[name] = frame

    return mutate


def _share_item(t: Tables) -> None:
    inter = t["interactions"]
    row = int(np.flatnonzero(inter["domain"].to_numpy() == "t1")[0])
    inter.loc[inter.index[row], "item"] = "s1_i0"


def _drop(table: str, column: str | None = None) -> Mutation:
    def mutate(t: Tables) -> None:
        if column is None:
            del t[table]
        else:
            t[table] = t[table].drop(columns=[column])

    return mutate


def _concat(table: str, rows: dict[str, list]) -> Mutation:
    def mutate(t: Tables) -> None:
        t[table] = pd.concat([t[table], pd.DataFrame(rows)], ignore_index=True)

    return mutate


def _repeat_row(table: str, row: int) -> Mutation:
    def mutate(t: Tables) -> None:
        t[table] = pd.concat([t[table], t[table].iloc[[row]]], ignore_index=True)

    return mutate


def _no_entity(t: Tables) -> None:
    phi = t["item_entities"]
    t["item_entities"] = phi[phi["item"] != "t2_i5"]


def _all_roles(role: str) -> Mutation:
    def mutate(t: Tables) -> None:
        t["domains"]["role"] = role

    return mutate


# name: (mutation, file named, value quoted in the message, words of the fix)
CASES: dict[str, tuple[Mutation, str, str, str]] = {
    "inf feature": (_features({(3, "f1"): np.inf}), FEATURES, "'f1'", "finite"),
    "-inf feature": (_features({(5, "f0"): -np.inf}), FEATURES, "-inf", "finite"),
    "NaN feature": (_features({(2, "f0"): np.nan}), FEATURES, "is nan", "finite"),
    "text feature": (_features({(2, "f0"): "big"}), FEATURES, "is 'big'", "finite"),
    "features without a feature column": (
        _features(columns=0),
        FEATURES,
        "only the 'entity' column",
        "add columns",
    ),
    "duplicate feature rows": (_duplicate_feature_row, FEATURES, "two feature rows", "keep one"),
    "all source labels 0": (_source_labels_zero, "interactions", "label 1", "add some"),
    "target with 1 row": (_target_rows(1), "interactions", "'t2' has 1 rows", "Add positive"),
    "target with 4 rows": (_target_rows(4), "interactions", "'t2' has 4 rows", "Add positive"),
    "target only negatives": (_target_negative, "interactions", "0 positive", "Add positive"),
    "target positives only early": (
        _target_late_negatives,
        "interactions",
        "validation",
        "Add positive",
    ),
    "rank 0.5": (_set("item_entities", 4, "rank", 0.5), "item_entities", "rank 0.5", "number"),
    "rank -7": (_set("item_entities", 4, "rank", -7), "item_entities", "rank -7", "number"),
    "rank text": (_set("item_entities", 4, "rank", "first"), "item_entities", "'first'", "number"),
    "rank inf": (_set("item_entities", 4, "rank", np.inf), "item_entities", "inf", "number"),
    "empty domain id": (_set("interactions", 3, "domain", ""), "interactions", "'domain'", "needs"),
    "blank item id": (_set("interactions", 3, "item", "  "), "interactions", "'  '", "needs"),
    "empty user id": (_set("interactions", 0, "user", ""), "interactions", "'user'", "needs"),
    "empty relation id": (_set("triplets", 2, "relation", ""), "triplets", "'relation'", "needs"),
    "empty profile id": (_set("user_profiles", 1, "user", ""), "user_profiles", "'user'", "needs"),
    "300-character user id": (
        _long_id("interactions", "user", 300),
        "interactions",
        "300 characters",
        "shorten",
    ),
    "1 MB entity id": (
        _long_id("triplets", "head", 1 << 20),
        "item_entities",
        "1048576 characters",
        "shorten",
    ),
    "right-to-left override domain": (
        _rename_domain("t2", "\u202e"),
        "domains",
        "'\\u202e'",
        "printable",
    ),
    "control character domain": (_rename_domain("t1", "t\x01"), "domains", "\\x01", "printable"),
    "NaN timestamp": (
        _set("interactions", 5, "timestamp", np.nan),
        "interactions",
        "timestamp nan",
        "numeric",
    ),
    "inf timestamp": (
        _set("interactions", 5, "timestamp", np.inf),
        "interactions",
        "timestamp inf",
        "numeric",
    ),
    "text timestamp": (
        _set("interactions", 5, "timestamp", "noon"),
        "interactions",
        "'noon'",
        "numeric",
    ),
    "label 2": (_set("interactions", 7, "label", 2), "interactions", "label 2", "use 1"),
    "label 0.5": (_set("interactions", 7, "label", 0.5), "interactions", "label 0.5", "use 1"),
    "label text": (_set("interactions", 7, "label", "yes"), "interactions", "'yes'", "use 1"),
    "duplicate interaction": (_repeat_row("interactions", 3), "interactions", "user=", "drop"),
    "unknown domain": (_set("interactions", 9, "domain", "s9"), "interactions", "'s9'", "add it"),
    "bad role": (_set("domains", 1, "role", "sink"), "domains", "'sink'", "source or target"),
    "no target domain": (_all_roles("source"), "domains", "'target'", "at least one"),
    "no source domain": (_all_roles("target"), "domains", "'source'", "at least one"),
    "domain listed twice": (_repeat_row("domains", 0), "domains", "'s1'", "keep one row"),
    "domain without rows": (
        _concat("domains", {"domain": ["t3"], "role": ["target"]}),
        "interactions",
        "'t3'",
        "remove it",
    ),
    "item in two domains": (_share_item, "interactions", "'s1_i0'", "own id"),
    "item without entity": (_no_entity, "item_entities", "'t2_i5'", "map every item"),
    "unknown entity": (
        _set("item_entities", 6, "entity", "ghost"),
        "item_entities",
        "'ghost'",
        "add a triplet",
    ),
    "four entities": (
        _concat(
            "item_entities", {"item": ["s1_i0"] * 2, "entity": ["e0_2", "e0_3"], "rank": [2, 3]}
        ),
        "item_entities",
        "maps to 4",
        "at most 3",
    ),
    "entity twice for an item": (
        _repeat_row("item_entities", 2),
        "item_entities",
        "twice",
        "keep one",
    ),
    "two profile rows": (
        _repeat_row("user_profiles", 3),
        "user_profiles",
        "two profile rows",
        "keep one",
    ),
    "missing column": (_drop("interactions", "label"), "interactions", "'label'", "add"),
    "missing table": (_drop("triplets"), "triplets", "'triplets'", "create it"),
}


def _write(tables: Tables, root: Path) -> Path:
    root.mkdir(parents=True)
    for name, frame in tables.items():
        frame.to_parquet(root / f"{name}.parquet", index=False)
    return root


def test_there_are_at_least_30_cases() -> None:
    assert len(CASES) >= 30


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_broken_dataset_gives_one_clear_error(tmp_path: Path, case: str) -> None:
    mutate, file, value, fix = CASES[case]
    tables = toy_tables()
    mutate(tables)
    root = _write(tables, tmp_path / "broken")
    assert_refused(root, file, value, fix)
    # The command line: one line, exit code 2, no traceback.
    result = CliRunner().invoke(peace_app, ["data", "check", str(root)])
    assert result.exit_code == 2, result.output[:300]
    assert "Traceback" not in result.output
    assert result.output.strip().startswith("error:") and result.output.strip().count("\n") == 0


CSV_CASES = {
    "empty domain id": ("interactions", 3, "domain", "empty 'domain' at row 3"),
    "empty relation id": ("triplets", 2, "relation", "empty 'relation' at row 2"),
}


@pytest.mark.parametrize("case", list(CSV_CASES), ids=list(CSV_CASES))
def test_csv_and_parquet_refuse_the_same_empty_id(tmp_path: Path, case: str) -> None:
    table, row, column, words = CSV_CASES[case]
    tables = toy_tables()
    _set(table, row, column, "")(tables)
    csv = tmp_path / "csv"
    csv.mkdir()
    for name, frame in tables.items():
        frame.to_csv(csv / f"{name}.csv", index=False)
    for root, suffix in ((csv, "csv"), (write_dataset(tables, tmp_path / "pq"), "parquet")):
        with pytest.raises(DataContractError, match=words) as info:
            load_dataset(root)
        assert str(info.value).startswith(str(root / f"{table}.{suffix}"))


def test_the_service_answers_every_id_the_contract_accepts() -> None:
    from peace.data.contract import MAX_ID_LENGTH
    from peace.serve.app import MAX_ID_LENGTH as SERVED

    assert MAX_ID_LENGTH == SERVED

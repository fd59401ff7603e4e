"""Load a dataset folder, validate it against the contract, and map ids to contiguous integers.

Example::

    ds = load_dataset("data/synthetic-small")
    ds.source_domains, ds.target_domains   # domain indices
    ds.item_entities                       # [num_items, 3] entity indices, -1 = none
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from peace.data.contract import (
    CHUNK_ROWS,
    DEFAULT_SPLIT,
    MAX_ENTITIES_PER_ITEM,
    ROLES,
    DataContractError,
    read_chunks,
    read_table,
    table_error,
    table_path,
)
from peace.data.profiles import ProfileTable, encode_profiles


@dataclass
class Dataset:
    """A validated dataset with contiguous integer ids (index -> original string id)."""

    root: Path
    users: np.ndarray
    items: np.ndarray
    entities: np.ndarray
    relations: np.ndarray
    domains: list[str]
    roles: list[str]
    interactions: pd.DataFrame
    """Columns user, item, domain (ints), timestamp (float64), label (int8)."""
    item_domain: np.ndarray
    item_entities: np.ndarray
    """[num_items, MAX_ENTITIES_PER_ITEM] entity indices in rank order, -1 padded."""
    triplets: np.ndarray
    """[num_triplets, 3] head, relation, tail indices."""
    entity_features: np.ndarray | None = None
    user_profiles: ProfileTable | None = None
    item_profiles: ProfileTable | None = None
    _lookup: dict[str, dict[str, int]] = field(default_factory=dict, repr=False)

    @property
    def num_users(self) -> int:
        return len(self.users)

    @property
    def num_items(self) -> int:
        return len(self.items)

    @property
    def num_entities(self) -> int:
        return len(self.entities)

    @property
    def num_relations(self) -> int:
        return len(self.relations)

    @property
    def source_domains(self) -> list[int]:
        return [d for d, role in enumerate(self.roles) if role == "source"]

    @property
    def target_domains(self) -> list[int]:
        return [d for d, role in enumerate(self.roles) if role == "target"]

    def domain_index(self, name: str) -> int:
        if name not in self.domains:
            raise KeyError(f"unknown domain {name!r}; this dataset has {self.domains}.")
        return self.domains.index(name)

    def domain_items(self, domain: int) -> np.ndarray:
        """Indices of the items of one domain (its catalogue), ascending."""
        return np.flatnonzero(self.item_domain == domain)

    def index_of(self, kind: str, ids: list[str] | np.ndarray) -> np.ndarray:
        """Integer indices of string ids of ``kind`` (user, item, entity); -1 where unknown."""
        if kind not in self._lookup:
            names = {"user": self.users, "item": self.items, "entity": self.entities}[kind]
            self._lookup[kind] = {name: i for i, name in enumerate(names)}
        table = self._lookup[kind]
        return np.array([table.get(str(x), -1) for x in ids], dtype=np.int64)

    def summary(self) -> pd.DataFrame:
        """Per-domain counts, like Table 1 of the paper."""
        inter = self.interactions
        rows = []
        for d, name in enumerate(self.domains):
            part = inter[inter["domain"] == d]
            rows.append(
                {
                    "domain": name,
                    "role": self.roles[d],
                    "users": part["user"].nunique(),
                    "items": int((self.item_domain == d).sum()),
                    "interactions": len(part),
                }
            )
        return pd.DataFrame(rows)


def _first_row(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask)[0])


def _show(value: object) -> str:
    """``repr`` of a cell as a person wrote it: ``2``, not ``np.int64(2)``."""
    return repr(value.item() if isinstance(value, np.generic) else value)


def _error(path: str, message: str) -> DataContractError:
    return DataContractError(f"{path}: {message}")


class _Ids:
    """String ids numbered in the order they first appear, block after block."""

    def __init__(self) -> None:
        self.index = pd.Index([], dtype=object)

    def codes(self, values: pd.Series) -> np.ndarray:
        local, uniques = pd.factorize(values)
        pos = self.index.get_indexer(uniques)
        new = pos < 0
        if new.any():
            pos[new] = len(self.index) + np.arange(int(new.sum()))
            self.index = self.index.append(pd.Index(np.asarray(uniques)[new], dtype=object))
        return pos[local].astype(np.int64)

    def sorted(self) -> tuple[np.ndarray, np.ndarray]:
        """The ids in sorted order, and for each appearance number the id's sorted position."""
        ids = self.index.to_numpy(dtype=object)
        order = np.argsort(ids, kind="stable")
        rank = np.empty(len(ids), dtype=np.int64)
        rank[order] = np.arange(len(ids))
        return ids[order], rank


def _read_interactions(
    root: Path, domains: list[str], chunk_rows: int
) -> tuple[pd.DataFrame, np.ndarray, np.ndarray, np.ndarray, str]:
    """The interactions as integer codes (users and items numbered in sorted id order), the
    sorted user and item ids, the item ids in order of first appearance, and the file's path.
    Each block is checked as it is read; checks across rows run on the codes."""
    domain_of = {name: i for i, name in enumerate(domains)}
    users, items = _Ids(), _Ids()
    parts: dict[str, list[np.ndarray]] = {c: [] for c in ("user", "item", "domain", "ts", "label")}
    path = str(table_path(root, "interactions") or root / "interactions.parquet")
    for inter in read_chunks(root, "interactions", chunk_rows):
        # A block has few distinct domains: look up each once, not each row.
        local, names = pd.factorize(inter["domain"])
        domain = np.array([domain_of.get(name, -1) for name in names], dtype=np.int64)[local]
        if (domain < 0).any():
            at = _first_row(domain < 0)
            raise _error(
                path,
                f"row {inter.index[at]}: domain {inter['domain'].iloc[at]!r} is not in domains "
                f"({domains}); add it to the domains table or fix the row.",
            )
        ts = pd.to_numeric(inter["timestamp"], errors="coerce")
        bad_ts = ts.isna() | ~np.isfinite(ts.to_numpy(dtype=np.float64, na_value=np.nan))
        if bad_ts.any():
            at = _first_row(bad_ts.to_numpy())
            raise _error(
                path,
                f"row {inter.index[at]}: timestamp {_show(inter['timestamp'].iloc[at])} is "
                "missing or not a number; every interaction needs a numeric timestamp (e.g. "
                "seconds since the epoch).",
            )
        label = pd.to_numeric(inter["label"], errors="coerce")
        bad_label = ~label.isin([0, 1])
        if bad_label.any():
            at = _first_row(bad_label.to_numpy())
            raise _error(
                path,
                f"row {inter.index[at]}: label {_show(inter['label'].iloc[at])} is not 0 or 1; "
                "use 1 for a positive (click, purchase) and 0 for an observed negative.",
            )
        parts["user"].append(users.codes(inter["user"]))
        parts["item"].append(items.codes(inter["item"]))
        parts["domain"].append(domain)
        parts["ts"].append(ts.to_numpy(np.float64))
        parts["label"].append(label.to_numpy(np.int8))
        del inter, local, ts, label
    user_ids, user_rank = users.sorted()
    item_ids, item_rank = items.sorted()
    dtypes = {"user": np.int64, "item": np.int64, "domain": np.int64, "ts": np.float64}
    column = {}
    for c in ("ts", "label", "domain", "user", "item"):  # one column's blocks joined at a time
        column[c] = (
            np.concatenate(parts.pop(c)) if parts[c] else np.zeros(0, dtypes.get(c, np.int8))
        )
    column["user"] = user_rank[column["user"]]
    column["item"] = item_rank[column["item"]]
    user, item, domain, ts = column["user"], column["item"], column["domain"], column["ts"]

    row = _first_repeat(user, item, domain, ts, len(user_ids), len(item_ids), len(domains))
    if row is not None:
        raise _error(
            path,
            f"row {row} repeats (user={user_ids[user[row]]!r}, item={item_ids[item[row]]!r}, "
            f"domain={domains[domain[row]]!r}, timestamp={_show(ts[row])}); drop duplicate rows "
            "(e.g. DataFrame.drop_duplicates) before loading.",
        )
    # One of each item's domains against every row of the item; of the items seen in two
    # domains, the one that appears first is named.
    some_domain = np.full(len(item_ids), -1, dtype=np.int64)
    some_domain[item] = domain
    shared = some_domain[item] != domain
    if shared.any():
        _, first_row = np.unique(item, return_index=True)
        candidates = np.unique(item[shared])
        bad = int(candidates[np.argmin(first_row[candidates])])
        where = sorted(domains[d] for d in np.unique(domain[item == bad]))
        raise _error(
            path,
            f"item {item_ids[bad]!r} appears in several domains {where}; items must not be "
            "shared across domains (give each domain's copy its own id).",
        )
    codes = pd.DataFrame(
        {"user": user, "item": item, "domain": domain, "timestamp": ts, "label": column["label"]}
    )
    del column, user, item, domain, ts
    used = set(np.unique(codes["domain"]).tolist())
    empty = [name for d, name in enumerate(domains) if d not in used]
    if empty:
        raise _error(
            path,
            f"domain {empty[0]!r} has no interactions; remove it from domains or add its rows.",
        )
    return codes, user_ids, item_ids, items.index.to_numpy(dtype=object), path


def _first_repeat(
    user: np.ndarray,
    item: np.ndarray,
    domain: np.ndarray,
    ts: np.ndarray,
    n_users: int,
    n_items: int,
    n_domains: int,
) -> int | None:
    """The first row equal to an earlier one in (user, item, domain, timestamp), or None.

    Only rows whose (user, item, domain) occurs more than once can repeat; they are few, and
    only they are compared with their timestamps (a whole-table ``DataFrame.duplicated`` would
    hash four columns of every row)."""
    if n_users * n_items * n_domains < 2**63:
        key = (user * n_items + item) * n_domains + domain
    else:  # ids too many to pack in one integer
        key = (
            pd.DataFrame({"user": user, "item": item, "domain": domain})
            .groupby(["user", "item", "domain"], sort=False)
            .ngroup()
            .to_numpy()
        )
    order = np.argsort(key, kind="stable")  # a sort: lighter than a hash table of every row
    same = key[order[1:]] == key[order[:-1]]
    if not same.any():
        return None
    pair = np.zeros(len(key), dtype=bool)
    pair[1:] = same
    pair[:-1] |= same
    rows = np.sort(order[pair])
    repeat = pd.DataFrame({"key": key[rows], "ts": ts[rows]}).duplicated().to_numpy()
    return int(rows[repeat][0]) if repeat.any() else None


def _check_positives(path: str, codes: pd.DataFrame, domains: list[str], roles: list[str]) -> None:
    """Source domains need positive rows to pre-train on; each target domain needs a positive
    row in each period of its chronological split (train, validation, test)."""
    positive = codes["label"].to_numpy() == 1
    source = [d for d, r in enumerate(roles) if r == "source"]
    if not positive[np.isin(codes["domain"].to_numpy(), source)].any():
        raise _error(
            path,
            f"no source row has label 1 (source domains {[domains[d] for d in source]}); "
            "pre-training learns from positive source rows, add some (label 1 = a click or "
            "purchase).",
        )
    for d, (name, role) in enumerate(zip(domains, roles, strict=True)):
        if role != "target":
            continue
        # Codes follow the sorted ids, so this is the order of (timestamp, user id, item id).
        rows = codes[codes["domain"] == d].sort_values(["timestamp", "user", "item"], kind="stable")
        n = len(rows)
        n_train = int(round(DEFAULT_SPLIT[0] * n))
        n_valid = int(round(DEFAULT_SPLIT[1] * n))
        labels = rows["label"].to_numpy()
        parts = {
            "training": labels[:n_train],
            "validation": labels[n_train : n_train + n_valid],
            "test": labels[n_train + n_valid :],
        }
        for part, values in parts.items():
            if not (values == 1).any():
                raise _error(
                    path,
                    f"target domain {name!r} has {n} rows, {int((labels == 1).sum())} positive; "
                    f"its chronological 70/15/15 split leaves no positive row in the {part} "
                    "period, so it cannot be trained, validated and tested. Add positive rows "
                    "across its time span or make it a source domain.",
                )


def load_dataset(root: str | Path, profile_bins: int = 10, chunk_rows: int = CHUNK_ROWS) -> Dataset:
    """Read, validate and index the dataset in ``root``.

    The interactions table is read ``chunk_rows`` rows at a time (Parquet row groups in
    order) and kept as integer codes only, so its string ids are never all in memory at once.

    Raises:
        DataContractError: on any violation of the data contract, naming file, value and fix.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataContractError(
            f"{root}: no such dataset folder; create one with `peace data synth --out {root}` "
            "or `peace data import ...`."
        )
    dom = read_table(root, "domains")

    # -- domains
    bad_role = ~dom["role"].isin(ROLES)
    if bad_role.any():
        row = _first_row(bad_role.to_numpy())
        raise table_error(
            dom,
            f"row {row}: role {dom['role'].iloc[row]!r} of domain {dom['domain'].iloc[row]!r} "
            f"is not one of {list(ROLES)}; set it to source or target.",
        )
    dup = dom["domain"].duplicated()
    if dup.any():
        name = dom["domain"][dup].iloc[0]
        raise table_error(dom, f"domain {name!r} is listed twice; keep one row per domain.")
    unprintable = [not name.isprintable() for name in dom["domain"]]
    if any(unprintable):
        row = unprintable.index(True)
        raise table_error(
            dom,
            f"row {row}: domain {dom['domain'].iloc[row]!r} has a control, format or "
            "bidirectional-override character; name domains with printable characters only.",
        )
    for role in ROLES:
        if not (dom["role"] == role).any():
            raise table_error(
                dom, f"no domain has role {role!r}; a dataset needs at least one of each."
            )
    domains = dom["domain"].tolist()
    roles = dom["role"].tolist()

    # -- interactions, read block by block (never whole)
    codes, users, items, items_seen, inter_path = _read_interactions(root, domains, chunk_rows)
    phi = read_table(root, "item_entities")
    trip = read_table(root, "triplets")
    feats = read_table(root, "entity_features", required=False)
    uprof = read_table(root, "user_profiles", required=False)
    iprof = read_table(root, "item_profiles", required=False)

    # -- the entity graph and phi
    relations = np.array(sorted(trip["relation"].unique()), dtype=object)
    graph_entities = pd.unique(pd.concat([trip["head"], trip["tail"]], ignore_index=True))
    entity_set = set(graph_entities)
    if feats is not None:
        entity_set |= set(feats["entity"])
    entities = np.array(sorted(entity_set), dtype=object)
    eidx = pd.Index(entities)
    unknown_entity = eidx.get_indexer(phi["entity"]) < 0  # isin on a large set is much slower
    if unknown_entity.any():
        row = _first_row(unknown_entity)
        raise table_error(
            phi,
            f"row {row}: entity {phi['entity'].iloc[row]!r} (item {phi['item'].iloc[row]!r}) is "
            "unknown to the entity graph; add a triplet for it or map the item to a known entity.",
        )
    rank = pd.to_numeric(phi["rank"], errors="coerce")
    values = rank.to_numpy(dtype=np.float64, na_value=np.nan)
    bad_rank = ~np.isfinite(values) | (values != np.floor(values)) | (values < 0)
    if bad_rank.any():
        row = _first_row(bad_rank)
        raise table_error(
            phi,
            f"row {row}: rank {_show(phi['rank'].iloc[row])} is not a non-negative integer; "
            "number each item's entities 0, 1, 2 from the most to the least telling.",
        )
    phi = phi.assign(rank=rank.astype(np.int64))
    dup = phi.duplicated(["item", "entity"])
    if dup.any():
        row = _first_row(dup.to_numpy())
        raise table_error(
            phi,
            f"row {row}: item {phi['item'].iloc[row]!r} lists entity "
            f"{phi['entity'].iloc[row]!r} twice; keep one row.",
        )
    per_item = phi.groupby("item")["entity"].size()
    too_many = per_item[per_item > MAX_ENTITIES_PER_ITEM]
    if len(too_many):
        raise table_error(
            phi,
            f"item {too_many.index[0]!r} maps to {int(too_many.iloc[0])} entities; at most "
            f"{MAX_ENTITIES_PER_ITEM} are allowed (keep the ones of lowest rank).",
        )
    mapped = set(phi["item"])
    missing = [i for i in items_seen if i not in mapped]
    if missing:
        raise table_error(
            phi,
            f"item {missing[0]!r} (and {len(missing) - 1} more) has no entity; map every item "
            "of interactions to at least one entity.",
        )

    # -- contiguous ids
    uidx = pd.Index(users)
    iidx = pd.Index(items)
    ridx = pd.Index(relations)
    item_domain = np.full(len(items), -1, dtype=np.int64)
    item_domain[codes["item"].to_numpy()] = codes["domain"].to_numpy()

    phi = phi[iidx.get_indexer(phi["item"]) >= 0].sort_values(["item", "rank", "entity"])
    item_entities = np.full((len(items), MAX_ENTITIES_PER_ITEM), -1, dtype=np.int64)
    pi = iidx.get_indexer(phi["item"])
    slot = phi.groupby("item").cumcount().to_numpy()
    item_entities[pi, slot] = eidx.get_indexer(phi["entity"])

    triplets = np.stack(
        [
            eidx.get_indexer(trip["head"]),
            ridx.get_indexer(trip["relation"]),
            eidx.get_indexer(trip["tail"]),
        ],
        axis=1,
    ).astype(np.int64)

    entity_features = None
    if feats is not None:
        cols = [c for c in feats.columns if c != "entity"]
        if not cols:
            raise table_error(
                feats,
                "has only the 'entity' column and no feature column; add columns f0 .. fD or "
                "remove the file (entities then learn id embeddings).",
            )
        dup = feats["entity"].duplicated()
        if dup.any():
            row = _first_row(dup.to_numpy())
            raise table_error(
                feats,
                f"row {row}: entity {feats['entity'].iloc[row]!r} has two feature rows; keep one.",
            )
        values = feats[cols].apply(pd.to_numeric, errors="coerce")
        finite = np.isfinite(values.to_numpy(np.float64, na_value=np.nan))
        if not finite.all():
            row, col = (int(x[0]) for x in np.nonzero(~finite))
            raise table_error(
                feats,
                f"row {row}: feature {cols[col]!r} of entity {feats['entity'].iloc[row]!r} is "
                f"{_show(feats[cols[col]].iloc[row])}, missing, not a number or not finite; "
                "fill it with a finite number.",
            )
        entity_features = np.zeros((len(entities), len(cols)), dtype=np.float32)
        entity_features[eidx.get_indexer(feats["entity"])] = values.to_numpy(np.float32)

    _check_positives(inter_path, codes, domains, roles)
    return Dataset(
        root=root,
        users=users,
        items=items,
        entities=entities,
        relations=relations,
        domains=domains,
        roles=roles,
        interactions=codes,
        item_domain=item_domain,
        item_entities=item_entities,
        triplets=triplets,
        entity_features=entity_features,
        user_profiles=encode_profiles(uprof, "user", uidx, profile_bins),
        item_profiles=encode_profiles(iprof, "item", iidx, profile_bins),
    )

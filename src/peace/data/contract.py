"""The data contract: one dataset is one folder of tables.

=================  ==========================================  =====================================
table              columns                                     notes
=================  ==========================================  =====================================
interactions       user, item, domain, timestamp, label        label 1 = positive, 0 = negative
domains            domain, role                                role is ``source`` or ``target``
item_entities      item, entity, rank                          phi(i): at most 3 entities, rank 0 first
triplets           head, relation, tail                        the entity graph
entity_features    entity, f0 .. fD                            optional original entity features
user_profiles      user, <profile columns>                     optional x_u of Eq. 11
item_profiles      item, <profile columns>                     optional x_i of Eq. 11
=================  ==========================================  =====================================

Tables are Parquet (``NAME.parquet``); ``NAME.csv`` is accepted in their place. Ids are strings on
disk and become contiguous integers once, in :func:`peace.data.dataset.load_dataset`.
Every violation raises :class:`DataContractError` naming the file, the offending value and the fix.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

REQUIRED_TABLES: dict[str, tuple[str, ...]] = {
    "interactions": ("user", "item", "domain", "timestamp", "label"),
    "domains": ("domain", "role"),
    "item_entities": ("item", "entity", "rank"),
    "triplets": ("head", "relation", "tail"),
}
OPTIONAL_TABLES: dict[str, tuple[str, ...]] = {
    "entity_features": ("entity",),
    "user_profiles": ("user",),
    "item_profiles": ("item",),
}
ID_COLUMNS = {"user", "item", "domain", "entity", "head", "relation", "tail", "role"}
ROLES = ("source", "target")
MAX_ENTITIES_PER_ITEM = 3
MAX_ID_LENGTH = 256
"""Longest id (characters) a dataset may use: the ranking service answers no longer id."""
DEFAULT_SPLIT = (0.7, 0.15, 0.15)
"""Chronological train / validation / test fractions of a target domain (A.2)."""


class DataContractError(ValueError):
    """A dataset that breaks the data contract; the message names the file, the value and the fix."""


def table_path(root: Path, name: str) -> Path | None:
    """The file holding table ``name`` in ``root`` (Parquet preferred over CSV), or None."""
    for suffix in (".parquet", ".csv"):
        path = root / f"{name}{suffix}"
        if path.is_file():
            return path
    return None


def read_table(root: str | Path, name: str, required: bool = True) -> pd.DataFrame | None:
    """Read one table of the contract, with id columns as strings and its columns checked."""
    root = Path(root)
    columns = REQUIRED_TABLES.get(name) or OPTIONAL_TABLES[name]
    path = table_path(root, name)
    if path is None:
        if required:
            raise DataContractError(
                f"{root / (name + '.parquet')}: missing table {name!r}. A dataset folder needs "
                f"{', '.join(t + '.parquet' for t in REQUIRED_TABLES)} (CSV also accepted); "
                "create it or point --data at the right folder."
            )
        return None
    try:
        if path.suffix == ".parquet":
            frame = pd.read_parquet(path)
        else:
            frame = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
    except Exception as exc:  # noqa: BLE001 - any reader failure is reported the same way
        raise DataContractError(
            f"{path}: cannot be read as {path.suffix[1:].upper()} ({exc}); rewrite the file."
        ) from exc
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DataContractError(
            f"{path}: missing column(s) {missing}; table {name!r} needs columns {list(columns)} "
            f"and has {list(frame.columns)}. Rename or add the columns."
        )
    for column in frame.columns:
        if column in ID_COLUMNS:
            if frame[column].isna().any():
                row = int(np.flatnonzero(frame[column].isna().to_numpy())[0])
                raise DataContractError(
                    f"{path}: empty {column!r} at row {row}; every row needs a {column} id."
                )
            frame[column] = frame[column].astype(str)
            _check_ids(path, frame, column)
    frame.attrs["path"] = str(path)
    return frame


def table_error(frame: pd.DataFrame, message: str) -> DataContractError:
    """A :class:`DataContractError` about a table read by :func:`read_table` (its path first)."""
    return DataContractError(f"{frame.attrs.get('path', '<table>')}: {message}")


def _check_ids(path: Path, frame: pd.DataFrame, column: str) -> None:
    """Refuse empty (or blank) ids and ids longer than :data:`MAX_ID_LENGTH` characters."""
    values = frame[column]
    blank = (values.str.strip() == "").to_numpy()
    if blank.any():
        row = int(np.flatnonzero(blank)[0])
        raise DataContractError(
            f"{path}: empty {column!r} at row {row} ({values.iloc[row]!r}); every row needs a "
            f"{column} id."
        )
    long = (values.str.len() > MAX_ID_LENGTH).to_numpy()
    if long.any():
        row = int(np.flatnonzero(long)[0])
        value = values.iloc[row]
        raise DataContractError(
            f"{path}: {column} at row {row} ({value[:24]!r}...) has {len(value)} characters; ids "
            f"have at most {MAX_ID_LENGTH} (the service answers no longer id), shorten or hash it."
        )


def write_dataset(tables: Mapping[str, pd.DataFrame], out: str | Path) -> Path:
    """Write tables of the contract to ``out`` as Parquet (ids as strings)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for name in REQUIRED_TABLES:
        if name not in tables:
            raise DataContractError(f"{out}: table {name!r} was not given; it is required.")
    for name, frame in tables.items():
        write_table(frame, out, name)
    return out


def write_table(frame: pd.DataFrame, out: str | Path, name: str) -> Path:
    """Write one table of the contract to ``out/NAME.parquet`` with its id columns as strings."""
    if name not in REQUIRED_TABLES and name not in OPTIONAL_TABLES:
        raise DataContractError(f"{out}: {name!r} is not a table of the data contract.")
    frame = frame.copy()
    for column in frame.columns:
        if column in ID_COLUMNS:
            frame[column] = frame[column].astype(str)
    path = Path(out) / f"{name}.parquet"
    frame.to_parquet(path, index=False)
    return path

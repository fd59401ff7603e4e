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

from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

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
CHUNK_ROWS = 1 << 20
"""Rows of the interactions table held at a time while a dataset loads (:func:`read_chunks`)."""
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


def _missing_table(root: Path, name: str) -> DataContractError:
    return DataContractError(
        f"{root / (name + '.parquet')}: missing table {name!r}. A dataset folder needs "
        f"{', '.join(t + '.parquet' for t in REQUIRED_TABLES)} (CSV also accepted); "
        "create it or point --data at the right folder."
    )


def _unreadable(path: Path, exc: Exception) -> DataContractError:
    return DataContractError(
        f"{path}: cannot be read as {path.suffix[1:].upper()} ({exc}); rewrite the file."
    )


def _check_columns(path: Path, name: str, present: list[str]) -> None:
    columns = REQUIRED_TABLES.get(name) or OPTIONAL_TABLES[name]
    missing = [c for c in columns if c not in present]
    if missing:
        raise DataContractError(
            f"{path}: missing column(s) {missing}; table {name!r} needs columns {list(columns)} "
            f"and has {present}. Rename or add the columns."
        )


def _checked(path: Path, frame: pd.DataFrame) -> pd.DataFrame:
    """Id columns as strings, each id checked; the frame's index numbers the file's rows."""
    for column in frame.columns:
        if column in ID_COLUMNS:
            if frame[column].isna().any():
                row = frame.index[int(np.flatnonzero(frame[column].isna().to_numpy())[0])]
                raise DataContractError(
                    f"{path}: empty {column!r} at row {row}; every row needs a {column} id."
                )
            frame[column] = frame[column].astype(str)
            _check_ids(path, frame, column)
    frame.attrs["path"] = str(path)
    return frame


def read_table(root: str | Path, name: str, required: bool = True) -> pd.DataFrame | None:
    """Read one table of the contract, with id columns as strings and its columns checked."""
    root = Path(root)
    path = table_path(root, name)
    if path is None:
        if required:
            raise _missing_table(root, name)
        return None
    try:
        if path.suffix == ".parquet":
            frame = pd.read_parquet(path)
        else:
            frame = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
    except Exception as exc:  # noqa: BLE001 - any reader failure is reported the same way
        raise _unreadable(path, exc) from exc
    _check_columns(path, name, list(frame.columns))
    frame.index = pd.RangeIndex(len(frame))
    return _checked(path, frame)


def read_chunks(root: str | Path, name: str, rows: int = CHUNK_ROWS) -> Iterator[pd.DataFrame]:
    """Table ``name`` (required) in blocks of at most ``rows`` rows, each checked like
    :func:`read_table`, so that a large table is never held whole: Parquet is read batch by
    batch in row-group order, CSV block by block. A block's index continues the previous one's,
    so a row named in a message is the file's row. Yields nothing for a table without rows."""
    root = Path(root)
    path = table_path(root, name)
    if path is None:
        raise _missing_table(root, name)
    try:
        if path.suffix == ".parquet":
            source = pq.ParquetFile(path)
            _check_columns(path, name, source.schema_arrow.names)
            blocks: Iterator[pd.DataFrame] = (
                batch.to_pandas() for batch in source.iter_batches(batch_size=rows)
            )
        else:
            blocks = pd.read_csv(
                path, dtype=str, keep_default_na=False, na_values=[""], chunksize=rows
            )
    except DataContractError:
        raise
    except Exception as exc:  # noqa: BLE001 - any reader failure is reported the same way
        raise _unreadable(path, exc) from exc
    start = 0
    while True:
        try:
            frame = next(blocks)
        except StopIteration:
            return
        except Exception as exc:  # noqa: BLE001
            raise _unreadable(path, exc) from exc
        if path.suffix == ".csv" and start == 0:
            _check_columns(path, name, list(frame.columns))
        frame.index = pd.RangeIndex(start, start + len(frame))
        start += len(frame)
        yield _checked(path, frame)


def table_error(frame: pd.DataFrame, message: str) -> DataContractError:
    """A :class:`DataContractError` about a table read by :func:`read_table` (its path first)."""
    return DataContractError(f"{frame.attrs.get('path', '<table>')}: {message}")


def _check_ids(path: Path, frame: pd.DataFrame, column: str) -> None:
    """Refuse empty (or blank) ids and ids longer than :data:`MAX_ID_LENGTH` characters."""
    values = frame[column]
    blank = (values.str.strip() == "").to_numpy()
    if blank.any():
        at = int(np.flatnonzero(blank)[0])
        raise DataContractError(
            f"{path}: empty {column!r} at row {frame.index[at]} ({values.iloc[at]!r}); every row "
            f"needs a {column} id."
        )
    long = (values.str.len() > MAX_ID_LENGTH).to_numpy()
    if long.any():
        at = int(np.flatnonzero(long)[0])
        value = values.iloc[at]
        raise DataContractError(
            f"{path}: {column} at row {frame.index[at]} ({value[:24]!r}...) has {len(value)} characters; ids "
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

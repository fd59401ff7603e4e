"""RecBole atomic files: one tab-separated file per table, whose header names each field with
its type (``field:token``, ``token_seq``, ``float``, ``float_seq``), and the columns the RecBole
importer reads from them (ids, timestamps, labels, triplets, profiles).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from peace.data.contract import DataContractError
from peace.data.importers.files import (
    guess_separator,
    read_fields,
    read_text,
    require_file,
    to_float,
)
from peace.data.importers.report import ImportReport

FIELD_TYPES = ("token", "token_seq", "float", "float_seq")
"""The ``:type`` suffixes of RecBole atomic headers."""


@dataclass
class AtomicFile:
    """One parsed atomic file: field types, values (tokens as strings, floats as float64) and
    each row's line number."""

    path: Path
    types: dict[str, str]
    frame: pd.DataFrame
    numbers: Sequence[int]

    def line(self, row: int) -> int:
        """The line number of row ``row``."""
        return int(self.numbers[row])


def read_atomic(path: Path, required: Sequence[str], example: str) -> AtomicFile:
    """Read the atomic file ``path`` and check that it has the ``required`` fields.

    Raises:
        DataContractError: on a missing file, a header without ``:type``, an unknown type, a
            missing field, or a line with the wrong number of fields (with its number).
    """
    require_file(path, f"RecBole atomic file, header like {example!r}", "add it to the folder.")
    text, _ = read_text(path)
    header, _, body = text.partition("\n")
    header = header.rstrip("\r")
    if not header.strip():
        raise DataContractError(
            f"{path}, line 1: empty header; the first line must name the fields, e.g. {example!r}."
        )
    columns = header.split("\t")
    if len(columns) == 1:
        other = guess_separator(header.replace(":", ""))
        if other is not None:
            raise DataContractError(
                f"{path}, line 1: header {header!r} has no tab; it looks {other}-separated. "
                f"RecBole atomic files are tab-separated, e.g. {example!r}; convert the file."
            )
    types: dict[str, str] = {}
    for column in columns:
        name, sep, kind = column.strip().partition(":")
        if not sep or not name:
            raise DataContractError(
                f"{path}, line 1: header field {column!r} has no ':type' suffix; write it as "
                f"{column.strip() or 'name'}:token (ids, categories) or :float (numbers); the "
                f"types are {list(FIELD_TYPES)}, e.g. {example!r}."
            )
        if kind not in FIELD_TYPES:
            raise DataContractError(
                f"{path}, line 1: field {name!r} has type {kind!r}; use one of {list(FIELD_TYPES)}."
            )
        if name in types:
            raise DataContractError(
                f"{path}, line 1: field {name!r} appears twice in the header; rename one."
            )
        types[name] = kind
    missing = [name for name in required if name not in types]
    if missing:
        shown = ", ".join(f"{n}:{t}" for n, t in types.items())
        raise DataContractError(
            f"{path}: missing required field(s) {missing}; the header has [{shown}]. Add or "
            f"rename the column(s), e.g. {example!r}."
        )
    floats = [name for name, kind in types.items() if kind == "float"]
    frame, numbers = read_fields(
        path, body, "\t", list(types), example, floats=floats, first_line=2
    )
    return AtomicFile(path=path, types=types, frame=frame, numbers=numbers)


def token_ids(table: AtomicFile, field: str) -> np.ndarray:
    """The stripped, non-empty tokens of ``field`` (the first token of a token_seq)."""
    values = table.frame[field].astype(str).str.strip()
    if table.types[field] == "token_seq":
        values = values.str.split(" ").str[0].fillna("")
    empty = (values == "").to_numpy()
    if empty.any():
        row = int(np.flatnonzero(empty)[0])
        raise DataContractError(
            f"{table.path}, line {table.line(row)}: empty {field}; every row needs one. Fill or "
            "remove the line."
        )
    return values.to_numpy(dtype=object)


def float_field(table: AtomicFile, field: str) -> np.ndarray:
    if table.types[field] == "float":
        return table.frame[field].to_numpy(np.float64)
    return to_float(table.path, table.frame[field].astype(str).tolist(), table.numbers, field)


def read_timestamps(inter: AtomicFile) -> np.ndarray:
    """``timestamp`` as int64 when every value is whole, else float64; NaN is an error."""
    stamps = float_field(inter, "timestamp")
    bad = ~np.isfinite(stamps)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise DataContractError(
            f"{inter.path}, line {inter.line(row)}: timestamp "
            f"{inter.frame['timestamp'].iloc[row]!r} is missing or not finite; every row needs "
            "a time (e.g. seconds since the epoch), peace splits target domains by time."
        )
    if np.all(stamps == np.round(stamps)) and np.all(np.abs(stamps) < 2**62):
        return stamps.astype(np.int64)
    return stamps


def read_labels(inter: AtomicFile) -> np.ndarray:
    labels = float_field(inter, "label")
    bad = ~np.isin(labels, (0.0, 1.0))
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise DataContractError(
            f"{inter.path}, line {inter.line(row)}: label {inter.frame['label'].iloc[row]!r} is "
            "not 0 or 1; binarise the label field (1 = positive), or drop it to treat every row "
            "as a positive."
        )
    return labels.astype(np.int64)


def check_unique(table: AtomicFile, field: str) -> None:
    values = table.frame[field].astype(str).str.strip()
    dup = values.duplicated().to_numpy()
    if dup.any():
        row = int(np.flatnonzero(dup)[0])
        raise DataContractError(
            f"{table.path}, line {table.line(row)}: {field} {values.iloc[row]!r} appears on an "
            "earlier line too; keep one line per id."
        )


def read_triplets(kg: AtomicFile, report: ImportReport) -> pd.DataFrame:
    frame = pd.DataFrame(
        {
            "head": kg.frame["head_id"].astype(str).str.strip(),
            "relation": kg.frame["relation_id"].astype(str).str.strip(),
            "tail": kg.frame["tail_id"].astype(str).str.strip(),
        }
    )
    if frame.empty:
        raise DataContractError(f"{kg.path}: no triplets; the graph must not be empty.")
    empty = (frame == "").any(axis=1).to_numpy()
    if empty.any():
        row = int(np.flatnonzero(empty)[0])
        raise DataContractError(
            f"{kg.path}, line {kg.line(row)}: empty head_id, relation_id or tail_id; fill or "
            "remove the line."
        )
    dup = frame.duplicated().to_numpy()
    if dup.any():
        report.notes.append(f"{int(dup.sum())} repeated triplet(s) of {kg.path.name} dropped")
        frame = frame[~dup].reset_index(drop=True)
    return frame


def read_profiles(
    table: AtomicFile,
    key_field: str,
    key: str,
    skip: set[str],
    keep: set[str],
    report: ImportReport,
) -> pd.DataFrame | None:
    """Profile columns of ``table``: token -> string category, float -> number; seq types are
    left out (noted). Only rows whose key is in ``keep``."""
    keys = table.frame[key_field].astype(str).str.strip()
    data: dict[str, object] = {key: keys.to_numpy(dtype=object)}
    left_out = []
    for name, kind in table.types.items():
        if name in skip:
            continue
        if kind == "token":
            data[name] = table.frame[name].astype(str).str.strip().to_numpy(dtype=object)
        elif kind == "float":
            data[name] = table.frame[name].to_numpy(np.float64)
        else:
            left_out.append(f"{name}:{kind}")
    if left_out:
        report.notes.append(
            f"{table.path.name}: sequence field(s) not used as profiles: {left_out}"
        )
    if len(data) == 1:
        return None
    frame = pd.DataFrame(data)
    return frame[frame[key].isin(keep)].reset_index(drop=True)

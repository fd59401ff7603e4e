"""Reading and writing the files of an import: delimited text with line numbers in every error,
TOML, and the dataset tables (shared by every importer).

A malformed line raises one :class:`~peace.data.contract.DataContractError` that names the file,
the line number and the fix; a file in another separator says which one it seems to use.
"""

from __future__ import annotations

import csv
import io
import tomllib
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from peace.data.contract import OPTIONAL_TABLES, REQUIRED_TABLES, DataContractError, write_dataset
from peace.data.importers.report import ImportReport

_SEPARATORS = {"\t": "tab", ",": "comma", ";": "semicolon", "|": "pipe", "::": "'::'", " ": "space"}


def require_file(path: Path, what: str, fix: str) -> Path:
    """``path`` if it is a file, else a :class:`DataContractError` saying what it is and the fix."""
    if not path.is_file():
        raise DataContractError(f"{path}: missing file ({what}); {fix}")
    return path


def read_text(path: Path) -> tuple[str, str]:
    """The text of ``path`` and its encoding: UTF-8 if it decodes, else Latin-1."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataContractError(f"{path}: cannot be read ({exc}); check the path.") from exc
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        return data.decode("latin-1"), "latin-1"


def guess_separator(line: str) -> str | None:
    """A name for the separator that ``line`` seems to use, or None."""
    for sep, name in _SEPARATORS.items():
        if sep in line.strip():
            return name
    return None


def split_lines(
    path: Path, text: str, sep: str, fields: Sequence[str], example: str, first_line: int = 1
) -> tuple[list[list[str]], Sequence[int]]:
    """Split the non-blank lines of ``text`` on ``sep`` into exactly ``len(fields)`` fields.

    Returns the rows and their 1-based line numbers. A line with another number of fields raises
    one :class:`DataContractError` with the line number; if the line does not contain ``sep`` at
    all, the message names the separator it seems to use instead.
    """
    expected = len(fields)
    lines = text.splitlines()
    rows = [line.split(sep) for line in lines]
    if all(len(parts) == expected for parts in rows):
        return rows, range(first_line, first_line + len(rows))
    sep_name = _SEPARATORS.get(sep, repr(sep))
    kept: list[list[str]] = []
    numbers: list[int] = []
    for number, (line, parts) in enumerate(zip(lines, rows, strict=True), start=first_line):
        if not line.strip():
            continue
        if len(parts) != expected:
            shown = line if len(line) <= 80 else line[:77] + "..."
            if len(parts) == 1:
                other = guess_separator(line)
                seen = f"it looks {other}-separated" if other else "no separator found"
                raise DataContractError(
                    f"{path}, line {number}: {shown!r} has no {sep_name} separator ({seen}). "
                    f"This file must have {expected} {sep_name}-separated fields per line, "
                    f"e.g. {example!r}; convert the file to that format."
                )
            raise DataContractError(
                f"{path}, line {number}: {len(parts)} fields where {expected} are expected "
                f"({sep.join(fields)}): {shown!r}; fix or remove this line."
            )
        kept.append(parts)
        numbers.append(number)
    return kept, numbers


def to_int(path: Path, values: Sequence[str], numbers: Sequence[int], name: str) -> np.ndarray:
    """``values`` as int64, or a :class:`DataContractError` naming the first bad line."""
    try:
        return np.array(values, dtype=np.int64).reshape(len(values))
    except (ValueError, OverflowError, TypeError):
        pass
    for value, number in zip(values, numbers, strict=True):
        try:
            int(value)
        except (ValueError, OverflowError):
            raise DataContractError(
                f"{path}, line {number}: {name} {value!r} is not an integer; {name} must be a "
                "whole number here. Fix the line or check that this is the right file."
            ) from None
    raise AssertionError("unreachable")  # pragma: no cover


def to_float(path: Path, values: Sequence[str], numbers: Sequence[int], name: str) -> np.ndarray:
    """``values`` as float64 (empty = NaN), or a :class:`DataContractError` naming the line."""
    cleaned = [v if v.strip() else "nan" for v in values]
    try:
        return np.array(cleaned, dtype=np.float64).reshape(len(values))
    except (ValueError, TypeError):
        pass
    for value, number in zip(cleaned, numbers, strict=True):
        try:
            float(value)
        except ValueError:
            raise DataContractError(
                f"{path}, line {number}: {name} {value!r} is not a number; fix the line or check "
                "that this is the right file."
            ) from None
    raise AssertionError("unreachable")  # pragma: no cover


def read_fields(
    path: Path,
    text: str,
    sep: str,
    fields: Sequence[str],
    example: str,
    ints: Iterable[str] = (),
    floats: Iterable[str] = (),
    first_line: int = 1,
) -> tuple[pd.DataFrame, Sequence[int]]:
    """Parse ``sep``-separated ``text`` into a frame with one column per name of ``fields``.

    Columns in ``ints`` become int64, those in ``floats`` float64 (empty = NaN), the rest strings.
    Returns the frame and each row's line number (``first_line`` is the number of the first line
    of ``text``). Any malformed line raises one :class:`DataContractError` with its number.
    A well-formed file is parsed by pandas' C reader; anything else goes through
    :func:`split_lines`, which finds the offending line.
    """
    ints, floats = set(ints), set(floats)
    marker = "\x1f"
    if text.strip() and marker not in text:
        body = text.replace(sep, marker) if sep != marker else text
        dtypes: dict[str, Any] = {
            f: np.int64 if f in ints else np.float64 if f in floats else str for f in fields
        }
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                frame = pd.read_csv(
                    io.StringIO(body),
                    sep=marker,
                    header=None,
                    names=list(fields),
                    index_col=False,
                    dtype=dtypes,
                    quoting=csv.QUOTE_NONE,
                    keep_default_na=False,
                    na_values={f: [""] for f in floats},
                    skip_blank_lines=False,
                    engine="c",
                )
        except (ValueError, OverflowError, pd.errors.ParserError):
            frame = None
        if frame is not None and body.count(marker) == (len(fields) - 1) * len(frame):
            return frame, range(first_line, first_line + len(frame))
    rows, numbers = split_lines(path, text, sep, fields, example, first_line)
    columns = list(zip(*rows, strict=True)) if rows else [() for _ in fields]
    data: dict[str, Any] = {}
    for name, values in zip(fields, columns, strict=True):
        if name in ints:
            data[name] = to_int(path, values, numbers, name)
        elif name in floats:
            data[name] = to_float(path, values, numbers, name)
        else:
            data[name] = pd.array(list(values), dtype=str)
    return pd.DataFrame(data, columns=list(fields)), numbers


def write_tables(tables: Mapping[str, pd.DataFrame], out: Path, report: ImportReport) -> None:
    """Write ``tables`` with :func:`write_dataset` after removing stale contract tables in ``out``.

    A table file left in ``out`` by an earlier dataset (e.g. ``entity_features.parquet``) would be
    read together with the new tables, so contract table files not written now are removed.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise DataContractError(f"{out}: is a file; give a folder to write the dataset into.")
    stale: list[str] = []
    for name in (*REQUIRED_TABLES, *OPTIONAL_TABLES):
        for suffix in (".parquet", ".csv"):
            path = out / f"{name}{suffix}"
            if path.is_file() and (name not in tables or suffix == ".csv"):
                path.unlink()
                stale.append(path.name)
    if stale:
        report.notes.append(f"removed stale tables from {out}: {', '.join(sorted(stale))}")
    write_dataset(tables, out)
    report.tables = [f"{name}.parquet" for name in tables]


def load_toml(path: Path) -> dict[str, Any]:
    """Parse a TOML file, with a :class:`DataContractError` for a missing or broken file."""
    require_file(path, "a TOML file", "check the path.")
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise DataContractError(f"{path}: not valid TOML ({exc}); fix the syntax.") from exc

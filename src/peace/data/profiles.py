"""Profile tables (x_u and x_i of Eq. 11) as categorical codes: strings by value, numbers by
quantile bin, code 0 for unknown."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from peace.data.contract import table_error


@dataclass
class ProfileTable:
    """Categorical codes of profile columns (x_u or x_i of Eq. 11); code 0 means unknown."""

    columns: list[str]
    codes: np.ndarray
    """[num_rows, num_columns] int64."""
    cardinalities: list[int]
    """Codes per column, unknown included."""


def encode_profiles(
    frame: pd.DataFrame | None, key: str, index: pd.Index, bins: int
) -> ProfileTable | None:
    """Profile columns as categorical codes: strings by value, numbers by quantile bin."""
    if frame is None:
        return None
    dup = frame[key].duplicated()
    if dup.any():
        raise table_error(
            frame, f"{key} {frame[key][dup].iloc[0]!r} has two profile rows; keep one."
        )
    rows = index.get_indexer(frame[key])
    known = rows >= 0
    frame, rows = frame[known], rows[known]
    columns = [c for c in frame.columns if c != key]
    codes = np.zeros((len(index), len(columns)), dtype=np.int64)
    cards = []
    for j, column in enumerate(columns):
        # A missing value is unknown (code 0), not a category of its own, and does not stop a
        # numeric column from being binned.
        present = frame[column].notna().to_numpy()
        values = frame[column][present]
        numeric = pd.to_numeric(values, errors="coerce")
        col_codes = np.zeros(len(present), dtype=np.int64)
        if len(numeric) and numeric.notna().all() and numeric.nunique() > bins:
            edges = np.unique(np.quantile(numeric, np.linspace(0, 1, bins + 1)[1:-1]))
            col_codes[present] = np.searchsorted(edges, numeric.to_numpy(), side="right") + 1
            card = len(edges) + 2
        else:
            cats, inverse = np.unique(values.astype(str).to_numpy(), return_inverse=True)
            col_codes[present] = inverse + 1
            card = len(cats) + 1
        codes[rows, j] = col_codes
        cards.append(int(card))
    return ProfileTable(columns=columns, codes=codes, cardinalities=cards)

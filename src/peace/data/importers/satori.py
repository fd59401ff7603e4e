"""The Satori knowledge graph folder of MKR/RippleNet: ``item_index2entity_id.txt`` (movie id,
graph node) and ``kg.txt`` (head, relation, tail), both tab-separated."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from peace.data.contract import DataContractError
from peace.data.importers.files import read_fields, read_text
from peace.data.importers.report import ImportReport


def read_links(path: Path) -> dict[int, str]:
    """``item_index2entity_id.txt`` as movie id -> graph node (one node per movie)."""
    text, _ = read_text(path)
    frame, numbers = read_fields(
        path, text, "\t", ("movie id", "graph node"), "1\t0", ints=("movie id",)
    )
    node_of: dict[int, str] = {}
    link_line: dict[int, int] = {}
    for movie, node, number in zip(
        frame["movie id"].tolist(), frame["graph node"].tolist(), numbers, strict=True
    ):
        node = node.strip()
        if not node:
            raise DataContractError(
                f"{path}, line {number}: movie {movie} has an empty graph node; give its id."
            )
        if movie in node_of:
            raise DataContractError(
                f"{path}, line {number}: movie {movie} was already mapped on line "
                f"{link_line[movie]}; keep one graph node per movie."
            )
        node_of[movie] = node
        link_line[movie] = number
    return node_of


def read_kg_txt(path: Path, report: ImportReport) -> pd.DataFrame:
    """``kg.txt`` (head, relation, tail; tab-separated) as a triplets table of strings.

    Exact repeats of a triplet are dropped and counted in the report's notes.
    """
    text, _ = read_text(path)
    frame, numbers = read_fields(
        path, text, "\t", ("head", "relation", "tail"), "749\tfilm.film.writer\t2347"
    )
    if frame.empty:
        raise DataContractError(f"{path}: no triplets; the graph must not be empty.")
    frame = frame.apply(lambda column: column.str.strip())
    empty = (frame == "").any(axis=1).to_numpy()
    if empty.any():
        i = int(np.flatnonzero(empty)[0])
        raise DataContractError(
            f"{path}, line {numbers[i]}: empty head, relation or tail "
            f"{frame.iloc[i].tolist()!r}; fill or remove the line."
        )
    dup = frame.duplicated().to_numpy()
    if dup.any():
        report.notes.append(f"{int(dup.sum())} repeated triplet(s) of {path.name} dropped")
        frame = frame[~dup].reset_index(drop=True)
    return frame

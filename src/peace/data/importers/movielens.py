"""Import MovieLens-1M and the Satori knowledge graph into a peace dataset folder.

Inputs (read-only): the GroupLens ML-1M folder (``ratings.dat``, ``movies.dat``, ``users.dat``;
``::``-separated, UTF-8 or Latin-1) and the MKR/RippleNet Satori graph folder (``kg.txt``: head,
relation, tail; ``item_index2entity_id.txt``: movie id, graph node; tab-separated).

What comes out (see ``docs/importing.md``):

* ``interactions``: every rating is an implicit positive (label 1) at the rating's timestamp; the
  star value is not used.
* ``domains``: the domain cut of a TOML file (default ``peace/configs/ml1m_cut.toml``): each movie
  goes to its rarest genre (fewest movies in ``movies.dat``, ties by genre name), and to the domain
  listing that genre.
* ``item_entities``: phi by :class:`PhiRule` (the ``[phi]`` table of the cut).
* ``triplets``: all of ``kg.txt``; ``user_profiles`` and ``item_profiles``.

The phi rule, the entity graph index and the file helpers defined here are shared with
:mod:`peace.data.importers.recbole`.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import re
import time
import tomllib
import warnings
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from peace.data.contract import (
    MAX_ENTITIES_PER_ITEM,
    OPTIONAL_TABLES,
    REQUIRED_TABLES,
    ROLES,
    DataContractError,
    write_dataset,
)
from peace.data.importers.report import DomainCount, ImportReport

DEFAULT_CUT = Path(__file__).resolve().parents[2] / "configs" / "ml1m_cut.toml"
"""The packaged domain cut of ML-1M (DESIGN.md, "Public benchmark")."""

AGE_LABELS = {
    "1": "Under 18",
    "18": "18-24",
    "25": "25-34",
    "35": "35-44",
    "45": "45-49",
    "50": "50-55",
    "56": "56+",
}
"""ML-1M age codes (its README) as labels, so that they stay categorical."""

OCCUPATION_LABELS = {
    "0": "other",
    "1": "academic/educator",
    "2": "artist",
    "3": "clerical/admin",
    "4": "college/grad student",
    "5": "customer service",
    "6": "doctor/health care",
    "7": "executive/managerial",
    "8": "farmer",
    "9": "homemaker",
    "10": "K-12 student",
    "11": "lawyer",
    "12": "programmer",
    "13": "retired",
    "14": "sales/marketing",
    "15": "scientist",
    "16": "self-employed",
    "17": "technician/engineer",
    "18": "tradesman/craftsman",
    "19": "unemployed",
    "20": "writer",
}
"""ML-1M occupation codes (its README) as labels: a code is a category, not a quantity."""

_YEAR = re.compile(r"\((\d{4})\)\s*$")
_SEPARATORS = {"\t": "tab", ",": "comma", ";": "semicolon", "|": "pipe", "::": "'::'", " ": "space"}


# --------------------------------------------------------------------------------------------
# file helpers (shared with the RecBole importer)


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


# --------------------------------------------------------------------------------------------
# phi: items to entities (shared with the RecBole importer)


@dataclass(frozen=True)
class PhiRule:
    """How an item is mapped to at most 3 entities of the graph (DESIGN.md, decision 3).

    Rank 0.. are the item's own graph nodes (its MovieLens graph node, or its ``.link`` entities)
    when ``include_item_node``; then up to ``neighbours`` graph neighbours of those nodes, ranked by
    (relation priority, higher degree first, entity id). The degree of an entity is the number of
    triplets touching it: an entity shared by many items is what carries interest across domains.
    A first pass takes at most ``max_per_relation`` per relation; free slots are then filled in
    the same order. Neighbours whose degree is below ``min_degree`` and relations in
    ``skip_relations`` are never used. Relations missing from ``relation_priority`` come after the
    listed ones. Only entities that occur in the triplets are ever chosen.

    Hubs: a neighbour linked to more than ``max_item_share`` of all items (e.g. a genre shared by a
    fifth of the catalogue) says nothing about which of them a user prefers, and as a target of
    pre-training it turns positive and negative pairs into the same pair. Such entities are never
    picked; the import report lists them. ``max_item_share = 1.0`` turns the rule off. On a tiny
    catalogue a share says little, so an entity is a hub only when it is also linked to at least
    ``hub_min_items`` items.
    """

    include_item_node: bool = True
    neighbours: int = 2
    relation_priority: tuple[str, ...] = ()
    skip_relations: tuple[str, ...] = ()
    max_per_relation: int = 1
    min_degree: int = 2
    max_item_share: float = 0.05
    hub_min_items: int = 10

    @classmethod
    def from_table(cls, table: Any, where: str) -> PhiRule:
        """Build a rule from a ``[phi]`` TOML table; ``where`` names the file for errors."""
        if table is None:
            return cls()
        if not isinstance(table, dict):
            raise DataContractError(
                f"{where}: [phi] must be a table, e.g. '[phi]' followed by 'neighbours = 2'."
            )
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(table) - known)
        if unknown:
            raise DataContractError(
                f"{where}: [phi] has unknown key(s) {unknown}; the keys are {sorted(known)}."
            )
        values: dict[str, Any] = {}
        for key, value in table.items():
            if key == "include_item_node":
                if not isinstance(value, bool):
                    raise DataContractError(
                        f"{where}: [phi] include_item_node = {value!r}; set it to true or false."
                    )
            elif key == "max_item_share":
                if (
                    isinstance(value, bool)
                    or not isinstance(value, int | float)
                    or not (0.0 < value <= 1.0)
                ):
                    raise DataContractError(
                        f"{where}: [phi] max_item_share = {value!r}; give a share in (0, 1], "
                        "e.g. 0.05 (1.0 keeps hubs)."
                    )
                value = float(value)
            elif key in ("relation_priority", "skip_relations"):
                if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                    raise DataContractError(
                        f"{where}: [phi] {key} = {value!r}; give a list of relation names, "
                        'e.g. ["film.film.genre", "film.film.director"].'
                    )
                value = tuple(value)
            elif isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise DataContractError(
                    f"{where}: [phi] {key} = {value!r}; give a whole number >= 0."
                )
            values[key] = value
        rule = cls(**values)
        if rule.max_per_relation < 1:
            raise DataContractError(
                f"{where}: [phi] max_per_relation = 0 would pick nothing; give 1 or more."
            )
        if not rule.include_item_node and rule.neighbours == 0:
            raise DataContractError(
                f"{where}: [phi] include_item_node = false and neighbours = 0 leave every item "
                "without an entity; allow one of them."
            )
        return rule

    @classmethod
    def from_toml(cls, path: str | Path) -> PhiRule:
        """Read the ``[phi]`` table of a TOML file (other tables are ignored)."""
        path = Path(path)
        return cls.from_table(load_toml(path).get("phi"), str(path))


class EntityGraph:
    """The triplets, with entity degrees and the neighbourhood of the nodes that items link to."""

    def __init__(self, triplets: pd.DataFrame, anchors: Iterable[str]) -> None:
        heads = triplets["head"].to_numpy(dtype=object)
        tails = triplets["tail"].to_numpy(dtype=object)
        rels = triplets["relation"].to_numpy(dtype=object)
        counts = pd.Series(np.concatenate([heads, tails])).value_counts(sort=False)
        self.degree: dict[str, int] = {str(k): int(v) for k, v in counts.items()}
        anchor_set = set(anchors)
        self.num_anchors = len(anchor_set)
        self.adjacency: dict[str, list[tuple[str, str]]] = {}
        head_mask = triplets["head"].isin(anchor_set).to_numpy()
        tail_mask = triplets["tail"].isin(anchor_set).to_numpy()
        for node, rel, other in zip(
            heads[head_mask], rels[head_mask], tails[head_mask], strict=True
        ):
            self.adjacency.setdefault(node, []).append((rel, other))
        for node, rel, other in zip(
            tails[tail_mask], rels[tail_mask], heads[tail_mask], strict=True
        ):
            self.adjacency.setdefault(node, []).append((rel, other))
        linked: dict[str, set[str]] = {}
        for node, edges in self.adjacency.items():
            for _, other in edges:
                linked.setdefault(other, set()).add(node)
        self.item_links: dict[str, int] = {e: len(nodes) for e, nodes in linked.items()}
        """How many item nodes each neighbour entity is linked to."""
        self._hub_cache: dict[PhiRule, set[str]] = {}

    def __contains__(self, entity: object) -> bool:
        return entity in self.degree

    def hubs(self, rule: PhiRule) -> dict[str, float]:
        """Entities linked to more than ``rule.max_item_share`` of the items, with their share."""
        if rule.max_item_share >= 1.0 or self.num_anchors == 0:
            return {}
        return {
            e: n / self.num_anchors
            for e, n in sorted(self.item_links.items())
            if n / self.num_anchors > rule.max_item_share and n >= rule.hub_min_items
        }

    def select(self, nodes: Sequence[str], rule: PhiRule) -> list[str]:
        """The entities of one item, rank 0 first, by ``rule``; ``nodes`` are its own nodes."""
        own = [n for n in dict.fromkeys(nodes) if n in self.degree]
        chosen = own[:MAX_ENTITIES_PER_ITEM] if rule.include_item_node else []
        room = min(rule.neighbours, MAX_ENTITIES_PER_ITEM - len(chosen))
        if room <= 0:
            return chosen
        priority = {rel: i for i, rel in enumerate(rule.relation_priority)}
        skip = set(rule.skip_relations)
        hubs = self._hub_cache.get(rule)
        if hubs is None:
            hubs = self._hub_cache[rule] = set(self.hubs(rule))
        taken = set(own) | hubs
        best: dict[str, tuple[int, int, str, str]] = {}
        for node in own:
            for rel, other in self.adjacency.get(node, ()):
                if other in taken or rel in skip:
                    continue
                degree = self.degree[other]
                if degree < rule.min_degree:
                    continue
                key = (priority.get(rel, len(priority)), -degree, other, rel)
                if other not in best or key < best[other]:
                    best[other] = key
        ranked = sorted(best.values())
        picked: list[str] = []
        per_relation: Counter[str] = Counter()
        for _, _, entity, rel in ranked:
            if len(picked) == room:
                break
            if per_relation[rel] < rule.max_per_relation:
                picked.append(entity)
                per_relation[rel] += 1
        for _, _, entity, _ in ranked:
            if len(picked) == room:
                break
            if entity not in picked:
                picked.append(entity)
        return chosen + picked


def note_hubs(graph: EntityGraph, rule: PhiRule, report: ImportReport) -> None:
    """Record the hub entities that ``rule`` keeps out of phi, most linked first."""
    hubs = graph.hubs(rule)
    report.phi_hubs = {e: round(s, 4) for e, s in sorted(hubs.items(), key=lambda kv: -kv[1])}
    if hubs:
        top = ", ".join(f"{e} ({s:.0%})" for e, s in list(report.phi_hubs.items())[:5])
        report.notes.append(
            f"phi skips {len(hubs)} hub entit{'y' if len(hubs) == 1 else 'ies'} linked to more "
            f"than {rule.max_item_share:.0%} of the items: {top}"
            + (" ..." if len(hubs) > 5 else "")
        )


def note_unknown_relations(rule: PhiRule, triplets: pd.DataFrame, report: ImportReport) -> None:
    """Note relations named by ``rule`` that the graph does not have (a likely typo)."""
    named = [*rule.relation_priority, *rule.skip_relations]
    unknown = sorted(set(named) - set(triplets["relation"].unique()))
    if unknown:
        report.notes.append(f"phi rule names relation(s) not in the graph: {unknown}")


def phi_table(entities: Mapping[str, list[str]]) -> pd.DataFrame:
    """The ``item_entities`` table (item, entity, rank) of item -> ranked entities."""
    items = [item for item, ents in entities.items() for _ in ents]
    ents = [e for chosen in entities.values() for e in chosen]
    ranks = [r for chosen in entities.values() for r in range(len(chosen))]
    return pd.DataFrame(
        {"item": items, "entity": ents, "rank": np.array(ranks, dtype=np.int64)},
        columns=["item", "entity", "rank"],
    )


def count_domains(
    inter: pd.DataFrame, domains: Sequence[tuple[str, str]], report: ImportReport
) -> None:
    """Fill the per-domain counts of ``report`` from the final interactions."""
    grouped = inter.groupby("domain", sort=False)
    items = grouped["item"].nunique()
    users = grouped["user"].nunique()
    rows = grouped.size()
    report.domains = [
        DomainCount(
            domain=name,
            role=role,
            items=int(items.get(name, 0)),
            rows=int(rows.get(name, 0)),
            users=int(users.get(name, 0)),
        )
        for name, role in domains
    ]
    report.rows_kept = len(inter)
    report.users = int(inter["user"].nunique())


def load_toml(path: Path) -> dict[str, Any]:
    """Parse a TOML file, with a :class:`DataContractError` for a missing or broken file."""
    require_file(path, "a TOML file", "check the path.")
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise DataContractError(f"{path}: not valid TOML ({exc}); fix the syntax.") from exc


# --------------------------------------------------------------------------------------------
# the domain cut


@dataclass(frozen=True)
class DomainSpec:
    """One domain of a genre cut: its name, role and the genres it takes."""

    name: str
    role: str
    genres: tuple[str, ...]


@dataclass(frozen=True)
class GenreCut:
    """A domain cut of MovieLens by genre, read from a TOML file (see ``ml1m_cut.toml``)."""

    path: Path
    domains: tuple[DomainSpec, ...]
    phi: PhiRule = field(default_factory=PhiRule)

    def domain_of_genre(self) -> dict[str, str]:
        """Genre -> the name of the domain that lists it."""
        return {genre: spec.name for spec in self.domains for genre in spec.genres}


def load_cut(cut: str | Path | None = None) -> GenreCut:
    """Read and check a domain cut; ``None`` is the packaged ``ml1m_cut.toml``.

    Raises:
        DataContractError: naming the file, the key and the fix, on any malformed entry.
    """
    path = DEFAULT_CUT if cut is None else Path(cut)
    data = load_toml(path)
    where = str(path)
    unknown = sorted(set(data) - {"domains", "phi"})
    if unknown:
        raise DataContractError(
            f"{where}: unknown top-level key(s) {unknown}; a cut has [domains.NAME] tables and "
            "an optional [phi] table (see peace/configs/ml1m_cut.toml)."
        )
    raw = data.get("domains")
    if not isinstance(raw, dict) or not raw:
        raise DataContractError(
            f"{where}: no [domains] tables; add one per domain, e.g. "
            '[domains.Horror] with role = "target" and genres = ["Horror"].'
        )
    specs: list[DomainSpec] = []
    owner: dict[str, str] = {}
    for name, table in raw.items():
        key = f"[domains.{name}]"
        if not isinstance(table, dict):
            raise DataContractError(
                f"{where}: {key} must be a table with keys role and genres, not {table!r}."
            )
        extra = sorted(set(table) - {"role", "genres"})
        if extra:
            raise DataContractError(
                f"{where}: {key} has unknown key(s) {extra}; the keys are role and genres."
            )
        role = table.get("role")
        if role not in ROLES:
            raise DataContractError(
                f'{where}: {key} role = {role!r}; set role = "source" or role = "target".'
            )
        genres = table.get("genres")
        if (
            not isinstance(genres, list)
            or not genres
            or not all(isinstance(g, str) and g.strip() for g in genres)
        ):
            raise DataContractError(
                f"{where}: {key} genres = {genres!r}; give a non-empty list of genre names as "
                'in movies.dat, e.g. genres = ["Horror"].'
            )
        for genre in genres:
            if genre in owner:
                raise DataContractError(
                    f"{where}: genre {genre!r} is listed by both [domains.{owner[genre]}] and "
                    f"{key}; a genre may belong to one domain only, remove one of them."
                )
            owner[genre] = name
        specs.append(DomainSpec(name=str(name), role=role, genres=tuple(genres)))
    for role in ROLES:
        if not any(spec.role == role for spec in specs):
            raise DataContractError(
                f'{where}: no domain has role = "{role}"; a cut needs at least one source and '
                "one target domain."
            )
    return GenreCut(path=path, domains=tuple(specs), phi=PhiRule.from_table(data.get("phi"), where))


def rarest_genre(genres: Sequence[str], counts: Mapping[str, int]) -> str | None:
    """The genre of ``genres`` with the fewest movies in ``counts`` (ties: by name); None if none
    of ``genres`` is in ``counts``."""
    known = [g for g in genres if g in counts]
    if not known:
        return None
    return min(known, key=lambda g: (counts[g], g))


# --------------------------------------------------------------------------------------------
# the importer


def import_movielens(
    movielens: Path, kg: Path, out: Path, cut: str | Path | None = None
) -> ImportReport:
    """Import ML-1M (``movielens``) and the Satori graph (``kg``) into the dataset folder ``out``.

    Args:
        movielens: folder with ``ratings.dat``, ``movies.dat`` and (optional) ``users.dat``.
        kg: folder with ``kg.txt`` and ``item_index2entity_id.txt``.
        out: dataset folder to write (created; contract tables already there are replaced).
        cut: a domain-cut TOML file; None uses the packaged ``ml1m_cut.toml``.

    Returns:
        An :class:`ImportReport` of rows and items read, kept and dropped, and per-domain counts.

    Raises:
        DataContractError: on a missing file, a malformed line (with its number), a bad cut, or a
            domain that the cut leaves empty.
    """
    start = time.perf_counter()
    movielens, kg, out = Path(movielens), Path(kg), Path(out)
    spec = load_cut(cut)
    report = ImportReport(
        source=f"MovieLens ({movielens}) + graph ({kg}), cut {spec.path}", out=str(out)
    )
    ml_fix = (
        "point to the folder of the GroupLens ML-1M release (ratings.dat, movies.dat, users.dat)."
    )
    kg_fix = "point to the Satori graph folder (kg.txt, item_index2entity_id.txt)."

    # -- movies and the cut
    movies_path = require_file(movielens / "movies.dat", "MovieID::Title::Genres", ml_fix)
    text, encoding = read_text(movies_path)
    _note_encoding(report, movies_path, encoding)
    frame, numbers = read_fields(
        movies_path,
        text,
        "::",
        ("MovieID", "Title", "Genres"),
        "1::Toy Story (1995)::Animation",
        ints=("MovieID",),
    )
    if frame.empty:
        raise DataContractError(f"{movies_path}: no movies; is it the right file?")
    movie_ids = frame["MovieID"].to_numpy(np.int64)
    titles = frame["Title"].tolist()
    genre_lists = [[g.strip() for g in s.split("|") if g.strip()] for s in frame["Genres"]]
    seen: dict[int, int] = {}
    for movie, number in zip(movie_ids.tolist(), numbers, strict=True):
        if movie in seen:
            raise DataContractError(
                f"{movies_path}, line {number}: MovieID {movie} was already given on line "
                f"{seen[movie]}; keep one line per movie."
            )
        seen[movie] = number
    genre_counts = Counter(g for genres in genre_lists for g in set(genres))
    domain_of_genre = spec.domain_of_genre()
    for dom in spec.domains:
        for genre in dom.genres:
            if genre not in genre_counts:
                raise DataContractError(
                    f"{spec.path}: [domains.{dom.name}] genres lists {genre!r}, which no movie of "
                    f"{movies_path} has; use one of {sorted(genre_counts)} (spelling as in "
                    "movies.dat)."
                )
    uncut = sorted(set(genre_counts) - set(domain_of_genre))
    if uncut:
        report.notes.append(
            f"genres of movies.dat in no domain of the cut: {uncut} (a movie is cut by its other "
            "genres; one with none of the cut's genres is left out)"
        )
    cut_counts = {g: genre_counts[g] for g in domain_of_genre}
    movie_domain: dict[int, str] = {}
    for movie, genres in zip(movie_ids.tolist(), genre_lists, strict=True):
        genre = rarest_genre(genres, cut_counts)
        if genre is not None:
            movie_domain[movie] = domain_of_genre[genre]

    # -- the graph
    link_path = require_file(kg / "item_index2entity_id.txt", "movie id<TAB>graph node", kg_fix)
    text, _ = read_text(link_path)
    frame, numbers = read_fields(
        link_path, text, "\t", ("movie id", "graph node"), "1\t0", ints=("movie id",)
    )
    node_of: dict[int, str] = {}
    link_line: dict[int, int] = {}
    for movie, node, number in zip(
        frame["movie id"].tolist(), frame["graph node"].tolist(), numbers, strict=True
    ):
        node = node.strip()
        if not node:
            raise DataContractError(
                f"{link_path}, line {number}: movie {movie} has an empty graph node; give its id."
            )
        if movie in node_of:
            raise DataContractError(
                f"{link_path}, line {number}: movie {movie} was already mapped on line "
                f"{link_line[movie]}; keep one graph node per movie."
            )
        node_of[movie] = node
        link_line[movie] = number
    unknown_links = sum(1 for m in node_of if m not in seen)
    if unknown_links:
        report.notes.append(
            f"{unknown_links} movie(s) of {link_path.name} are not in movies.dat (ignored)"
        )

    triplets = read_kg_txt(
        require_file(kg / "kg.txt", "head<TAB>relation<TAB>tail", kg_fix), report
    )
    graph = EntityGraph(triplets, (node_of[m] for m in movie_domain if m in node_of))
    note_unknown_relations(spec.phi, triplets, report)
    note_hubs(graph, spec.phi, report)

    # -- phi and the fate of every movie
    reason_of: dict[int, str] = {}
    entities_of: dict[int, list[str]] = {}
    for movie in movie_ids.tolist():
        if movie not in movie_domain:
            reason_of[movie] = "movie without a genre of the cut"
        elif movie not in node_of:
            reason_of[movie] = "movie without a graph node in item_index2entity_id.txt"
        elif node_of[movie] not in graph:
            reason_of[movie] = "movie whose graph node is in no triplet of kg.txt"
        else:
            chosen = graph.select([node_of[movie]], spec.phi)
            if chosen:
                entities_of[movie] = chosen
            else:
                reason_of[movie] = "movie with no entity under the [phi] rule"

    # -- ratings
    ratings_path = require_file(
        movielens / "ratings.dat", "UserID::MovieID::Rating::Timestamp", ml_fix
    )
    text, encoding = read_text(ratings_path)
    _note_encoding(report, ratings_path, encoding)
    fields = ("UserID", "MovieID", "Rating", "Timestamp")
    frame, numbers = read_fields(
        ratings_path,
        text,
        "::",
        fields,
        "1::1193::5::978300760",
        ints=("UserID", "MovieID", "Timestamp"),
        floats=("Rating",),
    )
    del text
    if frame.empty:
        raise DataContractError(f"{ratings_path}: no ratings; is it the right file?")
    report.rows_read = len(frame)
    ratings = pd.DataFrame(
        {"user": frame["UserID"], "movie": frame["MovieID"], "timestamp": frame["Timestamp"]}
    )
    del frame
    status = pd.Series(reason_of, dtype=object)
    reasons = ratings["movie"].map(status)
    unknown = ~ratings["movie"].isin(seen)
    reasons[unknown.to_numpy()] = "rating of a movie not in movies.dat"
    keep = reasons.isna().to_numpy()
    for reason, count in reasons[~keep].value_counts().items():
        report.drop_rows(str(reason), int(count))
    ratings = ratings[keep]
    dup = ratings.duplicated(["user", "movie", "timestamp"]).to_numpy()
    report.drop_rows("repeated (user, movie, timestamp)", int(dup.sum()))
    ratings = ratings[~dup]

    # -- movies: kept or why not
    rated = set(ratings["movie"].unique().tolist())
    report.items_read = len(movie_ids)
    for reason, count in Counter(reason_of.values()).items():
        report.drop_items(reason, count)
    unrated = [m for m in entities_of if m not in rated]
    report.drop_items("movie without any rating", len(unrated))
    report.items_kept = len(rated)

    inter = pd.DataFrame(
        {
            "user": ratings["user"].astype(str).to_numpy(),
            "item": ratings["movie"].astype(str).to_numpy(),
            "domain": ratings["movie"].map(movie_domain).to_numpy(),
            "timestamp": ratings["timestamp"].to_numpy(np.int64),
            "label": np.ones(len(ratings), dtype=np.int64),
        }
    )
    _check_domains(spec, inter, movies_path)
    count_domains(inter, [(d.name, d.role) for d in spec.domains], report)

    kept_movies = [m for m in movie_ids.tolist() if m in rated]
    phi = phi_table({str(m): entities_of[m] for m in kept_movies})
    sizes = Counter(len(entities_of[m]) for m in kept_movies)
    report.entities_per_item = dict(sorted(sizes.items()))
    domains = pd.DataFrame(
        {"domain": [d.name for d in spec.domains], "role": [d.role for d in spec.domains]}
    )
    index = {m: i for i, m in enumerate(movie_ids.tolist())}
    item_profiles = pd.DataFrame(
        {
            "item": [str(m) for m in kept_movies],
            "year": [_year(titles[index[m]]) for m in kept_movies],
            "n_genres": np.array([len(genre_lists[index[m]]) for m in kept_movies], dtype=np.int64),
        }
    )
    if item_profiles["year"].isna().any():
        report.notes.append(
            f"{int(item_profiles['year'].isna().sum())} movie title(s) without a (YYYY) year"
        )
    tables: dict[str, pd.DataFrame] = {
        "interactions": inter,
        "domains": domains,
        "item_entities": phi,
        "triplets": triplets,
        "item_profiles": item_profiles,
    }
    user_profiles = _read_users(movielens / "users.dat", set(inter["user"].unique()), report)
    if user_profiles is not None:
        tables["user_profiles"] = user_profiles

    report.entities = len(graph.degree)
    report.relations = int(triplets["relation"].nunique())
    report.triplets = len(triplets)
    report.notes.append("every rating is an implicit positive (label 1); star values are not used")
    write_tables(tables, out, report)
    report.seconds = time.perf_counter() - start
    return report


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


def _check_domains(spec: GenreCut, inter: pd.DataFrame, movies_path: Path) -> None:
    """Every domain of the cut keeps at least one rating, else a clear error."""
    present = set(inter["domain"].unique())
    for dom in spec.domains:
        if dom.name not in present:
            raise DataContractError(
                f"{spec.path}: [domains.{dom.name}] (genres {list(dom.genres)}) has no rating "
                f"left after the cut: no rated, graph-linked movie of {movies_path} has one of "
                "these genres as its rarest genre. Add genres to it, or remove the domain."
            )


def _note_encoding(report: ImportReport, path: Path, encoding: str) -> None:
    if encoding != "utf-8":
        report.notes.append(f"{path.name} is not UTF-8; read as {encoding}")


def _year(title: str) -> float:
    match = _YEAR.search(title)
    return float(match.group(1)) if match else float("nan")


def _read_users(path: Path, users: set[str], report: ImportReport) -> pd.DataFrame | None:
    """``users.dat`` as user_profiles (gender, age, occupation, zip1) of the kept users."""
    if not path.is_file():
        report.notes.append(f"{path} not found: no user_profiles table")
        return None
    text, encoding = read_text(path)
    _note_encoding(report, path, encoding)
    raw, numbers = read_fields(
        path,
        text,
        "::",
        ("UserID", "Gender", "Age", "Occupation", "Zip-code"),
        "1::F::1::10::48067",
        ints=("UserID",),
    )
    ids = raw["UserID"].astype(str).tolist()
    frame = pd.DataFrame(
        {
            "user": ids,
            "gender": [g.strip() for g in raw["Gender"]],
            "age": [AGE_LABELS.get(a.strip(), a.strip()) for a in raw["Age"]],
            "occupation": [OCCUPATION_LABELS.get(o.strip(), o.strip()) for o in raw["Occupation"]],
            "zip1": [_zip_zone(z) for z in raw["Zip-code"]],
        }
    )
    dup = frame["user"].duplicated().to_numpy()
    if dup.any():
        i = int(np.flatnonzero(dup)[0])
        raise DataContractError(
            f"{path}, line {numbers[i]}: UserID {ids[i]} is given twice; keep one line per user."
        )
    frame = frame[frame["user"].isin(users)].reset_index(drop=True)
    missing = len(users) - len(frame)
    if missing:
        report.notes.append(f"{missing} rating user(s) not in {path.name}: no profile for them")
    return frame


def _zip_zone(zip_code: str) -> str:
    """The first digit of a US zip code (its national zone, 0-9); ``other`` if not a digit."""
    zip_code = zip_code.strip()
    return zip_code[0] if zip_code[:1].isdigit() else "other"

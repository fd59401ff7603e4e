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

The phi rule and the entity graph index (:mod:`peace.data.importers.phi`) and the file helpers
(:mod:`peace.data.importers.files`) are shared with :mod:`peace.data.importers.recbole`; the
domain cut is :mod:`peace.data.importers.cut`.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from peace.data.contract import DataContractError
from peace.data.importers.cut import DEFAULT_CUT, DomainSpec, GenreCut, load_cut, rarest_genre
from peace.data.importers.files import read_fields, read_text, require_file, write_tables
from peace.data.importers.phi import DropReasons, PhiRule, phi_graph, phi_table, select_phi
from peace.data.importers.report import ImportReport, count_domains
from peace.data.importers.satori import read_kg_txt, read_links

__all__ = [
    "DEFAULT_CUT",
    "DomainSpec",
    "GenreCut",
    "PhiRule",
    "import_movielens",
    "load_cut",
    "rarest_genre",
    "read_kg_txt",
]

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

DROP_REASONS = DropReasons(
    no_domain="movie without a genre of the cut",
    no_nodes="movie without a graph node in item_index2entity_id.txt",
    unlinked="movie whose graph node is in no triplet of kg.txt",
    empty="movie with no entity under the [phi] rule",
)
"""Why a movie of ``movies.dat`` is left out, as the import report says."""

_YEAR = re.compile(r"\((\d{4})\)\s*$")


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
    frame, numbers = _read_dat(
        movies_path, ("MovieID", "Title", "Genres"), "1::Toy Story (1995)::Animation", report
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
    node_of = read_links(link_path)
    unknown_links = sum(1 for m in node_of if m not in seen)
    if unknown_links:
        report.notes.append(
            f"{unknown_links} movie(s) of {link_path.name} are not in movies.dat (ignored)"
        )

    triplets = read_kg_txt(
        require_file(kg / "kg.txt", "head<TAB>relation<TAB>tail", kg_fix), report
    )
    graph = phi_graph(
        triplets, (node_of[m] for m in movie_domain if m in node_of), spec.phi, report
    )

    # -- phi and the fate of every movie
    nodes_of = {movie: [node] for movie, node in node_of.items()}
    entities_of, reason_of = select_phi(
        graph, spec.phi, movie_ids.tolist(), movie_domain, nodes_of, DROP_REASONS
    )

    # -- ratings
    ratings_path = require_file(
        movielens / "ratings.dat", "UserID::MovieID::Rating::Timestamp", ml_fix
    )
    frame, numbers = _read_dat(
        ratings_path,
        ("UserID", "MovieID", "Rating", "Timestamp"),
        "1::1193::5::978300760",
        report,
        ints=("UserID", "MovieID", "Timestamp"),
        floats=("Rating",),
    )
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
    ratings = report.keep_rows(ratings, reasons, ("user", "movie", "timestamp"))

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


def _read_dat(
    path: Path,
    fields: tuple[str, ...],
    example: str,
    report: ImportReport,
    ints: tuple[str, ...] = ("UserID", "MovieID"),
    floats: tuple[str, ...] = (),
) -> tuple[pd.DataFrame, Sequence[int]]:
    """A ``::``-separated ML-1M file (UTF-8, else Latin-1, noted) as a frame and line numbers."""
    text, encoding = read_text(path)
    if encoding != "utf-8":
        report.notes.append(f"{path.name} is not UTF-8; read as {encoding}")
    ints = tuple(f for f in ints if f in fields)
    return read_fields(path, text, "::", fields, example, ints=ints, floats=floats)


def _year(title: str) -> float:
    match = _YEAR.search(title)
    return float(match.group(1)) if match else float("nan")


def _read_users(path: Path, users: set[str], report: ImportReport) -> pd.DataFrame | None:
    """``users.dat`` as user_profiles (gender, age, occupation, zip1) of the kept users."""
    if not path.is_file():
        report.notes.append(f"{path} not found: no user_profiles table")
        return None
    raw, numbers = _read_dat(
        path, ("UserID", "Gender", "Age", "Occupation", "Zip-code"), "1::F::1::10::48067", report
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

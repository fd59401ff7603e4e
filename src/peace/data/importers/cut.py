"""A domain cut of MovieLens by genre, read from a TOML file (see ``peace/configs/ml1m_cut.toml``).

Each movie goes to its rarest genre (fewest movies in ``movies.dat``, ties by genre name), and to
the domain listing that genre. The cut's optional ``[phi]`` table is the :class:`PhiRule` of the
import.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from peace.data.contract import ROLES, DataContractError
from peace.data.importers.files import load_toml
from peace.data.importers.phi import PhiRule

DEFAULT_CUT = Path(__file__).resolve().parents[2] / "configs" / "ml1m_cut.toml"
"""The packaged domain cut of ML-1M (DESIGN.md, "Public benchmark")."""


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

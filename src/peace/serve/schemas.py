"""The HTTP service's request and response bodies, its id limits, and the error it answers with.

Bodies are strict (no extra fields, no type coercion); ids are 1 to ``MAX_ID_LENGTH`` characters
and an item has 1 to ``MAX_ENTITIES`` entities (phi(i), DESIGN.md decision 3).
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

MAX_ID_LENGTH = 256
MAX_ENTITIES = 3
DEFAULT_K = 10

Id = Annotated[str, Field(min_length=1, max_length=MAX_ID_LENGTH)]


class RankRequest(BaseModel):
    """Candidates to score for one user."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={"example": {"user": "u17", "items": ["i1", "i2", "i3"]}},
    )
    user: Id
    items: list[Id]


class ItemSpec(BaseModel):
    """An item and its entities (phi(i): 1 to 3 entity ids known to the store)."""

    model_config = ConfigDict(extra="forbid", strict=True)
    item: Id
    entities: list[Id]


class LaunchRequest(BaseModel):
    """A new target domain and its first items."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={
            "example": {"domain": "pet-care", "items": [{"item": "pc1", "entities": ["e1", "e2"]}]}
        },
    )
    domain: Annotated[str, Field(min_length=1, max_length=64)]
    items: list[ItemSpec]


class ItemEntities(BaseModel):
    """The entities of one item."""

    model_config = ConfigDict(
        extra="forbid", strict=True, json_schema_extra={"example": {"entities": ["e1", "e2"]}}
    )
    entities: list[Id]


class RankResponse(BaseModel):
    """Scores aligned with the request's items (null for items the domain does not know)."""

    scores: list[float | None]
    ranker: str
    store_version: str
    ranker_version: str | None = None
    unknown_items: list[str]


class RecommendResponse(BaseModel):
    """The top k items of the domain's catalogue for the user, best first."""

    items: list[str]
    scores: list[float | None]
    ranker: str
    store_version: str
    ranker_version: str | None = None
    approximate: bool
    """True when candidates came from the approximate index (scores are still exact)."""


class ServiceError(Exception):
    """A request the service refuses: HTTP status and a message for the client."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


def duplicate_ids(ids: list[str]) -> list[str]:
    """Ids that occur more than once, each once, in order of their second occurrence."""
    seen: set[str] = set()
    dup: list[str] = []
    for i in ids:
        if i in seen and i not in dup:
            dup.append(i)
        seen.add(i)
    return dup


def check_domain_name(domain: str) -> None:
    """Refuse (422) a domain name that could not be a folder name or reads ambiguously."""
    bad = [c for c in domain if c in "/\\"]
    if (
        not domain
        or len(domain) > 64
        or bad
        or not domain.isprintable()
        or domain.strip() != domain
    ):
        raise ServiceError(
            422,
            f"domain name {domain!r}: use 1 to 64 printable characters (no control, format or "
            "bidirectional-override character), no slash, no leading or trailing space.",
        )

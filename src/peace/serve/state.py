"""What the service serves at one moment: an immutable :class:`Snapshot` and how one is built.

A snapshot is a store version (checksums verified), its zero-shot scorer, and one
:class:`~peace.serve.rankers.DomainState` per served domain: the version's target catalogues, the
domains and items launched at run time (``STORE/live``, :func:`~peace.store.read_live`), and
the normal rankers the ranker pointers name. Problems met while building (unreadable live edits,
rankers trained on another checkpoint) become notes and are logged; they never stop the build.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from peace.serve.domains import DomainState, attach_normal, catalogue_state, launched_state
from peace.serve.rankers import NormalRanker, ZeroShotScorer, mean_entity_vectors
from peace.serve.schemas import MAX_ENTITIES, ServiceError, duplicate_ids
from peace.store import (
    POINTER,
    LiveSignature,
    StoreError,
    StoreVersion,
    current_rankers,
    current_version,
    live_signature,
    ranker_path,
    read_live,
)

log = logging.getLogger("peace.serve")

Signature = tuple[str, tuple[tuple[str, str], ...], LiveSignature]
"""What a snapshot was built from: the store version, the sorted (domain, ranker id) pairs the
pointers name, and the files of ``STORE/live`` (:func:`peace.store.live_signature`)."""


@dataclass(frozen=True)
class Snapshot:
    """Everything one request needs, immutable: a store version, its scorer, the domains."""

    version: StoreVersion
    scorer: ZeroShotScorer
    domains: dict[str, DomainState]
    signature: Signature
    loaded_at: float = field(default_factory=time.time)
    notes: tuple[str, ...] = ()
    """Problems met while loading (unreadable live edits, rejected rankers)."""


def store_signature(store: Path) -> Signature:
    """What the pointer files of ``store`` name now, and its run-time edits' files."""
    version = current_version(store)
    if version is None:
        raise StoreError(
            f"{store}: no published version (no {POINTER}); run "
            f"`peace export --run RUN --store {store}` first."
        )
    return version, tuple(sorted(current_rankers(store).items())), live_signature(store)


def build_snapshot(
    store: Path,
    signature: Signature,
    verify: bool,
    exact_threshold: int,
    index_args: dict[str, Any],
    previous: Snapshot | None = None,
) -> Snapshot:
    """Load the version and rankers ``signature`` names and apply the live edits.

    What ``previous`` already holds is reused: its version and scorer when the version is the
    same, and each normal ranker whose id is the same (so another worker's run-time edit costs
    a rebuild of the domains, not a new load of the store)."""
    reuse = previous if previous and previous.version.version == signature[0] else None
    if reuse is not None:
        version, scorer = reuse.version, reuse.scorer
    else:
        version = StoreVersion.open(store, signature[0], verify=verify)
        scorer = ZeroShotScorer.from_version(version)
    domains = {name: catalogue_state(version, name, scorer) for name in version.catalogues}
    notes: list[str] = []
    live, errors = read_live(store)
    notes += errors
    for name, edit in live.items():
        state = domains.get(name)
        if state is None:
            if not edit["launched"]:
                notes.append(f"live edits of {name!r} skipped: not a domain of {version}.")
                continue
            if name in version.source_domains:
                notes.append(f"live domain {name!r} skipped: a source domain has that name.")
                continue
            state = launched_state(name, scorer)
        items, skipped = resolve_live_items(version, domains, name, edit["items"])
        if skipped:
            notes.append(f"{name}: {len(skipped)} live item(s) skipped: {skipped[:5]}")
        domains[name] = add_items(version, scorer, state, items)
    for name, rid in signature[1]:
        state = domains.get(name)
        if state is None:
            notes.append(f"ranker {rid} of unknown domain {name!r} ignored.")
            continue
        old = None if reuse is None else reuse.domains.get(name)
        if old is not None and old.normal is not None and old.normal.version == rid:
            ranker, note = old.normal, None  # checked against this version already
        else:
            ranker, note = load_ranker(store, version, scorer, name, rid, verify)
        if note:
            notes.append(note)
        domains[name] = attach_normal(state, ranker, note)
    domains = {n: s.with_index(exact_threshold, **index_args) for n, s in domains.items()}
    for note in notes:
        log.warning(note)
    return Snapshot(
        version=version, scorer=scorer, domains=domains, signature=signature, notes=tuple(notes)
    )


def load_ranker(
    store: Path,
    version: StoreVersion,
    scorer: ZeroShotScorer,
    domain: str,
    rid: str,
    verify: bool,
) -> tuple[NormalRanker | None, str | None]:
    """The normal ranker ``rid`` of ``domain`` bound to ``scorer`` (the version's), or None
    and why it is not served."""
    try:
        ranker = NormalRanker.load(ranker_path(store, domain, rid), verify=verify)
    except (StoreError, OSError, KeyError, ValueError, RuntimeError) as exc:
        return None, f"ranker {rid} of {domain!r} not loaded ({exc}); serving zero-shot."
    if ranker.manifest.get("model_hash") != version.model_hash:
        return None, (
            f"ranker {rid} of {domain!r} was trained on another checkpoint than "
            f"store version {version.version}; serving zero-shot."
        )
    if ranker.affinity_states > 1 and ranker.affinity_states != version.zero_shot_states:
        return None, (
            f"ranker {rid} of {domain!r} reads the mean of {ranker.affinity_states} states' "
            f"zero-shot scores and store version {version.version} serves "
            f"{version.zero_shot_states}; serving zero-shot."
        )
    try:
        return ranker.bind(scorer), None
    except StoreError as exc:
        return None, f"ranker {rid} of {domain!r} not served ({exc}); serving zero-shot."


def resolve_live_items(
    version: StoreVersion,
    domains: dict[str, DomainState],
    domain: str,
    items: dict[str, list[str]],
) -> tuple[dict[str, list[str]], list[str]]:
    """Keep live items whose entities this version knows and whose id no other domain has."""
    ok, skipped = {}, []
    for item, ents in items.items():
        row = version.item_row.get(item)
        foreign = row is not None and version.item_domain[row] != domain
        foreign = foreign or any(item in s.item_row for n, s in domains.items() if n != domain)
        if foreign or not ents or any(e not in version.entity_row for e in ents):
            skipped.append(item)
        else:
            ok[item] = ents
    return ok, skipped


def add_items(
    version: StoreVersion,
    scorer: ZeroShotScorer,
    state: DomainState,
    items: dict[str, list[str]],
) -> DomainState:
    """``state`` with ``items`` (id -> entity ids) added; each vector (and source-entity
    prior) is its entities' mean."""
    if not items:
        return state
    rows = torch.full((len(items), MAX_ENTITIES), -1, dtype=torch.long)
    for j, ents in enumerate(items.values()):
        for s, e in enumerate(ents[:MAX_ENTITIES]):
            rows[j, s] = version.entity_row[e]
    vectors = mean_entity_vectors(version.entity_vectors, rows)
    prior = mean_entity_vectors(version.entity_prior.unsqueeze(1), rows).squeeze(1)
    states = version.entity_zero_shot
    zero_shot = None if states is None else mean_entity_vectors(states, rows)
    return state.with_items(items, vectors, scorer, prior, zero_shot)


def check_items(
    snap: Snapshot, domain: str, specs: list[tuple[str, list[str]]]
) -> dict[str, list[str]]:
    """The (item, entities) pairs of a launch or put, checked against ``snap``: at most
    ``MAX_ENTITIES`` distinct entities the version knows, ids not used by another domain."""
    ids = [item for item, _ in specs]
    dup = duplicate_ids(ids)
    if dup:
        raise ServiceError(422, f"duplicate item ids: {dup[:10]}")
    out: dict[str, list[str]] = {}
    for item, ents in specs:
        if not 1 <= len(ents) <= MAX_ENTITIES:
            raise ServiceError(
                422,
                f"item {item!r}: {len(ents)} entities; give 1 to "
                f"{MAX_ENTITIES} (phi(i), DESIGN.md decision 3).",
            )
        dup = duplicate_ids(ents)
        if dup:
            raise ServiceError(422, f"item {item!r}: duplicate entities {dup}.")
        unknown = [e for e in ents if e not in snap.version.entity_row]
        if unknown:
            raise ServiceError(
                422,
                f"item {item!r}: entities unknown to store version "
                f"{snap.version.version}: {unknown[:10]}.",
            )
        row = snap.version.item_row.get(item)
        if row is not None and snap.version.item_domain[row] != domain:
            raise ServiceError(
                409,
                f"item {item!r} belongs to domain "
                f"{snap.version.item_domain[row]!r}; item ids are "
                "not shared across domains.",
            )
        for name, state in snap.domains.items():
            if name != domain and item in state.item_row:
                raise ServiceError(
                    409,
                    f"item {item!r} belongs to domain {name!r}; item "
                    "ids are not shared across domains.",
                )
        out[item] = list(ents)
    return out

"""The online ranking service: zero-shot and normal rankers over the embedding store (Sec. 4.5).

Endpoints (OpenAPI at ``/docs``; details and limits in ``docs/serving.md``):

* ``POST /v1/domains/{domain}/rank`` ``{"user", "items"}``: scores of candidate items, by the
  domain's normal ranker when one is published, else by the zero-shot ranker (a new domain is
  served the moment it is launched); an unknown user gets the domain's popularity.
* ``GET /v1/domains/{domain}/recommend?user=&k=``: top k of the catalogue (exact up to
  ``exact_threshold`` items; above, candidates from an approximate inner-product index, then
  exact scores).
* ``POST /v1/domains``: launch a target domain from items and their entities.
* ``PUT /v1/domains/{domain}/items/{item}``: add (or re-describe) an item at run time; its vector
  is the mean of its entities' vectors (DESIGN.md decision 3).
* ``GET /v1/domains``, ``GET /healthz``, ``GET /metrics`` (Prometheus text format).

Hot reload: every ``reload_interval_s`` a watcher thread (started with the app) reads the pointer
files (``STORE/CURRENT``, ``STORE/rankers/*/CURRENT``); when one changed, it loads the new version
or ranker (checksums verified) and swaps one immutable :class:`Snapshot` reference. (Without the
watcher, e.g. an app used without its lifespan, requests do the check themselves.)
Requests in flight keep the snapshot they started with; nothing restarts. A version that fails
to load is logged and counted, and the old snapshot keeps serving.

Run-time edits (launched domains, added items) apply to the in-memory snapshot at once and are
persisted under ``STORE/live/<domain>.json`` (atomic replace), so a restart or a new store
version keeps them.

Example::

    app = create_app("store", token="secret")        # FastAPI app
    run_server("store", host="127.0.0.1", port=8000) # or `peace serve --store store`
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import hmac
import json
import logging
import math
import os
import re
import threading
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any

import torch
from fastapi import Body, FastAPI, HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.concurrency import run_in_threadpool

from peace.serve.rankers import (
    DomainState,
    NormalRanker,
    UserVectors,
    ZeroShotScorer,
    attach_normal,
    catalogue_state,
    launched_state,
    mean_entity_vectors,
)
from peace.store import (
    POINTER,
    StoreError,
    StoreVersion,
    current_rankers,
    current_version,
    ranker_path,
    read_live,
    write_live,
)

log = logging.getLogger("peace.serve")

MAX_ID_LENGTH = 256
MAX_ENTITIES = 3
MAX_LAUNCH_BYTES = 32 << 20
"""Default limit of a launch body (``POST /v1/domains``); larger launches: several requests."""
RELEASE_AFTER_BYTES = 1 << 20
"""A launch body at least this large is followed by :func:`release_memory`."""
DEFAULT_K = 10
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})
"""HTTP methods that get their own metric label; any other method is counted as ``other``."""
_ABSOLUTE_PATH = re.compile(r"(?<![\w.~])/(?:[^\s'\"/,;()\[\]]+/)+([^\s'\"/,;()\[\]]*)")
UNMATCHED = "unmatched"
"""Endpoint label of unknown paths and of requests refused before routing (e.g. 401)."""

Id = Annotated[str, Field(min_length=1, max_length=MAX_ID_LENGTH)]


# --------------------------------------------------------------------------- request bodies
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


# --------------------------------------------------------------------------- metrics
class Metrics:
    """Counters and a latency histogram, rendered in the Prometheus text format (v0.0.4)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: dict[tuple[str, str, int], int] = defaultdict(int)
        self.latency_buckets: dict[str, list[int]] = {}
        self.latency_sum: dict[str, float] = defaultdict(float)
        self.latency_count: dict[str, int] = defaultdict(int)
        self.rankers: dict[str, int] = defaultdict(int)
        self.events: dict[str, int] = defaultdict(int)

    def observe(self, endpoint: str, method: str, status: int, seconds: float) -> None:
        """Count one request. Labels stay bounded: ``endpoint`` is a route template or
        ``unmatched``, a method outside :data:`METHODS` becomes ``other``, and a status outside
        100-599 becomes 0."""
        method = method if method in METHODS else "other"
        status = status if 100 <= status <= 599 else 0
        with self._lock:
            self.requests[(endpoint, method, status)] += 1
            buckets = self.latency_buckets.setdefault(endpoint, [0] * len(LATENCY_BUCKETS))
            for i, bound in enumerate(LATENCY_BUCKETS):
                if seconds <= bound:
                    buckets[i] += 1
            self.latency_sum[endpoint] += seconds
            self.latency_count[endpoint] += 1

    def ranker_used(self, ranker: str) -> None:
        with self._lock:
            self.rankers[ranker] += 1

    def event(self, name: str) -> None:
        with self._lock:
            self.events[name] += 1

    def render(self, snapshot: Snapshot | None) -> str:
        lines = [
            "# HELP peace_requests_total HTTP requests by endpoint, method and status.",
            "# TYPE peace_requests_total counter",
        ]
        with self._lock:
            for (ep, method, status), n in sorted(self.requests.items()):
                lines.append(
                    f'peace_requests_total{{endpoint="{_esc(ep)}",method="{method}",'
                    f'status="{status}"}} {n}'
                )
            lines += [
                "# HELP peace_request_duration_seconds Request latency by endpoint.",
                "# TYPE peace_request_duration_seconds histogram",
            ]
            for ep, buckets in sorted(self.latency_buckets.items()):
                label = f'endpoint="{_esc(ep)}"'
                for bound, n in zip(LATENCY_BUCKETS, buckets, strict=True):
                    lines.append(
                        f'peace_request_duration_seconds_bucket{{{label},le="{bound}"}} {n}'
                    )
                lines.append(
                    f'peace_request_duration_seconds_bucket{{{label},le="+Inf"}} '
                    f"{self.latency_count[ep]}"
                )
                lines.append(
                    f"peace_request_duration_seconds_sum{{{label}}} {self.latency_sum[ep]:.6f}"
                )
                lines.append(
                    f"peace_request_duration_seconds_count{{{label}}} {self.latency_count[ep]}"
                )
            lines += [
                "# HELP peace_ranker_used_total Scored requests by the ranker that served.",
                "# TYPE peace_ranker_used_total counter",
            ]
            for ranker, n in sorted(self.rankers.items()):
                lines.append(f'peace_ranker_used_total{{ranker="{ranker}"}} {n}')
            lines += [
                "# HELP peace_events_total Reloads, reload failures and run-time edits.",
                "# TYPE peace_events_total counter",
            ]
            for name, n in sorted(self.events.items()):
                lines.append(f'peace_events_total{{event="{name}"}} {n}')
        if snapshot is not None:
            lines += [
                "# HELP peace_store_info The served store version (value 1).",
                "# TYPE peace_store_info gauge",
                f'peace_store_info{{version="{_esc(snapshot.version.version)}"}} 1',
                "# HELP peace_catalogue_items Items per served domain.",
                "# TYPE peace_catalogue_items gauge",
            ]
            for name, state in sorted(snapshot.domains.items()):
                lines.append(
                    f'peace_catalogue_items{{domain="{_esc(name)}",'
                    f'ranker="{state.ranker}"}} {state.size}'
                )
        return "\n".join(lines) + "\n"


def _esc(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


# --------------------------------------------------------------------------- the service
@dataclass(frozen=True)
class Snapshot:
    """Everything one request needs, immutable: a store version, its scorer, the domains."""

    version: StoreVersion
    scorer: ZeroShotScorer
    domains: dict[str, DomainState]
    signature: tuple[str, tuple[tuple[str, str], ...]]
    loaded_at: float = field(default_factory=time.time)
    notes: tuple[str, ...] = ()
    """Problems met while loading (unreadable live edits, rejected rankers)."""


class Service:
    """Serving state and logic behind the HTTP app (usable without HTTP, e.g. in benchmarks).

    Args:
        store: the store folder.
        reload_interval_s: how often (at most) a request checks the pointer files.
        exact_threshold: catalogues larger than this get an approximate index for ``recommend``.
        ann_pool: candidates the index returns per query (at least k), ranked exactly.
        index_args: keyword arguments of :class:`peace.serve.rankers.InnerProductIndex`.
        verify: check the sha256 of every file of a version or ranker when loading it.
        threads: torch intra-op threads of every thread that scores (None: leave torch's
            setting). Set per thread, because a new thread's OpenMP pool otherwise uses all
            cores, which slows small concurrent requests down.
    """

    def __init__(
        self,
        store: str | Path,
        reload_interval_s: float = 0.5,
        exact_threshold: int = 2000,
        ann_pool: int = 100,
        index_args: dict[str, Any] | None = None,
        verify: bool = True,
        threads: int | None = None,
    ) -> None:
        self.store = Path(store)
        self.threads = threads
        self._local = threading.local()
        self.reload_interval_s = reload_interval_s
        self.exact_threshold = exact_threshold
        self.ann_pool = ann_pool
        self.index_args = dict(index_args or {})
        self.verify = verify
        self.metrics = Metrics()
        self._edit_lock = threading.Lock()
        self._reload_lock = threading.Lock()
        self._next_check = 0.0
        self._watcher: threading.Thread | None = None
        self._stop = threading.Event()
        self._failed_signature: tuple | None = None
        self.last_error: str | None = None
        self._snap = self._build(self._signature())
        self._next_check = time.monotonic() + reload_interval_s

    # ---------------------------------------------------------------- snapshots
    def _signature(self) -> tuple[str, tuple[tuple[str, str], ...]]:
        version = current_version(self.store)
        if version is None:
            raise StoreError(
                f"{self.store}: no published version (no {POINTER}); run "
                f"`peace export --run RUN --store {self.store}` first."
            )
        return version, tuple(sorted(current_rankers(self.store).items()))

    def _build(self, signature: tuple[str, tuple[tuple[str, str], ...]]) -> Snapshot:
        version = StoreVersion.open(self.store, signature[0], verify=self.verify)
        scorer = ZeroShotScorer.from_version(version)
        domains = {name: catalogue_state(version, name, scorer) for name in version.catalogues}
        notes: list[str] = []
        live, errors = read_live(self.store)
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
            items, skipped = self._resolve(version, domains, name, edit["items"])
            if skipped:
                notes.append(f"{name}: {len(skipped)} live item(s) skipped: {skipped[:5]}")
            domains[name] = self._add_items(version, scorer, state, items)
        for name, rid in signature[1]:
            state = domains.get(name)
            if state is None:
                notes.append(f"ranker {rid} of unknown domain {name!r} ignored.")
                continue
            ranker, note = self._load_ranker(version, name, rid)
            if note:
                notes.append(note)
            domains[name] = attach_normal(state, ranker, note)
        domains = {
            n: s.with_index(self.exact_threshold, **self.index_args) for n, s in domains.items()
        }
        for note in notes:
            log.warning(note)
        return Snapshot(
            version=version, scorer=scorer, domains=domains, signature=signature, notes=tuple(notes)
        )

    def _load_ranker(
        self, version: StoreVersion, domain: str, rid: str
    ) -> tuple[NormalRanker | None, str | None]:
        try:
            ranker = NormalRanker.load(ranker_path(self.store, domain, rid), verify=self.verify)
        except (StoreError, OSError, KeyError, ValueError, RuntimeError) as exc:
            return None, f"ranker {rid} of {domain!r} not loaded ({exc}); serving zero-shot."
        if ranker.manifest.get("model_hash") != version.model_hash:
            return None, (
                f"ranker {rid} of {domain!r} was trained on another checkpoint than "
                f"store version {version.version}; serving zero-shot."
            )
        return ranker, None

    @staticmethod
    def _resolve(
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

    @staticmethod
    def _add_items(
        version: StoreVersion,
        scorer: ZeroShotScorer,
        state: DomainState,
        items: dict[str, list[str]],
    ) -> DomainState:
        if not items:
            return state
        rows = torch.full((len(items), MAX_ENTITIES), -1, dtype=torch.long)
        for j, ents in enumerate(items.values()):
            for s, e in enumerate(ents[:MAX_ENTITIES]):
                rows[j, s] = version.entity_row[e]
        vectors = mean_entity_vectors(version.entity_vectors, rows)
        return state.with_items(items, vectors, scorer)

    def snapshot(self) -> Snapshot:
        """The current snapshot. Without a watcher thread, a request also checks the pointer
        files (at most every ``reload_interval_s``) and a change starts a background reload."""
        if self.threads is not None and not getattr(self._local, "threads_set", False):
            torch.set_num_threads(self.threads)
            self._local.threads_set = True
        if self._watcher is None:
            now = time.monotonic()
            if now >= self._next_check:
                self._next_check = now + self.reload_interval_s
                signature = self._changed()
                if signature is not None and self._reload_lock.acquire(blocking=False):
                    threading.Thread(
                        target=self._reload_locked,
                        args=(signature,),
                        daemon=True,
                        name="peace-reload",
                    ).start()
        return self._snap

    def _changed(self) -> tuple | None:
        """The pointers' signature when it differs from the served (and last failed) one."""
        try:
            signature = self._signature()
        except (StoreError, OSError) as exc:
            self.last_error = str(exc)
            return None
        if signature != self._snap.signature and signature != self._failed_signature:
            return signature
        return None

    def start_watcher(self) -> None:
        """Check the pointer files every ``reload_interval_s`` in a background thread, so a new
        version is loaded before the next request arrives (the HTTP app does this on start)."""
        if self._watcher is not None:
            return
        self._stop.clear()

        def watch() -> None:
            while not self._stop.wait(max(self.reload_interval_s, 0.05)):
                signature = self._changed()
                if signature is not None:
                    with self._reload_lock:
                        self._reload(signature)

        self._watcher = threading.Thread(target=watch, daemon=True, name="peace-watch")
        self._watcher.start()

    def stop_watcher(self) -> None:
        """Stop the watcher thread (requests then check the pointers themselves)."""
        watcher, self._watcher = self._watcher, None
        if watcher is not None:
            self._stop.set()
            watcher.join(timeout=30)

    def reload(self) -> bool:
        """Load the pointers' targets now (blocking); True when the snapshot changed."""
        signature = self._signature()
        if signature == self._snap.signature:
            return False
        with self._reload_lock:
            return self._reload(signature)

    def _reload_locked(self, signature: tuple) -> None:
        try:
            self._reload(signature)
        finally:
            self._reload_lock.release()

    def _reload(self, signature: tuple) -> bool:
        with self._edit_lock:  # edits wait; requests keep reading the old snapshot
            try:
                snap = self._build(signature)
            except Exception as exc:  # noqa: BLE001 - any failure keeps the old snapshot
                self._failed_signature = signature
                self.last_error = f"reload of {signature[0]} failed: {exc}"
                log.error(self.last_error)
                self.metrics.event("reload_failed")
                return False
            self._snap = snap
            self._failed_signature = None
            self.metrics.event("reload")
            log.info("serving store version %s, rankers %s", signature[0], dict(signature[1]))
            return True

    # ---------------------------------------------------------------- edits
    def launch(self, domain: str, items: list[ItemSpec]) -> dict[str, Any]:
        """Launch a new target domain served zero-shot at once; persisted under STORE/live."""
        _check_domain_name(domain)
        with self._edit_lock:
            snap = self._snap
            if domain in snap.domains:
                raise ServiceError(
                    409,
                    f"domain {domain!r} exists; add items with "
                    f"PUT /v1/domains/{domain}/items/ITEM.",
                )
            if domain in snap.version.source_domains:
                raise ServiceError(409, f"{domain!r} is a source domain of the store.")
            specs = self._check_items(snap, domain, [(s.item, s.entities) for s in items])
            state = self._add_items(
                snap.version, snap.scorer, launched_state(domain, snap.scorer), specs
            )
            state = state.with_index(self.exact_threshold, **self.index_args)
            write_live(self.store, domain, True, dict(state.live_items))
            self._snap = replace(snap, domains={**snap.domains, domain: state})
            self.metrics.event("domain_launched")
        return {
            "domain": domain,
            "items": state.size,
            "ranker": state.ranker,
            "store_version": snap.version.version,
        }

    def put_item(self, domain: str, item: str, entities: list[str]) -> dict[str, Any]:
        """Add an item to a served domain (or change its entities); its vector comes from its
        entities alone."""
        with self._edit_lock:
            snap = self._snap
            state = self._domain(snap, domain)
            specs = self._check_items(snap, domain, [(item, entities)])
            created = item not in state.item_row
            state = self._add_items(snap.version, snap.scorer, state, specs)
            if state.index is not None or state.size > self.exact_threshold:
                behind = state.size - (state.index.size if state.index else 0)
                if state.index is None or behind + len(state.stale_rows) > max(
                    1000, state.size // 10
                ):
                    state = state.with_index(self.exact_threshold, **self.index_args)
            write_live(self.store, domain, state.origin == "launched", dict(state.live_items))
            self._snap = replace(snap, domains={**snap.domains, domain: state})
            self.metrics.event("item_put")
        return {"domain": domain, "item": item, "created": created, "items": state.size}

    def _check_items(
        self, snap: Snapshot, domain: str, specs: list[tuple[str, list[str]]]
    ) -> dict[str, list[str]]:
        ids = [item for item, _ in specs]
        dup = _duplicates(ids)
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
            dup = _duplicates(ents)
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

    # ---------------------------------------------------------------- queries
    def _domain(self, snap: Snapshot, domain: str) -> DomainState:
        state = snap.domains.get(domain)
        if state is None:
            if domain in snap.version.source_domains:
                raise ServiceError(
                    404, f"{domain!r} is a source domain; only target domains are served."
                )
            raise ServiceError(
                404, f"unknown domain {domain!r}; served domains: {sorted(snap.domains)[:50]}."
            )
        return state

    @staticmethod
    def _user(snap: Snapshot, user: str) -> UserVectors | None:
        row = snap.version.user_row.get(user)
        if row is None:
            return None
        return UserVectors(user, snap.version.interests[row], snap.version.universal[row])

    def rank(
        self, domain: str, user: str, items: list[str], max_candidates: int = 1000
    ) -> dict[str, Any]:
        """Score candidate items for a user (see the module docstring)."""
        snap = self.snapshot()
        state = self._domain(snap, domain)
        if not items:
            raise ServiceError(422, f"items is empty; send 1 to {max_candidates} candidate ids.")
        if len(items) > max_candidates:
            raise ServiceError(
                413, f"{len(items)} candidates; at most {max_candidates} per request."
            )
        dup = _duplicates(items)
        if dup:
            raise ServiceError(422, f"duplicate item ids: {dup[:10]}")
        rows = state.rows_of(items)
        known = [j for j, r in enumerate(rows) if r is not None]
        vectors = self._user(snap, user)
        scores: list[float | None] = [None] * len(items)
        ranker = "popularity-fallback" if vectors is None else state.ranker
        if known:
            idx = torch.as_tensor([rows[j] for j in known], dtype=torch.long)
            values, ranker = state.score_rows(snap.scorer, vectors, idx)
            for j, v in zip(known, _finite(values.tolist()), strict=True):
                scores[j] = v
        self.metrics.ranker_used(ranker)
        return {
            "scores": scores,
            "ranker": ranker,
            "store_version": snap.version.version,
            "ranker_version": state.normal.version if ranker == "normal" and state.normal else None,
            "unknown_items": [items[j] for j, r in enumerate(rows) if r is None],
        }

    def recommend(self, domain: str, user: str, k: int) -> dict[str, Any]:
        """Top ``k`` of the domain's catalogue for a user."""
        snap = self.snapshot()
        state = self._domain(snap, domain)
        items, scores, ranker, approx = state.recommend(
            snap.scorer, self._user(snap, user), k, self.ann_pool
        )
        self.metrics.ranker_used(ranker)
        return {
            "items": items,
            "scores": _finite(scores),
            "ranker": ranker,
            "store_version": snap.version.version,
            "ranker_version": state.normal.version if ranker == "normal" and state.normal else None,
            "approximate": approx,
        }

    def describe(self) -> dict[str, Any]:
        """The served store version and domains (``GET /v1/domains``)."""
        snap = self.snapshot()
        return {
            "store_version": snap.version.version,
            "model_hash": snap.version.model_hash,
            "loaded_at": snap.loaded_at,
            "domains": [
                {
                    "domain": name,
                    "origin": s.origin,
                    "items": s.size,
                    "ranker": s.ranker,
                    "ranker_version": s.normal.version if s.normal else None,
                    "note": self.public(s.normal_note),
                    "indexed": s.index is not None,
                }
                for name, s in sorted(snap.domains.items())
            ],
            "notes": [self.public(n) for n in snap.notes],
            "last_error": self.public(self.last_error),
        }

    def public(self, text: str | None) -> str | None:
        """``text`` fit for an HTTP answer: the store folder becomes ``STORE`` and any other
        absolute path its last component, so no file-system layout is served."""
        if text is None:
            return None
        roots = {str(self.store.resolve()), str(self.store.absolute())}
        for root in sorted(roots, key=len, reverse=True):
            text = text.replace(root, "STORE")
        text = text.replace(f"{self.store}{os.sep}", f"STORE{os.sep}")
        return _ABSOLUTE_PATH.sub(lambda m: m.group(1) or "/", text)


def _duplicates(ids: list[str]) -> list[str]:
    seen: set[str] = set()
    dup: list[str] = []
    for i in ids:
        if i in seen and i not in dup:
            dup.append(i)
        seen.add(i)
    return dup


def _finite(values: list[float]) -> list[float | None]:
    """Scores as JSON numbers (a non-finite score, which a sane model never gives, -> null)."""
    return [v if math.isfinite(v) else None for v in values]


def _json(payload: dict[str, Any]) -> Response:
    """A compact JSON response without a second validation pass (the payload is ours)."""
    return Response(
        json.dumps(payload, separators=(",", ":"), allow_nan=False).encode(),
        media_type="application/json",
    )


def _clean_errors(errors: Any) -> list[dict[str, Any]]:
    """Validation errors that always serialise: type, location, message, a short input repr.

    (The raw input may hold NaN or infinity, which strict JSON cannot carry.)
    """
    out = []
    for err in list(errors)[:20]:
        entry = {
            "type": str(err.get("type", "")),
            "loc": [str(x) for x in err.get("loc", ())],
            "msg": str(err.get("msg", "")),
        }
        if "input" in err:
            text = repr(err["input"])
            entry["input"] = text if len(text) <= 80 else text[:77] + "..."
        out.append(entry)
    return out


def _check_domain_name(domain: str) -> None:
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


def _inline_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The JSON schema of ``model`` with its ``$defs`` inlined (for a hand-read request body)."""
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            if ref.startswith("#/$defs/"):
                return inline(defs[ref.removeprefix("#/$defs/")])
            return {k: inline(v) for k, v in node.items()}
        if isinstance(node, list):
            return [inline(v) for v in node]
        return node

    return inline(schema)


def release_memory() -> None:
    """Collect garbage and hand freed heap pages back to the OS (glibc ``malloc_trim``), so a
    large request does not leave the process holding its peak memory."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


# --------------------------------------------------------------------------- ASGI middleware
class _Guard:
    """Pure ASGI middleware: bearer token, request-body limit, request metrics."""

    def __init__(
        self,
        app: Any,
        service: Service,
        token: str | None,
        max_body_bytes: int,
        max_launch_bytes: int,
    ) -> None:
        self.app, self.service, self.token = app, service, token
        self.max_body_bytes, self.max_launch_bytes = max_body_bytes, max_launch_bytes
        self._expected = f"Bearer {token}".encode() if token else None

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = {"code": 500}

        async def send_wrapper(message: dict) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            if self._expected is not None and scope["path"] != "/healthz":
                header = dict(scope["headers"]).get(b"authorization", b"")
                if not hmac.compare_digest(header, self._expected):
                    await _send_json(
                        send_wrapper,
                        401,
                        {"detail": "missing or wrong bearer token"},
                        {"www-authenticate": "Bearer"},
                    )
                    return
            launch = scope["path"] == "/v1/domains" and scope["method"] == "POST"
            limit = self.max_launch_bytes if launch else self.max_body_bytes
            body, too_large = await _read_body(receive, limit)
            if too_large:
                await _send_json(send_wrapper, 413, {"detail": f"request body over {limit} bytes"})
                return
            replayed = False

            async def replay() -> dict:
                nonlocal replayed
                if not replayed:
                    replayed = True
                    return {"type": "http.request", "body": body, "more_body": False}
                return await receive()

            try:
                await self.app(scope, replay, send_wrapper)
            finally:
                if launch and len(body) >= RELEASE_AFTER_BYTES:
                    body = b""
                    release_memory()
        finally:
            route = scope.get("route")
            endpoint = getattr(route, "path", None) or UNMATCHED
            self.service.metrics.observe(
                endpoint, scope.get("method", ""), status["code"], time.perf_counter() - start
            )


async def _read_body(receive: Any, limit: int) -> tuple[bytes, bool]:
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return b"", True
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks), False


async def _send_json(
    send: Any, status: int, payload: dict, headers: dict[str, str] | None = None
) -> None:
    body = json.dumps(payload).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


# --------------------------------------------------------------------------- the app
def create_app(
    store: str | Path,
    token: str | None = None,
    max_candidates: int = 1000,
    max_k: int = 1000,
    *,
    reload_interval_s: float = 0.5,
    exact_threshold: int = 2000,
    ann_pool: int = 100,
    max_launch_items: int = 100_000,
    max_body_bytes: int | None = None,
    max_launch_bytes: int = MAX_LAUNCH_BYTES,
    index_args: dict[str, Any] | None = None,
    threads: int | None = None,
    service: Service | None = None,
) -> FastAPI:
    """The FastAPI app serving ``store``.

    Args:
        store: the store folder (it must have a published version).
        token: when set, every endpoint but ``/healthz`` needs ``Authorization: Bearer TOKEN``.
        max_candidates: most candidate items per rank request (more: 413).
        max_k: largest k of recommend (more: 422).
        reload_interval_s: how often (at most) pointer files are checked for a new version.
        exact_threshold: catalogues larger than this use the approximate index in recommend.
        ann_pool: candidates taken from the index per query (at least k).
        max_launch_items: most items in one launch request (more: 413).
        max_body_bytes: largest request body but a launch's (default: room for
            ``max_candidates`` ids of the longest length).
        max_launch_bytes: largest launch body (default 32 MiB, about 400,000 items of short
            ids); the body is validated straight from its bytes, so parsing it needs a few
            times its size, which is handed back to the OS after the request.
        index_args: options of :class:`peace.serve.rankers.InnerProductIndex`.
        threads: torch threads per request-handling thread (None: torch's default).
        service: an existing :class:`Service` (the other serving options are then ignored).
    """
    service = service or Service(
        store, reload_interval_s, exact_threshold, ann_pool, index_args, threads=threads
    )
    body_limit = max_body_bytes or max(1 << 16, 600 * max_candidates)
    launch_limit = max(body_limit, max_launch_bytes)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        service.start_watcher()
        try:
            yield
        finally:
            service.stop_watcher()

    app = FastAPI(
        lifespan=lifespan,
        title="PEACE ranking service",
        version="1",
        description="Zero-shot and normal rankers of PEACE (WSDM 2024, Sec. 4.5) over a "
        "versioned embedding store. Limits: "
        f"{max_candidates} candidates per rank request, k <= {max_k}, ids <= "
        f"{MAX_ID_LENGTH} characters, 1 to {MAX_ENTITIES} entities per item.",
    )
    app.state.service = service
    app.add_middleware(
        _Guard,
        service=service,
        token=token,
        max_body_bytes=body_limit,
        max_launch_bytes=launch_limit,
    )

    @app.exception_handler(ServiceError)
    async def _service_error(request: Request, exc: ServiceError) -> JSONResponse:
        return JSONResponse({"detail": exc.message}, status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": _clean_errors(exc.errors())}, status_code=422)

    @app.post(
        "/v1/domains/{domain}/rank",
        response_class=Response,
        tags=["ranking"],
        summary="Score candidate items for a user",
        responses={
            200: {"model": RankResponse, "description": "scores"},
            404: {"description": "unknown domain"},
            413: {"description": "too many candidates"},
            422: {"description": "empty list, duplicates or malformed body"},
        },
    )
    def rank(
        domain: Annotated[str, PathParam(min_length=1, max_length=MAX_ID_LENGTH)],
        body: Annotated[RankRequest, Body()],
    ) -> Response:
        """Scores aligned with ``items``: normal ranker (logits of Eq. 11) when one is published
        for the domain, zero-shot ranker (by default the inner product of the universal user
        vector and the item vector, Sec. 4.4) otherwise; an unknown user gets popularity shares
        (``ranker: popularity-fallback``). Items the domain does not know get null and are
        listed in ``unknown_items``."""
        return _json(service.rank(domain, body.user, body.items, max_candidates))

    @app.get(
        "/v1/domains/{domain}/recommend",
        response_class=Response,
        tags=["ranking"],
        summary="Top k items of the domain's catalogue",
        responses={200: {"model": RecommendResponse, "description": "top k"}},
    )
    def recommend(
        domain: Annotated[str, PathParam(min_length=1, max_length=MAX_ID_LENGTH)],
        user: Annotated[str, Query(min_length=1, max_length=MAX_ID_LENGTH)],
        k: Annotated[int, Query(description="Items to return, 1 to max_k.")] = DEFAULT_K,
    ) -> Response:
        """Exact scores of the whole catalogue up to the service's exact threshold; above it,
        the approximate inner-product index proposes candidates that are then scored exactly
        (``approximate: true``)."""
        if not 1 <= k <= max_k:
            raise HTTPException(422, f"k = {k}: give 1 to {max_k}.")
        return _json(service.recommend(domain, user, k))

    @app.post(
        "/v1/domains",
        status_code=201,
        tags=["domains"],
        summary="Launch a new target domain",
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": _inline_schema(LaunchRequest)}},
            }
        },
    )
    async def launch(request: Request) -> dict[str, Any]:
        """The domain is served zero-shot at once; items need 1 to 3 entities known to the
        store. Persisted under ``STORE/live``."""
        return await run_in_threadpool(_launch, await request.body())

    def _launch(raw: bytes) -> dict[str, Any]:
        # Validated straight from the bytes: no intermediate tree of Python objects.
        try:
            body = LaunchRequest.model_validate_json(raw)
        except ValidationError as exc:
            errors = [{**e, "loc": ("body", *e.get("loc", ()))} for e in exc.errors()]
            raise RequestValidationError(errors) from None
        if len(body.items) > max_launch_items:
            raise HTTPException(
                413,
                f"{len(body.items)} items; at most {max_launch_items} per "
                "launch (add more with PUT).",
            )
        return service.launch(body.domain, body.items)

    @app.put(
        "/v1/domains/{domain}/items/{item}",
        tags=["domains"],
        summary="Add or re-describe an item at run time",
    )
    def put_item(
        domain: Annotated[str, PathParam(min_length=1, max_length=MAX_ID_LENGTH)],
        item: Annotated[str, PathParam(min_length=1, max_length=MAX_ID_LENGTH)],
        body: ItemEntities,
    ) -> dict[str, Any]:
        """The item's vector is the mean of its entities' vectors (DESIGN.md decision 3)."""
        return service.put_item(domain, item, body.entities)

    @app.get("/v1/domains", tags=["domains"], summary="Served store version and domains")
    def domains() -> dict[str, Any]:
        return service.describe()

    @app.get("/healthz", tags=["operations"], summary="Liveness (no token needed)")
    def healthz() -> dict[str, Any]:
        snap = service.snapshot()
        return {"status": "ok", "store_version": snap.version.version}

    @app.get(
        "/metrics",
        response_class=PlainTextResponse,
        tags=["operations"],
        summary="Prometheus metrics",
    )
    def metrics() -> PlainTextResponse:
        return PlainTextResponse(
            service.metrics.render(service.snapshot()), media_type="text/plain; version=0.0.4"
        )

    return app


def run_server(
    store: str | Path,
    host: str = "127.0.0.1",
    port: int = 8000,
    token: str | None = None,
    threads: int = 1,
    announce: Callable[[], None] | None = None,
    **options: Any,
) -> None:
    """Serve ``store`` with uvicorn (blocking). ``threads``: torch intra-op threads per request
    (1 suits many small concurrent requests). ``announce`` is called once the store has loaded,
    before the server starts listening."""
    import uvicorn

    torch.set_num_threads(max(1, threads))
    options.setdefault("threads", max(1, threads))
    if host not in ("127.0.0.1", "localhost", "::1") and not token:
        log.warning("serving on %s without a token: anyone who can reach it can use it.", host)
    app = create_app(store, token=token, **options)
    if announce is not None:
        announce()
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)


def main(argv: list[str] | None = None) -> None:
    """``python -m peace.serve.app --store STORE [--host --port --token]``."""
    parser = argparse.ArgumentParser(description="Serve a PEACE embedding store over HTTP.")
    parser.add_argument("--store", required=True, type=Path)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--token", default=None)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--exact-threshold", type=int, default=2000)
    parser.add_argument("--ann-pool", type=int, default=100)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    run_server(
        args.store,
        args.host,
        args.port,
        args.token,
        args.threads,
        exact_threshold=args.exact_threshold,
        ann_pool=args.ann_pool,
    )


if __name__ == "__main__":
    main()

"""The serving logic behind the HTTP app, usable without HTTP (e.g. in benchmarks).

:class:`Service` holds one immutable :class:`~peace.serve.state.Snapshot` reference. Hot reload:
every ``reload_interval_s`` a watcher thread (started with the app) reads the pointer files
(``STORE/CURRENT``, ``STORE/rankers/*/CURRENT``); when one changed, it loads the new version or
ranker (checksums verified) and swaps the reference. (Without the watcher, e.g. an app used
without its lifespan, requests do the check themselves.) Requests in flight keep the snapshot they
started with; nothing restarts. A version that fails to load is logged and counted, and the old
snapshot keeps serving.

Run-time edits (launched domains, added items) apply to the in-memory snapshot at once and are
persisted under ``STORE/live/<domain>.json`` (atomic replace), so a restart or a new store
version keeps them. Several services (server workers) may share one store: an edit is made under
a lock across processes, after the edits other workers wrote have been applied, and the others
pick it up like a new version (the signature covers ``STORE/live``), rebuilding their domains
without loading the store again. Refused requests raise
:class:`~peace.serve.schemas.ServiceError`.
"""

from __future__ import annotations

import logging
import math
import os
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from peace.serve.domains import DomainState, launched_state
from peace.serve.metrics import Metrics
from peace.serve.rankers import UserVectors
from peace.serve.schemas import ItemSpec, ServiceError, check_domain_name, duplicate_ids
from peace.serve.state import (
    Signature,
    Snapshot,
    add_items,
    build_snapshot,
    check_items,
    store_signature,
)
from peace.store import StoreError, live_lock, live_signature, write_live

log = logging.getLogger("peace.serve")

_ABSOLUTE_PATH = re.compile(r"(?<![\w.~])/(?:[^\s'\"/,;()\[\]]+/)+([^\s'\"/,;()\[\]]*)")


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
        self._snap = self._build(store_signature(self.store))
        self._next_check = time.monotonic() + reload_interval_s

    def _build(self, signature: Signature, previous: Snapshot | None = None) -> Snapshot:
        return build_snapshot(
            self.store, signature, self.verify, self.exact_threshold, self.index_args, previous
        )

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
            signature = store_signature(self.store)
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
        signature = store_signature(self.store)
        if signature == self._snap.signature:
            return False
        with self._reload_lock:
            return self._reload(signature)

    def _reload_locked(self, signature: Signature) -> None:
        try:
            self._reload(signature)
        finally:
            self._reload_lock.release()

    def _reload(self, signature: Signature) -> bool:
        with self._edit_lock:  # edits wait; requests keep reading the old snapshot
            if signature == self._snap.signature:  # an edit of this service got there first
                return False
            try:
                snap = self._build(signature, self._snap)
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
    @contextmanager
    def _editing(self) -> Iterator[Snapshot]:
        """Hold the edit locks (this service's threads, and ``STORE/live`` across processes)
        and yield the snapshot to edit, with every edit already on disk applied: one written by
        another worker since this service last read ``STORE/live`` is not overwritten."""
        with self._edit_lock, live_lock(self.store):
            snap = self._snap
            live = live_signature(self.store)
            if live != snap.signature[2]:
                snap = self._build((snap.signature[0], snap.signature[1], live), snap)
                self._snap = snap
            yield snap

    def _commit(self, snap: Snapshot, domain: str, state: DomainState) -> None:
        """Serve ``snap`` with ``state`` for ``domain``, just written to ``STORE/live`` (under
        the locks: the files now hold exactly this snapshot's edits)."""
        signature = (snap.signature[0], snap.signature[1], live_signature(self.store))
        self._snap = replace(snap, domains={**snap.domains, domain: state}, signature=signature)

    def launch(self, domain: str, items: list[ItemSpec]) -> dict[str, Any]:
        """Launch a new target domain served zero-shot at once; persisted under STORE/live."""
        check_domain_name(domain)
        with self._editing() as snap:
            if domain in snap.domains:
                raise ServiceError(
                    409,
                    f"domain {domain!r} exists; add items with "
                    f"PUT /v1/domains/{domain}/items/ITEM.",
                )
            if domain in snap.version.source_domains:
                raise ServiceError(409, f"{domain!r} is a source domain of the store.")
            specs = check_items(snap, domain, [(s.item, s.entities) for s in items])
            state = add_items(snap.version, snap.scorer, launched_state(domain, snap.scorer), specs)
            state = state.with_index(self.exact_threshold, **self.index_args)
            write_live(self.store, domain, True, dict(state.live_items))
            self._commit(snap, domain, state)
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
        with self._editing() as snap:
            state = self._domain(snap, domain)
            specs = check_items(snap, domain, [(item, entities)])
            created = item not in state.item_row
            state = add_items(snap.version, snap.scorer, state, specs)
            if state.index is not None or state.size > self.exact_threshold:
                behind = state.size - (state.index.size if state.index else 0)
                if state.index is None or behind + len(state.stale_rows) > max(
                    1000, state.size // 10
                ):
                    state = state.with_index(self.exact_threshold, **self.index_args)
            write_live(self.store, domain, state.origin == "launched", dict(state.live_items))
            self._commit(snap, domain, state)
            self.metrics.event("item_put")
        return {"domain": domain, "item": item, "created": created, "items": state.size}

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
        return UserVectors.of(snap.version, user, row)

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
        dup = duplicate_ids(items)
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
            "worker": os.getpid(),
            "model_hash": snap.version.model_hash,
            "zero_shot_states": snap.version.zero_shot_states,
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


def _finite(values: list[float]) -> list[float | None]:
    """Scores as JSON numbers (a non-finite score, which a sane model never gives, -> null)."""
    return [v if math.isfinite(v) else None for v in values]

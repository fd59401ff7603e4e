"""Run-time edits of the service (launched domains, added items): ``STORE/live/<domain>.json``.

Several server processes may serve one store (``peace serve --workers N``). An edit is made under
:func:`live_lock`, an exclusive lock across processes, by a process that has first applied every
edit already on disk; the others see the change through :func:`live_signature`, which changes
whenever a file of ``STORE/live`` is replaced.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from peace.store.files import LIVE, domain_file_name, write_pointer

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: one process per store
    fcntl = None  # type: ignore[assignment]

LIVE_LOCK = "LOCK"
"""The lock file of ``STORE/live`` (not a ``.json`` file, so never read as edits)."""

LiveSignature = tuple[tuple[str, int, int, int], ...]
"""(file name, inode, size, modification time in ns) of each file of ``STORE/live``."""


def live_path(store: str | Path, domain: str) -> Path:
    """``STORE/live/<domain>.json``: the run-time edits of one domain."""
    return Path(store) / LIVE / f"{domain_file_name(domain)}.json"


def read_live(store: str | Path) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """All persisted run-time edits and the files that could not be read.

    Returns:
        ``({domain: {"launched": bool, "items": {item: [entity, ...]}}}, [error, ...])``.
    """
    root = Path(store) / LIVE
    out: dict[str, dict[str, Any]] = {}
    errors: list[str] = []
    if not root.is_dir():
        return out, errors
    for path in sorted(root.glob("*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            domain = str(data["domain"])
            items = {str(k): [str(e) for e in v] for k, v in dict(data["items"]).items()}
            out[domain] = {"launched": bool(data.get("launched", False)), "items": items}
        except (OSError, ValueError, KeyError, TypeError) as exc:
            errors.append(f"{path}: {exc}")
    return out, errors


def write_live(store: str | Path, domain: str, launched: bool, items: dict[str, list[str]]) -> None:
    """Persist the run-time edits of one domain atomically (temp file + replace)."""
    path = live_path(store, domain)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps({"domain": domain, "launched": launched, "items": items}, indent=1)
    write_pointer(path, text)


def live_signature(store: str | Path) -> LiveSignature:
    """What ``STORE/live`` holds now, one ``stat`` per file: it changes whenever an edit is
    written (every write replaces its file), so a process can tell that another one edited."""
    root = Path(store) / LIVE
    if not root.is_dir():
        return ()
    out = []
    for path in sorted(root.glob("*.json")):
        try:
            st = path.stat()
        except FileNotFoundError:  # replaced between the listing and the stat
            continue
        out.append((path.name, st.st_ino, st.st_size, st.st_mtime_ns))
    return tuple(out)


@contextmanager
def live_lock(store: str | Path) -> Iterator[None]:
    """Hold the exclusive lock over ``STORE/live`` across processes (``flock``; without
    ``fcntl`` only threads of one process are excluded, by the caller's own lock)."""
    root = Path(store) / LIVE
    root.mkdir(parents=True, exist_ok=True)
    with open(root / LIVE_LOCK, "a+b") as fh:
        if fcntl is not None:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            if fcntl is not None:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)

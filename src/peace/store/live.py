"""Run-time edits of the service (launched domains, added items): ``STORE/live/<domain>.json``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from peace.store.files import LIVE, domain_file_name, write_pointer


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

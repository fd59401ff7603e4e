"""Published normal rankers of the target domains: ``STORE/rankers/<domain>/``."""

from __future__ import annotations

import urllib.parse
from pathlib import Path
from typing import Any

from peace.store.files import (
    POINTER,
    RANKERS,
    StoreError,
    domain_file_name,
    load_manifest,
    read_pointer,
    verify_files,
    write_pointer,
)
from peace.store.live import read_live
from peace.store.versions import current_version, version_path


def ranker_root(store: str | Path, domain: str) -> Path:
    """``STORE/rankers/<domain>``: the published normal rankers of one domain."""
    return Path(store) / RANKERS / domain_file_name(domain)


def current_rankers(store: str | Path) -> dict[str, str]:
    """``{domain: ranker version}`` for every domain with a ``CURRENT`` ranker pointer."""
    root = Path(store) / RANKERS
    out: dict[str, str] = {}
    if not root.is_dir():
        return out
    for folder in sorted(root.iterdir()):
        if folder.is_dir() and not folder.name.startswith("."):
            value = read_pointer(folder / POINTER)
            if value:
                out[urllib.parse.unquote(folder.name)] = value
    return out


def ranker_domains(store: str | Path) -> list[str]:
    """Domains with a ``STORE/rankers/<domain>`` folder (published rankers, current or not)."""
    root = Path(store) / RANKERS
    if not root.is_dir():
        return []
    return sorted(
        urllib.parse.unquote(p.name)
        for p in root.iterdir()
        if p.is_dir() and not p.name.startswith(".")
    )


def ranker_path(store: str | Path, domain: str, version: str) -> Path:
    """Folder of one published ranker version (the id is checked like a store version's)."""
    if not version or "/" in version or "\\" in version or version.startswith("."):
        raise StoreError(f"{version!r} is not a ranker version id.")
    return ranker_root(store, domain) / version


def list_rankers(store: str | Path, domain: str) -> list[dict[str, Any]]:
    """Published rankers of a domain, oldest first, with the current one flagged."""
    root = ranker_root(store, domain)
    if not root.is_dir():
        return []
    current = read_pointer(root / POINTER)
    out = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        try:
            m = load_manifest(folder)
        except StoreError as exc:
            out.append({"version": folder.name, "error": str(exc)})
            continue
        out.append(
            {
                "version": folder.name,
                "created": m.get("created"),
                "store_version": m.get("store_version"),
                "model_hash": m.get("model_hash"),
                "current": folder.name == current,
            }
        )
    return out


def set_current_ranker(store: str | Path, domain: str, version: str | None) -> None:
    """Serve ``version`` for ``domain`` (roll back), or None to go back to zero-shot.

    Raises:
        StoreError: ``domain`` is not a target domain of the store (published, launched or with
            rankers), or a file of ``version`` does not match its manifest's checksum.
    """
    known = served_domains(store)
    if domain not in known:
        raise StoreError(
            f"{store}: unknown domain {domain!r}; the store serves {sorted(known)[:50]}."
        )
    root = ranker_root(store, domain)
    if version is None:
        pointer = root / POINTER
        if pointer.exists():
            pointer.unlink()
        return
    path = ranker_path(store, domain, version)
    verify_files(path, load_manifest(path))
    write_pointer(root / POINTER, version)


def served_domains(store: str | Path) -> set[str]:
    """Target domains of the current store version, launched domains and domains with rankers."""
    names = set(ranker_domains(store)) | set(read_live(store)[0])
    if current_version(store) is not None:
        names |= set(load_manifest(version_path(store, str(current_version(store))))["domains"])
    return names

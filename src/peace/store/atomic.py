"""Atomic publication: a folder of the store appears whole, with its manifest, or not at all.

Files are written into ``PARENT/.tmp-<id>-<random>/``, fsynced, listed with their size and sha256
in ``manifest.json``, and the folder is renamed to ``PARENT/<id>``. A reader that lists only
folders with a manifest never sees a partial one; a writer that dies mid-way leaves at most a
``.tmp-*`` folder, which readers ignore and the next publication removes once it is an hour old.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from peace.store.files import MANIFEST, TEMP_PREFIX, StoreError, file_entry
from peace.utils import fsync_dir

STALE_TEMP_SECONDS = 3600.0
"""Temporary folders older than this are left-overs of a killed writer and may be removed."""


def new_version_id(parent: Path, digest: str) -> str:
    """A fresh, sortable id ``<UTC time>Z-<digest[:8]>`` not yet used under ``parent``."""
    now = datetime.now(UTC)
    for _ in range(100):
        vid = now.strftime("%Y%m%dT%H%M%S") + f"{now.microsecond:06d}Z-{digest[:8]}"
        if not (parent / vid).exists():
            return vid
        time.sleep(1e-3)
        now = datetime.now(UTC)
    raise StoreError(f"{parent}: could not find a free version id.")  # pragma: no cover


def remove_stale_temp(parent: str | Path, older_than_s: float = STALE_TEMP_SECONDS) -> list[Path]:
    """Delete ``.tmp-*`` folders under ``parent`` older than ``older_than_s``; return them."""
    parent = Path(parent)
    removed = []
    if not parent.is_dir():
        return removed
    now = time.time()
    for path in parent.iterdir():
        if path.name.startswith(TEMP_PREFIX) and now - path.stat().st_mtime > older_than_s:
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def publish_folder(parent: str | Path, name: str, build: Callable[[Path], dict[str, Any]]) -> Path:
    """Write a folder with ``build(tmp)`` and make it appear at ``parent/name`` atomically.

    ``build`` writes its files into ``tmp`` (it need not fsync them) and returns the manifest
    (without ``files``); this function adds the size and sha256 of every file, fsyncs the files,
    writes ``manifest.json``, fsyncs the folder, and renames it into place. On any failure,
    interruption included, the temporary folder is removed and nothing becomes visible.
    """
    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    tmp = parent / f"{TEMP_PREFIX}{name}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        manifest = build(tmp)
        files = sorted(p for p in tmp.rglob("*") if p.is_file())
        # The files are flushed to disk in a second thread while this one hashes them (both wait
        # on the OS, not the interpreter), and all are flushed before the folder appears.
        with ThreadPoolExecutor(1) as pool:
            flushed = pool.map(_fsync_file, files)
            manifest["files"] = {
                p.relative_to(tmp).as_posix(): file_entry(tmp, str(p.relative_to(tmp)))
                for p in files
            }
            list(flushed)  # re-raises a failed flush
        text = json.dumps(manifest, indent=2, allow_nan=False)
        with open(tmp / MANIFEST, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        for d in {p.parent for p in files} | {tmp}:
            fsync_dir(d)
        final = parent / name
        os.rename(tmp, final)  # atomic; fails if ``final`` exists
        fsync_dir(parent)
        return final
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise

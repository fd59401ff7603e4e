"""Checksummed run checkpoints: ``RUN/checksums.json`` holds the sha256 of every checkpoint file.

An epoch's checkpoint is committed in three steps, so a run killed at any moment (SIGKILL
included) is either at the previous epoch or at the new one, never at a mix of both:

1. the new files are written (and fsynced) into ``RUN/.pending/``;
2. ``RUN/checksums.json`` is replaced atomically with their size and sha256 (the commit point);
3. each pending file is moved over its old copy (``os.replace``).

A reader calls :func:`verify_run` before using a file: holding ``RUN/.lock`` (which a writer holds
for a whole commit), it first finishes step 3 of a commit that was cut short (a pending file whose
checksum is the manifest's replaces the old copy; staged files never committed are dropped), then
checks the files it needs. A file whose bytes differ from the manifest raises :class:`CheckpointError`
naming the file and the fix. A run written before checksums existed has no manifest and is read
without verification.

Example::

    with commit(run) as stage:
        save_file(state, str(stage("last.safetensors")))
        torch.save(trainer_state, stage("trainer.pt"))
    verify_run(run, ["last.safetensors", "trainer.pt"])
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from peace.utils import atomic_write_text, fsync_dir, sha256_file

CHECKSUMS = "checksums.json"
PENDING = ".pending"
LOCK = ".lock"


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used with this dataset or configuration, or is damaged."""


def read_json(path: Path) -> Any:
    """A run's JSON file; :class:`CheckpointError` naming the file when it is not valid JSON."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise CheckpointError(f"{path}: missing; is {path.parent} a pre-training run?") from exc
    except (ValueError, UnicodeDecodeError) as exc:
        raise CheckpointError(
            f"{path}: damaged or truncated ({one_line(exc)}); restore the file or pre-train "
            f"{path.parent} again."
        ) from exc


def one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= 160 else text[:157] + "..."


def damaged(path: Path, exc: BaseException) -> CheckpointError:
    """The error for a checkpoint file that cannot be parsed."""
    return CheckpointError(
        f"{path}: damaged or truncated ({one_line(exc)}); restore it or pre-train "
        f"{path.parent} again."
    )


def _manifest(run: Path) -> dict[str, Any] | None:
    path = run / CHECKSUMS
    if not path.is_file():
        return None
    data = read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("files"), dict):
        raise CheckpointError(f"{path}: not a checksum manifest; pre-train {run} again.")
    return data


def _matches(path: Path, entry: dict[str, Any]) -> bool:
    return (
        path.is_file()
        and path.stat().st_size == entry.get("bytes")
        and sha256_file(path) == entry.get("sha256")
    )


@contextmanager
def _locked(run: Path) -> Iterator[bool]:
    """Hold ``RUN/.lock`` exclusively (a writer's commit, a reader's clean-up); yields False when
    the folder is read-only and no lock can be taken."""
    try:
        fd = os.open(run / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:
        yield False
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield True
    finally:
        os.close(fd)


@contextmanager
def commit(run: Path) -> Iterator[Callable[[str], Path]]:
    """Stage new checkpoint files; on a clean exit, record their checksums and move them in.

    The block calls ``stage(name)`` for the path to write ``RUN/name`` to. Files of the manifest
    that the block does not rewrite keep their entries.
    """
    run.mkdir(parents=True, exist_ok=True)
    pending = run / PENDING
    with _locked(run):
        _finish(run)
        pending.mkdir()
        names: list[str] = []

        def stage(name: str) -> Path:
            names.append(name)
            return pending / name

        yield stage
        files = dict((_manifest(run) or {}).get("files", {}))
        for name in names:
            path = pending / name
            with open(path, "rb") as fh:
                os.fsync(fh.fileno())
            files[name] = {"bytes": path.stat().st_size, "sha256": sha256_file(path)}
        fsync_dir(pending)
        atomic_write_text(run / CHECKSUMS, json.dumps({"files": files}, indent=1, sort_keys=True))
        for name in names:
            os.replace(pending / name, run / name)
        fsync_dir(run)
        shutil.rmtree(pending, ignore_errors=True)


def _finish(run: Path) -> None:
    """Under the lock: move in the pending files a cut-short commit had recorded, and drop the
    rest (staged by a writer killed before its commit point)."""
    pending = run / PENDING
    if not pending.is_dir():
        return
    files = (_manifest(run) or {}).get("files", {})
    for path in sorted(pending.iterdir()):
        entry = files.get(path.name)
        if entry is not None and not _matches(run / path.name, entry) and _matches(path, entry):
            os.replace(path, run / path.name)
    fsync_dir(run)
    shutil.rmtree(pending, ignore_errors=True)


def verify_run(run: Path, names: Iterable[str]) -> None:
    """Finish an interrupted commit, then check ``names`` against ``RUN/checksums.json``.

    Raises:
        CheckpointError: a file is missing or its bytes differ from the manifest.
    """
    if not (run / CHECKSUMS).is_file():
        return
    with _locked(run) as locked:
        if locked:
            _finish(run)
        _check(run, _manifest(run) or {"files": {}}, names)


def _check(run: Path, manifest: dict[str, Any], names: Iterable[str]) -> None:
    files = manifest["files"]
    for name in names:
        entry = files.get(name)
        if entry is None:
            continue
        path = run / name
        if not path.is_file():
            raise CheckpointError(
                f"{path}: missing but listed in {run / CHECKSUMS}; restore it or pre-train "
                f"{run} again."
            )
        if not _matches(path, entry):
            raise CheckpointError(
                f"{path}: checksum mismatch with {run / CHECKSUMS} (the file changed after it "
                f"was written); restore it or pre-train {run} again."
            )

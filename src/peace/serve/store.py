"""The embedding store: immutable, checksummed versions written by the offline inference flow.

Layout of a store folder (see ``docs/serving.md``)::

    STORE/
      CURRENT                      the served version id (one line; swapped atomically)
      versions/<version>/          one immutable version (never modified once visible)
        manifest.json              model hash, config, cut-off, row counts, sha256 of every file
        users.arrow                user, interests [M*d], universal [d], history_tokens
        entities.arrow             entity, vector [d]                       (H^G)
        items.arrow                item, domain, entities, vector [d]       (mean of entities)
        prototypes.arrow           prototype, vector [d]                    (P of Eq. 5-9)
        scorer.safetensors         P, the Eq. 9 MLP and the Eq. 2 fusion weights
        catalogues/<domain>.arrow  per target domain: item, entities, vector, popularity
      rankers/<domain>/CURRENT     the served normal ranker of a domain (see peace.serve.publish)
      rankers/<domain>/<version>/  manifest.json, head.safetensors, user/item_codes.arrow
      live/<domain>.json           domains and items launched at run time (peace.serve.app)

Tables are Arrow IPC files (uncompressed, columnar); fixed-width vectors are
``fixed_size_list<float32>`` columns. This module only reads: it needs numpy, pyarrow, torch and
safetensors, never the entity graph or the user histories.

Example::

    version = StoreVersion.open("store")          # the CURRENT version, checksums verified
    row = version.user_row["u17"]
    version.interests[row]                          # [M, d] interest vectors of Eq. 1
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch
from safetensors.torch import load_file

FORMAT = 1
"""Version of the store layout written in every manifest."""
POINTER = "CURRENT"
VERSIONS = "versions"
RANKERS = "rankers"
LIVE = "live"
MANIFEST = "manifest.json"
TEMP_PREFIX = ".tmp-"
"""Folders being written start with this prefix; readers never list them."""


class StoreError(RuntimeError):
    """A store, version or ranker that cannot be read; the message names the path and the fix."""


# --------------------------------------------------------------------------- small file helpers
def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def fsync_dir(path: str | Path) -> None:
    """Flush a directory entry (a rename or a new file in it) to disk, where the OS allows it."""
    try:
        fd = os.open(str(path), os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory handles
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def write_pointer(path: str | Path, value: str) -> None:
    """Atomically replace the pointer file ``path`` with ``value`` (temp file, fsync, replace)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(value + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def read_pointer(path: str | Path) -> str | None:
    """The id a pointer file names, or None when there is no pointer (or it is empty)."""
    try:
        value = Path(path).read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    return value or None


def domain_file_name(domain: str) -> str:
    """A file-system-safe domain name, percent-encoded (``Children's`` -> ``Children%27s``)."""
    return urllib.parse.quote(domain, safe="-_.") or "%00"


def write_arrow(path: str | Path, table: pa.Table) -> None:
    """Write an Arrow IPC file and fsync it."""
    with pa.OSFile(str(path), "wb") as sink:
        with pa.ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table)
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def read_arrow(path: str | Path) -> pa.Table:
    """Read an Arrow IPC file written by :func:`write_arrow`."""
    with pa.memory_map(str(path), "r") as source:
        return pa.ipc.open_file(source).read_all()


def vector_column(values: np.ndarray) -> pa.FixedSizeListArray:
    """``[N, *shape]`` float32 array -> a ``fixed_size_list<float32>[prod(shape)]`` column."""
    values = np.ascontiguousarray(values, dtype=np.float32)
    width = int(np.prod(values.shape[1:])) if values.ndim > 1 else 1
    return pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1), pa.float32()), width)


def code_column(values: np.ndarray) -> pa.FixedSizeListArray:
    """``[N, F]`` int64 codes -> a ``fixed_size_list<int64>[F]`` column (F may be 0)."""
    values = np.ascontiguousarray(values, dtype=np.int64)
    return pa.FixedSizeListArray.from_arrays(
        pa.array(values.reshape(-1), pa.int64()), values.shape[1]
    )


def column_array(table: pa.Table, name: str, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
    """A fixed-size-list column as a writable numpy array ``[rows, *shape]``."""
    column = table.column(name).combine_chunks()
    flat = column.flatten().to_numpy(zero_copy_only=False)
    return np.array(flat, dtype=dtype, copy=True).reshape((len(table), *shape))


def string_array(table: pa.Table, name: str) -> np.ndarray:
    """A string column as a numpy object array."""
    return np.array(table.column(name).to_pylist(), dtype=object)


def load_manifest(folder: str | Path) -> dict[str, Any]:
    """Read ``folder/manifest.json``; raise :class:`StoreError` naming the folder when unusable."""
    path = Path(folder) / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise StoreError(f"{path}: missing; {folder} is not a published folder.") from exc
    except json.JSONDecodeError as exc:
        raise StoreError(f"{path}: not valid JSON ({exc}).") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise StoreError(f"{path}: unknown format {manifest.get('format')!r}; expected {FORMAT}.")
    return manifest


def verify_files(folder: str | Path, manifest: dict[str, Any]) -> None:
    """Check every file listed in the manifest against its size and sha256."""
    folder = Path(folder)
    for name, info in manifest.get("files", {}).items():
        path = folder / name
        if not path.is_file():
            raise StoreError(f"{path}: listed in the manifest but missing; republish {folder}.")
        if path.stat().st_size != info["bytes"] or sha256_file(path) != info["sha256"]:
            raise StoreError(
                f"{path}: checksum mismatch (the file changed after publication); republish "
                f"{folder.name} or roll back with `set_current`."
            )


def file_entry(folder: Path, name: str) -> dict[str, Any]:
    """Manifest entry of one written file: size and sha256."""
    path = folder / name
    return {"bytes": path.stat().st_size, "sha256": sha256_file(path)}


# --------------------------------------------------------------------------- store versions
def version_path(store: str | Path, version: str) -> Path:
    """Folder of one version; the id is checked so it cannot name a path outside the store."""
    if not version or "/" in version or "\\" in version or version.startswith("."):
        raise StoreError(f"{version!r} is not a version id.")
    return Path(store) / VERSIONS / version


def current_version(store: str | Path) -> str | None:
    """The version id ``STORE/CURRENT`` names, or None for an empty store."""
    return read_pointer(Path(store) / POINTER)


def published_versions(store: str | Path) -> list[str]:
    """Ids of the complete versions of a store, oldest first (temporary folders excluded)."""
    root = Path(store) / VERSIONS
    if not root.is_dir():
        return []
    return sorted(
        p.name
        for p in root.iterdir()
        if p.is_dir() and not p.name.startswith(".") and (p / MANIFEST).is_file()
    )


@dataclass
class Catalogue:
    """A target domain's items as published: ids, entity ids, vectors, popularity counts."""

    domain: str
    items: np.ndarray
    entities: list[list[str]]
    vectors: np.ndarray
    """[I, d] float32: mean of the item's entity vectors (Sec. 4.4, footnote 4)."""
    popularity: np.ndarray
    """[I] int64: positive rows before the version's ``as_of`` (all zero = uniform)."""


class StoreVersion:
    """One loaded store version: user interests, entity/item vectors, prototypes, catalogues.

    Use :meth:`open`; the arrays are plain numpy / torch, lookups are dicts from ids to rows.
    """

    def __init__(self, path: Path, manifest: dict[str, Any]) -> None:
        self.path = path
        self.manifest = manifest
        self.version: str = manifest["version"]
        dims = manifest["dims"]
        self.dim: int = int(dims["dim"])
        self.n_interests: int = int(dims["n_interests"])

        users = read_arrow(path / "users.arrow")
        self.users = string_array(users, "user")
        self.user_row: dict[str, int] = {u: i for i, u in enumerate(self.users)}
        self.interests = torch.from_numpy(
            column_array(users, "interests", (self.n_interests, self.dim), np.float32)
        )
        """[U, M, d] interest vectors z^A of Eq. 1."""
        self.universal = torch.from_numpy(column_array(users, "universal", (self.dim,), np.float32))
        """[U, d] universal user vectors z_u of Eq. 2 (plain interests, no target)."""
        self.history_tokens = users.column("history_tokens").to_numpy()

        entities = read_arrow(path / "entities.arrow")
        self.entities = string_array(entities, "entity")
        self.entity_row: dict[str, int] = {e: i for i, e in enumerate(self.entities)}
        self.entity_vectors = torch.from_numpy(
            column_array(entities, "vector", (self.dim,), np.float32)
        )

        items = read_arrow(path / "items.arrow")
        self.items = string_array(items, "item")
        self.item_domain = string_array(items, "domain")
        self.item_row: dict[str, int] = {it: i for i, it in enumerate(self.items)}
        self.item_vectors = torch.from_numpy(column_array(items, "vector", (self.dim,), np.float32))

        protos = read_arrow(path / "prototypes.arrow")
        self.prototypes = torch.from_numpy(column_array(protos, "vector", (self.dim,), np.float32))

        self.scorer_state: dict[str, torch.Tensor] = load_file(str(path / "scorer.safetensors"))
        self.catalogues: dict[str, Catalogue] = {}
        for domain, info in manifest["domains"].items():
            table = read_arrow(path / info["file"])
            self.catalogues[domain] = Catalogue(
                domain=domain,
                items=string_array(table, "item"),
                entities=table.column("entities").to_pylist(),
                vectors=column_array(table, "vector", (self.dim,), np.float32),
                popularity=table.column("popularity").to_numpy().astype(np.int64),
            )

    @classmethod
    def open(
        cls, store: str | Path, version: str | None = None, verify: bool = True
    ) -> StoreVersion:
        """Load ``version`` (default: the one ``STORE/CURRENT`` names), checking checksums."""
        store = Path(store)
        version = version or current_version(store)
        if version is None:
            raise StoreError(
                f"{store}: no published version (no {POINTER} pointer); run "
                f"`peace export --run RUN --store {store}` first."
            )
        path = version_path(store, version)
        if not path.is_dir():
            raise StoreError(
                f"{path}: no such version; published versions are {published_versions(store)}."
            )
        manifest = load_manifest(path)
        if verify:
            verify_files(path, manifest)
        return cls(path, manifest)

    @property
    def model_hash(self) -> str:
        """sha256 of the pre-trained checkpoint the version was computed with."""
        return str(self.manifest["model_hash"])

    @property
    def source_domains(self) -> list[str]:
        return list(self.manifest.get("source_domains", []))

    def user_index(self, user: str) -> int | None:
        """Row of a user id, or None when the store does not know the user."""
        return self.user_row.get(user)

    def item_index(self, item: str) -> int | None:
        """Row of an item id (any domain), or None."""
        return self.item_row.get(item)

    def entity_index(self, entities: list[str]) -> list[int | None]:
        """Rows of entity ids (None where unknown)."""
        return [self.entity_row.get(e) for e in entities]

    def __repr__(self) -> str:
        return (
            f"StoreVersion({self.version!r}, users={len(self.users)}, "
            f"items={len(self.items)}, domains={list(self.catalogues)})"
        )


# --------------------------------------------------------------------------- rankers
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


# --------------------------------------------------------------------------- live edits
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

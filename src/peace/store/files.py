"""The store's file format: names, pointer files, Arrow tables, manifests and checksums.

Tables are Arrow IPC files (uncompressed, columnar); fixed-width vectors are
``fixed_size_list<float32>`` columns. Every published folder has a ``manifest.json`` listing the
size and sha256 of each of its files; a pointer file (``CURRENT``) names the published folder
that is served and is replaced atomically.
"""

from __future__ import annotations

import json
import os
import tempfile
import urllib.parse
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from peace.utils import fsync_dir, sha256_file

FORMAT = 1
"""Version of the store layout written in every manifest."""
POINTER = "CURRENT"
VERSIONS = "versions"
RANKERS = "rankers"
LIVE = "live"
MANIFEST = "manifest.json"
USER_PARTS = "user_parts.safetensors"
"""A published ranker's own Eq. 9 MLP and Eq. 2 attention (``finetune.tune_user_mlp``)."""
TEMP_PREFIX = ".tmp-"
"""Folders being written start with this prefix; readers never list them."""


class StoreError(RuntimeError):
    """A store, version or ranker that cannot be read; the message names the path and the fix."""


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


def write_arrow(path: str | Path, table: pa.Table, sync: bool = True) -> None:
    """Write an Arrow IPC file and fsync it (``sync=False``: leave the flush to the caller, as
    :func:`peace.store.atomic.publish_folder` does for every file it publishes)."""
    with pa.OSFile(str(path), "wb") as sink:
        with pa.ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table)
    if sync:
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


def mapped_array(path: str | Path, name: str, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
    """A fixed-size-list column of the Arrow file ``path`` as a copy-on-write memory map
    ``[rows, *shape]``, without reading it into memory.

    Processes that map the same file share its pages (the OS page cache), so several server
    workers hold one copy of a version's vectors; the array is writable, and a write changes the
    writing process's private copy of that page only, never the file. Where the column is not one
    run of ``dtype`` values in the file (several chunks, nulls, another type) or has no rows, the
    values are read into memory as by :func:`column_array`.
    """
    dtype = np.dtype(dtype)
    with pa.memory_map(str(path), "r") as source:
        base = source.read_buffer().address  # the whole file, zero-copy: the map's start
        source.seek(0)
        table = pa.ipc.open_file(source).read_all()
        column = table.column(name)
        rows = len(table)
        width = int(np.prod(shape))
        if column.num_chunks == 1 and rows > 0:
            chunk = column.chunk(0)
            values = chunk.values
            if (
                chunk.null_count == 0
                and values.null_count == 0
                and values.type.to_pandas_dtype() == dtype.type
                and len(values) - chunk.offset * width >= rows * width
            ):
                start = values.buffers()[1].address + (values.offset + chunk.offset * width) * (
                    dtype.itemsize
                )
                return np.memmap(
                    path, dtype=dtype, mode="c", offset=start - base, shape=(rows, *shape)
                )
        return column_array(table, name, shape, dtype)


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

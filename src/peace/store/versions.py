"""Store versions: where they live, which one is served, rolling back, and reading one
(:class:`StoreVersion`, the service's view of a version)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch
from safetensors.torch import load_file

from peace.store.files import (
    MANIFEST,
    POINTER,
    VERSIONS,
    StoreError,
    column_array,
    load_manifest,
    mapped_array,
    read_arrow,
    read_pointer,
    string_array,
    verify_files,
    write_pointer,
)

F32 = np.float32


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


def list_versions(store: str | Path) -> list[dict[str, Any]]:
    """Published versions, oldest first: id, created, model hash, as_of, rows, current flag."""
    store = Path(store)
    current = current_version(store)
    out = []
    for vid in published_versions(store):
        try:
            m = load_manifest(version_path(store, vid))
        except StoreError as exc:
            out.append({"version": vid, "error": str(exc), "current": vid == current})
            continue
        out.append(
            {
                "version": vid,
                "created": m.get("created"),
                "model_hash": m.get("model_hash"),
                "as_of": m.get("as_of"),
                "users": m.get("rows", {}).get("users"),
                "domains": sorted(m.get("domains", {})),
                "current": vid == current,
            }
        )
    return out


def set_current(store: str | Path, version: str) -> None:
    """Point ``STORE/CURRENT`` at a published version (roll back or forward), atomically, once
    every file of the version matches its manifest's checksum."""
    store = Path(store)
    path = version_path(store, version)
    if not path.is_dir():
        raise StoreError(
            f"{path}: no such version; published versions are {published_versions(store)}."
        )
    verify_files(path, load_manifest(path))
    write_pointer(store / POINTER, version)


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
    prior: np.ndarray
    """[I] float32: the item's source-entity prior (``eval.zero_shot_prior`` weighs it; zeros
    in versions written before it was stored)."""
    profile_prior: np.ndarray | None = None
    """[I] float32: the item's source profile prior (``eval.zero_shot_profile_prior`` weighs
    it; zeros in versions written before it was stored)."""
    zero_shot: np.ndarray | None = None
    """[I, S * d] float32: the item's vector in each of the S evaluated states, side by side
    (``eval.zero_shot_states = "evaluated"``); None when the kept state alone is served."""


def _prior_column(table: pa.Table, name: str = "prior") -> torch.Tensor:
    """A table's float32 ``name`` column (``prior`` or ``profile_prior``); zeros where the
    version has none (written before the zero-shot score could add that prior)."""
    if name not in table.column_names:
        return torch.zeros(table.num_rows)
    return torch.from_numpy(table.column(name).to_numpy().astype(np.float32, copy=True))


class StoreVersion:
    """One loaded store version: user interests, entity/item vectors, prototypes, catalogues.

    Use :meth:`open`; the arrays are plain numpy / torch (the vectors of users, entities and
    items memory-mapped copy-on-write, :func:`~peace.store.files.mapped_array`), lookups are dicts
    from ids to rows.
    """

    def __init__(self, path: Path, manifest: dict[str, Any]) -> None:
        self.path = path
        self.manifest = manifest
        self.version: str = manifest["version"]
        dims = manifest["dims"]
        self.dim: int = int(dims["dim"])
        self.n_interests: int = int(dims["n_interests"])

        # The vectors of users, entities and items are copy-on-write memory maps of the files
        # (mapped_array): processes serving the same version share one copy of them.
        users = read_arrow(path / "users.arrow")
        self.users = string_array(users, "user")
        self.user_row: dict[str, int] = {u: i for i, u in enumerate(self.users)}
        self.interests = torch.from_numpy(
            mapped_array(path / "users.arrow", "interests", (self.n_interests, self.dim), F32)
        )
        """[U, M, d] interest vectors z^A of Eq. 1."""
        self.universal = torch.from_numpy(
            mapped_array(path / "users.arrow", "universal", (self.dim,), F32)
        )
        """[U, d] universal user vectors z_u of Eq. 2 (plain interests, no target)."""
        self.history_tokens = users.column("history_tokens").to_numpy()
        self.zero_shot_states = int(manifest.get("zero_shot_states", 1))
        """S: the zero-shot score is the mean of S states' inner products (1: the kept state)."""
        states = self.zero_shot_states
        self.user_zero_shot = self._states_column(path / "users.arrow", users)
        """[U, S * d] the universal vectors of the S states side by side, scaled by 1/S: the
        zero-shot score is their inner product with :attr:`entity_zero_shot`'s item means (None
        when S = 1: :attr:`universal` and :attr:`entity_vectors` serve it)."""

        entities = read_arrow(path / "entities.arrow")
        self.entities = string_array(entities, "entity")
        self.entity_row: dict[str, int] = {e: i for i, e in enumerate(self.entities)}
        self.entity_vectors = torch.from_numpy(
            mapped_array(path / "entities.arrow", "vector", (self.dim,), F32)
        )
        self.prior_weight = float(manifest.get("zero_shot_prior", 0.0))
        """Weight of the source-entity prior in the zero-shot score (``eval.zero_shot_prior``)."""
        if self.prior_weight != 0.0 and "prior" not in entities.column_names:
            raise StoreError(
                f"{path / 'entities.arrow'}: no 'prior' column, but the manifest weighs the "
                f"source-entity prior by {self.prior_weight}; export the version again."
            )
        self.profile_weight = float(manifest.get("zero_shot_profile_prior", 0.0))
        """Weight of the source profile prior in the zero-shot score
        (``eval.zero_shot_profile_prior``)."""
        self.profile_fallback = float(manifest.get("zero_shot_profile_fallback", 0.0))
        """The profile prior of an item added at run time, whose profile the store does not
        know (:func:`peace.flows.rankers.profile_prior_fallback`)."""
        self.entity_prior = _prior_column(entities)
        """[|E|] log(1 + positive source rows before the pre-training cut-off) per entity."""
        self.entity_zero_shot = self._states_column(path / "entities.arrow", entities)
        """[|E|, S * d] the S states' entity vectors side by side (None when S = 1)."""

        items = read_arrow(path / "items.arrow")
        self.items = string_array(items, "item")
        self.item_domain = string_array(items, "domain")
        self.item_row: dict[str, int] = {it: i for i, it in enumerate(self.items)}
        self.item_vectors = torch.from_numpy(
            mapped_array(path / "items.arrow", "vector", (self.dim,), F32)
        )

        protos = read_arrow(path / "prototypes.arrow")
        self.prototypes = torch.from_numpy(column_array(protos, "vector", (self.dim,), np.float32))

        self.scorer_state: dict[str, torch.Tensor] = load_file(str(path / "scorer.safetensors"))
        self.catalogues: dict[str, Catalogue] = {}
        for domain, info in manifest["domains"].items():
            table = read_arrow(path / info["file"])
            if states > 1:
                self._require_states(path / info["file"], table)
            if self.profile_weight != 0.0 and "profile_prior" not in table.column_names:
                raise StoreError(
                    f"{path / info['file']}: no 'profile_prior' column, but the manifest weighs "
                    f"the source profile prior by {self.profile_weight}; export the version again."
                )
            self.catalogues[domain] = Catalogue(
                domain=domain,
                items=string_array(table, "item"),
                entities=table.column("entities").to_pylist(),
                vectors=column_array(table, "vector", (self.dim,), np.float32),
                popularity=table.column("popularity").to_numpy().astype(np.int64),
                prior=_prior_column(table).numpy(),
                profile_prior=_prior_column(table, "profile_prior").numpy(),
                zero_shot=column_array(table, "zero_shot", (states * self.dim,), np.float32)
                if states > 1
                else None,
            )

    def _require_states(self, file: Path, table: pa.Table) -> None:
        """A version that serves the mean of S > 1 states needs their vectors in ``file``."""
        if "zero_shot" not in table.column_names:
            raise StoreError(
                f"{file}: no 'zero_shot' column, but the manifest serves the zero-shot score as "
                f"the mean of {self.zero_shot_states} evaluated states (zero_shot_states); "
                "export the version again."
            )

    def _states_column(self, file: Path, table: pa.Table) -> torch.Tensor | None:
        """The ``zero_shot`` column of ``file`` (read as ``table``) mapped as ``[rows, S * d]``;
        None when the version serves the kept state alone (S = 1)."""
        if self.zero_shot_states == 1:
            return None
        self._require_states(file, table)
        width = (self.zero_shot_states * self.dim,)
        return torch.from_numpy(mapped_array(file, "zero_shot", width, F32))

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

"""Offline inference flow (Sec. 4.5): precompute what online serving needs, publish it atomically.

"To ease the burden graph neural network imposes on online serving system, we aim at decoupling
the entire procedure by inferring embeddings for users and entities in advance." This flow runs
the pre-trained PEACE once, offline, and writes a new immutable version of the embedding store:

* every entity vector H^G (the graph encoder, Sec. 4.1);
* every user's M interest vectors z^A (Eq. 1) from their source behaviour strictly before
  ``as_of`` (default: after all source behaviour) and their universal vector z_u (Eq. 2);
* every item vector z_i (mean of its entities' vectors, Sec. 4.4 footnote 4);
* for a run whose zero-shot score is the mean over S evaluated states (``eval.zero_shot_states
  = "evaluated"``), the states' z_u (scaled by 1/S), entity and item vectors side by side in a
  ``zero_shot`` column of width S * d: the mean of S inner products is their one inner product;
* the prototypes P, and the weights of the prototype-enhance MLP (Eq. 9), of the fusion (Eq. 2)
  and of the decoder (Eq. 3) in ``scorer.safetensors``, so the online rankers reproduce the
  model's scores exactly (DESIGN.md decision 6) with a few small tensor operations, without graph
  or history;
* per target domain, a catalogue (its items, their entities and vectors) and a popularity count
  for the unknown-user fallback: the domain's positive rows with timestamp strictly before
  ``as_of`` (all rows when ``as_of`` is None); a domain with none such is served uniformly.

Publication is atomic: files are written into ``STORE/versions/.tmp-<id>-<random>/``, fsynced,
the folder is renamed to ``STORE/versions/<id>`` and only then ``STORE/CURRENT`` is replaced
(temporary file + ``os.replace``). A reader that follows ``CURRENT`` never sees a partial version;
an export that dies mid-way leaves at most a ``.tmp-*`` folder, which readers ignore and the next
export removes once it is an hour old.

Example::

    version = export("runs/r1", ds, "store")          # publishes and points CURRENT at it
    peace.store.list_versions("store")                 # [{"version": ..., "current": True}, ...]
    peace.store.set_current("store", older_version)    # roll back
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch
from safetensors.torch import save_file

from peace.data.dataset import Dataset
from peace.flows.checkpoints import verify_run
from peace.flows.pretrained import Pretrained, dataset_fingerprint, load_pretrained
from peace.flows.rankers import (
    item_prior,
    item_vectors,
    profile_prior_fallback,
    source_entity_prior,
    source_profile_prior,
)
from peace.store import (
    FORMAT,
    POINTER,
    VERSIONS,
    StoreError,
    domain_file_name,
    new_version_id,
    publish_folder,
    remove_stale_temp,
    vector_column,
    write_arrow,
    write_pointer,
)
from peace.utils import sha256_file

__all__ = ["export", "model_hash"]

SCORER_PREFIXES = ("prototypes.", "fusion.", "decoder.")
"""State-dict entries the online rankers need: P and the Eq. 9 MLP, the Eq. 2 fusion, and the
Eq. 3 decoder (for ``eval.zero_shot_scorer = "decoder"``)."""


def _write_arrow(path: Path, table: pa.Table) -> None:
    """A file of the version; publish_folder flushes it to disk (an indirection so tests can
    simulate a failure in the middle of a publication)."""
    write_arrow(path, table, sync=False)


def model_hash(run: str | Path) -> str:
    """sha256 of a run's selected checkpoint (``RUN/model.safetensors``)."""
    path = Path(run) / "model.safetensors"
    if not path.is_file():
        raise StoreError(f"{path}: missing; run `peace pretrain --out {run}` first.")
    verify_run(Path(run), [path.name])
    return sha256_file(path)


def entity_lists(names: pa.Array, rows: np.ndarray) -> pa.ListArray:
    """Each item's entity names, in phi's order, from entity rows ``[I, k]`` (-1 = none)."""
    rows = np.asarray(rows)
    valid = rows >= 0
    offsets = np.zeros(len(rows) + 1, dtype=np.int32)
    np.cumsum(valid.sum(1), out=offsets[1:])
    flat = names.take(pa.array(rows[valid].astype(np.int64)))
    return pa.ListArray.from_arrays(pa.array(offsets), flat, type=pa.list_(pa.string()))


def _json_number(value: float | None) -> float | None:
    """JSON has no infinity: +-inf and NaN become null."""
    if value is None or not math.isfinite(value):
        return None
    return float(value)


@torch.no_grad()
def _state_vectors(
    pre: Pretrained, users: np.ndarray, times: np.ndarray, item_rows: torch.Tensor
) -> dict[str, np.ndarray]:
    """The zero-shot score of a run that kept its evaluated states (``eval.zero_shot_states =
    "evaluated"``) as one inner product: each state's universal user vectors z_u (Eq. 2) side by
    side and scaled by 1/S (``users``, ``[U, S * d]``), each state's entity table
    (``entities``, ``[|E|, S * d]``) and item vectors (``items``, ``[I, S * d]``). An item's
    vector is still the mean of its entities' (the mean of concatenations is the concatenation
    of the means), so items added at run time are served the same way."""
    universal, tables, items = [], [], []
    for member in pre.state_models():
        table = member.entity_table()
        universal.append(member.user_vectors(users, times, table)[1])
        tables.append(table[: pre.graph.num_entities])
        items.append(item_vectors(table, item_rows))
    return {
        "users": (torch.cat(universal, 1) / len(universal)).numpy(),
        "entities": torch.cat(tables, 1).numpy(),
        "items": torch.cat(items, 1).numpy(),
    }


def _zero_shot_column(
    vectors: dict[str, np.ndarray] | None, part: str, rows: np.ndarray | None = None
) -> dict[str, pa.FixedSizeListArray]:
    """``{"zero_shot": column}`` of a table's :func:`_state_vectors` rows (all of them, or
    ``rows``); ``{}`` for a run served from its kept state alone."""
    if vectors is None:
        return {}
    values = vectors[part] if rows is None else vectors[part][rows]
    return {"zero_shot": vector_column(values)}


@torch.no_grad()
def export(
    run: str | Path,
    ds: Dataset,
    store: str | Path,
    as_of: float | None = None,
    make_current: bool = True,
    kept_only: bool = False,
) -> str:
    """Run the offline inference flow and publish a new store version; return its id.

    Args:
        run: a pre-training run folder (``peace pretrain --out RUN``).
        ds: the dataset the run was trained on (same id spaces; checked by fingerprint).
        store: the store folder (created if missing).
        as_of: data cut-off: user histories and popularity use rows strictly before it; None
            means after all behaviour (+inf).
        make_current: point ``STORE/CURRENT`` at the new version (default True).
        kept_only: for a run that kept its evaluated states, serve the kept state's zero-shot
            score alone (vectors of width d) instead of the states' mean (width S * d): a
            lighter version whose zero-shot ranking is the kept state's.

    Raises:
        peace.flows.checkpoints.CheckpointError: the run does not fit the dataset.
    """
    run, store = Path(run), Path(store)
    digest = model_hash(run)
    pre = load_pretrained(run, ds)
    cfg = pre.config
    if kept_only:
        pre.states = []
    if pre.states and cfg.eval.zero_shot_scorer != "inner":
        raise ValueError(
            f'{run}: eval.zero_shot_states = "evaluated" with eval.zero_shot_scorer = '
            f'"{cfg.eval.zero_shot_scorer}" scores each of {len(pre.states)} states with its own '
            "prototypes and decoder, which the store does not hold; export it with --set "
            'eval.zero_shot_scorer="inner", or pre-train with eval.zero_shot_states = "kept".'
        )
    mc = cfg.model
    cut = math.inf if as_of is None else float(as_of)
    model = pre.model
    model.eval()

    table = pre.entity_table()  # [|E| + 1, d]; the last row is padding
    n_users = ds.num_users
    user_idx = np.arange(n_users)
    times = np.full(n_users, cut, dtype=np.float64)
    interests, universal = pre.user_vectors(user_idx, times, table)  # Eq. 1-2, [U, M, d], [U, d]
    positions = pre.history.positions(user_idx, times)
    history_tokens = (positions[:, :, 1] - positions[:, :, 0]).sum(1)
    item_rows = torch.as_tensor(ds.item_entities, dtype=torch.long)
    items_vec = item_vectors(table, item_rows)
    # The source-entity prior the zero-shot score adds with weight eval.zero_shot_prior.
    entity_prior = source_entity_prior(ds, pre.cutoff, cfg.eval.zero_shot_prior_counts)  # [|E|]
    items_prior = item_prior(entity_prior, item_rows)  # [I]
    # The source profile prior it adds with weight eval.zero_shot_profile_prior.
    profile_prior = source_profile_prior(ds, pre.cutoff)  # [I]
    # eval.zero_shot_states = "evaluated": the mean over S states of z_u^s . z_i^s is one inner
    # product of the states' vectors side by side, the user's scaled by 1/S ([*, S * d]).
    # One state is the kept one (the best evaluation), served as it is.
    zero_shot = _state_vectors(pre, user_idx, times, item_rows) if len(pre.states) > 1 else None
    prototypes = model.prototypes.weight.detach()
    scorer_state = {
        k: v.detach().contiguous().clone()
        for k, v in model.state_dict().items()
        if k.startswith(SCORER_PREFIXES)
    }

    entity_names = pa.array([str(e) for e in ds.entities], pa.string())
    item_entity_names = entity_lists(entity_names, ds.item_entities)
    inter = ds.interactions
    before = inter[(inter["timestamp"].to_numpy() < cut) & (inter["label"].to_numpy() == 1)]

    versions_dir = store / VERSIONS
    remove_stale_temp(versions_dir)
    vid = new_version_id(versions_dir, digest)

    def build(tmp: Path) -> dict[str, Any]:
        _write_arrow(
            tmp / "users.arrow",
            pa.table(
                {
                    "user": pa.array([str(u) for u in ds.users], pa.string()),
                    "interests": vector_column(interests.numpy()),
                    "universal": vector_column(universal.numpy()),
                    "history_tokens": pa.array(history_tokens.astype(np.int64)),
                    **_zero_shot_column(zero_shot, "users"),
                }
            ),
        )
        _write_arrow(
            tmp / "entities.arrow",
            pa.table(
                {
                    "entity": entity_names,
                    "vector": vector_column(table[: ds.num_entities].numpy()),
                    "prior": pa.array(entity_prior.numpy()),
                    **_zero_shot_column(zero_shot, "entities"),
                }
            ),
        )
        _write_arrow(
            tmp / "items.arrow",
            pa.table(
                {
                    "item": pa.array([str(i) for i in ds.items], pa.string()),
                    "domain": pa.array([ds.domains[d] for d in ds.item_domain], pa.string()),
                    "entities": item_entity_names,
                    "vector": vector_column(items_vec.numpy()),
                    **_zero_shot_column(zero_shot, "items"),
                }
            ),
        )
        _write_arrow(
            tmp / "prototypes.arrow",
            pa.table(
                {
                    "prototype": pa.array(np.arange(len(prototypes), dtype=np.int64)),
                    "vector": vector_column(prototypes.numpy()),
                }
            ),
        )
        save_file(scorer_state, str(tmp / "scorer.safetensors"), metadata={"model_hash": digest})
        (tmp / "catalogues").mkdir()
        domains: dict[str, Any] = {}
        for d in ds.target_domains:
            name = ds.domains[d]
            cat = ds.domain_items(d)
            rows = before[before["domain"] == d]
            counts = np.bincount(rows["item"].to_numpy(), minlength=ds.num_items)[cat]
            file = f"catalogues/{domain_file_name(name)}.arrow"
            _write_arrow(
                tmp / file,
                pa.table(
                    {
                        "item": pa.array([str(i) for i in ds.items[cat]], pa.string()),
                        "entities": item_entity_names.take(pa.array(cat)),
                        "vector": vector_column(items_vec[cat].numpy()),
                        "prior": pa.array(items_prior[cat].numpy()),
                        "profile_prior": pa.array(profile_prior[cat].numpy()),
                        "popularity": pa.array(counts.astype(np.int64)),
                        **_zero_shot_column(zero_shot, "items", cat),
                    }
                ),
            )
            domains[name] = {
                "file": file,
                "items": int(len(cat)),
                "popularity": "positives before as_of" if counts.sum() > 0 else "uniform",
                "popularity_rows": int(counts.sum()),
            }
        created = datetime.now(UTC)
        return {
            "format": FORMAT,
            "kind": "store-version",
            "version": vid,
            "created": created.isoformat(timespec="seconds"),
            "created_unix": created.timestamp(),
            "model_hash": digest,
            "run": str(run.resolve()),
            "dataset": str(Path(ds.root).resolve()),
            "dataset_fingerprint": dataset_fingerprint(ds),
            "as_of": _json_number(as_of),
            "pretrain_cutoff": _json_number(pre.cutoff),
            "config": cfg.to_dict(),
            "dims": {
                "dim": mc.dim,
                "n_interests": mc.n_interests,
                "attention_dim": mc.attention_dim,
                "n_prototypes": mc.n_prototypes,
                "top_k_prototypes": mc.top_k_prototypes,
                "mlp_hidden": list(mc.mlp_hidden),
                "use_pea": mc.use_pea,
                "user_prior": mc.user_prior,
                "decoder_interactions": mc.decoder_interactions,
            },
            "zero_shot_scorer": cfg.eval.zero_shot_scorer,
            "zero_shot_prior": float(cfg.eval.zero_shot_prior),
            "zero_shot_prior_counts": cfg.eval.zero_shot_prior_counts,
            "zero_shot_profile_prior": float(cfg.eval.zero_shot_profile_prior),
            "zero_shot_profile_fallback": profile_prior_fallback(ds, pre.cutoff),
            "zero_shot_states": 1 if zero_shot is None else len(pre.states),
            "rows": {
                "users": n_users,
                "users_with_history": int((history_tokens > 0).sum()),
                "entities": ds.num_entities,
                "items": ds.num_items,
                "prototypes": int(len(prototypes)),
            },
            "source_domains": [ds.domains[d] for d in ds.source_domains],
            "domains": domains,
        }

    publish_folder(versions_dir, vid, build)
    if make_current:
        write_pointer(store / POINTER, vid)
    return vid

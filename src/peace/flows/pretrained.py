"""A pre-trained model and its run folder: what later flows get, and how it is saved and loaded.

A run folder holds ``config.toml``, ``model.safetensors`` (the selected weights),
``last.safetensors`` and ``trainer.pt`` (to resume), ``log.json`` and ``meta.json``; every
epoch's files are written as one checksummed commit (:mod:`peace.flows.checkpoints`).
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from peace.config import PeaceConfig
from peace.data.dataset import Dataset
from peace.data.history import HistoryIndex
from peace.data.splits import pretrain_cutoff, split_targets
from peace.flows import checkpoints
from peace.flows.checkpoints import CheckpointError
from peace.models import Model, build_model
from peace.nn.entity_encoder import EntityGraph
from peace.nn.peace import PEACE


@dataclass
class Pretrained:
    """A pre-trained PEACE (or competitor) with everything later flows need."""

    model: Model
    graph: EntityGraph
    history: HistoryIndex
    config: PeaceConfig
    cutoff: float
    log: list[dict] = field(default_factory=list)
    source_domains: tuple[str, ...] | None = None
    """The domains whose behaviour pre-trained it (None: a run that did not record them)."""
    source_items: str | None = None
    """:func:`source_items_fingerprint` of the dataset that pre-trained it (None: a run that
    did not record it): two cuts of the same data share ids and domain names but not items."""
    states: list[dict[str, torch.Tensor]] = field(default_factory=list)
    """Every held-out evaluation's weights, in the order of ``log``, when
    ``eval.zero_shot_states = "evaluated"`` (PEACE and its variants); empty otherwise."""

    def state_models(self) -> list[Pretrained]:
        """One :class:`Pretrained` per kept evaluation state (sharing graph, history and config)."""
        out = []
        for state in self.states:
            model = copy.deepcopy(self.model)
            model.load_state_dict(state)
            model.eval()
            out.append(dataclasses.replace(self, model=model, states=[]))
        return out

    @torch.no_grad()
    def entity_table(self) -> torch.Tensor:
        """H^G on the full graph, ``[|E| + 1, d]`` (row |E| = padding; user rows may follow)."""
        self.model.eval()
        return self.model.encoder_table(self.graph)

    @torch.no_grad()
    def interests(
        self,
        users: np.ndarray,
        times: np.ndarray,
        table: torch.Tensor | None = None,
        chunk: int = 4096,
    ) -> torch.Tensor:
        """User states from their source history before ``times``: for PEACE the interest
        vectors z^A of Eq. 1 ``[B, M, d]``; for a competitor its own (see peace.baselines.base)."""
        self.model.eval()
        table = self.entity_table() if table is None else table
        out = []
        for s in range(0, max(len(users), 1), chunk):
            tokens, mask = self.history.lookup(users[s : s + chunk], times[s : s + chunk])
            ids = torch.as_tensor(np.array(users[s : s + chunk], dtype=np.int64))
            out.append(self.model.encode_users(table, ids, tokens, mask))
        return torch.cat(out)

    @torch.no_grad()
    def user_vectors(
        self,
        users: np.ndarray,
        times: np.ndarray,
        table: torch.Tensor | None = None,
        chunk: int = 1024,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """PEACE's interests z^A (Eq. 1) ``[B, M, d]`` and universal vectors z_u (Eq. 2)
        ``[B, d]`` from the source history before ``times``, for the offline inference flow.

        Equal to :meth:`interests` then ``model.universal`` up to float rounding, at a fraction
        of the cost for many users: the entity scores of Eq. 1 are computed once, the sequence
        is pooled as weighted bags (:meth:`InterestExtractor.pool_tokens`), and chunks are small
        enough that each one's work stays in cache.
        """
        if not isinstance(self.model, PEACE):
            raise TypeError(f"user_vectors needs a PEACE model, not {type(self.model).__name__}.")
        model = self.model
        model.eval()
        table = self.entity_table() if table is None else table
        scores = model.interests.pooling_scores(table, self.history.pad)
        positions = self.history.positions(users, times)
        if len(users) == 0:
            empty = torch.zeros(0, model.config.n_interests, table.shape[1])
            return empty, model.universal(empty)
        # Written chunk by chunk into the outputs: no list of chunks and no copy to join them.
        like = {"dtype": table.dtype, "device": table.device}
        interests = torch.empty(len(users), model.config.n_interests, table.shape[1], **like)
        universal = torch.empty(len(users), table.shape[1], **like)
        for s in range(0, len(users), chunk):
            tokens, _ = self.history.gather(positions[s : s + chunk])
            z = model.interests.pool_tokens(table, tokens, scores)  # Eq. 1
            interests[s : s + len(z)] = z
            universal[s : s + len(z)] = model.universal(z)  # Eq. 2
        return interests, universal


def dataset_fingerprint(ds: Dataset) -> str:
    """Hash of what a checkpoint depends on: the id spaces (entities, relations, items) and phi."""
    h = hashlib.sha256()
    for arr in (ds.entities, ds.relations, ds.items):
        h.update("\x1f".join(map(str, arr)).encode())
        h.update(b"\x1e")
    h.update(np.ascontiguousarray(ds.item_entities, dtype=np.int64).tobytes())
    return h.hexdigest()[:16]


def source_items_fingerprint(ds: Dataset) -> str:
    """Hash of the items whose behaviour pre-trains a model: those of the source domains. Two
    cuts of one dataset (the same ids, so the same :func:`dataset_fingerprint`, and the same
    source names) differ here when one cut's targets are the other's source items."""
    source = np.isin(ds.item_domain, ds.source_domains)
    h = hashlib.sha256("\x1f".join(map(str, np.sort(ds.items[source]))).encode())
    return h.hexdigest()[:16]


def data_identity(ds: Dataset) -> dict[str, str]:
    """What tells two datasets apart although their folders may share a name: the id spaces and
    phi (:func:`dataset_fingerprint`) and the source items (:func:`source_items_fingerprint`).
    Benchmark results record it, so ``--update`` and ``--merge`` never mix two cuts' rows."""
    return {"fingerprint": dataset_fingerprint(ds), "source_items": source_items_fingerprint(ds)}


def cut_mismatch(
    ds: Dataset, cfg: PeaceConfig, cutoff: float, source_items: str | None
) -> str | None:
    """Why a run pre-trained with ``cfg`` up to ``cutoff`` on source items ``source_items``
    (:func:`source_items_fingerprint`) is from another cut of ``ds``'s data, or None when it is
    not. Two cuts of one dataset share ids, so each other's weights load, but one cut's target
    items may be the other's source items. Runs that did not record their source items are
    compared by their pre-training cut-off, which two cuts share only by chance."""
    if source_items is not None:
        here = source_items_fingerprint(ds)
        if source_items == here:
            return None
        return (
            f"{ds.root}: the run was pre-trained on other source items than this dataset's "
            f"(source-item fingerprint {source_items}, here {here}): another cut of the same "
            "data, whose source domains may hold this cut's target items; use a run pre-trained "
            "on this dataset."
        )
    here_cutoff = pretrain_cutoff(split_targets(ds, cfg.eval.split), cfg.pretrain.cutoff)
    if here_cutoff == cutoff:
        return None
    return (
        f"{ds.root}: pre-training cut-off {here_cutoff} here, {cutoff} in the run: the run was "
        "pre-trained on another cut of the data, whose sources may be targets here; use a run "
        "pre-trained on this dataset."
    )


def state_file(index: int) -> str:
    """The run folder's file of the ``index``-th evaluated state (``eval.zero_shot_states``)."""
    return f"state-{index:03d}.safetensors"


def save_epoch(
    run: Path,
    model: PEACE,
    optimizer: torch.optim.Optimizer,
    gen: torch.Generator,
    epoch: int,
    log: list[dict],
    cfg: PeaceConfig,
    ds: Dataset,
    cutoff: float,
    best_state: dict[str, torch.Tensor] | None,
    states: dict[int, dict[str, torch.Tensor]] | None = None,
) -> None:
    """Write the epoch's checkpoint as one commit with its checksums (peace.flows.checkpoints).

    ``best_state``: the best weights so far when they changed since the last checkpoint (they
    become ``model.safetensors``); None keeps the earlier ``model.safetensors``. ``states``: the
    evaluated states not yet written, by their index in ``log``."""
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    meta = {
        "dataset": str(ds.root),
        "fingerprint": dataset_fingerprint(ds),
        "num_entities": ds.num_entities,
        "cutoff": cutoff,
        "source_domains": [ds.domains[d] for d in ds.source_domains],
        "source_items": source_items_fingerprint(ds),
        "epoch": epoch,
    }
    with checkpoints.commit(run) as stage:
        stage("config.toml").write_text(cfg.to_toml(), encoding="utf-8")
        save_file(
            state, str(stage("last.safetensors")), metadata={"fingerprint": meta["fingerprint"]}
        )
        torch.save(
            {"optimizer": optimizer.state_dict(), "generator": gen.get_state(), "epoch": epoch},
            stage("trainer.pt"),
        )
        stage("log.json").write_text(json.dumps(log, indent=2), encoding="utf-8")
        for index, weights in (states or {}).items():
            save_file(
                {k: v.cpu().contiguous() for k, v in weights.items()},
                str(stage(state_file(index))),
                metadata={"fingerprint": meta["fingerprint"]},
            )
        if best_state is not None:
            save_file(
                {k: v.cpu().contiguous() for k, v in best_state.items()},
                str(stage("model.safetensors")),
                metadata={"fingerprint": meta["fingerprint"]},
            )
            stage("meta.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")


def load_weights(
    model: PEACE, run: Path, fingerprint: str, name: str = "model.safetensors"
) -> None:
    path = run / name
    if not path.is_file():
        raise CheckpointError(f"{path}: no checkpoint; run `peace pretrain --out {run}` first.")
    checkpoints.verify_run(run, [name])
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as fh:
            found = (fh.metadata() or {}).get("fingerprint")
        weights = load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise checkpoints.damaged(path, exc) from None
    if found != fingerprint:
        raise CheckpointError(
            f"{path}: checkpoint was trained on another id space (fingerprint {found}, dataset "
            f"{fingerprint}); warm-start only from a run on the same entities and items."
        )
    try:
        model.load_state_dict(weights)
    except RuntimeError as exc:
        raise CheckpointError(
            f"{path}: does not fit this model ({checkpoints.one_line(exc)}); use the run's "
            "configuration (RUN/config.toml) or pre-train again."
        ) from None


def load_pretrained(run: str | Path, ds: Dataset) -> Pretrained:
    """Load a finished run folder (config, weights) for the dataset it was trained on."""
    run = Path(run)
    cfg_path = run / "config.toml"
    if not cfg_path.is_file():
        raise CheckpointError(f"{cfg_path}: missing; is {run} a pre-training run folder?")
    checkpoints.verify_run(run, ["config.toml", "meta.json", "log.json"])
    cfg = PeaceConfig.from_toml(cfg_path)
    meta = checkpoints.read_json(run / "meta.json")
    problem = cut_mismatch(ds, cfg, float(meta["cutoff"]), meta.get("source_items"))
    if problem is not None:
        raise CheckpointError(problem)
    model, graph = build_model(ds, cfg)
    load_weights(model, run, dataset_fingerprint(ds))
    model.eval()
    history = HistoryIndex(ds, cfg.model.history_length)
    log = checkpoints.read_json(run / "log.json") if (run / "log.json").exists() else []
    states = load_states(run, cfg, len(log))
    sources = meta.get("source_domains")
    return Pretrained(
        model=model,
        graph=graph,
        history=history,
        config=cfg,
        cutoff=float(meta["cutoff"]),
        log=log,
        source_domains=None if sources is None else tuple(sources),
        source_items=meta.get("source_items"),
        states=states,
    )


def load_states(run: Path, cfg: PeaceConfig, count: int) -> list[dict[str, torch.Tensor]]:
    """The first ``count`` evaluated states of ``run`` when ``cfg`` keeps them
    (``eval.zero_shot_states = "evaluated"``), checksums verified; [] otherwise."""
    if cfg.eval.zero_shot_states != "evaluated":
        return []
    names = [state_file(i) for i in range(count)]
    missing = [n for n in names if not (run / n).is_file()]
    if missing:
        raise CheckpointError(
            f'{run / missing[0]}: missing; eval.zero_shot_states = "evaluated" needs every '
            "evaluated state, which pre-training keeps only when the key is set: pre-train "
            'again with it, or score the kept state (eval.zero_shot_states = "kept").'
        )
    checkpoints.verify_run(run, names)
    return [load_file(str(run / n)) for n in names]

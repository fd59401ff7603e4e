"""Pre-training flow (Sec. 4.5): entity-oriented pre-training on the source domains (Eq. 1-10).

Every source record <u, i, y> before the cut-off T becomes |phi(i)| user-entity pairs <u, e, y>
(Sec. 4.1.2); ``neg_ratio`` negative items per positive are drawn from the same source domain
(DESIGN.md, decision 2). The user's history of a record is their source behaviour strictly before
the record's time. The user encoding (Eq. 1) is computed once per record and shared by all its
pairs; only the prototype-enhanced part (Eq. 8-9) and the decoder run per pair.

The last ``valid_fraction`` of the pre-training records (by time, still before T) is held out; the
epoch with the lowest held-out loss is kept. No target-domain row is read here.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from peace.baselines.base import SourceContext, TransferModel, build_context
from peace.config import PeaceConfig
from peace.data.dataset import Dataset
from peace.data.history import HistoryIndex
from peace.data.splits import pretrain_cutoff, pretrain_rows, split_targets
from peace.flows import checkpoints
from peace.flows.checkpoints import CheckpointError
from peace.nn.entity_encoder import EntityGraph, NeighbourSampler
from peace.nn.peace import PEACE, PretrainBatch
from peace.utils import progress, seed_everything

VALID_FRACTION = 0.05


@dataclass
class PretrainRecords:
    """Pre-training records as arrays, with their history positions computed once."""

    users: np.ndarray
    items: np.ndarray
    domains: np.ndarray
    labels: np.ndarray
    times: np.ndarray
    positions: np.ndarray  # [R, |S|, 2]

    def __len__(self) -> int:
        return len(self.users)

    def subset(self, idx: np.ndarray) -> PretrainRecords:
        return PretrainRecords(
            self.users[idx],
            self.items[idx],
            self.domains[idx],
            self.labels[idx],
            self.times[idx],
            self.positions[idx],
        )


@dataclass
class Pretrained:
    """A pre-trained PEACE (or competitor) with everything later flows need."""

    model: PEACE | TransferModel
    graph: EntityGraph
    history: HistoryIndex
    config: PeaceConfig
    cutoff: float
    log: list[dict] = field(default_factory=list)

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


def dataset_fingerprint(ds: Dataset) -> str:
    """Hash of the id spaces a checkpoint depends on (entities, relations, items)."""
    h = hashlib.sha256()
    for arr in (ds.entities, ds.relations, ds.items):
        h.update("\x1f".join(map(str, arr)).encode())
        h.update(b"\x1e")
    return h.hexdigest()[:16]


def build_model(
    ds: Dataset,
    cfg: PeaceConfig,
    architecture: str = "PEACE",
    context: SourceContext | None = None,
) -> tuple[PEACE | TransferModel, EntityGraph]:
    """PEACE, or the competitor ``architecture`` of :data:`peace.baselines.COMPETITORS`."""
    graph = EntityGraph(ds.triplets, ds.num_entities, ds.num_relations, cfg.model.undirected)
    if architecture != "PEACE":
        from peace.baselines import build_competitor

        if context is None:
            raise ValueError(f"{architecture} is built from the pre-training records' context.")
        return build_competitor(architecture, context, cfg), graph
    feature_dim = None if ds.entity_features is None else ds.entity_features.shape[1]
    model = PEACE(ds.num_entities, graph.num_edge_types, cfg.model, feature_dim)
    model.entity_encoder.set_features(ds.entity_features)
    return model, graph


def make_records(ds: Dataset, history: HistoryIndex, cutoff: float) -> PretrainRecords:
    rows = pretrain_rows(ds, cutoff)
    users = rows["user"].to_numpy()
    times = rows["timestamp"].to_numpy()
    return PretrainRecords(
        users=users,
        items=rows["item"].to_numpy(),
        domains=rows["domain"].to_numpy(),
        labels=rows["label"].to_numpy().astype(np.float32),
        times=times,
        positions=history.positions(users, times),
    )


class _NegativeSampler:
    """Uniform negatives from the same domain's items, vectorised over a batch."""

    def __init__(self, ds: Dataset, domains: list[int]) -> None:
        cats = [ds.domain_items(d) for d in range(len(ds.domains))]
        self.flat = torch.as_tensor(np.concatenate(cats), dtype=torch.long)
        sizes = np.array([len(c) for c in cats])
        self.size = torch.as_tensor(sizes, dtype=torch.long)
        self.offset = torch.as_tensor(
            np.concatenate([[0], np.cumsum(sizes)[:-1]]), dtype=torch.long
        )

    def sample(self, domains: torch.Tensor, k: int, gen: torch.Generator) -> torch.Tensor:
        r = torch.rand(len(domains), k, generator=gen)
        pick = (r * self.size[domains].unsqueeze(1)).long()
        return self.flat[self.offset[domains].unsqueeze(1) + pick]


def _make_batch(
    ds_item_entities: torch.Tensor,
    history: HistoryIndex,
    rec: PretrainRecords,
    idx: np.ndarray,
    sampler: _NegativeSampler,
    neg_ratio: int,
    gen: torch.Generator,
) -> PretrainBatch:
    tokens, mask = history.gather(rec.positions[idx])
    items = torch.as_tensor(rec.items[idx], dtype=torch.long).unsqueeze(1)
    labels = torch.as_tensor(rec.labels[idx]).unsqueeze(1)
    item_valid = torch.ones_like(items, dtype=torch.bool)
    if neg_ratio > 0:
        negs = sampler.sample(torch.as_tensor(rec.domains[idx], dtype=torch.long), neg_ratio, gen)
        items = torch.cat([items, negs], 1)
        labels = torch.cat([labels, torch.zeros(negs.shape)], 1)
        # Only positives bring sampled negatives; an observed negative stands alone.
        neg_valid = (labels[:, :1] > 0).expand(-1, neg_ratio)
        item_valid = torch.cat([item_valid, neg_valid], 1)
    ents = ds_item_entities[items]  # [B, 1+neg, 3]
    valid = (ents >= 0) & item_valid.unsqueeze(-1)
    pad = history.pad
    targets = torch.where(valid, ents, torch.full_like(ents, pad)).flatten(1)
    return PretrainBatch(
        tokens=tokens,
        mask=mask,
        targets=targets,
        labels=labels.unsqueeze(-1).expand_as(ents).flatten(1).float(),
        valid=valid.flatten(1),
        users=torch.as_tensor(rec.users[idx], dtype=torch.long),
    )


def _entity_table(
    model: PEACE,
    graph: EntityGraph,
    batch: PretrainBatch,
    sampler: NeighbourSampler | None,
    gen: torch.Generator,
) -> PretrainBatch | tuple:
    """Full-graph table, or a subgraph table with the batch's ids remapped to it."""
    if sampler is None:
        return model.encoder_table(graph), batch
    pad = graph.num_entities
    seeds = torch.unique(torch.cat([batch.tokens.flatten(), batch.targets.flatten()]))
    seeds = seeds[seeds != pad]
    nodes, edge_index, edge_type = sampler.sample(seeds, gen)
    h = model.entity_encoder.forward_subgraph(nodes, edge_index, edge_type)
    table = torch.cat([h, h.new_zeros(1, h.shape[1])])
    remap = torch.full((pad + 1,), len(nodes), dtype=torch.long)
    remap[nodes] = torch.arange(len(nodes))
    local = PretrainBatch(
        remap[batch.tokens],
        batch.mask,
        remap[batch.targets],
        batch.labels,
        batch.valid,
        batch.users,
    )
    return table, local


def pretrain(
    ds: Dataset,
    cfg: PeaceConfig,
    out: str | Path | None = None,
    show_progress: bool = True,
    resume: bool = False,
    warm_start: str | Path | None = None,
    architecture: str = "PEACE",
) -> Pretrained:
    """Pre-train PEACE (or a competitor) on the source domains of ``ds`` (the pre-training flow).

    Args:
        ds: the dataset.
        cfg: the configuration (its seed fixes initialisation, sampling and order).
        out: run folder for the checkpoint, config and log; None keeps everything in memory.
        show_progress: progress bars.
        resume: continue an interrupted run in ``out`` from its last finished epoch.
        warm_start: a run folder whose weights initialise this run (new data, same id spaces).
        architecture: ``"PEACE"`` or a name of :data:`peace.baselines.COMPETITORS`; every model
            sees the same records, batches and negatives, and is kept by the same held-out loss.
    """
    gen = seed_everything(cfg.seed)
    pc = cfg.pretrain
    splits = split_targets(ds, cfg.eval.split)
    cutoff = pretrain_cutoff(splits, pc.cutoff)
    history = HistoryIndex(ds, cfg.model.history_length)
    records = make_records(ds, history, cutoff)
    if len(records) == 0:
        raise ValueError(
            f"{ds.root}: no source interaction before the pre-training cut-off {cutoff}; "
            "check the timestamps or set pretrain.cutoff."
        )
    n_valid = int(len(records) * VALID_FRACTION) if len(records) >= 200 else 0
    train = records.subset(np.arange(len(records) - n_valid))
    held_out = records.subset(np.arange(len(records) - n_valid, len(records)))
    context = None
    if architecture != "PEACE":
        context = build_context(
            ds, cfg, train.users, train.items, train.labels, history.sequence_length
        )
    model, graph = build_model(ds, cfg, architecture, context)
    item_entities = torch.as_tensor(ds.item_entities, dtype=torch.long)
    negatives = _NegativeSampler(ds, ds.source_domains)
    sampled = cfg.model.graph_sampling == "sampled" and architecture == "PEACE"
    sampler = NeighbourSampler(graph, cfg.model.fanout) if sampled else None
    optimizer = torch.optim.Adam(model.parameters(), lr=pc.lr, weight_decay=pc.weight_decay)

    run = Path(out) if out is not None else None
    log: list[dict] = []
    start_epoch = 0
    fingerprint = dataset_fingerprint(ds)
    if warm_start is not None:
        _load_weights(model, Path(warm_start), fingerprint)
    if resume and run is not None:
        checkpoints.verify_run(run, ["trainer.pt", "log.json"])  # also ends a cut-short commit
    if resume and run is not None and (run / "trainer.pt").exists():
        try:
            state = torch.load(run / "trainer.pt", weights_only=True)
            _load_weights(model, run, fingerprint, name="last.safetensors")
            optimizer.load_state_dict(state["optimizer"])
            gen.set_state(state["generator"])
            start_epoch = int(state["epoch"])
        except CheckpointError:
            raise
        except Exception as exc:  # noqa: BLE001 - any unreadable trainer state
            raise checkpoints.damaged(run / "trainer.pt", exc) from None
        log = checkpoints.read_json(run / "log.json")

    # Held-out batches use fixed negatives so epochs compare on the same pairs.
    valid_gen = torch.Generator().manual_seed(cfg.seed + 1)
    valid_batches = [
        _make_batch(
            item_entities,
            history,
            held_out,
            np.arange(s, min(s + pc.batch_size, n_valid)),
            negatives,
            pc.neg_ratio,
            valid_gen,
        )
        for s in range(0, n_valid, pc.batch_size)
    ]
    best = min((e["valid_loss"] for e in log), default=float("inf"))
    best_state = None
    steps = 0
    for epoch in range(start_epoch, pc.epochs):
        model.train()
        t0 = time.perf_counter()
        order = torch.randperm(len(train), generator=gen).numpy()
        batches = range(0, len(train), pc.batch_size)
        sums = {"total": 0.0, "et": 0.0, "cp": 0.0}
        n_batches = 0
        for s in progress(
            batches,
            f"pre-train epoch {epoch + 1}/{pc.epochs}",
            total=len(batches),
            enabled=show_progress,
        ):
            batch = _make_batch(
                item_entities,
                history,
                train,
                order[s : s + pc.batch_size],
                negatives,
                pc.neg_ratio,
                gen,
            )
            table, batch = _entity_table(model, graph, batch, sampler, gen)
            losses = model.pretrain_losses(table, batch, pc.tau, pc.gamma)
            optimizer.zero_grad(set_to_none=True)
            losses["total"].backward()
            optimizer.step()
            for k, v in losses.items():
                sums[k] += float(v.detach())
            n_batches += 1
            steps += 1
            if pc.max_steps and steps >= pc.max_steps:
                break
        valid_loss = _held_out_loss(model, graph, valid_batches, sampler, cfg)
        entry = {
            "epoch": epoch + 1,
            "loss": sums["total"] / max(n_batches, 1),
            "loss_et": sums["et"] / max(n_batches, 1),
            "loss_cp": sums["cp"] / max(n_batches, 1),
            "valid_loss": valid_loss,
            "seconds": time.perf_counter() - t0,
            "pairs": int(n_batches * pc.batch_size * (1 + pc.neg_ratio)),
        }
        log.append(entry)
        improved = valid_loss <= best
        if improved:
            best = valid_loss
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        if run is not None:
            _save_epoch(run, model, optimizer, gen, epoch + 1, log, cfg, ds, cutoff, improved)
        if pc.max_steps and steps >= pc.max_steps:
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    elif run is not None and (run / "model.safetensors").exists():
        _load_weights(model, run, fingerprint)
    model.eval()
    return Pretrained(model=model, graph=graph, history=history, config=cfg, cutoff=cutoff, log=log)


@torch.no_grad()
def _held_out_loss(
    model: PEACE | TransferModel,
    graph: EntityGraph,
    batches: list[PretrainBatch],
    sampler: NeighbourSampler | None,
    cfg: PeaceConfig,
) -> float:
    if not batches:
        return 0.0
    model.eval()
    gen = torch.Generator().manual_seed(cfg.seed + 2)
    total = 0.0
    full = model.encoder_table(graph) if sampler is None else None
    for batch in batches:
        if full is not None:
            table = full
        else:
            table, batch = _entity_table(model, graph, batch, sampler, gen)
        total += float(model.pretrain_losses(table, batch, cfg.pretrain.tau, 0.0)["et"])
    model.train()
    return total / len(batches)


def _save_epoch(
    run: Path,
    model: PEACE,
    optimizer: torch.optim.Optimizer,
    gen: torch.Generator,
    epoch: int,
    log: list[dict],
    cfg: PeaceConfig,
    ds: Dataset,
    cutoff: float,
    improved: bool,
) -> None:
    """Write the epoch's checkpoint as one commit with its checksums (peace.flows.checkpoints)."""
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    meta = {
        "dataset": str(ds.root),
        "fingerprint": dataset_fingerprint(ds),
        "num_entities": ds.num_entities,
        "cutoff": cutoff,
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
        if improved:
            save_file(
                state,
                str(stage("model.safetensors")),
                metadata={"fingerprint": meta["fingerprint"]},
            )
            stage("meta.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")


def _load_weights(
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
    model, graph = build_model(ds, cfg)
    _load_weights(model, run, dataset_fingerprint(ds))
    model.eval()
    history = HistoryIndex(ds, cfg.model.history_length)
    log = checkpoints.read_json(run / "log.json") if (run / "log.json").exists() else []
    return Pretrained(
        model=model, graph=graph, history=history, config=cfg, cutoff=float(meta["cutoff"]), log=log
    )

"""Pre-training flow (Sec. 4.5): entity-oriented pre-training on the source domains (Eq. 1-10).

Every source record <u, i, y> before the cut-off T becomes |phi(i)| user-entity pairs <u, e, y>
(Sec. 4.1.2); ``neg_ratio`` negative items per positive are drawn from the same source domain
(DESIGN.md, decision 2). The user's history of a record is their source behaviour strictly before
the record's time. The user encoding (Eq. 1) is computed once per record and shared by all its
pairs; only the prototype-enhanced part (Eq. 8-9) and the decoder run per pair.

The last ``VALID_FRACTION`` of the pre-training records (by time, still before T) is held out.
Every ``pretrain.eval_every`` steps (or once per epoch) they are ranked against their source
domain's catalogue by the served zero-shot score; the state with the best held-out NDCG@10 is kept
(the held-out loss of Eq. 4 where there is nothing to rank). With ``pretrain.holdout_items``, a
share of each source domain's items is kept out of training and their records are ranked among
them instead; those items still appear in users' histories (as entity tokens), as they would
for a domain whose items the platform already shows elsewhere. No target-domain row is read here.
"""

from __future__ import annotations

import dataclasses
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
from peace.flows import checkpoints, distributed
from peace.flows.checkpoints import CheckpointError
from peace.nn.entity_encoder import EntityGraph, NeighbourSampler
from peace.nn.peace import PEACE, PretrainBatch, SourceCatalogue, item_vectors
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
    """Hash of what a checkpoint depends on: the id spaces (entities, relations, items) and phi."""
    h = hashlib.sha256()
    for arr in (ds.entities, ds.relations, ds.items):
        h.update("\x1f".join(map(str, arr)).encode())
        h.update(b"\x1e")
    h.update(np.ascontiguousarray(ds.item_entities, dtype=np.int64).tobytes())
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
    model.entity_encoder.set_private(private_entities(ds))
    degree = np.bincount(ds.triplets[:, [0, 2]].reshape(-1), minlength=ds.num_entities)
    model.entity_encoder.set_degrees(degree)
    return model, graph


def kept_out_items(ds: Dataset, share: float, seed: int) -> np.ndarray:
    """``[I]`` bool: ``share`` of each source domain's items (at least one), chosen by ``seed``,
    that pre-training never trains on: the zero-shot task in miniature for model selection."""
    rng = np.random.default_rng(seed + 4)
    out = np.zeros(ds.num_items, dtype=bool)
    for d in ds.source_domains:
        items = ds.domain_items(d)
        k = min(len(items) - 1, max(1, int(round(share * len(items)))))
        if k > 0:
            out[rng.choice(items, k, replace=False)] = True
    return out


def private_entities(ds: Dataset) -> np.ndarray:
    """``[|E|]`` bool: entities that phi links to exactly one item."""
    ents = ds.item_entities[ds.item_entities >= 0]
    return np.bincount(ents, minlength=ds.num_entities) == 1


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


class NegativeSampler:
    """Negatives from the positive's own source domain, vectorised over a batch.

    ``mode`` (``pretrain.negatives``): ``uniform`` over the domain's items; ``popularity`` in
    proportion to ``(1 + count)^alpha``, where count is the item's positive pre-training records;
    ``mixed``: each negative one or the other with equal chance.
    """

    def __init__(
        self,
        ds: Dataset,
        counts: np.ndarray | None = None,
        mode: str = "uniform",
        alpha: float = 0.75,
        allowed: np.ndarray | None = None,
    ) -> None:
        cats = [ds.domain_items(d) for d in range(len(ds.domains))]
        if allowed is not None:  # items kept out of pre-training are never negatives either
            cats = [c[allowed[c]] for c in cats]
        self.flat = torch.as_tensor(np.concatenate(cats), dtype=torch.long)
        sizes = np.array([len(c) for c in cats])
        self.size = torch.as_tensor(sizes, dtype=torch.long)
        self.offset = torch.as_tensor(
            np.concatenate([[0], np.cumsum(sizes)[:-1]]), dtype=torch.long
        )
        if mode not in ("uniform", "popularity", "mixed"):
            raise ValueError(
                f"pretrain.negatives = {mode!r}: expected uniform, popularity or mixed."
            )
        self.mode = mode
        # Domain d's cumulative weights live in [d, d + 1): one searchsorted serves every domain.
        counts = np.zeros(ds.num_items) if counts is None else counts
        cdf = []
        for d, items in enumerate(cats):
            w = (1.0 + counts[items].astype(np.float64)) ** alpha
            c = np.cumsum(w) / max(w.sum(), 1e-12) if len(w) else np.zeros(0)
            cdf.append(d + np.minimum(c, 1.0 - 1e-12))
        self.cdf = torch.as_tensor(np.concatenate(cdf), dtype=torch.float64)

    def sample(self, domains: torch.Tensor, k: int, gen: torch.Generator) -> torch.Tensor:
        r = torch.rand(len(domains), k, generator=gen)
        pick = (r * self.size[domains].unsqueeze(1)).long()
        if self.mode != "uniform":
            q = torch.rand(len(domains), k, generator=gen, dtype=torch.float64)
            drawn = torch.searchsorted(self.cdf, domains.unsqueeze(1).double() + q)
            drawn = (drawn - self.offset[domains].unsqueeze(1)).clamp(min=0)
            drawn = torch.minimum(drawn, self.size[domains].unsqueeze(1) - 1)
            if self.mode == "mixed":
                pick = torch.where(torch.rand(len(domains), k, generator=gen) < 0.5, drawn, pick)
            else:
                pick = drawn
        return self.flat[self.offset[domains].unsqueeze(1) + pick]


def source_catalogue(ds: Dataset, allowed: np.ndarray | None = None) -> SourceCatalogue:
    """The source items (those ``allowed``), their entities and domains (L_served's softmax)."""
    items = [ds.domain_items(d) for d in ds.source_domains]
    if allowed is not None:
        items = [c[allowed[c]] for c in items]
    flat = np.concatenate(items) if items else np.zeros(0, np.int64)
    column = np.full(ds.num_items, -1, dtype=np.int64)
    column[flat] = np.arange(len(flat))
    mask = np.zeros((len(items), len(flat)), dtype=bool)
    start = 0
    for k, its in enumerate(items):
        mask[k, start : start + len(its)] = True
        start += len(its)
    return SourceCatalogue(
        entities=torch.as_tensor(ds.item_entities[flat], dtype=torch.long),
        domain_mask=torch.as_tensor(mask),
        column=torch.as_tensor(column),
    )


def _make_batch(
    ds_item_entities: torch.Tensor,
    history: HistoryIndex,
    rec: PretrainRecords,
    idx: np.ndarray,
    sampler: NegativeSampler,
    neg_ratio: int,
    gen: torch.Generator,
    source_position: torch.Tensor | None = None,
) -> PretrainBatch:
    tokens, mask = history.gather(rec.positions[idx])
    domains = torch.as_tensor(rec.domains[idx], dtype=torch.long)
    items = torch.as_tensor(rec.items[idx], dtype=torch.long).unsqueeze(1)
    labels = torch.as_tensor(rec.labels[idx]).unsqueeze(1)
    item_valid = torch.ones_like(items, dtype=torch.bool)
    if neg_ratio > 0:
        negs = sampler.sample(domains, neg_ratio, gen)
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
        items=items,
        item_labels=labels.float(),
        item_valid=item_valid,
        domains=None if source_position is None else source_position[domains],
    )


def _entity_table(
    model: PEACE,
    graph: EntityGraph,
    batch: PretrainBatch,
    sampler: NeighbourSampler | None,
    gen: torch.Generator,
    catalogue: SourceCatalogue | None = None,
) -> tuple[torch.Tensor, PretrainBatch, SourceCatalogue | None]:
    """Full-graph table, or a subgraph table with the batch's (and catalogue's) ids remapped."""
    if sampler is None:
        return model.encoder_table(graph), batch, catalogue
    pad = graph.num_entities
    parts = [batch.tokens.flatten(), batch.targets.flatten()]
    if catalogue is not None:
        parts.append(catalogue.entities[catalogue.entities >= 0])
    seeds = torch.unique(torch.cat(parts))
    seeds = seeds[seeds != pad]
    nodes, edge_index, edge_type = sampler.sample(seeds, gen)
    h = model.entity_encoder.forward_subgraph(nodes, edge_index, edge_type)
    table = torch.cat([h, h.new_zeros(1, h.shape[1])])
    remap = torch.full((pad + 1,), len(nodes), dtype=torch.long)
    remap[nodes] = torch.arange(len(nodes))
    local = dataclasses.replace(batch, tokens=remap[batch.tokens], targets=remap[batch.targets])
    if catalogue is not None:
        ents = catalogue.entities
        local_ents = torch.where(ents >= 0, remap[ents.clamp(min=0)], ents)
        catalogue = dataclasses.replace(catalogue, entities=local_ents)
    return table, local, catalogue


@dataclass
class HeldOut:
    """Held-out source records (the last ``VALID_FRACTION`` before the cut-off), two ways.

    ``batches``: user-entity pairs with fixed negatives (the held-out loss of Eq. 4).
    ``ranking``: up to ``RANKING_RECORDS`` positive records, each ranked against its source
    domain's whole catalogue by the served zero-shot score: NDCG@10 and AUC per record. A
    per-entity popularity table cannot win this one by knowing popularity alone; its own value on
    the same records is kept as ``popularity_ndcg``.
    """

    batches: list[PretrainBatch]
    ranking: PretrainRecords
    popularity_ndcg: float = float("nan")
    allowed: np.ndarray | None = None
    """Items the ranking is over (the kept-out items); None = every item of the domain."""


RANKING_RECORDS = 4000


def _held_out(
    ds: Dataset,
    history: HistoryIndex,
    train: PretrainRecords,
    held: PretrainRecords,
    item_entities: torch.Tensor,
    negatives: NegativeSampler,
    cfg: PeaceConfig,
    source_position: torch.Tensor,
    cold: tuple[np.ndarray, PretrainRecords] | None = None,
) -> HeldOut:
    """``cold``: (mask of items kept out of pre-training, their records); when given, the
    ranking measure ranks those records among the kept-out items of their domain."""
    pc = cfg.pretrain
    gen = torch.Generator().manual_seed(cfg.seed + 1)  # fixed negatives: evaluations compare
    batches = [
        _make_batch(
            item_entities,
            history,
            held,
            np.arange(s, min(s + pc.batch_size, len(held))),
            negatives,
            pc.neg_ratio,
            gen,
            source_position,
        )
        for s in range(0, len(held), pc.batch_size)
    ]
    source, allowed = (held, None) if cold is None else (cold[1], cold[0])
    positive = np.flatnonzero(source.labels > 0)
    if len(positive) > RANKING_RECORDS:
        rng = np.random.default_rng(cfg.seed + 3)
        positive = np.sort(rng.choice(positive, RANKING_RECORDS, replace=False))
    ranking = source.subset(positive)
    counts = np.bincount(train.items[train.labels > 0], minlength=ds.num_items).astype(np.float64)
    if cold is not None:  # kept-out items have no count: popularity is their entities'
        ents = ds.item_entities
        entity_counts = np.bincount(ents[train.items[train.labels > 0]].reshape(-1) + 1)[1:]
        entity_counts = np.pad(entity_counts, (0, ds.num_entities - len(entity_counts)))
        logs = np.where(ents >= 0, np.log1p(entity_counts[np.maximum(ents, 0)]), 0.0)
        counts = logs.sum(1) / np.maximum((ents >= 0).sum(1), 1)
    pop = _rank_metrics(
        ds,
        ranking,
        lambda idx, cat: torch.as_tensor(counts[cat]).expand(len(idx), -1),
        allowed=allowed,
    )["ndcg@10"]
    return HeldOut(batches=batches, ranking=ranking, popularity_ndcg=pop, allowed=allowed)


def _rank_metrics(
    ds: Dataset,
    rec: PretrainRecords,
    score,
    chunk: int = 256,
    allowed: np.ndarray | None = None,
) -> dict[str, float]:
    """Mean NDCG@10 and AUC of each record's item within its domain's catalogue.

    ``score(idx, catalogue)`` gives ``[len(idx), len(catalogue)]`` scores for records ``idx``.
    Ties count half (AUC) and rank before the item (NDCG), so a constant score earns nothing.
    """
    ndcg, auc = [], []
    for d in np.unique(rec.domains):
        cat = ds.domain_items(int(d))
        if allowed is not None:
            cat = cat[allowed[cat]]
        column = np.full(ds.num_items, -1, dtype=np.int64)
        column[cat] = np.arange(len(cat))
        rows = np.flatnonzero(rec.domains == d)
        for s in range(0, len(rows), chunk):
            idx = rows[s : s + chunk]
            scores = score(idx, cat).double()
            target = torch.as_tensor(column[rec.items[idx]])
            own = scores.gather(1, target.unsqueeze(1))
            above = (scores > own).sum(1).double()
            ties = (scores == own).sum(1).double() - 1.0
            rank = above + ties  # pessimistic: tied items rank first
            ndcg.append(torch.where(rank < 10, 1.0 / torch.log2(rank + 2.0), torch.zeros(1)))
            auc.append(1.0 - (above + 0.5 * ties) / max(len(cat) - 1, 1))
    if not ndcg:
        return {"ndcg@10": float("nan"), "auc": float("nan")}
    return {"ndcg@10": float(torch.cat(ndcg).mean()), "auc": float(torch.cat(auc).mean())}


@torch.no_grad()
def _evaluate(
    model: PEACE | TransferModel,
    graph: EntityGraph,
    ds: Dataset,
    history: HistoryIndex,
    held: HeldOut,
    sampler: NeighbourSampler | None,
    cfg: PeaceConfig,
    item_entities: torch.Tensor,
) -> dict[str, float]:
    """Held-out loss of Eq. 4 and held-out ranking by the served score."""
    model.eval()
    out: dict[str, float] = {"valid_loss": 0.0}
    full = model.encoder_table(graph)
    if held.batches:
        gen = torch.Generator().manual_seed(cfg.seed + 2)
        total = 0.0
        for batch in held.batches:
            if sampler is None:
                table = full
            else:
                table, batch, _ = _entity_table(model, graph, batch, sampler, gen)
            total += float(model.pretrain_losses(table, batch, cfg.pretrain.tau, 0.0)["et"])
        out["valid_loss"] = total / len(held.batches)
    if len(held.ranking):
        rec = held.ranking
        tokens, mask = history.gather(rec.positions)
        users = torch.as_tensor(rec.users, dtype=torch.long)
        states = model.encode_users(full, users, tokens, mask)
        scorer = cfg.eval.zero_shot_scorer

        def score(idx: np.ndarray, cat: np.ndarray) -> torch.Tensor:
            vecs = item_vectors(full, item_entities[torch.as_tensor(cat)])
            cand = vecs.unsqueeze(0).expand(len(idx), -1, -1)
            return model.zero_shot_scores(states[torch.as_tensor(idx)], cand, scorer)

        metrics = _rank_metrics(ds, rec, score, allowed=held.allowed)
        out["valid_ndcg"] = metrics["ndcg@10"]
        out["valid_auc"] = metrics["auc"]
    model.train()
    return out


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
            sees the same records, batches and negatives, and is kept by the same held-out rule.
    """
    gen = seed_everything(cfg.seed)
    ranks = distributed.from_environment()  # a torchrun process group, or None
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
    cold = None
    allowed = None
    if pc.holdout_items > 0:
        kept_out = kept_out_items(ds, pc.holdout_items, cfg.seed)
        allowed = ~kept_out
        cold = (kept_out, records.subset(np.flatnonzero(kept_out[records.items])))
        train = train.subset(np.flatnonzero(allowed[train.items]))
    context = None
    if architecture != "PEACE":
        context = build_context(
            ds, cfg, train.users, train.items, train.labels, history.sequence_length
        )
    model, graph = build_model(ds, cfg, architecture, context)
    item_entities = torch.as_tensor(ds.item_entities, dtype=torch.long)
    counts = np.bincount(train.items[train.labels > 0], minlength=ds.num_items)
    negatives = NegativeSampler(ds, counts, pc.negatives, pc.neg_alpha, allowed)
    source_position = torch.full((len(ds.domains),), -1, dtype=torch.long)
    source_position[ds.source_domains] = torch.arange(len(ds.source_domains))
    served = pc.served_loss if architecture == "PEACE" else "none"
    catalogue = source_catalogue(ds, allowed) if served != "none" else None
    sampled = cfg.model.graph_sampling == "sampled" and architecture == "PEACE"
    sampler = NeighbourSampler(graph, cfg.model.fanout) if sampled else None
    optimizer = torch.optim.Adam(model.parameters(), lr=pc.lr, weight_decay=pc.weight_decay)

    def step_losses(batch: PretrainBatch) -> dict[str, torch.Tensor]:
        table, batch, cat = _entity_table(model, graph, batch, sampler, gen, catalogue)
        if served == "none":
            return model.pretrain_losses(table, batch, pc.tau, pc.gamma)
        return model.pretrain_losses(table, batch, pc.tau, pc.gamma, served, pc.served_weight, cat)

    step_losses_of = distributed.objective(model, step_losses, ranks)
    run = Path(out) if out is not None else None
    writer = run if ranks is None or ranks.writes else None  # rank 0 writes the run folder
    show_progress = show_progress and (ranks is None or ranks.writes)
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

    held = _held_out(
        ds, history, train, held_out, item_entities, negatives, cfg, source_position, cold
    )
    best = min((_criterion(e) for e in log), default=float("inf"))
    stale = _stale(log)
    best_state = None
    improved_since_save = False
    steps = int(log[-1].get("step", 0)) if log else 0
    stop = False
    sums = {"total": 0.0, "et": 0.0, "cp": 0.0, "ip": 0.0}
    n_batches = 0
    t0 = time.perf_counter()

    def evaluate(epoch: int) -> None:
        """One held-out evaluation: log it, keep the best state, count patience."""
        nonlocal best, best_state, stale, improved_since_save, stop, sums, n_batches, t0
        scores = _evaluate(model, graph, ds, history, held, sampler, cfg, item_entities)
        sums = distributed.mean_over_ranks(sums, ranks)
        entry = {
            "epoch": epoch,
            "step": steps,
            "loss": sums["total"] / max(n_batches, 1),
            "loss_et": sums["et"] / max(n_batches, 1),
            "loss_cp": sums["cp"] / max(n_batches, 1),
            "loss_ip": sums["ip"] / max(n_batches, 1),
            **scores,
            "valid_popularity_ndcg": held.popularity_ndcg,
            "seconds": time.perf_counter() - t0,
            "pairs": int(n_batches * pc.batch_size * (1 + pc.neg_ratio)),
        }
        log.append(entry)
        ranked = "valid_ndcg" in entry  # a ranking measure: ties are no improvement
        if _criterion(entry) < best or (not ranked and _criterion(entry) <= best):
            best, stale, improved_since_save = _criterion(entry), 0, True
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            stale += 1
            if pc.patience and stale >= pc.patience:
                stop = True
        sums = dict.fromkeys(sums, 0.0)
        n_batches = 0
        t0 = time.perf_counter()

    # A resumed run that had already stopped (step budget or patience) trains no further.
    stop = bool(log) and (
        bool(pc.max_steps and steps >= pc.max_steps) or bool(pc.patience and stale >= pc.patience)
    )
    for epoch in range(start_epoch, pc.epochs):
        if stop:
            break
        model.train()
        order = torch.randperm(len(train), generator=gen).numpy()
        batches = range(0, len(train), pc.batch_size)
        evaluated = False
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
                source_position,
            )
            if ranks is not None:
                batch = distributed.shard(batch, ranks)
            losses = step_losses_of(batch)
            optimizer.zero_grad(set_to_none=True)
            losses["total"].backward()
            optimizer.step()
            for k, v in losses.items():
                sums[k] += float(v.detach())
            n_batches += 1
            steps += 1
            evaluated = False
            if pc.eval_every and steps % pc.eval_every == 0:
                evaluate(epoch + 1)
                evaluated = True
            if stop or (pc.max_steps and steps >= pc.max_steps):
                stop = True
                break
        if not evaluated:
            evaluate(epoch + 1)
        if writer is not None:
            _save_epoch(
                writer,
                model,
                optimizer,
                gen,
                epoch + 1,
                log,
                cfg,
                ds,
                cutoff,
                best_state if improved_since_save else None,
            )
            improved_since_save = False
        if stop:
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    elif run is not None and (run / "model.safetensors").exists():
        _load_weights(model, run, fingerprint)
    model.eval()
    return Pretrained(model=model, graph=graph, history=history, config=cfg, cutoff=cutoff, log=log)


def _criterion(entry: dict) -> float:
    """What pre-training keeps (lower is better): held-out ranking by the served score when
    there is one, else the held-out loss of Eq. 4."""
    ndcg = entry.get("valid_ndcg")
    if ndcg is not None and ndcg == ndcg:
        return -float(ndcg)
    return float(entry["valid_loss"])


def _stale(log: list[dict]) -> int:
    """Evaluations since the best one (for patience across a resume)."""
    if not log:
        return 0
    values = [_criterion(e) for e in log]
    return len(values) - 1 - int(np.argmin(values))


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
    best_state: dict[str, torch.Tensor] | None,
) -> None:
    """Write the epoch's checkpoint as one commit with its checksums (peace.flows.checkpoints).

    ``best_state``: the best weights so far when they changed since the last checkpoint (they
    become ``model.safetensors``); None keeps the earlier ``model.safetensors``."""
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
        if best_state is not None:
            save_file(
                {k: v.contiguous() for k, v in best_state.items()},
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

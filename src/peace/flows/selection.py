"""Held-out evaluation and model selection during pre-training.

The last ``VALID_FRACTION`` of the pre-training records (by time, still before T) is held out.
They are ranked against their source domain's catalogue by the served zero-shot score; the state
with the best held-out NDCG@10 is kept (the held-out loss of Eq. 4 where there is nothing to
rank). With ``pretrain.holdout_items``, the records of the items kept out of training are ranked
among those items instead.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from peace.config import PeaceConfig
from peace.data.dataset import Dataset
from peace.data.history import HistoryIndex
from peace.flows.records import (
    NegativeSampler,
    PretrainRecords,
    batch_entity_table,
    make_batch,
)
from peace.models import Model
from peace.nn.entity_encoder import EntityGraph, NeighbourSampler
from peace.nn.peace import PretrainBatch, item_vectors
from peace.utils import to_device

VALID_FRACTION = 0.05


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


def make_held_out(
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
        make_batch(
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
def evaluate_held_out(
    model: Model,
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
    device = full.device
    if held.batches:
        gen = torch.Generator().manual_seed(cfg.seed + 2)
        total = 0.0
        for batch in held.batches:
            if sampler is None:
                table, batch = full, to_device(batch, device)
            else:
                table, batch, _ = batch_entity_table(model, graph, batch, sampler, gen)
            total += float(model.pretrain_losses(table, batch, cfg.pretrain.tau, 0.0)["et"])
        out["valid_loss"] = total / len(held.batches)
    if len(held.ranking):
        rec = held.ranking
        tokens, mask = history.gather(rec.positions)
        users = torch.as_tensor(rec.users, dtype=torch.long)
        states = model.encode_users(full, *(to_device(t, device) for t in (users, tokens, mask)))
        scorer = cfg.eval.zero_shot_scorer

        def score(idx: np.ndarray, cat: np.ndarray) -> torch.Tensor:
            vecs = item_vectors(full, to_device(item_entities[torch.as_tensor(cat)], device))
            cand = vecs.unsqueeze(0).expand(len(idx), -1, -1)
            rows = to_device(torch.as_tensor(idx), device)
            return model.zero_shot_scores(states[rows], cand, scorer).cpu()

        metrics = _rank_metrics(ds, rec, score, allowed=held.allowed)
        out["valid_ndcg"] = metrics["ndcg@10"]
        out["valid_auc"] = metrics["auc"]
    model.train()
    return out


def selection_criterion(entry: dict) -> float:
    """What pre-training keeps (lower is better): held-out ranking by the served score when
    there is one, else the held-out loss of Eq. 4."""
    ndcg = entry.get("valid_ndcg")
    if ndcg is not None and ndcg == ndcg:
        return -float(ndcg)
    return float(entry["valid_loss"])


def evaluations_since_best(log: list[dict]) -> int:
    """Evaluations since the best one (for patience across a resume)."""
    if not log:
        return 0
    values = [selection_criterion(e) for e in log]
    return len(values) - 1 - int(np.argmin(values))

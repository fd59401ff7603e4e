"""Pre-training records and batches: source records before the cut-off, negatives, subgraphs.

Every source record <u, i, y> before the cut-off T becomes |phi(i)| user-entity pairs <u, e, y>
(Sec. 4.1.2); ``neg_ratio`` negative items per positive are drawn from the same source domain
(DESIGN.md, decision 2). Each record keeps the positions of its user's history strictly before
the record's time, computed once.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch

from peace.data.dataset import Dataset
from peace.data.history import HistoryIndex
from peace.data.splits import pretrain_rows
from peace.nn.entity_encoder import EntityGraph, NeighbourSampler
from peace.nn.peace import PEACE, PretrainBatch, SourceCatalogue
from peace.utils import to_device


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


def draw_catalogue(
    catalogue: SourceCatalogue, batch: PretrainBatch, size: int, gen: torch.Generator
) -> SourceCatalogue:
    """A step's sample of the source catalogue for the sampled softmax of L_served.

    ``size`` items drawn uniformly without replacement (all of them when the catalogue is not
    larger), plus the batch's positive items; ``drawn`` marks the uniform draws. In
    sampled-subgraph training only these items' entities are encoded, so a step's cost no
    longer grows with the number of source items.
    """
    total = len(catalogue.entities)
    picked = torch.randperm(total, generator=gen)[:size] if size < total else torch.arange(total)
    positives = catalogue.column[batch.items[:, 0]] if batch.items is not None else picked[:0]
    columns = torch.unique(torch.cat([picked, positives[positives >= 0]]))
    drawn = torch.zeros(total, dtype=torch.bool)
    drawn[picked] = True
    remap = torch.full((total + 1,), -1, dtype=torch.long)  # column -1 stays -1
    remap[columns] = torch.arange(len(columns))
    return SourceCatalogue(
        entities=catalogue.entities[columns],
        domain_mask=catalogue.domain_mask[:, columns],
        column=remap[catalogue.column],
        drawn=drawn[columns],
    )


def make_batch(
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


def batch_entity_table(
    model: PEACE,
    graph: EntityGraph,
    batch: PretrainBatch,
    sampler: NeighbourSampler | None,
    gen: torch.Generator,
    catalogue: SourceCatalogue | None = None,
    served_sample: int = 0,
) -> tuple[torch.Tensor, PretrainBatch, SourceCatalogue | None]:
    """Full-graph table, or a subgraph table with the batch's (and catalogue's) ids remapped.

    With ``served_sample > 0`` the catalogue of L_served is first reduced to the step's sample
    (:func:`draw_catalogue`). Batches, catalogues and the sampler's graph stay on the CPU, where
    every random draw is made; ``graph`` and what is returned are on the model's device.
    """
    device = next(model.parameters()).device
    if catalogue is not None and served_sample > 0:
        catalogue = draw_catalogue(catalogue, batch, served_sample, gen)
    if sampler is None:
        table = model.encoder_table(graph)
        return table, to_device(batch, device), to_device(catalogue, device)
    pad = graph.num_entities
    parts = [batch.tokens.flatten(), batch.targets.flatten()]
    if catalogue is not None:
        parts.append(catalogue.entities[catalogue.entities >= 0])
    seeds = torch.unique(torch.cat(parts))
    seeds = seeds[seeds != pad]
    nodes, edge_index, edge_type = sampler.sample(seeds, gen)
    # The seeds come first in ``nodes``; only their encodings are read.
    h = model.entity_encoder.forward_subgraph(
        *(to_device(t, device) for t in (nodes, edge_index, edge_type)), outputs=len(seeds)
    )
    table = torch.cat([h, h.new_zeros(1, h.shape[1])])
    remap = torch.full((pad + 1,), len(seeds), dtype=torch.long)
    remap[seeds] = torch.arange(len(seeds))
    local = dataclasses.replace(batch, tokens=remap[batch.tokens], targets=remap[batch.targets])
    if catalogue is not None:
        ents = catalogue.entities
        local_ents = torch.where(ents >= 0, remap[ents.clamp(min=0)], ents)
        catalogue = dataclasses.replace(catalogue, entities=local_ents)
    return table, to_device(local, device), to_device(catalogue, device)

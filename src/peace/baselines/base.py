"""The interface PEACE and its competitors share, and the pieces several competitors reuse.

Every transferable model of the benchmark is a :class:`TransferModel`. One trainer
(:func:`peace.flows.pretrain.pretrain`), one fine-tuner (:func:`peace.flows.finetune.fit_ranker`
with :class:`peace.flows.rankers.PeaceRanker`, Eq. 11-12) and one evaluator
(:func:`peace.flows.finetune.evaluate_ranker`) serve them all, so only the transferred
representation differs between rows of the benchmark (footnote 6 of the paper).

The interface:

* ``encoder_table(graph)``: the encoder's output table. Rows ``0..|E|-1`` are entity vectors,
  row ``|E|`` is the zero padding row; rows after it are the model's own (graph models keep their
  per-layer entity rows and users' input rows there, :class:`peace.baselines.graph.LayeredTable`).
  Items are represented as the mean of their entities' rows (footnote 4), for every model.
* ``encode_users(table, users, tokens, mask)``: user states from the source-domain entity
  sequences ``[B, L]`` (and the user ids, for graph models): ``[B, d]`` or ``[B, M, d]``.
* ``user_vectors(states, items, parts=None)``: one user vector per candidate ``[B, C, d]`` (z_u^T
  of Eq. 11); ``parts`` replaces the modules it applies to the states (``user_parts()``).
* ``user_parts()``: trainable copies of those modules, which a normal ranker fine-tunes with its
  head (``finetune.tune_user_mlp``); empty where the states are the user vectors without
  parameters (every competitor: one state, or ComiRec's best-matching interest).
* ``zero_shot_scores(states, items, scorer)``: scores ``[B, C]`` using no target row.
* ``pretrain_losses(table, batch, tau, gamma)``: the losses of one pre-training batch of user-entity
  pairs (A.3, entity-oriented). ``"total"`` is minimised; ``"et"``, the binary cross-entropy of the
  user-entity pairs, is the held-out criterion every model is chosen by.
* ``patch_parameters()``: parameters besides the head that fine-tuning trains (empty: the encoder
  stays frozen, the lightweight mode of Sec. 4.5).

:class:`SourceContext` is what a competitor may know when it is built: id-space sizes and the
pre-training split's positive user-entity and user-item pairs (graph models build their graph from
it). No target-domain row and no source row at or after the pre-training cut-off is in it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from peace.config import PeaceConfig


@dataclass
class SourceContext:
    """What a model may be built from: sizes and the pre-training split's positive pairs.

    Attributes:
        num_entities: |E|; entity ids are ``0..|E|-1`` and ``|E|`` is the padding id.
        num_users: users of the dataset (ids ``0..U-1``).
        num_items: items of the dataset (ids ``0..I-1``; target items are never in ``user_items``).
        num_relations: relation types of the entity graph.
        sequence_length: L, entity tokens of a user history (|S| * H).
        history_length: H, entity tokens per source domain (None: one block of L).
        item_entities: ``[I, 3]`` entity ids of every item (phi), -1 where absent.
        user_entities: ``[P, 2]`` distinct (user, entity) pairs of positive pre-training records.
        user_items: ``[Q, 2]`` distinct (user, item) pairs of positive pre-training records.
        triplets: ``[T, 3]`` head, relation, tail of the entity graph.
    """

    num_entities: int
    num_users: int
    num_items: int
    num_relations: int
    sequence_length: int
    item_entities: np.ndarray
    user_entities: np.ndarray
    user_items: np.ndarray
    triplets: np.ndarray
    history_length: int | None = None

    @property
    def pad(self) -> int:
        return self.num_entities


class TransferModel(nn.Module):
    """Base class of the competitors: defaults for a model with one vector per user.

    Subclasses implement :meth:`encoder_table` and :meth:`encode_users`; the rest has defaults:
    inner products, and pre-training by the entity-oriented loss alone (A.3).
    """

    #: the name in result tables
    display_name: str = ""
    #: the paper whose method the model follows
    reference: str = ""

    def encoder_table(self, graph: object | None = None) -> Tensor:
        raise NotImplementedError

    def encode_users(self, table: Tensor, users: Tensor, tokens: Tensor, mask: Tensor) -> Tensor:
        raise NotImplementedError

    def pretrain_losses(
        self, table: Tensor, batch: object, tau: float, gamma: float
    ) -> dict[str, Tensor]:
        """The entity-oriented loss of the batch's users alone (``"total"`` is ``"et"``)."""
        loss = entity_loss(
            self.encode_users(table, batch.users, batch.tokens, batch.mask), table, batch
        )
        return {"et": loss, "total": loss}

    def user_vectors(
        self, states: Tensor, items: Tensor, parts: nn.ModuleDict | None = None
    ) -> Tensor:
        """``[B, d]`` states -> ``[B, C, d]``, the same vector for every candidate."""
        return states.unsqueeze(1).expand(-1, items.shape[1], -1)

    def user_parts(self) -> nn.ModuleDict:
        """Nothing: :meth:`user_vectors` has no parameters to fine-tune."""
        return nn.ModuleDict()

    def zero_shot_scores(self, states: Tensor, items: Tensor, scorer: str = "inner") -> Tensor:
        """Inner product of user and item vectors ``[B, C]`` (``scorer`` is PEACE's switch)."""
        return (self.user_vectors(states, items) * items).sum(-1)

    def patch_parameters(self) -> list[nn.Parameter]:
        return []


def entity_loss(users: Tensor, table: Tensor, batch: object) -> Tensor:
    """Entity-oriented binary cross-entropy with inner-product logits (A.3, as Eq. 4).

    ``users`` is ``[B, d]`` or ``[B, C, d]``; ``batch.targets`` ``[B, C]`` indexes ``table``.
    """
    targets = F.embedding(batch.targets, table)  # [B, C, d]
    if users.dim() == 2:
        users = users.unsqueeze(1)
    logits = (users * targets).sum(-1)
    valid = batch.valid
    return F.binary_cross_entropy_with_logits(logits[valid], batch.labels[valid])


def info_nce(a: Tensor, b: Tensor, tau: float) -> Tensor:
    """InfoNCE between matching rows of ``a`` and ``b`` ``[N, d]`` (cosine, temperature tau)."""
    a, b = F.normalize(a, dim=-1), F.normalize(b, dim=-1)
    logits = a @ b.T / tau
    return F.cross_entropy(logits, torch.arange(len(a), device=a.device))


def left_align(tokens: Tensor, mask: Tensor, pad: int) -> tuple[Tensor, Tensor]:
    """Move every row's real tokens to the right end, in their order (sequence models).

    The history concatenates one left-padded block per source domain; a sequential model reads
    the user's tokens as one sequence, domain blocks in domain order, ending at the last position.
    """
    order = torch.sort(mask.to(torch.int8), dim=1, stable=True).indices
    tokens = torch.gather(tokens, 1, order)
    mask = torch.gather(mask, 1, order)
    return torch.where(mask, tokens, torch.full_like(tokens, pad)), mask


class RecentWindow:
    """The last ``per_domain`` tokens of every source domain's block of a history.

    Self-attentive sequence encoders cost a multiple of L^2 per record; they read this window
    (``length`` = |S| * per_domain tokens) where PEACE reads all H tokens per domain. Calling the
    window maps ``tokens, mask`` ``[B, |S| * H]`` to ``[B, length]``.
    """

    def __init__(self, ctx: SourceContext, per_domain: int) -> None:
        block = ctx.history_length or ctx.sequence_length
        self.domains = max(ctx.sequence_length // max(block, 1), 1)
        self.per_domain = min(per_domain, block)
        self.length = self.domains * self.per_domain

    def __call__(self, tokens: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        b = tokens.shape[0]

        def cut(x: Tensor) -> Tensor:
            return x.reshape(b, self.domains, -1)[:, :, -self.per_domain :].reshape(b, -1)

        return cut(tokens), cut(mask)


class TokenEmbedding(nn.Module):
    """Entity id embeddings ``[|E| + extra + 1, d]`` whose padding row ``|E|`` stays zero.

    ``extra`` special tokens (e.g. BERT4Rec's [MASK]) get ids ``|E| + 1 ..``. The encoder table is
    rows ``0..|E|`` (entities and padding).
    """

    def __init__(self, num_entities: int, dim: int, extra: int = 0) -> None:
        super().__init__()
        self.num_entities = num_entities
        self.weight = nn.Parameter(torch.empty(num_entities + 1 + extra, dim))
        nn.init.normal_(self.weight, std=0.1)
        with torch.no_grad():
            self.weight[num_entities].zero_()

    def table(self) -> Tensor:
        keep = torch.ones(len(self.weight), 1)
        keep[self.num_entities] = 0.0
        return self.weight * keep  # padding row exactly zero, with no gradient

    def forward(self, tokens: Tensor) -> Tensor:
        return F.embedding(tokens, self.table())


def build_context(
    ds: object,
    cfg: PeaceConfig,
    users: np.ndarray,
    items: np.ndarray,
    labels: np.ndarray,
    sequence_length: int,
) -> SourceContext:
    """A :class:`SourceContext` from the pre-training records (users, items, labels)."""
    pos = labels > 0
    ui = np.unique(np.stack([users[pos], items[pos]], 1), axis=0).astype(np.int64)
    ents = ds.item_entities[ui[:, 1]]  # [Q, 3]
    rep = np.repeat(ui[:, 0], ents.shape[1])
    flat = ents.reshape(-1)
    keep = flat >= 0
    ue = np.unique(np.stack([rep[keep], flat[keep]], 1), axis=0).astype(np.int64)
    return SourceContext(
        num_entities=ds.num_entities,
        num_users=ds.num_users,
        num_items=ds.num_items,
        num_relations=ds.num_relations,
        sequence_length=sequence_length,
        history_length=cfg.model.history_length,
        item_entities=np.asarray(ds.item_entities, dtype=np.int64),
        user_entities=ue.reshape(-1, 2),
        user_items=ui.reshape(-1, 2),
        triplets=np.asarray(ds.triplets, dtype=np.int64),
    )

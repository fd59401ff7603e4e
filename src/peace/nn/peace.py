"""The PEACE network (Sec. 4, Figure 2): entity encoder, user encoder, prototypes, decoder.

* H^G from the entity encoder (graph attention, Sec. 4.1).
* Interests z^A from the user's entity sequences (Eq. 1), optionally prototype-enhanced for each
  target entity (Eq. 8-9), fused into the user vector (Eq. 2).
* Eq. 3, the pre-training decoder:    y^_ue = sigma( MLP(z_u || h_e) )
  (``model.decoder_interactions``: MLP(z_u || h_e || z_u * h_e || z_u . h_e))
* Eq. 4, entity-oriented loss:        L_ET = sum C(y_ue, y^_ue)     (binary cross-entropy)
* Eq. 7, contrastive prototype loss   (see :mod:`peace.nn.prototypes`)
* Eq. 10, the pre-training objective: L = L_ET + gamma * L_CP (+ lambda * L_served, a switch)

L_served trains the score the zero-shot ranker serves (Sec. 4.4, DESIGN.md decision 8): the inner
product of the universal encoding z_u (Eq. 2) and the item vector z_i (the mean of the item's
entity vectors, footnote 4), as a softmax over the record's source-domain catalogue or as binary
cross-entropy on the record's item and its negatives (``pretrain.served_loss``).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from peace.config import ModelConfig
from peace.nn.enhanced import ItemKeys, enhanced_user_vectors, item_keys
from peace.nn.entity_encoder import EntityEncoder, EntityGraph
from peace.nn.mlp import MLP
from peace.nn.prototypes import Prototypes
from peace.nn.user_encoder import AttentiveFusion, InterestExtractor


def item_vectors(entity_table: Tensor, item_entities: Tensor) -> Tensor:
    """z_i: mean of the item's entity vectors (Sec. 4.4, footnote 4); ``[..., 3] -> [..., d]``.

    ``item_entities`` holds entity rows of ``entity_table``, -1 where an item has fewer entities.
    """
    valid = (item_entities >= 0).unsqueeze(-1).to(entity_table.dtype)
    # F.embedding rather than indexing: its backward sums each row's gradient in one fixed order
    # on any number of threads (indexing's backward adds repeated rows atomically across threads,
    # so two runs of the same seed would differ).
    vecs = F.embedding(item_entities.clamp(min=0), entity_table) * valid
    return vecs.sum(-2) / valid.sum(-2).clamp(min=1.0)


def decoder_input(users: Tensor, targets: Tensor, interactions: bool = False) -> Tensor:
    """What Eq. 3's MLP reads: ``z_u || h_e``, with ``interactions`` also ``z_u * h_e`` and
    ``z_u . h_e`` (``model.decoder_interactions``); ``[*, d], [*, d] -> [*, 2d or 3d + 1]``."""
    parts = [users, targets]
    if interactions:
        product = users * targets
        parts += [product, product.sum(-1, keepdim=True)]
    return torch.cat(parts, dim=-1)


def decoder_width(dim: int, interactions: bool = False) -> int:
    """Input width of Eq. 3's MLP (:func:`decoder_input`)."""
    return 3 * dim + 1 if interactions else 2 * dim


@dataclass
class SourceCatalogue:
    """The source items as the served score sees them, for the softmax of L_served.

    entities: ``[I_S, 3]`` entity rows of every source item (-1 = none);
    domain_mask: ``[|S|, I_S]`` True where the item belongs to that source domain;
    column: ``[I]`` column of each item in ``entities`` (-1 for target items);
    drawn: ``[I_S]`` for a step's sample of the catalogue (:func:`peace.flows.records.draw_catalogue`):
    True for the items drawn uniformly, False for those present only as some record's positive;
    None for the whole catalogue.
    """

    entities: Tensor
    domain_mask: Tensor
    column: Tensor
    drawn: Tensor | None = None


@dataclass
class PretrainBatch:
    """One batch of pre-training records, each expanded to C user-entity pairs.

    tokens/mask: ``[B, L]`` history entity ids (padding = |E|) and validity.
    targets: ``[B, C]`` target entity ids (padding = |E|); labels ``[B, C]`` in {0, 1};
    valid: ``[B, C]`` True for real pairs.
    users: ``[B]`` user ids of the records (read by the graph-based competitors).
    items: ``[B, 1 + neg]`` the record's item and its negatives; item_labels/item_valid the same
    shape; domains: ``[B]`` source-domain position of each record (read by L_served).
    """

    tokens: Tensor
    mask: Tensor
    targets: Tensor
    labels: Tensor
    valid: Tensor
    users: Tensor | None = None
    items: Tensor | None = None
    item_labels: Tensor | None = None
    item_valid: Tensor | None = None
    domains: Tensor | None = None


class PEACE(nn.Module):
    """Prototype lEarning Augmented transferable framework for Cross-domain rEcommendation.

    Args:
        num_entities: |E|.
        num_edge_types: relation types of the message-passing graph.
        config: sizes and ablation switches.
        feature_dim: width of original entity features, or None for learned id embeddings.
    """

    def __init__(
        self,
        num_entities: int,
        num_edge_types: int,
        config: ModelConfig,
        feature_dim: int | None = None,
    ) -> None:
        super().__init__()
        self.config = config
        d = config.dim
        self.entity_encoder = EntityEncoder(
            num_entities,
            num_edge_types if config.use_relation_types else 0,
            dim=d,
            layers=config.gnn_layers,
            heads=config.gat_heads,
            feature_dim=feature_dim,
            use_graph=config.use_graph,
            dropout=config.dropout,
            inductive=config.inductive_entities,
            degree_buckets=config.degree_buckets,
            residual=config.gnn_residual,
            unseen=config.unseen_entities,
            input_dropout=config.entity_dropout,
        )
        self.interests = InterestExtractor(
            d,
            config.n_interests,
            config.attention_dim,
            recency=config.history_length if config.recency else 0,
            attentive=config.interest_attention,
        )
        self.fusion = AttentiveFusion(d, config.attention_dim, config.user_prior)
        self.prototypes = Prototypes(
            d, config.n_prototypes, config.top_k_prototypes, config.mlp_hidden
        )
        width = decoder_width(d, config.decoder_interactions)
        self.decoder = MLP(width, config.mlp_hidden, 1, config.dropout)

    # ------------------------------------------ the interface of peace.baselines.base
    def encoder_table(self, graph: EntityGraph) -> Tensor:
        """H^G, ``[|E| + 1, d]`` (last row = padding)."""
        return self.entity_encoder(graph)

    def encode_users(self, table: Tensor, users: Tensor, tokens: Tensor, mask: Tensor) -> Tensor:
        """User states are the interests of Eq. 1, ``[B, M, d]``."""
        return self.encode_interests(table, tokens, mask)

    def patch_parameters(self) -> list[nn.Parameter]:
        return []

    def user_parts(self) -> nn.ModuleDict:
        """Trainable copies of what :meth:`user_vectors` applies to the interests: Eq. 9's MLP
        (with the prototypes P, which stay frozen: they choose Eq. 8's mask and the served
        items' keys) and Eq. 2's attention. A normal ranker fine-tunes them with its head
        (``finetune.tune_user_mlp``, the "MLP based components" of Sec. 4.5)."""
        prototypes, fusion = copy.deepcopy(self.prototypes), copy.deepcopy(self.fusion)
        prototypes.requires_grad_(False)
        prototypes.enhance_mlp.requires_grad_(True)
        fusion.requires_grad_(True)
        return nn.ModuleDict({"prototypes": prototypes, "fusion": fusion})

    # ------------------------------------------------------------ encoders
    def encode_interests(self, entity_table: Tensor, tokens: Tensor, mask: Tensor) -> Tensor:
        """Eq. 1 on the concatenated source-domain sequences: ``[B, L] -> [B, M, d]``."""
        return self.interests.forward_tokens(entity_table, tokens, mask)

    def user_vectors(
        self,
        interests: Tensor,
        targets: Tensor,
        parts: nn.ModuleDict | None = None,
        keys: ItemKeys | None = None,
    ) -> Tensor:
        """User vectors for C targets each: Eq. 8-9 then Eq. 2 (Eq. 2 alone without PEA).

        Args:
            interests: ``[B, M, d]``.
            targets: ``[B, C, d]`` target entity (or item) vectors.
            parts: other ``prototypes`` and ``fusion`` to use in place of the model's own (a
                normal ranker's fine-tuned copies, :meth:`user_parts`).
            keys: the targets' top-K prototypes ``[B, C, K]`` (:meth:`target_keys`; computed
                here when None).

        Returns:
            ``[B, C, d]``.
        """
        prototypes, fusion = self.prototypes, self.fusion
        if parts is not None:
            prototypes, fusion = parts["prototypes"], parts["fusion"]
        if not self.config.use_pea:
            z = fusion(interests)  # Eq. 2
            return z.unsqueeze(1).expand(-1, targets.shape[1], -1)
        # Eq. 8-9 on each target's K kept prototypes, then Eq. 2 on {z^^A} (equal to
        # fusion(prototypes.enhance(...)) up to float rounding, and cheaper).
        return enhanced_user_vectors(prototypes, fusion, interests, targets, keys)

    def target_keys(self, targets: Tensor, parts: nn.ModuleDict | None = None) -> ItemKeys | None:
        """Each target's top-K prototypes (Eq. 5 and 8) ``[*, K]``, which depend on P and the
        target alone: what a caller whose P and targets stay fixed computes once and hands to
        :meth:`user_vectors` (None without PEA, which reads none)."""
        if not self.config.use_pea:
            return None
        return item_keys(self.prototypes if parts is None else parts["prototypes"], targets)

    def universal(self, interests: Tensor) -> Tensor:
        """Eq. 2 on the plain interests: the target-independent universal encoding z_u."""
        return self.fusion(interests)

    # Eq. 3
    def decode(self, users: Tensor, targets: Tensor) -> Tensor:
        """Logit of y^_ue = sigma(MLP(z_u || h_e)); shapes ``[*, d], [*, d] -> [*]``.

        With ``model.decoder_interactions`` the MLP also reads z_u * h_e and z_u . h_e."""
        pair = decoder_input(users, targets, self.config.decoder_interactions)
        return self.decoder(pair).squeeze(-1)

    def zero_shot_scores(self, interests: Tensor, items: Tensor, scorer: str = "inner") -> Tensor:
        """Zero-shot ranker (Sec. 4.4): ``[B, M, d]`` users x ``[B, C, d]`` items -> ``[B, C]``.

        ``inner``: inner product of the universal encoding z_u (Eq. 2 over the interests of
        Eq. 1, which live in the entity space) and the item vector z_i, as the paper serves it;
        ``inner-enhanced``: inner product with the prototype-enhanced user vector (Eq. 9, whose
        MLP leaves the entity space); ``decoder``: the pre-training decoder of Eq. 3 on the pair.
        """
        if scorer == "inner":
            return (self.universal(interests).unsqueeze(1) * items).sum(-1)
        users = self.user_vectors(interests, items)
        if scorer == "decoder":
            return self.decode(users, items)
        return (users * items).sum(-1)

    # -------------------------------------------------------------- losses
    def pretrain_losses(
        self,
        entity_table: Tensor,
        batch: PretrainBatch,
        tau: float,
        gamma: float,
        served: str = "none",
        served_weight: float = 1.0,
        catalogue: SourceCatalogue | None = None,
        universal_weight: float = 0.0,
        enhanced_weight: float = 1.0,
    ) -> dict[str, Tensor]:
        """Eq. 4, Eq. 7, L_served and their sum Eq. 10 for one batch (means over pairs).

        With ``universal_weight > 0`` (and PEA on), Eq. 4 on the same pairs scored with the
        universal encoding z_u in place of the enhanced user vector is added with that weight
        (``"uni"``; ``pretrain.universal_weight``). With PEA on, Eq. 4 on the enhanced vector
        enters Eq. 10 with ``enhanced_weight`` (``pretrain.enhanced_weight``).
        """
        interests = self.encode_interests(entity_table, batch.tokens, batch.mask)
        targets = F.embedding(batch.targets, entity_table)  # [B, C, d]
        users = self.user_vectors(interests, targets)
        logits = self.decode(users, targets)
        valid = batch.valid
        loss_et = F.binary_cross_entropy_with_logits(logits[valid], batch.labels[valid])  # Eq. 4
        weight = enhanced_weight if self.config.use_pea else 1.0
        losses = {"et": loss_et, "total": weight * loss_et}
        if universal_weight > 0 and self.config.use_pea:
            plain = self.universal(interests).unsqueeze(1).expand_as(targets)
            loss_uni = F.binary_cross_entropy_with_logits(
                self.decode(plain, targets)[valid], batch.labels[valid]
            )  # Eq. 4 on z_u
            losses["uni"] = loss_uni
            losses["total"] = losses["total"] + universal_weight * loss_uni
        if self.config.use_cpl and gamma > 0:
            distinct = torch.unique(batch.targets[valid])
            loss_cp = self.prototypes.contrastive_loss(entity_table[distinct], tau)  # Eq. 7
            losses["cp"] = loss_cp
            losses["total"] = losses["total"] + gamma * loss_cp  # Eq. 10
        if served != "none" and served_weight > 0:
            loss_ip = served_loss(self.universal(interests), entity_table, batch, served, catalogue)
            losses["ip"] = loss_ip
            losses["total"] = losses["total"] + served_weight * loss_ip
        return losses


def served_loss(
    users: Tensor,
    entity_table: Tensor,
    batch: PretrainBatch,
    kind: str,
    catalogue: SourceCatalogue | None,
) -> Tensor:
    """L_served: the zero-shot score z_u . z_i trained directly (see the module docstring).

    Args:
        users: ``[B, d]`` universal encodings.
        entity_table: the entity rows ``batch`` and ``catalogue`` index.
        batch: needs ``items``, ``item_labels``, ``item_valid`` and (softmax) ``domains``.
        kind: ``"softmax"`` or ``"bce"``.
        catalogue: the source catalogue (softmax only).
    """
    if batch.items is None or batch.item_labels is None or batch.item_valid is None:
        raise ValueError("L_served needs the batch's items; build batches with their items.")
    if kind == "bce":
        if catalogue is None:
            raise ValueError("L_served needs the source catalogue (item -> entities).")
        ents = catalogue.entities[catalogue.column[batch.items]]  # [B, C, 3]
        scores = (users.unsqueeze(1) * item_vectors(entity_table, ents)).sum(-1)
        keep = batch.item_valid
        return F.binary_cross_entropy_with_logits(scores[keep], batch.item_labels[keep])
    if kind != "softmax":
        raise ValueError(f"served loss {kind!r}: expected none, softmax or bce.")
    if catalogue is None or batch.domains is None:
        raise ValueError("the softmax of L_served needs the source catalogue and record domains.")
    positive = batch.item_valid[:, 0] & (batch.item_labels[:, 0] > 0)
    if not bool(positive.any()):
        return users.sum() * 0.0
    z = users[positive]
    vectors = item_vectors(entity_table, catalogue.entities)  # [I_S, d]
    logits = z @ vectors.T
    allowed = catalogue.domain_mask[batch.domains[positive]]
    target = catalogue.column[batch.items[positive, 0]]
    if catalogue.drawn is not None:
        # A sampled softmax: each record's own item against the uniformly drawn items of its
        # domain. Other records' positives are not uniform draws (they follow popularity), so
        # they are left out unless drawn; a uniform draw needs no log-Q correction.
        own = torch.zeros_like(allowed)
        own[torch.arange(len(target), device=target.device), target] = True
        allowed = allowed & (catalogue.drawn.unsqueeze(0) | own)
    logits = logits.masked_fill(~allowed, float("-inf"))
    return F.cross_entropy(logits, target)

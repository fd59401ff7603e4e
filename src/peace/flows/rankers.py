"""Rankers of a target domain, all behind one small interface.

A ranker scores (user, item) pairs of one target domain's catalogue:

* ``states(users, times)``: what the ranker knows of each user at a time (e.g. the interest
  vectors of Eq. 1 from source behaviour strictly before that time), or None; with
  ``finetune.target_history`` a :class:`WithRecent` that adds the user's earlier target items;
* ``forward(users, states, items)``: logits ``[B, C]`` for local item columns ``[B, C]``;
* ``trainable``: whether :func:`peace.flows.finetune.fit_ranker` should train it.

:class:`PeaceRanker` is the normal ranker (Eq. 11), :class:`ZeroShotRanker` the zero-shot one
(inner product, Sec. 4.4); :class:`DeepFMRanker` and :class:`PopularityRanker` are the references.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from peace.config import PeaceConfig
from peace.data.dataset import Dataset
from peace.data.history import HistoryIndex, RecentItems
from peace.flows.pretrained import Pretrained
from peace.nn.deepfm import DeepFM
from peace.nn.enhanced import ItemKeys
from peace.nn.heads import FineTuneHead
from peace.nn.peace import PEACE, item_vectors
from peace.utils import seeded


class TargetDomain:
    """A target domain's catalogue and profile codes, with local item columns 0..I-1."""

    def __init__(self, ds: Dataset, domain: int) -> None:
        self.domain = domain
        self.name = ds.domains[domain]
        self.catalogue = ds.domain_items(domain)
        self.column = np.full(ds.num_items, -1, dtype=np.int64)
        self.column[self.catalogue] = np.arange(len(self.catalogue))
        n_users = ds.num_users
        up = ds.user_profiles
        self.user_codes = torch.as_tensor(up.codes if up else np.zeros((n_users, 0), np.int64))
        user_cards = list(up.cardinalities) if up else []
        ip = ds.item_profiles
        item_codes = ip.codes[self.catalogue] if ip else np.zeros((len(self.catalogue), 0))
        # The item id is a field too (A.3: "item-side attributes contain item id").
        local_id = np.arange(1, len(self.catalogue) + 1)[:, None]
        self.item_codes = torch.as_tensor(np.hstack([item_codes, local_id]).astype(np.int64))
        self.cardinalities = (
            user_cards + (list(ip.cardinalities) if ip else []) + [len(self.catalogue) + 1]
        )
        self.item_entities = torch.as_tensor(ds.item_entities[self.catalogue], dtype=torch.long)
        self.num_users = n_users
        self.recent_items: RecentItems | None = None
        self.history_gap = 0.0

    @property
    def item_id_field(self) -> int:
        """The field of the local item id (the last one), which the user history shares."""
        return len(self.cardinalities) - 1

    def remember(self, rows: pd.DataFrame, length: int, gap: float = 0.0) -> None:
        """Keep the positives of ``rows`` (the training split) as the users' domain history:
        :meth:`recent` then answers with each user's last ``length`` of them more than ``gap``
        seconds before a time."""
        if not gap >= 0:
            raise ValueError(
                f"finetune.target_history_gap = {gap!r}: expected seconds >= 0, e.g. 86400 (a day)."
            )
        self.history_gap = float(gap)
        pos = rows[rows["label"] == 1]
        codes = self.to_local(pos["item"].to_numpy()) + 1  # the item-id field's codes
        self.recent_items = RecentItems(
            pos["user"].to_numpy(), pos["timestamp"].to_numpy(), codes, length, self.num_users
        )

    def recent(self, users: np.ndarray, times: np.ndarray) -> Tensor | None:
        """``[B, L]`` item-id codes of each user's remembered items before ``times`` (0 pads);
        None when nothing is remembered."""
        if self.recent_items is None:
            return None
        return self.recent_items.lookup(users, np.asarray(times, np.float64) - self.history_gap)

    def codes(self, users: Tensor, items: Tensor) -> Tensor:
        """Profile codes ``[B, C, F]`` of user-item pairs (users ``[B]``, items ``[B, C]``)."""
        u = self.user_codes[users].unsqueeze(1).expand(-1, items.shape[1], -1)
        return torch.cat([u, self.item_codes[items]], dim=-1)

    def to_local(self, items: np.ndarray) -> np.ndarray:
        return self.column[items]


@dataclass(frozen=True)
class WithRecent:
    """A ranker's per-row states together with each row's earlier target items ``[N, L]``;
    indexed by rows as a tensor is."""

    states: Tensor | None
    recent: Tensor

    def __getitem__(self, rows) -> WithRecent:
        return WithRecent(None if self.states is None else self.states[rows], self.recent[rows])

    def __len__(self) -> int:
        return len(self.recent)


def with_recent(target: TargetDomain, users, times, states: Tensor | None):
    """``states`` with the target's remembered items of each (user, time), when it has any."""
    recent = target.recent(users, times)
    return states if recent is None else WithRecent(states, recent)


def split_recent(states) -> tuple[Tensor | None, Tensor | None]:
    """``(states, recent items or None)`` of what :func:`with_recent` returned."""
    if isinstance(states, WithRecent):
        return states.states, states.recent
    return states, None


def bag_field(target: TargetDomain, cfg: PeaceConfig) -> int | None:
    """The DeepFM field the user's target history shares (``finetune.target_history``)."""
    return target.item_id_field if cfg.finetune.target_history > 0 else None


class PeaceRanker(nn.Module):
    """The normal ranker: Eq. 11 on frozen (default) or trainable pre-trained encoders.

    Serves PEACE and every pre-trained competitor alike (footnote 6: the same DeepFM head on
    each model's user and item vectors). A competitor with fine-tuning patches (PeterRec) keeps its
    backbone frozen and trains the patches with the head.

    ``prior`` is the zero-shot score's ``(weight, source-entity prior)`` (as for
    :class:`ZeroShotRanker`): with ``finetune.affinity = "zero-shot"`` the head's zero-shot
    score is the zero-shot ranker's (the mean over the run's evaluated states plus the weighted
    prior) instead of the kept state's z_u . z_i; with ``"inner-prior"`` the kept state's z_u .
    z_i plus the weighted prior.
    """

    trainable = True

    def __init__(
        self,
        pre: Pretrained,
        target: TargetDomain,
        cfg: PeaceConfig,
        prior: tuple[float, Tensor | None] = (0.0, None),
    ) -> None:
        super().__init__()
        self.pre, self.target = pre, target
        fc = cfg.finetune
        with seeded(cfg.seed):  # the head's start depends on the seed, not on earlier models
            self.head = FineTuneHead(
                cfg.model.dim,
                target.cardinalities,
                cfg.model.mlp_hidden,
                fc.fm_dim,
                fc.deepfm_hidden,
                fc.interaction_features,
                fc.user_dropout,
                bag_field(target, cfg),
            )
        self.frozen = fc.freeze_encoders
        if self.frozen:
            self.pre.model.requires_grad_(False)
        else:  # its own copy to adapt: the run's weights serve other domains and zero-shot
            pre = dataclasses.replace(pre, model=copy.deepcopy(pre.model))
            pre.model.requires_grad_(True)
            self.pre = pre
        patches = pre.model.patch_parameters()
        for p in patches:
            p.requires_grad_(True)
        # Precomputed states when nothing of the encoder trains; otherwise per batch.
        self.precomputed = self.frozen and not patches
        if self.precomputed:
            self._table = pre.entity_table()
            self._items = item_vectors(self._table, target.item_entities)
        else:
            self.encoder = pre.model  # registered, so its trainable parameters train too
        # finetune.tune_user_mlp: trainable copies of what the model applies to its user states
        # per candidate (PEACE: Eq. 9's MLP and Eq. 2's attention; the competitors have none).
        self.user_parts: nn.ModuleDict | None = None
        self._keys: ItemKeys | None = None
        if fc.tune_user_mlp and self.precomputed:
            parts = pre.model.user_parts()
            self.user_parts = parts if len(parts) else None
            if self.user_parts is not None and isinstance(pre.model, PEACE):
                # P and the item vectors stay fixed: Eq. 8's keys once per catalogue item
                self._keys = pre.model.target_keys(self._items, self.user_parts)
        self.frozen_inputs = self.precomputed and self.user_parts is None
        """Whether the head's inputs stay fixed while it trains (:class:`PairMemo` keeps them)."""
        # The zero-shot ranker's score as the head's affinity; where it equals z_u . z_i of the
        # kept state (no states kept, no prior: every competitor) the head computes that itself.
        self.zero_shot: ZeroShotRanker | None = None
        scored = pre if fc.affinity == "zero-shot" else dataclasses.replace(pre, states=[])
        if fc.interaction_features and fc.affinity != "inner" and (scored.states or prior[0]):
            if not self.precomputed:
                raise ValueError(
                    f'finetune.affinity = "{fc.affinity}" needs frozen encoders '
                    '(finetune.freeze_encoders = true); set finetune.affinity = "inner" to '
                    "fine-tune the encoders."
                )
            self.zero_shot = ZeroShotRanker(scored, target, "inner", *prior)

    def states(self, users: np.ndarray, times: np.ndarray) -> Tensor | WithRecent:
        """The user states of Eq. 1 ``[B, M, d]`` (with ``finetune.affinity = "zero-shot"``
        followed by the zero-shot ranker's states ``[B, S, d]``: ``[B, M + S, d]``), or the
        history positions when the encoders train."""
        if self.precomputed:
            own = self.pre.interests(users, times, self._table)
            if self.zero_shot is not None:
                own = torch.cat([own, self.zero_shot.states(users, times)], 1)
        else:
            own = torch.as_tensor(self.pre.history.positions(users, times))
        return with_recent(self.target, users, times, own)

    def _states_and_items(self, users: Tensor, states: Tensor) -> tuple[Tensor, Tensor]:
        if self.precomputed:
            return states, self._items
        table = self.pre.model.encoder_table(self.pre.graph)
        tokens, mask = self.pre.history.gather(states)
        encoded = self.pre.model.encode_users(table, users, tokens, mask)
        return encoded, item_vectors(table, self.target.item_entities)

    def forward(self, users: Tensor, states: Tensor | WithRecent, items: Tensor) -> Tensor:
        return self.head(*self.pair_inputs(users, states, items))

    def pair_inputs(self, users: Tensor, states: Tensor | WithRecent, items: Tensor) -> tuple:
        """What Eq. 11's head reads for each (user, item) pair: the user vectors of Eq. 8-9 and
        Eq. 2, the item vectors, the DeepFM codes, the zero-shot score and the target history.
        With frozen encoders (``precomputed``) none of it changes while the head trains."""
        states, recent = split_recent(states)
        zero_shot = None
        if self.zero_shot is not None:
            m = self.pre.config.model.n_interests
            states, zero_shot = states[:, :m], states[:, m:]
        encoded, all_items = self._states_and_items(users, states)
        item_vecs = all_items[items]
        if self.user_parts is not None:  # Eq. 8-9 then Eq. 2 with the head's own copies
            if self._keys is None:
                user_vecs = self.pre.model.user_vectors(encoded, item_vecs, self.user_parts)
            else:
                keys = self._keys.take(items)
                user_vecs = self.pre.model.user_vectors(encoded, item_vecs, self.user_parts, keys)
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.precomputed):
            if self.user_parts is None:
                user_vecs = self.pre.model.user_vectors(encoded, item_vecs)
            affinity = None
            if zero_shot is not None:  # the zero-shot ranker's score (finetune.affinity)
                affinity = self.zero_shot(users, zero_shot, items)
            elif self.head.interactions:  # the zero-shot score, z_u . z_i (Sec. 4.4)
                affinity = self.pre.model.zero_shot_scores(encoded, item_vecs, "inner")
        codes = self.target.codes(users, items)
        return user_vecs, item_vecs, codes, affinity, recent

    def train(self, mode: bool = True) -> PeaceRanker:
        super().train(mode)
        if self.frozen:
            self.pre.model.eval()
        return self


class ZeroShotRanker(nn.Module):
    """Zero-shot ranker: inner product of user and item vectors; no target row is used.

    With ``prior_weight`` w != 0 (``eval.zero_shot_prior``) the score is ``score(u, i) + w *
    prior(i)``, prior(i) the item's source-entity prior (:func:`item_prior` of
    ``entity_prior``, from :func:`source_entity_prior`). A run that kept its evaluated states
    (``eval.zero_shot_states = "evaluated"``) is scored by the mean of score(u, i) over them.
    With ``profile = (w_p, profile prior)`` (``eval.zero_shot_profile_prior``) it adds ``w_p *
    profile_prior(i)`` as well (:func:`source_profile_prior`, indexed by global item id).

    For PEACE's ``inner`` score the states are the universal vectors z_u of Eq. 2, ``[B, S,
    d]``, computed once per user state (the score is z_u . z_i); otherwise the interests of Eq.
    1, ``[B, S, M, d]``.
    """

    trainable = False

    def __init__(
        self,
        pre: Pretrained,
        target: TargetDomain,
        scorer: str = "inner",
        prior_weight: float = 0.0,
        entity_prior: Tensor | None = None,
        profile: tuple[float, Tensor | None] = (0.0, None),
    ) -> None:
        super().__init__()
        self.pre, self.target, self.scorer = pre, target, scorer
        self._members = pre.state_models() if pre.states else [pre]
        self._tables = [m.entity_table() for m in self._members]
        self._items = [item_vectors(t, target.item_entities) for t in self._tables]
        self._universal = scorer == "inner" and all(
            isinstance(m.model, PEACE) for m in self._members
        )
        self._bias: Tensor | None = None
        if prior_weight != 0.0:
            if entity_prior is None:
                raise ValueError("a zero-shot prior weight needs the source-entity prior.")
            self._bias = prior_weight * item_prior(entity_prior, target.item_entities)
        profile_weight, profile_prior = profile
        if profile_weight != 0.0:
            if profile_prior is None:
                raise ValueError("a zero-shot profile weight needs the source profile prior.")
            term = profile_weight * profile_prior[torch.as_tensor(target.catalogue)]
            self._bias = term if self._bias is None else self._bias + term

    @property
    def n_states(self) -> int:
        """S: the states whose scores are averaged (1: the kept state alone)."""
        return len(self._members)

    @torch.no_grad()
    def states(self, users: np.ndarray, times: np.ndarray) -> Tensor:
        """Each state's z_u ``[B, S, d]`` or interests ``[B, S, M, d]`` (S = 1 for the kept
        state alone)."""
        out = []
        for m, t in zip(self._members, self._tables, strict=True):
            z = m.interests(users, times, t)
            out.append(m.model.universal(z) if self._universal else z)
        return torch.stack(out, 1)

    @torch.no_grad()
    def forward(self, users: Tensor, states: Tensor, items: Tensor) -> Tensor:
        if self._universal:  # PEACE.zero_shot_scores(..., "inner") from the stored z_u
            scores = sum(
                (states[:, k].unsqueeze(1) * self._items[k][items]).sum(-1)
                for k in range(len(self._members))
            )
        else:
            scores = sum(
                m.model.zero_shot_scores(states[:, k], self._items[k][items], self.scorer)
                for k, m in enumerate(self._members)
            )
        scores = scores / len(self._members)
        return scores if self._bias is None else scores + self._bias[items]


class DeepFMRanker(nn.Module):
    """Reference: DeepFM on the target domain's profile features alone (Sec. 5.1.2)."""

    trainable = True

    def __init__(self, target: TargetDomain, cfg: PeaceConfig) -> None:
        super().__init__()
        self.target = target
        with seeded(cfg.seed):
            self.deepfm = DeepFM(
                target.cardinalities,
                cfg.finetune.fm_dim,
                cfg.finetune.deepfm_hidden,
                bag_field(target, cfg),
            )

    def states(self, users: np.ndarray, times: np.ndarray) -> WithRecent | None:
        return with_recent(self.target, users, times, None)

    def forward(self, users: Tensor, states: WithRecent | None, items: Tensor) -> Tensor:
        return self.deepfm(self.target.codes(users, items), split_recent(states)[1])


class PopularityRanker(nn.Module):
    """Reference: items ranked by their row count in the target's training split."""

    trainable = False

    def __init__(self, target: TargetDomain, train_rows: pd.DataFrame) -> None:
        super().__init__()
        pos = train_rows[train_rows["label"] == 1]
        counts = np.bincount(
            target.to_local(pos["item"].to_numpy()), minlength=len(target.catalogue)
        )
        self.counts = torch.as_tensor(counts, dtype=torch.float32)

    def states(self, users: np.ndarray, times: np.ndarray) -> None:
        return None

    def forward(self, users: Tensor, states: Tensor | None, items: Tensor) -> Tensor:
        return self.counts[items]


# ------------------------------------------------------------------ zero-shot references
# Rankers that need no learning, for the zero-shot tables: what PEACE must beat before its
# numbers mean anything. Each uses only source behaviour before the pre-training cut-off (the
# counts) and the user's source history before the query time, like the zero-shot ranker.


class SourceEntityCounts(NamedTuple):
    """What the references know of the source behaviour before the cut-off."""

    rows: np.ndarray
    """``[|E|]`` positive source rows whose item maps to each entity."""
    users: np.ndarray
    """``[|E|]`` distinct users with such a row."""
    num_users: int
    """Users with any positive source row."""


def _positive_source_rows(ds: Dataset, cutoff: float) -> tuple[np.ndarray, np.ndarray]:
    """Users and items of the positive rows of :func:`peace.data.splits.pretrain_rows`, in
    storage order (what is counted here does not depend on the order)."""
    inter = ds.interactions
    source = inter["domain"].isin(ds.source_domains).to_numpy()
    before = inter["timestamp"].to_numpy() < cutoff
    keep = source & before & (inter["label"].to_numpy() == 1)
    return inter["user"].to_numpy()[keep], inter["item"].to_numpy()[keep]


def _entity_row_counts(ds: Dataset, items: np.ndarray) -> np.ndarray:
    """``[|E|]`` float64: how many of the rows of ``items`` (one item per row) map to each
    entity. Rows are counted per item first, then spread over the items' entities: one pass over
    the catalogue's entities, not over every row's."""
    per_item = np.bincount(items, minlength=ds.num_items)
    ents = np.asarray(ds.item_entities).reshape(-1)
    linked = ents >= 0
    weights = np.repeat(per_item, ds.item_entities.shape[1])[linked]
    return np.bincount(ents[linked], weights=weights, minlength=ds.num_entities)


def source_entity_counts(ds: Dataset, cutoff: float) -> SourceEntityCounts:
    """Per-entity counts of the positive source rows strictly before ``cutoff``."""
    row_users, row_items = _positive_source_rows(ds, cutoff)
    ents = ds.item_entities[row_items]  # [R, 3]
    users = np.repeat(row_users, ents.shape[1])
    flat = ents.reshape(-1)
    keep = flat >= 0
    counts = _entity_row_counts(ds, row_items)
    # one int64 key per distinct (user, entity) pair
    pairs = np.unique(users[keep].astype(np.int64) * ds.num_entities + flat[keep])
    users_per_entity = np.bincount(pairs % ds.num_entities, minlength=ds.num_entities)
    return SourceEntityCounts(
        counts,
        users_per_entity.astype(np.float64),
        len(np.unique(row_users)),
    )


def source_entity_prior(ds: Dataset, cutoff: float, counts: str = "rows") -> Tensor:
    """``[|E|]`` log(1 + positive source rows before ``cutoff`` whose item maps to the entity):
    what :func:`item_prior` averages over an item's entities. ``counts="users"``: log(1 +
    distinct users with such a row) (``eval.zero_shot_prior_counts``)."""
    if counts == "users":
        users = source_entity_counts(ds, cutoff).users
        return torch.as_tensor(np.log1p(users), dtype=torch.float32)
    if counts != "rows":
        raise ValueError(f"prior counts {counts!r}: expected 'rows' or 'users'.")
    _, items = _positive_source_rows(ds, cutoff)  # the counts alone: no per-user pairs
    return torch.as_tensor(np.log1p(_entity_row_counts(ds, items)), dtype=torch.float32)


def _source_take_up(ds: Dataset, cutoff: float) -> tuple[np.ndarray, np.ndarray]:
    """The source items and each one's log(1 + distinct users with a positive row before
    ``cutoff``) (0 for a source item nobody took up)."""
    source = np.flatnonzero(np.isin(ds.item_domain, ds.source_domains))
    users, items = _positive_source_rows(ds, cutoff)
    pairs = np.unique(users.astype(np.int64) * ds.num_items + items)
    take_up = np.log1p(np.bincount(pairs % ds.num_items, minlength=ds.num_items))
    return source, take_up[source]


def source_profile_prior(ds: Dataset, cutoff: float) -> Tensor:
    """``[num_items]`` float32: what the source domains' take-up says of each item's profile.

    For each item profile field, each value's score is the mean over the source items with that
    value of log(1 + distinct users with a positive source row before ``cutoff``) (source items
    with none count as 0; a value no source item has scores :func:`profile_prior_fallback`); an
    item's prior is the mean of its values' scores over the fields. Zeros when the dataset has no
    item profiles. No target row is read: a new domain's items are scored by their profile alone.
    """
    prior = np.zeros(ds.num_items)
    profiles = ds.item_profiles
    if profiles is None or profiles.codes.shape[1] == 0:
        return torch.as_tensor(prior, dtype=torch.float32)
    source, take_up = _source_take_up(ds, cutoff)
    if len(source) == 0:
        return torch.as_tensor(prior, dtype=torch.float32)
    for codes in profiles.codes.T:
        size = int(codes.max()) + 1
        total = np.bincount(codes[source], weights=take_up, minlength=size)
        count = np.bincount(codes[source], minlength=size)
        per_value = np.where(count > 0, total / np.maximum(count, 1), take_up.mean())
        prior += per_value[codes]
    return torch.as_tensor(prior / profiles.codes.shape[1], dtype=torch.float32)


def profile_prior_fallback(ds: Dataset, cutoff: float) -> float:
    """The profile prior of an item whose profile no source item shares (or that has none, as
    an item added to a served domain at run time): the mean take-up of the source items."""
    source, take_up = _source_take_up(ds, cutoff)
    return float(take_up.mean()) if len(source) else 0.0


def zero_shot_profile(ds: Dataset, cfg: PeaceConfig, cutoff: float) -> tuple[float, Tensor | None]:
    """PEACE's zero-shot profile term, ``(eval.zero_shot_profile_prior, source profile prior)``
    for ``cutoff``, as :class:`ZeroShotRanker` takes it; ``(0, None)`` when the weight is 0."""
    weight = cfg.eval.zero_shot_profile_prior
    if weight == 0.0:
        return 0.0, None
    return weight, source_profile_prior(ds, cutoff)


def zero_shot_prior(ds: Dataset, pre: Pretrained, cfg: PeaceConfig) -> tuple[float, Tensor | None]:
    """PEACE's zero-shot prior term, ``(eval.zero_shot_prior, source-entity prior)`` for the
    cut-off of ``pre``, as :class:`ZeroShotRanker` and :class:`PeaceRanker` take it; ``(0,
    None)`` when the weight is 0. A competitor keeps its own score: pass ``(0, None)``."""
    weight = cfg.eval.zero_shot_prior
    if weight == 0.0:
        return 0.0, None
    return weight, source_entity_prior(ds, pre.cutoff, cfg.eval.zero_shot_prior_counts)


def item_prior(entity_prior: Tensor, item_entities: Tensor) -> Tensor:
    """The source-entity prior of items ``[I, k]`` (entity rows, -1 = none) -> ``[I]``: the mean
    of ``entity_prior`` over each item's entities, as :func:`item_vectors` means their vectors
    (the *Entity prior* reference's score, and the term ``eval.zero_shot_prior`` weighs)."""
    return item_vectors(entity_prior.unsqueeze(-1), item_entities).squeeze(-1)


class RandomRanker(nn.Module):
    """Reference: a seeded random score for every user-item pair."""

    trainable = False

    def __init__(self, target: TargetDomain, seed: int) -> None:
        super().__init__()
        self.n_items, self.seed = len(target.catalogue), seed

    def states(self, users: np.ndarray, times: np.ndarray) -> Tensor:
        gen = torch.Generator().manual_seed(self.seed)
        return torch.rand(len(users), self.n_items, generator=gen)

    def forward(self, users: Tensor, states: Tensor, items: Tensor) -> Tensor:
        return states.gather(1, items)


class EntityPriorRanker(nn.Module):
    """Reference: target items ranked by how often their entities occur in source behaviour
    before the cut-off (the mean of log(1 + count) over the item's entities); no user input."""

    trainable = False

    def __init__(self, target: TargetDomain, entity_counts: np.ndarray) -> None:
        super().__init__()
        weight = torch.as_tensor(np.log1p(entity_counts), dtype=torch.float32)
        self.scores = item_prior(weight, target.item_entities)

    def states(self, users: np.ndarray, times: np.ndarray) -> None:
        return None

    def forward(self, users: Tensor, states: Tensor | None, items: Tensor) -> Tensor:
        return self.scores[items]


class ProfilePriorRanker(nn.Module):
    """Reference: target items ranked by their profile's take-up in the source domains before
    the cut-off (:func:`source_profile_prior`); no user input, no entity."""

    trainable = False

    def __init__(self, target: TargetDomain, profile_prior: Tensor) -> None:
        super().__init__()
        self.scores = profile_prior[torch.as_tensor(target.catalogue)]

    def states(self, users: np.ndarray, times: np.ndarray) -> None:
        return None

    def forward(self, users: Tensor, states: Tensor | None, items: Tensor) -> Tensor:
        return self.scores[items]


class EntityOverlapRanker(nn.Module):
    """Reference: target items ranked by the IDF-weighted overlap of their entities with the
    user's source history before the query time: sum over the item's entities e of
    log(1 + tf(u, e)) * log(U / (1 + df(e))), tf = occurrences of e in the user's history tokens,
    df = users with e in their source behaviour before the cut-off, U = users with any."""

    trainable = False

    def __init__(
        self,
        target: TargetDomain,
        history: HistoryIndex,
        users_per_entity: np.ndarray,
        num_users: int,
    ) -> None:
        super().__init__()
        self.history = history
        ents = target.item_entities.numpy()
        vocab = np.unique(ents[ents >= 0])
        self.column = np.full(history.pad + 1, len(vocab), dtype=np.int64)
        self.column[vocab] = np.arange(len(vocab))
        idf = np.log(num_users / (1.0 + users_per_entity[vocab]))
        self.idf = torch.as_tensor(np.maximum(idf, 0.0), dtype=torch.float32)
        incidence = torch.zeros(len(ents), len(vocab) + 1)
        cols = torch.as_tensor(self.column[np.where(ents >= 0, ents, history.pad)])
        incidence.scatter_(1, cols, 1.0)
        self.incidence = incidence[:, :-1]  # [I, V]

    def states(self, users: np.ndarray, times: np.ndarray) -> Tensor:
        tokens, mask = self.history.lookup(users, times)
        cols = torch.as_tensor(self.column)[tokens]
        bag = torch.zeros(len(users), len(self.idf) + 1)
        bag.scatter_add_(1, cols, mask.float())
        return bag[:, :-1]

    def forward(self, users: Tensor, states: Tensor, items: Tensor) -> Tensor:
        weights = torch.log1p(states) * self.idf  # [B, V]
        return (weights @ self.incidence.T).gather(1, items)

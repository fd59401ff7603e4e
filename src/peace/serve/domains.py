"""A served domain: an immutable snapshot of its catalogue, item-side precomputation, optional
normal ranker and approximate index (edits make a new one), and how it scores and recommends."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from peace.serve.index import InnerProductIndex
from peace.serve.rankers import ItemKeys, NormalRanker, RankerName, UserVectors, ZeroShotScorer
from peace.store import StoreVersion


@dataclass(frozen=True)
class DomainState:
    """One served domain: an immutable snapshot of its catalogue and rankers.

    ``items``, ``entities``, ``vectors``, ``keys``, ``counts`` (and ``bias``) are aligned
    (catalogue order); items added at run time are appended. ``index`` covers the first
    ``index.size`` rows.
    """

    name: str
    origin: Literal["store", "launched"]
    items: tuple[str, ...]
    item_row: dict[str, int]
    entities: tuple[tuple[str, ...], ...]
    vectors: Tensor
    keys: ItemKeys | None
    counts: np.ndarray
    live_items: dict[str, list[str]] = field(default_factory=dict)
    """Items added or changed at run time (persisted under ``STORE/live``)."""
    normal: NormalRanker | None = None
    normal_rows: Tensor | None = None
    normal_note: str | None = None
    """Why a published normal ranker is not used (e.g. trained on another model), if so."""
    index: InnerProductIndex | None = None
    stale_rows: frozenset[int] = frozenset()
    """Rows changed after the index was built (scored exactly at every query)."""
    bias: Tensor | None = None
    """[I] w * prior(i) + w_p * profile_prior(i), the weighted source-entity and profile priors
    the zero-shot score adds (``eval.zero_shot_prior`` = w, ``eval.zero_shot_profile_prior`` =
    w_p; :meth:`ZeroShotScorer.item_bias`); None when both weights are 0."""
    head_bias: Tensor | None = None
    """[I] w * prior(i) alone, what a normal ranker's head adds to its zero-shot score (its
    DeepFM reads the profile fields itself); None when :attr:`bias` holds no profile term."""
    bias_order: np.ndarray | None = None
    """The indexed rows by decreasing bias; the first ``pool`` join every query's candidates
    (see :meth:`candidates`)."""
    zero_shot: Tensor | None = None
    """[I, S * d] the items' vectors in the S evaluated states side by side, whose inner
    product with the user's (:attr:`UserVectors.zero_shot`) is the zero-shot score; None when
    the kept state's ``vectors`` serve it."""

    @property
    def size(self) -> int:
        return len(self.items)

    @property
    def popularity(self) -> np.ndarray:
        """Shares of the popularity counts; uniform when the domain has no rows."""
        total = self.counts.sum()
        if total <= 0:
            return np.full(self.size, 1.0 / max(self.size, 1))
        return self.counts / total

    @property
    def ranker(self) -> RankerName:
        return "normal" if self.normal is not None else "zero-shot"

    def with_items(
        self,
        new: dict[str, list[str]],
        vectors: Tensor,
        scorer: ZeroShotScorer,
        prior: Tensor | None = None,
        zero_shot: Tensor | None = None,
    ) -> DomainState:
        """A copy with items added or replaced (``vectors``, the items' source-entity ``prior``
        and their vectors of the evaluated states ``zero_shot`` aligned with ``new``; the prior
        is needed where the scorer weighs it, ``zero_shot`` where the domain has them)."""
        items, entities = list(self.items), list(self.entities)
        row = dict(self.item_row)
        all_vecs = self.vectors.clone()
        all_states = None if self.zero_shot is None else self.zero_shot.clone()
        if all_states is not None and zero_shot is None:
            raise ValueError("this domain's zero-shot score needs new items' state vectors.")
        bias = None if self.bias is None else self.bias.clone()
        head_bias = None if self.head_bias is None else self.head_bias.clone()
        new_bias = new_head_bias = None
        if bias is not None:
            new_bias = scorer.item_bias(prior, None, len(vectors))
        if head_bias is not None:
            new_head_bias = scorer.prior_bias(prior, len(vectors))
        counts = self.counts.copy()
        appended, stale = [], set(self.stale_rows)
        new_keys = scorer.item_keys(vectors)
        keys = (
            None if self.keys is None else ItemKeys(self.keys.top.clone(), self.keys.ties.clone())
        )
        for j, (item, ents) in enumerate(new.items()):
            if item in row:
                r = row[item]
                entities[r] = tuple(ents)
                all_vecs[r] = vectors[j]
                if all_states is not None and zero_shot is not None:
                    all_states[r] = zero_shot[j]
                if bias is not None and new_bias is not None:
                    bias[r] = new_bias[j]
                if head_bias is not None and new_head_bias is not None:
                    head_bias[r] = new_head_bias[j]
                if keys is not None and new_keys is not None:
                    keys.top[r], keys.ties[r] = new_keys.top[j], new_keys.ties[j]
                stale.add(r)
            else:
                row[item] = len(items)
                items.append(item)
                entities.append(tuple(ents))
                appended.append(j)
        if appended:
            idx = torch.as_tensor(appended, dtype=torch.long)
            all_vecs = torch.cat([all_vecs, vectors[idx]])
            if all_states is not None and zero_shot is not None:
                all_states = torch.cat([all_states, zero_shot[idx]])
            if bias is not None and new_bias is not None:
                bias = torch.cat([bias, new_bias[idx]])
            if head_bias is not None and new_head_bias is not None:
                head_bias = torch.cat([head_bias, new_head_bias[idx]])
            keys = ItemKeys.cat(keys, None if new_keys is None else new_keys.take(idx))
            counts = np.concatenate([counts, np.zeros(len(appended), np.int64)])
        normal_rows = None
        if self.normal is not None:
            normal_rows = self.normal.code_rows(items)
        live = {**self.live_items, **{k: list(v) for k, v in new.items()}}
        return replace(
            self,
            items=tuple(items),
            item_row=row,
            entities=tuple(entities),
            vectors=all_vecs,
            keys=keys,
            counts=counts,
            live_items=live,
            normal_rows=normal_rows,
            stale_rows=frozenset(stale),
            bias=bias,
            head_bias=head_bias,
            zero_shot=all_states,
        )

    def with_index(self, threshold: int, **index_args: Any) -> DomainState:
        """A copy with an ANN index over the catalogue when it has more than ``threshold`` items."""
        if self.size <= threshold:
            return replace(self, index=None, stale_rows=frozenset())
        vectors, order = self.vectors, None
        if self.bias is not None:  # one more column; the query's is 1 (candidates)
            vectors = torch.cat([vectors, self.bias.unsqueeze(1)], dim=1)
            order = np.argsort(-self.bias.numpy(), kind="stable")
        index = InnerProductIndex(vectors.numpy(), **index_args)
        return replace(self, index=index, stale_rows=frozenset(), bias_order=order)

    def rows_of(self, items: list[str]) -> list[int | None]:
        return [self.item_row.get(i) for i in items]

    # ---------------------------------------------------------------- scoring
    def score_rows(
        self, scorer: ZeroShotScorer, user: UserVectors | None, rows: Tensor
    ) -> tuple[Tensor, RankerName]:
        """Scores ``[C]`` of catalogue rows for a user (None = unknown user: popularity)."""
        if user is None:
            return (
                torch.as_tensor(self.popularity[rows.numpy()], dtype=torch.float32),
                "popularity-fallback",
            )
        # index_select: a request's few hundred rows, without advanced indexing's overhead
        items = self.vectors.index_select(0, rows)
        keys = None if self.keys is None else self.keys.take(rows)
        states = None if self.zero_shot is None else self.state_scores(user, rows)
        if self.normal is None:
            if states is None:
                scores = scorer.scores(user.interests, items, keys, user.universal)
            else:  # the mean over the evaluated states (inner scorer)
                scores = states
            if self.bias is not None:
                scores = scores + self.bias.index_select(0, rows)
            return scores, "zero-shot"
        user_vecs = self.normal.user_vectors(scorer, user.interests, items, keys)
        assert self.normal_rows is not None
        codes = self.normal_rows.index_select(0, rows)
        head = self.bias if self.head_bias is None else self.head_bias
        bias = None if head is None else head.index_select(0, rows)
        scores = self.normal.scores(user.id, user_vecs, items, codes, user.universal, bias, states)
        return scores, "normal"

    def state_scores(self, user: UserVectors, rows: Tensor) -> Tensor:
        """``[C]`` the mean over the evaluated states of z_u . z_i for catalogue ``rows``: one
        inner product of their vectors side by side (:attr:`zero_shot`)."""
        if self.zero_shot is None or user.zero_shot is None:
            raise ValueError(f"domain {self.name!r}: no state vectors for this user or domain.")
        if 4 * len(rows) >= self.size:  # most of the catalogue: one product, no gathered copy
            return (self.zero_shot @ user.zero_shot).index_select(0, rows)
        return self.zero_shot.index_select(0, rows) @ user.zero_shot

    def candidates(self, scorer: ZeroShotScorer, user: UserVectors, pool: int) -> Tensor:
        """Catalogue rows to rank exactly: all of them, or the index's pool plus newer rows.

        With a bias, the ``pool`` rows of highest bias join the index's pool: the index's lists
        follow the vectors more than the bias, and an item that a high bias alone lifts into a
        user's top k can lie in a list the query does not probe (ANN recall@10 on 20,000 items
        0.95 without them, 1.0 with them; benchmarks/serve_latency.py).

        The index holds the kept state's vectors (width d) also where the zero-shot score is
        the mean over the evaluated states (width S * d): the pool is scored exactly on the
        states, and a search over S * d dimensions cost about four times as much at the
        benchmark preset's sizes for the same recall (docs/serving.md)."""
        if self.index is None:
            return torch.arange(self.size)
        query = scorer.query(user.interests, user.universal)
        if self.bias is not None:
            query = torch.cat([query, query.new_ones(1)])
        found = self.index.search(query.numpy(), pool)
        if self.bias_order is not None:
            found = np.concatenate([found, self.bias_order[:pool]])
        extra = np.arange(self.index.size, self.size)
        stale = np.fromiter(self.stale_rows, dtype=np.int64, count=len(self.stale_rows))
        rows = np.unique(np.concatenate([found, extra, stale]).astype(np.int64))
        return torch.as_tensor(rows, dtype=torch.long)

    def recommend(
        self, scorer: ZeroShotScorer, user: UserVectors | None, k: int, pool: int
    ) -> tuple[list[str], list[float], RankerName, bool]:
        """Top ``k`` items: (ids, scores, ranker, approximate?)."""
        k = min(k, self.size)
        if k == 0:
            return [], [], ("popularity-fallback" if user is None else self.ranker), False
        if user is None:
            pop = self.popularity
            order = np.lexsort((np.arange(self.size), -pop))[:k]
            return (
                [self.items[i] for i in order],
                [float(pop[i]) for i in order],
                "popularity-fallback",
                False,
            )
        rows = self.candidates(scorer, user, max(pool, k))
        scores, ranker = self.score_rows(scorer, user, rows)
        top = torch.topk(scores, min(k, len(rows)))
        chosen = rows[top.indices]
        return (
            [self.items[int(i)] for i in chosen],
            [float(s) for s in top.values],
            ranker,
            self.index is not None,
        )


def catalogue_state(version: StoreVersion, domain: str, scorer: ZeroShotScorer) -> DomainState:
    """A store domain's :class:`DomainState` (no normal ranker, no index yet)."""
    cat = version.catalogues[domain]
    vectors = torch.from_numpy(cat.vectors)
    items = tuple(str(i) for i in cat.items)
    return DomainState(
        name=domain,
        origin="store",
        items=items,
        item_row={it: i for i, it in enumerate(items)},
        entities=tuple(tuple(e) for e in cat.entities),
        vectors=vectors,
        keys=scorer.item_keys(vectors),
        counts=cat.popularity.astype(np.int64),
        bias=None
        if not scorer.weighs_items
        else scorer.item_bias(
            torch.from_numpy(cat.prior),
            None if cat.profile_prior is None else torch.from_numpy(cat.profile_prior),
            len(items),
        ),
        head_bias=None
        if scorer.profile_weight == 0.0
        else scorer.prior_bias(torch.from_numpy(cat.prior), len(items)),
        zero_shot=None if cat.zero_shot is None else torch.from_numpy(cat.zero_shot),
    )


def launched_state(domain: str, scorer: ZeroShotScorer) -> DomainState:
    """An empty domain launched at run time (items are added with :meth:`with_items`)."""
    vectors = torch.zeros(0, scorer.dim)
    return DomainState(
        name=domain,
        origin="launched",
        items=(),
        item_row={},
        entities=(),
        vectors=vectors,
        keys=scorer.item_keys(vectors),
        counts=np.zeros(0, np.int64),
        bias=None if not scorer.weighs_items else torch.zeros(0),
        head_bias=None if scorer.profile_weight == 0.0 else torch.zeros(0),
        zero_shot=None if scorer.states == 1 else torch.zeros(0, scorer.states * scorer.dim),
    )


def attach_normal(
    state: DomainState, ranker: NormalRanker | None, note: str | None = None
) -> DomainState:
    """A copy of ``state`` served by ``ranker`` (None: zero-shot, with ``note`` saying why)."""
    if ranker is None:
        return replace(state, normal=None, normal_rows=None, normal_note=note)
    return replace(
        state, normal=ranker, normal_rows=ranker.code_rows(list(state.items)), normal_note=None
    )

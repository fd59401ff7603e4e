"""User entity sequences across source domains: B_ui of Sec. 3 mapped through phi (Sec. 4.1.1).

For a user u and a time t, the history in source domain S is the entity list of u's positive
items in S strictly before t, in time order, last H tokens kept. The sequences of all source
domains are concatenated (the input of Eq. 1). :class:`HistoryIndex` answers such queries for a
whole batch at once with tensor gathers, so no Python loop runs per row.

Example::

    index = HistoryIndex(ds, history_length=200)
    tokens, mask = index.lookup(users, times)   # [B, |S| * H] entity ids, True = real token
"""

from __future__ import annotations

import numpy as np
import torch

from peace.data.dataset import Dataset


class HistoryIndex:
    """Per-source-domain, per-user, time-sorted entity tokens with their item timestamps.

    Args:
        ds: the dataset.
        history_length: H, entity tokens kept per source domain.
        source_domains: domains whose behaviour forms the history (default: all sources).
        exclude_items: ``[I]`` bool, items left out of every history (``pretrain.holdout_items``:
            a kept-out item is as new to pre-training as a target item is).

    Padding uses the entity index ``ds.num_entities`` (one past the last entity).
    """

    def __init__(
        self,
        ds: Dataset,
        history_length: int,
        source_domains: list[int] | None = None,
        exclude_items: np.ndarray | None = None,
    ) -> None:
        self.history_length = history_length
        self.pad = ds.num_entities
        self.num_users = ds.num_users
        self.domains = list(source_domains if source_domains is not None else ds.source_domains)
        inter = ds.interactions
        domain = inter["domain"].to_numpy()
        keep = (inter["label"].to_numpy() == 1) & np.isin(domain, self.domains)
        if exclude_items is not None:
            keep &= ~np.asarray(exclude_items, dtype=bool)[inter["item"].to_numpy()]
        domain = domain[keep]
        user = inter["user"].to_numpy()[keep].astype(np.int64)
        item = inter["item"].to_numpy()[keep].astype(np.int64)
        time = inter["timestamp"].to_numpy()[keep].astype(np.float64)
        # Times ranked once for every domain: the sort key and the searches share the ranks.
        # Whole-number times become offsets where the packed sort key still fits (no sort).
        n_domains = int(domain.max()) + 1 if len(domain) else 1
        ranks = _TimeRanks(time, _KEY_LIMIT // (n_domains * ds.num_users * max(ds.num_items, 1)))
        domain, user, rank, item = _sort_rows(
            domain, user, ranks.rows, item, ds.num_users, ds.num_items
        )
        time = ranks.times(rank)
        self._tokens: list[torch.Tensor] = []
        self._times: list[np.ndarray] = []
        self._offsets: list[np.ndarray] = []
        self._search: list[_PairSearch] = []
        for d in self.domains:
            lo, hi = np.searchsorted(domain, d, "left"), np.searchsorted(domain, d, "right")
            ents = ds.item_entities[item[lo:hi]]  # [R, 3], rows in (user, time, item) order
            per_row = (ents >= 0).sum(1)
            users = np.repeat(user[lo:hi], per_row)
            tokens = ents[ents >= 0]  # row-major: an item's entities stay together, in rank order
            counts = np.bincount(users, minlength=ds.num_users)
            offsets = np.zeros(ds.num_users + 1, dtype=np.int64)
            np.cumsum(counts, out=offsets[1:])
            self._tokens.append(torch.from_numpy(tokens.astype(np.int64)))
            times = np.repeat(time[lo:hi], per_row)
            self._times.append(times)
            self._offsets.append(offsets)
            self._search.append(_PairSearch(users, times, ranks, np.repeat(rank[lo:hi], per_row)))

    @property
    def sequence_length(self) -> int:
        return self.history_length * len(self.domains)

    def positions(self, users: np.ndarray, times: np.ndarray) -> np.ndarray:
        """[B, |S|, 2] start and end (exclusive) of each user's tokens strictly before ``times``.

        Computed once per row and kept, so that batches only gather.
        """
        users = np.asarray(users, dtype=np.int64)
        times = np.asarray(times, dtype=np.float64)
        out = np.zeros((len(users), len(self.domains), 2), dtype=np.int64)
        for k, (search, off) in enumerate(zip(self._search, self._offsets, strict=True)):
            start, stop = off[users], off[users + 1]
            # Within a user's segment times are sorted: a binary search on the segment per row,
            # vectorised by searching (user, time) keys in a single lexicographic order.
            end = np.clip(search(users, times), start, stop)
            out[:, k, 0] = np.maximum(start, end - self.history_length)
            out[:, k, 1] = end
        return out

    def gather(self, positions: np.ndarray | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Token matrix [B, |S| * H] (left-padded, oldest first) and mask for ``positions``."""
        pos = torch.as_tensor(positions, dtype=torch.long)
        h = self.history_length
        ar = torch.arange(h)
        tokens, masks = [], []
        for k, all_tokens in enumerate(self._tokens):
            start, end = pos[:, k, 0], pos[:, k, 1]
            idx = end.unsqueeze(1) - h + ar  # [B, H], the last H slots before end
            valid = idx >= start.unsqueeze(1)
            if all_tokens.numel() == 0:
                tok = torch.full(idx.shape, self.pad, dtype=torch.long)
            else:
                tok = all_tokens[idx.clamp(min=0, max=max(all_tokens.numel() - 1, 0))]
                tok = torch.where(valid, tok, torch.full_like(tok, self.pad))
            tokens.append(tok)
            masks.append(valid)
        return torch.cat(tokens, dim=1), torch.cat(masks, dim=1)

    def lookup(self, users: np.ndarray, times: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Entity tokens of each (user, time) strictly before the time; see :meth:`gather`."""
        return self.gather(self.positions(users, times))

    def token_times(self, positions: np.ndarray) -> list[np.ndarray]:
        """Timestamps of the gathered tokens per domain (for audits and tests)."""
        out = []
        for k, tt in enumerate(self._times):
            out.append([tt[s:e] for s, e in positions[:, k]])
        return out


class RecentItems:
    """Each user's latest positive items of one table strictly before a time, as id codes.

    The user attribute "behaviours in current domains" of Sec. 5.1.1: for a row (u, t), the
    codes of u's last ``length`` positive items in ``rows`` before t, newest last; 0 pads.

    Args:
        users, times, codes: the positive rows (codes >= 1, e.g. a domain's local item id + 1).
        length: items kept per query.
        num_users: size of the user id space.
    """

    def __init__(
        self,
        users: np.ndarray,
        times: np.ndarray,
        codes: np.ndarray,
        length: int,
        num_users: int,
    ) -> None:
        if length < 1:
            raise ValueError(f"length = {length}: expected at least 1 item per query.")
        users = np.asarray(users, dtype=np.int64)
        order = np.lexsort((np.asarray(codes), np.asarray(times, dtype=np.float64), users))
        self.length, self.num_users = length, num_users
        self._users = users[order]
        self._times = np.asarray(times, dtype=np.float64)[order]
        self._codes = torch.as_tensor(np.asarray(codes, dtype=np.int64)[order])
        self._offsets = np.zeros(num_users + 1, dtype=np.int64)
        np.cumsum(np.bincount(self._users, minlength=num_users), out=self._offsets[1:])
        self._search = _PairSearch(self._users, self._times)

    def lookup(self, users: np.ndarray, times: np.ndarray) -> torch.Tensor:
        """``[B, length]`` codes of each (user, time)'s latest items strictly before the time."""
        users = np.asarray(users, dtype=np.int64)
        start = self._offsets[users]
        end = self._search(users, np.asarray(times, dtype=np.float64))
        end = torch.as_tensor(np.clip(end, start, self._offsets[users + 1]))
        idx = end.unsqueeze(1) - self.length + torch.arange(self.length)
        valid = idx >= torch.as_tensor(start).unsqueeze(1)
        if self._codes.numel() == 0:
            return torch.zeros(idx.shape, dtype=torch.long)
        codes = self._codes[idx.clamp(min=0, max=self._codes.numel() - 1)]
        return torch.where(valid, codes, torch.zeros_like(codes))


def _sort_rows(
    domain: np.ndarray,
    user: np.ndarray,
    rank: np.ndarray,
    item: np.ndarray,
    num_users: int,
    num_items: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The columns (domain, user, time rank, item) with their rows sorted by all four.

    Where the four pack into one int64 key (every dataset of a realistic size), the key is sorted
    and the columns are read back from it by division, which is much faster than permuting each
    column by an argsort; else a lexicographic sort of the four columns. Equal rows are equal in
    every column, so the order is the same either way.
    """
    n_domains = int(domain.max()) + 1 if len(domain) else 1
    n_ranks = int(rank.max()) + 1 if len(rank) else 1
    num_items = max(num_items, 1)
    if n_domains * num_users * n_ranks * num_items < 2**62:
        key = ((domain.astype(np.int64) * num_users + user) * n_ranks + rank) * num_items + item
        key.sort(kind="stable")  # a merge sort that runs fast on data stored nearly in order
        rest = key // num_items
        item = key - rest * num_items
        key = rest // n_ranks
        rank = rest - key * n_ranks
        domain = key // num_users
        return domain, key - domain * num_users, rank, item
    order = np.lexsort((item, rank, user, domain))
    return domain[order], user[order], rank[order], item[order]


_KEY_LIMIT = 2**62
"""Packed integer keys stay below this (int64 with room)."""


class _TimeRanks:
    """Integer ranks of times that keep their order: each row's rank, and a query's.

    A row with time t is at or after a query time q exactly when ``rows >= query(q)``. Whole-number
    times (timestamps in seconds, days, ...) rank as their offset from the earliest, t - t_min,
    which needs no sort, where the span keeps ranks below ``max_width``; other times rank among
    their sorted distinct values (``numpy.unique``).

    Args:
        times: the rows' times.
        max_width: the largest number of distinct ranks (queries included) the caller can pack.
    """

    def __init__(self, times: np.ndarray, max_width: int = _KEY_LIMIT) -> None:
        times = np.asarray(times, dtype=np.float64)
        self._start: float | None = None
        if len(times) and np.isfinite(times).all():
            start, stop = float(times.min()), float(times.max())
            # whole numbers whose offsets are exact in float64 (and every query offset too)
            if stop - start + 2 <= min(max_width, 2**52) and (times == np.floor(times)).all():
                self._start = start
                self.width = int(stop - start) + 2  # a query after every row ranks last
                self.rows = (times - start).astype(np.int64)
                return
        self._distinct, self.rows = np.unique(times, return_inverse=True)
        self.rows = self.rows.astype(np.int64)
        self.width = len(self._distinct) + 1

    def times(self, ranks: np.ndarray) -> np.ndarray:
        """The times of row ranks (the inverse of :attr:`rows`), as float64."""
        if self._start is None:
            return self._distinct[ranks]
        return ranks.astype(np.float64) + self._start

    def query(self, q_times: np.ndarray) -> np.ndarray:
        """Ranks of query times: how many of the ranked values lie strictly before each."""
        q = np.asarray(q_times, dtype=np.float64)
        if self._start is None:
            return np.searchsorted(self._distinct, q, "left").astype(np.int64)
        # whole numbers t_min <= t < q: ceil(q) - t_min of them, clipped to the span (a
        # difference of two whole numbers, exact where it matters); NaN sorts after every time,
        # as in the search above
        offset = np.ceil(np.where(np.isnan(q), np.inf, q)) - self._start
        return np.clip(offset, 0, self.width - 1).astype(np.int64)


class _PairSearch:
    """Binary search of (key, time) queries in rows sorted by (key, time).

    ``search(q_keys, q_times)`` is the index of the first row with (key, time) >= (q_key, q_time).
    Times are replaced by their ranks (:class:`_TimeRanks`), so (key, rank) packs into one exact
    int64 per row; that packing is done once here, and a query costs two binary searches instead
    of a sort of every row.

    Args:
        keys: the rows' keys, sorted (non-negative).
        times: the rows' times, sorted within each key.
        ranks: ranks of these times, or of a superset of them (default: computed here).
        row_ranks: each row's rank under ``ranks`` (needed with ``ranks``).
    """

    def __init__(
        self,
        keys: np.ndarray,
        times: np.ndarray,
        ranks: _TimeRanks | None = None,
        row_ranks: np.ndarray | None = None,
    ) -> None:
        keys = np.asarray(keys, dtype=np.int64)
        self._n_keys = n_keys = int(keys.max()) + 1 if len(keys) else 1
        if ranks is None:
            ranks = _TimeRanks(times, _KEY_LIMIT // n_keys)
            row_ranks = ranks.rows
        elif row_ranks is None:
            raise ValueError("row_ranks are needed with ranks computed elsewhere.")
        self._ranks = ranks
        self._width = ranks.width
        self._packed = keys * self._width + np.asarray(row_ranks, dtype=np.int64)

    def __call__(self, q_keys: np.ndarray, q_times: np.ndarray) -> np.ndarray:
        if len(self._packed) == 0:
            return np.zeros(len(q_keys), dtype=np.int64)
        rank = self._ranks.query(q_times)  # a row at or after q_time iff its rank >= this
        # keys outside the rows' answer 0 or len either way; clipped, they cannot overflow
        q_keys = np.clip(np.asarray(q_keys, dtype=np.int64), -1, self._n_keys)
        packed = q_keys * self._width + rank
        return np.searchsorted(self._packed, packed, side="left").astype(np.int64)

"""Chronological splits of target domains and the pre-training cut-off (DESIGN.md, decision 1).

Each target domain's rows, sorted by (timestamp, user, item), are split 70/15/15 (A.2). Model
weights are pre-trained only on source rows strictly before a cut-off T, by default the earliest
test-period start over the target domains.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from peace.data.dataset import Dataset


@dataclass
class TargetSplit:
    """The chronological train / validation / test rows of one target domain."""

    domain: int
    train: pd.DataFrame
    valid: pd.DataFrame
    test: pd.DataFrame

    @property
    def all(self) -> pd.DataFrame:
        """Every row of the domain: the zero-shot test data of A.2."""
        return pd.concat([self.train, self.valid, self.test], ignore_index=True)

    @property
    def test_start(self) -> float:
        return float(self.test["timestamp"].min()) if len(self.test) else float("inf")


def split_target(
    ds: Dataset, domain: int, fractions: tuple[float, float, float] = (0.7, 0.15, 0.15)
) -> TargetSplit:
    """Split one target domain's rows chronologically by ``fractions``."""
    if abs(sum(fractions) - 1.0) > 1e-6 or min(fractions) < 0:
        raise ValueError(f"split fractions {fractions} must be non-negative and sum to 1.")
    inter = ds.interactions
    rows = inter[inter["domain"] == domain].sort_values(
        ["timestamp", "user", "item"], kind="stable"
    )
    rows = rows.reset_index(drop=True)
    n = len(rows)
    n_train = int(round(fractions[0] * n))
    n_valid = int(round(fractions[1] * n))
    return TargetSplit(
        domain=domain,
        train=rows.iloc[:n_train].reset_index(drop=True),
        valid=rows.iloc[n_train : n_train + n_valid].reset_index(drop=True),
        test=rows.iloc[n_train + n_valid :].reset_index(drop=True),
    )


def split_targets(
    ds: Dataset, fractions: tuple[float, float, float] = (0.7, 0.15, 0.15)
) -> dict[int, TargetSplit]:
    return {d: split_target(ds, d, fractions) for d in ds.target_domains}


def pretrain_cutoff(splits: dict[int, TargetSplit], override: str = "auto") -> float:
    """The time T before which source rows may train weights (decision 1)."""
    if override != "auto":
        try:
            return float(override)
        except ValueError as exc:
            raise ValueError(
                f'pretrain.cutoff = {override!r}: expected "auto" or a numeric timestamp.'
            ) from exc
    starts = [s.test_start for s in splits.values()]
    return min(starts) if starts else float("inf")


def pretrain_rows(ds: Dataset, cutoff: float) -> pd.DataFrame:
    """Source rows strictly before ``cutoff``, in time order."""
    inter = ds.interactions
    source = inter["domain"].isin(ds.source_domains).to_numpy()
    rows = inter[source & (inter["timestamp"].to_numpy() < cutoff)]
    return rows.sort_values(["timestamp", "user", "item"], kind="stable").reset_index(drop=True)


def first_times(rows: pd.DataFrame) -> pd.DataFrame:
    """Per user of ``rows``: the time of their first row (when a per-user ranking is made)."""
    out = rows.groupby("user", sort=True)["timestamp"].min().reset_index()
    return out.rename(columns={"timestamp": "time"})


def ranking_targets(rows: pd.DataFrame) -> dict[int, np.ndarray]:
    """Per user: the positive items of ``rows`` (the relevant set of a full ranking)."""
    pos = rows[rows["label"] == 1]
    return {int(u): np.unique(g.to_numpy()) for u, g in pos.groupby("user")["item"]}


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

"""Fine-tuning flow (Sec. 4.5): train a target domain's normal ranker, choose it on validation.

Training rows are the target's chronological training split only (positives with ``neg_ratio``
negatives drawn from the domain's catalogue, Eq. 12); each row's user state is computed from
source behaviour strictly before the row's time. After every epoch the ranker is scored on the
validation split by full ranking; the epoch with the best NDCG@10 is kept and training stops after
``patience`` epochs without improvement that also hold at least ``patience_steps`` optimiser
steps. The test split is never read here.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from peace.config import FinetuneConfig
from peace.flows.rankers import TargetDomain
from peace.metrics import ranking_metrics
from peace.utils import adam, deterministic_on_cpu, progress

SELECTION_METRIC = "ndcg@10"


@dataclass
class RankingTask:
    """Per-user full-ranking queries: who, as of when, what is relevant, what is excluded."""

    users: np.ndarray
    times: np.ndarray
    relevant: list[np.ndarray]
    exclude: list[np.ndarray] | None

    def __len__(self) -> int:
        return len(self.users)


def ranking_task(rows: pd.DataFrame, seen: pd.DataFrame | None = None) -> RankingTask:
    """One query per user with a positive in ``rows``, as of the user's first row there.

    Items the user had in ``seen`` (earlier splits) are excluded from their ranking.
    """
    pos = rows[rows["label"] == 1]
    first = rows.groupby("user")["timestamp"].min()
    users = np.sort(pos["user"].unique())
    relevant = _items_of(pos, users)
    exclude = None if seen is None else _items_of(seen, users)
    return RankingTask(
        users=users, times=first.loc[users].to_numpy(), relevant=relevant, exclude=exclude
    )


def _items_of(rows: pd.DataFrame, users: np.ndarray) -> list[np.ndarray]:
    """Each of ``users``' (sorted) distinct items in ``rows``, sorted; empty for a user with
    none."""
    user = rows["user"].to_numpy(np.int64)
    item = rows["item"].to_numpy(np.int64)
    order = np.lexsort((item, user))
    user, item = user[order], item[order]
    first = np.ones(len(user), dtype=bool)
    first[1:] = (user[1:] != user[:-1]) | (item[1:] != item[:-1])
    user, item = user[first], item[first]
    starts = np.searchsorted(user, users, side="left")
    ends = np.searchsorted(user, users, side="right")
    return [item[a:b] for a, b in zip(starts, ends, strict=True)]


class PairMemo:
    """The head's inputs for every (validation user, catalogue item) pair, kept between epochs.

    With frozen encoders the user vectors of Eq. 8-9 and Eq. 2 and the zero-shot score of each
    pair do not change while Eq. 11's head trains, yet they cost more than the head; a ranker
    that says so (``frozen_inputs``, else ``precomputed``, and ``pair_inputs``) computes them at
    the first validation and only its head after. The scores are the same numbers, as the inputs
    are computed in the same chunks. A task whose inputs would take more than ``max_bytes`` is
    scored afresh every time.
    """

    def __init__(self, max_bytes: int = 512 * 2**20) -> None:
        self.max_bytes = max_bytes
        self.task: RankingTask | None = None
        self.chunks: list[tuple] = []

    def usable(self, ranker: nn.Module, n_pairs: int) -> bool:
        frozen = getattr(ranker, "frozen_inputs", getattr(ranker, "precomputed", False))
        if not (frozen and hasattr(ranker, "pair_inputs")):
            return False
        # user and item vectors and the zero-shot score (float32), the DeepFM codes (int64)
        per_pair = 4 * (2 * ranker.head.dim + 1) + 8 * len(ranker.target.cardinalities)
        return n_pairs * per_pair <= self.max_bytes


@torch.no_grad()
def score_catalogue(
    ranker: nn.Module,
    task: RankingTask,
    n_items: int,
    pair_budget: int = 2_000_000,
    memo: PairMemo | None = None,
) -> torch.Tensor:
    """Scores ``[U, I]`` of every task user against the whole catalogue, in user chunks."""
    ranker.eval()
    if memo is not None and memo.task is task:
        out = [ranker.head(*inputs).float() for inputs in memo.chunks]
        return torch.cat(out) if out else torch.zeros(0, n_items)
    keep = memo is not None and memo.usable(ranker, len(task) * n_items)
    states = ranker.states(task.users, task.times)
    chunk = max(1, pair_budget // max(n_items, 1))
    out, kept = [], []
    for s in range(0, len(task), chunk):
        users = torch.as_tensor(task.users[s : s + chunk], dtype=torch.long)
        items = torch.arange(n_items).expand(len(users), -1)
        st = None if states is None else states[s : s + chunk]
        if keep:
            kept.append(ranker.pair_inputs(users, st, items))
            out.append(ranker.head(*kept[-1]).float())
        else:
            out.append(ranker(users, st, items).float())
    if keep:
        memo.task, memo.chunks = task, kept
    return torch.cat(out) if out else torch.zeros(0, n_items)


def evaluate_ranker(
    ranker: nn.Module,
    target: TargetDomain,
    task: RankingTask,
    ks: tuple[int, ...] = (5, 10),
    seed: int = 0,
    memo: PairMemo | None = None,
) -> dict[str, float]:
    """Mean Hit@K / NDCG@K of ``ranker`` on ``task`` by full ranking of the catalogue."""
    if len(task) == 0:
        return {f"{m}@{k}": float("nan") for k in ks for m in ("hit", "ndcg")}
    per_user = evaluate_per_user(ranker, target, task, ks, seed, memo)
    return {name: float(values.mean()) for name, values in per_user.items()}


def evaluate_per_user(
    ranker: nn.Module,
    target: TargetDomain,
    task: RankingTask,
    ks: tuple[int, ...] = (5, 10),
    seed: int = 0,
    memo: PairMemo | None = None,
) -> dict[str, np.ndarray]:
    """Hit@K / NDCG@K of every task user (in ``task.users`` order), for paired comparisons."""
    if len(task) == 0:
        return {f"{m}@{k}": np.zeros(0) for k in ks for m in ("hit", "ndcg")}
    scores = score_catalogue(ranker, task, len(target.catalogue), memo=memo)
    return ranking_metrics(
        scores,
        np.arange(len(target.catalogue)),
        [target.to_local(r) for r in task.relevant],
        None if task.exclude is None else [target.to_local(e) for e in task.exclude],
        ks,
        seed,
    )


@deterministic_on_cpu
def fit_ranker(
    ranker: nn.Module,
    target: TargetDomain,
    train_rows: pd.DataFrame,
    valid_task: RankingTask,
    cfg: FinetuneConfig,
    seed: int,
    ks: tuple[int, ...] = (5, 10),
    show_progress: bool = True,
) -> list[dict]:
    """Train ``ranker`` on ``train_rows`` (Eq. 12), keep the best validation epoch; return log."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    if cfg.target_history > 0:  # the users' domain history: training rows only, also when scored
        target.remember(train_rows, cfg.target_history, cfg.target_history_gap)
    rows = train_rows.sort_values(["timestamp", "user", "item"], kind="stable")
    users_np = rows["user"].to_numpy()
    states = ranker.states(users_np, rows["timestamp"].to_numpy())
    users = torch.as_tensor(users_np.copy(), dtype=torch.long)
    items = torch.as_tensor(target.to_local(rows["item"].to_numpy()), dtype=torch.long)
    labels = torch.as_tensor(rows["label"].to_numpy().copy(), dtype=torch.float32)
    encoder = getattr(ranker, "encoder", None)
    adapted = isinstance(encoder, nn.Module) and not getattr(ranker, "frozen", True)
    slow = {id(p) for p in encoder.parameters()} if adapted else set()
    params = [p for p in ranker.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if id(p) not in slow], "lr": cfg.lr}]
    if any(id(p) in slow for p in params):  # pre-trained encoders: a lower learning rate
        groups.append(
            {"params": [p for p in params if id(p) in slow], "lr": cfg.lr * cfg.encoder_lr_scale}
        )
    optimizer = adam(groups, cfg.lr, cfg.weight_decay, cfg.fused_adam)
    n_items = len(target.catalogue)
    best, best_state, stale, stale_steps, log = -1.0, None, 0, 0, []
    memo = PairMemo()  # the validation pairs' inputs, when the encoders are frozen
    steps_per_epoch = max(1, -(-len(users) // cfg.batch_size))
    epochs = max(cfg.epochs, -(-cfg.min_steps // steps_per_epoch))
    for epoch in progress(range(epochs), f"fine-tune {target.name}", enabled=show_progress):
        ranker.train()
        order = torch.randperm(len(users), generator=gen)
        total, n = 0.0, 0
        for s in range(0, len(order), cfg.batch_size):
            idx = order[s : s + cfg.batch_size]
            pos_label = labels[idx].unsqueeze(1)
            batch_items = items[idx].unsqueeze(1)
            batch_labels = pos_label
            if cfg.neg_ratio > 0:
                negs = torch.randint(0, n_items, (len(idx), cfg.neg_ratio), generator=gen)
                batch_items = torch.cat([batch_items, negs], 1)
                batch_labels = torch.cat([pos_label, torch.zeros(len(idx), cfg.neg_ratio)], 1)
            weight = torch.ones_like(batch_labels)
            weight[:, 1:] = (pos_label > 0).float()  # observed negatives bring no samples
            st = None if states is None else states[idx]
            logits = ranker(users[idx], st, batch_items)
            loss = (
                F.binary_cross_entropy_with_logits(
                    logits, batch_labels, weight=weight, reduction="sum"
                )
                / weight.sum()
            )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += float(loss.detach())
            n += 1
        metrics = evaluate_ranker(ranker, target, valid_task, ks, seed, memo)
        log.append({"epoch": epoch + 1, "loss": total / max(n, 1), **metrics})
        score = metrics.get(SELECTION_METRIC, float("nan"))
        if score > best or best_state is None:
            best, stale, stale_steps = score, 0, 0
            best_state = copy.deepcopy({k: v for k, v in ranker.state_dict().items()})
        else:
            stale, stale_steps = stale + 1, stale_steps + n
            if stale >= cfg.patience and stale_steps >= cfg.patience_steps:
                break
    if best_state is not None:
        ranker.load_state_dict(best_state)
    ranker.eval()
    return log

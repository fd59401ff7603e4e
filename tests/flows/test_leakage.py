"""Decision 1 of DESIGN.md, proven end to end: nothing from the future, nothing from the test set.

* Adding source behaviour at or after every query's time changes no prediction.
* Shuffling a target domain's test rows changes no weight (pre-trained or fine-tuned).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import toy_tables

from peace.data.contract import write_dataset
from peace.data.dataset import load_dataset
from peace.data.splits import split_targets
from peace.flows.finetune import fit_ranker, ranking_task, score_catalogue
from peace.flows.pretrain import pretrain
from peace.flows.rankers import PeaceRanker, TargetDomain, ZeroShotRanker


def _pipeline(root: Path, cfg):
    """Pre-train, fine-tune the first target domain; return weights and test scores."""
    ds = load_dataset(root)
    pre = pretrain(ds, cfg, show_progress=False)
    d = ds.target_domains[0]
    split = split_targets(ds)[d]
    target = TargetDomain(ds, d)
    seen = pd.concat([split.train, split.valid])
    test = ranking_task(split.test, seen)
    ranker = PeaceRanker(pre, target, cfg)
    valid = ranking_task(split.valid, split.train)
    fit_ranker(ranker, target, split.train, valid, cfg.finetune, cfg.seed, show_progress=False)
    zero = ZeroShotRanker(pre, target)
    return {
        "pretrained": {k: v.clone() for k, v in pre.model.state_dict().items()},
        "head": {k: v.clone() for k, v in ranker.head.state_dict().items()},
        "normal": score_catalogue(ranker, test, len(target.catalogue)),
        "zero": score_catalogue(zero, test, len(target.catalogue)),
        "relevant": [tuple(r) for r in test.relevant],
    }


def _assert_same_state(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_future_source_behaviour_changes_no_prediction(tmp_path: Path, tiny_config) -> None:
    tables = toy_tables()
    base = _pipeline(write_dataset(tables, tmp_path / "a"), tiny_config)

    inter = tables["interactions"]
    target_rows = inter[inter["domain"] == "t1"].sort_values(["timestamp", "user", "item"])
    n = len(target_rows)
    test_rows = target_rows.iloc[int(round(0.7 * n)) + int(round(0.15 * n)) :]
    first_test = test_rows.groupby("user")["timestamp"].min()
    # For every test user: new source rows exactly at and after their query time.
    rng = np.random.default_rng(1)
    source_items = inter[inter["domain"] == "s1"]["item"].unique()
    extra = []
    for user, t in first_test.items():
        for dt in (0, 1, 5000):
            item = rng.choice(source_items)
            extra.append((user, item, "s1", int(t) + dt, 1))
    extra = pd.DataFrame(extra, columns=inter.columns)
    bigger = dict(tables)
    bigger["interactions"] = pd.concat([inter, extra]).drop_duplicates(
        ["user", "item", "domain", "timestamp"]
    )
    assert len(bigger["interactions"]) > len(inter)
    other = _pipeline(write_dataset(bigger, tmp_path / "b"), tiny_config)

    _assert_same_state(base["pretrained"], other["pretrained"])
    torch.testing.assert_close(base["zero"], other["zero"], rtol=0, atol=0)
    torch.testing.assert_close(base["normal"], other["normal"], rtol=0, atol=0)


@pytest.mark.parametrize("history", [0, 3], ids=["profile", "target-history"])
def test_target_test_rows_reach_no_weight(tmp_path: Path, tiny_config, history: int) -> None:
    """Also with the user's target-domain history as a DeepFM field: it comes from the training
    split, so shuffled test rows move neither a weight nor a score."""
    tiny_config = tiny_config.override([f"finetune.target_history={history}"])
    tables = toy_tables()
    base = _pipeline(write_dataset(tables, tmp_path / "a"), tiny_config)

    inter = tables["interactions"].copy()
    ds = load_dataset(tmp_path / "a")
    split = split_targets(ds)[ds.target_domains[0]]
    start = split.test["timestamp"].min()
    # Shuffle items among test rows strictly after the test start: the split stays the same.
    rows = inter.index[(inter["domain"] == "t1") & (inter["timestamp"] > start)]
    perm = np.random.default_rng(3).permutation(len(rows))
    inter.loc[rows, "item"] = inter.loc[rows, "item"].to_numpy()[perm]
    shuffled = dict(tables)
    shuffled["interactions"] = inter.drop_duplicates(["user", "item", "domain", "timestamp"])
    other = _pipeline(write_dataset(shuffled, tmp_path / "b"), tiny_config)

    _assert_same_state(base["pretrained"], other["pretrained"])
    _assert_same_state(base["head"], other["head"])
    torch.testing.assert_close(base["normal"], other["normal"], rtol=0, atol=0)
    # ...while the test data itself did change.
    assert base["relevant"] != other["relevant"]


def test_a_rankers_start_depends_on_its_seed_alone(tmp_path: Path, tiny_config) -> None:
    """What ran before in the process (another model, another domain) does not move a fine-tuned
    ranker's initial weights, so a model's rows do not depend on the models run beside it."""
    from peace.flows.rankers import DeepFMRanker

    ds = load_dataset(write_dataset(toy_tables(), tmp_path / "d"))
    pre = pretrain(ds, tiny_config, show_progress=False)
    target = TargetDomain(ds, ds.target_domains[0])
    first = PeaceRanker(pre, target, tiny_config).head.state_dict()
    deepfm = DeepFMRanker(target, tiny_config).state_dict()
    torch.rand(1000)  # the process draws other random numbers in between
    _assert_same_state(first, PeaceRanker(pre, target, tiny_config).head.state_dict())
    _assert_same_state(deepfm, DeepFMRanker(target, tiny_config).state_dict())
    reseeded = PeaceRanker(pre, target, tiny_config.override(["seed=1"])).head.state_dict()
    assert any(not torch.equal(first[k], reseeded[k]) for k in first)


@pytest.mark.parametrize("gap_share", [0.0, 0.1], ids=["no-gap", "gap"])
def test_a_training_rows_history_holds_only_earlier_training_positives(
    tmp_path: Path, tiny_config, gap_share: float
) -> None:
    """finetune.target_history: each training row's bag is the user's positives of the training
    split strictly before the row (never the row's own item, never a later row); with
    finetune.target_history_gap, only those more than the gap before it."""
    from peace.flows.rankers import DeepFMRanker, WithRecent

    ds = load_dataset(write_dataset(toy_tables(), tmp_path / "h"))
    d = ds.target_domains[0]
    split = split_targets(ds)[d]
    rows = split.train
    gap = gap_share * float(rows["timestamp"].max() - rows["timestamp"].min())
    cfg = tiny_config.override(
        ["finetune.target_history=4", f"finetune.target_history_gap={gap!r}"]
    )
    target = TargetDomain(ds, d)
    ranker = DeepFMRanker(target, cfg)
    valid = ranking_task(split.valid, split.train)
    fit_ranker(ranker, target, split.train, valid, cfg.finetune, cfg.seed, show_progress=False)
    states = ranker.states(rows["user"].to_numpy(), rows["timestamp"].to_numpy())
    assert isinstance(states, WithRecent) and states.recent.shape == (len(rows), 4)
    pos = rows[rows["label"] == 1]
    nonempty, left_out = 0, 0
    for k, (user, t) in enumerate(zip(rows["user"], rows["timestamp"], strict=True)):
        earlier = pos[(pos["user"] == user) & (pos["timestamp"] < t - gap)]
        allowed = set(target.to_local(earlier["item"].to_numpy()) + 1)
        bag = [c for c in states.recent[k].tolist() if c > 0]
        assert set(bag) <= allowed and len(bag) == min(4, len(earlier)), (user, t)
        nonempty += bool(bag)
        before = pos[(pos["user"] == user) & (pos["timestamp"] < t)]
        left_out += len(before) - len(earlier)
    assert nonempty > 0
    assert (left_out > 0) == (gap > 0)  # the gap keeps some earlier positives out
    if gap > 0:
        return
    # Scored later (validation, test), the bag is the user's last training positives.
    later = ranker.states(valid.users, np.full(len(valid), np.inf)).recent
    for k, user in enumerate(valid.users):
        mine = pos[pos["user"] == user].sort_values(["timestamp", "item"])
        expected = list(target.to_local(mine["item"].to_numpy()[-4:]) + 1)
        assert [c for c in later[k].tolist() if c > 0] == expected


def test_a_negative_history_gap_is_refused(tmp_path: Path) -> None:
    ds = load_dataset(write_dataset(toy_tables(), tmp_path / "h"))
    d = ds.target_domains[0]
    with pytest.raises(ValueError, match=r"finetune.target_history_gap = -1.0: expected seconds"):
        TargetDomain(ds, d).remember(split_targets(ds)[d].train, 4, -1.0)

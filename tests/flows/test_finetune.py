"""Fine-tuning budget (``epochs``, ``min_steps``) and early stopping (patience)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from peace.data.dataset import load_dataset
from peace.data.splits import split_targets
from peace.flows.finetune import fit_ranker, ranking_task
from peace.flows.rankers import DeepFMRanker, TargetDomain


def _first_target(toy_dir: Path):
    ds = load_dataset(toy_dir)
    d = ds.target_domains[0]
    return split_targets(ds)[d], TargetDomain(ds, d)


def _fit_deepfm(split, target, cfg) -> list[dict]:
    valid = ranking_task(split.valid, split.train)
    ranker = DeepFMRanker(target, cfg)
    return fit_ranker(ranker, target, split.train, valid, cfg.finetune, 0, show_progress=False)


@pytest.mark.parametrize("patience_steps_in_epochs", [0, 4])
def test_patience_counts_epochs_and_steps(
    toy_dir: Path, tiny_config, patience_steps_in_epochs: int
) -> None:
    split, target = _first_target(toy_dir)
    steps = math.ceil(len(split.train) / tiny_config.finetune.batch_size)  # per epoch
    cfg = tiny_config.override(
        [
            "finetune.lr=0.0",  # nothing improves after the first epoch
            "finetune.epochs=20",
            "finetune.patience=2",
            f"finetune.patience_steps={patience_steps_in_epochs * steps}",
        ]
    )
    log = _fit_deepfm(split, target, cfg)
    # the first epoch, then max(patience, patience_steps / steps) epochs without improvement
    assert len(log) == 1 + max(2, patience_steps_in_epochs)


@pytest.mark.parametrize("min_steps_in_epochs", [0, 3, 7])
def test_min_steps_extends_the_epoch_budget(
    toy_dir: Path, tiny_config, min_steps_in_epochs: int
) -> None:
    split, target = _first_target(toy_dir)
    steps = math.ceil(len(split.train) / tiny_config.finetune.batch_size)  # per epoch
    cfg = tiny_config.override(
        [
            "finetune.epochs=5",
            "finetune.patience=100",  # no early stop: the budget alone ends training
            f"finetune.min_steps={max(0, min_steps_in_epochs * steps - 1)}",  # ceil
        ]
    )
    log = _fit_deepfm(split, target, cfg)
    assert len(log) == max(5, min_steps_in_epochs)


def test_validation_memo_gives_the_same_epochs(toy_dir: Path, tiny_config, monkeypatch) -> None:
    """Frozen encoders: the validation pairs' inputs are computed once and reused every epoch,
    with the same numbers as scoring every pair afresh; trainable encoders are never kept."""
    from peace.flows import finetune
    from peace.flows.pretrain import pretrain
    from peace.flows.rankers import PeaceRanker

    ds = load_dataset(toy_dir)
    d = ds.target_domains[0]
    split = split_targets(ds)[d]
    target = TargetDomain(ds, d)
    cfg = tiny_config.override(
        ["finetune.epochs=4", "finetune.patience=100", "finetune.interaction_features=true"]
    )
    pre = pretrain(ds, cfg, show_progress=False)
    valid = ranking_task(split.valid, split.train)
    calls = []
    pair_inputs = PeaceRanker.pair_inputs
    monkeypatch.setattr(
        PeaceRanker, "pair_inputs", lambda self, *a: calls.append(1) or pair_inputs(self, *a)
    )

    def fit(cfg) -> list[dict]:
        calls.clear()
        ranker = PeaceRanker(pre, target, cfg)
        return fit_ranker(ranker, target, split.train, valid, cfg.finetune, 0, show_progress=False)

    kept = fit(cfg)
    n_train = len(calls)
    monkeypatch.setattr(finetune.PairMemo, "usable", lambda *a: False)
    fresh = fit(cfg)
    assert kept == fresh  # every epoch's loss and metrics, exactly
    assert len(calls) - n_train == 3  # one validation chunk, scored afresh at epochs 2-4
    monkeypatch.undo()
    frozen = PeaceRanker(pre, target, cfg)
    trainable = PeaceRanker(pre, target, cfg.override(["finetune.freeze_encoders=false"]))
    assert not finetune.PairMemo().usable(trainable, 10)
    assert finetune.PairMemo().usable(frozen, 10)
    assert not finetune.PairMemo(max_bytes=100).usable(frozen, 10)
    # a memo answers only for the task it was filled with
    memo = finetune.PairMemo()
    other = ranking_task(split.test, split.train)
    n = len(target.catalogue)
    torch.testing.assert_close(
        finetune.score_catalogue(frozen, valid, n, memo=memo),
        finetune.score_catalogue(frozen, valid, n),
    )
    torch.testing.assert_close(
        finetune.score_catalogue(frozen, other, n, memo=memo),
        finetune.score_catalogue(frozen, other, n),
    )


def test_fine_tuned_encoders_leave_the_pretrained_run_alone(toy_dir: Path, tiny_config) -> None:
    """With ``finetune.freeze_encoders = false`` the ranker trains its own copy of the encoders:
    they train even after a frozen ranker of the same run, and the run, which every other
    domain's rankers and zero-shot scores read, keeps its pre-trained weights."""
    from peace.flows.pretrain import pretrain
    from peace.flows.rankers import PeaceRanker

    split, target = _first_target(toy_dir)
    ds = load_dataset(toy_dir)
    cfg = tiny_config.override(["finetune.epochs=2", "finetune.patience=100"])
    pre = pretrain(ds, cfg, show_progress=False)
    before = {k: v.clone() for k, v in pre.model.state_dict().items()}
    PeaceRanker(pre, target, cfg)  # frozen: turns the run's gradients off
    adapted = cfg.override(["finetune.freeze_encoders=false"])
    ranker = PeaceRanker(pre, target, adapted)
    assert any(p.requires_grad for p in ranker.encoder.parameters())
    valid = ranking_task(split.valid, split.train)
    fit_ranker(ranker, target, split.train, valid, adapted.finetune, 0, show_progress=False)
    trained = ranker.encoder.state_dict()
    assert any(not torch.equal(trained[k], before[k]) for k in before)
    after = pre.model.state_dict()
    assert all(torch.equal(after[k], before[k]) for k in before)


def test_tuned_user_mlp_trains_its_own_copies(toy_dir: Path, tiny_config) -> None:
    """``finetune.tune_user_mlp``: the head trains its own copies of Eq. 9's MLP and Eq. 2's
    attention (the prototypes stay as pre-trained), the run keeps its weights, and the head's
    inputs are not memoised, since they change as it trains."""
    from peace.flows import finetune
    from peace.flows.pretrain import pretrain
    from peace.flows.rankers import PeaceRanker

    split, target = _first_target(toy_dir)
    ds = load_dataset(toy_dir)
    cfg = tiny_config.override(["finetune.epochs=2", "finetune.patience=100"])
    pre = pretrain(ds, cfg, show_progress=False)
    before = {k: v.clone() for k, v in pre.model.state_dict().items()}
    tuned_cfg = cfg.override(["finetune.tune_user_mlp=true"])
    ranker = PeaceRanker(pre, target, tuned_cfg)
    assert ranker.user_parts is not None
    assert not finetune.PairMemo().usable(ranker, 10)
    assert finetune.PairMemo().usable(PeaceRanker(pre, target, cfg), 10)
    valid = ranking_task(split.valid, split.train)
    fit_ranker(ranker, target, split.train, valid, tuned_cfg.finetune, 0, show_progress=False)
    tuned = ranker.user_parts.state_dict()
    mlp = [k for k in tuned if k.startswith("prototypes.enhance_mlp.")]
    fusion = [k for k in tuned if k.startswith("fusion.")]
    assert mlp and fusion
    assert any(not torch.equal(tuned[k], before[k]) for k in mlp + fusion)
    assert torch.equal(tuned["prototypes.weight"], before["prototypes.weight"])
    after = pre.model.state_dict()
    assert all(torch.equal(after[k], before[k]) for k in before)
    # the copies are what the ranker scores with: a ranker on the run's own parts reads others
    frozen = PeaceRanker(pre, target, cfg)
    users = torch.as_tensor(valid.users[:4], dtype=torch.long)
    items = torch.arange(len(target.catalogue)).expand(len(users), -1)
    ranker.eval()
    frozen.eval()
    with torch.no_grad():
        own = ranker.pair_inputs(users, ranker.states(valid.users[:4], valid.times[:4]), items)
        plain = frozen.pair_inputs(users, frozen.states(valid.users[:4], valid.times[:4]), items)
    assert own[0].shape == plain[0].shape
    assert not torch.allclose(own[0], plain[0])
    torch.testing.assert_close(own[1], plain[1])  # item vectors: the frozen entity table
    # Eq. 8's keys, kept once per catalogue item, are the ones each batch would compute
    assert ranker._keys is not None and frozen._keys is None
    encoded = ranker.states(valid.users[:4], valid.times[:4])
    with torch.no_grad():
        afresh = pre.model.user_vectors(encoded, own[1], ranker.user_parts)
    torch.testing.assert_close(own[0], afresh, rtol=0, atol=0)

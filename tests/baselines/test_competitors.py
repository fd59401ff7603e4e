"""Every competitor on a tiny dataset: its loss falls, its scores have the right shapes, and the
same seed gives the same model and the same metrics."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from peace.baselines import build_competitor, competitor_names
from peace.data.dataset import load_dataset
from peace.data.splits import split_targets
from peace.flows.finetune import evaluate_ranker, fit_ranker, ranking_task, score_catalogue
from peace.flows.pretrain import pretrain
from peace.flows.rankers import PeaceRanker, TargetDomain, ZeroShotRanker

NAMES = competitor_names()


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> object:
    from conftest import toy_tables

    from peace.data.contract import write_dataset

    return load_dataset(write_dataset(toy_tables(), tmp_path_factory.mktemp("toy") / "toy"))


@pytest.fixture
def cfg(tiny_config):
    return tiny_config.override(["pretrain.epochs=4", "finetune.epochs=2"])


def _fine_tuned(ds, pre, cfg, seed: int) -> tuple[PeaceRanker, TargetDomain, object]:
    """``pre``'s ranker fine-tuned on the first target domain, the domain and its split."""
    d = ds.target_domains[0]
    target = TargetDomain(ds, d)
    split = split_targets(ds, cfg.eval.split)[d]
    ranker = PeaceRanker(pre, target, cfg)
    valid = ranking_task(split.valid, split.train)
    fit_ranker(ranker, target, split.train, valid, cfg.finetune, seed, show_progress=False)
    return ranker, target, split


@pytest.mark.parametrize("name", NAMES)
def test_pretraining_loss_falls(toy, cfg, name: str) -> None:
    pre = pretrain(toy, cfg, show_progress=False, architecture=name)
    losses = [e["loss"] for e in pre.log]
    assert len(losses) == 4 and all(np.isfinite(losses))
    assert losses[-1] < losses[0], losses


@pytest.mark.parametrize("name", NAMES)
def test_pretraining_ignores_the_prototype_loss_keys(toy, cfg, name: str) -> None:
    """What ``peace.eval.update.PEACE_PRETRAIN_KEYS`` promises for Eq. 7's tau and gamma: a
    competitor pre-trains to the same weights whatever their values."""
    short = cfg.override(["pretrain.epochs=1"])
    first = pretrain(toy, short, show_progress=False, architecture=name)
    other = short.override(["pretrain.tau=0.9", "pretrain.gamma=3.0"])
    second = pretrain(toy, other, show_progress=False, architecture=name)
    assert [e["loss"] for e in first.log] == [e["loss"] for e in second.log]
    assert torch.equal(first.entity_table(), second.entity_table())


@pytest.mark.parametrize("name", NAMES)
def test_pretraining_in_bf16(toy, cfg, name: str) -> None:
    """``pretrain.precision = "bf16"`` holds for every competitor, and its first epoch's loss
    agrees with float32's within bfloat16's rounding."""
    short = cfg.override(["pretrain.epochs=1"])
    exact = pretrain(toy, short, show_progress=False, architecture=name)
    half = pretrain(
        toy, short.override(['pretrain.precision="bf16"']), show_progress=False, architecture=name
    )
    np.testing.assert_allclose(half.log[0]["loss"], exact.log[0]["loss"], rtol=2e-2)


@pytest.mark.parametrize("name", NAMES)
def test_scores_have_the_right_shapes(toy, cfg, name: str) -> None:
    pre = pretrain(toy, cfg.override(["pretrain.epochs=1"]), show_progress=False, architecture=name)
    d = toy.target_domains[0]
    target = TargetDomain(toy, d)
    split = split_targets(toy, cfg.eval.split)[d]
    users = np.array([0, 1, 2, 3])
    times = np.full(4, 1e9)
    n_items = len(target.catalogue)
    items = torch.arange(n_items).expand(4, -1)
    for ranker in (PeaceRanker(pre, target, cfg), ZeroShotRanker(pre, target)):
        states = ranker.states(users, times)
        if isinstance(ranker, ZeroShotRanker) or ranker.precomputed:
            assert states.shape[0] == 4 and states.shape[-1] == cfg.model.dim
        logits = ranker(torch.as_tensor(users), states, items)
        assert logits.shape == (4, n_items)
        assert torch.isfinite(logits).all()
        task = ranking_task(split.test, split.train)
        assert score_catalogue(ranker, task, n_items).shape == (len(task), n_items)
    # finetune.tune_user_mlp finds nothing to fine-tune: a competitor's user vectors are its
    # states, or one of them, with no parameters between (peace.eval.update.PEACE_HEAD_KEYS)
    assert len(pre.model.user_parts()) == 0
    tuned = PeaceRanker(pre, target, cfg.override(["finetune.tune_user_mlp=true"]))
    assert tuned.user_parts is None


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_same_model_and_metrics(toy, cfg, name: str) -> None:
    def run(seed: int) -> tuple[torch.Tensor, dict]:
        c = cfg.override([f"seed={seed}", "pretrain.epochs=2"])
        pre = pretrain(toy, c, show_progress=False, architecture=name)
        ranker, target, split = _fine_tuned(toy, pre, c, seed)
        return pre.entity_table(), evaluate_ranker(
            ranker, target, ranking_task(split.test), seed=seed
        )

    table_a, metrics_a = run(0)
    table_b, metrics_b = run(0)
    table_c, _ = run(1)
    torch.testing.assert_close(table_a, table_b, rtol=0, atol=0)
    assert metrics_a == metrics_b
    assert not torch.equal(table_a, table_c)


def test_unknown_competitor_is_named(toy, cfg) -> None:
    with pytest.raises(ValueError, match="unknown competitor 'Nope'"):
        build_competitor("Nope", None, cfg)


def test_frozen_encoder_stays_frozen_without_patches(toy, cfg) -> None:
    """Only the head (and a model's declared patches) train in the lightweight mode."""
    for name in NAMES:
        pre = pretrain(
            toy, cfg.override(["pretrain.epochs=1"]), show_progress=False, architecture=name
        )
        before = {k: v.clone() for k, v in pre.model.state_dict().items()}
        patches = {id(p) for p in pre.model.patch_parameters()}
        _fine_tuned(toy, pre, cfg, 0)
        named = dict(pre.model.named_parameters())
        for key, value in before.items():
            if key in named and id(named[key]) in patches:
                continue
            torch.testing.assert_close(
                pre.model.state_dict()[key],
                value,
                rtol=0,
                atol=0,
                msg=f"{name}: {key} changed while frozen",
            )

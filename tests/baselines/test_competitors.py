"""Every competitor on a tiny dataset: its loss falls, its scores have the right shapes, and the
same seed gives the same model and the same metrics."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import fine_tune, first_target

from peace.baselines import build_competitor, competitor_names
from peace.flows.finetune import evaluate_ranker, ranking_task, score_catalogue
from peace.flows.pretrain import pretrain
from peace.flows.rankers import PeaceRanker, ZeroShotRanker

NAMES = competitor_names()


@pytest.fixture
def cfg(tiny_config):
    return tiny_config.override(["pretrain.epochs=4", "finetune.epochs=2"])


@pytest.mark.parametrize("name", NAMES)
def test_pretraining_loss_falls(toy, cfg, name: str) -> None:
    pre = pretrain(toy, cfg, show_progress=False, architecture=name)
    losses = [e["loss"] for e in pre.log]
    assert len(losses) == 4 and all(np.isfinite(losses))
    assert losses[-1] < losses[0], losses


@pytest.mark.parametrize("name", NAMES)
def test_scores_have_the_right_shapes(toy, cfg, name: str) -> None:
    pre = pretrain(toy, cfg.override(["pretrain.epochs=1"]), show_progress=False, architecture=name)
    target, split = first_target(toy, cfg)
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


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_same_model_and_metrics(toy, cfg, name: str) -> None:
    def run(seed: int) -> tuple[torch.Tensor, dict]:
        c = cfg.override([f"seed={seed}", "pretrain.epochs=2"])
        pre = pretrain(toy, c, show_progress=False, architecture=name)
        target, split = first_target(toy, c)
        ranker = PeaceRanker(pre, target, c)
        fine_tune(ranker, target, split, c, seed)
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
        target, split = first_target(toy, cfg)
        fine_tune(PeaceRanker(pre, target, cfg), target, split, cfg, 0)
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

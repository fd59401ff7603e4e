"""PeterRec's model patches: idle in pre-training, the identity when switched on, and the only
encoder parameters that fine-tuning trains."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from peace.baselines.base import left_align
from peace.data.dataset import load_dataset
from peace.data.splits import split_targets
from peace.flows.finetune import fit_ranker, ranking_task
from peace.flows.pretrain import pretrain
from peace.flows.rankers import PeaceRanker, TargetDomain


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> object:
    from conftest import toy_tables

    from peace.data.contract import write_dataset

    return load_dataset(write_dataset(toy_tables(), tmp_path_factory.mktemp("toy") / "toy"))


@pytest.fixture
def pre(toy, tiny_config):
    cfg = tiny_config.override(["pretrain.epochs=1", "finetune.epochs=2"])
    return pretrain(toy, cfg, show_progress=False, architecture="PeterRec")


def _patch_keys(model) -> set[str]:
    return {k for k in model.state_dict() if ".patches." in k}


def _user_states(pre, users: np.ndarray) -> torch.Tensor:
    return pre.interests(users, np.full(len(users), 1e9))


def test_patches_are_idle_in_pretraining(pre) -> None:
    """Pre-training leaves the patches' zero output layers as they were built."""
    assert not pre.model.patched
    for block in pre.model.blocks:
        for patch in block.patches:
            assert torch.count_nonzero(patch.up.weight) == 0
            assert torch.count_nonzero(patch.up.bias) == 0


def test_patches_start_as_the_identity(pre) -> None:
    users = np.arange(8)
    before = _user_states(pre, users)
    assert torch.linalg.vector_norm(before) > 0
    params = pre.model.patch_parameters()
    assert pre.model.patched and len(params) == 4 * 2 * len(pre.model.blocks)
    torch.testing.assert_close(_user_states(pre, users), before, rtol=0, atol=0)


def test_fine_tuning_trains_only_patches_and_head(toy, pre) -> None:
    cfg = pre.config.override(["finetune.epochs=2"])
    encoder_before = {k: v.clone() for k, v in pre.model.state_dict().items()}
    d = toy.target_domains[0]
    target = TargetDomain(toy, d)
    split = split_targets(toy, cfg.eval.split)[d]
    ranker = PeaceRanker(pre, target, cfg)
    assert not ranker.precomputed
    head_before = {k: v.clone() for k, v in ranker.head.state_dict().items()}
    trainable = {id(p) for p in ranker.parameters() if p.requires_grad}
    patches = {id(p) for p in pre.model.patch_parameters()}
    assert patches <= trainable
    assert trainable - patches == {id(p) for p in ranker.head.parameters()}
    valid = ranking_task(split.valid, split.train)
    fit_ranker(ranker, target, split.train, valid, cfg.finetune, 0, show_progress=False)
    after = pre.model.state_dict()
    patch_keys = _patch_keys(pre.model)
    for key, value in encoder_before.items():
        if key not in patch_keys:
            torch.testing.assert_close(after[key], value, rtol=0, atol=0, msg=key)
    assert any(not torch.equal(after[k], encoder_before[k]) for k in patch_keys)
    head_after = ranker.head.state_dict()
    assert any(not torch.equal(head_after[k], v) for k, v in head_before.items())


def test_each_fine_tuning_starts_from_identity_patches(pre) -> None:
    """Patches trained for one target are reset when the next asks for them."""
    users = np.arange(8)
    plain = _user_states(pre, users)
    for p in pre.model.patch_parameters():
        with torch.no_grad():
            p.add_(0.5)
    assert not torch.equal(_user_states(pre, users), plain)
    pre.model.patch_parameters()
    torch.testing.assert_close(_user_states(pre, users), plain, rtol=0, atol=0)


@pytest.mark.parametrize("length", [5, 30, 140])
def test_user_vector_from_the_receptive_field_equals_the_full_pass(pre, length: int) -> None:
    model = pre.model
    model.patch_parameters()
    for p in model.patch_parameters():
        with torch.no_grad():
            p.add_(0.1)  # non-identity patches take part too
    gen = torch.Generator().manual_seed(0)
    n_entities = model.num_entities
    mask = torch.rand(6, length, generator=gen) < 0.7
    mask[0] = False
    tokens = torch.randint(0, n_entities, (6, length), generator=gen)
    tokens = torch.where(mask, tokens, torch.full_like(tokens, model.pad))
    table = pre.entity_table()
    with torch.no_grad():
        full = model._encode(table, *left_align(tokens, mask, model.pad))[:, -1]
        last = model.encode_users(table, torch.arange(6), tokens, mask)
    torch.testing.assert_close(last, full, rtol=1e-5, atol=1e-6)
    assert torch.count_nonzero(last[0]) == 0  # an empty history

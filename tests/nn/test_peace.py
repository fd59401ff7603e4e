"""The PEACE network: Eq. 1-4 and 7-10 put together."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from peace.config import ModelConfig, PeaceConfig
from peace.data.dataset import load_dataset
from peace.data.history import HistoryIndex
from peace.eval.protocol import PEACE_VARIANTS
from peace.nn.entity_encoder import EntityGraph
from peace.nn.peace import PEACE, PretrainBatch, item_vectors

N_ENTITIES, N_RELATIONS = 40, 3


def _graph(seed: int = 0) -> EntityGraph:
    rng = np.random.default_rng(seed)
    m = 90
    heads, tails = rng.integers(0, N_ENTITIES, m), rng.integers(0, N_ENTITIES, m)
    trip = np.stack([heads, rng.integers(0, N_RELATIONS, m), tails], 1)
    return EntityGraph(trip, N_ENTITIES, N_RELATIONS)


def _model(config: PeaceConfig, **changes) -> PEACE:
    torch.manual_seed(0)
    model_cfg = dataclasses.replace(config.model, **changes)
    return PEACE(N_ENTITIES, 2 * N_RELATIONS, model_cfg)


def _batch(b: int = 6, length: int = 10, c: int = 4, seed: int = 0) -> PretrainBatch:
    gen = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, N_ENTITIES, (b, length), generator=gen)
    mask = torch.rand(b, length, generator=gen) > 0.3
    mask[0] = False  # a user without history
    tokens[~mask] = N_ENTITIES
    targets = torch.randint(0, N_ENTITIES, (b, c), generator=gen)
    valid = torch.ones(b, c, dtype=torch.bool)
    valid[1, 2:] = False
    targets[~valid] = N_ENTITIES
    labels = (torch.rand(b, c, generator=gen) > 0.5).float()
    return PretrainBatch(tokens, mask, targets, labels, valid)


def test_shapes(tiny_config: PeaceConfig) -> None:
    model = _model(tiny_config)
    cfg = tiny_config.model
    table = model.entity_encoder(_graph())
    assert table.shape == (N_ENTITIES + 1, cfg.dim)
    batch = _batch()
    interests = model.encode_interests(table, batch.tokens, batch.mask)
    assert interests.shape == (6, cfg.n_interests, cfg.dim)
    assert (interests[0] == 0).all()
    targets = table[batch.targets]
    users = model.user_vectors(interests, targets)
    assert users.shape == (6, 4, cfg.dim)
    assert model.universal(interests).shape == (6, cfg.dim)
    assert model.decode(users, targets).shape == (6, 4)
    for scorer in ("inner", "inner-enhanced", "decoder"):
        assert model.zero_shot_scores(interests, targets, scorer).shape == (6, 4)
    inner = model.zero_shot_scores(interests, targets, "inner")
    universal = model.universal(interests).unsqueeze(1)
    torch.testing.assert_close(inner, (universal * targets).sum(-1))
    enhanced = model.zero_shot_scores(interests, targets, "inner-enhanced")
    torch.testing.assert_close(enhanced, (users * targets).sum(-1))
    torch.testing.assert_close(
        model.zero_shot_scores(interests, targets, "decoder"), model.decode(users, targets)
    )


def test_user_vectors_depend_on_the_target_only_with_pea(tiny_config: PeaceConfig) -> None:
    table = _model(tiny_config).entity_encoder(_graph())
    batch = _batch()
    for use_pea in (True, False):
        model = _model(tiny_config, use_pea=use_pea)
        interests = model.encode_interests(table, batch.tokens, batch.mask)
        a = model.user_vectors(interests, table[batch.targets])
        b = model.user_vectors(interests, table[torch.roll(batch.targets, 1, dims=1)])
        if use_pea:
            assert not torch.allclose(a[2:], b[2:])
        else:
            torch.testing.assert_close(a, b)
            universal = model.universal(interests).unsqueeze(1).expand_as(a)
            torch.testing.assert_close(a, universal)


def test_pretrain_losses(tiny_config: PeaceConfig) -> None:
    model = _model(tiny_config)
    table = model.entity_encoder(_graph())
    batch = _batch()
    for gamma in (1.0, 0.3):
        losses = model.pretrain_losses(table, batch, tau=0.2, gamma=gamma)
        assert set(losses) == {"et", "cp", "total"}
        torch.testing.assert_close(losses["total"], losses["et"] + gamma * losses["cp"])
    # Eq. 4 over the valid pairs only, Eq. 7 over the distinct valid targets.
    interests = model.encode_interests(table, batch.tokens, batch.mask)
    targets = table[batch.targets]
    logits = model.decode(model.user_vectors(interests, targets), targets)
    et = F.binary_cross_entropy_with_logits(logits[batch.valid], batch.labels[batch.valid])
    torch.testing.assert_close(losses["et"], et)
    distinct = torch.unique(batch.targets[batch.valid])
    assert N_ENTITIES not in distinct.tolist()
    torch.testing.assert_close(
        losses["cp"], model.prototypes.contrastive_loss(table[distinct], 0.2)
    )
    # Changing the label of an invalid pair changes nothing.
    batch.labels[1, 3] = 1 - batch.labels[1, 3]
    torch.testing.assert_close(model.pretrain_losses(table, batch, 0.2, 1.0)["et"], et)


def test_no_cp_without_cpl(tiny_config: PeaceConfig) -> None:
    model = _model(tiny_config, use_cpl=False)
    table = model.entity_encoder(_graph())
    losses = model.pretrain_losses(table, _batch(), tau=0.2, gamma=1.0)
    assert set(losses) == {"et", "total"}
    torch.testing.assert_close(losses["total"], losses["et"])


def test_gradients_reach_every_part(tiny_config: PeaceConfig) -> None:
    model = _model(tiny_config)
    losses = model.pretrain_losses(model.entity_encoder(_graph()), _batch(), 0.2, 1.0)
    losses["total"].backward()
    parts = {
        "prototypes": model.prototypes.weight,
        "prototype MLP": model.prototypes.enhance_mlp.net[0].weight,
        "entity embeddings": model.entity_encoder.embedding.weight,
        "relation embeddings": model.entity_encoder.relation.weight,
        "GAT": model.entity_encoder.convs[0].lin.weight,
        "decoder": model.decoder.net[0].weight,
        "decoder output": model.decoder.net[-1].weight,
        "interest kernels": model.interests.kernels.weight,
        "fusion": model.fusion.W.weight,
    }
    for name, param in parts.items():
        assert param.grad is not None, name
        assert param.grad.isfinite().all(), name
        assert param.grad.abs().sum() > 0, name


def test_ablation_switches_shape_the_encoder(tiny_config: PeaceConfig) -> None:
    no_graph = _model(tiny_config, use_graph=False)
    table = no_graph.entity_encoder(_graph())
    torch.testing.assert_close(table[:N_ENTITIES], no_graph.entity_encoder.embedding.weight)
    assert (table[N_ENTITIES] == 0).all()
    no_types = _model(tiny_config, use_relation_types=False)
    assert no_types.entity_encoder.relation is None
    assert _model(tiny_config).entity_encoder.relation is not None
    deep = _model(tiny_config, gnn_layers=3)
    assert len(deep.entity_encoder.convs) == 3


def test_entity_mean_reference_is_the_mean_of_the_history_inputs(tiny_config: PeaceConfig) -> None:
    """The "Entity mean" variant: z_u is the mean of the user's history input vectors (plus the
    shared vector of Eq. 2), whatever the target, with no graph attention."""
    switches = PEACE_VARIANTS["Entity mean"]
    model = _model(tiny_config, user_prior=True, **switches)
    with torch.no_grad():
        model.fusion.prior.normal_()
    table = model.entity_encoder(_graph())
    batch = _batch()
    interests = model.encode_interests(table, batch.tokens, batch.mask)
    inputs = model.entity_encoder.embedding.weight[batch.tokens.clamp(max=N_ENTITIES - 1)]
    mask = batch.mask.unsqueeze(-1)
    mean = (inputs * mask).sum(1) / mask.sum(1).clamp(min=1)
    expected = mean + model.fusion.prior
    torch.testing.assert_close(model.universal(interests), expected)
    users = model.user_vectors(interests, table[batch.targets])
    torch.testing.assert_close(users, expected.unsqueeze(1).expand_as(users))


def test_on_the_toy_dataset(toy_dir: Path, tiny_config: PeaceConfig) -> None:
    ds = load_dataset(toy_dir)
    cfg: ModelConfig = tiny_config.model
    graph = EntityGraph(ds.triplets, ds.num_entities, ds.num_relations, cfg.undirected)
    torch.manual_seed(0)
    model = PEACE(ds.num_entities, graph.num_edge_types, cfg)
    history = HistoryIndex(ds, cfg.history_length)
    rows = ds.interactions[ds.interactions["domain"].isin(ds.source_domains)].iloc[:32]
    tokens, mask = history.lookup(rows["user"].to_numpy(), rows["timestamp"].to_numpy())
    targets = torch.as_tensor(ds.item_entities[rows["item"].to_numpy()])
    valid = targets >= 0
    targets[~valid] = ds.num_entities
    labels = torch.tensor(rows["label"].to_numpy(), dtype=torch.float32)
    batch = PretrainBatch(tokens, mask, targets, labels[:, None].expand_as(targets).clone(), valid)
    losses = model.pretrain_losses(model.entity_encoder(graph), batch, 0.2, 1.0)
    assert all(v.isfinite() for v in losses.values())
    assert not mask.all() and mask.any()


@pytest.mark.parametrize("scorer", ["inner", "inner-enhanced", "decoder"])
def test_zero_shot_scores_rank_items_by_their_vectors(tiny_config: PeaceConfig, scorer) -> None:
    model = _model(tiny_config, use_pea=False)
    table = model.entity_encoder(_graph())
    batch = _batch()
    interests = model.encode_interests(table, batch.tokens, batch.mask)
    items = table[batch.targets[:, :3]]
    scores = model.zero_shot_scores(interests, items, scorer)
    # Without PEA, a user's score for an item does not depend on the other candidates.
    swapped = model.zero_shot_scores(interests, items[:, [2, 1, 0]], scorer)
    torch.testing.assert_close(scores[:, [2, 1, 0]], swapped)


def test_item_vectors_gradient_is_the_same_on_two_threads() -> None:
    """Rows shared by many items get their gradient summed in one order on any thread count, so
    a seed gives the same weights with two threads (indexing's backward adds them atomically)."""
    gen = torch.Generator().manual_seed(0)
    items = torch.randint(-1, 40, (60_000, 3), generator=gen)  # -1: fewer than three entities
    upstream = torch.randn(60_000, 32, generator=gen)
    table = torch.randn(41, 32, generator=gen)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        grads = []
        for _ in range(4):
            weights = table.clone().requires_grad_()
            (item_vectors(weights, items) * upstream).sum().backward()
            grads.append(weights.grad)
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(grads[0], g) for g in grads[1:])
    expected = torch.zeros_like(table)  # by definition: each item adds upstream / n to its rows
    for k in range(3):
        valid = items[:, k] >= 0
        n = (items >= 0).sum(1, keepdim=True).clamp(min=1)[valid]
        expected.index_add_(0, items[valid, k], upstream[valid] / n)
    torch.testing.assert_close(grads[0], expected, rtol=1e-4, atol=1e-4)

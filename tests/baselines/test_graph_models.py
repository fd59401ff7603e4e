"""Properties of the graph competitors (SimGCL, PCRec-L, PCRec-D, Tiger) worth pinning."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from peace.baselines.base import SourceContext, UserEntityGraph
from peace.baselines.pcrec import (
    Messages,
    PCRecD,
    PCRecL,
    message_blocks,
    neighbour_routing,
    uniform_blocks,
)
from peace.baselines.simgcl import SimGCL, SymmetricGraph, symmetric_mm
from peace.baselines.tiger import Tiger, interest_graph_pairs
from peace.nn.peace import PretrainBatch

GRAPH_MODELS = (SimGCL, PCRecL, PCRecD, Tiger)


def _context(seed: int = 0, num_entities: int = 12, num_users: int = 7) -> SourceContext:
    """A small context: every user has a few entities; entity 11 and user 6 are isolated."""
    rng = np.random.default_rng(seed)
    item_entities = rng.integers(0, num_entities - 1, (10, 3))
    item_entities[0, 2] = -1
    user_items = np.array([(u, i) for u in range(num_users - 1) for i in rng.choice(6, 3, False)])
    ents = item_entities[user_items[:, 1]]
    pairs = np.stack([np.repeat(user_items[:, 0], 3), ents.reshape(-1)], 1)
    pairs = np.unique(pairs[pairs[:, 1] >= 0], axis=0)
    triplets = np.array([[0, 0, 1], [1, 0, 0], [2, 1, 2], [3, 1, 9]])
    return SourceContext(
        num_entities=num_entities,
        num_users=num_users,
        num_items=10,
        num_relations=2,
        sequence_length=6,
        item_entities=item_entities,
        user_entities=pairs,
        user_items=user_items,
        triplets=triplets,
    )


def _batch(ctx: SourceContext, seed: int = 0) -> PretrainBatch:
    gen = torch.Generator().manual_seed(seed)
    b, c = 5, 6
    targets = torch.randint(0, ctx.num_entities, (b, c), generator=gen)
    valid = torch.rand(b, c, generator=gen) > 0.2
    targets[~valid] = ctx.pad
    return PretrainBatch(
        tokens=torch.full((b, ctx.sequence_length), ctx.pad),
        mask=torch.zeros(b, ctx.sequence_length, dtype=torch.bool),
        targets=targets,
        labels=(torch.rand(b, c, generator=gen) > 0.5).float(),
        valid=valid,
        users=torch.randint(0, ctx.num_users, (b,), generator=gen),
    )


def test_normalised_adjacency_matches_the_shared_user_entity_graph() -> None:
    ctx = _context()
    reference = UserEntityGraph(ctx)
    e, u = ctx.user_entities[:, 1], ctx.user_entities[:, 0] + ctx.num_entities + 1
    graph = SymmetricGraph(np.stack([u, e], 1), reference.num_nodes)
    dense = graph.adjacency.to_dense()
    torch.testing.assert_close(dense, reference.adjacency.to_dense())
    torch.testing.assert_close(dense, dense.T)
    # Every entry of row i is 1 / sqrt(d_i d_j); rows of isolated nodes are empty.
    deg = (dense > 0).sum(1).float()
    rows, cols = torch.nonzero(dense, as_tuple=True)
    torch.testing.assert_close(dense[rows, cols], (deg[rows] * deg[cols]).rsqrt())
    assert dense[ctx.num_entities].abs().sum() == 0  # the padding node
    # Dropping edges renormalises over the kept ones, like the shared graph's dropout.
    keep = torch.tensor([i % 3 != 0 for i in range(graph.num_pairs)])
    kept = reference.normalised(reference.edges[:, torch.cat([keep, keep])]).to_dense()
    torch.testing.assert_close(graph.normalised(keep).to_dense(), kept)


def test_symmetric_product_has_the_dense_gradient() -> None:
    ctx = _context()
    graph = SymmetricGraph(np.stack([ctx.user_entities[:, 0] + 13, ctx.user_entities[:, 1]], 1), 20)
    x = torch.randn(20, 4, requires_grad=True)
    w = torch.randn(20, 4)
    (symmetric_mm(graph.adjacency, x) * w).sum().backward()
    dense = graph.adjacency.to_dense()
    y = x.detach().clone().requires_grad_()
    ((dense @ y) * w).sum().backward()
    torch.testing.assert_close(x.grad, y.grad)


@pytest.mark.parametrize("model_class", GRAPH_MODELS)
def test_table_layout_and_padding(tiny_config, model_class) -> None:
    ctx = _context()
    torch.manual_seed(0)
    model = model_class(ctx, tiny_config)
    for training in (True, False):
        model.train(training)
        table = model.encoder_table(None)
        assert table.shape == (ctx.num_entities + 1 + ctx.num_users, tiny_config.model.dim)
        assert torch.all(table[ctx.pad] == 0)
        users = torch.tensor([0, 3])
        torch.testing.assert_close(
            model.encode_users(table, users, None, None), table[users + ctx.num_entities + 1]
        )


@pytest.mark.parametrize("model_class", GRAPH_MODELS)
def test_augmentation_is_off_in_eval_mode(tiny_config, model_class) -> None:
    """Inference neither draws random numbers nor depends on them; training losses add terms."""
    ctx = _context()
    torch.manual_seed(0)
    model = model_class(ctx, tiny_config).eval()
    batch = _batch(ctx)
    torch.manual_seed(1)
    state = torch.get_rng_state()
    with torch.no_grad():
        first = model.encoder_table(None)
        losses = model.pretrain_losses(first, batch, 0.2, 1.0)
    assert torch.equal(torch.get_rng_state(), state)
    torch.manual_seed(2)
    with torch.no_grad():
        second = model.encoder_table(None)
    assert torch.equal(first, second)
    assert torch.equal(losses["total"], losses["et"])
    model.train()
    table = model.encoder_table(None)
    train_losses = model.pretrain_losses(table, batch, 0.2, 1.0)
    assert set(train_losses) == {"total", "et"}
    assert train_losses["total"] > train_losses["et"]  # contrastive and / or L2 terms


def test_simgcl_noise_only_enters_the_contrastive_views(tiny_config) -> None:
    ctx = _context()
    torch.manual_seed(0)
    model = SimGCL(ctx, tiny_config).train()
    torch.manual_seed(1)
    a = model.encoder_table(None)
    torch.manual_seed(2)
    assert torch.equal(a, model.encoder_table(None))
    # The clean table is the mean of propagated layers 1..L (the input layer is skipped).
    ego = model.embedding()
    h1 = graph_mm(model.graph, ego)
    torch.testing.assert_close(a, (h1 + graph_mm(model.graph, h1)) / 2)


def graph_mm(graph: SymmetricGraph, x: torch.Tensor) -> torch.Tensor:
    return graph.adjacency.to_dense() @ x


def test_tiger_discards_the_users_bottom_layer_and_keeps_every_entity_layer(tiny_config) -> None:
    ctx = _context()
    torch.manual_seed(0)
    model = Tiger(ctx, tiny_config).eval()
    ego = model.embedding()
    h1 = graph_mm(model.graph, ego)
    h2 = graph_mm(model.graph, h1)
    table = model.encoder_table(None)
    e, u = ctx.num_entities + 1, ctx.num_entities + 1 + ctx.num_users
    torch.testing.assert_close(table[:e], ((ego + h1 + h2) / 3)[:e])
    torch.testing.assert_close(table[e:], ((h1 + h2) / 2)[e:u])


def test_tiger_graph_holds_only_source_items(tiny_config) -> None:
    ctx = _context()
    pairs, items = interest_graph_pairs(ctx)
    np.testing.assert_array_equal(items, np.unique(ctx.user_items[:, 1]))
    assert not set(range(6, ctx.num_items)) & set(items.tolist())  # items 6..9: never seen
    offset = ctx.num_entities + 1 + ctx.num_users
    assert pairs.max() < offset + len(items)
    # An item node touches users and its own entities only.
    for j, item in enumerate(items):
        node = offset + j
        ends = set(pairs[pairs[:, 0] == node, 1]) | set(pairs[pairs[:, 1] == node, 0])
        users = {u + ctx.num_entities + 1 for u, i in ctx.user_items if i == item}
        entities = {x for x in ctx.item_entities[item] if x >= 0}
        assert ends == users | entities
    model = Tiger(ctx, tiny_config)
    assert model.graph.num_nodes == offset + len(items)


def test_tiger_graph_of_the_toy_dataset_has_no_target_item(toy_dir, tiny_config) -> None:
    from peace.data.dataset import load_dataset
    from peace.flows.pretrain import pretrain

    ds = load_dataset(toy_dir)
    cfg = tiny_config.override(["pretrain.epochs=1"])
    pre = pretrain(ds, cfg, show_progress=False, architecture="Tiger")
    target = np.concatenate([ds.domain_items(d) for d in ds.target_domains])
    assert len(pre.model.items) > 0
    assert not np.isin(pre.model.items, target).any()


def test_routing_paths_agree() -> None:
    """The dense (fixed fan-in) and the general (edge list) routing give the same layer."""
    torch.manual_seed(0)
    n, s, k, d = 9, 3, 4, 2
    z = torch.nn.functional.normalize(torch.randn(n, k, d), dim=-1)
    src = torch.randint(0, n, (n * s,))
    dst = torch.arange(n).repeat_interleave(s)
    weight = torch.rand(n * s)
    dense = Messages(src, dst, weight, uniform_blocks(n, s, 7), s)
    pointer = torch.arange(n + 1) * s
    general = Messages(src, dst, weight, message_blocks(pointer, 7))
    whole = Messages(src, dst, weight, [(0, n, 0, n * s)])
    a = neighbour_routing(z, dense, 3)
    torch.testing.assert_close(a, neighbour_routing(z, general, 3))
    torch.testing.assert_close(a, neighbour_routing(z, whole, 3))
    assert torch.allclose(a.norm(dim=-1), torch.ones(n, k))


def test_message_blocks_cover_every_node_and_message() -> None:
    pointer = torch.tensor([0, 2, 2, 9, 10, 10, 14])
    blocks = message_blocks(pointer, 4)
    assert blocks[0][0] == 0 and blocks[-1][1] == 6
    for (n0, n1, m0, m1), nxt in zip(blocks, blocks[1:] + [None], strict=True):
        assert (m0, m1) == (int(pointer[n0]), int(pointer[n1]))
        assert m1 - m0 <= 4 or n1 == n0 + 1
        if nxt is not None:
            assert nxt[0] == n1


def _chain_context() -> SourceContext:
    """Every user has exactly one entity and every entity one user: sampling is deterministic."""
    pairs = np.array([[u, u] for u in range(5)])
    return SourceContext(
        num_entities=6,
        num_users=6,
        num_items=6,
        num_relations=1,
        sequence_length=4,
        item_entities=np.arange(18).reshape(6, 3) % 6,
        user_entities=pairs,
        user_items=pairs,
        triplets=np.zeros((0, 3), dtype=np.int64),
    )


def test_pcrec_d_sampled_views_equal_full_routing_when_neighbourhoods_are_fixed(
    tiny_config,
) -> None:
    ctx = _chain_context()
    torch.manual_seed(0)
    model = PCRecD(ctx, tiny_config).eval()
    with torch.no_grad():
        full = model.encoder_table(None)
        model.train()
        sampled = model.encoder_table(None)
        nodes = torch.tensor([8, 0, 3, 11, 6, 2])
        rows = model.subgraph_rows(nodes)
    torch.testing.assert_close(sampled, full)
    torch.testing.assert_close(rows, full[nodes])
    # Isolated entity 5 and user 5 (node 12) keep their own projected factors.
    assert full[5].abs().sum() > 0 and full[12].abs().sum() > 0

"""Properties of the graph competitors (SimGCL, PCRec-L, PCRec-D, Tiger) worth pinning."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from peace.baselines.base import SourceContext
from peace.baselines.graph import SymmetricGraph, symmetric_mm
from peace.baselines.pcrec import (
    Messages,
    PCRecD,
    PCRecL,
    message_blocks,
    neighbour_routing,
    uniform_blocks,
)
from peace.baselines.simgcl import SimGCL
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
        sequence_length=12,
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
    mask = torch.rand(b, ctx.sequence_length, generator=gen) > 0.3
    tokens = torch.randint(0, ctx.num_entities, (b, ctx.sequence_length), generator=gen)
    return PretrainBatch(
        tokens=torch.where(mask, tokens, torch.full_like(tokens, ctx.pad)),
        mask=mask,
        targets=targets,
        labels=(torch.rand(b, c, generator=gen) > 0.5).float(),
        valid=valid,
        users=torch.randint(0, ctx.num_users, (b,), generator=gen),
    )


def _dense_adjacency(pairs: np.ndarray, num_nodes: int) -> torch.Tensor:
    """D^-1/2 A D^-1/2 built densely, entry by entry."""
    a = torch.zeros(num_nodes, num_nodes)
    for u, v in pairs:
        a[u, v] = a[v, u] = 1.0
    deg = a.sum(1).clamp(min=1.0)
    return a / torch.sqrt(deg[:, None] * deg[None, :])


def test_normalised_adjacency_matches_a_dense_construction() -> None:
    ctx = _context()
    num_nodes = ctx.num_entities + 1 + ctx.num_users
    e, u = ctx.user_entities[:, 1], ctx.user_entities[:, 0] + ctx.num_entities + 1
    pairs = np.stack([u, e], 1)
    graph = SymmetricGraph(pairs, num_nodes)
    dense = graph.adjacency.to_dense()
    torch.testing.assert_close(dense, _dense_adjacency(pairs, num_nodes))
    assert dense[ctx.num_entities].abs().sum() == 0  # the padding node
    # Dropping edges renormalises over the kept ones.
    keep = torch.tensor([i % 3 != 0 for i in range(graph.num_pairs)])
    torch.testing.assert_close(
        graph.normalised(keep).to_dense(), _dense_adjacency(pairs[keep.numpy()], num_nodes)
    )


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


def test_symmetric_product_under_bf16_autocast() -> None:
    """``pretrain.precision = "bf16"``: the sparse product (no bfloat16 kernel) stays float32."""
    ctx = _context()
    graph = SymmetricGraph(np.stack([ctx.user_entities[:, 0] + 13, ctx.user_entities[:, 1]], 1), 20)
    x = torch.randn(20, 4, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = symmetric_mm(graph.adjacency, x @ torch.eye(4))  # a bfloat16 input
    assert y.dtype == torch.float32
    y.sum().backward()
    assert x.grad is not None and x.grad.dtype == torch.float32
    expected = graph.adjacency.to_dense() @ x.detach().bfloat16().float()
    torch.testing.assert_close(y.detach(), expected)


def _history_of_edges(ctx: SourceContext, users: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Histories ``[B, L]`` holding exactly each user's graph entities (right-padded)."""
    tokens = torch.full((len(users), ctx.sequence_length), ctx.pad)
    for row, u in enumerate(users):
        ents = ctx.user_entities[ctx.user_entities[:, 0] == u, 1]
        tokens[row, : len(ents)] = torch.as_tensor(ents)
    return tokens, tokens != ctx.pad


@pytest.mark.parametrize("model_class", GRAPH_MODELS)
def test_table_layout_and_padding(tiny_config, model_class) -> None:
    ctx = _context()
    torch.manual_seed(0)
    model = model_class(ctx, tiny_config)
    rows = ctx.num_entities + 1
    for training in (True, False):
        model.train(training)
        table = model.encoder_table(None)
        assert table.shape == (3 * rows + ctx.num_users, tiny_config.model.dim)
        assert torch.all(table[ctx.pad] == 0)
        # User 6 has no edge: its input row is zero, and with no history its vector is zero.
        assert torch.all(table[3 * rows + 6] == 0)
        tokens, mask = _history_of_edges(ctx, [6])
        users = model.encode_users(table, torch.tensor([6]), tokens, mask)
        assert torch.all(users == 0)


@pytest.mark.parametrize("model_class", [SimGCL, PCRecL])
def test_history_propagation_equals_the_graph_for_a_user_whose_history_is_its_edges(
    tiny_config, model_class
) -> None:
    """A user's history-propagated vector is its LightGCN node row when history = its edges."""
    ctx = _context()
    torch.manual_seed(0)
    model = model_class(ctx, tiny_config).eval()
    ego, h1, h2 = dense_layers(model)
    node_rows = (h1 + h2) / 2 if model_class is SimGCL else (ego + h1 + h2) / 3
    users = [0, 2, 5]
    tokens, mask = _history_of_edges(ctx, users)
    with torch.no_grad():
        table = model.encoder_table(None)
        encoded = model.encode_users(table, torch.tensor(users), tokens, mask)
    node_ids = torch.tensor(users) + ctx.num_entities + 1
    torch.testing.assert_close(encoded, node_rows[node_ids].detach())
    torch.testing.assert_close(
        table[: ctx.num_entities + 1], node_rows[: ctx.num_entities + 1].detach()
    )


def test_a_user_without_a_graph_node_is_encoded_from_its_history(tiny_config) -> None:
    """User 6 has no pre-training edge; a history of entities still gives it a vector, and the
    same history gives the same vector to any user without a node."""
    ctx = _context()
    torch.manual_seed(0)
    for model_class in GRAPH_MODELS:
        model = model_class(ctx, tiny_config).eval()
        tokens, mask = _history_of_edges(ctx, [0])
        with torch.no_grad():
            table = model.encoder_table(None)
            cold = model.encode_users(table, torch.tensor([6]), tokens, mask)
        assert cold.abs().sum() > 0, model_class.__name__


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
    # The clean entity rows are the mean of propagated layers 1..L (the input layer is skipped).
    ego = model.embedding()
    h1 = graph_mm(model.graph, ego)
    rows = ctx.num_entities + 1
    torch.testing.assert_close(a[:rows], ((h1 + graph_mm(model.graph, h1)) / 2)[:rows])


def graph_mm(graph: SymmetricGraph, x: torch.Tensor) -> torch.Tensor:
    return graph.adjacency.to_dense() @ x


def dense_layers(model) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A graph model's input rows and its first two LightGCN layers, by dense products."""
    ego = model.embedding()
    h1 = graph_mm(model.graph, ego)
    return ego, h1, graph_mm(model.graph, h1)


def test_tiger_discards_the_users_bottom_layer_and_keeps_every_entity_layer(tiny_config) -> None:
    ctx = _context()
    torch.manual_seed(0)
    model = Tiger(ctx, tiny_config).eval()
    ego, h1, h2 = dense_layers(model)
    table = model.encoder_table(None)
    e = ctx.num_entities + 1
    torch.testing.assert_close(table[:e], ((ego + h1 + h2) / 3)[:e])
    # Users: layers 1..2 of the history, each a normalised sum over the history's entities of
    # the layer below; the user's own input row (layer 0) is left out.
    tokens, mask = _history_of_edges(ctx, [1, 4])
    degree = model.graph.degree[:e].clamp(min=1.0)
    weights = mask.float() / torch.sqrt(mask.sum(1, keepdim=True) * degree[tokens])
    u1 = torch.einsum("bl,bld->bd", weights, ego.detach()[:e][tokens])
    u2 = torch.einsum("bl,bld->bd", weights, h1.detach()[:e][tokens])
    with torch.no_grad():
        encoded = model.encode_users(table, torch.tensor([1, 4]), tokens, mask)
    torch.testing.assert_close(encoded, (u1 + u2) / 2)


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
        nodes = torch.tensor([0, 3, 4, 2, 5])
        rows = model.subgraph_rows(nodes)
        tokens = torch.tensor([[1, 6, 6, 6], [3, 6, 6, 6]])
        users = torch.tensor([1, 3])
        sampled_users = model.encode_users(sampled, users, tokens, tokens != 6)
        model.eval()
        full_users = model.encode_users(full, users, tokens, tokens != 6)
    torch.testing.assert_close(sampled, full)
    torch.testing.assert_close(rows, full[nodes])
    # One history token: sampling it 8 times or reading it once routes the same.
    torch.testing.assert_close(sampled_users, full_users)
    # Isolated entity 5 keeps its own projected factors; user 5 (no edge) has a zero input row.
    assert full[5].abs().sum() > 0
    assert torch.all(model.layout.user_inputs(full, torch.tensor([5])) == 0)

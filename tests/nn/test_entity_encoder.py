"""The entity encoder (graph attention over the entity graph) and the neighbour sampler."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from peace.nn.entity_encoder import EntityEncoder, EntityGraph, NeighbourSampler, layer_sizes


def _random_graph(seed: int, n: int = 30, m: int = 70, relations: int = 3, undirected=True):
    rng = np.random.default_rng(seed)
    heads, tails = rng.integers(0, n, m), rng.integers(0, n, m)
    trip = np.stack([heads, rng.integers(0, relations, m), tails], 1)
    return EntityGraph(trip, n, relations, undirected=undirected)


def _edge_set(edge_index: torch.Tensor, edge_type: torch.Tensor) -> set[tuple[int, int, int]]:
    return set(zip(*edge_index.tolist(), edge_type.tolist(), strict=True))


def test_graph_edges_and_csr() -> None:
    trip = np.array([[0, 0, 1], [1, 1, 2], [3, 0, 1]])
    g = EntityGraph(trip, num_entities=4, num_relations=2, undirected=True)
    assert g.num_edge_types == 4
    expected = {(0, 1, 0), (1, 2, 1), (3, 1, 0), (1, 0, 2), (2, 1, 3), (1, 3, 2)}
    assert _edge_set(g.edge_index, g.edge_type) == expected
    for v in range(4):  # indptr slices are exactly the incoming edges of v
        assert (g.edge_index[1, g.indptr[v] : g.indptr[v + 1]] == v).all()
    assert g.indptr[-1] == 6
    directed = EntityGraph(trip, num_entities=4, num_relations=2, undirected=False)
    assert directed.num_edge_types == 2
    assert _edge_set(directed.edge_index, directed.edge_type) == {(0, 1, 0), (1, 2, 1), (3, 1, 0)}


@pytest.mark.parametrize("feature_dim", [None, 5])
def test_shapes(feature_dim: int | None) -> None:
    torch.manual_seed(0)
    g = _random_graph(0)
    enc = EntityEncoder(30, g.num_edge_types, dim=8, layers=2, feature_dim=feature_dim)
    if feature_dim is not None:
        enc.set_features(np.random.default_rng(0).normal(size=(30, feature_dim)))
    out = enc(g)
    assert out.shape == (31, 8)
    assert (out[30] == 0).all()  # padding row
    nodes, ei, et = NeighbourSampler(g, (3, 2)).sample(torch.tensor([1, 2]))
    assert enc.forward_subgraph(nodes, ei, et).shape == (len(nodes), 8)


def test_without_graph_the_table_is_the_input_embeddings() -> None:
    torch.manual_seed(0)
    g = _random_graph(1)
    enc = EntityEncoder(30, g.num_edge_types, dim=8, use_graph=False)
    out = enc(g)
    torch.testing.assert_close(out[:30], enc.embedding.weight)
    assert (out[30] == 0).all()
    with_graph = EntityEncoder(30, g.num_edge_types, dim=8, use_graph=True)
    with_graph.load_state_dict(enc.state_dict())
    assert not torch.allclose(with_graph(g)[:30], enc.embedding.weight)


def test_relation_types_enter_the_attention() -> None:
    torch.manual_seed(0)
    g = _random_graph(2)
    enc = EntityEncoder(30, g.num_edge_types, dim=8).eval()
    assert all(conv.lin_edge is not None for conv in enc.convs)
    base = enc(g)
    g.edge_type = (g.edge_type + 1) % g.num_edge_types
    assert not torch.allclose(enc(g), base)
    # Without relation types the output ignores them.
    plain = EntityEncoder(30, 0, dim=8).eval()
    assert plain.relation is None
    before = plain(g)
    g.edge_type = torch.zeros_like(g.edge_type)
    torch.testing.assert_close(plain(g), before)


def test_sampled_edges_exist_and_respect_fanout() -> None:
    g = _random_graph(3, n=60, m=300)
    full = _edge_set(g.edge_index, g.edge_type)
    fanout = (3, 2)
    sampler = NeighbourSampler(g, fanout)
    seeds = torch.tensor([4, 17, 4, 31])
    nodes, ei, et = sampler.sample(seeds, torch.Generator().manual_seed(0))
    assert len(set(nodes.tolist())) == len(nodes)
    assert nodes[:3].tolist() == [4, 17, 31]  # the distinct seeds come first
    global_edges = torch.stack([nodes[ei[0]], nodes[ei[1]]])
    sub = _edge_set(global_edges, et)
    assert sub <= full and len(sub) == ei.shape[1]
    # Hop 1: incoming edges of the seeds; hop 2: of the nodes hop 1 found.
    indeg = torch.bincount(ei[1], minlength=len(nodes))
    true_indeg = torch.bincount(g.edge_index[1], minlength=60)[nodes]
    hop1 = torch.unique(nodes[ei[0][torch.isin(ei[1], torch.arange(3))]])
    hop1 = hop1[~torch.isin(hop1, nodes[:3])]
    for local, node in enumerate(nodes.tolist()):
        if local < 3:
            assert indeg[local] == min(fanout[0], true_indeg[local])
        elif node in hop1.tolist():
            assert indeg[local] == min(fanout[1], true_indeg[local])
        else:
            assert indeg[local] == 0  # the last hop's nodes are not expanded
    assert (indeg[3:] <= fanout[1]).all()


def test_sampler_is_deterministic_per_generator_seed() -> None:
    g = _random_graph(4, n=60, m=300)
    sampler = NeighbourSampler(g, (2, 2))
    seeds = torch.tensor([1, 2, 3])
    runs = [sampler.sample(seeds, torch.Generator().manual_seed(s)) for s in (7, 7, 8)]
    for a, b in zip(runs[0], runs[1], strict=True):
        assert torch.equal(a, b)
    assert any(not torch.equal(a, b) for a, b in zip(runs[0], runs[2], strict=True))


def test_sampler_draws_uniformly_above_the_fanout_and_keeps_all_below() -> None:
    # Node 0 has ten incoming edges (from 1-10), node 11 two (from 12, 13); fanout 3.
    trip = np.array([[h, 0, 0] for h in range(1, 11)] + [[12, 0, 11], [13, 0, 11]])
    g = EntityGraph(trip, 14, 1, undirected=False)
    sampler = NeighbourSampler(g, (3,))
    gen = torch.Generator().manual_seed(0)
    counts = torch.zeros(14)
    draws = 2000
    for _ in range(draws):
        nodes, ei, _ = sampler.sample(torch.tensor([0, 11]), gen)
        sources = nodes[ei[0]]
        assert torch.isin(torch.tensor([12, 13]), sources).all()  # below the fanout: all kept
        assert len(sources) == 5
        counts[sources] += 1
    share = counts[1:11] / draws  # each of node 0's edges: 3 / 10 of the draws
    assert (share - 0.3).abs().max() < 0.05, share


@pytest.mark.parametrize(
    ("seed", "layers", "undirected"), [(0, 2, True), (1, 2, False), (2, 1, True), (3, 3, True)]
)
def test_full_fanout_subgraph_equals_full_graph(seed: int, layers: int, undirected: bool) -> None:
    g = _random_graph(seed, n=25, m=45, undirected=undirected)
    max_degree = int(torch.bincount(g.edge_index[1]).max())
    torch.manual_seed(seed)
    enc = EntityEncoder(25, g.num_edge_types, dim=8, layers=layers).eval()
    full = enc(g)
    sampler = NeighbourSampler(g, (max_degree,) * layers)
    for seeds in (torch.tensor([0]), torch.tensor([5, 3, 5]), torch.arange(0, 25, 4)):
        nodes, ei, et = sampler.sample(seeds, torch.Generator().manual_seed(0))
        out = enc.forward_subgraph(nodes, ei, et)
        distinct = torch.unique(seeds)
        torch.testing.assert_close(out[: len(distinct)], full[distinct])
        seeds_only = enc.forward_subgraph(nodes, ei, et, outputs=len(distinct))
        torch.testing.assert_close(seeds_only, full[distinct])


@pytest.mark.parametrize(
    ("seed", "layers", "residual", "fanout"),
    [(0, 2, True, (3, 2)), (1, 2, False, (4, 3)), (2, 1, True, (3,)), (3, 3, True, (2, 2, 2))],
)
def test_seed_outputs_skip_the_outer_nodes_and_stay_exact(
    seed: int, layers: int, residual: bool, fanout: tuple[int, ...]
) -> None:
    # Computing only what the seeds' encodings read gives the same encodings and gradients.
    g = _random_graph(seed, n=80, m=400)
    torch.manual_seed(seed)
    enc = EntityEncoder(80, g.num_edge_types, dim=8, layers=layers, residual=residual)
    seeds = torch.tensor([3, 11, 40, 41])
    nodes, ei, et = NeighbourSampler(g, fanout).sample(seeds, torch.Generator().manual_seed(0))
    sizes = layer_sizes(ei, len(seeds), layers)
    assert (
        sizes[-1] == len(seeds) and sizes == sorted(sizes, reverse=True) and sizes[0] <= len(nodes)
    )
    if layers > 1:
        assert sizes[0] < len(nodes)  # the last hop's nodes are never computed
    grads = []
    for outputs in (None, len(seeds)):
        enc.zero_grad()
        out = enc.forward_subgraph(nodes, ei, et, outputs=outputs)[: len(seeds)]
        (out * torch.arange(out.numel()).view_as(out).sin()).sum().backward()
        grads.append((out.detach(), [p.grad.clone() for p in enc.parameters()]))
    (full, full_grads), (trimmed, trimmed_grads) = grads
    assert trimmed.shape == (len(seeds), 8)
    torch.testing.assert_close(trimmed, full)
    for a, b in zip(full_grads, trimmed_grads, strict=True):
        torch.testing.assert_close(a, b)


def test_two_layers_need_the_two_hop_neighbourhood() -> None:
    # A chain 0 -> 1 -> 2 -> 3: with two layers, node 3 hears from node 1 through node 2.
    trip = np.array([[0, 0, 1], [1, 0, 2], [2, 0, 3]])
    g = EntityGraph(trip, 4, 1, undirected=False)
    torch.manual_seed(0)
    enc = EntityEncoder(4, g.num_edge_types, dim=6, layers=2).eval()
    nodes, ei, et = NeighbourSampler(g, (5, 5)).sample(torch.tensor([3]))
    assert set(nodes.tolist()) == {1, 2, 3}
    torch.testing.assert_close(enc.forward_subgraph(nodes, ei, et)[0], enc(g)[3])
    one_hop = NeighbourSampler(g, (5,)).sample(torch.tensor([3]))
    assert not torch.allclose(enc.forward_subgraph(*one_hop)[0], enc(g)[3])


def test_repr_reads_like_the_constructor() -> None:
    enc = EntityEncoder(30, 6, dim=8, layers=2, heads=2, feature_dim=5, use_graph=False)
    assert repr(enc) == (
        "EntityEncoder(30, 6, dim=8, layers=2, heads=2, feature_dim=5, use_graph=False, "
        "dropout=0.0)"
    )
    rebuilt = eval(repr(enc), {"EntityEncoder": EntityEncoder})
    assert repr(rebuilt) == repr(enc)
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {
        k: v.shape for k, v in enc.state_dict().items()
    }


@pytest.mark.parametrize("heads", [1, 2])
@pytest.mark.parametrize("relations", [True, False])
def test_per_type_attention_equals_the_library_layer(heads: int, relations: bool) -> None:
    """The per-relation-type layer computes GATConv with per-edge relation features, values and
    gradients, including nodes without incoming edges and a graph's own self loops."""
    from torch_geometric.nn import GATConv

    from peace.nn.entity_encoder import relational_attention

    torch.manual_seed(heads)
    n, e, types, d = 40, 160, 5, 8
    conv = GATConv(d, d, heads=heads, concat=False, edge_dim=d if relations else None)
    relation = torch.nn.Embedding(types, d) if relations else None
    x = torch.randn(n, d, requires_grad=True)
    edge_index = torch.randint(0, n - 5, (2, e))  # the last 5 nodes have no incoming edge
    edge_index[:, :3] = torch.tensor([[1, 2, 3], [1, 2, 3]])  # three self loops
    edge_type = torch.randint(0, types, (e,))
    attr = relation(edge_type) if relation is not None else None
    expected = conv(x, edge_index, edge_attr=attr)
    (grad_expected,) = torch.autograd.grad(expected.square().sum(), x)
    keep = edge_index[0] != edge_index[1]  # the encoder drops a graph's self loops first
    got = relational_attention(conv, x, edge_index[:, keep], edge_type[keep], relation)
    (grad_got,) = torch.autograd.grad(got.square().sum(), x)
    assert torch.allclose(got, expected, atol=1e-5)
    assert torch.allclose(grad_got, grad_expected, atol=1e-4)


@pytest.mark.parametrize("residual", [False, True])
def test_unseen_entities_enter_with_zero_inputs_outside_training(residual: bool) -> None:
    torch.manual_seed(0)
    g = _random_graph(5)
    unseen = torch.zeros(30, dtype=torch.bool)
    unseen[[2, 7, 11]] = True
    enc = EntityEncoder(30, g.num_edge_types, dim=8, residual=residual, unseen="zero")
    enc.set_unseen(unseen)
    enc.train()
    trained = enc(g)
    reference = EntityEncoder(30, g.num_edge_types, dim=8, residual=residual)
    reference.load_state_dict(enc.state_dict())
    torch.testing.assert_close(trained, reference(g))  # training: every input as it is
    enc.eval()
    with torch.no_grad():
        reference.embedding.weight[unseen] = 0.0
    served = enc(g)
    torch.testing.assert_close(served, reference(g))
    assert not torch.allclose(served, trained)
    nodes = torch.tensor([7, 3, 11])
    torch.testing.assert_close(enc.inputs(nodes)[[0, 2]], torch.zeros(2, 8))
    keep = EntityEncoder(30, g.num_edge_types, dim=8, residual=residual)
    keep.load_state_dict(enc.state_dict())
    keep.set_unseen(unseen)
    keep.eval()
    torch.testing.assert_close(keep(g), trained)  # "keep" ignores the mask
    with pytest.raises(ValueError, match="expected keep or zero"):
        EntityEncoder(30, g.num_edge_types, dim=8, unseen="drop")


def test_input_dropout_zeroes_whole_inputs_in_training_only() -> None:
    torch.manual_seed(0)
    enc = EntityEncoder(2000, 0, dim=8, input_dropout=0.25)
    enc.train()
    torch.manual_seed(1)
    x = enc.inputs()
    zeroed = (x == 0).all(dim=1)
    kept = ~zeroed
    assert 0.2 < zeroed.float().mean().item() < 0.3
    torch.testing.assert_close(x[kept], enc.embedding.weight[kept])  # kept rows are not rescaled
    torch.manual_seed(1)
    torch.testing.assert_close(enc.inputs(), x)  # the seed fixes the draw
    enc.eval()
    torch.testing.assert_close(enc.inputs(), enc.embedding.weight)
    for bad in (-0.1, 1.0):
        with pytest.raises(ValueError, match="model.entity_dropout"):
            EntityEncoder(10, 0, dim=8, input_dropout=bad)


@pytest.mark.parametrize("heads", [1, 3])
def test_aggregate_equals_gather_multiply_scatter(heads: int) -> None:
    """The fused weighted bags give the message sums of gather, product and index_add, and the
    same gradients for the messages and the attention (nodes without incoming edges get 0)."""
    from peace.nn.entity_encoder import aggregate

    torch.manual_seed(heads)
    n, e, c = 30, 120, 5
    xs = torch.randn(n, heads, c, requires_grad=True)
    alpha = torch.rand(e, heads, requires_grad=True)
    src, dst = torch.randint(0, n, (e,)), torch.randint(0, n - 4, (e,))
    expected = torch.zeros(n, heads, c).index_add(0, dst, xs[src] * alpha.unsqueeze(-1))
    got = aggregate(xs, alpha, src, dst)
    assert got.shape == (n, heads, c)
    assert torch.allclose(got, expected, atol=1e-6)
    assert (got[n - 4 :] == 0).all()
    weights = torch.randn(n, heads, c)
    grads = torch.autograd.grad((expected * weights).sum(), (xs, alpha))
    got_grads = torch.autograd.grad((got * weights).sum(), (xs, alpha))
    for a, b in zip(got_grads, grads, strict=True):
        assert torch.allclose(a, b, atol=1e-5)


@pytest.mark.parametrize("heads", [1, 2])
@pytest.mark.parametrize("edge_dim", [8, None])
def test_graph_attention_is_initialised_as_the_library_layer(
    heads: int, edge_dim: int | None
) -> None:
    """The same parameter names and, from the same seed, the same values and the same state of
    the random generator afterwards: a seed gives the model it gave with the library's layer."""
    from torch_geometric.nn import GATConv

    from peace.nn.entity_encoder import GraphAttention

    torch.manual_seed(3)
    library = GATConv(8, 8, heads=heads, concat=False, edge_dim=edge_dim).state_dict()
    after_library = torch.rand(4)
    torch.manual_seed(3)
    ours = GraphAttention(8, heads, edge_dim).state_dict()
    assert torch.equal(torch.rand(4), after_library)
    assert sorted(ours) == sorted(library)
    for key, value in library.items():
        assert torch.equal(ours[key], value), key


def test_the_package_does_not_import_the_graph_library() -> None:
    import subprocess
    import sys

    code = "import sys, peace.cli, peace.models; sys.exit('torch_geometric' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0

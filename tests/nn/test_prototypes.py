"""Prototype learning, Eq. 5-9."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from peace.nn.enhanced import ItemKeys, enhanced_user_vectors, item_keys
from peace.nn.mlp import MLP
from peace.nn.prototypes import Prototypes
from peace.nn.user_encoder import AttentiveFusion


@pytest.fixture
def protos() -> Prototypes:
    torch.manual_seed(0)
    return Prototypes(8, n_prototypes=12, top_k=4, mlp_hidden=(16, 8))


def _manual_cp(entities: torch.Tensor, views: torch.Tensor, tau: float) -> torch.Tensor:
    """Eq. 7 written out: both InfoNCE directions with cosine similarity and in-batch negatives."""
    n = len(entities)
    sim = torch.empty(n, n)
    for a in range(n):
        for b in range(n):
            sim[a, b] = F.cosine_similarity(entities[a], views[b], dim=0) / tau
    target = torch.arange(n)
    entity_to_view = F.cross_entropy(sim, target)  # log exp(d(h_e, h^_e)/tau) / sum_e' ...
    view_to_entity = F.cross_entropy(sim.T, target)  # log exp(d(h^_e, h_e)/tau) / sum_e' ...
    return entity_to_view + view_to_entity


@pytest.mark.parametrize("lead", [(5,), (2, 3), (2, 3, 4)])
def test_similarity_rows_sum_to_one_and_view_is_p_transpose_s(
    protos: Prototypes, lead: tuple[int, ...]
) -> None:
    entities = torch.randn(*lead, 8)
    s = protos.similarity(entities)
    assert s.shape == (*lead, 12)
    assert (s > 0).all()
    torch.testing.assert_close(s.sum(-1), torch.ones(lead))
    torch.testing.assert_close(s, torch.softmax(entities @ protos.weight.T, dim=-1))  # Eq. 5
    view = protos.prototype_view(s)
    assert view.shape == (*lead, 8)
    flat = s.reshape(-1, 12)
    manual = torch.stack([protos.weight.T @ row for row in flat])  # Eq. 6: P^T s
    torch.testing.assert_close(view.reshape(-1, 8), manual)


def test_contrastive_loss_matches_manual_and_has_both_directions(protos: Prototypes) -> None:
    entities = torch.randn(6, 8)
    views = protos.prototype_view(protos.similarity(entities))
    loss = protos.contrastive_loss(entities, tau=0.2)
    torch.testing.assert_close(loss, _manual_cp(entities, views, 0.2))
    # Each direction alone differs from the module's loss: both are present.
    h, hv = F.normalize(entities, dim=-1), F.normalize(views, dim=-1)
    one_way = F.cross_entropy(h @ hv.T / 0.2, torch.arange(6))
    other_way = F.cross_entropy(hv @ h.T / 0.2, torch.arange(6))
    assert not torch.isclose(one_way, other_way)
    torch.testing.assert_close(loss, one_way + other_way)


def test_contrastive_loss_is_lower_for_matching_views() -> None:
    torch.manual_seed(0)
    protos = Prototypes(32, n_prototypes=10, top_k=3, mlp_hidden=(8, 8))
    # Entities that sit on the prototypes: each one's view is (almost) itself.
    entities = 10 * protos.weight.detach().clone()
    views = protos.prototype_view(protos.similarity(entities))
    matched = protos.contrastive_loss(entities, tau=0.2)
    torch.testing.assert_close(matched, _manual_cp(entities, views, 0.2))
    for seed in range(5):
        perm = torch.randperm(10, generator=torch.Generator().manual_seed(seed))
        if (perm == torch.arange(10)).all():
            continue
        assert matched < _manual_cp(entities, views[perm], 0.2)


def test_contrastive_loss_temperature(protos: Prototypes) -> None:
    entities = 10 * protos.weight.detach()[:6].clone()
    assert protos.contrastive_loss(entities, tau=0.1) < protos.contrastive_loss(entities, tau=1.0)


@pytest.mark.parametrize("k", [1, 4, 11, 12])
def test_top_k_mask_keeps_exactly_k(k: int) -> None:
    protos = Prototypes(8, n_prototypes=12, top_k=k, mlp_hidden=(8, 8))
    s = torch.softmax(torch.randn(3, 5, 12), -1)  # continuous: no ties
    mask = protos.top_k_mask(s)
    assert mask.shape == s.shape
    kept = mask == 0
    assert (kept.sum(-1) == k).all()
    assert torch.isneginf(mask[~kept]).all()
    # The kept ones are the K largest similarities (Eq. 8: s_i >= eps(s, K)).
    smallest_kept = s.masked_fill(~kept, float("inf")).min(-1).values
    largest_dropped = s.masked_fill(kept, float("-inf")).max(-1).values
    assert (smallest_kept > largest_dropped).all()


def test_top_k_is_clipped_to_n() -> None:
    assert Prototypes(8, n_prototypes=5, top_k=160).top_k == 5
    assert Prototypes(8, n_prototypes=5, top_k=0).top_k == 1


def test_enhance_shape_formula_and_target_dependence(protos: Prototypes) -> None:
    b, c, m = 2, 3, 4
    interests = torch.randn(b, m, 8)
    targets = torch.randn(b, c, 8)
    s = protos.similarity(targets)
    out = protos.enhance(interests, s)
    assert out.shape == (b, c, m, 8)
    # Eq. 9 by hand for one (user, target, interest).
    z = interests[1, 2]
    mask = protos.top_k_mask(s[1, 0])
    attn = torch.softmax((protos.weight @ z + mask) / math.sqrt(8), dim=-1)
    manual = protos.enhance_mlp(protos.weight.T @ attn + z)
    torch.testing.assert_close(out[1, 0, 2], manual)
    # A different target changes the enhanced interests (K < n, so the mask differs).
    assert not torch.allclose(out[:, 0], out[:, 1])
    other = protos.enhance(interests, protos.similarity(torch.randn(b, c, 8)))
    assert not torch.allclose(out, other)
    # Attention falls only on the K kept prototypes.
    logits = protos.interest_logits(interests).unsqueeze(1) + protos.top_k_mask(s).unsqueeze(2)
    weights = torch.softmax(logits, -1)
    assert ((weights > 0).sum(-1) == protos.top_k).all()


def test_gradients_reach_the_prototypes(protos: Prototypes) -> None:
    protos.contrastive_loss(torch.randn(5, 8), tau=0.2).backward()
    assert protos.weight.grad is not None and protos.weight.grad.abs().sum() > 0
    protos.zero_grad()
    protos.enhance(torch.randn(2, 3, 8), protos.similarity(torch.randn(2, 2, 8))).sum().backward()
    assert protos.weight.grad.abs().sum() > 0


def test_repr_reads_like_the_constructor(protos: Prototypes) -> None:
    assert repr(protos) == "Prototypes(8, n_prototypes=12, top_k=4, mlp_hidden=[16, 8])"
    rebuilt = eval(repr(protos), {"Prototypes": Prototypes})
    assert repr(rebuilt) == repr(protos)
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {
        k: v.shape for k, v in protos.state_dict().items()
    }
    mlp = MLP(4, (8, 6), 2, dropout=0.1)
    assert repr(mlp) == "MLP(4, [8, 6], 2, dropout=0.1)"
    assert repr(MLP(4, (8, 6), 2)) == "MLP(4, [8, 6], 2)"
    assert MLP(4, (8, 6), 2)(torch.randn(3, 5, 4)).shape == (3, 5, 2)


@pytest.mark.parametrize("hidden", [(16,), (16, 8), (16, 8, 6)])
def test_kept_prototypes_and_merged_weights_equal_eq_8_9_then_eq_2(hidden: tuple[int, ...]) -> None:
    """Eq. 8-9 on each target's K kept prototypes with the linear steps merged (Eq. 9's first
    layer on the prototype rows, Eq. 2's attention through the MLP's last layer, tanh as
    2 sigmoid(2x) - 1) give the dense Eq. 8-9 then Eq. 2 and its gradients, for any depth of
    the MLP, with and without the shared prior, with and without autograd."""
    for prior in (False, True):
        torch.manual_seed(1)
        protos, fusion = Prototypes(8, 12, 4, hidden), AttentiveFusion(8, 5, prior)
        params = [*protos.parameters(), *fusion.parameters()]
        for param in params:
            torch.nn.init.normal_(param, std=0.5)
        interests, targets = torch.randn(2, 3, 8), torch.randn(2, 7, 8)
        keys = item_keys(protos, targets)
        assert keys.top.shape == (2, 7, 4) and not bool(keys.ties.any())
        dense = fusion(protos.enhance(interests, protos.similarity(targets)))
        kept = enhanced_user_vectors(protos, fusion, interests, targets)
        torch.testing.assert_close(kept, dense)
        with torch.no_grad():  # the service's path
            torch.testing.assert_close(
                enhanced_user_vectors(protos, fusion, interests, targets, keys), dense
            )
        weights = torch.randn_like(dense)
        expected = torch.autograd.grad((dense * weights).sum(), params)
        got = torch.autograd.grad((kept * weights).sum(), params)
        for e, g in zip(expected, got, strict=True):
            torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-5)


def test_tied_targets_are_computed_densely() -> None:
    """A target flagged as a (near) tie takes the dense Eq. 8, which keeps every tied
    prototype; the kept-prototype path would keep K of them."""
    torch.manual_seed(2)
    protos, fusion = Prototypes(8, 6, 1, (16, 8)), AttentiveFusion(8, 5)
    with torch.no_grad():  # prototype 3: prototype 2 with two entries swapped (the same norm)
        protos.weight[3] = protos.weight[2][[1, 0, 2, 3, 4, 5, 6, 7]]
    interests = torch.randn(1, 3, 8)
    # Targets along p_2 + p_3 are as similar to both: the first and second similarities tie.
    targets = (protos.weight[2] + protos.weight[3]).detach().expand(1, 2, 8) * 3.0
    keys = item_keys(protos, targets)
    assert bool(keys.ties.all())
    dense = fusion(protos.enhance(interests, protos.similarity(targets)))
    torch.testing.assert_close(enhanced_user_vectors(protos, fusion, interests, targets), dense)
    unrouted = ItemKeys(keys.top, torch.zeros_like(keys.ties))  # K kept: not Eq. 8 on a tie
    kept = enhanced_user_vectors(protos, fusion, interests, targets, unrouted)
    assert not torch.allclose(kept, dense, rtol=0.0, atol=1e-6)


def test_served_scorer_reads_new_weights() -> None:
    """The service merges the weights once; loading other weights merges them again."""
    from peace.serve.rankers import ZeroShotScorer

    torch.manual_seed(1)
    scorer = ZeroShotScorer(8, 12, 4, (16, 8), 5, mode="inner-enhanced", user_prior=True)
    for param in scorer.parameters():
        torch.nn.init.normal_(param, std=0.5)
    interests, items = torch.randn(3, 8), torch.randn(7, 8)

    def dense() -> torch.Tensor:
        protos = scorer.prototypes
        with torch.no_grad():
            enhanced = protos.enhance(interests[None], protos.similarity(items[None]))
            return scorer.fusion(enhanced)[0]

    keys = scorer.item_keys(items)
    torch.testing.assert_close(scorer.user_vectors(interests, items, keys), dense())
    scorer.load_state_dict({k: v + 0.1 for k, v in scorer.state_dict().items()})
    torch.testing.assert_close(scorer.user_vectors(interests, items, keys), dense())

"""DeepFM over categorical profile fields, and the Eq. 11 head that uses it."""

from __future__ import annotations

import pytest
import torch

from peace.nn.deepfm import DeepFM
from peace.nn.heads import FineTuneHead

CARDS = [3, 5, 2, 4]


def _codes(lead: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.stack([torch.randint(0, c, lead, generator=gen) for c in CARDS], dim=-1)


@pytest.fixture
def model() -> DeepFM:
    torch.manual_seed(0)
    m = DeepFM(CARDS, fm_dim=4, hidden=(8, 6, 3))
    torch.nn.init.normal_(m.first_order.weight)  # zero at start; make the first order visible
    torch.nn.init.normal_(m.latent.weight)
    return m


def test_fm_term_equals_the_pairwise_sum(model: DeepFM) -> None:
    codes = _codes((7,))
    fm = model.representation(codes)[:, 0]
    offsets = torch.tensor([0, 3, 8, 10])
    for b in range(7):
        idx = codes[b] + offsets
        v = model.latent.weight[idx]  # [F, k]
        expected = model.first_order.weight[idx].sum()
        for i in range(len(CARDS)):
            for j in range(i + 1, len(CARDS)):
                expected = expected + v[i] @ v[j]
        torch.testing.assert_close(fm[b], expected)


def test_fields_use_their_own_embedding_rows(model: DeepFM) -> None:
    # Code 0 of field 2 and code 0 of field 1 are different rows of the shared table.
    a = torch.tensor([[0, 0, 0, 0]])
    b = torch.tensor([[0, 0, 1, 0]])
    assert not torch.allclose(model.representation(a), model.representation(b))
    assert model.latent.num_embeddings == sum(CARDS)


@pytest.mark.parametrize("lead", [(6,), (2, 3)])
def test_shapes(model: DeepFM, lead: tuple[int, ...]) -> None:
    codes = _codes(lead)
    assert model.representation(codes).shape == (*lead, 1 + 3)
    assert model.out_dim == 4
    assert model(codes).shape == lead


def test_forward_is_fm_plus_deep_readout(model: DeepFM) -> None:
    codes = _codes((5,))
    rep = model.representation(codes)
    expected = rep[:, 0] + model.readout(rep[:, 1:]).squeeze(-1) + model.bias
    torch.testing.assert_close(model(codes), expected)


def test_head_shapes_and_gradients() -> None:
    torch.manual_seed(0)
    head = FineTuneHead(8, CARDS, mlp_hidden=(16, 8), fm_dim=4, deepfm_hidden=(8, 6, 3))
    users, items = torch.randn(2, 5, 8), torch.randn(2, 5, 8)
    logits = head(users, items, _codes((2, 5)))
    assert logits.shape == (2, 5)
    logits.sum().backward()
    assert head.deepfm.latent.weight.grad.abs().sum() > 0
    assert head.mlp.net[0].weight.shape == (16, 2 * 8 + 4)


def test_repr_reads_like_the_constructor(model: DeepFM) -> None:
    assert repr(model) == "DeepFM([3, 5, 2, 4], fm_dim=4, hidden=[8, 6, 3])"
    head = FineTuneHead(8, CARDS, mlp_hidden=(16, 8), fm_dim=4, deepfm_hidden=(8, 6, 3))
    assert repr(head) == (
        "FineTuneHead(8, [3, 5, 2, 4], mlp_hidden=[16, 8], fm_dim=4, deepfm_hidden=[8, 6, 3])"
    )
    namespace = {"DeepFM": DeepFM, "FineTuneHead": FineTuneHead}
    for module in (model, head):
        rebuilt = eval(repr(module), namespace)
        assert repr(rebuilt) == repr(module)
        assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {
            k: v.shape for k, v in module.state_dict().items()
        }


def test_a_bag_field_pairs_the_candidate_with_the_users_earlier_items() -> None:
    """A multi-valued field (the user's earlier items) is the mean of the item-id field's vectors:
    the FM gains <mean bag vector, each field's vector>; padding and repeats do not count."""
    torch.manual_seed(0)
    m = DeepFM(CARDS, fm_dim=4, hidden=(8, 6, 3), bag_field=3)
    torch.nn.init.normal_(m.latent.weight)
    torch.nn.init.normal_(m.first_order.weight)
    codes = _codes((2, 5))  # [B, C, F]
    bag = torch.tensor([[1, 2, 0], [0, 0, 0]])
    rep = m.representation(codes, bag)
    assert rep.shape == (2, 5, 4) and m(codes, bag).shape == (2, 5)
    plain = DeepFM(CARDS, fm_dim=4, hidden=(8, 6, 3))
    plain.load_state_dict(
        {k: v for k, v in m.state_dict().items() if not k.startswith("deep")}, strict=False
    )
    offsets = torch.tensor([0, 3, 8, 10])
    v_bag = m.latent.weight[bag[0, :2] + offsets[3]].mean(0)
    f_bag = m.first_order.weight[bag[0, :2] + offsets[3]].mean()
    v = m.latent.weight[codes[0] + offsets]  # [C, F, k]
    expected = plain.representation(codes[0])[:, 0] + v.sum(1) @ v_bag + f_bag
    torch.testing.assert_close(rep[0, :, 0], expected)
    # Padding and a repeated item leave the mean where it is; an empty bag adds nothing to the FM.
    torch.testing.assert_close(m(codes, torch.tensor([[1, 2], [0, 0]])), m(codes, bag))
    torch.testing.assert_close(m(codes, torch.tensor([[1, 2, 1, 2], [0, 0, 0, 0]])), m(codes, bag))
    torch.testing.assert_close(rep[1, :, 0], plain.representation(codes[1])[:, 0])
    torch.testing.assert_close(m(codes), m(codes, torch.zeros(2, 0, dtype=torch.long)))
    assert not torch.allclose(m(codes, bag)[0], m(codes, torch.tensor([[3, 0, 0], [0, 0, 0]]))[0])
    with pytest.raises(ValueError, match="bag_field"):
        DeepFM(CARDS, bag_field=4)


@pytest.mark.parametrize("split", [1, 2, 3])
def test_field_sums_of_two_groups_combine_to_the_representation(model: DeepFM, split: int) -> None:
    """One user's fields against C items' fields (broadcast) equals the representation of the
    concatenated codes, for every place the fields can be split."""
    torch.nn.init.normal_(model.deep[0].bias)
    items = _codes((6,), seed=1)[:, split:]
    user = _codes((1,), seed=2)[:, :split]
    full = torch.cat([user.expand(6, -1), items], dim=-1)
    combined = model.combine(model.field_sums(user, 0), model.field_sums(items, split))
    torch.testing.assert_close(combined, model.representation(full))
    rows = torch.tensor([4, 0, 4])
    taken = model.combine(model.field_sums(user, 0), model.field_sums(items, split).take(rows))
    torch.testing.assert_close(taken, model.representation(full[rows]))


def test_field_sums_refuse_a_bag_field() -> None:
    with pytest.raises(ValueError, match="bag field"):
        DeepFM(CARDS, fm_dim=4, bag_field=0).field_sums(_codes((2,)), 0)


def test_head_score_from_the_representation_equals_forward() -> None:
    torch.manual_seed(0)
    head = FineTuneHead(8, CARDS, (16, 8), 4, (8, 6, 3), interactions=True).eval()
    users, items, codes = torch.randn(2, 5, 8), torch.randn(2, 5, 8), _codes((2, 5))
    affinity = torch.randn(2, 5)
    profile = head.deepfm.representation(codes)
    torch.testing.assert_close(
        head.score(users, items, profile, affinity), head(users, items, codes, affinity)
    )

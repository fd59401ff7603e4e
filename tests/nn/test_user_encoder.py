"""Eq. 1 (InterestExtractor) and Eq. 2 (AttentiveFusion)."""

from __future__ import annotations

import pytest
import torch

from peace.nn.user_encoder import AttentiveFusion, InterestExtractor, masked_softmax


def _batch(b: int = 4, length: int = 9, d: int = 8, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    sequence = torch.randn(b, length, d, generator=gen)
    mask = torch.ones(b, length, dtype=torch.bool)
    mask[0, :5] = False  # left padding
    mask[1, ::2] = False  # scattered padding
    mask[2] = False  # a user without history
    return sequence, mask


def test_masked_softmax() -> None:
    scores = torch.tensor([[1.0, 2.0, 3.0], [5.0, 5.0, 5.0]])
    mask = torch.tensor([[True, False, True], [False, False, False]])
    w = masked_softmax(scores, mask)
    e = torch.exp(torch.tensor([1.0, 3.0]))
    torch.testing.assert_close(w[0], torch.stack([e[0], torch.tensor(0.0), e[1]]) / e.sum())
    assert (w[1] == 0).all() and not w.isnan().any()


@pytest.mark.parametrize(("b", "length", "d", "m"), [(4, 9, 8, 3), (4, 1, 16, 1), (4, 30, 4, 10)])
def test_interest_shapes(b: int, length: int, d: int, m: int) -> None:
    torch.manual_seed(0)
    extractor = InterestExtractor(d, n_interests=m, attention_dim=5)
    sequence, mask = _batch(b, length, d)
    assert extractor.attention(sequence, mask).shape == (b, m, length)
    assert extractor(sequence, mask).shape == (b, m, d)


def test_masked_positions_get_zero_attention() -> None:
    torch.manual_seed(0)
    extractor = InterestExtractor(8, n_interests=3, attention_dim=6)
    sequence, mask = _batch()
    attn = extractor.attention(sequence, mask)
    assert (attn.masked_select(~mask.unsqueeze(1).expand_as(attn)) == 0).all()
    sums = attn.sum(-1)
    torch.testing.assert_close(sums[mask.any(1)], torch.ones_like(sums[mask.any(1)]))
    # Eq. 1 by hand for one user and kernel: SoftMax(w_i^T tanh(W^A H^T)) H.
    h = sequence[1]
    logits = extractor.kernels.weight[1] @ torch.tanh(extractor.W_A.weight @ h.T)
    logits = logits.masked_fill(~mask[1], float("-inf"))
    torch.testing.assert_close(extractor(sequence, mask)[1, 1], torch.softmax(logits, 0) @ h)


def test_padded_token_vectors_do_not_matter() -> None:
    torch.manual_seed(0)
    extractor = InterestExtractor(8, n_interests=3, attention_dim=6)
    sequence, mask = _batch()
    changed = sequence.clone()
    changed[~mask] = torch.randn(int((~mask).sum()), 8) * 100
    torch.testing.assert_close(extractor(changed, mask), extractor(sequence, mask))
    changed[0, 7] += 1.0  # a real token does matter
    assert not torch.allclose(extractor(changed, mask)[0], extractor(sequence, mask)[0])


def test_all_padding_user_gives_zeros_and_finite_gradients() -> None:
    torch.manual_seed(0)
    extractor = InterestExtractor(8, n_interests=3, attention_dim=6)
    fusion = AttentiveFusion(8, attention_dim=6)
    sequence, mask = _batch()
    sequence.requires_grad_(True)
    interests = extractor(sequence, mask)
    assert (interests[2] == 0).all()
    user = fusion(interests)
    assert (user[2] == 0).all() and not user.isnan().any()
    user.sum().backward()
    assert all(p.grad is not None and p.grad.isfinite().all() for p in extractor.parameters())
    assert sequence.grad.isfinite().all()


def test_fusion_weights_sum_to_one() -> None:
    torch.manual_seed(0)
    fusion = AttentiveFusion(8, attention_dim=6)
    interests = torch.randn(3, 2, 5, 8)  # extra leading dimensions: [*, M, d]
    out = fusion(interests)
    assert out.shape == (3, 2, 8)
    # Eq. 2 by hand: weights SoftMax_A(v^T tanh(W z^A)) sum to one over the M interests.
    logits = torch.tanh(interests @ fusion.W.weight.T) @ fusion.v.weight.T  # [3, 2, 5, 1]
    weights = torch.softmax(logits, dim=-2)
    torch.testing.assert_close(weights.sum(-2), torch.ones(3, 2, 1))
    torch.testing.assert_close(out, (weights * interests).sum(-2))
    # A convex combination: M copies of one vector fuse to that vector.
    same = torch.randn(4, 1, 8).expand(4, 5, 8)
    torch.testing.assert_close(fusion(same), same[:, 0])


def test_repr_reads_like_the_constructor() -> None:
    extractor = InterestExtractor(16, n_interests=3, attention_dim=12)
    fusion = AttentiveFusion(16, attention_dim=12)
    assert repr(extractor) == "InterestExtractor(16, n_interests=3, attention_dim=12)"
    assert repr(fusion) == "AttentiveFusion(16, attention_dim=12)"
    namespace = {"InterestExtractor": InterestExtractor, "AttentiveFusion": AttentiveFusion}
    for module in (extractor, fusion):
        rebuilt = eval(repr(module), namespace)
        assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {
            k: v.shape for k, v in module.state_dict().items()
        }


def test_forward_tokens_equals_forward_on_gathered_vectors() -> None:
    torch.manual_seed(0)
    extractor = InterestExtractor(8, n_interests=3, attention_dim=6)
    table = torch.cat([torch.randn(20, 8), torch.zeros(1, 8)]).requires_grad_(True)
    tokens = torch.randint(0, 20, (4, 9))
    _, mask = _batch()
    tokens[~mask] = 20  # padding id
    fast = extractor.forward_tokens(table, tokens, mask)
    (grad_fast,) = torch.autograd.grad(fast.square().sum(), table)
    slow = extractor(table[tokens], mask)
    (grad_slow,) = torch.autograd.grad(slow.square().sum(), table)
    torch.testing.assert_close(fast, slow)
    torch.testing.assert_close(grad_fast, grad_slow)
    assert (fast[2] == 0).all()


def test_recency_bias_is_per_kernel_and_slot_of_each_domain_block() -> None:
    torch.manual_seed(0)
    extractor = InterestExtractor(8, n_interests=3, attention_dim=6, recency=3)
    assert repr(extractor).endswith("recency=3)")
    sequence, mask = _batch(length=9)  # three source-domain blocks of H = 3
    paper = InterestExtractor(8, n_interests=3, attention_dim=6)
    paper.load_state_dict(extractor.state_dict(), strict=False)
    plain = extractor.attention(sequence, mask)
    torch.testing.assert_close(plain, paper.attention(sequence, mask))  # zero bias: Eq. 1
    with torch.no_grad():
        extractor.recency[1, 2] = 5.0  # kernel 1 prefers the newest token of every block
    attn = extractor.attention(sequence, mask)
    torch.testing.assert_close(attn[:, [0, 2]], plain[:, [0, 2]])  # other kernels unchanged
    # Kernel 1 by hand for a full row: logits + 5 at slots 2, 5 and 8.
    h = sequence[3]
    logits = extractor.kernels.weight[1] @ torch.tanh(extractor.W_A.weight @ h.T)
    logits = logits + torch.tensor([0, 0, 5.0] * 3)
    torch.testing.assert_close(attn[3, 1], torch.softmax(logits, 0))
    # forward_tokens (the fast path) adds the same bias.
    table = torch.cat([torch.randn(20, 8), torch.zeros(1, 8)])
    tokens = torch.randint(0, 20, (4, 9))
    tokens[~mask] = 20
    torch.testing.assert_close(
        extractor.forward_tokens(table, tokens, mask), extractor(table[tokens], mask)
    )
    assert (extractor(sequence, mask)[2] == 0).all()  # no history: still zeros
    with pytest.raises(ValueError, match="not a multiple of the recency block"):
        extractor.attention(sequence[:, :8], mask[:, :8])


def test_recency_bias_trains() -> None:
    torch.manual_seed(0)
    extractor = InterestExtractor(8, n_interests=2, attention_dim=6, recency=9)
    sequence, mask = _batch()
    extractor(sequence, mask).square().sum().backward()
    assert extractor.recency.grad is not None and extractor.recency.grad.abs().sum() > 0


@pytest.mark.parametrize("recency", [0, 3])
def test_pooled_tokens_equal_forward_tokens(recency: int) -> None:
    """The inference path (entity scores once, weighted bags) gives Eq. 1's numbers."""
    torch.manual_seed(0)
    extractor = InterestExtractor(8, n_interests=3, attention_dim=6, recency=recency)
    if recency:
        with torch.no_grad():
            extractor.recency.normal_()
    table = torch.cat([torch.randn(20, 8), torch.zeros(1, 8)])  # last row: zero padding
    tokens = torch.randint(0, 20, (4, 9))
    _, mask = _batch()  # left, scattered and complete padding
    tokens[~mask] = 20
    with torch.no_grad():
        pooled = extractor.pool_tokens(table, tokens, extractor.pooling_scores(table, pad=20))
        torch.testing.assert_close(pooled, extractor.forward_tokens(table, tokens, mask))
    assert (pooled[2] == 0).all() and not pooled.isnan().any()  # no history: zeros


def test_without_attention_each_interest_is_the_mean_of_the_history() -> None:
    """``attentive=False`` (the "Entity mean" reference): every kernel weighs the user's tokens
    alike, on the training and the inference path; padding and an empty history stay zero."""
    torch.manual_seed(0)
    extractor = InterestExtractor(8, n_interests=2, attention_dim=6, attentive=False)
    table = torch.cat([torch.randn(20, 8), torch.zeros(1, 8)])
    tokens = torch.randint(0, 20, (4, 9))
    _, mask = _batch()
    tokens[~mask] = 20
    vectors = table[tokens] * mask.unsqueeze(-1)
    mean = vectors.sum(1) / mask.sum(1, keepdim=True).clamp(min=1)
    trained = extractor.forward_tokens(table, tokens, mask)
    torch.testing.assert_close(trained, mean.unsqueeze(1).expand(-1, 2, -1))
    with torch.no_grad():
        pooled = extractor.pool_tokens(table, tokens, extractor.pooling_scores(table, pad=20))
    torch.testing.assert_close(pooled, trained)
    torch.testing.assert_close(extractor(table[tokens], mask), trained)
    assert "attentive=False" in repr(extractor)

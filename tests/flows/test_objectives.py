"""What pre-training learns from: negatives, the served-score term, held-out ranking, references."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from peace.data.dataset import load_dataset
from peace.data.history import HistoryIndex
from peace.data.splits import kept_out_items, pretrain_cutoff, split_targets
from peace.eval.protocol import run_seed
from peace.flows.pretrain import pretrain
from peace.flows.rankers import PeaceRanker, TargetDomain, source_entity_counts
from peace.flows.records import NegativeSampler, draw_catalogue, source_catalogue
from peace.models import build_model, hub_entities, private_entities, unseen_entities
from peace.nn.heads import FineTuneHead
from peace.nn.peace import PretrainBatch, item_vectors, served_loss


def test_popularity_negatives_follow_item_counts(toy_dir: Path) -> None:
    ds = load_dataset(toy_dir)
    d = ds.source_domains[0]
    items = ds.domain_items(d)
    counts = np.zeros(ds.num_items)
    counts[items[0]] = 10_000  # one item far more popular than the rest
    gen = torch.Generator().manual_seed(0)
    domains = torch.full((4000,), d, dtype=torch.long)
    uniform = NegativeSampler(ds, counts, "uniform").sample(domains, 1, gen)
    popular = NegativeSampler(ds, counts, "popularity", alpha=1.0).sample(domains, 1, gen)
    mixed = NegativeSampler(ds, counts, "mixed", alpha=1.0).sample(domains, 1, gen)
    for drawn in (uniform, popular, mixed):
        assert set(drawn.flatten().tolist()) <= set(items.tolist())  # same domain only
    share = {
        name: float((x == items[0]).float().mean())
        for name, x in (("uniform", uniform), ("popularity", popular), ("mixed", mixed))
    }
    assert share["uniform"] < 0.2
    assert share["popularity"] > 0.95
    assert 0.4 < share["mixed"] < 0.7
    with pytest.raises(ValueError, match="expected uniform, popularity or mixed"):
        NegativeSampler(ds, counts, "hard")


@pytest.mark.parametrize("served", ["softmax", "bce"])
def test_served_score_is_trained_and_selected_by_held_out_ranking(
    toy_dir: Path, tiny_config, served: str
) -> None:
    ds = load_dataset(toy_dir)
    cfg = tiny_config.override(
        [f'pretrain.served_loss="{served}"', "pretrain.eval_every=3", 'pretrain.negatives="mixed"']
    )
    pre = pretrain(ds, cfg, show_progress=False)
    assert all(e["loss_ip"] > 0 for e in pre.log)
    assert all(0.0 <= e["valid_ndcg"] <= 1.0 and 0.0 <= e["valid_auc"] <= 1.0 for e in pre.log)
    assert [e["step"] for e in pre.log] == sorted(e["step"] for e in pre.log)
    # the paper's form trains no served term
    plain = pretrain(ds, tiny_config, show_progress=False)
    assert all(e["loss_ip"] == 0 for e in plain.log)


def test_universal_term_scores_eq4_pairs_with_z_u(toy_dir: Path, tiny_config) -> None:
    ds = load_dataset(toy_dir)
    weighted = tiny_config.override(
        ['pretrain.served_loss="softmax"', "pretrain.universal_weight=0.5"]
    )
    pre = pretrain(ds, weighted, show_progress=False)
    for e in pre.log:  # Eq. 10 adds the term with its weight
        assert e["loss_uni"] > 0
        parts = e["loss_et"] + e["loss_cp"] + e["loss_ip"] + 0.5 * e["loss_uni"]
        assert e["loss"] == pytest.approx(parts, rel=1e-6)
    alone = pretrain(
        ds, tiny_config.override(["pretrain.universal_weight=0.5"]), show_progress=False
    )
    assert all(e["loss_uni"] > 0 and e["loss_ip"] == 0 for e in alone.log)  # with no served term
    # off by default, and without PEA z_u is the vector Eq. 4 already scores: no second term
    assert all("loss_uni" not in e for e in pretrain(ds, tiny_config, show_progress=False).log)
    no_pea = pretrain(ds, weighted.override(["model.use_pea=false"]), show_progress=False)
    assert all("loss_uni" not in e for e in no_pea.log)


def test_enhanced_weight_scales_eq4_on_the_enhanced_vector_only(toy_dir: Path, tiny_config) -> None:
    ds = load_dataset(toy_dir)
    split = tiny_config.override(
        ["pretrain.universal_weight=0.5", "pretrain.enhanced_weight=0.5", "pretrain.epochs=1"]
    )
    for e in pretrain(ds, split, show_progress=False).log:  # Eq. 4's weight split in two
        parts = 0.5 * e["loss_et"] + e["loss_cp"] + e["loss_ip"] + 0.5 * e["loss_uni"]
        assert e["loss"] == pytest.approx(parts, rel=1e-6)
    # without PEA the one vector keeps Eq. 4 at weight 1
    no_pea = split.override(["model.use_pea=false"])
    for e in pretrain(ds, no_pea, show_progress=False).log:
        assert e["loss"] == pytest.approx(e["loss_et"] + e["loss_cp"] + e["loss_ip"], rel=1e-6)


def test_served_softmax_beats_popularity_on_held_out_source(toy_dir: Path, tiny_config) -> None:
    """On the toy platform users like two concepts each: a served score trained to rank the
    user's items must beat the per-item popularity table on held-out source records."""
    ds = load_dataset(toy_dir)
    cfg = tiny_config.override(
        ['pretrain.served_loss="softmax"', "pretrain.epochs=6", "pretrain.lr=0.01"]
    )
    pre = pretrain(ds, cfg, show_progress=False)
    best = max(e["valid_ndcg"] for e in pre.log)
    assert best > pre.log[0]["valid_popularity_ndcg"]


def _served_batch(ds, catalogue, n: int, seed: int) -> PretrainBatch:
    """``n`` records of source items (all positive) with their source-domain positions."""
    gen = torch.Generator().manual_seed(seed)
    flat = torch.nonzero(catalogue.column >= 0).squeeze(1)
    items = flat[torch.randint(len(flat), (n,), generator=gen)]
    position = {d: k for k, d in enumerate(ds.source_domains)}
    domains = torch.as_tensor([position[int(ds.item_domain[i])] for i in items])
    empty = torch.zeros(n, 1, dtype=torch.long)
    return PretrainBatch(
        tokens=empty, mask=empty.bool(), targets=empty, labels=empty.float(),
        valid=empty.bool(), items=items.unsqueeze(1), item_labels=torch.ones(n, 1),
        item_valid=torch.ones(n, 1, dtype=torch.bool), domains=domains,
    )  # fmt: skip


def test_sampled_served_softmax(toy_dir: Path) -> None:
    """``pretrain.served_sample``: each record's item against uniformly drawn items of its
    domain; other records' positives only where drawn; the whole draw is the full softmax."""
    ds = load_dataset(toy_dir)
    catalogue = source_catalogue(ds)
    batch = _served_batch(ds, catalogue, 12, seed=0)
    gen = torch.Generator().manual_seed(1)
    table = torch.randn(ds.num_entities + 1, 8, generator=gen)
    users = torch.randn(12, 8, generator=gen)
    step = draw_catalogue(catalogue, batch, 5, torch.Generator().manual_seed(2))
    assert int(step.drawn.sum()) == 5
    positives = step.column[batch.items[:, 0]]
    assert (positives >= 0).all()  # every record's item is in the step's catalogue
    torch.testing.assert_close(  # the same items, entities and domains, re-indexed
        step.entities[positives], catalogue.entities[catalogue.column[batch.items[:, 0]]]
    )
    for k in range(len(ds.source_domains)):
        kept = catalogue.domain_mask[k, catalogue.column[batch.items[:, 0]]]
        assert (step.domain_mask[k, positives] == kept).all()
    # by hand: logsumexp over the record's own item and the drawn items of its domain
    vectors = item_vectors(table, step.entities)
    expected = []
    for r in range(12):
        allowed = step.domain_mask[batch.domains[r]] & step.drawn
        allowed[positives[r]] = True
        logits = vectors[allowed] @ users[r]
        expected.append(torch.logsumexp(logits, 0) - vectors[positives[r]] @ users[r])
    got = served_loss(users, table, batch, "softmax", step)
    torch.testing.assert_close(got, torch.stack(expected).mean())
    # drawing the whole catalogue is the full softmax
    whole = draw_catalogue(catalogue, batch, 10**6, torch.Generator().manual_seed(2))
    assert bool(whole.drawn.all())
    torch.testing.assert_close(
        served_loss(users, table, batch, "softmax", whole),
        served_loss(users, table, batch, "softmax", catalogue),
    )


def test_sampled_served_softmax_trains_deterministically(toy_dir: Path, tiny_config) -> None:
    ds = load_dataset(toy_dir)
    cfg = tiny_config.override(['pretrain.served_loss="softmax"', "pretrain.served_sample=4"])
    first, again = (pretrain(ds, cfg, show_progress=False) for _ in range(2))
    assert all(e["loss_ip"] > 0 for e in first.log)
    assert [e["loss_ip"] for e in first.log] == [e["loss_ip"] for e in again.log]
    whole = pretrain(
        ds, tiny_config.override(['pretrain.served_loss="softmax"']), show_progress=False
    )
    assert [e["loss_ip"] for e in whole.log] != [e["loss_ip"] for e in first.log]


def test_patience_stops_early(toy_dir: Path, tiny_config) -> None:
    ds = load_dataset(toy_dir)
    cfg = tiny_config.override(
        ["pretrain.epochs=50", "pretrain.eval_every=1", "pretrain.patience=2", "pretrain.lr=0.0"]
    )
    pre = pretrain(ds, cfg, show_progress=False)
    assert len(pre.log) == 3  # the first evaluation, then two without improvement


def test_inductive_entities_share_one_input(toy_dir: Path, tiny_config) -> None:
    ds = load_dataset(toy_dir)
    cfg = tiny_config.override(["model.inductive_entities=true", "model.user_prior=true"])
    pre = pretrain(ds, cfg, show_progress=False)
    enc = pre.model.entity_encoder
    private = torch.as_tensor(private_entities(ds))
    x = enc.inputs()
    if bool(private.any()):
        assert torch.equal(x[private], enc.private_input.expand(int(private.sum()), -1))
    assert torch.equal(x[~private], enc.embedding.weight[~private])


def test_unseen_entities_are_those_no_source_item_links(toy_dir: Path, tiny_config) -> None:
    ds = load_dataset(toy_dir)
    unseen = unseen_entities(ds)
    linked = set()
    for d in ds.source_domains:
        linked |= set(ds.item_entities[ds.domain_items(d)].ravel().tolist()) - {-1}
    assert linked and unseen.sum() == ds.num_entities - len(linked)
    assert not unseen[sorted(linked)].any() and unseen.any()
    pre = pretrain(ds, tiny_config.override(['model.unseen_entities="zero"']), show_progress=False)
    enc = pre.model.entity_encoder
    pre.entity_table()  # serving: eval mode
    assert torch.equal(
        enc.inputs()[torch.as_tensor(unseen)], torch.zeros(int(unseen.sum()), enc.dim)
    )


def test_hub_edges_leave_the_graph_attention(toy_dir: Path, tiny_config) -> None:
    ds = load_dataset(toy_dir)
    # each concept's category hub e{c}_0 is linked to the own nodes of that concept's items:
    # 10 of the 60 items for concepts 0-3, 5 for concepts 4-7 (under the 10-item floor)
    hubs = ds.index_of("entity", [f"e{c}_0" for c in range(4)])
    expected = np.zeros(ds.num_entities, dtype=bool)
    expected[hubs] = True
    assert np.array_equal(hub_entities(ds, 0.1), expected)
    assert not hub_entities(ds, 0.2).any()
    _, full = build_model(ds, tiny_config)
    _, cut = build_model(ds, tiny_config.override(["model.graph_max_item_share=0.1"]))
    touches = np.isin(full.edge_index.numpy(), hubs).any(0)
    assert touches.any() and not np.isin(cut.edge_index.numpy(), hubs).any()
    assert cut.edge_index.shape[1] == int((~touches).sum())
    with pytest.raises(
        ValueError, match=r"graph_max_item_share = 0\.0: expected a share in \(0, 1\]"
    ):
        hub_entities(ds, 0.0)
    with pytest.raises(ValueError, match="graph_max_item_share = 1.5"):
        build_model(ds, tiny_config.override(["model.graph_max_item_share=1.5"]))


def test_zero_shot_references(toy_dir: Path, tiny_config) -> None:
    ds = load_dataset(toy_dir)
    cfg = tiny_config.override(['eval.domains=["t1"]'])
    res, _ = run_seed(ds, cfg, ("Random", "Entity prior", "Entity overlap"), False, log=print)
    keys = {(k[0], k[1]) for k in res}
    for name in ("Random", "Entity prior", "Entity overlap"):
        assert (name, "zero-shot") in keys and (name, "zero-shot-test") in keys
    domains = {k[2] for k in res}
    assert domains == {"t1"}

    # toy users like two concepts each, which their source entities reveal: overlap beats random
    def mean(name: str) -> float:
        return float(
            np.mean(
                [v[0] for k, v in res.items() if k[:2] == (name, "zero-shot") and k[3] == "ndcg@10"]
            )
        )

    assert mean("Entity overlap") > mean("Random")
    cutoff = pretrain_cutoff(split_targets(ds, cfg.eval.split))
    source = source_entity_counts(ds, cutoff)
    counts, users = source.rows, source.users
    assert counts.shape == (ds.num_entities,) and (users <= counts).all()
    assert 0 < source.num_users <= ds.num_users


def test_interaction_features_reach_the_head(toy_dir: Path, tiny_config) -> None:
    ds = load_dataset(toy_dir)
    cfg = tiny_config.override(
        ['pretrain.served_loss="softmax"', "finetune.interaction_features=true"]
    )
    pre = pretrain(ds, cfg, show_progress=False)
    target = TargetDomain(ds, ds.target_domains[0])
    ranker = PeaceRanker(pre, target, cfg)
    users = np.arange(4)
    states = ranker.states(users, np.full(4, np.inf))
    items = torch.arange(len(target.catalogue)).expand(4, -1)
    with torch.no_grad():
        base = ranker(torch.as_tensor(users), states, items)
        # the zero-shot score is an input: changing it changes the logits
        shifted = ranker.head(
            pre.model.user_vectors(states, ranker._items[items]),
            ranker._items[items],
            target.codes(torch.as_tensor(users), items),
            torch.full(items.shape, 100.0),
        )
    assert ranker.head.interactions
    assert ranker.head.mlp.in_dim == 3 * cfg.model.dim + 1 + ranker.head.deepfm.out_dim
    assert not torch.allclose(base, shifted)


def test_degree_buckets_enter_the_inputs(toy_dir: Path, tiny_config) -> None:
    ds = load_dataset(toy_dir)
    cfg = tiny_config.override(["model.degree_buckets=4", "pretrain.epochs=1"])
    pre = pretrain(ds, cfg, show_progress=False)
    enc = pre.model.entity_encoder
    degree = np.bincount(ds.triplets[:, [0, 2]].reshape(-1), minlength=ds.num_entities)
    expected = np.minimum(np.floor(np.log2(1 + degree)), 3).astype(np.int64)
    assert enc.degree_bucket is not None
    assert enc.degree_bucket.tolist() == expected.tolist()
    x = enc.inputs()
    torch.testing.assert_close(x, enc.embedding.weight + enc.degree_embedding(enc.degree_bucket))


def test_kept_out_items_select_pretraining(toy_dir: Path, tiny_config) -> None:
    ds = load_dataset(toy_dir)
    kept_out = kept_out_items(ds, 0.25, seed=0)
    for d in ds.source_domains:
        items = ds.domain_items(d)
        assert 0 < kept_out[items].sum() < len(items)
    assert not kept_out[np.concatenate([ds.domain_items(d) for d in ds.target_domains])].any()
    sampler = NegativeSampler(ds, None, "uniform", allowed=~kept_out)
    domains = torch.as_tensor(np.repeat(ds.source_domains, 500))
    drawn = sampler.sample(domains, 2, torch.Generator().manual_seed(0))
    assert not kept_out[drawn.numpy()].any()
    cfg = tiny_config.override(['pretrain.served_loss="softmax"', "pretrain.holdout_items=0.25"])
    pre = pretrain(ds, cfg, show_progress=False)
    assert all(0.0 <= e["valid_ndcg"] <= 1.0 for e in pre.log)
    assert pre.log[0]["valid_popularity_ndcg"] == pre.log[-1]["valid_popularity_ndcg"]
    # a kept-out item is as new as a target's: the entities only kept-out items link to are unseen
    unseen = pre.model.entity_encoder.unseen
    assert unseen is not None
    assert unseen.tolist() == unseen_entities(ds, kept_out).tolist()
    first = ds.domain_items(ds.source_domains[0])[0]
    entity = int(ds.item_entities[first, 0])
    linking = (ds.item_entities == entity).any(1)
    assert unseen_entities(ds, linking)[entity] and not unseen_entities(ds)[entity]
    # served from every source item's history, as the run folder is loaded
    users = np.arange(ds.num_users)
    served = pre.history.lookup(users, np.full(ds.num_users, np.inf))[1].sum()
    full = HistoryIndex(ds, cfg.model.history_length).lookup(users, np.full(ds.num_users, np.inf))
    assert served == full[1].sum()


def test_user_dropout_acts_in_training_only() -> None:
    torch.manual_seed(0)
    plain = FineTuneHead(8, [3, 4], (8, 4), 4, (8, 4, 2), interactions=True)
    dropped = FineTuneHead(8, [3, 4], (8, 4), 4, (8, 4, 2), True, user_dropout=0.5)
    dropped.load_state_dict(plain.state_dict())
    users, items = torch.randn(2, 64, 8), torch.randn(2, 64, 8)
    codes = torch.randint(0, 3, (2, 64, 2))
    affinity = (users * items).sum(-1)
    plain.eval(), dropped.eval()
    with torch.no_grad():
        assert torch.equal(
            plain(users, items, codes, affinity), dropped(users, items, codes, affinity)
        )
        dropped.train()
        torch.manual_seed(1)
        out = dropped(users, items, codes, affinity)
        blind = plain(torch.zeros_like(users), items, codes, affinity)
        scaled = plain(users * 2.0, items, codes, affinity)
    # every pair sees either no user vector or the user vector scaled by 1 / (1 - p)
    zeroed = torch.isclose(out, blind, atol=1e-6)
    kept = torch.isclose(out, scaled, atol=1e-6)
    assert bool((zeroed | kept).all()) and 20 < int(zeroed.sum()) < 108
    with pytest.raises(ValueError, match="finetune.user_dropout = 1.0"):
        FineTuneHead(8, [3, 4], user_dropout=1.0)


def test_decoder_interactions_read_the_product(toy_dir: Path, tiny_config) -> None:
    ds = load_dataset(toy_dir)
    cfg = tiny_config.override(["model.decoder_interactions=true", "pretrain.epochs=1"])
    pre = pretrain(ds, cfg, show_progress=False)
    model = pre.model.eval()
    d = cfg.model.dim
    assert model.decoder.in_dim == 3 * d + 1
    users, targets = torch.randn(5, d), torch.randn(5, d)
    with torch.no_grad():
        logits = model.decode(users, targets)
        flat = model.decoder(
            torch.cat(
                [users, targets, users * targets, (users * targets).sum(-1, keepdim=True)], -1
            )
        )
    torch.testing.assert_close(logits, flat.squeeze(-1))

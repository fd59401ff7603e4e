"""The pre-training flow: checkpoints, resume, warm start, sampled subgraphs."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import toy_tables

from peace.data.contract import write_dataset
from peace.data.dataset import load_dataset
from peace.flows.checkpoints import CheckpointError
from peace.flows.offline_inference import export
from peace.flows.pretrain import pretrain
from peace.flows.pretrained import load_pretrained, load_states
from peace.flows.rankers import (
    PeaceRanker,
    TargetDomain,
    ZeroShotRanker,
    item_prior,
    item_vectors,
    zero_shot_prior,
)
from peace.store import StoreVersion


def test_checkpoint_round_trip(toy_dir: Path, tmp_path: Path, tiny_config) -> None:
    ds = load_dataset(toy_dir)
    pre = pretrain(ds, tiny_config, out=tmp_path / "run", show_progress=False)
    for name in ("config.toml", "model.safetensors", "meta.json", "log.json", "trainer.pt"):
        assert (tmp_path / "run" / name).is_file(), name
    loaded = load_pretrained(tmp_path / "run", ds)
    torch.testing.assert_close(loaded.entity_table(), pre.entity_table(), rtol=0, atol=0)
    assert loaded.config == tiny_config
    assert loaded.cutoff == pre.cutoff


def test_resume_continues_exactly(toy_dir: Path, tmp_path: Path, tiny_config) -> None:
    ds = load_dataset(toy_dir)
    straight = pretrain(ds, tiny_config, show_progress=False)
    one = tiny_config.override(["pretrain.epochs=1"])
    pretrain(ds, one, out=tmp_path / "run", show_progress=False)
    resumed = pretrain(ds, tiny_config, out=tmp_path / "run", resume=True, show_progress=False)
    assert [e["epoch"] for e in resumed.log] == [1, 2]
    assert [e["loss"] for e in resumed.log] == [e["loss"] for e in straight.log]


def test_warm_start_needs_the_same_id_space(toy_dir: Path, tmp_path: Path, tiny_config) -> None:
    ds = load_dataset(toy_dir)
    pretrain(ds, tiny_config, out=tmp_path / "run", show_progress=False)
    warm = pretrain(
        ds,
        tiny_config.override(["pretrain.epochs=1"]),
        warm_start=tmp_path / "run",
        show_progress=False,
    )
    assert math.isfinite(warm.log[0]["loss"])
    other = load_dataset(write_dataset(toy_tables(n_users=70), tmp_path / "other"))
    # Same entities but more users: the fingerprint covers entities, relations and items only,
    # so this warm start is allowed; a different item set is not.
    pretrain(
        other,
        tiny_config.override(["pretrain.epochs=1"]),
        warm_start=tmp_path / "run",
        show_progress=False,
    )
    tables = toy_tables()
    tables["item_entities"] = tables["item_entities"].assign(
        item=tables["item_entities"]["item"].str.replace("s1_", "x1_")
    )
    tables["interactions"] = tables["interactions"].assign(
        item=tables["interactions"]["item"].str.replace("s1_", "x1_")
    )
    renamed = load_dataset(write_dataset(tables, tmp_path / "renamed"))
    with pytest.raises(CheckpointError, match="another id space"):
        pretrain(renamed, tiny_config, warm_start=tmp_path / "run", show_progress=False)


def test_sampled_subgraph_training(toy_dir: Path, tiny_config) -> None:
    ds = load_dataset(toy_dir)
    cfg = tiny_config.override(['model.graph_sampling="sampled"', "model.fanout=[3, 2]"])
    pre = pretrain(ds, cfg, show_progress=False)
    assert all(math.isfinite(e["loss"]) for e in pre.log)
    again = pretrain(ds, cfg, show_progress=False)
    assert [e["loss"] for e in pre.log] == [e["loss"] for e in again.log]


def test_user_vectors_equal_interests_then_fusion(
    toy_dir: Path, tmp_path: Path, tiny_config
) -> None:
    """The offline inference flow's user part equals Eq. 1 then Eq. 2 of the model itself."""
    ds = load_dataset(toy_dir)
    pre = pretrain(ds, tiny_config, out=tmp_path / "run", show_progress=False)
    users = np.arange(ds.num_users)
    times = np.linspace(0, ds.interactions["timestamp"].max() + 1, ds.num_users)  # some empty
    with torch.no_grad():
        interests, universal = pre.user_vectors(users, times, chunk=3)
        expected = pre.interests(users, times)
        torch.testing.assert_close(interests, expected)
        torch.testing.assert_close(universal, pre.model.universal(expected))
    assert (interests[0] == 0).all()  # no history before the first time


def test_fused_adam_matches_the_default_up_to_rounding(
    toy_dir: Path, tmp_path: Path, tiny_config
) -> None:
    ds = load_dataset(toy_dir)
    fused = tiny_config.override(["pretrain.fused_adam=true"])
    plain = pretrain(ds, tiny_config, show_progress=False)
    first = pretrain(ds, fused, show_progress=False)
    again = pretrain(ds, fused, show_progress=False)
    assert [e["loss"] for e in first.log] == [e["loss"] for e in again.log]  # deterministic
    torch.testing.assert_close(
        first.entity_table(), plain.entity_table(), rtol=1e-4, atol=1e-5
    )  # the same optimiser up to rounding
    # resuming keeps the fused optimiser and continues exactly
    pretrain(ds, fused.override(["pretrain.epochs=1"]), out=tmp_path / "run", show_progress=False)
    resumed = pretrain(ds, fused, out=tmp_path / "run", resume=True, show_progress=False)
    assert [e["loss"] for e in resumed.log] == [e["loss"] for e in first.log]


@pytest.mark.parametrize("served", ["none", "softmax"])
def test_bf16_losses_agree_with_float32(toy_dir: Path, tiny_config, served: str) -> None:
    """``pretrain.precision = "bf16"`` runs the losses' products in bfloat16: deterministic, and
    the epoch losses agree with float32 within bfloat16's rounding."""
    ds = load_dataset(toy_dir)
    plain = tiny_config.override([f'pretrain.served_loss="{served}"'])
    half = plain.override(['pretrain.precision="bf16"'])
    exact = pretrain(ds, plain, show_progress=False)
    first = pretrain(ds, half, show_progress=False)
    again = pretrain(ds, half, show_progress=False)
    assert [e["loss"] for e in first.log] == [e["loss"] for e in again.log]
    losses = np.array([e["loss"] for e in first.log])
    reference = np.array([e["loss"] for e in exact.log])
    assert not np.array_equal(losses, reference)  # the products did run in bfloat16
    np.testing.assert_allclose(losses, reference, rtol=2e-2)


def test_unknown_precision_is_refused(tiny_config) -> None:
    with pytest.raises(ValueError, match="precision"):
        tiny_config.override(['pretrain.precision="fp16"'])


def test_evaluated_states_are_kept_resumed_and_scored_as_one_mean(
    toy_dir: Path, tmp_path: Path, tiny_config
) -> None:
    ds = load_dataset(toy_dir)
    cfg = tiny_config.override(['eval.zero_shot_states="evaluated"'])
    straight = pretrain(ds, cfg, show_progress=False)
    assert len(straight.states) == len(straight.log) == 2
    assert not torch.equal(
        straight.states[0]["entity_encoder.embedding.weight"],
        straight.states[1]["entity_encoder.embedding.weight"],
    )
    # an interrupted run, resumed, ends with the same states, and a loaded run has them too
    pretrain(ds, cfg.override(["pretrain.epochs=1"]), out=tmp_path / "run", show_progress=False)
    resumed = pretrain(ds, cfg, out=tmp_path / "run", resume=True, show_progress=False)
    loaded = load_pretrained(tmp_path / "run", ds)
    for run in (resumed, loaded):
        assert len(run.states) == 2
        for got, want in zip(run.states, straight.states, strict=True):
            assert all(torch.equal(got[k], want[k]) for k in want)
    # the zero-shot score is the mean of each state's score; the kept state alone differs
    target = TargetDomain(ds, ds.target_domains[0])
    users, times = np.arange(5), np.full(5, np.inf)
    items = torch.arange(len(target.catalogue)).expand(5, -1)

    def scores(pre) -> torch.Tensor:
        ranker = ZeroShotRanker(pre, target)
        return ranker(torch.as_tensor(users), ranker.states(users, times), items)

    each = torch.stack([scores(member) for member in loaded.state_models()])
    torch.testing.assert_close(scores(loaded), each.mean(0))
    assert not torch.allclose(scores(loaded), scores(dataclasses.replace(loaded, states=[])))
    # the store serves the mean as one inner product: the states' vectors side by side
    export(tmp_path / "run", ds, tmp_path / "store")
    version = StoreVersion.open(tmp_path / "store")
    assert version.zero_shot_states == 2 and version.user_zero_shot is not None
    catalogue = version.catalogues[ds.domains[ds.target_domains[0]]]
    assert catalogue.zero_shot is not None and catalogue.zero_shot.shape[1] == 2 * cfg.model.dim
    served = version.user_zero_shot[users] @ torch.from_numpy(catalogue.zero_shot).T
    torch.testing.assert_close(served, scores(loaded))
    # ... for the inner scorer only: another scorer uses each state's prototypes or decoder
    decoder = cfg.override(['eval.zero_shot_scorer="decoder"'])
    pretrain(ds, decoder, out=tmp_path / "decoder", show_progress=False)
    with pytest.raises(ValueError, match="zero_shot_scorer"):
        export(tmp_path / "decoder", ds, tmp_path / "store")
    # without the key a run keeps no state files, and a loaded run asking for them is refused
    pretrain(ds, tiny_config, out=tmp_path / "plain", show_progress=False)
    assert not list((tmp_path / "plain").glob("state-*"))
    with pytest.raises(CheckpointError, match="state-000.safetensors: missing"):
        load_states(tmp_path / "plain", cfg, 2)


def test_head_reads_the_zero_shot_rankers_score(toy_dir: Path, tiny_config) -> None:
    ds = load_dataset(toy_dir)
    cfg = tiny_config.override(
        [
            'eval.zero_shot_states="evaluated"',
            "eval.zero_shot_prior=0.5",
            "finetune.interaction_features=true",
        ]
    )
    pre = pretrain(ds, cfg, show_progress=False)
    assert len(pre.states) == 2
    target = TargetDomain(ds, ds.target_domains[0])
    users, times = np.arange(6), np.full(6, np.inf)
    items = torch.arange(len(target.catalogue)).expand(6, -1)
    ids = torch.as_tensor(users)
    prior = zero_shot_prior(ds, pre, cfg)
    assert prior[0] == 0.5 and prior[1] is not None

    # the kept state's score through the stored z_u equals the model's own zero-shot score
    kept = dataclasses.replace(pre, states=[])
    alone = ZeroShotRanker(kept, target)
    table = kept.entity_table()
    want = kept.model.zero_shot_scores(
        kept.interests(users, times, table), item_vectors(table, target.item_entities)[items]
    )
    torch.testing.assert_close(alone(ids, alone.states(users, times), items), want)

    def affinity(affinity: str, run=pre) -> torch.Tensor:
        c = cfg.override([f'finetune.affinity="{affinity}"'])
        ranker = PeaceRanker(run, target, c, prior)
        return ranker.pair_inputs(ids, ranker.states(users, times), items)[3]

    # "zero-shot": the zero-shot ranker's score (mean over the states plus the prior)
    served = ZeroShotRanker(pre, target, "inner", *prior)
    torch.testing.assert_close(
        affinity("zero-shot"), served(ids, served.states(users, times), items)
    )
    # "inner": the kept state's z_u . z_i, as before; "inner-prior": that plus the prior
    torch.testing.assert_close(affinity("inner"), want)
    bias = 0.5 * item_prior(prior[1], target.item_entities)[items]
    torch.testing.assert_close(affinity("inner-prior"), want + bias)
    assert not torch.allclose(affinity("zero-shot"), want)
    # with neither states nor a prior weight (a competitor's case) both read z_u . z_i
    c = cfg.override(['finetune.affinity="zero-shot"'])
    assert PeaceRanker(kept, target, c).zero_shot is None
    with pytest.raises(ValueError, match="freeze_encoders"):
        PeaceRanker(pre, target, c.override(["finetune.freeze_encoders=false"]), prior)


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory):
    """The synthetic small platform: enough rows per step for threads to share the work."""
    from peace.data.synthetic import generate

    out = tmp_path_factory.mktemp("platform") / "data"
    generate(out, seed=0)
    return load_dataset(out)


@pytest.mark.parametrize("architecture", ["PEACE", "PCRec-L"])
def test_same_seed_same_weights_on_two_threads(platform, tiny_config, architecture: str) -> None:
    """A seed fixes the weights on two threads too (PCRec-L's graph views and PEACE's served term
    index tensors with repeated rows, whose backward adds across threads)."""
    cfg = tiny_config.override(
        [
            'pretrain.served_loss="softmax"',
            "pretrain.batch_size=512",
            "pretrain.max_steps=8",
            "model.dim=64",
        ]
    )
    threads = torch.get_num_threads()
    runs = []
    try:
        torch.set_num_threads(2)
        for _ in range(2):
            model = pretrain(platform, cfg, show_progress=False, architecture=architecture).model
            runs.append(model.state_dict())
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(runs[0][k], runs[1][k]) for k in runs[0])
    assert not torch.are_deterministic_algorithms_enabled()  # the setting is restored

"""The source profile prior in the zero-shot score (``eval.zero_shot_profile_prior``): its
definition, what it reads, the reference that ranks by it alone, the store and the service."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import TINY_OVERRIDES, toy_tables
from fastapi.testclient import TestClient

from peace.config import PeaceConfig
from peace.data.contract import write_dataset
from peace.data.dataset import Dataset, load_dataset
from peace.flows.offline_inference import export
from peace.flows.pretrain import pretrain
from peace.flows.pretrained import load_pretrained
from peace.flows.publish import finetune_and_publish
from peace.flows.rankers import (
    ProfilePriorRanker,
    TargetDomain,
    ZeroShotRanker,
    profile_prior_fallback,
    source_entity_prior,
    source_profile_prior,
)
from peace.serve.app import create_app
from peace.serve.service import Service
from peace.store import StoreVersion

PRIOR, PROFILE = 0.5, 4.0  # a large profile weight, so that it changes the toy rankings
TINY = [*TINY_OVERRIDES, "pretrain.epochs=1", "pretrain.max_steps=6"]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Dataset]:
    root = tmp_path_factory.mktemp("profile")
    ds = load_dataset(write_dataset(toy_tables(), root / "toy"))
    cfg = PeaceConfig().override(
        [*TINY, f"eval.zero_shot_prior={PRIOR}", f"eval.zero_shot_profile_prior={PROFILE}"]
    )
    pretrain(ds, cfg, out=root / "run", show_progress=False)
    return root / "run", ds


def _take_up(ds: Dataset, cutoff: float) -> pd.Series:
    """Each source item's log(1 + distinct users with a positive source row before
    ``cutoff``), recomputed from the interactions table with pandas."""
    inter = ds.interactions
    keep = (
        inter["domain"].isin(ds.source_domains)
        & (inter["timestamp"] < cutoff)
        & (inter["label"] == 1)
    )
    users = inter[keep].groupby("item")["user"].nunique()
    source = np.flatnonzero(np.isin(ds.item_domain, ds.source_domains))
    return pd.Series(np.log1p(users.reindex(source, fill_value=0).to_numpy()), index=source)


def _by_definition(ds: Dataset, cutoff: float) -> np.ndarray:
    """The prior recomputed by its definition."""
    take_up = _take_up(ds, cutoff)
    source = take_up.index.to_numpy()
    codes = ds.item_profiles.codes
    out = np.zeros(ds.num_items)
    for f in range(codes.shape[1]):
        means = take_up.groupby(codes[source, f]).mean()
        out += np.array([means.get(c, take_up.mean()) for c in codes[:, f]])
    return out / codes.shape[1]


def test_the_prior_by_definition_and_what_it_reads(run: tuple[Path, Dataset]) -> None:
    path, ds = run
    cutoff = load_pretrained(path, ds).cutoff
    prior = source_profile_prior(ds, cutoff)
    assert prior.shape == (ds.num_items,) and prior.dtype == torch.float32
    assert prior.std() > 0  # the toy profiles differ in take-up, so the test can fail
    assert np.allclose(prior.numpy(), _by_definition(ds, cutoff), atol=1e-6)
    # Target rows and source rows at or after the cut-off do not move it.
    inter = ds.interactions
    later = inter["timestamp"] >= cutoff
    changed = inter.copy()
    target = changed["domain"].isin(ds.target_domains).to_numpy()
    changed.loc[target | later.to_numpy(), "user"] = changed["user"].iloc[0]
    ds.interactions = changed
    try:
        assert torch.equal(source_profile_prior(ds, cutoff), prior)
    finally:
        ds.interactions = inter
    # A value that no source item has scores the mean take-up of the source items.
    assert profile_prior_fallback(ds, cutoff) == pytest.approx(_take_up(ds, cutoff).mean())


def test_no_profiles_no_prior(run: tuple[Path, Dataset]) -> None:
    _, ds = run
    profiles = ds.item_profiles
    ds.item_profiles = None
    try:
        assert torch.equal(source_profile_prior(ds, np.inf), torch.zeros(ds.num_items))
    finally:
        ds.item_profiles = profiles


def _offline(path: Path, ds: Dataset, domain: str, users: np.ndarray, profile: float):
    pre = load_pretrained(path, ds)
    target = TargetDomain(ds, ds.domain_index(domain))
    weight = (profile, source_profile_prior(ds, pre.cutoff) if profile else None)
    entity = source_entity_prior(ds, pre.cutoff)
    ranker = ZeroShotRanker(pre, target, "inner", PRIOR, entity, profile=weight)
    states = ranker.states(users, np.full(len(users), np.inf))
    items = torch.arange(len(target.catalogue)).expand(len(users), -1)
    return ranker(torch.as_tensor(users), states, items), target, pre


def test_offline_score_adds_the_profile_prior_reference(run: tuple[Path, Dataset]) -> None:
    path, ds = run
    users = np.arange(8)
    with_profile, target, pre = _offline(path, ds, "t1", users, PROFILE)
    without, _, _ = _offline(path, ds, "t1", users, 0.0)
    reference = ProfilePriorRanker(target, source_profile_prior(ds, pre.cutoff)).scores
    assert reference.std() > 0
    assert torch.allclose(with_profile, without + PROFILE * reference, atol=1e-5)
    with pytest.raises(ValueError, match="source profile prior"):
        ZeroShotRanker(pre, target, "inner", profile=(PROFILE, None))


def test_served_scores_include_the_profile_prior(run: tuple[Path, Dataset], tmp_path: Path) -> None:
    """The store keeps each catalogue's profile prior, its weight and the fallback; /rank
    equals the offline ranker, and an item added at run time gets the fallback."""
    path, ds = run
    store = tmp_path / "store"
    export(path, ds, store)
    v = StoreVersion.open(store)
    pre = load_pretrained(path, ds)
    assert v.profile_weight == PROFILE and v.manifest["zero_shot_profile_prior"] == PROFILE
    assert v.profile_fallback == pytest.approx(profile_prior_fallback(ds, pre.cutoff))
    users = np.arange(6)
    offline, target, _ = _offline(path, ds, "t1", users, PROFILE)
    assert np.allclose(
        v.catalogues["t1"].profile_prior,
        source_profile_prior(ds, pre.cutoff)[torch.as_tensor(target.catalogue)].numpy(),
    )
    items = [str(i) for i in ds.items[target.catalogue]]
    service = Service(store)
    for u in users:
        body = service.rank("t1", str(ds.users[u]), items)
        assert np.allclose(body["scores"], offline[u].numpy(), atol=1e-5)
    ents = [str(e) for e in ds.entities]
    with TestClient(create_app(store)) as c:
        r = c.put("/v1/domains/t1/items/t1_new", json={"entities": [ents[3], ents[4]]})
        assert r.status_code == 200, r.text
    state = Service(store).snapshot().domains["t1"]
    expected = PRIOR * float(v.entity_prior[[3, 4]].mean()) + PROFILE * v.profile_fallback
    assert state.bias is not None
    assert state.bias[state.item_row["t1_new"]].item() == pytest.approx(expected, abs=1e-5)


def test_the_served_head_reads_the_entity_prior_alone(
    run: tuple[Path, Dataset], tmp_path: Path
) -> None:
    """A normal ranker whose head reads z_u . z_i plus the prior (``inner-prior``) is served as
    it was trained: with the source-entity prior, not the profile term of the zero-shot score,
    also for an item added at run time."""
    path, ds = run
    store = tmp_path / "store"
    export(path, ds, store)
    overrides = [
        "finetune.epochs=2",
        "finetune.interaction_features=true",
        'finetune.affinity="inner-prior"',
    ]
    result = finetune_and_publish(path, ds, store, "t1", overrides=overrides)
    users = np.arange(4)
    ranker = result.ranker
    items = [str(i) for i in ds.items[result.target.catalogue]]
    with torch.no_grad():
        offline = ranker(
            torch.as_tensor(users),
            ranker.states(users, np.full(len(users), np.inf)),
            torch.arange(len(items)).expand(len(users), -1),
        )
    service = Service(store)
    state = service.snapshot().domains["t1"]
    assert state.head_bias is not None and not torch.equal(state.head_bias, state.bias)
    for u in users:
        body = service.rank("t1", str(ds.users[u]), items)
        assert body["ranker"] == "normal"
        assert np.allclose(body["scores"], offline[u].numpy(), atol=1e-5)
    v = StoreVersion.open(store)
    ents = [str(e) for e in ds.entities]
    with TestClient(create_app(store)) as c:
        r = c.put("/v1/domains/t1/items/t1_new", json={"entities": [ents[3], ents[4]]})
        assert r.status_code == 200, r.text
    state = Service(store).snapshot().domains["t1"]
    row = state.item_row["t1_new"]
    assert state.head_bias is not None
    assert state.head_bias[row].item() == pytest.approx(
        PRIOR * float(v.entity_prior[[3, 4]].mean())
    )

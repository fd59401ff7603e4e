"""The source-entity prior in the zero-shot score (``eval.zero_shot_prior``): offline, in the
store, served, for items added at run time, and through the approximate index."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pyarrow as pa
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
from peace.flows.rankers import (
    EntityPriorRanker,
    TargetDomain,
    ZeroShotRanker,
    source_entity_counts,
    source_entity_prior,
)
from peace.serve.app import create_app
from peace.serve.service import Service
from peace.store import StoreError, StoreVersion, current_version, read_arrow
from peace.store.versions import version_path

WEIGHT = 3.0  # large, so that the prior changes the order of the toy catalogues
TINY = [*TINY_OVERRIDES, "pretrain.epochs=1", "pretrain.max_steps=6"]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Dataset]:
    root = tmp_path_factory.mktemp("prior")
    ds = load_dataset(write_dataset(toy_tables(), root / "toy"))
    cfg = PeaceConfig().override([*TINY, f"eval.zero_shot_prior={WEIGHT}"])
    pretrain(ds, cfg, out=root / "run", show_progress=False)
    return root / "run", ds


@pytest.fixture(scope="module")
def store(run: tuple[Path, Dataset], tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("store")
    export(run[0], run[1], folder)
    return folder


def _offline(run: Path, ds: Dataset, domain: str, users: np.ndarray, weight: float):
    pre = load_pretrained(run, ds)
    target = TargetDomain(ds, ds.domain_index(domain))
    ranker = ZeroShotRanker(pre, target, "inner", weight, source_entity_prior(ds, pre.cutoff))
    states = ranker.states(users, np.full(len(users), np.inf))
    items = torch.arange(len(target.catalogue)).expand(len(users), -1)
    return ranker(torch.as_tensor(users), states, items), target, pre


def test_offline_score_adds_the_entity_prior_reference(run: tuple[Path, Dataset]) -> None:
    path, ds = run
    users = np.arange(8)
    with_prior, target, pre = _offline(path, ds, "t1", users, WEIGHT)
    plain, _, _ = _offline(path, ds, "t1", users, 0.0)
    reference = EntityPriorRanker(target, source_entity_counts(ds, pre.cutoff).rows).scores
    assert reference.std() > 0  # the toy items differ in prior, so the test can fail
    assert torch.allclose(with_prior, plain + WEIGHT * reference, atol=1e-5)
    with pytest.raises(ValueError, match="source-entity prior"):
        ZeroShotRanker(pre, target, "inner", WEIGHT, None)


def test_store_carries_the_prior_and_its_weight(store: Path, run: tuple[Path, Dataset]) -> None:
    path, ds = run
    v = StoreVersion.open(store)
    pre = load_pretrained(path, ds)
    assert v.manifest["zero_shot_prior"] == WEIGHT and v.prior_weight == WEIGHT
    assert torch.equal(v.entity_prior, source_entity_prior(ds, pre.cutoff))
    target = TargetDomain(ds, ds.domain_index("t2"))
    reference = EntityPriorRanker(target, source_entity_counts(ds, pre.cutoff).rows).scores
    assert np.allclose(v.catalogues["t2"].prior, reference.numpy(), atol=1e-6)


def test_served_scores_and_recommendations_include_the_prior(
    store: Path, run: tuple[Path, Dataset]
) -> None:
    """/rank equals the offline ranker; recommend through an index built over [z_i, w prior(i)]
    returns the exact top k even with a candidate pool of k."""
    path, ds = run
    users = np.arange(6)
    offline, target, _ = _offline(path, ds, "t1", users, WEIGHT)
    items = [str(i) for i in ds.items[target.catalogue]]
    index_args = {"n_lists": 1, "backend": "numpy"}  # one list: the index search is exact
    service = Service(store, exact_threshold=0, ann_pool=3, index_args=index_args)
    plain, _, _ = _offline(path, ds, "t1", users, 0.0)
    differs = 0
    for u in users:
        body = service.rank("t1", str(ds.users[u]), items)
        assert body["ranker"] == "zero-shot"
        assert np.allclose(body["scores"], offline[u].numpy(), atol=1e-5)
        top = service.recommend("t1", str(ds.users[u]), 3)
        best = torch.topk(offline[u], 3).indices.tolist()
        assert top["items"] == [items[i] for i in best]
        differs += torch.topk(plain[u], 3).indices.tolist() != best
    assert differs > 0  # without the prior the top 3 would differ for some user


def test_items_added_at_run_time_get_their_prior(run: tuple[Path, Dataset], tmp_path: Path) -> None:
    path, ds = run
    store = tmp_path / "store"  # edits are persisted in the store: not the shared one
    export(path, ds, store)
    v = StoreVersion.open(store)
    ents = [str(e) for e in ds.entities]
    user = str(ds.users[0])
    with TestClient(create_app(store)) as c:
        r = c.put("/v1/domains/t1/items/t1_new", json={"entities": [ents[3], ents[4]]})
        assert r.status_code == 200, r.text
        body = {"domain": "pets", "items": [{"item": "p0", "entities": [ents[5]]}]}
        assert c.post("/v1/domains", json=body).status_code == 201
    service = Service(store)
    snap = service.snapshot()
    for domain, item, rows in (("t1", "t1_new", [3, 4]), ("pets", "p0", [5])):
        state = snap.domains[domain]
        prior = float(v.entity_prior[rows].mean())
        assert state.bias is not None
        assert state.bias[state.item_row[item]].item() == pytest.approx(WEIGHT * prior, abs=1e-6)
        served = service.rank(domain, user, [item])["scores"][0]
        uni = v.universal[v.user_row[user]]
        expected = float(state.vectors[state.item_row[item]] @ uni) + WEIGHT * prior
        assert served == pytest.approx(expected, abs=1e-5)


def test_a_version_without_the_prior_column_is_refused(
    run: tuple[Path, Dataset], tmp_path: Path
) -> None:
    """A manifest that weighs the prior over an entity table without it (a damaged or
    hand-made version) is refused with a message that says what to do."""
    store = tmp_path / "store"
    export(run[0], run[1], store)
    file = version_path(store, current_version(store)) / "entities.arrow"
    older = read_arrow(file).drop_columns(["prior"])
    with pa.OSFile(str(file), "wb") as sink, pa.ipc.new_file(sink, older.schema) as writer:
        writer.write_table(older)
    with pytest.raises(StoreError, match="no 'prior' column.*export the version again"):
        StoreVersion.open(store, verify=False)


def test_index_candidates_include_the_items_of_highest_prior() -> None:
    """With a coarse index (40 lists, 1 probed) every query's candidates hold the ``pool``
    items of highest bias besides the index's own pool, and recommend scores them exactly."""
    from peace.serve.domains import DomainState
    from peace.serve.rankers import UserVectors, ZeroShotScorer

    gen = torch.Generator().manual_seed(0)
    n, d, pool = 2000, 8, 10
    vectors = torch.randn(n, d, generator=gen)
    bias = 4.0 * torch.rand(n, generator=gen)
    items = tuple(f"i{j}" for j in range(n))
    scorer = ZeroShotScorer(d, 4, 2, (8,), 8, use_pea=False, mode="inner", prior_weight=1.0)
    state = DomainState(
        name="d",
        origin="launched",
        items=items,
        item_row={it: j for j, it in enumerate(items)},
        entities=((),) * n,
        vectors=vectors,
        keys=None,
        counts=np.zeros(n, np.int64),
        bias=bias,
    ).with_index(0, n_lists=40, n_probe=1, backend="numpy")
    highest = set(torch.topk(bias, pool).indices.tolist())
    assert state.bias_order is not None and set(state.bias_order[:pool].tolist()) == highest
    added = 0
    for _ in range(20):
        universal = torch.randn(d, generator=gen)
        user = UserVectors("u", torch.zeros(2, d), universal)
        rows = set(state.candidates(scorer, user, pool).tolist())
        assert highest <= rows
        alone = set(
            dataclasses.replace(state, bias_order=None).candidates(scorer, user, pool).tolist()
        )
        added += len(highest - alone)
        got, scores, _, approx = state.recommend(scorer, user, 10, pool)
        exact = vectors @ universal + bias
        assert approx and scores == pytest.approx([exact[int(i[1:])].item() for i in got], abs=1e-5)
    assert added > 0  # the index's pool alone misses some of them


def test_the_prior_counted_in_users(run: tuple[Path, Dataset], tmp_path: Path) -> None:
    """``eval.zero_shot_prior_counts = "users"``: log(1 + distinct users) per entity, offline
    and in the store."""
    path, ds = run
    pre = load_pretrained(path, ds)
    inter = ds.interactions
    keep = (
        inter["domain"].isin(ds.source_domains)
        & (inter["timestamp"] < pre.cutoff)
        & (inter["label"] == 1)
    )
    users: dict[int, set[int]] = {}
    for u, i in zip(inter["user"][keep], inter["item"][keep], strict=True):
        for e in ds.item_entities[i]:
            if e >= 0:
                users.setdefault(int(e), set()).add(int(u))
    expected = np.zeros(ds.num_entities)
    for e, who in users.items():
        expected[e] = len(who)
    prior = source_entity_prior(ds, pre.cutoff, "users")
    assert np.allclose(prior.numpy(), np.log1p(expected), atol=1e-6)
    assert not torch.equal(prior, source_entity_prior(ds, pre.cutoff))  # the test can fail
    with pytest.raises(ValueError, match="prior counts"):
        source_entity_prior(ds, pre.cutoff, "items")

    cfg = PeaceConfig().override(
        [*TINY, f"eval.zero_shot_prior={WEIGHT}", 'eval.zero_shot_prior_counts="users"']
    )
    pretrain(ds, cfg, out=tmp_path / "run", show_progress=False)
    export(tmp_path / "run", ds, tmp_path / "store")
    v = StoreVersion.open(tmp_path / "store")
    assert v.manifest["zero_shot_prior_counts"] == "users"
    assert torch.equal(v.entity_prior, prior)

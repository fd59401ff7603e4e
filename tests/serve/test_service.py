"""The HTTP ranking service: rankers, fallback, launches, limits, auth, metrics, hot reload."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

from peace.data.dataset import Dataset
from peace.flows.offline_inference import export
from peace.flows.pretrained import load_pretrained
from peace.flows.publish import finetune_and_publish
from peace.flows.rankers import TargetDomain, ZeroShotRanker
from peace.serve.app import Service, create_app
from peace.serve.metrics import UNMATCHED, Metrics
from peace.serve.rankers import UserVectors
from peace.store import (
    POINTER,
    VERSIONS,
    StoreError,
    StoreVersion,
    current_version,
    set_current,
    write_pointer,
)


def client(store: Path, **options: object) -> TestClient:
    return TestClient(create_app(store, **options))


def catalogue(ds: Dataset, domain: str) -> list[str]:
    return [str(i) for i in ds.items[ds.domain_items(ds.domain_index(domain))]]


# --------------------------------------------------------------------------- ranking
def test_rank_zero_shot_matches_offline(base: tuple[Path, Dataset, Path], store: Path) -> None:
    run, ds, _ = base
    pre = load_pretrained(run, ds)
    target = TargetDomain(ds, ds.domain_index("t2"))
    ranker = ZeroShotRanker(pre, target)
    users = np.arange(6)
    offline = ranker(
        torch.as_tensor(users),
        ranker.states(users, np.full(6, np.inf)),
        torch.arange(len(target.catalogue)).expand(6, -1),
    )
    items = catalogue(ds, "t2")
    with client(store) as c:
        for u in users:
            r = c.post("/v1/domains/t2/rank", json={"user": str(ds.users[u]), "items": items})
            assert r.status_code == 200, r.text
            body = r.json()
            assert body["ranker"] == "zero-shot" and body["unknown_items"] == []
            assert body["store_version"] == current_version(store)
            assert np.allclose(body["scores"], offline[u].numpy(), atol=1e-5)
        # Candidate order is the caller's; unknown ids get null and are listed.
        r = c.post(
            "/v1/domains/t2/rank",
            json={"user": str(ds.users[0]), "items": ["nope", items[3], items[0]]},
        )
        body = r.json()
        assert body["scores"][0] is None and body["unknown_items"] == ["nope"]
        assert body["scores"][1:] == pytest.approx(
            [offline[0, 3].item(), offline[0, 0].item()], abs=1e-5
        )


def test_unknown_user_gets_popularity(base: tuple[Path, Dataset, Path], store: Path) -> None:
    _, ds, _ = base
    items = catalogue(ds, "t1")
    pop = StoreVersion.open(store).catalogues["t1"].popularity
    with client(store) as c:
        r = c.post("/v1/domains/t1/rank", json={"user": "stranger", "items": items})
        body = r.json()
        assert body["ranker"] == "popularity-fallback"
        assert np.allclose(body["scores"], pop / pop.sum())
        r = c.get("/v1/domains/t1/recommend", params={"user": "stranger", "k": 3})
        top = [items[i] for i in np.lexsort((np.arange(len(pop)), -pop))[:3]]
        assert r.json()["items"] == top and r.json()["ranker"] == "popularity-fallback"


def test_recommend_is_the_top_of_rank(base: tuple[Path, Dataset, Path], store: Path) -> None:
    _, ds, _ = base
    items = catalogue(ds, "t1")
    user = str(ds.users[7])
    with client(store) as c:
        scores = c.post("/v1/domains/t1/rank", json={"user": user, "items": items}).json()
        order = np.argsort(-np.array(scores["scores"]), kind="stable")[:5]
        r = c.get("/v1/domains/t1/recommend", params={"user": user, "k": 5}).json()
        assert r["items"] == [items[i] for i in order] and r["approximate"] is False
        assert np.allclose(r["scores"], np.array(scores["scores"])[order], atol=1e-6)
        assert len(
            c.get("/v1/domains/t1/recommend", params={"user": user, "k": 999}).json()["items"]
        ) == len(items)


def test_normal_ranker_is_picked_up_without_restart(
    base: tuple[Path, Dataset, Path], store: Path
) -> None:
    run, ds, _ = base
    items = catalogue(ds, "t1")
    user = str(ds.users[3])
    service = Service(store, reload_interval_s=0.0)
    with TestClient(create_app(store, service=service)) as c:
        before = c.post("/v1/domains/t1/rank", json={"user": user, "items": items}).json()
        assert before["ranker"] == "zero-shot"
        old = service.snapshot()
        result = finetune_and_publish(run, ds, store, "t1")
        for _ in range(200):  # bounded: the background reload swaps the snapshot
            body = c.post("/v1/domains/t1/rank", json={"user": user, "items": items}).json()
            if body["ranker"] == "normal":
                break
            time.sleep(0.05)
        assert body["ranker"] == "normal" and body["ranker_version"] == result.version
        u = int(np.flatnonzero(ds.users == user)[0])
        offline = result.ranker(
            torch.as_tensor([u]),
            result.ranker.states(np.array([u]), np.array([np.inf])),
            torch.arange(len(items)).unsqueeze(0),
        )[0].detach()
        assert np.allclose(body["scores"], offline.numpy(), atol=1e-5)
        # A request that started on the old snapshot still finishes on it.
        assert old.domains["t1"].normal is None
        vectors = UserVectors(user, old.version.interests[0], old.version.universal[0])
        assert old.domains["t1"].recommend(old.scorer, vectors, 3, 10)[2] == "zero-shot"
        t2 = c.post("/v1/domains/t2/rank", json={"user": user, "items": catalogue(ds, "t2")})
        assert t2.json()["ranker"] == "zero-shot"
        listing = c.get("/v1/domains").json()
        assert {d["domain"]: d["ranker"] for d in listing["domains"]} == {
            "t1": "normal",
            "t2": "zero-shot",
        }


def test_new_version_and_roll_back_are_picked_up(
    base: tuple[Path, Dataset, Path], store: Path
) -> None:
    run, ds, _ = base
    first = current_version(store)
    service = Service(store, reload_interval_s=0.0)
    with TestClient(create_app(store, service=service)) as c:
        second = export(run, ds, store, as_of=600.0)
        service.reload()  # or the watcher thread of the app got there first
        assert c.get("/healthz").json()["store_version"] == second
        set_current(store, first)
        service.reload()
        assert c.get("/healthz").json()["store_version"] == first
        # A broken version is refused; the old snapshot keeps serving.
        broken = export(run, ds, store, make_current=False)
        (store / VERSIONS / broken / "users.arrow").chmod(0o644)
        (store / VERSIONS / broken / "users.arrow").write_bytes(b"garbage")
        with pytest.raises(StoreError, match="users.arrow: checksum mismatch"):
            set_current(store, broken)  # `peace store use` verifies the version
        write_pointer(store / POINTER, broken)  # a pointer changed by hand is not
        assert service.reload() is False
        assert c.get("/healthz").json()["store_version"] == first
        assert "reload_failed" in c.get("/metrics").text
        # The failure is reported without the store's place on disk.
        described = c.get("/v1/domains").text
        assert "users.arrow: checksum mismatch" in described
        assert str(store) not in described and str(store.resolve()) not in described


# --------------------------------------------------------------------------- launches and items
def test_launch_domain_and_add_items(base: tuple[Path, Dataset, Path], store: Path) -> None:
    _, ds, _ = base
    v = StoreVersion.open(store)
    ents = [str(e) for e in ds.entities]
    body = {
        "domain": "pets",
        "items": [{"item": f"p{j}", "entities": [ents[j], ents[j + 1]]} for j in range(6)],
    }
    with client(store) as c:
        r = c.post("/v1/domains", json=body)
        assert r.status_code == 201, r.text
        assert c.post("/v1/domains", json=body).status_code == 409
        user = str(ds.users[0])
        r = c.post("/v1/domains/pets/rank", json={"user": user, "items": ["p0", "p5"]})
        assert r.status_code == 200 and r.json()["ranker"] == "zero-shot"
        r = c.put("/v1/domains/pets/items/p9", json={"entities": [ents[10]]})
        assert r.status_code == 200 and r.json()["created"] is True
        r = c.get("/v1/domains/pets/recommend", params={"user": user, "k": 10})
        assert sorted(r.json()["items"]) == sorted([f"p{j}" for j in range(6)] + ["p9"])
        # Items of a store domain can be added at run time too.
        r = c.put("/v1/domains/t1/items/t1_new", json={"entities": [ents[3], ents[4]]})
        assert r.status_code == 200
        scored = c.post("/v1/domains/t1/rank", json={"user": user, "items": ["t1_new"]}).json()
        assert scored["scores"][0] is not None
    # The new item's vector is the mean of its entities' vectors, and the score is the model's.
    service = Service(store)  # a restart keeps launched domains and added items
    state = service.snapshot().domains["t1"]
    row = state.item_row["t1_new"]
    vec = v.entity_vectors
    expected = (vec[v.entity_row[ents[3]]] + vec[v.entity_row[ents[4]]]) / 2
    assert torch.allclose(state.vectors[row], expected, atol=1e-6)
    assert "pets" in service.snapshot().domains
    assert service.snapshot().domains["pets"].size == 7
    assert service.rank("t1", user, ["t1_new"])["scores"] == pytest.approx(
        scored["scores"], abs=1e-6
    )


def test_launch_validation(base: tuple[Path, Dataset, Path], store: Path) -> None:
    _, ds, _ = base
    ents = [str(e) for e in ds.entities]
    with client(store) as c:

        def launch(items: list, domain: str = "new") -> tuple[int, str]:
            r = c.post("/v1/domains", json={"domain": domain, "items": items})
            return r.status_code, r.text

        assert launch([{"item": "a", "entities": ["no-such-entity"]}])[0] == 422
        status, text = launch([{"item": "a", "entities": ents[:4]}])
        assert status == 422 and "1 to 3" in text
        status, text = launch(
            [{"item": "a", "entities": [ents[0]]}, {"item": "a", "entities": [ents[1]]}]
        )
        assert status == 422 and "'a'" in text
        assert launch([{"item": "t1_i0", "entities": [ents[0]]}])[0] == 409
        assert launch([], domain="t1")[0] == 409
        assert launch([], domain="s1")[0] == 409
        assert launch([], domain="a/b")[0] == 422
        assert launch([{"item": "a", "entities": [ents[0], ents[0]]}])[0] == 422
        assert c.put("/v1/domains/nowhere/items/x", json={"entities": [ents[0]]}).status_code == 404
        assert c.put("/v1/domains/t1/items/t2_i0", json={"entities": [ents[0]]}).status_code == 409
        assert c.put("/v1/domains/t1/items/x", json={"entities": []}).status_code == 422


# --------------------------------------------------------------------------- limits and errors
def test_bad_requests_are_clear_4xx(base: tuple[Path, Dataset, Path], store: Path) -> None:
    _, ds, _ = base
    items = catalogue(ds, "t1")
    user = str(ds.users[0])
    with client(store, max_candidates=5, max_k=7) as c:

        def rank(payload: object, domain: str = "t1") -> tuple[int, str]:
            r = c.post(f"/v1/domains/{domain}/rank", json=payload)
            return r.status_code, r.text

        assert rank({"user": user, "items": items[:2]}, domain="nope")[0] == 404
        status, text = rank({"user": user, "items": items[:2]}, domain="s1")
        assert status == 404 and "source domain" in text
        assert rank({"user": user, "items": []})[0] == 422
        assert rank({"user": user, "items": items[:6]})[0] == 413
        status, text = rank({"user": user, "items": [items[0], items[1], items[0]]})
        assert status == 422 and items[0] in text
        assert rank({"user": 5, "items": items[:2]})[0] == 422
        assert rank({"user": user, "items": [1, 2]})[0] == 422
        assert rank({"user": user, "items": items[0]})[0] == 422
        assert rank({"user": user})[0] == 422
        assert rank({"user": user, "items": items[:2], "extra": 1})[0] == 422
        assert rank([1, 2])[0] == 422
        r = c.post(
            "/v1/domains/t1/rank",
            content=b"{not json",
            headers={"content-type": "application/json"},
        )
        assert r.status_code == 422
        r = c.post("/v1/domains/t1/rank", content=b"x" * (3 << 20))
        assert r.status_code == 413
        for k in ("0", "-1", "8", str(10**30), "abc", "1.5"):
            r = c.get("/v1/domains/t1/recommend", params={"user": user, "k": k})
            assert r.status_code == 422, k
        assert c.get("/v1/domains/t1/recommend", params={"k": 3}).status_code == 422
        assert c.get("/v1/domains/t1/recommend", params={"user": user, "k": 7}).status_code == 200


def test_token_protects_everything_but_healthz(store: Path) -> None:
    with client(store, token="s3cret") as c:
        assert c.get("/healthz").status_code == 200
        for path in ("/metrics", "/docs", "/openapi.json", "/v1/domains"):
            r = c.get(path)
            assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer", path
        assert c.get("/v1/domains", headers={"Authorization": "Bearer wrong"}).status_code == 401
        ok = c.get("/v1/domains", headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200
        r = c.post("/v1/domains/t1/rank", json={"user": "u", "items": ["t1_i0"]})
        assert r.status_code == 401


def test_metrics_and_docs(base: tuple[Path, Dataset, Path], store: Path) -> None:
    _, ds, _ = base
    with client(store) as c:
        c.post("/v1/domains/t1/rank", json={"user": str(ds.users[0]), "items": ["t1_i0"]})
        c.post("/v1/domains/t1/rank", json={"user": "stranger", "items": ["t1_i0"]})
        c.post("/v1/domains/zzz/rank", json={"user": "u", "items": ["x"]})
        text = c.get("/metrics").text
        assert (
            'peace_requests_total{endpoint="/v1/domains/{domain}/rank",method="POST",'
            'status="200"} 2'
        ) in text
        assert 'status="404"} 1' in text
        assert 'peace_ranker_used_total{ranker="zero-shot"} 1' in text
        assert 'peace_ranker_used_total{ranker="popularity-fallback"} 1' in text
        assert "peace_request_duration_seconds_bucket" in text
        assert "peace_store_info" in text
        assert 'peace_catalogue_items{domain="t1",ranker="zero-shot"}' in text
        spec = c.get("/openapi.json").json()
        assert "/v1/domains/{domain}/rank" in spec["paths"]
        assert c.get("/docs").status_code == 200


def test_large_catalogue_uses_the_index(base: tuple[Path, Dataset, Path], store: Path) -> None:
    _, ds, _ = base
    rng = np.random.default_rng(0)
    ents = [str(e) for e in ds.entities]
    items = []
    for j in range(1500):
        pick = rng.choice(len(ents), size=int(rng.integers(1, 4)), replace=False)
        items.append({"item": f"big{j}", "entities": [ents[p] for p in pick]})
    with client(store, exact_threshold=400, ann_pool=100) as c:
        assert c.post("/v1/domains", json={"domain": "big", "items": items}).status_code == 201
        exact = Service(store, exact_threshold=10**6)
        hits = 0
        for u in range(10):
            user = str(ds.users[u])
            r = c.get("/v1/domains/big/recommend", params={"user": user, "k": 10}).json()
            assert r["approximate"] is True and len(r["items"]) == 10
            truth = exact.recommend("big", user, 10)
            assert truth["items"] and not truth["approximate"]
            # Tie-aware recall: a returned item counts when its exact score reaches the 10th.
            hits += sum(s >= truth["scores"][-1] - 1e-6 for s in r["scores"])
            # Returned scores are exact scores.
            again = c.post("/v1/domains/big/rank", json={"user": user, "items": r["items"]})
            assert np.allclose(again.json()["scores"], r["scores"], atol=1e-5)
        assert hits / 100 >= 0.5


def test_watcher_reloads_without_requests(base: tuple[Path, Dataset, Path], store: Path) -> None:
    run, ds, _ = base
    service = Service(store, reload_interval_s=0.05)
    service.start_watcher()
    try:
        new = export(run, ds, store)
        for _ in range(400):  # bounded: at most 20 s
            if service.snapshot().version.version == new:
                break
            time.sleep(0.05)
        assert service.snapshot().version.version == new
    finally:
        service.stop_watcher()


def test_metric_labels_stay_bounded() -> None:
    metrics = Metrics()
    metrics.observe("/v1/domains/{domain}/rank", "POST", 200, 0.002)
    metrics.observe("/v1/domains/{domain}/rank", "POST", 200, 0.2)
    metrics.observe(UNMATCHED, "BREW", 999, 0.0001)
    metrics.event("reload")
    rank = {"endpoint": "/v1/domains/{domain}/rank"}
    assert metrics.value("peace_requests_total", {**rank, "method": "POST", "status": "200"}) == 2
    assert (
        metrics.value(
            "peace_requests_total", {"endpoint": UNMATCHED, "method": "other", "status": "0"}
        )
        == 1
    )
    assert metrics.value("peace_request_duration_seconds_bucket", {**rank, "le": "0.0025"}) == 1
    assert metrics.value("peace_request_duration_seconds_count", rank) == 2
    assert metrics.value("peace_events_total", {"event": "reload"}) == 1
    assert metrics.value("peace_events_total", {"event": "item_put"}) == 0
    text = metrics.render(None)
    assert "BREW" not in text and 'status="999"' not in text
    assert "# TYPE peace_request_duration_seconds histogram" in text

"""Several server processes on one store: run-time edits reach every worker and none is lost,
and /metrics counts the requests of all of them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from peace.data.dataset import Dataset
from peace.serve.schemas import ItemSpec
from peace.serve.service import Service
from peace.store import StoreError, read_live


def test_edits_of_services_sharing_a_store_are_not_lost(
    base: tuple[Path, Dataset, Path], store: Path
) -> None:
    _, ds, _ = base
    ents = [str(e) for e in ds.entities]
    a, b = Service(store), Service(store)  # two workers, as two processes would hold them
    version = a.snapshot().version
    a.launch("pets", [ItemSpec(item="p0", entities=[ents[0]])])
    # b has not seen the launch yet; its edit applies what is on disk first, then adds p1.
    b.put_item("pets", "p1", [ents[1]])
    a.put_item("pets", "p2", [ents[2]])  # and a, behind b now, keeps b's item
    assert set(read_live(store)[0]["pets"]["items"]) == {"p0", "p1", "p2"}
    assert a.reload() is False  # a's own edit is what the files hold
    assert b.reload() is True  # a's last edit, picked up like a new version
    for service in (a, b):
        assert service.snapshot().domains["pets"].items == ("p0", "p1", "p2")
    # Another worker's edit rebuilds the domains, not the store: the version object is kept.
    assert a.snapshot().version is version and b.snapshot().version is not version
    r = a.rank("pets", str(ds.users[0]), ["p0", "p1", "p2"])
    assert r["scores"] == pytest.approx(
        b.rank("pets", str(ds.users[0]), ["p0", "p1", "p2"])["scores"]
    )


def _requests(text: str, endpoint: str) -> float:
    return sum(
        s.value
        for f in text_string_to_metric_families(text)
        if f.name == "peace_requests"
        for s in f.samples
        if s.name == "peace_requests_total" and s.labels.get("endpoint") == endpoint
    )


def test_two_workers_share_edits_and_metrics(base: tuple[Path, Dataset, Path], store: Path) -> None:
    _, ds, _ = base
    ents = [str(e) for e in ds.entities]
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    cmd = [sys.executable, "-m", "peace.serve.app", "--store", str(store), "--port", str(port)]
    server = subprocess.Popen([*cmd, "--workers", "2"], env=env, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    # A new connection per request (the workers take turns accepting connections).
    http = httpx.Client(base_url=url, headers={"Connection": "close"}, timeout=30)
    try:
        for _ in range(600):  # bounded: 60 s to start
            try:
                if http.get("/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
            assert server.poll() is None, server.stderr.read() if server.stderr else ""
        # The first worker may answer while the second is still loading the store.
        workers: set[int] = set()
        for _ in range(1200):  # bounded: about 60 s
            workers.add(http.get("/healthz").json()["worker"])
            if len(workers) == 2:
                break
            time.sleep(0.05)
        assert len(workers) == 2 and server.pid not in workers
        body = {"domain": "pets", "items": [{"item": "p0", "entities": [ents[0], ents[1]]}]}
        assert http.post("/v1/domains", json=body).status_code == 201
        seen: set[int] = set()
        for _ in range(400):  # bounded: the default reload interval is 0.5 s
            served = http.get("/v1/domains").json()
            if "pets" in {d["domain"] for d in served["domains"]}:
                seen.add(served["worker"])
            if seen == workers:
                break
            time.sleep(0.02)
        assert seen == workers, "a worker never served the launched domain"
        n, user = 40, str(ds.users[0])
        for _ in range(n):
            r = http.post("/v1/domains/pets/rank", json={"user": user, "items": ["p0"]})
            assert r.status_code == 200, r.text
        # Whichever worker answers, /metrics counts the requests of both.
        for _ in range(4):
            assert _requests(http.get("/metrics").text, "/v1/domains/{domain}/rank") == n
    finally:
        http.close()
        server.terminate()
        server.wait(timeout=60)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_worker_that_cannot_start_leaves_its_reason_for_the_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from peace.serve.app import WORKER_OPTIONS, worker_app

    failed = tmp_path / "failed"
    options = {"store": str(tmp_path / "no-store"), "token": None, "failed": str(failed)}
    monkeypatch.setenv(WORKER_OPTIONS, json.dumps(options))
    with pytest.raises(StoreError):
        worker_app()
    assert "no published version" in failed.read_text()

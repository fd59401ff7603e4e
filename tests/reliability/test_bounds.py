"""What the service bounds: /metrics series under made-up methods and paths (with and without a
token), launch bodies (size limit, memory handed back), domain names."""

from __future__ import annotations

import gc
import json
import random
import string
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import TINY_OVERRIDES, AppClient, toy_tables

from peace.config import PeaceConfig
from peace.data.contract import write_dataset
from peace.data.dataset import load_dataset
from peace.flows.offline_inference import export
from peace.flows.pretrain import pretrain
from peace.serve.app import create_app

TOKEN = "bounds-token"
AUTH = {"authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("bounds")
    ds = load_dataset(write_dataset(toy_tables(), root / "toy"))
    cfg = PeaceConfig().override([*TINY_OVERRIDES, "pretrain.epochs=1", "pretrain.max_steps=2"])
    pretrain(ds, cfg, out=root / "run", show_progress=False)
    export(root / "run", ds, root / "store")
    return root / "store"


@pytest.fixture
def client(store: Path, tmp_path: Path) -> Iterator[AppClient]:
    import shutil

    copy = tmp_path / "store"
    shutil.copytree(store, copy)
    with AppClient(create_app(copy, token=TOKEN, max_launch_bytes=4 << 20)) as c:
        yield c


def made_up(rng: random.Random, n: int) -> str:
    return "".join(rng.choice(string.ascii_uppercase) for _ in range(n))


def test_made_up_methods_and_paths_do_not_grow_metrics(client: AppClient) -> None:
    rng = random.Random(0)

    def flood(n: int) -> None:
        for j in range(n):
            method = made_up(rng, rng.randint(3, 12))
            path = "/" + "/".join(made_up(rng, 5) for _ in range(rng.randint(1, 4)))
            if j % 3 == 0:
                client.request(method, path)  # 401: no token
            elif j % 3 == 1:
                client.request(method, path, headers=AUTH)  # 404 or 405
            else:
                client.request(method, "/v1/domains/t1/rank", headers=AUTH)  # 405

    flood(30)
    client.get("/metrics", headers=AUTH)  # its own series
    before = client.get("/metrics", headers=AUTH).text
    flood(3000)
    after = client.get("/metrics", headers=AUTH).text
    series = [line for line in after.splitlines() if not line.startswith("#")]
    assert len(after.splitlines()) == len(before.splitlines()), "new series appeared"
    assert len(after) < len(before) + 400  # only counters grew
    assert 'method="other"' in after and 'endpoint="unmatched"' in after
    assert len(series) < 120
    labels = {part for line in series for part in line.split('"')[1::2]}
    assert not any(label.isupper() and label not in {"GET", "POST", "PUT"} for label in labels)


def test_launch_body_over_the_limit_is_refused_unread(client: AppClient) -> None:
    body = b'{"domain": "big", "items": [' + b'{"item": "x", "entities": ["e0_0"]},' * 150_000
    r = client.post("/v1/domains", content=body, headers=AUTH)
    assert r.status_code == 413 and str(4 << 20) in r.text


def rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * 4096 / 2**20


def test_refused_large_launch_hands_its_memory_back(client: AppClient) -> None:
    pad = "p" * 200
    items = [{"item": f"it{j}-{pad}", "entities": ["e1_2", "e3_0"]} for j in range(15_000)]
    items[-1]["entities"] = ["ghost"]  # refused after the whole body was parsed
    body = json.dumps({"domain": "big", "items": items}).encode()
    del items
    size_mb = len(body) / 2**20
    assert 3 < size_mb < 4
    gc.collect()
    start = rss_mb()
    for _ in range(3):
        r = client.post("/v1/domains", content=body, headers=AUTH)
        assert r.status_code == 422 and "ghost" in r.text
    gc.collect()
    assert rss_mb() - start < 2 * size_mb, "a refused launch kept its memory"


def test_launch_validation_errors_name_the_field(client: AppClient) -> None:
    r = client.post("/v1/domains", json={"domain": "x", "items": [{"item": 3}]}, headers=AUTH)
    assert r.status_code == 422
    locs = [e["loc"] for e in r.json()["detail"]]
    assert ["body", "items", "0", "item"] in locs and ["body", "items", "0", "entities"] in locs
    r = client.post("/v1/domains", content=b"{", headers=AUTH)
    assert r.status_code == 422 and r.json()["detail"][0]["type"] == "json_invalid"
    spec = client.get("/openapi.json", headers=AUTH).json()
    schema = spec["paths"]["/v1/domains"]["post"]["requestBody"]["content"]["application/json"]
    assert schema["schema"]["properties"]["items"]["items"]["properties"]["entities"]


@pytest.mark.parametrize("name", ["\u202e", "a\u202eb", "pets\u200f", "t\x00", "a/b", " pets"])
def test_unprintable_domain_names_are_refused(client: AppClient, name: str) -> None:
    body = {"domain": name, "items": [{"item": "n1", "entities": ["e0_0"]}]}
    r = client.post("/v1/domains", json=body, headers=AUTH)
    assert r.status_code == 422 and "printable" in r.text

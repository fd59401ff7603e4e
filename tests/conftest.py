"""Fixtures that build tiny datasets in memory (no shared data needed)."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
import torch

from peace.config import PeaceConfig
from peace.data.contract import DataContractError, write_dataset
from peace.data.dataset import Dataset, load_dataset

# Tiny tensors: one thread is faster and immune to oversubscribed cores.
torch.set_num_threads(1)


def toy_tables(seed: int = 0, n_users: int = 60) -> dict[str, pd.DataFrame]:
    """Three source and two target domains over 8 concepts; users like 2 concepts each."""
    rng = np.random.default_rng(seed)
    n_concepts, per_concept = 8, 6
    trip = []
    for c in range(n_concepts):
        hub = f"e{c}_0"
        for k in range(1, per_concept):
            trip.append((f"e{c}_{k}", "category", hub))
        trip.append((f"e{c}_1", "related", f"e{(c + 1) % n_concepts}_2"))
    domains = {"s1": "source", "s2": "source", "s3": "source", "t1": "target", "t2": "target"}
    items, phi, iprof = [], [], []
    for d in domains:
        for j in range(12):
            concept = j % n_concepts
            item = f"{d}_i{j}"
            items.append((item, d, concept))
            phi.append((item, f"e{concept}_{1 + j % (per_concept - 1)}", 0))
            phi.append((item, f"e{concept}_0", 1))
            iprof.append((item, str(j % 3), float(j)))
    likes = {f"u{u}": rng.choice(n_concepts, 2, replace=False) for u in range(n_users)}
    rows = []
    for u, concepts in likes.items():
        for d, role in domains.items():
            cands = [i for i, dd, c in items if dd == d and c in concepts]
            n = 8 if role == "source" else 4
            times = rng.integers(0 if role == "source" else 500, 1000, n)
            for item, t in zip(rng.choice(cands, n), times, strict=True):
                rows.append((u, item, d, int(t), 1))
    inter = pd.DataFrame(rows, columns=["user", "item", "domain", "timestamp", "label"])
    inter = inter.drop_duplicates(["user", "item", "domain", "timestamp"])
    return {
        "interactions": inter,
        "domains": pd.DataFrame(list(domains.items()), columns=["domain", "role"]),
        "item_entities": pd.DataFrame(phi, columns=["item", "entity", "rank"]),
        "triplets": pd.DataFrame(trip, columns=["head", "relation", "tail"]),
        "user_profiles": pd.DataFrame(
            {"user": list(likes), "group": [str(int(c[0]) % 2) for c in likes.values()]}
        ),
        "item_profiles": pd.DataFrame(iprof, columns=["item", "brand", "price"]),
    }


def assert_refused(root: Path, file: str, value: str, fix: str) -> str:
    """Loading ``root`` raises one DataContractError that starts with ``root/file.parquet`` and
    names ``value`` and ``fix`` on one line; return its message."""
    with pytest.raises(DataContractError) as info:
        load_dataset(root)
    message = str(info.value)
    assert type(info.value) is DataContractError
    assert message.startswith(str(root / f"{file}.parquet")), message[:300]
    assert value in message and fix in message, message[:300]
    assert "\n" not in message and len(message) < 600, message[:300]
    assert "np." not in message, "numpy reprs are noise for a person reading the error"
    return message


@pytest.fixture
def toy_dir(tmp_path: Path) -> Path:
    return write_dataset(toy_tables(), tmp_path / "toy")


# A model small enough for tests to train in a second or two.
TINY_OVERRIDES = [
    "model.dim=16",
    "model.history_length=10",
    "model.n_interests=3",
    "model.attention_dim=16",
    "model.n_prototypes=8",
    "model.top_k_prototypes=3",
    "model.mlp_hidden=[16, 8]",
    "pretrain.batch_size=64",
    "pretrain.lr=0.01",
    "finetune.batch_size=64",
    "finetune.deepfm_hidden=[16, 8, 4]",
    "finetune.fm_dim=4",
]


@pytest.fixture
def tiny_config() -> PeaceConfig:
    return PeaceConfig().override([*TINY_OVERRIDES, "pretrain.epochs=2", "finetune.epochs=3"])


# --------------------------------------------------------------------------- serving
class AppClient:
    """A synchronous HTTP client of an ASGI app, run on one event loop of the calling thread.

    Answers as fastapi's ``TestClient`` does (the lifespan runs on enter and exit; an exception
    the app does not handle is raised here), without its hop to a portal thread for every
    request, which costs milliseconds a request: fuzz tests send thousands.
    """

    def __init__(self, app: Any) -> None:
        self.app = app
        self._loop = asyncio.new_event_loop()
        transport = httpx.ASGITransport(app=app)
        self._client = httpx.AsyncClient(transport=transport, base_url="http://testserver")

    def __enter__(self) -> AppClient:
        self._lifespan = self.app.router.lifespan_context(self.app)
        self._loop.run_until_complete(self._lifespan.__aenter__())
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self._loop.run_until_complete(self._lifespan.__aexit__(None, None, None))
            self._loop.run_until_complete(self._client.aclose())
        finally:
            self._loop.close()

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        return self._loop.run_until_complete(self._client.request(method, url, **kwargs))

    def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", url, **kwargs)

    def post(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", url, **kwargs)

    def put(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("PUT", url, **kwargs)


SERVED = [*TINY_OVERRIDES, "pretrain.epochs=1", "pretrain.max_steps=6", "finetune.epochs=2"]


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Dataset, Path]:
    """(run folder, dataset, published store) of a briefly pre-trained tiny model."""
    from peace.flows.offline_inference import export
    from peace.flows.pretrain import pretrain

    root = tmp_path_factory.mktemp("service")
    ds = load_dataset(write_dataset(toy_tables(), root / "toy"))
    pretrain(ds, PeaceConfig().override(SERVED), out=root / "run", show_progress=False)
    export(root / "run", ds, root / "store")
    return root / "run", ds, root / "store"


@pytest.fixture
def store(base: tuple[Path, Dataset, Path], tmp_path: Path) -> Path:
    """A private copy of the published store of ``base`` (edits persist into it)."""
    return Path(shutil.copytree(base[2], tmp_path / "store"))

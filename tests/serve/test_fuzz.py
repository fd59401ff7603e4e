"""Property-based fuzzing of the HTTP service: no input, however malformed, gives a 5xx."""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import TINY_OVERRIDES, AppClient, toy_tables
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from peace.config import PeaceConfig
from peace.data.contract import write_dataset
from peace.data.dataset import load_dataset
from peace.flows.offline_inference import export
from peace.flows.pretrain import pretrain
from peace.serve.app import create_app

TINY = [*TINY_OVERRIDES, "pretrain.epochs=1", "pretrain.max_steps=2"]
FUZZ = settings(
    max_examples=600,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppClient]:
    root = tmp_path_factory.mktemp("fuzz")
    ds = load_dataset(write_dataset(toy_tables(), root / "toy"))
    pretrain(ds, PeaceConfig().override(TINY), out=root / "run", show_progress=False)
    export(root / "run", ds, root / "store")
    app = create_app(
        Path(root / "store"), max_candidates=20, max_k=50, max_launch_items=30, exact_threshold=40
    )
    with AppClient(app) as c:
        yield c


KNOWN = ["u0", "u1", "u17", "t1_i0", "t1_i1", "t2_i3", "s1_i0", "e0_0", "e1_2", "e3_0"]
ids = st.one_of(
    st.sampled_from(KNOWN), st.text(max_size=20), st.text(alphabet="ab", min_size=300, max_size=300)
)
domains = st.one_of(st.sampled_from(["t1", "t2", "s1", "nope", "pets", ""]), st.text(max_size=12))
json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**30), 10**30),
    st.floats(allow_nan=False, allow_infinity=False),
    ids,
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=6), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=25,
)
id_lists = st.one_of(
    st.lists(ids, max_size=25), st.lists(st.sampled_from(KNOWN), max_size=25), json_values
)
rank_bodies = st.one_of(
    st.fixed_dictionaries({"user": st.one_of(ids, json_scalars), "items": id_lists}),
    st.fixed_dictionaries({"user": ids, "items": id_lists}, optional={"extra": json_values}),
    json_values,
)
item_specs = st.fixed_dictionaries(
    {
        "item": st.one_of(ids, json_scalars),
        "entities": st.one_of(st.lists(ids, max_size=5), json_values),
    }
)
launch_bodies = st.one_of(
    st.fixed_dictionaries(
        {
            "domain": st.one_of(domains, json_scalars),
            "items": st.one_of(st.lists(item_specs, max_size=35), json_values),
        }
    ),
    json_values,
)
raw_bodies = st.one_of(
    st.binary(max_size=200),
    st.just(b"{"),
    st.just(b"\xff\xfe"),
    st.just(b'{"user": "u0", "items": ["t1_i0"'),
    st.just(b'{"user": NaN, "items": [Infinity, -Infinity]}'),
    st.just(b'{"domain": "x", "items": [{"item": NaN, "entities": [1e999]}]}'),
    st.just(b'{"entities": [NaN]}'),
    st.just(b"[" * 5000 + b"]" * 5000),
)


def seg(value: str) -> str:
    return urllib.parse.quote(value, safe="")


def check(response: object) -> None:
    status = response.status_code  # type: ignore[attr-defined]
    assert status < 500, (status, response.text)  # type: ignore[attr-defined]
    is_json = response.headers.get("content-type", "").startswith("application/json")  # type: ignore
    if is_json and response.request.method != "HEAD":  # type: ignore[attr-defined]
        json.loads(response.text)  # type: ignore[attr-defined]


@FUZZ
@given(domain=domains, body=st.one_of(rank_bodies, raw_bodies))
def test_rank_never_fails(client: AppClient, domain: str, body: object) -> None:
    url = f"/v1/domains/{seg(domain)}/rank"
    if isinstance(body, bytes):
        check(client.post(url, content=body, headers={"content-type": "application/json"}))
    else:
        check(client.post(url, json=body))


@FUZZ
@given(
    domain=domains,
    user=st.one_of(ids, st.none()),
    k=st.one_of(
        st.none(), st.integers(-(10**40), 10**40), st.text(max_size=8), st.floats(allow_nan=True)
    ),
)
def test_recommend_never_fails(client: AppClient, domain: str, user: str | None, k: object) -> None:
    params = {}
    if user is not None:
        params["user"] = user
    if k is not None:
        params["k"] = str(k)
    check(client.get(f"/v1/domains/{seg(domain)}/recommend", params=params))


@FUZZ
@given(body=st.one_of(launch_bodies, raw_bodies))
def test_launch_never_fails(client: AppClient, body: object) -> None:
    if isinstance(body, bytes):
        check(client.post("/v1/domains", content=body))
    else:
        check(client.post("/v1/domains", json=body))


@FUZZ
@given(
    domain=domains,
    item=ids,
    body=st.one_of(
        st.fixed_dictionaries({"entities": st.one_of(st.lists(ids, max_size=5), json_values)}),
        json_values,
        raw_bodies,
    ),
)
def test_put_item_never_fails(client: AppClient, domain: str, item: str, body: object) -> None:
    url = f"/v1/domains/{seg(domain)}/items/{seg(item)}"
    if isinstance(body, bytes):
        check(client.put(url, content=body))
    else:
        check(client.put(url, json=body))


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(
    method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"]),
    path=st.one_of(
        st.sampled_from(
            [
                "/",
                "/v1",
                "/v1/domains",
                "/healthz",
                "/metrics",
                "/v1/domains/t1",
                "/v1/domains/t1/rank",
                "/docs",
            ]
        ),
        st.lists(st.text(max_size=6), max_size=4).map(
            lambda parts: "/" + "/".join(seg(p) for p in parts)
        ),
    ),
    body=raw_bodies,
)
def test_any_route_never_fails(client: AppClient, method: str, path: str, body: bytes) -> None:
    check(client.request(method, "http://testserver" + path, content=body))

"""Generated HTTP requests against a service whose last reload failed: no 5xx, no file-system
path and no traceback in any answer (5,200 requests, in-process, seeded)."""

from __future__ import annotations

import json
import string
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
from peace.serve.app import Service, create_app
from peace.store import POINTER, VERSIONS, write_pointer

TOKEN = "fuzz-token"
EXAMPLES = 2600  # per test; two tests
SENT = {"requests": 0}
SEEDED = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[AppClient, Path]]:
    """A token-protected service; its store has an unreadable live file and a tampered newer
    version whose reload failed, so notes and ``last_error`` hold file problems."""
    root = tmp_path_factory.mktemp("httpfuzz")
    ds = load_dataset(write_dataset(toy_tables(), root / "toy"))
    cfg = PeaceConfig().override([*TINY_OVERRIDES, "pretrain.epochs=1", "pretrain.max_steps=2"])
    pretrain(ds, cfg, out=root / "run", show_progress=False)
    store = root / "store"
    export(root / "run", ds, store)
    (store / "live").mkdir()
    (store / "live" / "broken.json").write_text("{not json")
    service = Service(store, reload_interval_s=3600.0)
    tampered = export(root / "run", ds, store, make_current=False)
    (store / VERSIONS / tampered / "items.arrow").write_bytes(b"tampered")
    write_pointer(store / POINTER, tampered)
    assert service.reload() is False and service.last_error
    app = create_app(store, token=TOKEN, max_candidates=20, max_k=50, service=service)
    with AppClient(app) as client:
        yield client, root


KNOWN = ["u0", "u3", "t1_i0", "t1_i4", "t2_i1", "s1_i0", "e0_0", "e1_2", "e4_1"]
texts = st.text(max_size=16)
ids = st.one_of(st.sampled_from(KNOWN), texts, st.just("x" * 257))
domain_names = st.one_of(st.sampled_from(["t1", "t2", "s1", "nope", "\u202e", " t1"]), texts)
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=False), ids
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=5), st.dictionaries(texts, inner, max_size=4)),
    max_leaves=20,
)
bodies = st.one_of(
    st.fixed_dictionaries({"user": ids, "items": st.lists(ids, max_size=25)}),
    st.fixed_dictionaries(
        {
            "domain": domain_names,
            "items": st.lists(
                st.fixed_dictionaries(
                    {"item": ids, "entities": st.lists(ids, min_size=0, max_size=4)}
                ),
                max_size=8,
            ),
        }
    ),
    st.fixed_dictionaries({"entities": st.lists(ids, max_size=4)}),
    values,
)
raw = st.one_of(
    st.binary(max_size=120),
    st.sampled_from([b"", b"{", b"[]", b"null", b'{"user": NaN}', b"\xef\xbb\xbf{}", b"1e999"]),
)
methods = st.one_of(
    st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"]),
    st.text(alphabet=string.ascii_uppercase, min_size=1, max_size=10),
)


def seg(value: str) -> str:
    return urllib.parse.quote(value, safe="")


def send(client: AppClient, root: Path, method: str, url: str, **kwargs: object) -> None:
    response = client.request(method, url, **kwargs)
    SENT["requests"] += 1
    text = response.text
    assert response.status_code < 500, (method, url, response.status_code, text[:500])
    assert str(root) not in text and "/tmp/" not in text, (method, url, text[:500])
    assert "Traceback" not in text and 'File "' not in text, (method, url, text[:500])


def test_api_requests(served: tuple[AppClient, Path]) -> None:
    client, root = served

    @SEEDED
    @given(
        endpoint=st.sampled_from(["rank", "recommend", "launch", "put", "domains"]),
        domain=domain_names,
        item=ids,
        k=st.one_of(st.integers(-5, 80), texts),
        body=st.one_of(bodies, raw),
        token=st.sampled_from([TOKEN, TOKEN, "wrong", None]),
    )
    def one(endpoint: str, domain: str, item: str, k: object, body: object, token: str | None):
        headers = {"authorization": f"Bearer {token}"} if token else {}
        content = body if isinstance(body, bytes) else None
        if body is not None and content is None:
            # JSON as Python writes it: infinities go out as the non-standard Infinity token
            content = json.dumps(body).encode()
            headers["content-type"] = "application/json"
        if endpoint == "recommend":
            url = f"/v1/domains/{seg(domain)}/recommend"
            send(client, root, "GET", url, params={"user": item, "k": str(k)}, headers=headers)
        elif endpoint == "domains":
            send(client, root, "GET", "/v1/domains", headers=headers)
        else:
            method, url = {
                "rank": ("POST", f"/v1/domains/{seg(domain)}/rank"),
                "launch": ("POST", "/v1/domains"),
                "put": ("PUT", f"/v1/domains/{seg(domain)}/items/{seg(item)}"),
            }[endpoint]
            send(client, root, method, url, content=content, headers=headers)

    before = SENT["requests"]
    one()
    assert SENT["requests"] - before >= EXAMPLES


def test_any_method_and_path(served: tuple[AppClient, Path]) -> None:
    client, root = served
    paths = st.one_of(
        st.sampled_from(["/", "/v1/domains", "/healthz", "/metrics", "/docs", "/openapi.json"]),
        st.lists(texts, max_size=5).map(lambda parts: "/" + "/".join(seg(p) for p in parts)),
    )

    @SEEDED
    @given(method=methods, path=paths, body=raw, token=st.sampled_from([TOKEN, None]))
    def one(method: str, path: str, body: bytes, token: str | None) -> None:
        headers = {"authorization": f"Bearer {token}"} if token else {}
        send(client, root, method, "http://testserver" + path, content=body, headers=headers)

    before = SENT["requests"]
    one()
    assert SENT["requests"] - before >= EXAMPLES


def test_failed_reload_is_reported_without_paths(served: tuple[AppClient, Path]) -> None:
    client, root = served
    described = client.get("/v1/domains", headers={"authorization": f"Bearer {TOKEN}"}).json()
    assert "items.arrow: checksum mismatch" in described["last_error"]
    assert any("broken.json" in note for note in described["notes"])
    assert str(root) not in str(described)

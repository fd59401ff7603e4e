"""The online ranking service: zero-shot and normal rankers over the embedding store (Sec. 4.5).

Endpoints (OpenAPI at ``/docs``; details and limits in ``docs/serving.md``):

* ``POST /v1/domains/{domain}/rank`` ``{"user", "items"}``: scores of candidate items, by the
  domain's normal ranker when one is published, else by the zero-shot ranker (a new domain is
  served the moment it is launched); an unknown user gets the domain's popularity.
* ``GET /v1/domains/{domain}/recommend?user=&k=``: top k of the catalogue (exact up to
  ``exact_threshold`` items; above, candidates from an approximate inner-product index, then
  exact scores).
* ``POST /v1/domains``: launch a target domain from items and their entities.
* ``PUT /v1/domains/{domain}/items/{item}``: add (or re-describe) an item at run time; its vector
  is the mean of its entities' vectors (DESIGN.md decision 3).
* ``GET /v1/domains``, ``GET /healthz``, ``GET /metrics`` (Prometheus text format).

The serving state and its reload live in :mod:`peace.serve.service` and :mod:`peace.serve.state`,
the request bodies in :mod:`peace.serve.schemas`, the token and body-size guard in
:mod:`peace.serve.guard`, the Prometheus metrics in :mod:`peace.serve.metrics`; this module
declares the routes.

Example::

    app = create_app("store", token="secret")        # FastAPI app
    run_server("store", host="127.0.0.1", port=8000) # or `peace serve --store store`
    run_server("store", workers=4)                   # four processes on one port

With several workers (:func:`run_server`'s ``workers``) uvicorn starts that many processes, each
serving the store with its own :class:`Service` (built by :func:`worker_app`); they share the
listening socket, see each other's run-time edits through ``STORE/live`` within the reload
interval, and ``/metrics`` sums their counters.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

import torch
from fastapi import Body, FastAPI, HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool

from peace.serve.guard import MAX_LAUNCH_BYTES, RELEASE_AFTER_BYTES, _Guard, release_memory
from peace.serve.metrics import (
    CONTENT_TYPE,
    LATENCY_BUCKETS,
    METHODS,
    MULTIPROCESS_DIR,
    UNMATCHED,
    Metrics,
)
from peace.serve.schemas import (
    DEFAULT_K,
    MAX_ENTITIES,
    MAX_ID_LENGTH,
    ItemEntities,
    ItemSpec,
    LaunchRequest,
    RankRequest,
    RankResponse,
    RecommendResponse,
    ServiceError,
)
from peace.serve.service import Service
from peace.serve.state import Snapshot

__all__ = [
    "DEFAULT_K",
    "LATENCY_BUCKETS",
    "MAX_ENTITIES",
    "MAX_ID_LENGTH",
    "MAX_LAUNCH_BYTES",
    "METHODS",
    "RELEASE_AFTER_BYTES",
    "UNMATCHED",
    "ItemEntities",
    "ItemSpec",
    "LaunchRequest",
    "Metrics",
    "RankRequest",
    "RankResponse",
    "RecommendResponse",
    "Service",
    "ServiceError",
    "Snapshot",
    "create_app",
    "main",
    "release_memory",
    "run_server",
    "worker_app",
]

log = logging.getLogger("peace.serve")

WORKER_OPTIONS = "PEACE_SERVE_WORKER"
"""Environment variable that carries :func:`run_server`'s options (JSON) to its workers."""


def _json(payload: dict[str, Any]) -> Response:
    """A compact JSON response without a second validation pass (the payload is ours)."""
    return Response(
        json.dumps(payload, separators=(",", ":"), allow_nan=False).encode(),
        media_type="application/json",
    )


def _clean_errors(errors: Any) -> list[dict[str, Any]]:
    """Validation errors that always serialise: type, location, message, a short input repr.

    (The raw input may hold NaN or infinity, which strict JSON cannot carry.)
    """
    out = []
    for err in list(errors)[:20]:
        entry = {
            "type": str(err.get("type", "")),
            "loc": [str(x) for x in err.get("loc", ())],
            "msg": str(err.get("msg", "")),
        }
        if "input" in err:
            text = repr(err["input"])
            entry["input"] = text if len(text) <= 80 else text[:77] + "..."
        out.append(entry)
    return out


def _inline_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The JSON schema of ``model`` with its ``$defs`` inlined (for a hand-read request body)."""
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            if ref.startswith("#/$defs/"):
                return inline(defs[ref.removeprefix("#/$defs/")])
            return {k: inline(v) for k, v in node.items()}
        if isinstance(node, list):
            return [inline(v) for v in node]
        return node

    return inline(schema)


def create_app(
    store: str | Path,
    token: str | None = None,
    max_candidates: int = 1000,
    max_k: int = 1000,
    *,
    reload_interval_s: float = 0.5,
    exact_threshold: int = 2000,
    ann_pool: int = 100,
    max_launch_items: int = 100_000,
    max_body_bytes: int | None = None,
    max_launch_bytes: int = MAX_LAUNCH_BYTES,
    index_args: dict[str, Any] | None = None,
    threads: int | None = None,
    service: Service | None = None,
) -> FastAPI:
    """The FastAPI app serving ``store``.

    Args:
        store: the store folder (it must have a published version).
        token: when set, every endpoint but ``/healthz`` needs ``Authorization: Bearer TOKEN``.
        max_candidates: most candidate items per rank request (more: 413).
        max_k: largest k of recommend (more: 422).
        reload_interval_s: how often (at most) pointer files are checked for a new version.
        exact_threshold: catalogues larger than this use the approximate index in recommend.
        ann_pool: candidates taken from the index per query (at least k).
        max_launch_items: most items in one launch request (more: 413).
        max_body_bytes: largest request body but a launch's (default: room for
            ``max_candidates`` ids of the longest length).
        max_launch_bytes: largest launch body (default 32 MiB, about 400,000 items of short
            ids); the body is validated straight from its bytes, so parsing it needs a few
            times its size, which is handed back to the OS after the request.
        index_args: options of :class:`peace.serve.rankers.InnerProductIndex`.
        threads: torch threads per request-handling thread (None: torch's default).
        service: an existing :class:`Service` (the other serving options are then ignored).
    """
    service = service or Service(
        store, reload_interval_s, exact_threshold, ann_pool, index_args, threads=threads
    )
    body_limit = max_body_bytes or max(1 << 16, 600 * max_candidates)
    launch_limit = max(body_limit, max_launch_bytes)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        service.start_watcher()
        try:
            yield
        finally:
            service.stop_watcher()

    app = FastAPI(
        lifespan=lifespan,
        title="PEACE ranking service",
        version="1",
        description="Zero-shot and normal rankers of PEACE (WSDM 2024, Sec. 4.5) over a "
        "versioned embedding store. Limits: "
        f"{max_candidates} candidates per rank request, k <= {max_k}, ids <= "
        f"{MAX_ID_LENGTH} characters, 1 to {MAX_ENTITIES} entities per item.",
    )
    app.state.service = service
    app.add_middleware(
        _Guard,
        service=service,
        token=token,
        max_body_bytes=body_limit,
        max_launch_bytes=launch_limit,
    )

    @app.exception_handler(ServiceError)
    async def _service_error(request: Request, exc: ServiceError) -> JSONResponse:
        return JSONResponse({"detail": exc.message}, status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": _clean_errors(exc.errors())}, status_code=422)

    @app.post(
        "/v1/domains/{domain}/rank",
        response_class=Response,
        tags=["ranking"],
        summary="Score candidate items for a user",
        responses={
            200: {"model": RankResponse, "description": "scores"},
            404: {"description": "unknown domain"},
            413: {"description": "too many candidates"},
            422: {"description": "empty list, duplicates or malformed body"},
        },
    )
    async def rank(
        domain: Annotated[str, PathParam(min_length=1, max_length=MAX_ID_LENGTH)],
        body: Annotated[RankRequest, Body()],
    ) -> Response:
        """Scores aligned with ``items``: normal ranker (logits of Eq. 11) when one is published
        for the domain, zero-shot ranker (by default the inner product of the universal user
        vector and the item vector, Sec. 4.4) otherwise; an unknown user gets popularity shares
        (``ranker: popularity-fallback``). Items the domain does not know get null and are
        listed in ``unknown_items``."""
        # Scored on the event loop, not in the thread pool: a call takes milliseconds and takes
        # no lock, and under concurrent load threads contending for the cores and the GIL
        # cost more than they overlap (docs/serving.md).
        return _json(service.rank(domain, body.user, body.items, max_candidates))

    @app.get(
        "/v1/domains/{domain}/recommend",
        response_class=Response,
        tags=["ranking"],
        summary="Top k items of the domain's catalogue",
        responses={200: {"model": RecommendResponse, "description": "top k"}},
    )
    async def recommend(
        domain: Annotated[str, PathParam(min_length=1, max_length=MAX_ID_LENGTH)],
        user: Annotated[str, Query(min_length=1, max_length=MAX_ID_LENGTH)],
        k: Annotated[int, Query(description="Items to return, 1 to max_k.")] = DEFAULT_K,
    ) -> Response:
        """Exact scores of the whole catalogue up to the service's exact threshold; above it,
        the approximate inner-product index proposes candidates that are then scored exactly
        (``approximate: true``)."""
        if not 1 <= k <= max_k:
            raise HTTPException(422, f"k = {k}: give 1 to {max_k}.")
        return _json(service.recommend(domain, user, k))  # on the event loop, as rank

    @app.post(
        "/v1/domains",
        status_code=201,
        tags=["domains"],
        summary="Launch a new target domain",
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": _inline_schema(LaunchRequest)}},
            }
        },
    )
    async def launch(request: Request) -> dict[str, Any]:
        """The domain is served zero-shot at once; items need 1 to 3 entities known to the
        store. Persisted under ``STORE/live``."""
        return await run_in_threadpool(_launch, await request.body())

    def _launch(raw: bytes) -> dict[str, Any]:
        # Validated straight from the bytes: no intermediate tree of Python objects.
        try:
            body = LaunchRequest.model_validate_json(raw)
        except ValidationError as exc:
            errors = [{**e, "loc": ("body", *e.get("loc", ()))} for e in exc.errors()]
            raise RequestValidationError(errors) from None
        if len(body.items) > max_launch_items:
            raise HTTPException(
                413,
                f"{len(body.items)} items; at most {max_launch_items} per "
                "launch (add more with PUT).",
            )
        return service.launch(body.domain, body.items)

    @app.put(
        "/v1/domains/{domain}/items/{item}",
        tags=["domains"],
        summary="Add or re-describe an item at run time",
    )
    def put_item(
        domain: Annotated[str, PathParam(min_length=1, max_length=MAX_ID_LENGTH)],
        item: Annotated[str, PathParam(min_length=1, max_length=MAX_ID_LENGTH)],
        body: ItemEntities,
    ) -> dict[str, Any]:
        """The item's vector is the mean of its entities' vectors (DESIGN.md decision 3)."""
        return service.put_item(domain, item, body.entities)

    @app.get("/v1/domains", tags=["domains"], summary="Served store version and domains")
    def domains() -> dict[str, Any]:
        return service.describe()

    @app.get("/healthz", tags=["operations"], summary="Liveness (no token needed)")
    def healthz() -> dict[str, Any]:
        snap = service.snapshot()
        return {"status": "ok", "store_version": snap.version.version, "worker": os.getpid()}

    @app.get(
        "/metrics",
        response_class=PlainTextResponse,
        tags=["operations"],
        summary="Prometheus metrics",
    )
    def metrics() -> PlainTextResponse:
        return PlainTextResponse(
            service.metrics.render(service.snapshot()), media_type=CONTENT_TYPE
        )

    return app


def run_server(
    store: str | Path,
    host: str = "127.0.0.1",
    port: int = 8000,
    token: str | None = None,
    threads: int = 1,
    announce: Callable[[], None] | None = None,
    workers: int = 1,
    **options: Any,
) -> None:
    """Serve ``store`` with uvicorn (blocking). ``threads``: torch intra-op threads per request
    (1 suits many small concurrent requests). ``announce`` is called once the store has loaded,
    before the server starts listening. ``workers``: server processes sharing the port (each
    loads the store; the store is checked here first, so a bad one fails before any starts)."""
    import uvicorn

    if workers < 1:
        raise ValueError(f"workers = {workers}: give 1 or more server processes.")
    if "service" in options and workers > 1:
        raise ValueError("an existing service cannot be shared by several worker processes.")
    torch.set_num_threads(max(1, threads))
    options.setdefault("threads", max(1, threads))
    if host not in ("127.0.0.1", "localhost", "::1") and not token:
        log.warning("serving on %s without a token: anyone who can reach it can use it.", host)
    app = create_app(store, token=token, **options)
    if workers == 1:
        if announce is not None:
            announce()
        uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
        return
    del app  # the store loaded: each worker loads its own copy
    gc.collect()
    own_metrics = not os.environ.get(MULTIPROCESS_DIR)
    if own_metrics:  # a fresh folder per server, as prometheus_client asks
        os.environ[MULTIPROCESS_DIR] = tempfile.mkdtemp(prefix="peace-metrics-")
    failed = Path(tempfile.mkdtemp(prefix="peace-workers-")) / "failed"
    os.environ[WORKER_OPTIONS] = json.dumps(
        {"store": str(store), "token": token, "failed": str(failed), **options}
    )
    try:
        if announce is not None:
            announce()
        uvicorn.run(
            f"{__name__}:worker_app",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            log_level="warning",
            access_log=False,
            timeout_worker_healthcheck=60,  # a reload of a large store must not look hung
        )
        # uvicorn stops when a worker fails to start, and returns as after a signal.
        if failed.exists():
            raise RuntimeError(f"a server worker failed to start: {failed.read_text()}")
    finally:
        os.environ.pop(WORKER_OPTIONS, None)
        shutil.rmtree(failed.parent, ignore_errors=True)
        if own_metrics:
            shutil.rmtree(os.environ.pop(MULTIPROCESS_DIR), ignore_errors=True)


def worker_app() -> FastAPI:
    """The app of one worker process of :func:`run_server` (a uvicorn factory): the options
    come from the environment variable :data:`WORKER_OPTIONS`."""
    raw = os.environ.get(WORKER_OPTIONS)
    if not raw:
        raise RuntimeError(f"{WORKER_OPTIONS} is not set; start workers with run_server().")
    options = json.loads(raw)
    torch.set_num_threads(max(1, int(options.get("threads") or 1)))
    store, token, failed = options.pop("store"), options.pop("token"), options.pop("failed", None)
    try:
        return create_app(store, token=token, **options)
    except Exception as exc:
        if failed:  # the parent reports it once uvicorn has stopped
            Path(failed).write_text(f"{type(exc).__name__}: {exc}", encoding="utf-8")
        raise


def main(argv: list[str] | None = None) -> None:
    """``python -m peace.serve.app --store STORE [--host --port --token]``."""
    parser = argparse.ArgumentParser(description="Serve a PEACE embedding store over HTTP.")
    parser.add_argument("--store", required=True, type=Path)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--token", default=None)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--exact-threshold", type=int, default=2000)
    parser.add_argument("--ann-pool", type=int, default=100)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    run_server(
        args.store,
        args.host,
        args.port,
        args.token,
        args.threads,
        workers=args.workers,
        exact_threshold=args.exact_threshold,
        ann_pool=args.ann_pool,
    )


if __name__ == "__main__":
    main()

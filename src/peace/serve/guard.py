"""The ASGI middleware in front of every route: bearer token, request-body limits, metrics.

A request without the right ``Authorization: Bearer TOKEN`` (when a token is set) gets 401, except
``/healthz``; a body over its limit gets 413 before any route reads it; every request, refused or
not, is counted in :class:`peace.serve.metrics.Metrics` under its route template. After a large
launch body the freed memory is handed back to the OS (:func:`release_memory`).
"""

from __future__ import annotations

import ctypes
import gc
import hmac
import json
import time
from typing import TYPE_CHECKING, Any

from peace.serve.metrics import UNMATCHED

if TYPE_CHECKING:
    from peace.serve.service import Service

MAX_LAUNCH_BYTES = 32 << 20
"""Default limit of a launch body (``POST /v1/domains``); larger launches: several requests."""
RELEASE_AFTER_BYTES = 1 << 20
"""A launch body at least this large is followed by :func:`release_memory`."""


def release_memory() -> None:
    """Collect garbage and hand freed heap pages back to the OS (glibc ``malloc_trim``), so a
    large request does not leave the process holding its peak memory."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


class _Guard:
    """Pure ASGI middleware: bearer token, request-body limit, request metrics."""

    def __init__(
        self,
        app: Any,
        service: Service,
        token: str | None,
        max_body_bytes: int,
        max_launch_bytes: int,
    ) -> None:
        self.app, self.service, self.token = app, service, token
        self.max_body_bytes, self.max_launch_bytes = max_body_bytes, max_launch_bytes
        self._expected = f"Bearer {token}".encode() if token else None

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = {"code": 500}

        async def send_wrapper(message: dict) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            if self._expected is not None and scope["path"] != "/healthz":
                header = dict(scope["headers"]).get(b"authorization", b"")
                if not hmac.compare_digest(header, self._expected):
                    await _send_json(
                        send_wrapper,
                        401,
                        {"detail": "missing or wrong bearer token"},
                        {"www-authenticate": "Bearer"},
                    )
                    return
            launch = scope["path"] == "/v1/domains" and scope["method"] == "POST"
            limit = self.max_launch_bytes if launch else self.max_body_bytes
            body, too_large = await _read_body(receive, limit)
            if too_large:
                await _send_json(send_wrapper, 413, {"detail": f"request body over {limit} bytes"})
                return
            replayed = False

            async def replay() -> dict:
                nonlocal replayed
                if not replayed:
                    replayed = True
                    return {"type": "http.request", "body": body, "more_body": False}
                return await receive()

            try:
                await self.app(scope, replay, send_wrapper)
            finally:
                if launch and len(body) >= RELEASE_AFTER_BYTES:
                    body = b""
                    release_memory()
        finally:
            route = scope.get("route")
            endpoint = getattr(route, "path", None) or UNMATCHED
            self.service.metrics.observe(
                endpoint, scope.get("method", ""), status["code"], time.perf_counter() - start
            )


async def _read_body(receive: Any, limit: int) -> tuple[bytes, bool]:
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return b"", True
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks), False


async def _send_json(
    send: Any, status: int, payload: dict, headers: dict[str, str] | None = None
) -> None:
    body = json.dumps(payload).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})

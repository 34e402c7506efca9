"""Request ids, Prometheus metrics, and the outermost error net.

`RequestMiddleware` is plain ASGI (no BaseHTTPMiddleware: it costs the feed's latency budget):
it assigns or propagates `X-Request-ID` and binds it to every log line of the request
(roomfeed.logs), times the request by endpoint, turns `ApiError` and any unexpected exception into
the one error shape, and logs one JSON line per request when the access log is on.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import time
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

import orjson
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)

from roomfeed.errors import ApiError
from roomfeed.logs import bind, unbind

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

HTTP_REQUESTS = Counter("roomfeed_http_requests_total", "HTTP requests", ["endpoint", "method", "status"])
HTTP_LATENCY = Histogram(
    "roomfeed_http_request_seconds",
    "HTTP request latency",
    ["endpoint"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)

METRICS_CONTENT_TYPE = CONTENT_TYPE_LATEST
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def metrics_text() -> bytes:
    """This process's metrics, or, under `serve --workers N` (PROMETHEUS_MULTIPROC_DIR set), every
    worker's summed (counters and histograms added up; gauges as each declares its multiprocess mode)."""
    if os.environ.get(MULTIPROC_ENV):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry)
    return generate_latest(REGISTRY)


def prepare_multiprocess_metrics(folder: Path) -> Path | None:
    """Before `serve --workers N` forks: an empty folder the workers write their metric files to.
    Returns it, or None when the operator chose one (PROMETHEUS_MULTIPROC_DIR: theirs to empty)."""
    if os.environ.get(MULTIPROC_ENV):
        return None  # the operator chose one (it must be empty at start: their deployment's job)
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    os.environ[MULTIPROC_ENV] = str(folder)
    return folder


def forget_this_process() -> None:
    """At a worker's shutdown: its live gauges leave the sums (counters stay, as Prometheus expects)."""
    if os.environ.get(MULTIPROC_ENV):
        multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]


log = logging.getLogger("roomfeed.http")
_NOSNIFF = (b"x-content-type-options", b"nosniff")


class RequestMiddleware:
    def __init__(self, app: ASGIApp, access_log: bool = True) -> None:
        self.app = app
        self.access_log = access_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = _incoming_request_id(scope) or secrets.token_hex(8)
        scope["roomfeed.request_id"] = request_id
        log_context = bind(request_id=request_id)
        header = (b"x-request-id", request_id.encode())
        status_holder = [500]
        response_started = False

        async def send_with_id(message: Message) -> None:
            nonlocal response_started
            if message["type"] == "http.response.start":
                response_started = True
                status_holder[0] = message["status"]
                headers = [*message.get("headers", []), header]
                # Every response, JSON included: browsers must not sniff an API answer into HTML.
                if not any(name.lower() == b"x-content-type-options" for name, _ in headers):
                    headers.append(_NOSNIFF)
                message["headers"] = headers
            await send(message)

        if log.isEnabledFor(logging.DEBUG):
            log.debug("request started", extra={"fields": {"method": scope["method"], "path": scope["path"]}})
        try:
            if _has_nul(scope):
                # PostgreSQL text cannot hold U+0000: refuse it here once, for every route's ids and params.
                raise ApiError(
                    "the path or query contains a NUL character", status=400, code="invalid_request"
                )
            await self.app(scope, receive, send_with_id)
        except ApiError as error:
            if response_started:
                raise
            await _send_error(send_with_id, error.status, error.body(), error.headers)
        except Exception:
            log.exception("unhandled error", extra={"fields": {"path": scope.get("path")}})
            if response_started:
                raise
            body = {
                "error": {
                    "code": "internal",
                    "message": "internal error",
                    "fields": {},
                    "request_id": request_id,
                }
            }
            await _send_error(send_with_id, 500, body, {})
        finally:
            elapsed = time.perf_counter() - started
            endpoint = getattr(scope.get("endpoint"), "__name__", "unmatched")
            latency, requests = _series(endpoint, scope["method"], status_holder[0])
            latency.observe(elapsed)
            requests.inc()
            if self.access_log and log.isEnabledFor(logging.INFO):
                log.info(
                    "request",
                    extra={
                        "fields": {
                            "method": scope["method"],
                            "path": scope["path"],
                            "status": status_holder[0],
                            "ms": round(elapsed * 1000, 2),
                        }
                    },
                )
            unbind(log_context)


# Each (endpoint, method, status)'s two series, looked up once: `labels()` takes the metric's lock and
# builds its key on every call (~3 us of a request). Bounded by the routes' names, methods and statuses.
_SERIES: dict[tuple[str, str, int], tuple[Any, Any]] = {}


def _series(endpoint: str, method: str, status: int) -> tuple[Any, Any]:
    key = (endpoint, method, status)
    series = _SERIES.get(key)
    if series is None:
        series = _SERIES[key] = (
            HTTP_LATENCY.labels(endpoint),
            HTTP_REQUESTS.labels(endpoint, method, str(status)),
        )
    return series


def _has_nul(scope: Scope) -> bool:
    query: bytes = scope.get("query_string", b"")
    return "\x00" in scope.get("path", "") or b"%00" in query or b"\x00" in query


def _incoming_request_id(scope: Scope) -> str | None:
    for name, value in scope.get("headers", []):
        if name == b"x-request-id":
            text: str = value.decode("latin-1")
            if 0 < len(text) <= 64 and text.replace("-", "").replace("_", "").isalnum():
                return text
    return None


async def _send_error(send: Send, status: int, body: dict[str, Any], headers: dict[str, str]) -> None:
    payload = orjson.dumps(body)
    raw_headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    raw_headers += [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": payload})

"""The API process's ASGI app: the plumbing a request may use, the system routes, one error shape.

`Api` is a Starlette app whose plumbing is typed attributes (settings, resources, the request
guard, the OpenAPI document, the /metrics refreshers). The composition root (roomfeed.assembly)
builds the domains' services and routes and hands them over with a `Lifecycle` that starts the
services in dependency order once the connections are open, and stops them in reverse.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, Generic, Protocol, TypeVar

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Route

from roomfeed import __version__, heap, ratelimit
from roomfeed.auth import Guard, KeyVerifier, ViewerTokens
from roomfeed.errors import ApiError
from roomfeed.health import check_dependencies, readiness_body
from roomfeed.http import OrjsonResponse, error_response, json
from roomfeed.observability import METRICS_CONTENT_TYPE, RequestMiddleware, forget_this_process, metrics_text
from roomfeed.openapi import build_schema, render_docs
from roomfeed.ratelimit import RateLimiter
from roomfeed.resources import Resources
from roomfeed.settings import Settings

VERSION = __version__


class Lifecycle(Protocol):
    """The domains' services of one process: started once its connections are open, stopped before they close."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


async def healthz(request: Request) -> Response:
    """Liveness: the process answers.
    ---
    security: []
    responses:
      200: {description: alive}
    """
    return json({"status": "ok", "version": VERSION})


async def readyz(request: Request) -> Response:
    """Readiness: the process can serve (degraded or not); each dependency's status in the body.
    Down dependencies make the answer `degraded`, not 503: the feed serves without Redis or PostgreSQL
    (roomfeed/health.py). 503 only before start-up is done and once shutdown has begun.
    ---
    security: []
    responses:
      200: {description: "ready or degraded: {status, checks: {postgres, redis, kafka}}"}
      503: {description: starting or stopping}
    """
    api = Api.of(request)
    if not api.serving:
        body = {"error": {"code": "not_ready", "message": "starting or stopping", "fields": {}}}
        return OrjsonResponse(body, status_code=503, headers={"Retry-After": "1"})
    checks = await check_dependencies(api.resources)
    return json(readiness_body(checks))


async def metrics(request: Request) -> Response:
    """Prometheus metrics.
    ---
    security: []
    responses:
      200: {description: Prometheus text format}
    """
    for refresh in Api.of(request).metric_refreshers:
        with contextlib.suppress(Exception):
            await refresh()
    return Response(metrics_text(), media_type=METRICS_CONTENT_TYPE)


async def openapi(request: Request) -> Response:
    """This document.
    ---
    security: []
    responses:
      200: {description: OpenAPI 3 document}
    """
    return json(Api.of(request).openapi)


async def docs(request: Request) -> Response:
    """Human-readable API reference.
    ---
    security: []
    responses:
      200: {description: HTML}
    """
    return HTMLResponse(render_docs(Api.of(request).openapi))


SYSTEM_ROUTES: list[BaseRoute] = [
    Route("/healthz", healthz, methods=["GET"]),
    Route("/readyz", readyz, methods=["GET"]),
    Route("/metrics", metrics, methods=["GET"]),
    Route("/openapi.json", openapi, methods=["GET"], include_in_schema=False),
    Route("/docs", docs, methods=["GET"], include_in_schema=False),
]


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(exc)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    codes = {404: "not_found", 405: "method_not_allowed"}
    error = ApiError(str(exc.detail), status=exc.status_code, code=codes.get(exc.status_code, "http_error"))
    return error_response(error)


L = TypeVar("L", bound=Lifecycle)


class Api(Starlette, Generic[L]):
    """The API process: system routes and the domains' routes over typed plumbing; `services` are
    the domains' (the composition root's typed container)."""

    def __init__(
        self,
        resources: Resources,
        routes: Sequence[BaseRoute],
        services: L,
        *,
        schemas: dict[str, Any] | None = None,
        access_log: bool = True,
    ) -> None:
        self.settings: Settings = resources.settings
        self.resources = resources
        self.guard = Guard(
            ViewerTokens(resources.settings), KeyVerifier(resources.pool), RateLimiter(resources.redis)
        )
        self.services = services
        # /metrics awaits each before it renders (consumer lag, dependency gauges, ...).
        self.metric_refreshers: list[Callable[[], Awaitable[Any]]] = [self._dependency_gauges]
        self.serving = False  # /readyz: 503 before start-up is done and once shutdown has begun
        all_routes = [*SYSTEM_ROUTES, *routes]
        super().__init__(
            routes=all_routes,
            lifespan=self._lifespan,
            middleware=[Middleware(RequestMiddleware, access_log=access_log)],
            exception_handlers={ApiError: _api_error, HTTPException: _http_error},
        )
        self.openapi = build_schema(all_routes, VERSION, schemas)

    @staticmethod
    def of(request: Request) -> Api[Any]:
        app = request.app
        assert isinstance(app, Api)
        return app

    async def _dependency_gauges(self) -> None:  # a scrape sets roomfeed_dependency_up too
        await check_dependencies(self.resources)

    @contextlib.asynccontextmanager
    async def _lifespan(self, app: Starlette) -> AsyncIterator[None]:
        await self.resources.start()
        ratelimit.configure(self.settings)
        try:
            await self.services.start()
            try:
                async with heap.frozen():
                    self.serving = True
                    try:
                        yield
                    finally:
                        self.serving = False
            finally:
                await self.services.stop()
        finally:
            await self.resources.close()
            forget_this_process()

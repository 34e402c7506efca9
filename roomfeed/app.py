"""The ASGI app: system routes, each domain's routes, and the lifecycle that wires them.

A domain's `http` module offers `routes` and `start(state, resources)` / `stop(state)`; the list
below names them explicitly, in dependency order (feed last: it composes the others).
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import AsyncIterator
from types import ModuleType
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Route

from roomfeed import heap, ratelimit
from roomfeed.auth import KeyVerifier
from roomfeed.errors import ApiError
from roomfeed.health import check_dependencies, readiness_body
from roomfeed.http import OrjsonResponse, error_response, json
from roomfeed.observability import METRICS_CONTENT_TYPE, RequestMiddleware, forget_this_process, metrics_text
from roomfeed.openapi import build_schema, render_docs
from roomfeed.resources import Resources
from roomfeed.settings import Settings

VERSION = "0.1.0"

# Domain HTTP modules, in the order they start. A module missing from a checkout is skipped so
# that each domain can land on its own.
DOMAIN_MODULES = ("rooms.http", "events.http", "ranking.http", "alliance.http", "feed.http", "console.http")


def _domains() -> list[ModuleType]:
    found = []
    for name in DOMAIN_MODULES:
        try:
            found.append(importlib.import_module(name))
        except ModuleNotFoundError as exc:
            if exc.name not in (name, name.split(".")[0]):
                raise
    return found


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
    if not getattr(request.app.state, "serving", False):
        body = {"error": {"code": "not_ready", "message": "starting or stopping", "fields": {}}}
        return OrjsonResponse(body, status_code=503, headers={"Retry-After": "1"})
    checks = await check_dependencies(request.app.state.resources)
    return json(readiness_body(checks))


async def metrics(request: Request) -> Response:
    """Prometheus metrics.
    ---
    security: []
    responses:
      200: {description: Prometheus text format}
    """
    for refresh in request.app.state.metric_refreshers:
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
    return json(request.app.state.openapi)


async def docs(request: Request) -> Response:
    """Human-readable API reference.
    ---
    security: []
    responses:
      200: {description: HTML}
    """
    return HTMLResponse(render_docs(request.app.state.openapi))


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


def create_app(settings: Settings, *, access_log: bool = True, **overrides: Any) -> Starlette:
    """The API process. `overrides` are set on `app.state` before domains start (tests use it)."""
    domains = _domains()
    routes = [*SYSTEM_ROUTES]
    for domain in domains:
        routes.extend(domain.routes)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        resources = await Resources.open(settings)
        ratelimit.configure(settings)
        app.state.resources = resources
        app.state.keys = KeyVerifier(resources.pool)

        async def dependency_gauges() -> None:  # a scrape sets roomfeed_dependency_up too
            await check_dependencies(resources)

        app.state.metric_refreshers.append(dependency_gauges)
        started: list[ModuleType] = []
        try:
            for domain in domains:
                await domain.start(app.state, resources)
                started.append(domain)
            async with heap.frozen():
                app.state.serving = True
                try:
                    yield
                finally:
                    app.state.serving = False
        finally:
            for domain in reversed(started):
                with contextlib.suppress(Exception):
                    await domain.stop(app.state)
            await resources.close()
            forget_this_process()

    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        middleware=[Middleware(RequestMiddleware, access_log=access_log)],
        exception_handlers={ApiError: _api_error, HTTPException: _http_error},
    )
    app.state.settings = settings
    app.state.metric_refreshers = []
    schemas = {name: body for domain in domains for name, body in getattr(domain, "schemas", {}).items()}
    app.state.openapi = build_schema(routes, VERSION, schemas)
    for name, value in overrides.items():
        setattr(app.state, name, value)
    return app

"""The API process's ASGI app: the plumbing a request may use, the system routes, one error shape.

`Api` is a Starlette app whose plumbing is typed attributes (settings, resources, the request
guard, the OpenAPI document, the /metrics refreshers). The composition root (roomfeed.assembly)
builds the domains' services and routes and hands them over with a `Lifecycle` that starts the
services in dependency order once the connections are open, and stops them in reverse.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Annotated, Any, Generic, Literal, Protocol, TypeVar

import msgspec
from msgspec import Meta
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from roomfeed import __version__, apidocs, heap, ratelimit
from roomfeed.auth import Guard, KeyVerifier, ViewerTokens
from roomfeed.errors import ApiError
from roomfeed.health import check_dependencies, readiness_body
from roomfeed.http import error_response, json
from roomfeed.observability import METRICS_CONTENT_TYPE, RequestMiddleware, forget_this_process, metrics_text
from roomfeed.openapi import build_schema
from roomfeed.operations import operation
from roomfeed.ratelimit import RateLimiter
from roomfeed.resources import Resources
from roomfeed.settings import Settings

VERSION = __version__


class Lifecycle(Protocol):
    """The domains' services of one process: started once its connections are open, stopped before they close."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


class Health(msgspec.Struct, kw_only=True):
    status: Literal["ok"]
    version: str


class Readiness(msgspec.Struct, kw_only=True):
    status: Annotated[Literal["ready", "degraded"], Meta(description="degraded: a dependency is down")]
    checks: Annotated[dict[str, Literal["ok", "down"]], Meta(description="postgres, redis, kafka")]


@operation("GET", "/healthz", tag="system")
async def healthz() -> Health:
    """Liveness: the process answers."""
    return Health(status="ok", version=VERSION)


@operation("GET", "/readyz", tag="system")
async def readyz(request: Request) -> Readiness:
    """Readiness: the process can serve (degraded or not); each dependency's status in the body.

    Down dependencies make the answer `degraded`, not 503: the feed serves without Redis or
    PostgreSQL (roomfeed/health.py). 503 `not_ready` only before start-up is done and once shutdown
    has begun."""
    api = Api.of(request)
    if not api.serving:
        raise ApiError("starting or stopping", status=503, code="not_ready", headers={"Retry-After": "1"})
    checks = await check_dependencies(api.resources)
    return msgspec.convert(readiness_body(checks), Readiness)


@operation("GET", "/metrics", tag="system", media_type=METRICS_CONTENT_TYPE, response={"type": "string"})
async def metrics(request: Request) -> Response:
    """Prometheus metrics (text exposition format)."""
    for refresh in Api.of(request).metric_refreshers:
        with contextlib.suppress(Exception):
            await refresh()
    return Response(metrics_text(), media_type=METRICS_CONTENT_TYPE)


async def openapi(request: Request) -> Response:
    """The OpenAPI 3.1 document (public; not an operation of itself)."""
    return json(Api.of(request).openapi)


# The viewer's hot paths: a feed page and an event batch per swipe. Starlette tries routes in order
# (a regular expression each), and these came 45th and 63rd of 84: ~60 matches per feed page. They are
# tried first; no other route matches their paths, so the route that answers any request is unchanged
# (tests/plumbing/test_routing.py). The API document keeps the declaration order.
HOT_PATHS: tuple[str, ...] = ("/v1/sessions/{session_id}/feed", "/v1/events")


def hot_first(routes: Sequence[BaseRoute]) -> list[BaseRoute]:
    """`routes` with those of `HOT_PATHS` first (in that order), the rest in their order."""
    rank = {path: i for i, path in enumerate(HOT_PATHS)}
    return sorted(routes, key=lambda r: rank.get(getattr(r, "path", ""), len(rank)))


SYSTEM_ROUTES: list[BaseRoute] = [
    healthz,
    readyz,
    metrics,
    Route("/openapi.json", openapi, methods=["GET"], include_in_schema=False),
    *apidocs.ROUTES,
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
        access_log: bool = True,
    ) -> None:
        self.settings: Settings = resources.settings
        self.resources = resources
        self.guard = Guard(
            ViewerTokens(resources.settings),
            KeyVerifier(resources.pool),
            RateLimiter(resources.redis, resources.redis_lane),
        )
        self.services = services
        # /metrics awaits each before it renders (consumer lag, dependency gauges, ...).
        self.metric_refreshers: list[Callable[[], Awaitable[Any]]] = [self._dependency_gauges]
        self.serving = False  # /readyz: 503 before start-up is done and once shutdown has begun
        all_routes = [*SYSTEM_ROUTES, *routes]
        super().__init__(
            routes=hot_first(all_routes),
            lifespan=self._lifespan,
            middleware=[Middleware(RequestMiddleware, access_log=access_log)],
            exception_handlers={ApiError: _api_error, HTTPException: _http_error},
        )
        self.openapi = build_schema(all_routes, VERSION)

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

"""HTTP shape shared by every domain's routes: orjson responses, JSON bodies, the error handler.

Handlers stay thin: parse with `read_json` + `validation.Body`, call the domain, return `json`.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

import orjson
from starlette.requests import Request
from starlette.responses import Response

from roomfeed.errors import ApiError, InvalidJson, PayloadTooLarge
from roomfeed.settings import Settings

JSON_MEDIA = "application/json"


class OrjsonResponse(Response):
    media_type = JSON_MEDIA

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY)


def json(content: Any, status: int = 200, headers: dict[str, str] | None = None) -> OrjsonResponse:
    return OrjsonResponse(content, status_code=status, headers=headers)


def error_response(error: ApiError) -> OrjsonResponse:
    return OrjsonResponse(error.body(), status_code=error.status, headers=error.headers or None)


class Configured(Protocol):
    """The app a request runs in (roomfeed.app.Api): its process's settings."""

    settings: Settings


S = TypeVar("S")
Endpoint = Callable[[Request], Awaitable[Response]]


def bound(handler: Callable[[Request, S], Awaitable[Response]], services: S) -> Endpoint:
    """`handler` as a Starlette endpoint with its domain's services handed over (the composition
    root builds them; `routes(services)` of each domain binds its handlers). The handler's name and
    docstring stay, so the OpenAPI document is the same."""

    @functools.wraps(handler)
    async def endpoint(request: Request) -> Response:
        return await handler(request, services)

    return endpoint


async def read_body(request: Request, max_bytes: int | None = None, *, empty_ok: bool = False) -> bytes:
    """The raw request body; 413 past the limit (checked while reading), 400 when empty (unless
    `empty_ok`: an optional body)."""
    app: Configured = request.app
    limit = max_bytes if max_bytes is not None else app.settings.max_body_bytes
    declared = request.headers.get("content-length")
    if declared is not None and declared.isascii() and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"request body exceeds {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"request body exceeds {limit} bytes")
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw and not empty_ok:
        raise InvalidJson(
            "request body is empty; a JSON document is expected", fields={"body": "is required"}
        )
    return raw


async def read_json(request: Request, max_bytes: int | None = None) -> Any:
    """The request body as JSON (`read_body`); 400 when not JSON."""
    raw = await read_body(request, max_bytes)
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidJson(
            f"request body is not valid JSON: {exc}", fields={"body": "is not valid JSON"}
        ) from None


def query_int(request: Request, name: str, default: int, minimum: int, maximum: int) -> int:
    from roomfeed.errors import ValidationFailed

    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValidationFailed(f"{name} must be an integer", fields={name: "must be an integer"}) from None
    if not minimum <= value <= maximum:
        raise ValidationFailed(
            f"{name} must be between {minimum} and {maximum}",
            fields={name: f"must be between {minimum} and {maximum}"},
        )
    return value

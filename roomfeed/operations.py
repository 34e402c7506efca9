"""Typed operations: a route whose path parameters, query, body and response are msgspec models.

    class NewStore(msgspec.Struct, forbid_unknown_fields=True):
        name: Annotated[str, Meta(min_length=1, max_length=120)]

    @operation("POST", "/v1/stores", status=201)
    async def create_store(request: Request, body: NewStore) -> Store:
        '''Create a store.

        The rest of the docstring is the operation's description.'''
        principal = await require(request, "merchant")
        return Store(...)               # or Created(Store(...), location=...) for a 201

The handler's signature is the contract, written once: a parameter named `body` is the JSON body,
one named `query` the query string (a Struct whose fields are the parameters), any other parameter
whose name is in the path template is that path parameter (`str`, or `Annotated[str, Meta(...)]`),
the return annotation is the 2xx response. The route validates what comes in (422 naming every bad
field, 404 for a path parameter that cannot name anything, in the one error shape), encodes what
goes out (msgspec; a `dict` or `list` as orjson, for hot paths that build plain dicts), and describes
itself to the OpenAPI document (`roomfeed.openapi`): summary and description from the docstring,
`operationId` from the function name, the tag from the domain package, parameters, body and
response schemas. Models live beside each domain's `http` module (`<domain>/models.py`); domains
keep not importing Starlette.

msgspec, not pydantic, by measurement (bench/bench_models.py, bench/results/models.json): decoding
and checking 500 events took ~0.3 ms with msgspec, ~1.6 ms with pydantic (today's hand-written
validator ~1.2 ms); a page of 10 rooms encoded ~24 µs as msgspec Structs, ~78-135 µs as pydantic
models (orjson over dicts ~7 µs, so the feed page keeps building dicts and declares its model).
"""

from __future__ import annotations

import inspect
import re
import typing
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, get_type_hints

import msgspec
import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from roomfeed.errors import InvalidJson, NotFound, ValidationFailed
from roomfeed.http import read_body

T = TypeVar("T")
_PATH_PARAM = re.compile(r"{([^}:]+)(?::[^}]+)?}")
_encoder = msgspec.json.Encoder()


@dataclass(frozen=True)
class Created(Generic[T]):
    """A 201 answer: the created thing and where it lives (the `Location` header). Annotate the
    handler `-> Created[Model]`."""

    body: T
    location: str


@dataclass
class Operation:
    """What the OpenAPI document says of one typed route."""

    method: str
    path: str
    operation_id: str
    summary: str
    description: str
    tag: str
    status: int
    body: Any | None
    query: Any | None
    path_params: dict[str, Any]
    response: Any | None
    example: Any = None
    public: bool = False


class TypedRoute(Route):
    """A Starlette route that carries its `Operation`.

    A handler with one parameter that is none of `request`, `body`, `query` and the path parameters
    takes its domain's services (built by the composition root): `route.bound(services)` is the
    route to mount, handing them over on every call."""

    operation: Operation
    _bind: Callable[[Any], TypedRoute]

    def bound(self, services: Any) -> TypedRoute:
        return self._bind(services)


def _docstring(handler: Callable[..., Any]) -> tuple[str, str]:
    doc = inspect.getdoc(handler) or ""
    summary, _, rest = doc.partition("\n")
    return summary.strip().rstrip("."), rest.strip()


def _where(path: str) -> str:
    """msgspec's `$.a[0].b` as the error shape's field name `a.0.b`."""
    return path.removeprefix("$").lstrip(".").replace("[", ".").replace("]", "")


def _split(message: str) -> tuple[str, str]:
    """msgspec's "Expected `int`, got `str` - at `$.count`" as (field, reason)."""
    reason, sep, at = message.rpartition(" - at `")
    if not sep:
        return "", message
    return _where(at.rstrip("`")), reason


def field_errors(model: Any, data: Any, prefix: str = "") -> dict[str, str]:
    """Every bad field of `data` against Struct `model` (msgspec stops at the first; this runs only
    when decoding failed, to name them all)."""
    if not isinstance(data, dict):
        return {prefix.rstrip(".") or "body": "must be a JSON object"}
    errors: dict[str, str] = {}
    info = msgspec.inspect.type_info(model)
    assert isinstance(info, msgspec.inspect.StructType)
    known = set()
    hints = get_type_hints(model, include_extras=True)
    for f in info.fields:
        known.add(f.encode_name)
        name = f"{prefix}{f.encode_name}"
        if f.encode_name not in data:
            if f.required:
                errors[name] = "is required"
            continue
        value = data[f.encode_name]
        kind = hints[f.name]
        inner = _struct_of(kind)
        if inner is not None and isinstance(value, dict):
            errors.update(field_errors(inner, value, f"{name}."))
            continue
        try:
            msgspec.convert(value, kind)
        except msgspec.ValidationError as exc:
            where, reason = _split(str(exc))
            errors[f"{name}.{where}" if where else name] = reason
    if info.forbid_unknown_fields:
        for extra in sorted(set(data) - known):
            errors[f"{prefix}{extra}"] = "is not accepted here"
    return errors


def _struct_of(kind: Any) -> Any | None:
    """The Struct type behind `kind` (Annotated, Optional), or None."""
    origin = typing.get_origin(kind)
    if origin is typing.Annotated:
        return _struct_of(typing.get_args(kind)[0])
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        found = [a for a in typing.get_args(kind) if a is not type(None)]
        return _struct_of(found[0]) if len(found) == 1 else None
    if isinstance(kind, type) and issubclass(kind, msgspec.Struct):
        return kind
    return None


def decode_body(raw: bytes, decoder: msgspec.json.Decoder[Any], model: Any) -> Any:
    try:
        return decoder.decode(raw)
    except msgspec.ValidationError:
        pass
    except msgspec.DecodeError as exc:
        raise InvalidJson(
            f"request body is not valid JSON: {exc}", fields={"body": "is not valid JSON"}
        ) from None
    data = orjson.loads(raw)
    errors = field_errors(model, data)
    if not errors:  # a constraint field_errors cannot place: say what msgspec said
        try:
            decoder.decode(raw)
        except msgspec.ValidationError as exc:
            where, reason = _split(str(exc))
            errors = {where or "body": reason}
    raise ValidationFailed("invalid fields: " + ", ".join(sorted(errors)), fields=errors)


def convert_query(request: Request, model: Any) -> Any:
    params = dict(request.query_params)
    try:
        return msgspec.convert(params, model, strict=False)
    except msgspec.ValidationError:
        # Query values are strings: check each known field with string coercion.
        info = msgspec.inspect.type_info(model)
        assert isinstance(info, msgspec.inspect.StructType)
        hints = get_type_hints(model, include_extras=True)
        errors = {}
        for f in info.fields:
            if f.encode_name not in params:
                if f.required:
                    errors[f.encode_name] = "is required"
                continue
            try:
                msgspec.convert(params[f.encode_name], hints[f.name], strict=False)
            except msgspec.ValidationError as exc:
                errors[f.encode_name] = _split(str(exc))[1]
        raise ValidationFailed(
            "invalid query parameters: " + ", ".join(sorted(errors)), fields=errors
        ) from None


def encode(value: Any, status: int, headers: dict[str, str] | None = None) -> Response:
    body = (
        orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS)
        if isinstance(value, dict | list)
        else _encoder.encode(value)
    )
    return Response(body, status_code=status, headers=headers, media_type="application/json")


def operation(
    method: str,
    path: str,
    *,
    status: int = 200,
    tag: str | None = None,
    response: Any = None,
    example: Any = None,
    public: bool = False,
) -> Callable[[Callable[..., Awaitable[Any]]], TypedRoute]:
    """Make `handler` a typed route (see the module's docstring). `response` overrides the return
    annotation in the document (a handler that returns plain dicts on a hot path declares its model
    here); `example`: a request body the document shows; `public`: no credentials needed."""

    def make(handler: Callable[..., Awaitable[Any]]) -> TypedRoute:
        hints = get_type_hints(handler, include_extras=True)
        names = set(_PATH_PARAM.findall(path))
        params = [p for p in inspect.signature(handler).parameters.values()]
        body_model = hints.get("body") if any(p.name == "body" for p in params) else None
        query_model = hints.get("query") if any(p.name == "query" for p in params) else None
        path_params = {p.name: hints.get(p.name, str) for p in params if p.name in names}
        missing = names - set(path_params)
        if missing:
            raise TypeError(f"{handler.__qualname__}: path parameters {sorted(missing)} are not parameters")
        wants_request = any(p.name == "request" for p in params)
        taken = {"request", "body", "query", *names}
        services_params = [p.name for p in params if p.name not in taken]
        if len(services_params) > 1:
            raise TypeError(f"{handler.__qualname__}: more than one services parameter: {services_params}")
        services_param = services_params[0] if services_params else None
        returned = response if response is not None else hints.get("return")
        answers = status
        if typing.get_origin(returned) is Created:
            returned, answers = typing.get_args(returned)[0], 201
        decoder = msgspec.json.Decoder(body_model) if body_model is not None else None

        def bind(services: Any) -> TypedRoute:
            async def endpoint(request: Request) -> Response:
                kwargs: dict[str, Any] = {}
                if wants_request:
                    kwargs["request"] = request
                if services_param is not None:
                    kwargs[services_param] = services
                for name, kind in path_params.items():
                    raw = request.path_params[name]
                    try:
                        kwargs[name] = msgspec.convert(raw, kind, strict=False)
                    except msgspec.ValidationError:
                        raise NotFound(f"no such {name.removesuffix('_id')}: {raw}") from None
                if query_model is not None:
                    kwargs["query"] = convert_query(request, query_model)
                if decoder is not None:
                    kwargs["body"] = decode_body(await read_body(request), decoder, body_model)
                result = await handler(**kwargs)
                if isinstance(result, Response):
                    return result
                if isinstance(result, Created):
                    return encode(result.body, 201, {"Location": result.location})
                return encode(result, status)

            summary, description = _docstring(handler)
            if not summary:
                raise TypeError(f"{handler.__qualname__}: a typed operation needs a docstring (its summary)")
            route = TypedRoute(path, endpoint, methods=[method], name=handler.__name__)
            route.operation = Operation(
                method=method.lower(),
                path=path,
                operation_id=handler.__name__,
                summary=summary,
                description=description,
                tag=tag or handler.__module__.split(".")[0],
                status=answers,
                body=body_model,
                query=query_model,
                path_params=path_params,
                response=returned,
                example=example,
                public=public,
            )
            route._bind = bind
            return route

        return bind(None)

    return make

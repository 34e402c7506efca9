"""Typed operations: a route whose credentials, path parameters, query, body and response are declared
by its handler's signature, written once.

    class NewStore(msgspec.Struct, forbid_unknown_fields=True):
        name: Annotated[str, text(120)]

    @operation("POST", "/v1/stores", roles=("merchant",), tag="stores", example={"name": "Jing'an"})
    async def create_store(principal: Principal, body: NewStore) -> Created[Store]:
        '''Add an offline store.

        The rest of the docstring is the operation's description.'''
        return Created(Store(...), location=f"/v1/stores/{...}")

What the handler's parameters mean, by name:
- `principal`: the caller, authenticated first (401 without credentials, 403 with another role's);
  `roles` says whose credentials the operation takes (none: a public operation);
- `charge`: with `principal`, the request's rate-limit charge is handed over instead of charged
  (`roomfeed.auth.require_with_charge`: it rides the handler's own Redis round trip);
- `body`: the JSON body, decoded and checked against the annotation (a msgspec Struct);
  `body: Model | None = None` is an optional body (None when the request has none);
- `query`: the query string, a Struct whose fields are the parameters;
- a name in the path template: that path parameter (`str` or an annotated `str`; a value that cannot
  name anything answers 404);
- `request`: the Starlette request, for what the signature does not say.

The return annotation is the 2xx response: a Struct (200, or `status`), `Created[Struct]` (201 with
`Location`; `created(Model, row, "/v1/things/{thing_id}")` builds one from the domain's answer), `None` (204), or `Response` for another media type (declared with `media_type`).
A hot path that builds plain dicts returns them and declares its model with `response=`.
Everything that comes in is checked before the handler runs (422 naming every bad field, in the one
error shape, with reasons in words: "must be at most 120 characters"); the document
(`roomfeed.openapi`) describes each operation from the same declaration: summary and description
from the docstring, `operationId` from the function, tag, security, parameters, body, responses.

msgspec, not pydantic, by measurement (bench/bench_models.py, bench/results/models.json): decoding
and checking 500 events took ~0.3 ms with msgspec, ~1.6 ms with pydantic; a page of 10 rooms
encoded ~24 µs as msgspec Structs, ~78-135 µs as pydantic models (orjson over dicts ~7 µs, so the
feed page keeps building dicts and declares its model).
"""

from __future__ import annotations

import ast
import inspect
import re
import types
import typing
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar, get_type_hints

import msgspec
import orjson
from starlette.datastructures import QueryParams
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from roomfeed import idempotency
from roomfeed.auth import Role, require, require_with_charge
from roomfeed.errors import InvalidJson, NotFound, ValidationFailed
from roomfeed.http import read_body
from roomfeed.validation import pattern_reason

T = TypeVar("T")
# The schema of a binary answer (an image), for `response=` with its `media_type`.
PNG: dict[str, Any] = {"type": "string", "format": "binary"}
HTML: dict[str, Any] = {"type": "string"}
_PATH_PARAM = re.compile(r"{([^}:]+)(?::[^}]+)?}")
_encoder = msgspec.json.Encoder()
_NUL = b"\\u0000"


@dataclass(frozen=True)
class Created(Generic[T]):
    """A 201 answer: the created thing and where it lives (the `Location` header). Annotate the
    handler `-> Created[Model]`."""

    body: T
    location: str


def created(model: type[T], made: Mapping[str, Any], location: str) -> Created[T]:
    """The 201 of a create route: the domain's answer `made` as `model`, at `location`, a path whose
    `{field}`s are filled from `made`:

        return created(Store, await catalog.create_store(...), "/v1/stores/{store_id}")
    """
    return Created(msgspec.convert(made, model), location=location.format_map(made))


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
    roles: tuple[Role, ...]
    body: Any | None
    body_required: bool
    query: Any | None
    path_params: dict[str, Any]
    response: Any | None
    media_type: str = "application/json"
    example: Any = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def public(self) -> bool:
        return not self.roles


class TypedRoute(Route):
    """A Starlette route that carries its `Operation`.

    A handler with one parameter that is none of the names above (`request`, `principal`, `charge`,
    `body`, `query`, the path parameters) takes its domain's services (built by the composition root):
    `route.bound(services)` is the route to mount, handing them over on every call."""

    operation: Operation
    _bind: Callable[[Any], TypedRoute]

    def bound(self, services: Any) -> TypedRoute:
        return self._bind(services)


def _docstring(handler: Callable[..., Any]) -> tuple[str, str]:
    doc = inspect.getdoc(handler) or ""
    summary, _, rest = doc.partition("\n")
    return summary.strip().rstrip("."), rest.strip()


# --- what is wrong with a field, in words ---------------------------------------------------------

_KINDS = {
    "str": "a string",
    "int": "an integer",
    "float": "a number",
    "bool": "true or false",
    "array": "a list",
    "object": "an object",
    "null": "null",
}
_EXPECTED = re.compile(r"^Expected `([a-z]+)[^`]*`(?:, got `[^`]+`)?$")
_BOUND = re.compile(r"^Expected `(int|float)` (>=|<=|>|<) (\S+)$")
_LENGTH = re.compile(r"^Expected `(str|array|object)` of length (>=|<=) (\d+)$")
_REGEX = re.compile(r"^Expected `str` matching regex (.+)$")
_WORDS = {">=": "at least", "<=": "at most", ">": "greater than", "<": "less than"}


def _number(text: str) -> str:
    return text[:-2] if text.endswith(".0") else text


def _describe(kind: Any) -> str | None:
    """What a value of annotation `kind` is, in words (None: msgspec's words will do)."""
    try:
        info = msgspec.inspect.type_info(kind)
    except (TypeError, ValueError):
        return None
    if isinstance(info, msgspec.inspect.UnionType):
        found = [t for t in info.types if not isinstance(t, msgspec.inspect.NoneType)]
        info = found[0] if len(found) == 1 else info
    if isinstance(info, msgspec.inspect.LiteralType):
        return "one of: " + ", ".join(str(v) for v in info.values)
    if isinstance(info, msgspec.inspect.ListType) and isinstance(info.item_type, msgspec.inspect.StrType):
        return "a list of strings"
    names = {
        msgspec.inspect.StrType: "a string",
        msgspec.inspect.IntType: "an integer",
        msgspec.inspect.FloatType: "a number",
        msgspec.inspect.BoolType: "true or false",
        msgspec.inspect.ListType: "a list",
        msgspec.inspect.StructType: "an object",
        msgspec.inspect.DictType: "an object",
    }
    return names.get(type(info))


def reason(message: str, kind: Any = None) -> str:
    """msgspec's "Expected `str` of length <= 120" as "must be at most 120 characters"."""
    if message.startswith("Object missing required field"):
        return "is required"
    if message.startswith("Object contains unknown field"):
        return "is not accepted here"
    if message.startswith("Invalid enum value"):
        return "must be " + (_describe(kind) or "one of the documented values")
    if m := _EXPECTED.match(message):
        described = _describe(kind) if kind is not None else None
        return "must be " + (described or _KINDS.get(m[1], m[1]))
    if m := _BOUND.match(message):
        return f"must be {_WORDS[m[2]]} {_number(m[3])}"
    if m := _LENGTH.match(message):
        kind_name, op, n = m[1], m[2], int(m[3])
        if kind_name == "str":
            return f"must be {_WORDS[op]} {n} character{'s' if n != 1 else ''}"
        if op == ">=" and n == 1:
            return "must not be empty"
        return f"must have {_WORDS[op]} {n} item{'s' if n != 1 else ''}"
    if m := _REGEX.match(message):
        try:
            pattern = ast.literal_eval(m[1])  # msgspec quotes the pattern as Python's repr does
        except (ValueError, SyntaxError):
            pattern = m[1]
        return pattern_reason(str(pattern))
    return message


def _where(path: str) -> str:
    """msgspec's `$.a[0].b` as the error shape's field name `a.0.b`."""
    return path.removeprefix("$").lstrip(".").replace("[", ".").replace("]", "")


def _split(message: str) -> tuple[str, str]:
    """msgspec's "Expected `int`, got `str` - at `$.count`" as (field, msgspec's reason)."""
    text, sep, at = message.rpartition(" - at `")
    if not sep:
        return "", message
    return _where(at.rstrip("`")), text


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
        items = _items_of(kind)
        if items is not None and isinstance(value, list):  # a list of objects: the list, then each item
            item, outer = items
            try:
                msgspec.convert(value, outer)
            except msgspec.ValidationError as exc:
                errors[name] = reason(_split(str(exc))[1], kind)
            for i, element in enumerate(value):
                errors.update(field_errors(item, element, f"{name}.{i}."))
            continue
        try:
            msgspec.convert(value, kind)
        except msgspec.ValidationError as exc:
            where, text = _split(str(exc))
            if where:
                errors[f"{name}.{where}"] = reason(text)
            else:
                errors[name] = reason(text, kind)
    if info.forbid_unknown_fields:
        for extra in sorted(set(data) - known):
            errors[f"{prefix}{extra}"] = "is not accepted here"
    return errors


def _struct_of(kind: Any) -> Any | None:
    """The Struct type behind `kind` (Annotated, Optional), or None."""
    origin = typing.get_origin(kind)
    if origin is typing.Annotated:
        return _struct_of(typing.get_args(kind)[0])
    if origin in (typing.Union, types.UnionType):
        found = [a for a in typing.get_args(kind) if a is not type(None)]
        return _struct_of(found[0]) if len(found) == 1 else None
    if isinstance(kind, type) and issubclass(kind, msgspec.Struct):
        return kind
    return None


def _items_of(kind: Any) -> tuple[Any, Any] | None:
    """For a list of Structs (maybe Annotated with its length): the Struct, and the list's type with
    `Any` items (to check the list's own constraints)."""
    metas: tuple[Any, ...] = ()
    if typing.get_origin(kind) is typing.Annotated:
        kind, *rest = typing.get_args(kind)
        metas = tuple(rest)
    if typing.get_origin(kind) is not list:
        return None
    item = _struct_of(typing.get_args(kind)[0])
    if item is None:
        return None
    outer: Any = list[Any]
    return item, typing.Annotated[outer, *metas] if metas else outer


def _nul_fields(data: Any, at: str = "") -> dict[str, str]:
    """Fields whose text holds U+0000 (PostgreSQL text cannot store it)."""
    found: dict[str, str] = {}
    if isinstance(data, str):
        if "\x00" in data:
            found[at or "body"] = "must not contain NUL characters"
    elif isinstance(data, dict):
        for key, value in data.items():
            found.update(_nul_fields(value, f"{at}.{key}" if at else str(key)))
    elif isinstance(data, list):
        for i, value in enumerate(data):
            found.update(_nul_fields(value, f"{at}.{i}" if at else str(i)))
    return found


def _refuse(model: Any, data: Any, first: msgspec.ValidationError) -> ValidationFailed:
    """The 422 for `data` that did not fit `model`: every bad field, in words."""
    errors = field_errors(model, data) | _nul_fields(data)
    if not errors:  # a constraint field_errors cannot place: say what msgspec said
        where, text = _split(str(first))
        errors = {where or "body": reason(text)}
    return ValidationFailed("invalid fields: " + ", ".join(sorted(errors)), fields=errors)


def _no_nul(data: Any) -> None:
    if nul := _nul_fields(data):
        raise ValidationFailed("invalid fields: " + ", ".join(sorted(nul)), fields=nul)


def decode_body(raw: bytes, decoder: msgspec.json.Decoder[Any], model: Any) -> Any:
    """`raw` as `model`: 400 when it is not JSON, 422 naming every bad field."""
    try:
        value = decoder.decode(raw)
    except msgspec.ValidationError as exc:
        first = exc
    except msgspec.DecodeError as exc:
        raise InvalidJson(
            f"request body is not valid JSON: {exc}", fields={"body": "is not valid JSON"}
        ) from None
    else:
        if _NUL in raw:
            _no_nul(orjson.loads(raw))
        return value
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:  # msgspec stopped at a bad value before the bad bytes
        raise InvalidJson(
            f"request body is not valid JSON: {exc}", fields={"body": "is not valid JSON"}
        ) from None
    raise _refuse(model, data, first)


def convert_body(data: Any, model: type[T]) -> T:
    """Parsed JSON `data` as `model`, checked exactly as a typed operation checks its body (the same
    422), for what reads the same records another way (`roomfeed import`)."""
    try:
        value = msgspec.convert(data, model)
    except msgspec.ValidationError as exc:
        raise _refuse(model, data, exc) from None
    _no_nul(data)
    return value


def query_values(raw: bytes) -> dict[str, str]:
    """The query string as Starlette's `dict(request.query_params)` reads it (the last value of a name
    wins, a name without `=` is empty, empty pairs are skipped). Without escapes (`%`, `+`) that is a
    split: ~1 us where Starlette's parse_qsl took ~7-9 us of every feed page; with them, Starlette's."""
    if b"%" in raw or b"+" in raw:
        return dict(QueryParams(raw))
    values: dict[str, str] = {}
    for pair in raw.decode("latin-1").split("&"):
        if pair:
            name, _, value = pair.partition("=")
            values[name] = value
    return values


def convert_query(request: Request, model: Any) -> Any:
    params = query_values(request.scope.get("query_string", b""))
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
                errors[f.encode_name] = reason(_split(str(exc))[1], hints[f.name])
        if not errors:
            errors = {"query": "is not valid"}
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
    roles: tuple[Role, ...] = (),
    status: int = 200,
    tag: str | None = None,
    response: Any = None,
    accepts: Any = None,
    media_type: str = "application/json",
    example: Any = None,
    others: dict[int, str] | None = None,
) -> Callable[[Callable[..., Awaitable[Any]]], TypedRoute]:
    """Make `handler` a typed route (see the module's docstring). `roles`: whose credentials it takes
    (none: public); `response` declares the 2xx model of a handler that returns plain dicts (hot
    paths) or a `Response` of `media_type`; `accepts` declares the body of a handler that reads it
    itself (ingest checks each event of a batch on its own); `example`: a request body the document
    shows; `others`: more 2xx statuses answering the same model (status → when)."""

    def make(handler: Callable[..., Awaitable[Any]]) -> TypedRoute:
        hints = get_type_hints(handler, include_extras=True)
        names = set(_PATH_PARAM.findall(path))
        params = {p.name: p for p in inspect.signature(handler).parameters.values()}
        body_model = hints.get("body") if "body" in params else None
        body_required = "body" in params and params["body"].default is inspect.Parameter.empty
        if body_model is not None and not body_required:  # `body: Model | None = None`: optional
            body_model = _struct_of(body_model)
        query_model = hints.get("query") if "query" in params else None
        path_params = {name: hints.get(name, str) for name in params if name in names}
        missing = names - set(path_params)
        if missing:
            raise TypeError(f"{handler.__qualname__}: path parameters {sorted(missing)} are not parameters")
        wants_request = "request" in params
        wants_principal = "principal" in params
        wants_charge = "charge" in params
        taken = {"request", "principal", "charge", "body", "query", *names}
        services_params = [name for name in params if name not in taken]
        if len(services_params) > 1:
            raise TypeError(f"{handler.__qualname__}: more than one services parameter: {services_params}")
        services_param = services_params[0] if services_params else None
        if (wants_principal or wants_charge) and not roles:
            raise TypeError(f"{handler.__qualname__}: a principal needs `roles`")
        if roles and not wants_principal:
            raise TypeError(f"{handler.__qualname__}: `roles` are checked through a `principal` parameter")
        returned = response if response is not None else hints.get("return")
        answers = status
        if typing.get_origin(returned) is Created:
            returned, answers = typing.get_args(returned)[0], 201
        elif returned is type(None):
            returned, answers = None, 204
        elif returned is Response:
            returned = None
        decoder = msgspec.json.Decoder(body_model) if body_model is not None else None
        # Every create (and a claim or a booking: they answer 201 too) takes an Idempotency-Key.
        idempotent = answers == 201 and wants_principal
        extra: dict[str, Any] = (
            {"parameters": [idempotency.PARAMETER], "headers": {"Idempotent-Replayed": idempotency.REPLAYED}}
            if idempotent
            else {}
        )

        def bind(services: Any) -> TypedRoute:
            async def endpoint(request: Request) -> Response:
                kwargs: dict[str, Any] = {}
                if wants_request:
                    kwargs["request"] = request
                if services_param is not None:
                    kwargs[services_param] = services
                if wants_charge:
                    kwargs["principal"], kwargs["charge"] = await require_with_charge(request, *roles)
                elif wants_principal:
                    kwargs["principal"] = await require(request, *roles)
                for name, kind in path_params.items():
                    raw = request.path_params[name]
                    try:
                        kwargs[name] = msgspec.convert(raw, kind, strict=False)
                    except msgspec.ValidationError:
                        raise NotFound(
                            f"no such {name.removesuffix('_id')}: {raw}", fields={name: "names nothing"}
                        ) from None
                if query_model is not None:
                    kwargs["query"] = convert_query(request, query_model)
                raw_body = b""
                if decoder is not None:
                    raw_body = await read_body(request, empty_ok=not body_required)

                async def answer() -> Response:
                    if decoder is not None and raw_body.strip():
                        kwargs["body"] = decode_body(raw_body, decoder, body_model)
                    elif body_required:  # only whitespace (found by the fuzz test: "\r" was a 500)
                        raise InvalidJson(
                            "request body is empty; a JSON document is expected",
                            fields={"body": "is required"},
                        )
                    result = await handler(**kwargs)
                    if isinstance(result, Response):
                        return result
                    if isinstance(result, Created):
                        return encode(result.body, 201, {"Location": result.location})
                    if result is None:
                        return Response(status_code=204)
                    return encode(result, status)

                if idempotent:
                    return await idempotency.once(request, kwargs["principal"], raw_body, answer)
                return await answer()

            # Metrics and logs name a request by its endpoint's name: the handler's, not this wrapper's.
            endpoint.__name__, endpoint.__qualname__ = handler.__name__, handler.__qualname__
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
                roles=roles,
                body=body_model if body_model is not None else accepts,
                body_required=body_required or accepts is not None,
                query=query_model,
                path_params=path_params,
                response=returned,
                media_type=media_type,
                example=example,
                extra={**extra, "others": others or {}},
            )
            route._bind = bind
            return route

        return bind(None)

    return make

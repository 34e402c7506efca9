"""The OpenAPI 3.1 document, built from the routes themselves.

Every route in the document is a typed operation (`roomfeed.operations.operation`), which describes
itself: summary and description from its docstring, `operationId` from its function, a tag, whose
credentials it takes (one bearer scheme per kind of caller), path and query parameters, request
and response schemas from its msgspec models (`msgspec.json.schema_components`, as named
components), and the one error shape for its error statuses. Nothing is written twice: there is no
YAML in docstrings.
"""

from __future__ import annotations

from typing import Any

import msgspec
from starlette.routing import BaseRoute, Route

from roomfeed.operations import Operation, TypedRoute

REF = "#/components/schemas/{name}"
ERROR_SCHEMA = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message", "fields"],
            "properties": {
                "code": {"type": "string", "description": "machine-readable, e.g. validation_failed"},
                "message": {"type": "string", "description": "for a person"},
                "fields": {
                    "type": "object",
                    "additionalProperties": {"type": "string"},
                    "description": "request field (dotted path, e.g. events.3.ts) → what is wrong with it",
                },
            },
        }
    },
}
_ERROR_RESPONSES = {
    "400": "Malformed request",
    "401": "Missing or invalid credentials",
    "403": "Credentials of another role or tenant",
    "404": "Not found",
    "409": "Conflict with the current state",
    "410": "Gone (e.g. a page token older than the pages a session keeps)",
    "413": "Body too large",
    "422": "Invalid fields",
    "429": "Rate limited",
    "503": "A dependency is unavailable",
}


def _schema_of(kind: Any, models: list[Any]) -> dict[str, Any]:
    """A $ref (or inline schema) for `kind`, remembering it for the components."""
    models.append(kind)
    (schema,), _ = msgspec.json.schema_components([kind], ref_template=REF)
    return schema


_SCHEMES = {
    "viewer": ("viewerToken", "a viewer token: the viewer id signed by the platform's login"),
    "merchant": ("merchantKey", "a merchant key (shown once by POST /v1/ops/merchants)"),
    "operator": ("operatorKey", "an operator key (`roomfeed keys create --role operator`, then the API)"),
    "order_system": (
        "orderSystemKey",
        "an order-system key (one merchant's; POST /v1/ops/merchants/{id}/order-keys)",
    ),
}


def security_schemes() -> dict[str, Any]:
    """One bearer scheme per kind of caller, so each operation says whose credentials it takes."""
    return {
        name: {"type": "http", "scheme": "bearer", "description": text} for name, text in _SCHEMES.values()
    }


def _typed(op: Operation, models: list[Any]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "operationId": op.operation_id,
        "summary": op.summary,
        "tags": [op.tag],
    }
    description = op.description
    if op.roles:
        who = " or ".join(_SCHEMES[role][1].split(" (")[0] for role in op.roles)
        description = f"{description}\n\nCredentials: {who}." if description else f"Credentials: {who}."
    if description:
        out["description"] = description
    parameters: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, "schema": _schema_of(kind, models)}
        for name, kind in op.path_params.items()
    ]
    if op.query is not None:
        info = msgspec.inspect.type_info(op.query)
        assert isinstance(info, msgspec.inspect.StructType)
        (query_schema,), components = msgspec.json.schema_components([op.query], ref_template=REF)
        resolved = components[op.query.__name__] if "$ref" in query_schema else query_schema
        for f in info.fields:
            prop = dict(resolved["properties"][f.encode_name])
            options = prop.get("anyOf", [])
            if len(options) == 2 and {"type": "null"} in options:  # optional: absent, never null
                prop = {
                    **next(o for o in options if o != {"type": "null"}),
                    **{k: v for k, v in prop.items() if k not in ("anyOf", "default")},
                }
            param: dict[str, Any] = {"name": f.encode_name, "in": "query", "required": f.required}
            if "description" in prop:
                param["description"] = prop.pop("description")
            param["schema"] = prop
            parameters.append(param)
    parameters += op.extra.get("parameters", [])
    if parameters:
        out["parameters"] = parameters
    if op.body is not None:
        media: dict[str, Any] = {"schema": _schema_of(op.body, models)}
        if op.example is not None:
            media["example"] = op.example
        out["requestBody"] = {"required": op.body_required, "content": {"application/json": media}}
        if not op.body_required:
            out["requestBody"]["description"] = "optional: no body is the defaults"
    success: dict[str, Any] = {"description": op.summary}
    if op.response is not None:
        if op.media_type == "application/json":
            schema = _schema_of(op.response, models)
        else:
            schema = op.response if isinstance(op.response, dict) else {"type": "string"}
        success["content"] = {op.media_type: {"schema": schema}}
    headers = dict(op.extra.get("headers", {}))
    if op.status == 201:
        headers["Location"] = {
            "description": "where the created resource is read",
            "schema": {"type": "string"},
        }
    if headers:
        success["headers"] = headers
    out["responses"] = {str(op.status): success}
    for status, when in op.extra.get("others", {}).items():
        out["responses"][str(status)] = {
            **{k: v for k, v in success.items() if k != "headers"},
            "description": when,
        }
    out["security"] = [{_SCHEMES[role][0]: []} for role in op.roles]
    return out


def _tidy(node: Any) -> Any:
    """What msgspec's JSON Schema leaves implicit, made explicit for every client generator: an enum
    says its type."""
    if isinstance(node, list):
        return [_tidy(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: _tidy(v) for k, v in node.items()}
    enum = out.get("enum")
    if isinstance(enum, list) and "type" not in out and enum:
        kinds = {type(v) for v in enum}
        if kinds == {str}:
            out["type"] = "string"
        elif kinds <= {int}:
            out["type"] = "integer"
    return out


def build_schema(routes: list[BaseRoute], version: str) -> dict[str, Any]:
    """The document, from the typed operations among `routes` (a route left out of the document says
    so: `include_in_schema=False`; any other must be a typed operation)."""
    paths: dict[str, dict[str, Any]] = {}
    models: list[Any] = []
    for route in routes:
        if not isinstance(route, Route) or not route.include_in_schema:
            continue
        if not isinstance(route, TypedRoute):
            raise TypeError(
                f"{route.path}: not a typed operation (roomfeed.operations.operation); "
                "the document describes only those"
            )
        op = route.operation
        paths.setdefault(op.path, {})[op.method] = _typed(op, models)
    _, components = msgspec.json.schema_components(models, ref_template=REF) if models else ((), {})
    components = _tidy({**components, "Error": ERROR_SCHEMA})
    error_ref = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    for path_item in paths.values():
        for operation in path_item.values():
            responses = operation.setdefault("responses", {})
            for status, text in _ERROR_RESPONSES.items():
                responses.setdefault(status, {"description": text, "content": error_ref})
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "roomfeed",
            "version": version,
            "description": "The live-shopping swipe feed: viewers, merchants and operators. "
            "See docs/api.md for auth, errors, pagination, idempotency and the feed's retry contract.",
        },
        "paths": _tidy(paths),
        "components": {"schemas": components, "securitySchemes": security_schemes()},
    }

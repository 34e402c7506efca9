"""The OpenAPI 3.1 document, built from the routes themselves.

A typed route (`roomfeed.operations.operation`) describes itself: summary and description from its
docstring, `operationId` from its function, its domain's tag, path and query parameters, request
and response schemas from its msgspec models (`msgspec.json.schema_components`, as named components).
A route not converted yet is read from its docstring's YAML (after `---`) as before, with what that
YAML cannot be trusted to carry filled in from the route: its path parameters, an `operationId`,
a summary, string status keys. Every operation gets the one error shape for its error statuses and
the bearer security scheme (unless public).
"""

from __future__ import annotations

import inspect
import re
from typing import Any

import msgspec
from starlette.routing import BaseRoute, Route
from starlette.schemas import SchemaGenerator

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
_PATH_PARAM = re.compile(r"{([^}:]+)(?::[^}]+)?}")


def _schema_of(kind: Any, models: list[Any]) -> dict[str, Any]:
    """A $ref (or inline schema) for `kind`, remembering it for the components."""
    models.append(kind)
    (schema,), _ = msgspec.json.schema_components([kind], ref_template=REF)
    return schema


_SCHEMES = {
    "viewer": ("viewerToken", "a viewer token: the viewer id signed by the platform's login"),
    "merchant": ("merchantKey", "a merchant key (shown once by POST /v1/ops/merchants)"),
    "operator": ("operatorKey", "an operator key (`roomfeed keys create --role operator`, then the API)"),
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


def _as_31(node: Any) -> Any:
    """OpenAPI 3.0 idioms of docstring YAML in 3.1 (JSON Schema 2020-12) terms: a boolean
    `exclusiveMinimum`/`exclusiveMaximum` becomes the bound itself."""
    if isinstance(node, list):
        return [_as_31(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: _as_31(v) for k, v in node.items()}
    for exclusive, bound in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if out.get(exclusive) is True and bound in out:
            out[exclusive] = out.pop(bound)
        elif out.get(exclusive) is False:
            out.pop(exclusive)
    return out


def _legacy(route: Route, operation: dict[str, Any]) -> dict[str, Any]:
    """A docstring operation, with what its YAML may lack filled in from the route."""
    names = _PATH_PARAM.findall(route.path)
    declared = {p.get("name") for p in operation.get("parameters", []) if p.get("in") == "path"}
    params = [
        {"name": n, "in": "path", "required": True, "schema": {"type": "string"}}
        for n in names
        if n not in declared
    ]
    if params:
        operation["parameters"] = [*params, *operation.get("parameters", [])]
    responses: dict[str, Any] = {}
    for status, response in operation.get("responses", {}).items():
        if not isinstance(response, dict) or set(response) - {"description", "content", "headers"}:
            # YAML that parsed wrong ({description: a, b} makes a key `b`): keep what was meant.
            text = ", ".join(
                str(k if v is None else v) for k, v in (response or {}).items() if k != "content"
            )
            response = {"description": text or "see description"}
        responses.setdefault(str(status), response)
    operation["responses"] = responses
    if "requestBody" in operation:
        operation["requestBody"] = _as_31(operation["requestBody"])
    operation.setdefault("operationId", route.name)
    doc = inspect.getdoc(route.endpoint) or ""
    summary = doc.split("---")[0].strip().split("\n")[0].rstrip(".")
    if summary:
        operation.setdefault("summary", summary)
    return operation


def build_schema(
    routes: list[BaseRoute], version: str, schemas: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The document; `schemas` are named components docstrings `$ref` (written once by the domain
    that owns them, e.g. the ranking config's fields from feed.config.RANGES)."""
    generator = SchemaGenerator({})
    paths: dict[str, dict[str, Any]] = {}
    models: list[Any] = []
    for route in routes:
        if not isinstance(route, Route) or not route.include_in_schema:
            continue
        if isinstance(route, TypedRoute):
            op = route.operation
            paths.setdefault(op.path, {})[op.method] = _typed(op, models)
            continue
        for endpoint in generator.get_endpoints([route]):
            parsed = generator.parse_docstring(endpoint.func)
            paths.setdefault(endpoint.path, {})[endpoint.http_method] = _legacy(route, dict(parsed or {}))
    types = [m for m in models if not isinstance(m, dict)]
    _, components = msgspec.json.schema_components(types, ref_template=REF) if types else ((), {})
    components = _tidy({**_as_31(schemas or {}), **components, "Error": ERROR_SCHEMA})
    error_ref = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    seen_ids: set[str] = set()
    for path_item in paths.values():
        for operation in path_item.values():
            if operation["operationId"] in seen_ids:  # Starlette names can repeat across domains
                operation["operationId"] = f"{operation['operationId']}_{len(seen_ids)}"
            seen_ids.add(operation["operationId"])
            responses = operation.setdefault("responses", {})
            for status, text in _ERROR_RESPONSES.items():
                responses.setdefault(status, {"description": text, "content": error_ref})
            operation.setdefault("security", [{"bearer": []}])
    paths = _tidy(paths)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "roomfeed",
            "version": version,
            "description": "The live-shopping swipe feed: viewers, merchants and operators. "
            "See docs/api.md for auth, errors, pagination, idempotency and the feed's retry contract.",
        },
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}, **security_schemes()},
        },
    }


def render_docs(schema: dict[str, Any]) -> str:
    import html

    rows = []
    for path, item in sorted(schema.get("paths", {}).items()):
        for method, operation in item.items():
            summary = html.escape(str(operation.get("summary", operation.get("description", ""))))
            rows.append(
                f"<tr><td class=m>{method.upper()}</td><td><code>{html.escape(path)}</code></td><td>{summary}</td></tr>"
            )
    return (
        "<!doctype html><html><head><meta charset=utf-8><title>roomfeed API</title>"
        "<style>body{font:14px system-ui,sans-serif;margin:2em;max-width:1100px}"
        "td{padding:4px 10px;border-bottom:1px solid #eee}.m{font-weight:600}</style></head><body>"
        "<h1>roomfeed API</h1><p>Machine-readable: <a href=/openapi.json>/openapi.json</a>. "
        'Errors: <code>{"error": {"code", "message", "fields"}}</code>. '
        "Credentials: <code>Authorization: Bearer &lt;merchant or operator key | viewer token&gt;</code>.</p>"
        f"<table>{''.join(rows)}</table></body></html>"
    )

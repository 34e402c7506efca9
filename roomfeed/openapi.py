"""The OpenAPI document, built from the routes' docstrings (YAML after `---`), and the /docs page.

Every operation gets the shared error responses and the bearer security scheme, so the document
describes the one error shape without each handler repeating it. The /docs page is rendered on
the server from the same document: no assets are fetched from the internet.
"""

from __future__ import annotations

import html
from typing import Any

from starlette.routing import BaseRoute
from starlette.schemas import SchemaGenerator

ERROR_SCHEMA = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message", "fields"],
            "properties": {
                "code": {"type": "string"},
                "message": {"type": "string"},
                "fields": {"type": "object", "additionalProperties": {"type": "string"}},
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
    "413": "Body too large",
    "422": "Invalid fields",
    "429": "Rate limited",
    "503": "A dependency is unavailable",
}


def build_schema(
    routes: list[BaseRoute], version: str, schemas: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The document; `schemas` are named components the routes' docstrings `$ref` (written once by
    the domain that owns them, e.g. the ranking config's fields from feed.config.RANGES)."""
    generator = SchemaGenerator(
        {"openapi": "3.0.3", "info": {"title": "roomfeed", "version": version}, "components": {}}
    )
    schema = generator.get_schema(routes)
    components = schema.setdefault("components", {})
    components.setdefault("schemas", {}).update({**(schemas or {}), "Error": ERROR_SCHEMA})
    components["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
    error_ref = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    for path_item in schema.get("paths", {}).values():
        for operation in path_item.values():
            responses = operation.setdefault("responses", {})
            for status, text in _ERROR_RESPONSES.items():
                responses.setdefault(status, {"description": text, "content": error_ref})
            operation.setdefault("security", [{"bearer": []}])
    return schema


def render_docs(schema: dict[str, Any]) -> str:
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

"""The OpenAPI document describes every request body: each POST/PUT/PATCH operation has a JSON
schema (or is listed here as body-less), each documented example fits its schema, the schema's
`required` list is exactly what the handler names when the body is empty, and the ranking-config
and alliance-terms schemas list the same fields and ranges the domain code validates.

So schemathesis (test_fuzz_openapi.py) can send schema-valid bodies, and clients can trust the
document as the contract of what is accepted."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from typing import Any

import httpx
import jsonschema_rs
import pytest

from alliance.alliances import Terms
from feed.config import _INTEGER_FIELDS, RANGES
from roomfeed.validation import pattern_reasons
from rooms.models import URL
from tests.app_fixtures import bearer
from tests.hostile.conftest import Tenant
from tests.hostile.test_authorization_matrix import COLUMNS, MATRIX

BODY_METHODS = ("post", "put", "patch")
# Operations that read no body at all (the path names everything they act on).
BODY_LESS = {
    "POST /v1/alliances/{alliance_id}/join",
    "POST /v1/bookings/{booking_id}/cancel",
    "POST /v1/bookings/{booking_id}/no-show",
    "POST /v1/ops/experiments/{experiment_id}/stop",
    "POST /v1/ops/merchants/{merchant_id}/order-keys",
    "POST /v1/ops/models/rollback",
    "POST /v1/ops/models/{version}/promote",
}


@pytest.fixture(scope="module")
async def document(app_client: httpx.AsyncClient) -> dict[str, Any]:
    r = await app_client.get("/openapi.json")
    assert r.status_code == 200, r.text
    doc: dict[str, Any] = r.json()
    return doc


def _body_operations(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """ "METHOD /path" → operation, for every operation that may carry a body."""
    return {
        f"{method.upper()} {path}": operation
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if method in BODY_METHODS
    }


def _json_body(operation: dict[str, Any]) -> dict[str, Any]:
    media: dict[str, Any] = operation["requestBody"]["content"]["application/json"]
    return media


def _role(label: str) -> str:
    """The credential the authorization matrix says this route succeeds with."""
    method, path = label.split(" ", 1)
    for key, row in MATRIX.items():
        m, p = key.split(" ", 1)
        if m == method and p.replace(":str}", "}") == path:
            for column in ("merchant", "operator", "viewer"):
                want = row[2][COLUMNS.index(column)]
                codes = want if isinstance(want, frozenset) else {want}
                if any(200 <= c < 300 for c in codes):
                    return column
    raise AssertionError(f"{label} has no row in the authorization matrix")


def test_every_post_and_put_operation_documents_its_body_with_a_schema(document: dict[str, Any]) -> None:
    operations = _body_operations(document)
    missing = []
    for label, operation in sorted(operations.items()):
        if label in BODY_LESS:
            continue
        body = operation.get("requestBody")
        schema = (body or {}).get("content", {}).get("application/json", {}).get("schema")
        if isinstance(schema, dict):
            schema = _resolved(document, schema)
        if (
            not isinstance(body, dict)
            or "required" not in body
            or not isinstance(schema, dict)
            or "type" not in schema
        ):
            missing.append(label)
    assert not missing, (
        "POST/PUT operations without requestBody {required, content: {application/json: {schema: {type ...}}}}:\n"
        + "\n".join(missing)
    )


def test_body_less_operations_exist_and_document_no_body(document: dict[str, Any]) -> None:
    operations = _body_operations(document)
    stale = sorted(BODY_LESS - operations.keys())
    assert not stale, f"listed as body-less but not in /openapi.json: {stale}"
    with_body = sorted(label for label in BODY_LESS if "requestBody" in operations[label])
    assert not with_body, f"listed as body-less but documenting a body: {with_body}"


def test_object_schemas_give_every_property_a_type(document: dict[str, Any]) -> None:
    untyped: list[str] = []

    def walk(schema: Any, at: str) -> None:
        if not isinstance(schema, dict):
            return
        schema = _resolved(document, schema)
        if "type" not in schema and "oneOf" not in schema and "anyOf" not in schema:
            untyped.append(at)
        for name, sub in schema.get("properties", {}).items():
            walk(sub, f"{at}.{name}")
        if "items" in schema:
            walk(schema["items"], f"{at}[]")

    for label, operation in _body_operations(document).items():
        if "requestBody" in operation:
            walk(_json_body(operation)["schema"], label)
    assert not untyped, f"schemas without a type: {untyped}"


def test_every_documented_example_fits_its_schema(document: dict[str, Any]) -> None:
    problems = []
    for label, operation in sorted(_body_operations(document).items()):
        if "requestBody" not in operation:
            continue
        media = _json_body(operation)
        assert "example" in media, f"{label} documents no example body"
        # OpenAPI 3.1 schemas are JSON Schema 2020-12.
        # The document's components ride along, so `$ref`s to them resolve.
        validator = jsonschema_rs.Draft202012Validator(
            {**media["schema"], "components": document["components"]}
        )
        problems += [f"{label}: {e.message}" for e in validator.iter_errors(media["example"])]
    assert not problems, "\n".join(problems)


async def test_an_empty_body_is_refused_naming_exactly_the_schemas_required_fields(
    document: dict[str, Any],
    app_client: httpx.AsyncClient,
    merchant: Tenant,
    operator_key: str,
    viewer_token: Callable[[str], str],
) -> None:
    headers = {
        "merchant": merchant.headers,
        "operator": bearer(operator_key),
        "viewer": bearer(viewer_token("openapi_bodies_viewer")),
    }
    checked, mismatches = 0, []
    for label, operation in sorted(_body_operations(document).items()):
        if "requestBody" not in operation:
            continue
        schema = _resolved(document, _json_body(operation)["schema"])
        if schema.get("type") != "object" or not schema.get("required"):
            continue
        method, path = label.split(" ", 1)
        url = re.sub(r"\{[^}]+\}", "probe_0", path)  # a well-formed id: fields are checked before lookups
        r = await app_client.request(method, url, json={}, headers=headers[_role(label)])
        checked += 1
        named = set(r.json().get("error", {}).get("fields", {})) if r.status_code == 422 else set()
        if r.status_code != 422 or named != set(schema["required"]):
            mismatches.append(
                f"{label}: schema requires {sorted(schema['required'])}, "
                f"handler answered {r.status_code} naming {sorted(named)}: {r.text[:200]}"
            )
    assert checked >= 15, f"only {checked} operations have required body fields"
    assert not mismatches, "\n".join(mismatches)


def _resolved(document: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    """`node`, or the component it `$ref`s."""
    ref = node.get("$ref")
    return document["components"]["schemas"][ref.rsplit("/", 1)[1]] if ref else node


def _config_properties(document: dict[str, Any]) -> dict[str, dict[str, dict[str, Any]]]:
    put = _resolved(document, _json_body(document["paths"]["/v1/ops/ranking-config"]["put"])["schema"])
    experiment = _resolved(document, _json_body(document["paths"]["/v1/ops/experiments"]["post"])["schema"])
    variant = _resolved(document, experiment["properties"]["variants"]["items"])["properties"]["config"]
    variant = next((o for o in variant.get("anyOf", [variant]) if o != {"type": "null"}), variant)
    return {
        "PUT /v1/ops/ranking-config config": _resolved(document, put["properties"]["config"])["properties"],
        "POST /v1/ops/experiments variants[].config": _resolved(document, variant)["properties"],
    }


def test_ranking_config_schemas_list_every_field_with_its_range(document: dict[str, Any]) -> None:
    for where, properties in _config_properties(document).items():
        assert set(properties) == set(RANGES), f"{where}: fields differ from feed.config.RANGES"
        for name, (low, high) in RANGES.items():
            want = {
                "type": "integer" if name in _INTEGER_FIELDS else "number",
                "minimum": low,
                "maximum": high,
            }
            assert properties[name] == want, f"{where}.{name}: {properties[name]} != {want}"


def test_alliance_terms_schema_lists_every_term_with_its_default(document: dict[str, Any]) -> None:
    schema = _resolved(document, _json_body(document["paths"]["/v1/alliances"]["post"])["schema"])
    terms_ref = next(o for o in schema["properties"]["terms"]["anyOf"] if o != {"type": "null"})
    terms = _resolved(document, terms_ref)["properties"]
    defaults = {f.name: f.default for f in dataclasses.fields(Terms)}
    assert set(terms) == set(defaults)
    for name, default in defaults.items():
        assert terms[name]["default"] == default, name
        assert terms[name]["type"] == ("integer" if isinstance(default, int) else "number"), name


def test_documented_patterns_are_the_handlers_own(document: dict[str, Any]) -> None:
    """Every `pattern` in a body schema is one a typed model checks (ids, URLs, currencies, not blank),
    registered with the reason a bad value is told (roomfeed.validation.describe_pattern)."""
    code = set(pattern_reasons())
    found: list[str] = []

    def walk(schema: Any) -> None:
        if isinstance(schema, dict):
            if "pattern" in schema:
                found.append(schema["pattern"])
            for value in schema.values():
                walk(value)
        elif isinstance(schema, list):
            for value in schema:
                walk(value)

    for operation in _body_operations(document).values():
        if "requestBody" in operation:
            body = _json_body(operation)["schema"]
            walk(_resolved(document, body) if "$ref" in body else body)
    walk(document["components"]["schemas"])
    assert URL.pattern in found and len(found) > 20
    assert set(found) <= code, f"patterns not used by any handler: {set(found) - code}"
    assert URL.match("rtmps://stream.example.com/s/live?key=s")  # a URL full of s


# --- what schema-valid fuzzing found: each answered 500 before -------------------------------


async def test_text_with_a_nul_character_is_refused_naming_the_field(
    app_client: httpx.AsyncClient, merchant: Tenant, operator_key: str
) -> None:
    cases = [
        ("/v1/stores", {"name": "flag\x00ship"}, merchant.headers, "name"),
        (
            "/v1/rooms",
            {"title": "nul tags", "category": "beauty", "tags": ["ok", "a\x00b"]},
            merchant.headers,
            "tags",
        ),
        (
            "/v1/ops/merchants",
            {"name": "nul shop", "description": "\x00"},
            bearer(operator_key),
            "description",
        ),
        (
            "/v1/ops/experiments",
            {"name": "nul\x00exp", "variants": [{"name": "a", "weight": 0.5}, {"name": "b", "weight": 0.5}]},
            bearer(operator_key),
            "name",
        ),
    ]
    for path, body, headers, field in cases:
        r = await app_client.post(path, json=body, headers=headers)
        assert r.status_code == 422, f"{path}: {r.status_code} {r.text}"
        assert r.json()["error"]["code"] == "validation_failed"
        named = r.json()["error"]["fields"]
        assert any(f == field or f.startswith(f"{field}.") for f in named), f"{path}: {r.text}"


async def test_a_price_below_one_cent_is_refused_not_rounded_to_zero(
    app_client: httpx.AsyncClient, merchant: Tenant
) -> None:
    r = await app_client.post(
        "/v1/products", json={"title": "dust", "price": 0.004, "currency": "CNY"}, headers=merchant.headers
    )
    assert r.status_code == 422, r.text
    assert "price" in r.json()["error"]["fields"]
    r = await app_client.post(
        f"/v1/rooms/{merchant.objects['room_id']}/deals",
        headers=merchant.headers,
        json={
            "product_id": merchant.objects["product_id"],
            "price": 5e-324,
            "quantity": 1,
            "ends_at": 3_000_000_000,
        },
    )
    assert r.status_code == 422, r.text
    assert "price" in r.json()["error"]["fields"]
    r = await app_client.post(
        "/v1/products", json={"title": "one cent", "price": 0.01, "currency": "CNY"}, headers=merchant.headers
    )
    assert r.status_code == 201, r.text


async def test_rollback_to_a_version_past_the_integer_column_is_refused(
    app_client: httpx.AsyncClient, operator_key: str
) -> None:
    r = await app_client.post(
        "/v1/ops/ranking-config/rollback", json={"version": 2**31}, headers=bearer(operator_key)
    )
    assert r.status_code == 422, r.text
    assert "version" in r.json()["error"]["fields"]
    r = await app_client.post(
        "/v1/ops/ranking-config/rollback", json={"version": 2**31 - 1}, headers=bearer(operator_key)
    )
    assert r.status_code == 404, r.text

"""The served OpenAPI document, checked by a real tool (openapi-spec-validator), and the typed
operations' contract: every bad field named, Location on a 201, the page declared."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest
from openapi_spec_validator import OpenAPIV31SpecValidator

from roomfeed.assembly import create_app
from roomfeed.settings import Settings


@pytest.fixture(scope="module")
async def document() -> dict[str, Any]:
    return create_app(Settings.from_env()).openapi


def _operations(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        f"{method.upper()} {path}": operation
        for path, item in document["paths"].items()
        for method, operation in item.items()
    }


def test_the_document_is_valid_openapi_3_1(document: dict[str, Any]) -> None:
    errors = [e.message for e in OpenAPIV31SpecValidator(document).iter_errors()]
    assert document["openapi"] == "3.1.0"
    assert errors == []


def test_every_operation_has_a_summary_a_unique_operation_id_and_a_tag(document: dict[str, Any]) -> None:
    operations = _operations(document)
    assert len(operations) >= 60
    assert all(op.get("summary") and op.get("operationId") for op in operations.values())
    ids = [op["operationId"] for op in operations.values()]
    assert len(ids) == len(set(ids))


def test_the_feed_page_declares_its_page_token_and_rooms(document: dict[str, Any]) -> None:
    op = _operations(document)["GET /v1/sessions/{session_id}/feed"]
    assert {p["name"] for p in op["parameters"]} == {"session_id", "count", "after"}
    page = document["components"]["schemas"]["FeedPage"]
    assert {"page_token", "rooms", "session_id"} <= set(page["required"])
    assert "score" not in document["components"]["schemas"]["FeedRoom"]["properties"]


async def test_a_typed_body_names_every_bad_field_in_the_one_error_shape(
    app_client: httpx.AsyncClient, viewer_token: Callable[[str], str]
) -> None:
    headers = {"Authorization": f"Bearer {viewer_token('v-typed')}"}
    r = await app_client.post(
        "/v1/sessions", json={"entry": {"room_id": 5}, "count": 99, "colour": "red"}, headers=headers
    )
    assert r.status_code == 422
    error = r.json()["error"]
    assert error["code"] == "validation_failed"
    assert set(error["fields"]) == {"viewer_id", "entry.room_id", "count", "colour"}
    r = await app_client.post("/v1/sessions", content=b"{not json", headers=headers)
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_json"
    r = await app_client.get("/v1/sessions/ses_0000000000000000/feed?count=abc", headers=headers)
    assert r.status_code == 422 and set(r.json()["error"]["fields"]) == {"count"}


async def test_a_created_session_says_where_its_feed_is(
    app_client: httpx.AsyncClient, viewer_token: Callable[[str], str]
) -> None:
    headers = {"Authorization": f"Bearer {viewer_token('v-located')}"}
    r = await app_client.post("/v1/sessions", json={"viewer_id": "v-located"}, headers=headers)
    assert r.status_code == 201, r.text
    assert r.headers["location"] == f"/v1/sessions/{r.json()['session_id']}/feed"


async def test_a_required_body_of_only_whitespace_is_a_400_not_a_500(
    app_client: httpx.AsyncClient, viewer_token: Callable[[str], str]
) -> None:
    """Found by the fuzz test: POST /v1/rooms with the body "\\r" reached the handler without a body."""
    headers = {"Authorization": f"Bearer {viewer_token('v-blank')}", "Content-Type": "application/json"}
    for blank in (b"\r", b" \n\t "):
        r = await app_client.post("/v1/sessions", content=blank, headers=headers)
        assert r.status_code == 400, r.text
        assert r.json()["error"]["code"] == "invalid_json" and set(r.json()["error"]["fields"]) == {"body"}


# Lists answered whole, and why: bounded by what holds them, not growing with the platform.
BOUNDED_LISTS = {
    "GET /v1/rooms/{room_id}": "a room's products and deals",
    "GET /v1/rooms/{room_id}/deals": "a room's deals (a broadcast holds a handful)",
    "GET /v1/rooms/{room_id}/slots": "a room's consult slots",
    "GET /v1/alliances/{alliance_id}": "an alliance's members",
    "GET /v1/merchants/{merchant_id}/ledger": "a merchant's stores and staff in its statement",
    "GET /v1/merchants/{merchant_id}/consults": "a report: counts, and the merchant's recent bookings",
    "GET /v1/ops/alliances": "the operators' overview (one line per alliance, capped by ?limit)",
    "GET /v1/ops/experiments/{experiment_id}": "an experiment's variants",
    "GET /v1/ops/metrics": "a report",
    "GET /v1/ops/metrics/history": "a time series over ?hours",
    "GET /v1/ops/metrics/alliance-history": "a time series over ?days",
    "GET /v1/viewers/me/blocks": "the merchants one viewer blocked",
    "GET /v1/console/me": "who is signed in",
    "GET /v1/sessions/{session_id}/feed": "the feed page: its own token (page_token / after)",
    "GET /readyz": "the dependencies' checks",
    "GET /v1/orders/{order_id}": "an order's entries (a sale, its refunds, a cancel)",
    "GET /v1/ops/viewers/{viewer_id}/feed": "one page a viewer would get (?count, at most 50)",
}


def _schema(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = document["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return schema


def test_every_list_that_can_grow_pages_with_one_cursor(document: dict[str, Any]) -> None:
    """`?limit=&after=` → `{items, next}` on every GET whose answer holds a list, unless the list is
    bounded by what holds it (BOUNDED_LISTS says why)."""
    unpaged, listed = [], []
    for name, op in _operations(document).items():
        if not name.startswith("GET ") or name in BOUNDED_LISTS:
            continue
        content = op["responses"].get("200", {}).get("content", {}).get("application/json")
        if content is None:
            continue
        answer = _schema(document, content["schema"])
        arrays = [
            k for k, v in answer.get("properties", {}).items() if _schema(document, v).get("type") == "array"
        ]
        if not arrays:
            continue
        listed.append(name)
        params = {p["name"] for p in op.get("parameters", []) if p["in"] == "query"}
        if not ({"limit", "after"} <= params and "next" in answer["properties"]):
            unpaged.append(name)
    assert unpaged == []
    assert len(listed) >= 12  # stores, staff, products, rooms ×2, codes, orders, replays, models, ...
    assert set(BOUNDED_LISTS) <= set(_operations(document))  # no stale exemption

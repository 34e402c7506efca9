"""The served OpenAPI document, checked by a real tool (openapi-spec-validator), and the typed
operations' contract: every bad field named, Location on a 201, the page declared."""

from __future__ import annotations

import time
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


async def test_every_create_says_where_the_created_thing_is_read(
    app_client: httpx.AsyncClient, operator_key: str, viewer_token: Callable[[str], str]
) -> None:
    """A 201's Location is a GET that answers the thing just created, for every create route of the
    rooms, alliance and feed domains (roomfeed.operations.created fills the path from the answer)."""
    operator = {"Authorization": f"Bearer {operator_key}"}
    viewer = {"Authorization": f"Bearer {viewer_token('v-locate')}"}

    async def located(r: httpx.Response, headers: dict[str, str], ident: str) -> dict[str, Any]:
        assert r.status_code == 201, r.text
        read = await app_client.get(r.headers["location"], headers=headers)
        assert read.status_code == 200, (r.headers["location"], read.text)
        body: dict[str, Any] = read.json()
        assert body.get(ident, r.json()[ident]) == r.json()[ident], (r.headers["location"], body)
        return body

    r = await app_client.post(
        "/v1/ops/merchants", json={"name": "Locate", "category": " Tea "}, headers=operator
    )
    merchant = await located(r, operator, "merchant_id")
    assert merchant == r.json()["merchant"] and merchant["category"] == "tea"
    shop = {"Authorization": f"Bearer {r.json()['key']}"}
    r = await app_client.post("/v1/stores", json={"name": "Jing'an"}, headers=shop)
    assert await located(r, shop, "store_id") == r.json()
    store_id = r.json()["store_id"]
    r = await app_client.post(f"/v1/stores/{store_id}/staff", json={"name": "Li"}, headers=shop)
    assert await located(r, shop, "staff_id") == r.json()
    product = {"title": "Oolong", "price": 30, "currency": "CNY", "category": " Tea "}
    r = await app_client.post("/v1/products", json=product, headers=shop)
    assert await located(r, shop, "product_id") == r.json() and r.json()["category"] == "tea"
    product_id = r.json()["product_id"]
    room = {"title": "Tea live", "category": "Tea", "host": "h", "format": "one_to_one"}
    r = await app_client.post(
        "/v1/rooms", json={**room, "stream_url": "https://cdn.example/1.m3u8"}, headers=shop
    )
    room_id = (await located(r, shop, "room_id"))["room_id"]
    assert (await app_client.post(f"/v1/rooms/{room_id}/live", headers=shop)).status_code == 200
    deal = {"product_id": product_id, "price": 20, "quantity": 5, "ends_at": time.time() + 600}
    r = await app_client.post(f"/v1/rooms/{room_id}/deals", json=deal, headers=shop)
    await located(r, shop, "deal_id")
    slot = {"starts_at": time.time() + 3600, "ends_at": time.time() + 5400}
    r = await app_client.post(f"/v1/rooms/{room_id}/slots", json=slot, headers=shop)
    slots = await located(r, shop, "room_id")
    assert [s["slot_id"] for s in slots["slots"]] == [r.json()["slot_id"]]
    r = await app_client.post(
        f"/v1/rooms/{room_id}/bookings", json={"slot_id": r.json()["slot_id"]}, headers=viewer
    )
    await located(r, viewer, "booking_id")
    order = {
        "order_id": "o-locate",
        "product_id": product_id,
        "quantity": 1,
        "unit_price": 30,
        "currency": "CNY",
        "ordered_at": int(time.time() * 1000),
    }
    r = await app_client.post("/v1/orders", json=order, headers=shop)
    await located(r, shop, "order_id")
    r = await app_client.post("/v1/alliances", json={"name": "Tea street"}, headers=shop)
    await located(r, shop, "alliance_id")
    variants = [{"name": "a", "weight": 0.5, "config": {}}, {"name": "b", "weight": 0.5, "config": {}}]
    r = await app_client.post(
        "/v1/ops/experiments", json={"name": "locate", "variants": variants}, headers=operator
    )
    await located(r, operator, "experiment_id")


async def test_a_required_body_of_only_whitespace_is_a_400_not_a_500(
    app_client: httpx.AsyncClient, viewer_token: Callable[[str], str]
) -> None:
    """Found by the fuzz test: POST /v1/rooms with the body "\\r" reached the handler without a body."""
    headers = {"Authorization": f"Bearer {viewer_token('v-blank')}", "Content-Type": "application/json"}
    for blank in (b"\r", b" \n\t "):
        r = await app_client.post("/v1/sessions", content=blank, headers=headers)
        assert r.status_code == 400, r.text
        assert r.json()["error"]["code"] == "invalid_json" and set(r.json()["error"]["fields"]) == {"body"}


async def test_a_path_parameter_that_cannot_name_anything_is_a_404_naming_it(
    app_client: httpx.AsyncClient, viewer_token: Callable[[str], str]
) -> None:
    """The one error shape on a path too: `fields` names the parameter (not a 422: ids cannot be probed)."""
    headers = {"Authorization": f"Bearer {viewer_token('v-path')}"}
    for bad in ("has%20space", "x" * 65, "%C3%A9t%C3%A9"):
        r = await app_client.get(f"/v1/sessions/{bad}/feed", headers=headers)
        assert r.status_code == 404, (bad, r.text)
        assert r.json()["error"]["code"] == "not_found" and r.json()["error"]["fields"] == {
            "session_id": "names nothing"
        }


# Lists answered whole, and why: bounded by what holds them, not growing with the platform.
BOUNDED_LISTS = {
    "GET /v1/rooms/{room_id}": "a room's products and deals",
    "GET /v1/rooms/{room_id}/deals": "a room's deals (a broadcast holds a handful)",
    "GET /v1/rooms/{room_id}/slots": "a room's consult slots",
    "GET /v1/alliances/{alliance_id}": "an alliance's members",
    "GET /v1/merchants/{merchant_id}/ledger": "a merchant's stores and staff in its statement",
    "GET /v1/merchants/{merchant_id}/consults": "a report: counts, and the merchant's recent bookings",
    "GET /v1/merchants/{merchant_id}/alliance-plan": "a report: 20 settle times, one line per alliance and reason",
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
    # The one cursor's former name on the operators' merchants list is declared deprecated.
    assert document["components"]["schemas"]["MerchantList"]["properties"]["next_after"]["deprecated"] is True


# Maps inside an answer whose keys are data, not a contract, and why.
FREE_FORM = {
    "GET /v1/ops/models .models[].params": "a model version's training parameters, as its trainer ran",
    "GET /v1/ops/models .models[].metrics": "a model version's evaluation figures, as the gate measured",
    "POST /v1/ops/models/rollback .params": "the training parameters of the version now serving",
    "POST /v1/ops/models/rollback .metrics": "the evaluation figures of the version now serving",
    "POST /v1/ops/models/{version}/promote .params": "the promoted version's training parameters",
    "POST /v1/ops/models/{version}/promote .metrics": "the promoted version's evaluation figures",
}


def _free_objects(document: dict[str, Any], schema: dict[str, Any], path: str = "") -> list[str]:
    """Where a schema holds an object with no declared properties (a generated client cannot type it)."""
    schema = _schema(document, schema)
    found: list[str] = []
    for alternative in schema.get("anyOf", []) + schema.get("oneOf", []):
        found += _free_objects(document, alternative, path)
    kind = schema.get("type")
    untyped = kind is None and not ({"anyOf", "oneOf", "enum", "const"} & set(schema))
    if kind == "object" or untyped:
        if not schema.get("properties") and schema.get("additionalProperties") in (None, True, {}):
            found.append(path)
        for name, field in schema.get("properties", {}).items():
            found += _free_objects(document, field, f"{path}.{name}")
    if kind == "array":
        found += _free_objects(document, schema.get("items", {}), path + "[]")
    return found


def test_every_json_answer_declares_its_fields(document: dict[str, Any]) -> None:
    """A 2xx JSON answer is a model all the way down: an object without declared fields (as
    GET /v1/merchants/{id}/alliance-plan was) fails, unless FREE_FORM says why its keys are data."""
    free = []
    for name, op in _operations(document).items():
        for status, answer in op["responses"].items():
            content = answer.get("content", {}).get("application/json")
            if status.startswith("2") and content is not None:
                free += [f"{name} {where}" for where in _free_objects(document, content["schema"])]
    assert sorted(set(free) - set(FREE_FORM)) == []
    assert set(FREE_FORM) <= set(free)  # no stale exemption
    plan_answer = _operations(document)["GET /v1/merchants/{merchant_id}/alliance-plan"]["responses"]["200"]
    plan = _schema(document, plan_answer["content"]["application/json"]["schema"])
    assert {"owed", "held_settles", "last_hours", "reasons", "hours_to_deliver_at_recent_pace"} <= set(
        plan["properties"]
    )

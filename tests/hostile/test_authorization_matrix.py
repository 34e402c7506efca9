"""Every route × {no key, viewer, another merchant, the merchant, operator} → the expected status.

The routes come from the app's router itself, so a route added without a row here fails
`test_every_route_has_a_row`. Each row is one request (path filled with *the merchant's* objects,
a valid body) sent with each credential; "another merchant" must get 404 for the merchant's objects
(tenancy: we never reveal that they exist), a wrong role 403, no credential 401.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from starlette.routing import Route

from roomfeed.app import Api
from roomfeed.assembly import Services
from tests.app_fixtures import bearer
from tests.hostile.conftest import Tenant, furnish, new_merchant

Status = int | frozenset[int]
COLUMNS = ("none", "viewer", "other", "merchant", "operator")
PUBLIC = (200, 200, 200, 200, 200)
OPERATOR_ONLY = (401, 403, 403, 403, 200)
VIEWER_ONLY = (401, 200, 403, 403, 403)
MERCHANT_OWN = (401, 403, 404, 200, 403)  # an object of the merchant
MERCHANT_SELF = (401, 403, 200, 200, 403)  # the calling merchant's own collection
MERCHANT_OR_OPS = (401, 403, 404, 200, 200)


def either(*codes: int) -> frozenset[int]:
    return frozenset(codes)


@dataclass
class World:
    merchant: Tenant
    other: Tenant
    third: Tenant
    viewer_id: str
    ids: dict[str, str]


Row = tuple[Callable[[World], str], Callable[[World], Any] | None, tuple[Status, ...]]


def _c(template: str) -> Callable[[World], str]:
    return lambda w: template.format(**w.ids)


def _later(seconds: int) -> int:
    return int(time.time()) + seconds


def _slot(starts_at: int) -> dict[str, int]:
    return {"starts_at": starts_at, "ends_at": starts_at + 1800}


MATRIX: dict[str, Row] = {
    # system
    "GET /healthz": (_c("/healthz"), None, PUBLIC),
    "GET /readyz": (_c("/readyz"), None, PUBLIC),
    "GET /metrics": (_c("/metrics"), None, PUBLIC),
    "GET /openapi.json": (_c("/openapi.json"), None, PUBLIC),
    "GET /docs": (_c("/docs"), None, PUBLIC),
    "GET /docs/init.js": (_c("/docs/init.js"), None, PUBLIC),
    "GET /docs/{name:str}": (_c("/docs/swagger-ui.css"), None, PUBLIC),
    # rooms
    "POST /v1/ops/merchants": (
        _c("/v1/ops/merchants"),
        lambda w: {"name": "matrix shop"},
        (401, 403, 403, 403, 201),
    ),
    "GET /v1/ops/merchants": (_c("/v1/ops/merchants"), None, OPERATOR_ONLY),
    "GET /v1/ops/merchants/{merchant_id}": (_c("/v1/ops/merchants/{merchant_id}"), None, OPERATOR_ONLY),
    "GET /v1/stores/{store_id}": (_c("/v1/stores/{store_id}"), None, MERCHANT_OWN),
    "GET /v1/stores/{store_id}/staff/{staff_id}": (
        _c("/v1/stores/{store_id}/staff/{staff_id}"),
        None,
        MERCHANT_OWN,
    ),
    "GET /v1/products/{product_id}": (_c("/v1/products/{product_id}"), None, MERCHANT_OWN),
    "GET /v1/bookings/{booking_id}": (_c("/v1/bookings/{booking_id}"), None, (401, 200, 404, 200, 403)),
    "GET /v1/replays": (_c("/v1/replays"), None, (401, 200, 200, 200, 200)),
    "GET /v1/ops/viewers/{viewer_id}/feed": (_c("/v1/ops/viewers/mx_someone/feed"), None, OPERATOR_ONLY),
    "POST /v1/stores": (_c("/v1/stores"), lambda w: {"name": "kiosk"}, (401, 403, 201, 201, 403)),
    "GET /v1/stores": (_c("/v1/stores"), None, MERCHANT_SELF),
    "POST /v1/stores/{store_id}/staff": (
        _c("/v1/stores/{store_id}/staff"),
        lambda w: {"name": "li"},
        (401, 403, 404, 201, 403),
    ),
    "GET /v1/stores/{store_id}/staff": (_c("/v1/stores/{store_id}/staff"), None, MERCHANT_OWN),
    "POST /v1/products": (
        _c("/v1/products"),
        lambda w: {"title": "toner", "price": 9.5, "currency": "CNY"},
        (401, 403, 201, 201, 403),
    ),
    "GET /v1/products": (_c("/v1/products"), None, MERCHANT_SELF),
    "POST /v1/rooms": (
        _c("/v1/rooms"),
        lambda w: {"title": "matrix room", "category": "beauty"},
        (401, 403, 201, 201, 403),
    ),
    "GET /v1/rooms": (_c("/v1/rooms"), None, MERCHANT_SELF),
    "GET /v1/rooms/{room_id}": (_c("/v1/rooms/{room_id}"), None, MERCHANT_OWN),
    "POST /v1/rooms/{room_id}/live": (_c("/v1/rooms/{spare_room_id}/live"), None, MERCHANT_OWN),
    "POST /v1/rooms/{room_id}/end": (_c("/v1/rooms/{end_room_id}/end"), None, MERCHANT_OWN),
    "POST /v1/rooms/{room_id}/replay": (
        _c("/v1/rooms/{end_room_id}/replay"),
        lambda w: {"replay_url": "https://vod.example/r.m3u8"},
        MERCHANT_OWN,
    ),
    "POST /v1/rooms/{room_id}/products": (
        _c("/v1/rooms/{room_id}/products"),
        lambda w: {"product_ids": [w.ids["product_id"]]},
        MERCHANT_OWN,
    ),
    "POST /v1/rooms/{room_id}/deals": (
        _c("/v1/rooms/{room_id}/deals"),
        lambda w: {"product_id": w.ids["product_id"], "price": 5.0, "quantity": 3, "ends_at": _later(3600)},
        (401, 403, 404, 201, 403),
    ),
    "GET /v1/rooms/{room_id}/deals": (_c("/v1/rooms/{room_id}/deals"), None, (401, 200, 404, 200, 403)),
    "GET /v1/deals/{deal_id}": (_c("/v1/deals/{deal_id}"), None, MERCHANT_OWN),
    "POST /v1/deals/{deal_id}/claim": (_c("/v1/deals/{deal_id}/claim"), None, (401, 201, 403, 403, 403)),
    "POST /v1/rooms/{room_id}/slots": (
        _c("/v1/rooms/{consult_room_id}/slots"),
        lambda w: _slot(_later(7200 + 3600 * secrets.randbelow(5000))),
        (401, 403, 404, 201, 403),
    ),
    "GET /v1/rooms/{room_id}/slots": (
        _c("/v1/rooms/{consult_room_id}/slots"),
        None,
        (401, 200, 404, 200, 403),
    ),
    "POST /v1/rooms/{room_id}/bookings": (
        _c("/v1/rooms/{consult_room_id}/bookings"),
        lambda w: {"slot_id": w.ids["free_slot_id"]},
        (401, 201, 403, 403, 403),
    ),
    # the viewer column is the viewer who booked; the merchant then cancels a cancelled booking
    "POST /v1/bookings/{booking_id}/cancel": (
        _c("/v1/bookings/{booking_id}/cancel"),
        None,
        (401, 200, 404, either(200, 409), 403),
    ),
    "POST /v1/bookings/{booking_id}/no-show": (
        _c("/v1/bookings/{booking_id}/no-show"),
        None,
        (401, 403, 404, either(200, 409), 403),
    ),
    "GET /v1/merchants/{merchant_id}/rooms": (_c("/v1/merchants/{merchant_id}/rooms"), None, MERCHANT_OR_OPS),
    "GET /v1/merchants/{merchant_id}/consults": (
        _c("/v1/merchants/{merchant_id}/consults"),
        None,
        MERCHANT_OR_OPS,
    ),
    # events
    "POST /v1/events": (_c("/v1/events"), lambda w: [], (401, 202, 403, 403, 403)),
    # ranking
    "GET /v1/ops/models": (_c("/v1/ops/models"), None, OPERATOR_ONLY),
    "POST /v1/ops/models/rollback": (
        _c("/v1/ops/models/rollback"),
        None,
        # 200 for an operator when an earlier test of the session left a model to roll back to
        (401, 403, 403, 403, either(200, 404, 409)),
    ),
    "POST /v1/ops/models/{version}/promote": (
        _c("/v1/ops/models/v-nonexistent/promote"),
        None,
        (401, 403, 403, 403, 404),
    ),
    # alliance
    "POST /v1/alliances": (
        _c("/v1/alliances"),
        lambda w: {"name": "matrix alliance"},
        (401, 403, 201, 201, 403),
    ),
    "GET /v1/alliances/{alliance_id}": (_c("/v1/alliances/{alliance_id}"), None, MERCHANT_OR_OPS),
    "POST /v1/alliances/{alliance_id}/members": (
        _c("/v1/alliances/{alliance_id}/members"),
        lambda w: {"merchant_id": w.third.merchant_id},
        (401, 403, 404, either(200, 201), 403),
    ),
    "POST /v1/alliances/{alliance_id}/join": (
        _c("/v1/alliances/{alliance_id}/join"),
        None,
        (401, 403, 404, either(200, 409), 403),
    ),
    "DELETE /v1/alliances/{alliance_id}/members/{merchant_id}": (
        _c("/v1/alliances/{alliance_id}/members/{third_merchant_id}"),
        None,
        (401, 403, 404, either(200, 204), 403),
    ),
    # another merchant may not mint codes for the merchant's store: the store is a field of the body (422)
    "POST /v1/codes": (_c("/v1/codes"), lambda w: {"store_id": w.ids["store_id"]}, (401, 403, 422, 201, 403)),
    "GET /v1/codes": (_c("/v1/codes"), None, MERCHANT_SELF),
    "GET /v1/codes/{code}.png": (_c("/v1/codes/{code}.png"), None, PUBLIC),
    "GET /c/{code}": (_c("/c/{code}"), None, PUBLIC),
    "GET /v1/merchants/{merchant_id}/ledger": (
        _c("/v1/merchants/{merchant_id}/ledger"),
        None,
        MERCHANT_OR_OPS,
    ),
    "GET /v1/merchants/{merchant_id}/alliance-plan": (
        _c("/v1/merchants/{merchant_id}/alliance-plan"),
        None,
        MERCHANT_OR_OPS,
    ),
    "GET /v1/ops/alliances": (_c("/v1/ops/alliances"), None, OPERATOR_ONLY),
    # verified orders (merchant or order-system keys; another merchant's product is not its product)
    "POST /v1/orders": (
        _c("/v1/orders"),
        lambda w: {
            "order_id": f"mx-{secrets.token_hex(4)}",
            "product_id": w.ids["product_id"],
            "quantity": 1,
            "unit_price": 99.0,
            "currency": "CNY",
            "ordered_at": int(time.time() * 1000),
        },
        (401, 403, 422, 201, 403),
    ),
    "GET /v1/orders": (_c("/v1/orders"), None, MERCHANT_SELF),
    "GET /v1/orders/{order_id}": (_c("/v1/orders/{order_id}"), None, MERCHANT_OWN),
    "POST /v1/orders/{order_id}/refunds": (
        _c("/v1/orders/{order_id}/refunds"),
        lambda w: {"refund_id": f"mx-{secrets.token_hex(4)}", "amount": 1},
        (401, 403, 404, 201, 403),
    ),
    "POST /v1/orders/{order_id}/cancel": (
        _c("/v1/orders/{order_id}/cancel"),
        None,
        (401, 403, 404, 201, 403),
    ),
    "POST /v1/ops/merchants/{merchant_id}/order-keys": (
        _c("/v1/ops/merchants/{merchant_id}/order-keys"),
        None,
        (401, 403, 403, 403, 201),
    ),
    # feed
    "POST /v1/sessions": (
        _c("/v1/sessions"),
        lambda w: {"viewer_id": w.viewer_id, "entry": {}},
        (401, 201, 403, 403, 403),
    ),
    "GET /v1/sessions/{session_id}/feed": (_c("/v1/sessions/{session_id}/feed"), None, VIEWER_ONLY),
    "POST /v1/viewers/me/blocks": (
        _c("/v1/viewers/me/blocks"),
        lambda w: {"merchant_id": w.third.merchant_id},
        (401, 201, 403, 403, 403),
    ),
    "GET /v1/viewers/me/blocks": (_c("/v1/viewers/me/blocks"), None, VIEWER_ONLY),
    "DELETE /v1/viewers/me/blocks/{merchant_id}": (
        _c("/v1/viewers/me/blocks/{third_merchant_id}"),
        None,
        (401, either(200, 204), 403, 403, 403),
    ),
    "GET /v1/ops/ranking-config": (_c("/v1/ops/ranking-config"), None, OPERATOR_ONLY),
    "PUT /v1/ops/ranking-config": (
        _c("/v1/ops/ranking-config"),
        lambda w: {"config": {}, "note": "matrix"},
        OPERATOR_ONLY,
    ),
    "GET /v1/ops/ranking-config/history": (_c("/v1/ops/ranking-config/history"), None, OPERATOR_ONLY),
    "POST /v1/ops/ranking-config/rollback": (
        _c("/v1/ops/ranking-config/rollback"),
        lambda w: {"version": 1},
        (401, 403, 403, 403, either(200, 404)),
    ),
    "POST /v1/ops/experiments": (
        _c("/v1/ops/experiments"),
        lambda w: {
            "name": f"matrix-{secrets.token_hex(2)}",
            "variants": [
                {"name": "a", "weight": 0.5, "config": {}},
                {"name": "b", "weight": 0.5, "config": {"w_popularity": 1.0}},
            ],
        },
        (401, 403, 403, 403, either(201, 409)),
    ),
    "GET /v1/ops/experiments": (_c("/v1/ops/experiments"), None, OPERATOR_ONLY),
    "GET /v1/ops/experiments/{experiment_id}": (
        _c("/v1/ops/experiments/{experiment_id}"),
        None,
        OPERATOR_ONLY,
    ),
    "POST /v1/ops/experiments/{experiment_id}/stop": (
        _c("/v1/ops/experiments/{experiment_id}/stop"),
        None,
        OPERATOR_ONLY,
    ),
    # console
    "DELETE /v1/ops/viewers/{viewer_id}": (_c("/v1/ops/viewers/mx_erased_viewer"), None, OPERATOR_ONLY),
    "GET /v1/ops/metrics": (_c("/v1/ops/metrics"), None, OPERATOR_ONLY),
    "GET /v1/ops/metrics/history": (_c("/v1/ops/metrics/history"), None, OPERATOR_ONLY),
    "GET /v1/ops/metrics/alliance-history": (_c("/v1/ops/metrics/alliance-history"), None, OPERATOR_ONLY),
    "GET /v1/console/me": (_c("/v1/console/me"), None, (401, 403, 200, 200, 200)),
    # an unknown version falls back to the latest `roomfeed evaluate` plot when one was written (console)
    "GET /v1/ops/models/{version}/plot.png": (
        _c("/v1/ops/models/v-nonexistent/plot.png"),
        None,
        (401, 403, 403, 403, either(200, 404)),
    ),
    "GET /console": (_c("/console"), None, PUBLIC),
    "GET /console/": (_c("/console/"), None, PUBLIC),
    "GET /console/static/{name:str}": (_c("/console/static/console.js"), None, PUBLIC),
}


def app_routes(app: Api[Services]) -> set[str]:
    """'METHOD path' for every route the app serves (HEAD is GET's shadow)."""
    found = set()
    for route in app.routes:
        assert isinstance(route, Route), f"{route!r}: the matrix only knows plain routes; add a row kind"
        for method in route.methods or ():
            if method != "HEAD":
                found.add(f"{method} {route.path}")
    return found


def test_every_route_has_a_row(app: Api[Services]) -> None:
    routes = app_routes(app)
    assert not routes - MATRIX.keys(), (
        f"routes without an authorization row: {sorted(routes - MATRIX.keys())}"
    )
    assert not MATRIX.keys() - routes, (
        f"rows for routes that no longer exist: {sorted(MATRIX.keys() - routes)}"
    )


@pytest.fixture(scope="module")
async def world(
    app_client: httpx.AsyncClient, operator_key: str, viewer_token: Callable[[str], str]
) -> World:
    merchant = await furnish(app_client, await new_merchant(app_client, operator_key))
    other = await furnish(app_client, await new_merchant(app_client, operator_key))
    third = await new_merchant(app_client, operator_key)
    viewer_id = f"mx_{secrets.token_hex(4)}"
    viewer = bearer(viewer_token(viewer_id))
    h = merchant.headers

    async def ok(response: httpx.Response) -> Any:
        assert response.status_code in (200, 201), (
            f"{response.request.url}: {response.status_code} {response.text}"
        )
        return response.json()

    ids = dict(merchant.objects, merchant_id=merchant.merchant_id, third_merchant_id=third.merchant_id)
    room = {"title": "r", "category": "beauty", "stream_url": "https://live.example/x.m3u8"}
    ids["spare_room_id"] = (await ok(await app_client.post("/v1/rooms", json=room, headers=h)))["room_id"]
    ids["end_room_id"] = (await ok(await app_client.post("/v1/rooms", json=room, headers=h)))["room_id"]
    await ok(await app_client.post(f"/v1/rooms/{ids['end_room_id']}/live", headers=h))
    consult = await ok(await app_client.post("/v1/rooms", json={**room, "format": "one_to_one"}, headers=h))
    ids["consult_room_id"] = consult["room_id"]
    await ok(await app_client.post(f"/v1/rooms/{consult['room_id']}/live", headers=h))
    slots = []
    for n in range(2):
        body = {"starts_at": _later(3600 * (n + 2)), "ends_at": _later(3600 * (n + 2) + 1800)}
        slots.append(
            await ok(await app_client.post(f"/v1/rooms/{consult['room_id']}/slots", json=body, headers=h))
        )
    booking = await ok(
        await app_client.post(
            f"/v1/rooms/{consult['room_id']}/bookings", json={"slot_id": slots[0]["slot_id"]}, headers=viewer
        )
    )
    ids["booking_id"], ids["free_slot_id"] = booking["booking_id"], slots[1]["slot_id"]
    deal = {"product_id": ids["product_id"], "price": 5.0, "quantity": 50, "ends_at": _later(3600)}
    ids["deal_id"] = (
        await ok(await app_client.post(f"/v1/rooms/{ids['room_id']}/deals", json=deal, headers=h))
    )["deal_id"]
    ids["alliance_id"] = (await ok(await app_client.post("/v1/alliances", json={"name": "a"}, headers=h)))[
        "alliance_id"
    ]
    session = await ok(
        await app_client.post("/v1/sessions", json={"viewer_id": viewer_id, "entry": {}}, headers=viewer)
    )
    ids["session_id"] = session["session_id"]
    experiment = await ok(
        await app_client.post(
            "/v1/ops/experiments",
            headers=bearer(operator_key),
            json={
                "name": f"mx-{secrets.token_hex(2)}",
                "variants": [
                    {"name": "a", "weight": 0.5, "config": {}},
                    {"name": "b", "weight": 0.5, "config": {}},
                ],
            },
        )
    )
    ids["experiment_id"] = experiment.get("experiment_id") or experiment["id"]
    order = {
        "order_id": f"mx-{secrets.token_hex(4)}",
        "product_id": ids["product_id"],
        "quantity": 2,
        "unit_price": 99.0,
        "currency": "CNY",
        "ordered_at": int(time.time() * 1000),
    }
    ids["order_id"] = (await ok(await app_client.post("/v1/orders", json=order, headers=h)))["order_id"]
    return World(merchant=merchant, other=other, third=third, viewer_id=viewer_id, ids=ids)


async def test_every_route_answers_each_principal_as_expected(
    app: Api[Services],
    app_client: httpx.AsyncClient,
    world: World,
    operator_key: str,
    viewer_token: Callable[[str], str],
) -> None:
    credentials: dict[str, dict[str, str]] = {
        "none": {},
        "viewer": bearer(viewer_token(world.viewer_id)),
        "other": world.other.headers,
        "merchant": world.merchant.headers,
        "operator": bearer(operator_key),
    }
    wrong: list[str] = []
    for key in sorted(app_routes(app), key=list(MATRIX).index):
        method = key.split(" ", 1)[0]
        path_of, body_of, expected = MATRIX[key]
        # the owner goes last: its successful requests may change the object (end a room, cancel)
        for column in ("none", "viewer", "operator", "other", "merchant"):
            want = expected[COLUMNS.index(column)]
            body = body_of(world) if body_of is not None else None
            response = await app_client.request(
                method, path_of(world), json=body, headers=credentials[column]
            )
            ok = response.status_code in want if isinstance(want, frozenset) else response.status_code == want
            if not ok:
                wrong.append(
                    f"{key} as {column}: {response.status_code} (expected {want}) {response.text[:160]}"
                )
            if response.status_code >= 400 and response.headers.get("content-type", "").startswith(
                "application/json"
            ):
                error = response.json().get("error", {})
                assert {"code", "message", "fields"} <= error.keys(), f"{key} as {column}: {response.text}"
    await _stop_matrix_experiments(app_client, credentials["operator"])
    assert not wrong, "authorization matrix mismatches:\n" + "\n".join(wrong)


async def _stop_matrix_experiments(client: httpx.AsyncClient, operator: dict[str, str]) -> None:
    """Leave no experiment of ours running: later tests share the session's database."""
    listed = await client.get("/v1/ops/experiments", headers=operator)
    for experiment in listed.json()["experiments"]:
        if experiment["status"] == "running" and experiment["name"].startswith(("matrix-", "mx-")):
            r = await client.post(f"/v1/ops/experiments/{experiment['experiment_id']}/stop", headers=operator)
            assert r.status_code == 200, r.text


async def test_a_viewer_cannot_read_another_viewers_session(
    app_client: httpx.AsyncClient, world: World, viewer_token: Callable[[str], str]
) -> None:
    intruder = bearer(viewer_token(f"mx_other_{secrets.token_hex(3)}"))
    r = await app_client.get(f"/v1/sessions/{world.ids['session_id']}/feed", headers=intruder)
    assert r.status_code == 404, r.text


async def test_a_viewer_cannot_post_events_in_another_viewers_name(
    app_client: httpx.AsyncClient, world: World, viewer_token: Callable[[str], str]
) -> None:
    event = {
        "event_id": f"ev_{secrets.token_hex(6)}",
        "type": "like",
        "viewer_id": "someone_else",
        "session_id": world.ids["session_id"],
        "room_id": world.ids["room_id"],
        "ts": int(time.time() * 1000),
    }
    r = await app_client.post("/v1/events", json=[event], headers=bearer(viewer_token(world.viewer_id)))
    assert r.status_code in (202, 403, 422), r.text
    if r.status_code == 202:
        assert r.json()["accepted"] == 0 and r.json()["rejected"], r.text

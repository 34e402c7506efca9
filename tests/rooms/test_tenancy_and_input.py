"""Tenancy (another merchant's object answers 404 and stays unchanged) and bad input (422 naming the field)."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from tests.app_fixtures import bearer
from tests.rooms.conftest import MerchantAccount
from tests.rooms.test_rooms_routes import ROOM, make_room


@pytest.fixture(scope="module")
async def owned(
    app_client: httpx.AsyncClient, merchant: MerchantAccount, viewer_token: Any
) -> dict[str, str]:
    """One of each object, owned by `merchant`."""
    h = merchant.headers
    store = (await app_client.post("/v1/stores", json={"name": "Own store"}, headers=h)).json()["store_id"]
    product = (
        await app_client.post(
            "/v1/products", json={"title": "Cream", "price": 10, "currency": "CNY"}, headers=h
        )
    ).json()["product_id"]
    scheduled = (await make_room(app_client, merchant, title="Owned scheduled"))["room_id"]
    live = (await make_room(app_client, merchant, title="Owned live"))["room_id"]
    await app_client.post(f"/v1/rooms/{live}/live", headers=h)
    ended = (await make_room(app_client, merchant, title="Owned ended"))["room_id"]
    await app_client.post(f"/v1/rooms/{ended}/live", headers=h)
    await app_client.post(f"/v1/rooms/{ended}/end", headers=h)
    consult = (await make_room(app_client, merchant, title="Owned consult", format="one_to_one"))["room_id"]
    start = time.time() + 3600
    slot = (
        await app_client.post(
            f"/v1/rooms/{consult}/slots", json={"starts_at": start, "ends_at": start + 600}, headers=h
        )
    ).json()["slot_id"]
    booking = (
        await app_client.post(
            f"/v1/rooms/{consult}/bookings", json={"slot_id": slot}, headers=bearer(viewer_token("t1"))
        )
    ).json()["booking_id"]
    deal = (
        await app_client.post(
            f"/v1/rooms/{live}/deals",
            json={"product_id": product, "price": 5, "quantity": 3, "ends_at": time.time() + 600},
            headers=h,
        )
    ).json()["deal_id"]
    return {
        "store": store,
        "product": product,
        "scheduled": scheduled,
        "live": live,
        "ended": ended,
        "consult": consult,
        "slot": slot,
        "booking": booking,
        "deal": deal,
    }


def write_routes(o: dict[str, str], own_product: str) -> list[tuple[str, dict[str, Any] | None]]:
    start = time.time() + 7200
    return [
        (f"/v1/stores/{o['store']}/staff", {"name": "Intruder"}),
        (f"/v1/rooms/{o['scheduled']}/live", None),
        (f"/v1/rooms/{o['live']}/end", None),
        (f"/v1/rooms/{o['ended']}/replay", {"replay_url": "https://evil.example/x.m3u8"}),
        (f"/v1/rooms/{o['scheduled']}/products", {"product_ids": [own_product]}),
        (
            f"/v1/rooms/{o['live']}/deals",
            {"product_id": own_product, "price": 1, "quantity": 1, "ends_at": time.time() + 600},
        ),
        (f"/v1/rooms/{o['consult']}/slots", {"starts_at": start, "ends_at": start + 600}),
        (f"/v1/bookings/{o['booking']}/cancel", None),
        (f"/v1/bookings/{o['booking']}/no-show", None),
    ]


async def test_every_write_route_answers_404_for_another_merchants_object(
    app_client: httpx.AsyncClient,
    merchant: MerchantAccount,
    other_merchant: MerchantAccount,
    owned: dict[str, str],
) -> None:
    own_product = (
        await app_client.post(
            "/v1/products",
            json={"title": "Theirs", "price": 3, "currency": "CNY"},
            headers=other_merchant.headers,
        )
    ).json()["product_id"]
    before = (await app_client.get("/v1/rooms", headers=merchant.headers)).json()
    for path, body in write_routes(owned, own_product):
        r = await app_client.post(path, json=body, headers=other_merchant.headers)
        assert r.status_code == 404, (path, r.status_code, r.text)
        assert r.json()["error"]["code"] == "not_found"
    assert (await app_client.get("/v1/rooms", headers=merchant.headers)).json() == before
    staff = (await app_client.get(f"/v1/stores/{owned['store']}/staff", headers=merchant.headers)).json()[
        "staff"
    ]
    assert staff == []


async def test_every_read_route_answers_404_for_another_merchants_object(
    app_client: httpx.AsyncClient, other_merchant: MerchantAccount, owned: dict[str, str]
) -> None:
    for path in (
        f"/v1/rooms/{owned['live']}",
        f"/v1/rooms/{owned['live']}/deals",
        f"/v1/rooms/{owned['consult']}/slots",
        f"/v1/deals/{owned['deal']}",
        f"/v1/stores/{owned['store']}/staff",
    ):
        r = await app_client.get(path, headers=other_merchant.headers)
        assert r.status_code == 404, path


async def test_a_deal_needs_the_merchants_own_product(
    app_client: httpx.AsyncClient,
    merchant: MerchantAccount,
    other_merchant: MerchantAccount,
    owned: dict[str, str],
) -> None:
    theirs = (
        await app_client.post(
            "/v1/products", json={"title": "X", "price": 3, "currency": "CNY"}, headers=other_merchant.headers
        )
    ).json()["product_id"]
    r = await app_client.post(
        f"/v1/rooms/{owned['live']}/deals",
        json={"product_id": theirs, "price": 1, "quantity": 1, "ends_at": time.time() + 600},
        headers=merchant.headers,
    )
    assert r.status_code == 422 and "product_id" in r.json()["error"]["fields"]


BAD_ROOMS = [
    ({k: v for k, v in ROOM.items() if k != "title"}, "title", "is required"),
    ({**ROOM, "title": 42}, "title", "must be a string"),
    ({**ROOM, "title": "x" * 121}, "title", "at most 120"),
    ({**ROOM, "price_band": "cheap"}, "price_band", "must be one of"),
    ({**ROOM, "format": "broadcast"}, "format", "must be one of"),
    ({**ROOM, "tags": "skincare"}, "tags", "list of strings"),
    ({**ROOM, "tags": ["t"] * 21}, "tags", "at most 20"),
    ({**ROOM, "stream_url": "javascript:alert(1)"}, "stream_url", "invalid format"),
    ({**ROOM, "scheduled_at": 1_790_000_000_000}, "scheduled_at", "at most"),
    ({**ROOM, "scheduled_at": "tomorrow"}, "scheduled_at", "must be a number"),
]


@pytest.mark.parametrize(("body", "field", "reason"), BAD_ROOMS)
async def test_bad_room_input_names_the_field(
    app_client: httpx.AsyncClient, merchant: MerchantAccount, body: dict[str, Any], field: str, reason: str
) -> None:
    r = await app_client.post("/v1/rooms", json=body, headers=merchant.headers)
    assert r.status_code == 422
    error = r.json()["error"]
    assert error["code"] == "validation_failed" and reason in error["fields"][field]


async def test_bad_input_on_every_other_write_route_names_the_field(
    app_client: httpx.AsyncClient,
    merchant: MerchantAccount,
    operator_key: str,
    viewer_token: Any,
    owned: dict[str, str],
) -> None:
    h = merchant.headers
    cases: list[tuple[str, dict[str, str], Any, str]] = [
        ("/v1/ops/merchants", bearer(operator_key), {}, "name"),
        ("/v1/ops/merchants", bearer(operator_key), {"name": "n" * 121}, "name"),
        ("/v1/ops/merchants", bearer(operator_key), [1, 2], "body"),
        ("/v1/stores", h, {"name": ""}, "name"),
        (f"/v1/stores/{owned['store']}/staff", h, {"name": None}, "name"),
        ("/v1/products", h, {"title": "t", "price": -1, "currency": "CNY"}, "price"),
        ("/v1/products", h, {"title": "t", "price": 1, "currency": "yuan"}, "currency"),
        ("/v1/products", h, {"title": "t", "price": "1", "currency": "CNY"}, "price"),
        (f"/v1/rooms/{owned['live']}/products", h, {"product_ids": []}, "product_ids"),
        (
            f"/v1/rooms/{owned['live']}/deals",
            h,
            {"product_id": owned["product"], "price": 1, "quantity": 0, "ends_at": time.time() + 60},
            "quantity",
        ),
        (
            f"/v1/rooms/{owned['live']}/deals",
            h,
            {"product_id": owned["product"], "price": 1, "quantity": 2.5, "ends_at": time.time() + 60},
            "quantity",
        ),
        (
            f"/v1/rooms/{owned['live']}/deals",
            h,
            {"product_id": owned["product"], "price": 1, "quantity": 2, "ends_at": time.time() - 60},
            "ends_at",
        ),
        (
            f"/v1/rooms/{owned['live']}/deals",
            h,
            {"product_id": owned["product"], "price": 1, "quantity": 2},
            "ends_at",
        ),
        (f"/v1/rooms/{owned['ended']}/replay", h, {"replay_url": "ftp://x"}, "replay_url"),
        (
            f"/v1/rooms/{owned['consult']}/slots",
            h,
            {"starts_at": time.time() + 60, "ends_at": time.time()},
            "ends_at",
        ),
        (f"/v1/rooms/{owned['consult']}/bookings", bearer(viewer_token("t2")), {}, "slot_id"),
        (f"/v1/deals/{owned['deal']}/claim", bearer(viewer_token("t3")), {"quantity": "two"}, "quantity"),
    ]
    for path, headers, body, field in cases:
        r = await app_client.post(path, json=body, headers=headers)
        assert r.status_code == 422, (path, body, r.status_code, r.text)
        assert r.json()["error"]["code"] == "validation_failed" and field in r.json()["error"]["fields"], (
            path,
            r.text,
        )
    broken = await app_client.post("/v1/stores", content=b"{not json", headers=h)
    assert broken.status_code == 400 and broken.json()["error"]["code"] == "invalid_json"
    listing = await app_client.get("/v1/rooms?status=paused", headers=h)
    assert listing.status_code == 422 and "status" in listing.json()["error"]["fields"]


async def test_bad_transitions_answer_409_and_change_nothing(
    app_client: httpx.AsyncClient, merchant: MerchantAccount, owned: dict[str, str]
) -> None:
    h = merchant.headers
    for path in (
        f"/v1/rooms/{owned['scheduled']}/end",
        f"/v1/rooms/{owned['live']}/live",
        f"/v1/rooms/{owned['ended']}/live",
        f"/v1/rooms/{owned['ended']}/end",
    ):
        r = await app_client.post(path, headers=h)
        assert r.status_code == 409 and r.json()["error"]["code"] == "invalid_transition", path
    r = await app_client.post(
        f"/v1/rooms/{owned['live']}/replay", json={"replay_url": "https://x.example/a"}, headers=h
    )
    assert r.status_code == 409
    rooms = {
        room["room_id"]: room["status"]
        for room in (await app_client.get("/v1/rooms", headers=h)).json()["rooms"]
    }
    assert (rooms[owned["scheduled"]], rooms[owned["live"]], rooms[owned["ended"]]) == (
        "scheduled",
        "live",
        "ended",
    )
    deal_in_ended = await app_client.post(
        f"/v1/rooms/{owned['ended']}/deals",
        json={"product_id": owned["product"], "price": 1, "quantity": 1, "ends_at": time.time() + 600},
        headers=h,
    )
    assert deal_in_ended.status_code == 409 and deal_in_ended.json()["error"]["code"] == "room_ended"

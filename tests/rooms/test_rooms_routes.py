"""Merchants, stores, staff, products and rooms through the HTTP routes, on real PostgreSQL, Redis, Kafka."""

from __future__ import annotations

import time
from typing import Any

import httpx

from roomfeed.app import Api
from roomfeed.assembly import Services
from roomfeed.settings import Settings
from tests.app_fixtures import bearer
from tests.rooms.conftest import MerchantAccount, read_topic

ROOM = {
    "title": "Spring skincare live",
    "category": "Beauty",
    "host": "host_anna",
    "tags": ["Skincare", "serum"],
    "price_band": "mid",
    "format": "one_to_many",
    "stream_url": "https://cdn.example/live/1.m3u8",
}


async def make_room(client: httpx.AsyncClient, merchant: MerchantAccount, **overrides: Any) -> dict[str, Any]:
    r = await client.post("/v1/rooms", json={**ROOM, **overrides}, headers=merchant.headers)
    assert r.status_code == 201, r.text
    return dict(r.json())


async def test_operator_creates_merchant_and_the_key_works_once_shown(
    app_client: httpx.AsyncClient, operator_key: str
) -> None:
    r = await app_client.post(
        "/v1/ops/merchants", json={"name": "Tea House", "category": "food"}, headers=bearer(operator_key)
    )
    assert r.status_code == 201
    body = r.json()
    assert body["merchant_id"].startswith("mer_") and body["key"].startswith("rfk_")
    assert (await app_client.get("/v1/rooms", headers=bearer(body["key"]))).json() == {
        "rooms": [],
        "next": None,
    }
    listed = await app_client.get("/v1/ops/merchants?limit=1000", headers=bearer(operator_key))
    found = [m for m in listed.json()["merchants"] if m["merchant_id"] == body["merchant_id"]]
    assert found and "key" not in found[0]


async def test_only_operators_create_merchants(
    app_client: httpx.AsyncClient, merchant: MerchantAccount, viewer_token: Any
) -> None:
    r = await app_client.post("/v1/ops/merchants", json={"name": "x"}, headers=merchant.headers)
    assert r.status_code == 403
    r = await app_client.post("/v1/ops/merchants", json={"name": "x"}, headers=bearer(viewer_token("v1")))
    assert r.status_code == 403
    assert (await app_client.post("/v1/ops/merchants", json={"name": "x"})).status_code == 401


async def test_stores_staff_and_products_belong_to_their_merchant(
    app: Api[Services],
    app_client: httpx.AsyncClient,
    merchant: MerchantAccount,
    other_merchant: MerchantAccount,
) -> None:
    store = (
        await app_client.post(
            "/v1/stores", json={"name": "Jing'an", "city": "Shanghai"}, headers=merchant.headers
        )
    ).json()
    staff = await app_client.post(
        f"/v1/stores/{store['store_id']}/staff", json={"name": "Li Wei"}, headers=merchant.headers
    )
    assert staff.status_code == 201
    product = await app_client.post(
        "/v1/products", json={"title": "Serum", "price": 189.0, "currency": "CNY"}, headers=merchant.headers
    )
    assert product.status_code == 201 and product.json()["price"] == 189.0
    stores = (await app_client.get("/v1/stores", headers=merchant.headers)).json()["stores"]
    assert store["store_id"] in [s["store_id"] for s in stores]
    assert store["store_id"] not in [
        s["store_id"]
        for s in (await app_client.get("/v1/stores", headers=other_merchant.headers)).json()["stores"]
    ]
    catalog = app.services.rooms.catalog
    assert await catalog.store_and_staff(merchant.merchant_id, store["store_id"], staff.json()["staff_id"])
    assert not await catalog.store_and_staff(other_merchant.merchant_id, store["store_id"], None)
    assert await catalog.exists(merchant.merchant_id) and not await catalog.exists("mer_nobody")


async def test_room_goes_scheduled_live_ended_and_only_that_way(
    app: Api[Services], app_client: httpx.AsyncClient, merchant: MerchantAccount
) -> None:
    room = await make_room(app_client, merchant)
    assert (
        room["status"] == "scheduled"
        and room["category"] == "beauty"
        and room["tags"] == ["skincare", "serum"]
    )
    rid = room["room_id"]
    bad = await app_client.post(f"/v1/rooms/{rid}/end", headers=merchant.headers)
    assert bad.status_code == 409 and bad.json()["error"]["code"] == "invalid_transition"
    live = await app_client.post(f"/v1/rooms/{rid}/live", headers=merchant.headers)
    assert live.status_code == 200 and live.json()["status"] == "live" and live.json()["started_at"]
    again = await app_client.post(f"/v1/rooms/{rid}/live", headers=merchant.headers)
    assert again.status_code == 409 and again.json()["error"]["code"] == "invalid_transition"

    snapshot = await app.services.rooms.live_index.snapshot()
    assert snapshot.by_id[rid].merchant_id == merchant.merchant_id
    assert snapshot.by_id[rid].tags == ("skincare", "serum") and snapshot.by_id[rid].status == "live"
    assert (await app.services.rooms.live_index.live_room_of_merchant(merchant.merchant_id)) is not None

    ended = await app_client.post(
        f"/v1/rooms/{rid}/end",
        json={"replay_url": "https://cdn.example/vod/1.m3u8"},
        headers=merchant.headers,
    )
    assert ended.status_code == 200 and ended.json()["status"] == "ended"
    assert rid not in (await app.services.rooms.live_index.snapshot()).by_id
    replays = await app.services.rooms.live_index.replays(50)
    assert [r.replay_url for r in replays if r.room_id == rid] == ["https://cdn.example/vod/1.m3u8"]
    relive = await app_client.post(f"/v1/rooms/{rid}/live", headers=merchant.headers)
    assert relive.status_code == 409 and relive.json()["error"]["fields"] == {"status": "ended"}
    assert await app.services.rooms.directory.merchant_of([rid, "room_unknown"]) == {
        rid: merchant.merchant_id
    }


async def test_room_lifecycle_is_published_on_kafka(
    settings: Settings, app_client: httpx.AsyncClient, merchant: MerchantAccount
) -> None:
    rid = (await make_room(app_client, merchant, title="Kafka watched"))["room_id"]
    await app_client.post(f"/v1/rooms/{rid}/live", headers=merchant.headers)
    await app_client.post(f"/v1/rooms/{rid}/end", headers=merchant.headers)

    def seen(values: list[dict[str, Any]]) -> list[str]:
        return [v["status"] for v in values if v["room_id"] == rid]

    values = await read_topic(settings, "room-lifecycle", lambda vs: len(seen(vs)) >= 3)
    assert seen(values) == ["scheduled", "live", "ended"]
    live = next(v for v in values if v["room_id"] == rid and v["status"] == "live")
    assert live["merchant_id"] == merchant.merchant_id and live["room"]["title"] == "Kafka watched"
    assert abs(live["at"] - time.time() * 1000) < 120_000


async def test_room_products_and_console_reads(
    app_client: httpx.AsyncClient,
    operator_key: str,
    merchant: MerchantAccount,
    other_merchant: MerchantAccount,
) -> None:
    rid = (await make_room(app_client, merchant))["room_id"]
    pid = (
        await app_client.post(
            "/v1/products", json={"title": "Mask", "price": 20, "currency": "CNY"}, headers=merchant.headers
        )
    ).json()["product_id"]
    r = await app_client.post(
        f"/v1/rooms/{rid}/products", json={"product_ids": [pid, pid]}, headers=merchant.headers
    )
    assert r.status_code == 200 and [p["product_id"] for p in r.json()["products"]] == [pid]
    detail = (await app_client.get(f"/v1/rooms/{rid}", headers=merchant.headers)).json()
    assert detail["products"][0]["product_id"] == pid
    own = await app_client.get(
        f"/v1/merchants/{merchant.merchant_id}/rooms?status=scheduled", headers=merchant.headers
    )
    assert rid in [room["room_id"] for room in own.json()["rooms"]]
    by_operator = await app_client.get(
        f"/v1/merchants/{merchant.merchant_id}/rooms", headers=bearer(operator_key)
    )
    assert rid in [room["room_id"] for room in by_operator.json()["rooms"]]
    nosy = await app_client.get(f"/v1/merchants/{merchant.merchant_id}/rooms", headers=other_merchant.headers)
    assert nosy.status_code == 404
    foreign_product = (
        await app_client.post(
            "/v1/products",
            json={"title": "Tent", "price": 900, "currency": "CNY"},
            headers=other_merchant.headers,
        )
    ).json()["product_id"]
    r = await app_client.post(
        f"/v1/rooms/{rid}/products", json={"product_ids": [foreign_product]}, headers=merchant.headers
    )
    assert r.status_code == 422 and "product_ids" in r.json()["error"]["fields"]


async def test_merchant_features_describe_merchants_for_training(
    app: Api[Services], app_client: httpx.AsyncClient, merchant: MerchantAccount
) -> None:
    await make_room(app_client, merchant, price_band="high", tags=["anti-aging"])
    features = await app.services.rooms.catalog.merchant_features()
    tokens = features[merchant.merchant_id]
    for token in ("category:beauty", "price:high", "tag:anti-aging", "format:one_to_many", "host:host_anna"):
        assert token in tokens

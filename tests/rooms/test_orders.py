"""Verified orders through the HTTP API on the real services: the order system reports sales, refunds
and cancellations; only they move attributed GMV and revenue share; a viewer's purchase event never does."""

from __future__ import annotations

import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import asyncpg
import httpx
import pytest
from redis.asyncio import Redis

from alliance.consumer import AllianceSink
from roomfeed.errors import ValidationFailed
from rooms.inputs import read_order
from tests.app_fixtures import bearer
from tests.rooms.conftest import MerchantAccount

NewMerchant = Callable[..., Awaitable[MerchantAccount]]


@dataclass
class Shop:
    merchant: MerchantAccount
    order_key: str
    store_id: str
    staff_id: str
    product_id: str
    room_id: str
    code: str

    @property
    def order_system(self) -> dict[str, str]:
        return bearer(self.order_key)


async def open_shop(client: httpx.AsyncClient, new_merchant: NewMerchant, operator_key: str) -> Shop:
    m = await new_merchant()
    h = m.headers
    store = (await client.post("/v1/stores", json={"name": "Jing'an"}, headers=h)).json()["store_id"]
    staff = (await client.post(f"/v1/stores/{store}/staff", json={"name": "Li"}, headers=h)).json()[
        "staff_id"
    ]
    r = await client.post(
        "/v1/products", json={"title": "Serum", "price": 189.0, "currency": "CNY"}, headers=h
    )
    assert r.status_code == 201, r.text
    product = r.json()["product_id"]
    r = await client.post(
        "/v1/rooms",
        json={"title": "Glow live", "category": "beauty", "price_band": "mid", "format": "one_to_many"},
        headers=h,
    )
    assert r.status_code == 201, r.text
    room = r.json()["room_id"]
    r = await client.post("/v1/codes", json={"store_id": store, "staff_id": staff}, headers=h)
    assert r.status_code == 201, r.text
    code = r.json()["code"]
    r = await client.post(f"/v1/ops/merchants/{m.merchant_id}/order-keys", headers=bearer(operator_key))
    assert r.status_code == 201, r.text
    return Shop(m, r.json()["key"], store, staff, product, room, code)


def order(shop: Shop, viewer: str | None, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "order_id": f"o-{secrets.token_hex(4)}",
        "product_id": shop.product_id,
        "quantity": 2,
        "unit_price": 189.0,
        "currency": "CNY",
        "ordered_at": int(time.time() * 1000),
        "room_id": shop.room_id,
    }
    if viewer is not None:
        body["viewer_id"] = viewer
    body.update(extra)
    return body


async def attribute(client: httpx.AsyncClient, viewer_token: Callable[[str], str], shop: Shop) -> str:
    viewer = f"buyer-{secrets.token_hex(4)}"
    r = await client.post(
        "/v1/sessions",
        json={"viewer_id": viewer, "entry": {"code": shop.code}},
        headers=bearer(viewer_token(viewer)),
    )
    assert r.status_code == 201, r.text
    return viewer


async def books(client: httpx.AsyncClient, pool: asyncpg.Pool, shop: Shop) -> dict[str, Any]:
    """Every number that pays a merchant: its statement, its order totals, and the ledger tables."""
    ledger = (
        await client.get(f"/v1/merchants/{shop.merchant.merchant_id}/ledger", headers=shop.merchant.headers)
    ).json()
    return {
        "ledger": ledger,
        "transactions": await pool.fetchval("SELECT count(*) FROM ledger_transactions"),
        "attributed": await pool.fetchval("SELECT count(*) FROM attributed_order_entries"),
        "order_entries": await pool.fetchval("SELECT count(*) FROM order_entries"),
    }


async def test_a_verified_order_is_attributed_once_and_refunds_reverse_it(
    app_client: httpx.AsyncClient,
    new_merchant: NewMerchant,
    operator_key: str,
    viewer_token: Callable[[str], str],
) -> None:
    shop = await open_shop(app_client, new_merchant, operator_key)
    viewer = await attribute(app_client, viewer_token, shop)
    body = order(shop, viewer)
    r = await app_client.post("/v1/orders", json=body, headers=shop.order_system)
    assert r.status_code == 201, r.text
    assert r.json()["amount"] == "378.00" and r.json()["status"] == "paid"
    again = await app_client.post("/v1/orders", json=body, headers=shop.order_system)
    assert again.status_code == 200 and again.json()["entries"] == r.json()["entries"]
    changed = await app_client.post("/v1/orders", json={**body, "quantity": 3}, headers=shop.order_system)
    assert changed.status_code == 409 and "order_id" in changed.json()["error"]["fields"]

    ledger = (
        await app_client.get(
            f"/v1/merchants/{shop.merchant.merchant_id}/ledger", headers=shop.merchant.headers
        )
    ).json()
    assert ledger["attributed"]["orders"] == 1
    assert ledger["attributed"]["by_store"] == [
        {
            "store_id": shop.store_id,
            "currency": "CNY",
            "orders": 1,
            "gross": 378.0,
            "reversed": 0.0,
            "gmv": 378.0,
        }
    ]
    assert ledger["attributed"]["by_staff"][0]["staff_id"] == shop.staff_id
    share = ledger["revenue_share"][0]
    assert share["attributed_gmv"] == 378.0 and share["commission"] == round(
        378.0 * share["commission_rate"], 2
    )
    assert ledger["orders"] == [
        {
            "currency": "CNY",
            "orders": 1,
            "gross": "378.00",
            "refunds": 0,
            "cancellations": 0,
            "reversed": "0.00",
            "net": "378.00",
        }
    ]

    oid = body["order_id"]
    refund = {"refund_id": "r1", "amount": 100}
    r = await app_client.post(f"/v1/orders/{oid}/refunds", json=refund, headers=shop.order_system)
    assert r.status_code == 201 and r.json()["net"] == "278.00" and r.json()["status"] == "partly_refunded"
    assert (
        await app_client.post(f"/v1/orders/{oid}/refunds", json=refund, headers=shop.order_system)
    ).status_code == 200
    r = await app_client.post(
        f"/v1/orders/{oid}/refunds", json={"refund_id": "r1", "amount": 5}, headers=shop.order_system
    )
    assert r.status_code == 409
    r = await app_client.post(
        f"/v1/orders/{oid}/refunds", json={"refund_id": "r2", "amount": 300}, headers=shop.order_system
    )
    assert r.status_code == 422 and "amount" in r.json()["error"]["fields"]
    r = await app_client.post(f"/v1/orders/{oid}/cancel", headers=shop.order_system)
    assert r.status_code == 201 and r.json()["net"] == "0.00" and r.json()["status"] == "cancelled"
    assert (await app_client.post(f"/v1/orders/{oid}/cancel", headers=shop.order_system)).status_code == 200
    r = await app_client.post(
        f"/v1/orders/{oid}/refunds", json={"refund_id": "r3", "amount": 1}, headers=shop.order_system
    )
    assert r.status_code == 409

    ledger = (
        await app_client.get(
            f"/v1/merchants/{shop.merchant.merchant_id}/ledger", headers=shop.merchant.headers
        )
    ).json()
    store = ledger["attributed"]["by_store"][0]
    assert (store["orders"], store["gross"], store["reversed"], store["gmv"]) == (1, 378.0, 378.0, 0.0)
    assert ledger["revenue_share"][0]["commission"] == 0.0
    assert ledger["orders"][0]["refunds"] == 1 and ledger["orders"][0]["cancellations"] == 1


async def test_orders_are_checked_against_the_catalogue(
    app_client: httpx.AsyncClient, new_merchant: NewMerchant, operator_key: str
) -> None:
    shop = await open_shop(app_client, new_merchant, operator_key)
    other = await open_shop(app_client, new_merchant, operator_key)
    cases: list[tuple[dict[str, Any], str]] = [
        ({"unit_price": 1.0}, "unit_price"),
        ({"currency": "USD"}, "currency"),
        ({"product_id": "prd_doesnotexist0000"}, "product_id"),
        ({"product_id": other.product_id}, "product_id"),  # another merchant's product
        ({"room_id": other.room_id}, "room_id"),
        ({"quantity": 0}, "quantity"),
        ({"amount": 1.0}, "amount"),
        ({"unit_price": 1e12}, "unit_price"),
        ({"unit_price": 189.001}, "unit_price"),
        ({"deal_id": "deal_nope"}, "deal_id"),
        ({"ordered_at": int(time.time() * 1000) + 3_600_000}, "ordered_at"),
    ]
    for change, field in cases:
        r = await app_client.post("/v1/orders", json=order(shop, "v1", **change), headers=shop.order_system)
        assert r.status_code == 422, (change, r.text)
        assert field in r.json()["error"]["fields"], (change, r.text)
    r = await app_client.post(
        "/v1/orders", json=order(shop, "v1", unit_price=1e12), headers=shop.order_system
    )
    assert "1e12" in r.json()["error"]["fields"]["unit_price"]
    assert await app_client.get("/v1/orders", headers=shop.order_system) is not None
    assert (await app_client.get("/v1/orders", headers=shop.order_system)).json()["orders"] == []


async def test_the_import_reads_an_order_with_the_routes_own_rules(
    app_client: httpx.AsyncClient, new_merchant: NewMerchant, operator_key: str
) -> None:
    """`roomfeed import` reads past orders with rooms.inputs.read_order: every body the route refuses
    before the order book, read_order refuses naming the same fields with the same words."""
    shop = await open_shop(app_client, new_merchant, operator_key)
    bad: list[dict[str, Any]] = [
        {"quantity": 0},
        {"quantity": "2"},
        {"unit_price": 0},
        {"unit_price": 189.001},
        {"unit_price": 1e12, "amount": "abc"},
        {"currency": "cny"},
        {"ordered_at": -1},
        {"viewer_id": "has space"},
        {"coupon": "X"},
        {"order_id": None},
    ]
    for change in bad:
        body = order(shop, "v1", **change)
        r = await app_client.post("/v1/orders", json=body, headers=shop.order_system)
        assert r.status_code == 422, (change, r.text)
        with pytest.raises(ValidationFailed) as refused:
            read_order(body)
        assert refused.value.fields == r.json()["error"]["fields"], change
    good = order(shop, "v1", unit_price="189.5", quantity=3, amount=568.5)
    read = read_order(good)
    assert (read.unit_price, read.amount, read.ordered_at) == (
        Decimal("189.50"),
        Decimal("568.50"),
        good["ordered_at"] / 1000,
    )


async def test_tenants_and_roles_are_kept_apart(
    app_client: httpx.AsyncClient,
    new_merchant: NewMerchant,
    operator_key: str,
    viewer_token: Callable[[str], str],
) -> None:
    shop = await open_shop(app_client, new_merchant, operator_key)
    other = await open_shop(app_client, new_merchant, operator_key)
    body = order(shop, "v1")
    assert (await app_client.post("/v1/orders", json=body, headers=shop.merchant.headers)).status_code == 201
    oid = body["order_id"]
    # The viewer never writes an order; another merchant never sees or changes one.
    assert (
        await app_client.post("/v1/orders", json=body, headers=bearer(viewer_token("v1")))
    ).status_code == 403
    assert (await app_client.get(f"/v1/orders/{oid}", headers=other.order_system)).status_code == 404
    assert (await app_client.get(f"/v1/orders/{oid}", headers=other.merchant.headers)).status_code == 404
    r = await app_client.post(f"/v1/orders/{oid}/cancel", headers=other.order_system)
    assert r.status_code == 404
    assert (await app_client.get("/v1/orders", headers=other.merchant.headers)).json()["orders"] == []
    # An order-system key reaches nothing but orders.
    assert (await app_client.get("/v1/rooms", headers=shop.order_system)).status_code == 403
    assert (await app_client.post("/v1/products", json={}, headers=shop.order_system)).status_code == 403
    r = await app_client.post(
        f"/v1/ops/merchants/{shop.merchant.merchant_id}/order-keys", headers=shop.merchant.headers
    )
    assert r.status_code == 403
    # The same order id at another merchant is another order.
    r = await app_client.post(
        "/v1/orders",
        json={**body, "product_id": other.product_id, "room_id": other.room_id},
        headers=other.order_system,
    )
    assert r.status_code == 201


async def test_viewer_purchase_events_leave_every_ledger_unchanged(
    app_client: httpx.AsyncClient,
    new_merchant: NewMerchant,
    operator_key: str,
    viewer_token: Callable[[str], str],
    pool: asyncpg.Pool,
    redis: Redis,
) -> None:
    """The attack of issue 14: a viewer attributed to merchant A posts a 99,999,999,999 CNY purchase of
    a product that does not exist, then the same order_id under a new event_id."""
    shop = await open_shop(app_client, new_merchant, operator_key)
    viewer = await attribute(app_client, viewer_token, shop)
    before = await books(app_client, pool, shop)
    now = int(time.time() * 1000)
    attack = [
        {
            "event_id": f"buy-{i}-{viewer}",
            "type": "purchase",
            "viewer_id": viewer,
            "session_id": "direct",
            "room_id": shop.room_id,
            "ts": now,
            "order_id": "o-forged",
            "product_id": "prd_nonexistent",
            "amount": 99_999_999_999,
            "currency": "CNY",
        }
        for i in range(2)
    ]
    r = await app_client.post("/v1/events", json=attack, headers=bearer(viewer_token(viewer)))
    assert r.status_code == 202, r.text
    # What the alliance consumer does with them (the worker's sink, on the same database).
    enriched = [{**e, "merchant_id": shop.merchant.merchant_id, "received_at": now} for e in attack]
    await AllianceSink(pool, redis).write(enriched)
    assert await books(app_client, pool, shop) == before
    too_big = {**attack[0], "event_id": f"big-{viewer}", "amount": 2e12}
    r = await app_client.post("/v1/events", json=[too_big], headers=bearer(viewer_token(viewer)))
    error = r.json()["rejected"][0]["error"]
    assert error["field"] == "amount" and "less than 1e12" in error["message"]

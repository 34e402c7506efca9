"""Flash deals: claims are atomic, never oversold, per-viewer limits hold, each claim becomes an event."""

from __future__ import annotations

import asyncio
import time
from typing import Any, cast

import asyncpg
import httpx
from redis.asyncio import Redis

from events.vocabulary import VIEWER_EVENTS
from roomfeed.errors import Conflict
from roomfeed.settings import Settings
from rooms.deals import DealBook, gate_key, holdings_key
from tests.app_fixtures import bearer
from tests.rooms.conftest import MerchantAccount, read_topic
from tests.rooms.test_rooms_routes import make_room


async def make_deal(
    client: httpx.AsyncClient, merchant: MerchantAccount, *, quantity: int, limit: int = 1, **extra: Any
) -> dict[str, Any]:
    room = await make_room(client, merchant, title="Flash sale")
    await client.post(f"/v1/rooms/{room['room_id']}/live", headers=merchant.headers)
    product = (
        await client.post(
            "/v1/products",
            json={"title": "Lipstick", "price": 99, "currency": "CNY"},
            headers=merchant.headers,
        )
    ).json()
    body = {
        "product_id": product["product_id"],
        "price": 49.5,
        "quantity": quantity,
        "per_viewer_limit": limit,
        "ends_at": time.time() + 600,
        **extra,
    }
    r = await client.post(f"/v1/rooms/{room['room_id']}/deals", json=body, headers=merchant.headers)
    assert r.status_code == 201, r.text
    return dict(r.json())


async def test_claim_never_oversells_under_concurrency(
    app_client: httpx.AsyncClient, merchant: MerchantAccount, pool: asyncpg.Pool, redis: Redis
) -> None:
    deal = await make_deal(app_client, merchant, quantity=25)
    book = DealBook(pool, redis)

    async def attempt(i: int) -> str:
        try:
            await book.claim(deal["deal_id"], f"viewer{i}")
            return "ok"
        except Conflict as refused:
            return refused.code

    outcomes = await asyncio.gather(*(attempt(i) for i in range(600)))
    assert outcomes.count("ok") == 25
    assert set(outcomes) == {"ok", "sold_out"}
    row = await pool.fetchrow(
        "SELECT remaining, (SELECT sum(quantity) FROM deal_claims WHERE deal_id = $1) AS sold FROM deals WHERE deal_id = $1",
        deal["deal_id"],
    )
    assert row["remaining"] == 0 and row["sold"] == 25
    assert int(cast(bytes, await redis.get(gate_key(deal["deal_id"])))) == 0


async def test_no_viewer_claims_above_the_limit(
    app_client: httpx.AsyncClient, merchant: MerchantAccount, pool: asyncpg.Pool, redis: Redis
) -> None:
    deal = await make_deal(app_client, merchant, quantity=50, limit=2)
    book = DealBook(pool, redis)

    async def attempt(viewer: str) -> str:
        try:
            await book.claim(deal["deal_id"], viewer)
            return "ok"
        except Conflict as refused:
            return refused.code

    # 5 viewers each try 10 times at once: each gets exactly 2; the tokens of refused claims return.
    outcomes = await asyncio.gather(*(attempt(f"greedy{i % 5}") for i in range(50)))
    assert outcomes.count("ok") == 10 and outcomes.count("limit_reached") == 40
    held = await pool.fetch("SELECT claimed FROM deal_viewer_claims WHERE deal_id = $1", deal["deal_id"])
    assert sorted(r["claimed"] for r in held) == [2] * 5
    assert int(cast(bytes, await redis.get(gate_key(deal["deal_id"])))) == 40
    assert await pool.fetchval("SELECT remaining FROM deals WHERE deal_id = $1", deal["deal_id"]) == 40
    mirror = await redis.hgetall(holdings_key(deal["deal_id"]))
    assert {cast(bytes, k).decode(): int(v) for k, v in mirror.items()} == {f"greedy{i}": 2 for i in range(5)}


async def test_the_limit_holds_when_redis_forgot_the_holdings(
    app_client: httpx.AsyncClient, merchant: MerchantAccount, pool: asyncpg.Pool, redis: Redis
) -> None:
    deal = await make_deal(app_client, merchant, quantity=10, limit=1)
    book = DealBook(pool, redis)
    await book.claim(deal["deal_id"], "dora")
    await redis.delete(holdings_key(deal["deal_id"]))  # Redis lost the mirror, PostgreSQL did not
    try:
        await book.claim(deal["deal_id"], "dora")
        raise AssertionError("a second unit past the limit was accepted")
    except Conflict as refused:
        assert refused.code == "limit_reached"
    assert (
        int(cast(bytes, await redis.hget(holdings_key(deal["deal_id"]), "dora"))) == 1
    )  # the mirror learnt it
    assert (
        int(cast(bytes, await redis.get(gate_key(deal["deal_id"])))) == 9
    )  # the refused claim's token came back


async def test_viewer_claims_over_http_and_hears_sold_out_and_limit(
    settings: Settings, app_client: httpx.AsyncClient, merchant: MerchantAccount, viewer_token: Any
) -> None:
    deal = await make_deal(app_client, merchant, quantity=2)
    url = f"/v1/deals/{deal['deal_id']}/claim"
    first = await app_client.post(url, json={"session_id": "ses_1"}, headers=bearer(viewer_token("amy")))
    assert first.status_code == 201 and first.json()["remaining"] == 1
    repeat = await app_client.post(url, headers=bearer(viewer_token("amy")))
    assert repeat.status_code == 409 and repeat.json()["error"]["code"] == "limit_reached"
    assert (await app_client.post(url, headers=bearer(viewer_token("bob")))).status_code == 201
    sold = await app_client.post(url, headers=bearer(viewer_token("cat")))
    assert sold.status_code == 409 and sold.json()["error"]["code"] == "sold_out"
    assert (await app_client.post(url, headers=merchant.headers)).status_code == 403
    unknown = await app_client.post("/v1/deals/deal_nope/claim", headers=bearer(viewer_token("amy")))
    assert unknown.status_code == 404

    def claims(values: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [v for v in values if v.get("type") == "deal_claim" and v.get("deal_id") == deal["deal_id"]]

    events = claims(await read_topic(settings, VIEWER_EVENTS, lambda vs: len(claims(vs)) >= 2))
    assert sorted(e["viewer_id"] for e in events) == ["amy", "bob"]
    amy = next(e for e in events if e["viewer_id"] == "amy")
    assert amy["event_id"] == first.json()["claim_id"] and amy["session_id"] == "ses_1"
    assert amy["room_id"] == deal["room_id"] and amy["merchant_id"] == merchant.merchant_id
    assert isinstance(amy["ts"], int)


async def test_claims_outside_the_window_are_refused(
    app_client: httpx.AsyncClient, merchant: MerchantAccount, pool: asyncpg.Pool, redis: Redis
) -> None:
    deal = await make_deal(app_client, merchant, quantity=5, starts_at=time.time() + 300)
    book = DealBook(pool, redis)
    for now, code in ((time.time(), "deal_not_started"), (time.time() + 3600, "deal_ended")):
        try:
            await book.claim(deal["deal_id"], "early", now=now)
            raise AssertionError("claim accepted outside the window")
        except Conflict as refused:
            assert refused.code == code
    assert await pool.fetchval("SELECT remaining FROM deals WHERE deal_id = $1", deal["deal_id"]) == 5


async def test_a_lost_gate_is_reseeded_from_postgresql(
    app_client: httpx.AsyncClient, merchant: MerchantAccount, pool: asyncpg.Pool, redis: Redis
) -> None:
    deal = await make_deal(app_client, merchant, quantity=3)
    book = DealBook(pool, redis)
    await book.claim(deal["deal_id"], "one")
    await redis.delete(gate_key(deal["deal_id"]))  # Redis lost it
    await book.claim(deal["deal_id"], "two")
    await redis.set(gate_key(deal["deal_id"]), 100)  # a gate with too many tokens still cannot oversell
    outcomes = []
    for viewer in ("three", "four", "five"):
        try:
            await book.claim(deal["deal_id"], viewer)
            outcomes.append("ok")
        except Conflict as refused:
            outcomes.append(refused.code)
    assert outcomes == ["ok", "sold_out", "sold_out"]
    assert await pool.fetchval("SELECT remaining FROM deals WHERE deal_id = $1", deal["deal_id"]) == 0


async def test_a_rooms_deals_close_when_the_room_ends(
    app_client: httpx.AsyncClient, merchant: MerchantAccount, pool: asyncpg.Pool, redis: Redis
) -> None:
    deal = await make_deal(app_client, merchant, quantity=5)
    later = await app_client.post(
        f"/v1/rooms/{deal['room_id']}/deals",
        json={
            "product_id": deal["product_id"],
            "price": 1,
            "quantity": 5,
            "starts_at": time.time() + 600,
            "ends_at": time.time() + 1200,
        },
        headers=merchant.headers,
    )
    assert later.status_code == 201
    book = DealBook(pool, redis)
    await book.claim(deal["deal_id"], "before_end")  # this process now caches the deal's terms
    ended = await app_client.post(f"/v1/rooms/{deal['room_id']}/end", headers=merchant.headers)
    assert ended.status_code == 200
    for deal_id in (deal["deal_id"], later.json()["deal_id"]):
        try:
            await book.claim(deal_id, "after_end")
            raise AssertionError("claimed a deal of an ended room")
        except Conflict as refused:
            assert refused.code in ("deal_ended", "deal_not_started")
    assert await pool.fetchval("SELECT remaining FROM deals WHERE deal_id = $1", deal["deal_id"]) == 4

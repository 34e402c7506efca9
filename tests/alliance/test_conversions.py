"""Conversion counts most (issue 16, item 2), on the real sink, PostgreSQL and Redis: a counted visit
that led to a verified order with the host earns `conversion_weight` × the exchange rate more, whether
the order or the visit is recorded first; the merchant's statement shows the visits' credit and the
conversions' apart; a sale refunded in full takes its bonus back; nothing else converts."""

from __future__ import annotations

import secrets
import time
from decimal import Decimal
from typing import Any

import asyncpg
import pytest
from redis.asyncio import Redis

from alliance.orders import OrderAttribution
from rooms.orders import OrderEntry
from tests.alliance.test_contribution import visit
from tests.alliance.test_settlement import HOUR, Market


@pytest.fixture
async def now() -> float:
    """The wall clock's now (the session app's scheduler settles this database at the wall clock too)."""
    return time.time()


def sale(seller: str, viewer: str, room: str | None, at: float, amount: str = "59.00") -> OrderEntry:
    """A verified sale as rooms.orders delivers it to its subscribers."""
    order_id = f"o{secrets.token_hex(4)}"
    entry_id = f"sale:{seller}:{order_id}"
    return OrderEntry(
        entry_id, "sale", seller, order_id, entry_id, viewer, room, "p", None, 1, Decimal(amount), "CNY", at
    )  # fmt: skip


def refund(of: OrderEntry, at: float) -> OrderEntry:
    return OrderEntry(
        f"refund:{of.entry_id}", "refund", of.merchant_id, of.order_id, of.entry_id, of.viewer_id, of.room_id,
        of.product_id, "rf1", 1, -of.amount, of.currency, at,
    )  # fmt: skip


async def converted_visit(m: Market, now: float, order_first: bool) -> tuple[str, str, OrderEntry]:
    """Contributor a's viewer watches partner b's room for 20 s and buys there (b's books)."""
    a, b = m.members[0], m.members[1]
    v = await m.viewer(a, now)
    room = f"r-{b}-{secrets.token_hex(2)}"
    bought = sale(b, v, room, now + 15)
    if order_first:  # the order system reports while the viewer still watches
        await OrderAttribution(m.pool).record([bought])
    await m.sink.write(visit(v, b, 20_000, at=now + 1, room=room))
    if not order_first:
        await OrderAttribution(m.pool).record([bought])
    return a, v, bought


async def ledger_consistent(m: Market) -> None:
    assert await m.ledger.unbalanced_transactions() == 0
    mine = [b for b in await m.ledger.balances() if b.merchant_id in m.members]
    assert mine and mine == [b for b in await m.ledger.balances_from_postings() if b.merchant_id in m.members]


@pytest.mark.parametrize("order_first", [False, True], ids=["visit_then_order", "order_then_visit"])
async def test_a_visit_that_led_to_an_order_with_the_host_earns_the_conversion_weight_more(
    pool: asyncpg.Pool, redis: Redis, now: float, order_first: bool
) -> None:
    m = await Market.make(pool, redis, 2)
    a, _, bought = await converted_visit(m, now, order_first)
    s = await m.statement(a)
    counted: dict[str, Any] = s["visits"]["counted"]
    # exchange_rate 3, conversion_weight 1: 3 for the visit, 3 more for the order it led to.
    assert s["earned"] == 6.0 and s["held"] == 6.0 and s["contributed_visits"] == 1
    assert (counted["visits"], counted["converted"]) == (1, 1)
    assert (counted["visit_credit"], counted["conversion_credit"]) == (3.0, 3.0)
    await m.settlement.run(now + 3 * HOUR)
    s = await m.statement(a)
    assert s["held"] == 0.0 and s["balance"] == 6.0
    # Replaying the order changes nothing: one sale converts one visit, once.
    await OrderAttribution(pool).record([bought])
    assert (await m.statement(a))["balance"] == 6.0
    await ledger_consistent(m)


async def test_an_order_on_a_visit_already_confirmed_is_paid_at_once(
    pool: asyncpg.Pool, redis: Redis, now: float
) -> None:
    m = await Market.make(pool, redis, 2)
    a, b = m.members
    v = await m.viewer(a, now)
    room = f"r-{b}-x"
    await m.sink.write(visit(v, b, 20_000, at=now + 1, room=room))
    await m.settlement.run(now + 3 * HOUR)
    await OrderAttribution(pool).record([sale(b, v, room, now + 1.5 * HOUR)])
    s = await m.statement(a)
    assert (s["earned"], s["held"], s["balance"]) == (6.0, 0.0, 6.0)
    await ledger_consistent(m)


async def test_only_an_order_with_the_host_of_a_counted_visit_converts(
    pool: asyncpg.Pool, redis: Redis, now: float
) -> None:
    m = await Market.make(pool, redis, 3)
    a, b, c = m.members
    v = await m.viewer(a, now)
    room = f"r-{b}-y"
    await m.sink.write(visit(v, b, 20_000, at=now + 1, room=room))
    short = await m.viewer(a, now)
    await m.sink.write(visit(short, b, 4_000, at=now + 2, room=room))  # not counted: too short
    await OrderAttribution(pool).record(
        [
            sale(c, v, None, now + 30),  # another partner's order: c's room was never visited
            sale(b, v, "r-other", now + 30),  # b's order from another of its rooms
            sale(b, short, room, now + 30),  # the visit did not count
            sale(b, v, room, now - 2 * HOUR),  # before the visit: it did not lead to it
            sale(b, v, room, now + 2 * 24 * HOUR),  # beyond the alliance's attribution window (24 h)
        ]
    )
    s = await m.statement(a)
    assert s["earned"] == 3.0 and s["visits"]["counted"]["converted"] == 0
    await ledger_consistent(m)


async def test_a_sale_refunded_in_full_takes_its_conversion_back(
    pool: asyncpg.Pool, redis: Redis, now: float
) -> None:
    m = await Market.make(pool, redis, 2)
    a, _, bought = await converted_visit(m, now, order_first=False)
    partly = OrderEntry(
        f"refund:{bought.entry_id}:part", "refund", bought.merchant_id, bought.order_id, bought.entry_id,
        bought.viewer_id, bought.room_id, "p", "rf0", 1, Decimal("-10.00"), "CNY", now + 40,
    )  # fmt: skip
    await OrderAttribution(pool).record([partly])
    assert (await m.statement(a))["visits"]["counted"]["converted"] == 1  # a partial refund leaves a sale
    rest = OrderEntry(
        f"refund:{bought.entry_id}:rest", "refund", bought.merchant_id, bought.order_id, bought.entry_id,
        bought.viewer_id, bought.room_id, "p", "rf1", 1, Decimal("-49.00"), "CNY", now + 50,
    )  # fmt: skip
    await OrderAttribution(pool).record([rest])
    s = await m.statement(a)
    assert (s["earned"], s["clawed_back"], s["held"]) == (6.0, 3.0, 3.0)
    assert s["visits"]["counted"]["converted"] == 0 and s["visits"]["counted"]["visit_credit"] == 3.0
    await m.settlement.run(now + 3 * HOUR)
    assert (await m.statement(a))["balance"] == 3.0
    await ledger_consistent(m)


async def test_a_farmed_visit_loses_its_conversion_credit_with_it(
    pool: asyncpg.Pool, redis: Redis, now: float
) -> None:
    """A new id whose device then makes two more: a burst viewer, clawed back (retroactively) with the
    bonus its order brought."""
    m = await Market.make(pool, redis, 2)
    a, b = m.members
    phone = f"farm-{secrets.token_hex(3)}"
    first = await m.viewer(a, now, age_s=60, device=phone)
    room = f"r-{b}-z"
    await m.sink.write(visit(first, b, 20_000, at=now + 1, room=room, device=phone))
    await OrderAttribution(pool).record([sale(b, first, room, now + 15)])
    assert (await m.statement(a))["earned"] == 6.0
    for i in range(2):
        await m.viewer(a, now + 60 + i, age_s=60, device=phone)
    await m.settlement.run(now + 3 * HOUR)
    s = await m.statement(a)
    assert (s["clawed_back"], s["balance"]) == (6.0, 0.0)
    assert s["visits"]["clawed_back"]["burst_viewer"] == {
        "visits": 1,
        "amount": 6.0,
        "why": s["visits"]["clawed_back"]["burst_viewer"]["why"],
    }
    await ledger_consistent(m)

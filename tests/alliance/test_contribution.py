"""Contributed visits, delivered exposure and attributed orders through the real AllianceSink
(PostgreSQL + Redis): who earns, the anti-gaming rules, and a ledger that replay cannot change."""

from __future__ import annotations

import itertools
import secrets
import time
from dataclasses import dataclass
from typing import Any

import asyncpg
import pytest
from redis.asyncio import Redis

from alliance.alliances import AllianceBook, Terms
from alliance.attribution import AttributionBook
from alliance.codes import Attribution
from alliance.consumer import AllianceSink
from alliance.ledger import Ledger
from alliance.scheduler import grant_key

_ids = itertools.count()
T0 = time.time() - 3600  # events an hour ago, inside every window


@dataclass
class World:
    a: str
    b: str
    outsider: str
    alliance_id: str
    sink: AllianceSink
    book: AttributionBook
    ledger: Ledger

    async def viewer_from(
        self,
        merchant_id: str,
        *,
        device: str | None = None,
        at: float = T0,
        store_id: str | None = None,
        staff_id: str | None = None,
    ) -> str:
        viewer = f"v{secrets.token_hex(5)}"
        await self.book.attribute(
            viewer, "s1", Attribution(merchant_id, store_id, staff_id), at, device_id=device
        )
        return viewer

    async def earned(self, merchant_id: str) -> tuple[int, float]:
        rows = [b for b in await self.ledger.balances(merchant_id)]
        return sum(b.visits for b in rows), sum(b.earned for b in rows)


def visit(
    viewer: str,
    host: str,
    dwell_ms: int,
    *,
    at: float = T0 + 60,
    room: str | None = None,
    device: str | None = None,
) -> dict[str, Any]:
    event = {
        "event_id": f"e{next(_ids)}-{secrets.token_hex(4)}",
        "type": "leave",
        "viewer_id": viewer,
        "session_id": "s1",
        "room_id": room or f"room_of_{host}",
        "merchant_id": host,
        "ts": int(at * 1000),
        "dwell_ms": dwell_ms,
    }
    if device:
        event["device_id"] = device
    return event


def mid() -> str:
    return f"mer_{secrets.token_hex(8)}"


@pytest.fixture
async def world(pool: asyncpg.Pool, redis: Redis) -> World:
    a, b, outsider = mid(), mid(), mid()
    book = AllianceBook(pool)
    terms = Terms(
        exchange_rate=3.0, min_dwell_ms=10_000, daily_earning_cap=60.0, viewer_daily_cap=3, device_daily_cap=4
    )
    alliance = await book.create(a, "Test alliance", terms)
    await book.invite(alliance.alliance_id, a, b)
    await book.join(alliance.alliance_id, b)
    return World(
        a,
        b,
        outsider,
        alliance.alliance_id,
        AllianceSink(pool, redis),
        AttributionBook(pool, redis),
        Ledger(pool),
    )


async def test_as_viewer_in_partner_room_earns_a_one_contributed_visit(world: World) -> None:
    v = await world.viewer_from(world.a)
    await world.sink.write([visit(v, world.b, 15_000)])
    assert await world.earned(world.a) == (1, 3.0)
    assert await world.earned(world.b) == (0, 0.0)


async def test_as_viewers_in_as_own_rooms_earn_nothing(world: World) -> None:
    v = await world.viewer_from(world.a)
    await world.sink.write([visit(v, world.a, 60_000)])
    assert await world.earned(world.a) == (0, 0.0)
    assert (await world.ledger.statement(world.a))["rejected_visits"] == {"self_visit": 1}


async def test_bs_own_viewers_earn_nothing_for_a(world: World) -> None:
    v = await world.viewer_from(world.b)
    await world.sink.write([visit(v, world.b, 60_000)])
    both = await world.viewer_from(world.a, at=T0 + 1)  # in A's window, but B's own viewer too
    await world.book.attribute(both, "s2", Attribution(world.b), T0)
    await world.sink.write([visit(both, world.b, 60_000)])
    assert await world.earned(world.a) == (0, 0.0) and await world.earned(world.b) == (0, 0.0)
    assert (await world.ledger.statement(world.a))["rejected_visits"] == {"host_own_viewer": 1}


async def test_visit_outside_the_alliance_earns_nothing(world: World) -> None:
    v = await world.viewer_from(world.a)
    await world.sink.write([visit(v, world.outsider, 60_000)])
    assert await world.earned(world.a) == (0, 0.0)


async def test_unattributed_and_expired_attribution_earn_nothing(world: World) -> None:
    old = await world.viewer_from(world.a, at=T0 - 25 * 3600)  # window of 24 h is over
    await world.sink.write([visit("never-attributed", world.b, 60_000), visit(old, world.b, 60_000)])
    assert await world.earned(world.a) == (0, 0.0)


async def test_short_dwell_earns_nothing_and_heartbeats_can_qualify(world: World) -> None:
    v = await world.viewer_from(world.a)
    await world.sink.write([visit(v, world.b, 9_000)])
    assert await world.earned(world.a) == (0, 0.0)
    w = await world.viewer_from(world.a)
    base = {"viewer_id": w, "session_id": "s1", "room_id": "hb_room", "merchant_id": world.b}
    await world.sink.write(
        [
            {**base, "event_id": f"hb-enter-{w}", "type": "enter", "ts": int((T0 + 100) * 1000)},
            {**base, "event_id": f"hb-1-{w}", "type": "heartbeat", "ts": int((T0 + 105) * 1000)},
        ]
    )
    assert await world.earned(world.a) == (0, 0.0)  # 5 s so far
    await world.sink.write(
        [{**base, "event_id": f"hb-2-{w}", "type": "heartbeat", "ts": int((T0 + 112) * 1000)}]
    )
    assert await world.earned(world.a) == (1, 3.0)
    await world.sink.write(
        [{**visit(w, world.b, 40_000, room="hb_room")}]
    )  # the leave: same visit, once a day
    assert await world.earned(world.a) == (1, 3.0)


async def test_one_visit_per_viewer_per_partner_room_per_day(world: World) -> None:
    v = await world.viewer_from(world.a)
    await world.sink.write([visit(v, world.b, 20_000), visit(v, world.b, 20_000, at=T0 + 600)])
    assert await world.earned(world.a) == (1, 3.0)


async def test_visits_beyond_the_per_viewer_cap_earn_nothing(world: World) -> None:
    v = await world.viewer_from(world.a)
    await world.sink.write([visit(v, world.b, 20_000, room=f"r{i}", at=T0 + 60 * (i + 1)) for i in range(5)])
    assert await world.earned(world.a) == (3, 9.0)  # viewer_daily_cap = 3
    assert (await world.ledger.statement(world.a))["rejected_visits"] == {"viewer_cap": 2}


async def test_visits_beyond_the_per_device_cap_earn_nothing(world: World) -> None:
    viewers = [await world.viewer_from(world.a, at=T0 - 7200 * (i + 1)) for i in range(2)]
    events = [
        visit(v, world.b, 20_000, room=f"r{i}", device="shared-phone", at=T0 + 60 * (i + 3 * j))
        for j, v in enumerate(viewers)
        for i in range(3)
    ]
    await world.sink.write(events)
    assert await world.earned(world.a) == (4, 12.0)  # device_daily_cap = 4 over both viewers


async def test_zero_dwell_burst_from_a_device_earns_nothing(world: World) -> None:
    v = await world.viewer_from(world.a)
    burst = [visit(v, world.b, 0, room=f"z{i}", device="farm-1", at=T0 + i) for i in range(6)]
    after = visit(v, world.b, 30_000, room="real", device="farm-1", at=T0 + 30)
    await world.sink.write([*burst, after])
    assert await world.earned(world.a) == (0, 0.0)
    assert (await world.ledger.statement(world.a))["rejected_visits"]["zero_dwell_burst"] == 1


async def test_self_visits_earn_nothing_however_long(world: World) -> None:
    v = await world.viewer_from(world.a)
    await world.sink.write([visit(v, world.a, 3_600_000, room=f"own{i}", at=T0 + 60 * i) for i in range(3)])
    assert await world.earned(world.a) == (0, 0.0)


async def test_viewers_created_in_a_burst_on_one_device_earn_nothing(world: World) -> None:
    viewers = [await world.viewer_from(world.a, device="emulator-9", at=T0 + i) for i in range(4)]
    await world.sink.write(
        [visit(v, world.b, 30_000, device="emulator-9", at=T0 + 60 + i) for i, v in enumerate(viewers)]
    )
    assert await world.earned(world.a) == (0, 0.0)
    honest = await world.viewer_from(world.a, device="own-phone")
    await world.sink.write([visit(honest, world.b, 30_000, device="own-phone")])
    assert await world.earned(world.a) == (1, 3.0)


async def test_daily_earning_cap_holds(world: World) -> None:
    viewers = [await world.viewer_from(world.a, at=T0 - 120 * (i + 1)) for i in range(25)]
    await world.sink.write([visit(v, world.b, 20_000, at=T0 + i) for i, v in enumerate(viewers)])
    assert await world.earned(world.a) == (20, 60.0)  # daily_earning_cap = 60 at 3 per visit


async def test_ledger_is_unchanged_under_replay(world: World, pool: asyncpg.Pool, redis: Redis) -> None:
    v = await world.viewer_from(world.a, store_id="sto_x", staff_id="stf_y")
    await redis.set(grant_key("s9", f"room_of_{world.a}"), "1")  # the feed's boost stage granted this one
    batch = [
        visit(v, world.b, 20_000),
        {
            "event_id": f"imp-{v}",
            "type": "impression",
            "viewer_id": "someone",
            "session_id": "s9",
            "room_id": f"room_of_{world.a}",
            "merchant_id": world.a,
            "ts": int((T0 + 200) * 1000),
            "boosted": True,
        },
        {
            "event_id": f"buy-{v}",
            "type": "purchase",
            "viewer_id": v,
            "session_id": "s1",
            "room_id": "rb",
            "merchant_id": world.b,
            "ts": int((T0 + 300) * 1000),
            "order_id": "o1",
            "product_id": "p1",
            "amount": 99.5,
            "currency": "CNY",
        },
    ]
    await world.sink.write(batch)
    first = await world.ledger.statement(world.a)
    txns = await pool.fetchval("SELECT count(*) FROM ledger_transactions")
    for _ in range(3):
        await world.sink.write(list(reversed(batch)))
        await world.sink.write(batch)
    again = await world.ledger.statement(world.a)
    assert again == first
    assert await pool.fetchval("SELECT count(*) FROM ledger_transactions") == txns
    assert first["earned"] == 3.0 and first["delivered"] == 1.0 and first["balance"] == 2.0
    assert first["attributed"]["by_store"] == [
        {"store_id": "sto_x", "currency": "CNY", "orders": 1, "gmv": 99.5}
    ]
    assert first["attributed"]["by_staff"][0]["staff_id"] == "stf_y"
    assert first["revenue_share"][0]["commission"] == round(99.5 * 0.05, 2)
    assert await world.ledger.unbalanced_transactions() == 0
    truth = {(b.merchant_id, b.alliance_id): b for b in await world.ledger.balances_from_postings()}
    for b in await world.ledger.balances():
        assert truth[(b.merchant_id, b.alliance_id)] == b


async def test_boosted_impressions_count_only_against_the_feeds_grant(world: World, redis: Redis) -> None:
    v = await world.viewer_from(world.a)
    await world.sink.write([visit(v, world.b, 20_000)])  # A is owed 3 impressions

    def boosted(event_id: str, session: str) -> dict[str, Any]:
        return {
            "event_id": event_id,
            "type": "impression",
            "viewer_id": "x",
            "session_id": session,
            "room_id": "ra",
            "merchant_id": world.a,
            "ts": int((T0 + 100) * 1000),
            "boosted": True,
        }

    forged = [boosted(f"fake-{i}-{v}", "s-forger") for i in range(3)]  # a client claiming boosts
    await world.sink.write(forged)
    assert (await world.ledger.statement(world.a))["delivered"] == 0
    await redis.set(grant_key(f"s-real-{v}", "ra"), "1")
    await world.sink.write([boosted(f"real-{v}", f"s-real-{v}"), boosted(f"again-{v}", f"s-real-{v}")])
    await world.sink.write([boosted(f"real-{v}", f"s-real-{v}")])  # the same event replayed
    assert (await world.ledger.statement(world.a))["delivered"] == 1  # one grant, one delivery


async def test_ledger_rows_cannot_be_updated_or_deleted(world: World, pool: asyncpg.Pool) -> None:
    v = await world.viewer_from(world.a)
    await world.sink.write([visit(v, world.b, 20_000)])
    with pytest.raises(asyncpg.PostgresError, match="append-only"):
        await pool.execute("UPDATE ledger_postings SET amount = 1000 WHERE merchant_id = $1", world.a)
    with pytest.raises(asyncpg.PostgresError, match="append-only"):
        await pool.execute("DELETE FROM ledger_transactions WHERE merchant_id = $1", world.a)


async def test_an_unbalanced_posting_is_refused_at_commit(world: World, pool: asyncpg.Pool) -> None:
    with pytest.raises(asyncpg.PostgresError, match="does not balance"):
        async with pool.acquire() as conn, conn.transaction():
            txn = await conn.fetchval(
                """INSERT INTO ledger_transactions (source_id, kind, merchant_id, alliance_id, amount, at)
                   VALUES ('forged', 'earned', $1, $2, 100, now()) RETURNING txn_id""",
                world.a,
                world.alliance_id,
            )
            await conn.execute(
                "INSERT INTO ledger_postings VALUES ($1, 'merchant', $2, $3, 100)",
                txn,
                world.alliance_id,
                world.a,
            )

"""Contributed visits, delivered exposure and attributed orders through the real AllianceSink
(PostgreSQL + Redis): who earns, the evidence a visit is judged on (the server's clock, rooms
served on feed pages), the anti-gaming rules, and a ledger that replay cannot change."""

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
from alliance.clock import DAY_S
from alliance.codes import Attribution
from alliance.consumer import AllianceSink
from alliance.grants import TOKENS_KEY, TokenBucket
from alliance.ledger import Ledger

_ids = itertools.count()


def _an_hour_ago_inside_one_day() -> float:
    """An hour ago (inside every window), moved back when the next half hour would cross midnight UTC:
    the per-day caps count by alliance day (alliance.clock, UTC at the default scale), and a test's
    visits span up to ten minutes after T0, so a run just after 01:00 UTC split them over two days."""
    t = time.time() - 3600
    crosses = t + 1800 >= (t // DAY_S + 1) * DAY_S
    return t - 1800 if crosses else t  # still a different T0 each run (fixed device ids, one database)


T0 = _an_hour_ago_inside_one_day()


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


def event(kind: str, viewer: str, host: str, room: str, at: float, **extra: Any) -> dict[str, Any]:
    """One event as the topic carries it: `received_at` is when the server got it (epoch ms)."""
    return {
        "event_id": f"{kind}{next(_ids)}-{secrets.token_hex(4)}",
        "type": kind,
        "viewer_id": viewer,
        "session_id": extra.pop("session", "s1"),
        "room_id": room,
        "merchant_id": host,
        "ts": int(extra.pop("ts", at) * 1000),
        "received_at": int(at * 1000),
        **extra,
    }


def visit(
    viewer: str,
    host: str,
    dwell_ms: int,
    *,
    at: float = T0 + 60,
    room: str | None = None,
    device: str | None = None,
    served: bool = True,
) -> list[dict[str, Any]]:
    """What an honest app and the feed leave on the topic for one visit: the feed serves the room,
    the app posts the enter when it happens and the leave when it happens (received `dwell_ms` later)."""
    room = room or f"room_of_{host}"
    extra = {"device_id": device} if device else {}
    events = [event("served", viewer, host, room, at - 1)] if served else []
    events.append(event("enter", viewer, host, room, at, **extra))
    events.append(event("leave", viewer, host, room, at + dwell_ms / 1000, dwell_ms=dwell_ms, **extra))
    return events


def visits(*each: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for events in each for e in events]


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
    await world.sink.write(visit(v, world.b, 15_000))
    assert await world.earned(world.a) == (1, 3.0)
    assert await world.earned(world.b) == (0, 0.0)


async def test_as_viewers_in_as_own_rooms_earn_nothing(world: World) -> None:
    v = await world.viewer_from(world.a)
    await world.sink.write(visit(v, world.a, 60_000))
    assert await world.earned(world.a) == (0, 0.0)
    assert (await world.ledger.statement(world.a))["visits"]["not_counted"]["self_visit"]["visits"] == 1


async def test_bs_own_viewers_earn_nothing_for_a(world: World) -> None:
    v = await world.viewer_from(world.b)
    await world.sink.write(visit(v, world.b, 60_000))
    both = await world.viewer_from(world.a, at=T0 + 1)  # in A's window, but B's own viewer too
    await world.book.attribute(both, "s2", Attribution(world.b), T0)
    await world.sink.write(visit(both, world.b, 60_000))
    assert await world.earned(world.a) == (0, 0.0) and await world.earned(world.b) == (0, 0.0)
    assert list((await world.ledger.statement(world.a))["visits"]["not_counted"]) == ["host_own_viewer"]


async def test_visit_outside_the_alliance_earns_nothing(world: World) -> None:
    v = await world.viewer_from(world.a)
    await world.sink.write(visit(v, world.outsider, 60_000))
    assert await world.earned(world.a) == (0, 0.0)


async def test_unattributed_and_expired_attribution_earn_nothing(world: World) -> None:
    old = await world.viewer_from(world.a, at=T0 - 25 * 3600)  # window of 24 h is over
    await world.sink.write(visits(visit("never-attributed", world.b, 60_000), visit(old, world.b, 60_000)))
    assert await world.earned(world.a) == (0, 0.0)


async def test_dwell_is_timed_on_the_servers_clock_not_the_clients(world: World) -> None:
    """A scripted 1 s swipe that claims 12 s: the leave arrives a second after the enter."""
    v = await world.viewer_from(world.a)
    room = "swiped"
    await world.sink.write(
        [
            event("served", v, world.b, room, T0 + 59),
            event("enter", v, world.b, room, T0 + 60),
            event("leave", v, world.b, room, T0 + 61, dwell_ms=12_000, ts=T0 + 72),
        ]
    )
    assert await world.earned(world.a) == (0, 0.0)
    assert list((await world.ledger.statement(world.a))["visits"]["not_counted"]) == ["short_dwell"]


async def test_a_heartbeat_stamped_late_proves_only_when_it_arrived(world: World) -> None:
    """A 2 s visit plus a heartbeat stamped 11 s after entering."""
    v = await world.viewer_from(world.a)
    room = "stamped"
    await world.sink.write(
        [
            event("served", v, world.b, room, T0 + 59),
            event("enter", v, world.b, room, T0 + 60),
            event("heartbeat", v, world.b, room, T0 + 62, ts=T0 + 71),
            event("leave", v, world.b, room, T0 + 62.5, dwell_ms=11_500, ts=T0 + 71.5),
        ]
    )
    assert await world.earned(world.a) == (0, 0.0)


async def test_a_leave_posted_late_claims_no_more_than_its_dwell(world: World) -> None:
    v = await world.viewer_from(world.a)
    room = "late"
    await world.sink.write(
        [
            event("served", v, world.b, room, T0 + 59),
            event("enter", v, world.b, room, T0 + 60),
            event("leave", v, world.b, room, T0 + 600, dwell_ms=4_000),  # the app was backgrounded
        ]
    )
    assert await world.earned(world.a) == (0, 0.0)


async def test_heartbeats_qualify_a_visit_once_and_its_leave_is_not_listed_again(world: World) -> None:
    v = await world.viewer_from(world.a)
    room = "hb_room"
    await world.sink.write(
        [
            event("served", v, world.b, room, T0 + 99),
            event("enter", v, world.b, room, T0 + 100),
            event("heartbeat", v, world.b, room, T0 + 105),
        ]
    )
    assert await world.earned(world.a) == (0, 0.0)  # 5 s so far
    await world.sink.write([event("heartbeat", v, world.b, room, T0 + 112)])
    assert await world.earned(world.a) == (1, 3.0)
    await world.sink.write([event("leave", v, world.b, room, T0 + 140, dwell_ms=40_000)])
    assert await world.earned(world.a) == (1, 3.0)
    shown = (await world.ledger.statement(world.a))["visits"]
    assert shown["counted"]["visits"] == 1 and shown["not_counted"] == {}


async def test_a_silent_app_stops_the_evidence(world: World) -> None:
    """Heartbeats come every 30 s while a room plays; after a longer silence the visit's evidence
    stops at the last one, whatever the leave says later."""
    v = await world.viewer_from(world.a)
    room = "silent"
    await world.sink.write(
        [
            event("served", v, world.b, room, T0 + 99),
            event("enter", v, world.b, room, T0 + 100),
            event("heartbeat", v, world.b, room, T0 + 105),
            event("heartbeat", v, world.b, room, T0 + 400),  # nothing for 5 minutes
            event("leave", v, world.b, room, T0 + 401, dwell_ms=301_000),
        ]
    )
    assert await world.earned(world.a) == (0, 0.0)


async def test_a_room_not_reached_through_the_feed_earns_nothing(world: World) -> None:
    v = await world.viewer_from(world.a)
    await world.sink.write(visit(v, world.b, 30_000, served=False, room="typed-in"))
    entry = [event("served", v, world.b, "deep-linked", T0 + 10, entry=True)]
    await world.sink.write(entry + visit(v, world.b, 30_000, served=False, room="deep-linked", at=T0 + 11))
    elsewhere = [event("served", v, world.b, "other-session", T0 + 20, session="s-other")]
    await world.sink.write(
        elsewhere + visit(v, world.b, 30_000, served=False, room="other-session", at=T0 + 21)
    )
    assert await world.earned(world.a) == (0, 0.0)
    shown = (await world.ledger.statement(world.a))["visits"]["not_counted"]
    assert shown["not_from_feed"]["visits"] == 3


async def test_a_leave_without_an_enter_earns_nothing(world: World) -> None:
    v = await world.viewer_from(world.a)
    served = event("served", v, world.b, "no-enter", T0 + 10)
    leave = event("leave", v, world.b, "no-enter", T0 + 40, dwell_ms=30_000)
    await world.sink.write([served, leave])
    assert await world.earned(world.a) == (0, 0.0)
    assert list((await world.ledger.statement(world.a))["visits"]["not_counted"]) == ["no_enter"]


async def test_short_dwell_earns_nothing(world: World) -> None:
    v = await world.viewer_from(world.a)
    await world.sink.write(visit(v, world.b, 9_000))
    assert await world.earned(world.a) == (0, 0.0)


async def test_one_visit_per_viewer_per_partner_room_per_day(world: World) -> None:
    v = await world.viewer_from(world.a)
    await world.sink.write(visits(visit(v, world.b, 20_000), visit(v, world.b, 20_000, at=T0 + 600)))
    assert await world.earned(world.a) == (1, 3.0)
    shown = (await world.ledger.statement(world.a))["visits"]["not_counted"]
    assert shown["already_counted_today"]["visits"] == 1


async def test_visits_beyond_the_per_viewer_cap_earn_nothing(world: World) -> None:
    v = await world.viewer_from(world.a)
    await world.sink.write(
        visits(*(visit(v, world.b, 20_000, room=f"r{i}", at=T0 + 60 * (i + 1)) for i in range(5)))
    )
    assert await world.earned(world.a) == (3, 9.0)  # viewer_daily_cap = 3
    assert (await world.ledger.statement(world.a))["visits"]["not_counted"]["viewer_cap"]["visits"] == 2


async def test_a_viewer_counts_for_two_merchants_a_day_at_most(world: World, pool: asyncpg.Pool) -> None:
    """The same viewer id opening three members' codes in turn and visiting the others' rooms."""
    c, d = mid(), mid()
    book = AllianceBook(pool)
    for m in (c, d):
        await book.invite(world.alliance_id, world.a, m)
        await book.join(world.alliance_id, m)
    v = await world.viewer_from(world.a, at=T0)
    await world.sink.write(visit(v, world.b, 20_000, room="m1", at=T0 + 60))
    await world.book.attribute(v, "s1", Attribution(world.b), T0 + 100)
    await world.sink.write(visit(v, c, 20_000, room="m2", at=T0 + 160))
    await world.book.attribute(v, "s1", Attribution(c), T0 + 200)
    await world.sink.write(visit(v, d, 20_000, room="m3", at=T0 + 260))
    assert await world.earned(world.a) == (1, 3.0) and await world.earned(world.b) == (1, 3.0)
    assert await world.earned(c) == (0, 0.0)
    assert list((await world.ledger.statement(c))["visits"]["not_counted"]) == ["viewer_merchants_cap"]


async def test_visits_beyond_the_per_device_cap_earn_nothing(world: World) -> None:
    viewers = [await world.viewer_from(world.a, at=T0 - 7200 * (i + 1)) for i in range(2)]
    events = visits(
        *(
            visit(v, world.b, 20_000, room=f"r{i}", device="shared-phone", at=T0 + 60 * (i + 3 * j))
            for j, v in enumerate(viewers)
            for i in range(3)
        )
    )
    await world.sink.write(events)
    assert await world.earned(world.a) == (4, 12.0)  # device_daily_cap = 4 over both viewers


async def test_zero_dwell_burst_from_a_device_earns_nothing(world: World) -> None:
    v = await world.viewer_from(world.a)
    burst = visits(*(visit(v, world.b, 0, room=f"z{i}", device="farm-1", at=T0 + i) for i in range(6)))
    after = visit(v, world.b, 30_000, room="real", device="farm-1", at=T0 + 30)
    await world.sink.write([*burst, *after])
    assert await world.earned(world.a) == (0, 0.0)
    assert (await world.ledger.statement(world.a))["visits"]["not_counted"]["zero_dwell_burst"]["visits"] == 1


async def test_self_visits_earn_nothing_however_long(world: World) -> None:
    v = await world.viewer_from(world.a)
    await world.sink.write(
        visits(*(visit(v, world.a, 3_600_000, room=f"own{i}", at=T0 + 60 * i) for i in range(3)))
    )
    assert await world.earned(world.a) == (0, 0.0)


async def test_viewers_created_in_a_burst_on_one_device_earn_nothing(world: World) -> None:
    viewers = [await world.viewer_from(world.a, device="emulator-9", at=T0 + i) for i in range(4)]
    await world.sink.write(
        visits(
            *(visit(v, world.b, 30_000, device="emulator-9", at=T0 + 60 + i) for i, v in enumerate(viewers))
        )
    )
    assert await world.earned(world.a) == (0, 0.0)
    honest = await world.viewer_from(world.a, device="own-phone")
    await world.sink.write(visit(honest, world.b, 30_000, device="own-phone"))
    assert await world.earned(world.a) == (1, 3.0)


async def test_daily_earning_cap_holds(world: World) -> None:
    viewers = [await world.viewer_from(world.a, at=T0 - 120 * (i + 1)) for i in range(25)]
    await world.sink.write(visits(*(visit(v, world.b, 20_000, at=T0 + i) for i, v in enumerate(viewers))))
    assert await world.earned(world.a) == (20, 60.0)  # daily_earning_cap = 60 at 3 per visit


async def grant(redis: Redis, viewer: str, session: str, merchant: str, room: str) -> None:
    """What the boost stage leaves when it places `room` on `viewer`'s page (it has a token)."""
    await redis.hset(TOKENS_KEY, merchant, "5")
    assert await TokenBucket(redis).take(viewer, session, [(merchant, room)], limit=1) == [True]


def impression(viewer: str, session: str, room: str, merchant: str, **extra: Any) -> dict[str, Any]:
    """An app-reported impression: the room was on the viewer's screen."""
    return event("impression", viewer, merchant, room, T0 + 200, session=session, page_token="3.abc", **extra)


async def test_ledger_is_unchanged_under_replay(world: World, pool: asyncpg.Pool, redis: Redis) -> None:
    v = await world.viewer_from(world.a, store_id="sto_x", staff_id="stf_y")
    await grant(redis, "someone", "s9", world.a, f"room_of_{world.a}")
    batch = [
        *visit(v, world.b, 20_000),
        impression("someone", "s9", f"room_of_{world.a}", world.a),
        event(
            "purchase",
            v,
            world.b,
            "rb",
            T0 + 300,
            order_id="o1",
            product_id="p1",
            amount=99.5,
            currency="CNY",
        ),
    ]
    await world.sink.write(batch)
    first = await world.ledger.statement(world.a)
    txns = await pool.fetchval("SELECT count(*) FROM ledger_transactions")
    for _ in range(3):
        await world.sink.write(batch)
    again = await world.ledger.statement(world.a)
    assert again == first
    assert await pool.fetchval("SELECT count(*) FROM ledger_transactions") == txns
    assert first["earned"] == 3.0 and first["held"] == 3.0 and first["delivered"] == 1.0
    assert first["balance"] == -1.0  # nothing confirmed yet: delivered ahead of confirmation
    # A viewer's purchase event is a funnel signal: it never moves attributed GMV or revenue share.
    assert first["attributed"] == {"orders": 0, "gmv": [], "by_store": [], "by_staff": []}
    assert first["revenue_share"] == []
    assert await world.ledger.unbalanced_transactions() == 0
    truth = {(b.merchant_id, b.alliance_id): b for b in await world.ledger.balances_from_postings()}
    for b in await world.ledger.balances():
        assert truth[(b.merchant_id, b.alliance_id)] == b


async def test_boosted_impressions_count_only_against_the_feeds_grant(world: World, redis: Redis) -> None:
    v = await world.viewer_from(world.a)
    await world.sink.write(visit(v, world.b, 20_000))  # A is owed 3 impressions (provisionally)
    forged = [
        impression("x", "s-forger", "ra", world.a, boosted=True) for _ in range(3)
    ]  # a client claiming boosts the feed never granted
    await world.sink.write(forged)
    assert (await world.ledger.statement(world.a))["delivered"] == 0
    real = f"s-real-{v}"
    await grant(redis, "x", real, world.a, "ra")
    other_viewer = impression("y", real, "ra", world.a, boosted=True)  # not the viewer granted
    no_token = {**impression("x", real, "ra", world.a), "page_token": None}  # not from a page
    await world.sink.write([other_viewer, no_token])
    assert (await world.ledger.statement(world.a))["delivered"] == 0
    first = impression("x", real, "ra", world.a)  # the app need not even say boosted
    await world.sink.write([first, impression("x", real, "ra", world.a, boosted=True)])
    await world.sink.write([first])  # the same event replayed
    assert (await world.ledger.statement(world.a))["delivered"] == 1  # one grant, one delivery
    served = event("served", "x", world.a, "ra", T0 + 201, session=real, boosted=True)
    await world.sink.write([served])  # the feed's own record of serving it is never a delivery
    assert (await world.ledger.statement(world.a))["delivered"] == 1


async def test_ledger_rows_cannot_be_updated_or_deleted(world: World, pool: asyncpg.Pool) -> None:
    v = await world.viewer_from(world.a)
    await world.sink.write(visit(v, world.b, 20_000))
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


async def test_on_a_compressed_clock_dwell_is_scaled(pool: asyncpg.Pool, redis: Redis, world: World) -> None:
    """A benchmark's day in 24 minutes (scale 60): a visit received 250 ms apart is 15 s of the
    alliance's time and qualifies; 100 ms apart is 6 s and does not, whatever the leave claims."""
    from alliance.clock import AllianceClock

    sink = AllianceSink(pool, redis, AllianceClock(scale=60.0))
    ok, short = await world.viewer_from(world.a), await world.viewer_from(world.a)
    await sink.write(
        [
            event("served", ok, world.b, "fast-1", T0 + 10),
            event("enter", ok, world.b, "fast-1", T0 + 10.01),
            event("leave", ok, world.b, "fast-1", T0 + 10.26, dwell_ms=15_000),
            event("served", short, world.b, "fast-2", T0 + 20),
            event("enter", short, world.b, "fast-2", T0 + 20.01),
            event("leave", short, world.b, "fast-2", T0 + 20.11, dwell_ms=15_000),
        ]
    )
    assert await world.earned(world.a) == (1, 3.0)

"""Expiry: owed exposure older than the expiry window ages out, once, as a balanced posting. The
overview's hourly series are UTC hours whatever the server's time zone."""

from __future__ import annotations

import secrets
import time
from dataclasses import replace

import asyncpg

from alliance import ledger
from alliance.alliances import AllianceBook, Terms
from alliance.ledger import Ledger
from roomfeed.db import create_pool
from roomfeed.settings import Settings


async def test_unpaid_exposure_older_than_a_week_expires_once(pool: asyncpg.Pool) -> None:
    a = f"mer_{secrets.token_hex(8)}"
    alliance = await AllianceBook(pool).create(a, "Expiry", Terms())
    now = time.time()
    async with pool.acquire() as conn, conn.transaction():
        await ledger.post(
            conn,
            source_id=f"old-{a}",
            kind="earned",
            merchant_id=a,
            alliance_id=alliance.alliance_id,
            amount=30.0,
            at=now - 8 * 86400,
            visits=1,
        )
        await ledger.post(
            conn,
            source_id=f"new-{a}",
            kind="earned",
            merchant_id=a,
            alliance_id=alliance.alliance_id,
            amount=6.0,
            at=now - 3600,
            visits=2,
        )
        await ledger.post(
            conn,
            source_id=f"paid-{a}",
            kind="delivered",
            merchant_id=a,
            alliance_id=alliance.alliance_id,
            amount=1.0,
            at=now - 60,
        )
    book = Ledger(pool)
    await book.expire(now)
    await book.expire(now)  # the same day again: nothing more
    statement = await book.statement(a)
    assert (
        statement["expired"] == 29.0 and statement["balance"] == 6.0
    )  # what was earned this week stays owed
    assert await book.unbalanced_transactions() == 0


async def test_the_hourly_series_are_utc_hours_on_a_server_in_another_time_zone(migrated: Settings) -> None:
    """initdb writes the machine's zone as the server's default TimeZone: on a server set up in
    India (+05:30; here the same default as a connection parameter) the series' hours still begin
    on the UTC hour, as the console plots them."""
    joiner = "&" if "?" in migrated.database_url else "?"
    elsewhere = replace(migrated, database_url=f"{migrated.database_url}{joiner}timezone=Asia%2FKolkata")
    pool = await create_pool(elsewhere, min_size=1)
    try:
        a = f"mer_{secrets.token_hex(8)}"
        alliance = await AllianceBook(pool).create(a, "Hours", Terms())
        now = time.time()
        async with pool.acquire() as conn, conn.transaction():
            await ledger.post(
                conn,
                source_id=f"hour-{a}",
                kind="earned",
                merchant_id=a,
                alliance_id=alliance.alliance_id,
                amount=3.0,
                at=now - 60,
                visits=1,
            )
        overview = await Ledger(pool).overview(now)
    finally:
        await pool.close()
    (mine,) = [m for m in overview["merchants"] if m["merchant_id"] == a]
    assert [p["hour"] % 3600 for p in mine["series"]] == [0.0]

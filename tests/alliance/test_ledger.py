"""Expiry: owed exposure older than the expiry window ages out, once, as a balanced posting."""

from __future__ import annotations

import secrets
import time

import asyncpg

from alliance import ledger
from alliance.alliances import AllianceBook, Terms
from alliance.ledger import Ledger


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

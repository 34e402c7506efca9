"""Conversion counts most: a counted visit that led to a verified order with the host earns more.

A viewer attributed to contributor A visits partner B's room (a counted visit, alliance.consumer);
if B records a verified order of that viewer (rooms' order ledger, POST /v1/orders, attributed to A
by alliance.orders) from an hour before the visit was judged (viewers buy while they watch; a visit
is judged at its leave) up to the alliance's attribution window after it, the visit *converted*: A
earns `conversion_weight` × the exchange rate on top of the visit's credit, within the alliance's
daily earning cap. A viewer's `purchase` event never converts anything: only the seller's books do.

The order and the visit arrive by different paths in either order (the order through the API, the
visit through the worker's alliance sink), so each side looks for the other when it is recorded,
under the contributor's advisory lock (the one the sink takes): whichever commits second sees the
first. One sale converts at most one visit and a visit converts once (a unique index on
`alliance_visits.conversion_entry_id`); replaying either side changes nothing (ledger sources
`order:<sale entry>` are unique per kind).

The bonus is part of the visit's `amount`: it holds, confirms and is clawed back with its visit
(settlement moves a visit's whole amount). On a visit already confirmed it is posted and confirmed
at once (the visit has held; the order is the seller's record). A sale refunded or cancelled in full
takes its bonus back (`clawed_back` of `order:<sale entry>`); the visit's own credit stands.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import asyncpg

from alliance import ledger
from alliance.clock import AllianceClock

BEFORE_S = 3_600  # an order this long before the visit was judged still counts (bought while watching)


def _ts(epoch_s: float) -> datetime:
    return datetime.fromtimestamp(epoch_s, UTC)


async def lock_contributors(conn: asyncpg.Connection, contributors: Sequence[str]) -> None:
    """The contributors' advisory locks (the alliance sink's), in one order so two callers never deadlock."""
    for contributor in sorted(set(contributors)):
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", "alliance:" + contributor)


async def convert_sales(
    conn: asyncpg.Connection, clock: AllianceClock, sales: Sequence[dict[str, Any]]
) -> int:
    """Credit the visits these attributed sales converted (each sale: entry_id, viewer_id, merchant_id
    = the contributor, seller_merchant_id, room_id, at as epoch s). Call inside a transaction holding
    the contributors' locks. Returns the visits converted."""
    done = 0
    for sale in sales:
        if sale["viewer_id"] is None or sale["merchant_id"] == sale["seller_merchant_id"]:
            continue
        visit = await conn.fetchrow(
            """SELECT v.source_event_id, v.state, v.contributor_id, v.alliance_id, a.exchange_rate,
                      a.conversion_weight, a.daily_earning_cap
               FROM alliance_visits v JOIN alliances a USING (alliance_id)
               WHERE v.earned AND v.state IN ('held', 'confirmed') AND v.conversion_entry_id IS NULL
                 AND v.viewer_id = $1 AND v.contributor_id = $2 AND v.host_merchant_id = $3
                 AND ($4::text IS NULL OR v.room_id = $4)
                 AND v.at >= $5::timestamptz - a.attribution_window_h * $6::float8 * interval '1 second'
                 AND v.at <= $5::timestamptz + $7::float8 * interval '1 second'
                 AND NOT EXISTS (SELECT 1 FROM alliance_visits c WHERE c.conversion_entry_id = $8)
               ORDER BY v.at LIMIT 1 FOR UPDATE OF v""",
            sale["viewer_id"],
            sale["merchant_id"],
            sale["seller_merchant_id"],
            sale["room_id"],
            _ts(sale["at"]),
            clock.wall(3_600),
            clock.wall(BEFORE_S),
            sale["entry_id"],
        )
        if visit is not None and await _apply(conn, visit, sale["entry_id"], sale["at"], clock):
            done += 1
    return done


async def convert_visit(
    conn: asyncpg.Connection, clock: AllianceClock, source_event_id: str, at: float
) -> bool:
    """Credit a just-counted visit with a verified sale already recorded that it led to (the order came
    first). Call inside the transaction that recorded the visit, holding its contributor's lock."""
    visit = await conn.fetchrow(
        """SELECT v.source_event_id, v.state, v.contributor_id, v.alliance_id, v.viewer_id, v.host_merchant_id,
                  v.room_id, a.exchange_rate, a.conversion_weight, a.daily_earning_cap, a.attribution_window_h
           FROM alliance_visits v JOIN alliances a USING (alliance_id)
           WHERE v.source_event_id = $1 AND v.earned AND v.state IN ('held', 'confirmed')
             AND v.conversion_entry_id IS NULL
           FOR UPDATE OF v""",
        source_event_id,
    )
    if visit is None:
        return False
    sale = await conn.fetchrow(
        """SELECT o.entry_id, extract(epoch FROM o.at)::float8 AS at FROM attributed_order_entries o
           WHERE o.kind = 'sale' AND o.viewer_id = $1 AND o.seller_merchant_id = $2 AND o.merchant_id = $3
             AND (o.room_id IS NULL OR o.room_id = $4)
             AND o.at >= $5::timestamptz - $6::float8 * interval '1 second'
             AND o.at <= $5::timestamptz + $7::float8 * interval '1 second'
             AND NOT EXISTS (SELECT 1 FROM alliance_visits c WHERE c.conversion_entry_id = o.entry_id)
             AND (SELECT sum(r.amount) FROM attributed_order_entries r WHERE r.sale_entry_id = o.entry_id) > 0
           ORDER BY o.at LIMIT 1""",
        visit["viewer_id"],
        visit["host_merchant_id"],
        visit["contributor_id"],
        visit["room_id"],
        _ts(at),
        clock.wall(BEFORE_S),
        clock.wall(visit["attribution_window_h"] * 3_600),
    )
    if sale is None:
        return False
    return await _apply(conn, visit, sale["entry_id"], float(sale["at"]), clock)


async def _apply(
    conn: asyncpg.Connection, visit: asyncpg.Record, entry_id: str, at: float, clock: AllianceClock
) -> bool:
    """Add the conversion bonus to the (locked) visit and post it; False when the daily cap leaves none."""
    earned_today = float(
        await conn.fetchval(
            """SELECT COALESCE(sum(amount), 0) FROM ledger_transactions WHERE kind IN ('earned', 'provisional')
               AND merchant_id = $1 AND alliance_id = $2 AND at >= $3""",
            visit["contributor_id"],
            visit["alliance_id"],
            clock.day_start_ts(at),
        )
    )
    bonus = min(
        float(visit["exchange_rate"]) * float(visit["conversion_weight"]),
        float(visit["daily_earning_cap"]) - earned_today,
    )
    if bonus <= 0.0001:
        return False
    bonus = round(bonus, 4)
    await conn.execute(
        """UPDATE alliance_visits SET conversion_entry_id = $2, conversion_amount = $3, amount = amount + $3
           WHERE source_event_id = $1""",
        visit["source_event_id"],
        entry_id,
        Decimal(str(bonus)),
    )
    source = f"order:{entry_id}"
    common = {"merchant_id": visit["contributor_id"], "alliance_id": visit["alliance_id"], "amount": bonus}
    await ledger.post(conn, source_id=source, kind="provisional", at=at, **common)
    if visit["state"] == "confirmed":  # the visit has held: its bonus is spendable with it
        await ledger.post(conn, source_id=source, kind="confirmed", at=at, **common)
    return True


async def reverse_sales(conn: asyncpg.Connection, sale_entry_ids: Sequence[str], at: float) -> int:
    """Take back the bonus of visits whose sale is now refunded or cancelled in full (net <= 0). Call
    inside a transaction holding the contributors' locks. Returns the bonuses taken back."""
    rows = await conn.fetch(
        """SELECT v.source_event_id, v.state, v.contributor_id, v.alliance_id, v.conversion_entry_id,
                  v.conversion_amount
           FROM alliance_visits v
           WHERE v.conversion_entry_id = ANY($1::text[]) AND v.conversion_amount > 0
             AND v.state IN ('held', 'confirmed')
             AND (SELECT sum(r.amount) FROM attributed_order_entries r
                  WHERE r.sale_entry_id = v.conversion_entry_id) <= 0
           FOR UPDATE OF v""",
        sorted(set(sale_entry_ids)),
    )
    for r in rows:
        await conn.execute(
            """UPDATE alliance_visits SET amount = amount - conversion_amount, conversion_amount = 0
               WHERE source_event_id = $1""",
            r["source_event_id"],
        )
        await ledger.post(
            conn,
            source_id=f"order:{r['conversion_entry_id']}",
            kind="clawed_back",
            merchant_id=r["contributor_id"],
            alliance_id=r["alliance_id"],
            amount=float(r["conversion_amount"]),
            at=at,
            from_account="held" if r["state"] == "held" else "merchant",
        )
    return len(rows)

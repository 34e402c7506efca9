"""Attributed orders: verified order entries (rooms' order ledger) matched to the viewer's attribution.

`OrderAttribution` subscribes to `rooms.orders.OrderBook`: each sale whose buyer was attributed to a
merchant (store, staff) at the order's time is copied into `attributed_order_entries` with that
attribution; a refund or cancellation copies the attribution of its sale, so reversals land in the
same store's and staff's books. Idempotent by entry_id. Revenue share and attributed GMV are read
from here only: a viewer's `purchase` event never reaches these tables.

`AttributedOrders` is what other parts of the alliance (credit, statements) read.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import asyncpg

from alliance import conversions  # a module: conversions posts through ledger, which reads orders
from alliance.attribution import attributions_at, latest_at
from alliance.clock import AllianceClock
from rooms.orders import OrderEntry


def _ts(epoch_s: float) -> datetime:
    return datetime.fromtimestamp(epoch_s, UTC)


class OrderAttribution:
    """The alliance's subscriber to verified order entries: attributes them, and credits the visits
    the sales converted (alliance.conversions)."""

    def __init__(self, pool: asyncpg.Pool, clock: AllianceClock | None = None) -> None:
        self.pool = pool
        self.clock = clock or AllianceClock()

    async def record(self, entries: Sequence[OrderEntry]) -> None:
        sales = [e for e in entries if e.kind == "sale" and e.viewer_id is not None]
        reversals = [e for e in entries if e.kind != "sale"]
        async with self.pool.acquire() as conn, conn.transaction():
            rows: list[tuple[Any, ...]] = []
            if sales:
                found = await attributions_at(
                    conn,
                    sorted({str(e.viewer_id) for e in sales}),
                    min(e.at for e in sales),
                    max(e.at for e in sales),
                )
                for e in sales:
                    a = latest_at(found.get(str(e.viewer_id), []), e.at)
                    if a is not None:
                        rows.append(_row(e, a.merchant_id, a.store_id, a.staff_id, e.viewer_id))
            if reversals:
                of_sale = {
                    r["sale_entry_id"]: r
                    for r in await conn.fetch(
                        """SELECT sale_entry_id, merchant_id, store_id, staff_id, viewer_id
                           FROM attributed_order_entries WHERE entry_id = ANY($1::text[])""",
                        sorted({e.sale_entry_id for e in reversals}),
                    )
                }
                # A sale in the same batch is attributed above; its reversal follows it.
                for row in rows:
                    of_sale.setdefault(
                        row[1],
                        {"merchant_id": row[6], "store_id": row[7], "staff_id": row[8], "viewer_id": row[5]},
                    )
                for e in reversals:
                    sale = of_sale.get(e.sale_entry_id)
                    if sale is not None:
                        rows.append(
                            _row(
                                e, sale["merchant_id"], sale["store_id"], sale["staff_id"], sale["viewer_id"]
                            )
                        )
            if rows:
                await conn.executemany(
                    """INSERT INTO attributed_order_entries (entry_id, sale_entry_id, kind, order_id,
                           seller_merchant_id, viewer_id, merchant_id, store_id, staff_id, room_id, product_id,
                           amount, currency, at)
                       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
                       ON CONFLICT (entry_id) DO NOTHING""",
                    rows,
                )
                await self._conversions(conn, rows, reversals)

    async def _conversions(
        self, conn: asyncpg.Connection, rows: list[tuple[Any, ...]], reversals: list[OrderEntry]
    ) -> None:
        """Visits the attributed sales converted earn their bonus; reversed sales take it back."""
        sales = [
            {
                "entry_id": r[0],
                "seller_merchant_id": r[4],
                "viewer_id": r[5],
                "merchant_id": r[6],
                "room_id": r[9],
                "at": r[13].timestamp(),
            }
            for r in rows
            if r[2] == "sale"
        ]
        await conversions.lock_contributors(conn, [r[6] for r in rows])
        if sales:
            await conversions.convert_sales(conn, self.clock, sales)
        if reversals:
            await conversions.reverse_sales(
                conn, [e.sale_entry_id for e in reversals], max(e.at for e in reversals)
            )


def _row(
    e: OrderEntry, merchant_id: str, store_id: str | None, staff_id: str | None, viewer_id: str | None
) -> tuple[Any, ...]:
    return (
        e.entry_id,
        e.sale_entry_id,
        e.kind,
        e.order_id,
        e.merchant_id,
        viewer_id,
        merchant_id,
        store_id,
        staff_id,
        e.room_id,
        e.product_id,
        e.amount,
        e.currency,
        _ts(e.at),
    )


@dataclass(frozen=True)
class AttributedSales:
    """One bucket of a merchant's attributed verified sales (per store, staff or in total)."""

    currency: str
    orders: int
    gross: Decimal
    reversed: Decimal  # refunds and cancellations, as a positive amount

    @property
    def net(self) -> Decimal:
        return self.gross - self.reversed


class AttributedOrders:
    """Reads a merchant's attributed verified sales: totals, by store and by staff."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def entries(
        self, merchant_id: str, after: tuple[datetime, str] | None = None, limit: int = 5000
    ) -> list[dict[str, Any]]:
        """The merchant's attributed order entries in time order (`roomfeed export`): each sale,
        refund and cancellation of an order its codes brought, with the store and staff, never the
        buyer; page with `after` = the last entry's (`at_ts`, `entry_id`)."""
        rows = await self.pool.fetch(
            """SELECT entry_id, kind, order_id, seller_merchant_id, store_id, staff_id, room_id, product_id,
                      amount, currency, extract(epoch FROM at)::float8 AS at, at AS at_ts
               FROM attributed_order_entries
               WHERE merchant_id = $1 AND ($2::timestamptz IS NULL OR (at, entry_id) > ($2, $3))
               ORDER BY at, entry_id LIMIT $4""",
            merchant_id,
            after[0] if after else None,
            after[1] if after else "",
            limit,
        )
        return [dict(r) for r in rows]

    async def of_merchant(
        self, merchant_id: str
    ) -> tuple[list[AttributedSales], dict[str, list[AttributedSales]], dict[str, list[AttributedSales]]]:
        rows = await self.pool.fetch(
            """SELECT store_id, staff_id, currency,
                      count(*) FILTER (WHERE kind = 'sale') AS orders,
                      COALESCE(sum(amount) FILTER (WHERE kind = 'sale'), 0) AS gross,
                      COALESCE(-sum(amount) FILTER (WHERE kind <> 'sale'), 0) AS reversed,
                      GROUPING(store_id) AS no_store, GROUPING(staff_id) AS no_staff
               FROM attributed_order_entries WHERE merchant_id = $1
               GROUP BY GROUPING SETS ((store_id, currency), (staff_id, currency), (currency))""",
            merchant_id,
        )
        totals: list[AttributedSales] = []
        by_store: dict[str, list[AttributedSales]] = {}
        by_staff: dict[str, list[AttributedSales]] = {}
        for r in rows:
            sales = AttributedSales(r["currency"], int(r["orders"]), r["gross"], r["reversed"])
            if r["no_store"] == 0:
                if r["store_id"] is not None:  # merchant-level codes count in totals only
                    by_store.setdefault(r["store_id"], []).append(sales)
            elif r["no_staff"] == 0:
                if r["staff_id"] is not None:
                    by_staff.setdefault(r["staff_id"], []).append(sales)
            else:
                totals.append(sales)
        return (
            sorted(totals, key=lambda s: s.currency),
            by_store,
            by_staff,
        )

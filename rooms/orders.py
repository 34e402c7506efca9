"""Verified orders: the merchant's order system reports each sale, refund and cancellation to roomfeed.

Why in `rooms/`: an order is checked against what this domain owns (the merchant, its products and
their prices and currencies, its rooms and flash deals with their claims), so the check runs on one
domain's tables in one transaction. Who brought the buyer (attribution) is the alliance's; it
receives every order entry through `OrderSubscriber` and keeps its own attributed copy.

The order ledger is append-only: a sale is one positive entry, a refund or cancellation a negative
entry reversing part or all of it. Reporting the same order (or refund) again is a no-op answered
with what was recorded; the same id with other content is a 409. Each entry is handed to the
subscribers right after its commit and, when that fails or the process dies first, by `deliver_pending`
(run every second by the API process) until they have it; subscribers are idempotent by entry id.

Nothing a viewer sends reaches these tables: only a merchant key or an order-system key
(role `order_system`, one per merchant, issued by an operator) may write them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Literal, Protocol

import asyncpg

from roomfeed.errors import Conflict, NotFound, ValidationFailed
from rooms.models import EntryKind

log = logging.getLogger("roomfeed.rooms.orders")

CENT = Decimal("0.01")
# numeric(14, 2): the largest order amount the books hold.
MAX_AMOUNT = Decimal("999999999999.99")
MAX_QUANTITY = 100_000
MAX_AHEAD_S = 5 * 60
MAX_AGE_S = 90 * 24 * 3600
DELIVER_EVERY_S = 1.0


@dataclass(frozen=True)
class OrderIn:
    """An order as the order system reports it (checked by `OrderBook.record`)."""

    order_id: str
    product_id: str
    quantity: int
    unit_price: Decimal
    currency: str
    ordered_at: float  # epoch seconds
    viewer_id: str | None = None
    room_id: str | None = None
    deal_id: str | None = None
    amount: Decimal | None = None  # when given, must equal unit_price x quantity


@dataclass(frozen=True)
class OrderEntry:
    """One line of the order ledger, as subscribers (the alliance) receive it."""

    entry_id: str
    kind: EntryKind
    merchant_id: str
    order_id: str
    sale_entry_id: str  # the sale this entry belongs to (itself for a sale)
    viewer_id: str | None
    room_id: str | None
    product_id: str
    deal_id: str | None
    quantity: int
    amount: Decimal  # signed: > 0 for a sale, < 0 for a reversal
    currency: str
    at: float  # epoch seconds


def amounts(values: dict[str, Any]) -> dict[str, Decimal]:
    """Amounts as exact cents (`to_money`: whole cents, > 0, < 1e12), every bad one named; None is absent."""
    money: dict[str, Decimal] = {}
    errors: dict[str, str] = {}
    for field, value in values.items():
        if value is None:
            continue
        try:
            money[field] = to_money(value, field)
        except ValidationFailed as exc:
            errors.update(exc.fields)
    if errors:
        raise ValidationFailed("invalid fields: " + ", ".join(sorted(errors)), fields=errors)
    return money


class OrderSubscriber(Protocol):
    """Receives every order entry at least once (idempotent by entry_id)."""

    async def record(self, entries: Sequence[OrderEntry]) -> None: ...


def sale_entry_id(merchant_id: str, order_id: str) -> str:
    return f"sale:{merchant_id}:{order_id}"


def to_money(value: Any, field: str) -> Decimal:
    """A JSON number (or numeric string) as an exact amount in cents; refuses more decimals."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValidationFailed(f"{field} must be a number", fields={field: "must be a number"})
    try:
        money = Decimal(str(value))
    except ArithmeticError:
        raise ValidationFailed(f"{field} must be a number", fields={field: "must be a number"}) from None
    if not money.is_finite():
        raise ValidationFailed(f"{field} must be a number", fields={field: "must be a number"})
    if money <= 0:
        raise ValidationFailed(f"{field} must be greater than 0", fields={field: "must be greater than 0"})
    if money > MAX_AMOUNT:
        reason = f"must be at most {MAX_AMOUNT} (amounts of 1e12 and above are refused)"
        raise ValidationFailed(f"{field} {reason}", fields={field: reason})
    if money != money.quantize(CENT):
        raise ValidationFailed(f"{field} has more than 2 decimals", fields={field: "must be whole cents"})
    return money.quantize(CENT)


def cents(value: Decimal) -> str:
    """An amount as the API writes it: a decimal string with two places ("378.00")."""
    return str(Decimal(value).quantize(CENT))


def _ts(epoch_s: float) -> datetime:
    return datetime.fromtimestamp(epoch_s, UTC)


def _refuse(field: str, reason: str) -> ValidationFailed:
    return ValidationFailed(f"{field} {reason}", fields={field: reason})


_ORDER_COLUMNS = (
    "merchant_id, order_id, viewer_id, room_id, product_id, deal_id, quantity, unit_price, amount, currency, "
    "extract(epoch FROM ordered_at)::float8 AS ordered_at, recorded_by, "
    "extract(epoch FROM recorded_at)::float8 AS recorded_at"
)
_ORDER = f"SELECT {_ORDER_COLUMNS} FROM orders WHERE merchant_id = $1 AND order_id = $2"  # noqa: S608
_ORDER_FOR_UPDATE = _ORDER + " FOR UPDATE"
_ENTRY_COLUMNS = (
    "e.entry_id, e.kind, e.merchant_id, e.order_id, e.refund_id, e.amount, e.currency, "
    "extract(epoch FROM e.at)::float8 AS at, o.viewer_id, o.room_id, o.product_id, o.deal_id, o.quantity"
)


def _entry(row: asyncpg.Record) -> OrderEntry:
    return OrderEntry(
        entry_id=row["entry_id"],
        kind=row["kind"],
        merchant_id=row["merchant_id"],
        order_id=row["order_id"],
        sale_entry_id=sale_entry_id(row["merchant_id"], row["order_id"]),
        viewer_id=row["viewer_id"],
        room_id=row["room_id"],
        product_id=row["product_id"],
        deal_id=row["deal_id"],
        quantity=int(row["quantity"]),
        amount=row["amount"],
        currency=row["currency"],
        at=float(row["at"]),
    )


def order_json(order: asyncpg.Record, entries: Sequence[asyncpg.Record]) -> dict[str, Any]:
    reversed_amount = -sum((e["amount"] for e in entries if e["kind"] != "sale"), Decimal(0))
    return {
        "order_id": order["order_id"],
        "merchant_id": order["merchant_id"],
        "viewer_id": order["viewer_id"],
        "room_id": order["room_id"],
        "product_id": order["product_id"],
        "deal_id": order["deal_id"],
        "quantity": order["quantity"],
        "unit_price": cents(order["unit_price"]),
        "amount": cents(order["amount"]),
        "currency": order["currency"],
        "ordered_at": order["ordered_at"],
        "recorded_at": order["recorded_at"],
        "reversed": cents(reversed_amount),
        "net": cents(order["amount"] - reversed_amount),
        "status": "cancelled"
        if any(e["kind"] == "cancel" for e in entries)
        else "refunded"
        if reversed_amount == order["amount"]
        else "partly_refunded"
        if reversed_amount > 0
        else "paid",
        "entries": [
            {
                "entry_id": e["entry_id"],
                "kind": e["kind"],
                "refund_id": e["refund_id"],
                "amount": cents(e["amount"]),
                "currency": e["currency"],
                "at": e["at"],
            }
            for e in entries
        ],
    }


class OrderBook:
    """Records and reads a merchant's verified orders (tables `orders`, `order_entries`)."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self.subscribers: list[OrderSubscriber] = []
        self._task: asyncio.Task[None] | None = None

    def subscribe(self, subscriber: OrderSubscriber) -> None:
        self.subscribers.append(subscriber)

    # --- writing -----------------------------------------------------------------------------------

    async def record(self, merchant_id: str, order: OrderIn, key_id: str) -> tuple[dict[str, Any], bool]:
        """Check and record a sale; returns (the order, created). Same order again: (it, False)."""
        total = self._total(order, time.time())
        async with self.pool.acquire() as conn, conn.transaction():
            created = await self._record_in(conn, merchant_id, order, total, key_id)
            if not created:
                return await self._get(conn, merchant_id, order.order_id), False
        await self._deliver_now()
        return await self.get(merchant_id, order.order_id), True

    async def record_many(
        self, orders: Sequence[tuple[str, OrderIn]], key_id: str
    ) -> tuple[int, list[tuple[int, ValidationFailed | Conflict]]]:
        """Past orders of a platform (`roomfeed import`): each (merchant_id, order) checked and recorded
        as `record` does, all in one transaction; returns (how many were new, the refused ones by
        position). When any is refused nothing is recorded; the same order again is not new."""
        now = time.time()
        refused: list[tuple[int, ValidationFailed | Conflict]] = []
        created = 0
        async with self.pool.acquire() as conn:
            transaction = conn.transaction()
            await transaction.start()
            try:
                for position, (merchant_id, order) in enumerate(orders):
                    try:
                        total = self._total(order, now)
                        async with conn.transaction():  # a savepoint: a refused order leaves no trace
                            created += await self._record_in(conn, merchant_id, order, total, key_id)
                    except (ValidationFailed, Conflict) as exc:
                        refused.append((position, exc))
            except BaseException:
                await transaction.rollback()
                raise
            if refused:
                await transaction.rollback()
                return 0, refused
            await transaction.commit()
        await self._deliver_now()
        return created, []

    def _total(self, order: OrderIn, now: float) -> Decimal:
        """The order's amount, after the checks that need no database."""
        if order.ordered_at > now + MAX_AHEAD_S:
            raise _refuse("ordered_at", "is more than 5 minutes in the future")
        if order.ordered_at < now - MAX_AGE_S:
            raise _refuse("ordered_at", "is more than 90 days old")
        if not 0 < order.quantity <= MAX_QUANTITY:
            raise _refuse("quantity", f"must be 1 to {MAX_QUANTITY}")
        total = (order.unit_price * order.quantity).quantize(CENT)
        if total > MAX_AMOUNT:
            raise _refuse("amount", f"must be at most {MAX_AMOUNT} (amounts of 1e12 and above are refused)")
        if order.amount is not None and order.amount != total:
            raise _refuse("amount", f"must equal unit_price x quantity ({total})")
        return total

    async def _record_in(
        self, conn: asyncpg.Connection, merchant_id: str, order: OrderIn, total: Decimal, key_id: str
    ) -> bool:
        """Record one sale in the caller's transaction; False when it was recorded before (same content)."""
        existing = await self._order_row(conn, merchant_id, order.order_id, lock=False)
        if existing is not None:
            self._same_or_conflict(existing, order, total)
            return False
        await self._check(conn, merchant_id, order)
        inserted = await conn.fetchval(
            """INSERT INTO orders (merchant_id, order_id, viewer_id, room_id, product_id, deal_id, quantity,
                   unit_price, amount, currency, ordered_at, recorded_by)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
               ON CONFLICT DO NOTHING RETURNING true""",
            merchant_id,
            order.order_id,
            order.viewer_id,
            order.room_id,
            order.product_id,
            order.deal_id,
            order.quantity,
            order.unit_price,
            total,
            order.currency,
            _ts(order.ordered_at),
            key_id,
        )
        if not inserted:  # reported twice at once: the other request won
            raise Conflict("this order is being recorded by another request; retry")
        await conn.execute(
            """INSERT INTO order_entries (entry_id, merchant_id, order_id, kind, amount, currency, at)
               VALUES ($1, $2, $3, 'sale', $4, $5, $6)""",
            sale_entry_id(merchant_id, order.order_id),
            merchant_id,
            order.order_id,
            total,
            order.currency,
            _ts(order.ordered_at),
        )
        return True

    def _same_or_conflict(self, existing: asyncpg.Record, order: OrderIn, total: Decimal) -> None:
        same = (
            existing["product_id"] == order.product_id
            and existing["quantity"] == order.quantity
            and existing["unit_price"] == order.unit_price
            and existing["amount"] == total
            and existing["currency"] == order.currency
            and existing["viewer_id"] == order.viewer_id
            and existing["deal_id"] == order.deal_id
            and existing["room_id"] == order.room_id
        )
        if not same:
            raise Conflict(
                "order_id was already reported with other content; an order is never changed, "
                "report a refund or a cancellation instead",
                fields={"order_id": "already recorded with other content"},
            )

    async def _check(self, conn: asyncpg.Connection, merchant_id: str, order: OrderIn) -> None:
        product = await conn.fetchrow(
            "SELECT price, currency FROM products WHERE product_id = $1 AND merchant_id = $2",
            order.product_id,
            merchant_id,
        )
        if product is None:
            raise _refuse("product_id", "is not a product of this merchant")
        if order.room_id is not None and not await conn.fetchval(
            "SELECT true FROM rooms WHERE room_id = $1 AND merchant_id = $2", order.room_id, merchant_id
        ):
            raise _refuse("room_id", "is not a room of this merchant")
        if order.deal_id is None:
            price, currency = product["price"], product["currency"]
        else:
            deal = await conn.fetchrow(
                """SELECT product_id, price, currency, per_viewer_limit, starts_at, ends_at FROM deals
                   WHERE deal_id = $1 AND merchant_id = $2""",
                order.deal_id,
                merchant_id,
            )
            if deal is None:
                raise _refuse("deal_id", "is not a deal of this merchant")
            if deal["product_id"] != order.product_id:
                raise _refuse("product_id", "is not the product of this deal")
            if not deal["starts_at"].timestamp() <= order.ordered_at <= deal["ends_at"].timestamp():
                raise _refuse("ordered_at", "is outside the deal's window")
            if order.viewer_id is None:
                raise _refuse("viewer_id", "is required for a deal order (the viewer who claimed it)")
            claimed = await conn.fetchval(
                "SELECT claimed FROM deal_viewer_claims WHERE deal_id = $1 AND viewer_id = $2",
                order.deal_id,
                order.viewer_id,
            )
            # Lock the viewer's deal orders so two orders at once cannot both fit the claim.
            await conn.execute(
                "SELECT pg_advisory_xact_lock(hashtext($1))", f"order-deal:{order.deal_id}:{order.viewer_id}"
            )
            ordered = await conn.fetchval(
                """SELECT COALESCE(sum(quantity), 0) FROM orders o WHERE deal_id = $1 AND viewer_id = $2
                   AND NOT EXISTS (SELECT 1 FROM order_entries e WHERE e.merchant_id = o.merchant_id
                                   AND e.order_id = o.order_id AND e.kind = 'cancel')""",
                order.deal_id,
                order.viewer_id,
            )
            if claimed is None or int(ordered) + order.quantity > int(claimed):
                raise _refuse(
                    "quantity", f"exceeds what this viewer claimed of the deal ({int(claimed or 0)} units)"
                )
            price, currency = deal["price"], deal["currency"]
        if order.currency != currency:
            raise _refuse("currency", f"must be {currency}, the currency of the product or deal")
        if order.unit_price != price:
            raise _refuse("unit_price", f"must be {price}, the price of the product or deal")

    async def reverse(
        self,
        merchant_id: str,
        order_id: str,
        kind: Literal["refund", "cancel"],
        *,
        refund_id: str | None = None,
        amount: Decimal | None = None,
        at: float | None = None,
    ) -> tuple[dict[str, Any], bool]:
        """A refund (of `amount`, up to what is left) or a cancellation (of all that is left)."""
        if kind == "refund" and (refund_id is None or amount is None):
            raise ValueError("a refund needs refund_id and amount")
        when = at if at is not None else time.time()
        if when > time.time() + MAX_AHEAD_S:
            raise _refuse("at", "is more than 5 minutes in the future")
        entry_id = (
            f"refund:{merchant_id}:{order_id}:{refund_id}"
            if kind == "refund"
            else f"cancel:{merchant_id}:{order_id}"
        )
        async with self.pool.acquire() as conn, conn.transaction():
            order = await self._order_row(conn, merchant_id, order_id, lock=True)
            if order is None:
                raise NotFound("no such order")
            entries = await conn.fetch(
                "SELECT kind, amount, entry_id FROM order_entries WHERE merchant_id = $1 AND order_id = $2",
                merchant_id,
                order_id,
            )
            previous = next((e for e in entries if e["entry_id"] == entry_id), None)
            if previous is not None:
                if kind == "refund" and -previous["amount"] != amount:
                    raise Conflict(
                        "refund_id was already used with another amount",
                        fields={"refund_id": "already recorded with another amount"},
                    )
                return await self._get(conn, merchant_id, order_id), False
            if any(e["kind"] == "cancel" for e in entries):
                raise Conflict("this order is cancelled; nothing is left to reverse")
            left = sum((e["amount"] for e in entries), Decimal(0))
            value = left if kind == "cancel" else amount
            assert value is not None
            if kind == "refund" and value > left:
                raise _refuse("amount", f"is more than what is left of the order ({left})")
            if value <= 0:
                raise Conflict("this order is fully refunded; nothing is left to reverse")
            await conn.execute(
                """INSERT INTO order_entries (entry_id, merchant_id, order_id, kind, refund_id, amount, currency, at)
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8)""",
                entry_id,
                merchant_id,
                order_id,
                kind,
                refund_id,
                -value,
                order["currency"],
                _ts(max(when, order["ordered_at"])),
            )
        await self._deliver_now()
        return await self.get(merchant_id, order_id), True

    # --- reading -----------------------------------------------------------------------------------

    async def _order_row(
        self, conn: asyncpg.Connection, merchant_id: str, order_id: str, *, lock: bool
    ) -> asyncpg.Record | None:
        if lock:
            return await conn.fetchrow(_ORDER_FOR_UPDATE, merchant_id, order_id)
        return await conn.fetchrow(_ORDER, merchant_id, order_id)

    async def _get(self, conn: asyncpg.Connection, merchant_id: str, order_id: str) -> dict[str, Any]:
        order = await self._order_row(conn, merchant_id, order_id, lock=False)
        if order is None:
            raise NotFound("no such order")
        entries = await conn.fetch(
            """SELECT entry_id, kind, refund_id, amount, currency, extract(epoch FROM at)::float8 AS at
               FROM order_entries WHERE merchant_id = $1 AND order_id = $2 ORDER BY recorded_at, entry_id""",
            merchant_id,
            order_id,
        )
        return order_json(order, entries)

    async def get(self, merchant_id: str, order_id: str) -> dict[str, Any]:
        async with self.pool.acquire() as conn:
            return await self._get(conn, merchant_id, order_id)

    async def page(
        self, merchant_id: str, limit: int = 100, after: str | None = None
    ) -> list[dict[str, Any]]:
        rows = await self.pool.fetch(
            f"""SELECT {_ORDER_COLUMNS} FROM orders WHERE merchant_id = $1 AND ($2::text IS NULL OR order_id > $2)
                ORDER BY order_id LIMIT $3""",  # noqa: S608 (fixed columns)
            merchant_id,
            after,
            limit,
        )
        if not rows:
            return []
        entries = await self.pool.fetch(
            """SELECT order_id, entry_id, kind, refund_id, amount, currency, extract(epoch FROM at)::float8 AS at
               FROM order_entries WHERE merchant_id = $1 AND order_id = ANY($2::text[])
               ORDER BY recorded_at, entry_id""",
            merchant_id,
            [r["order_id"] for r in rows],
        )
        by_order: dict[str, list[asyncpg.Record]] = {}
        for e in entries:
            by_order.setdefault(e["order_id"], []).append(e)
        return [order_json(r, by_order.get(r["order_id"], [])) for r in rows]

    async def totals(self, merchant_id: str) -> list[dict[str, Any]]:
        """The merchant's books per currency: orders, gross, reversals (refunds, cancellations), net."""
        rows = await self.pool.fetch(
            """SELECT currency,
                      count(*) FILTER (WHERE kind = 'sale') AS orders,
                      COALESCE(sum(amount) FILTER (WHERE kind = 'sale'), 0) AS gross,
                      count(*) FILTER (WHERE kind = 'refund') AS refunds,
                      count(*) FILTER (WHERE kind = 'cancel') AS cancellations,
                      COALESCE(-sum(amount) FILTER (WHERE kind <> 'sale'), 0) AS reversed,
                      sum(amount) AS net
               FROM order_entries WHERE merchant_id = $1 GROUP BY currency ORDER BY currency""",
            merchant_id,
        )
        return [
            {
                "currency": r["currency"],
                "orders": int(r["orders"]),
                "gross": cents(r["gross"]),
                "refunds": int(r["refunds"]),
                "cancellations": int(r["cancellations"]),
                "reversed": cents(r["reversed"]),
                "net": cents(r["net"]),
            }
            for r in rows
        ]

    async def entries(self, entry_ids: Sequence[str]) -> list[OrderEntry]:
        rows = await self.pool.fetch(
            f"""SELECT {_ENTRY_COLUMNS} FROM order_entries e JOIN orders o USING (merchant_id, order_id)
                WHERE e.entry_id = ANY($1::text[]) ORDER BY e.recorded_at, e.entry_id""",  # noqa: S608
            list(entry_ids),
        )
        return [_entry(r) for r in rows]

    # --- delivery to subscribers ---------------------------------------------------------------------

    async def deliver_pending(self, limit: int = 500) -> int:
        """Hand undelivered entries to every subscriber, then mark them; returns how many."""
        if not self.subscribers:
            return 0
        delivered = 0
        while True:
            async with self.pool.acquire() as conn, conn.transaction():
                rows = await conn.fetch(
                    f"""SELECT {_ENTRY_COLUMNS} FROM order_entries e JOIN orders o USING (merchant_id, order_id)
                        WHERE e.delivered_at IS NULL ORDER BY e.recorded_at, e.entry_id
                        LIMIT $1 FOR UPDATE OF e SKIP LOCKED""",  # noqa: S608 (fixed columns)
                    limit,
                )
                if not rows:
                    return delivered
                batch = [_entry(r) for r in rows]
                for subscriber in self.subscribers:
                    await subscriber.record(batch)
                await conn.execute(
                    "UPDATE order_entries SET delivered_at = now() WHERE entry_id = ANY($1::text[])",
                    [e.entry_id for e in batch],
                )
                delivered += len(batch)
            if len(rows) < limit:
                return delivered

    async def _deliver_now(self) -> None:
        try:
            await self.deliver_pending()
        except Exception as exc:  # the relay loop finishes the job
            log.warning("order entries not delivered yet: %s", exc)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            await self._deliver_now()
            await asyncio.sleep(DELIVER_EVERY_S)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None

"""`roomfeed export`: one merchant's own data as CSV files, read through its domains' readers.

    rooms.csv    every room of the merchant (rooms.lifecycle.rooms_of_merchant)
    orders.csv   the orders attributed to the merchant's codes (the alliance's attributed orders)
    ledger.csv   every line of its exposure ledger: earned, delivered, expired (alliance.ledger)

Whose data: a merchant key exports its own merchant only; an operator (an operator key, or the CLI's
database access) names the merchant. Nothing of another merchant is ever read: every query is scoped
by the one merchant_id.
"""

from __future__ import annotations

import csv
import datetime as dt
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg

from alliance.ledger import Ledger
from alliance.orders import AttributedOrders
from roomfeed.auth import KeyVerifier
from rooms.catalog import MerchantCatalog
from rooms.lifecycle import rooms_of_merchant

ROOM_COLUMNS = (
    "room_id",
    "title",
    "category",
    "host",
    "tags",
    "price_band",
    "format",
    "status",
    "scheduled_at",
    "started_at",
    "ended_at",
    "stream_url",
    "replay_url",
    "created_at",
)
LEDGER_COLUMNS = ("txn_id", "at", "kind", "alliance_id", "amount", "source_id")
# Attributed orders: sales (and their refunds, cancellations) of viewers the merchant's codes brought.
ORDER_COLUMNS = (
    "entry_id",
    "at",
    "kind",
    "order_id",
    "seller_merchant_id",
    "store_id",
    "staff_id",
    "room_id",
    "product_id",
    "amount",
    "currency",
)
TIME_COLUMNS = frozenset({"at", "scheduled_at", "started_at", "ended_at", "created_at"})


class ExportRefused(ValueError):
    """The credential may not export this merchant's data (or names nobody)."""


@dataclass(frozen=True)
class Exported:
    merchant_id: str
    files: dict[str, int]  # file → data rows


async def merchant_to_export(pool: asyncpg.Pool, key: str | None, merchant_id: str | None) -> str:
    """Whose data a request may export: a merchant key its own merchant only (naming another is
    refused), an operator key or no key (the CLI's database access) the merchant it names."""
    if key is not None:
        principal = await KeyVerifier(pool).verify(key)
        if principal is None:
            raise ExportRefused("the key is not valid (unknown or revoked)")
        if principal.role == "merchant":
            if merchant_id is not None and merchant_id != principal.merchant_id:
                raise ExportRefused("a merchant key exports its own merchant's data only")
            return principal.own_merchant()
        if principal.role != "operator":
            raise ExportRefused(f"a {principal.role} key cannot export merchant data")
    if merchant_id is None:
        raise ExportRefused("name the merchant (--merchant-id) or give its merchant key (--key)")
    if not await MerchantCatalog(pool).exists(merchant_id):
        raise ExportRefused(f"no merchant {merchant_id}")
    return merchant_id


async def export_merchant(pool: asyncpg.Pool, merchant_id: str, out: Path) -> Exported:
    out.mkdir(parents=True, exist_ok=True)
    files = {
        "rooms.csv": await _write(out / "rooms.csv", ROOM_COLUMNS, _rooms(pool, merchant_id)),
        "orders.csv": await _write(out / "orders.csv", ORDER_COLUMNS, _orders(pool, merchant_id)),
        "ledger.csv": await _write(out / "ledger.csv", LEDGER_COLUMNS, _ledger(pool, merchant_id)),
    }
    return Exported(merchant_id, files)


async def _rooms(pool: asyncpg.Pool, merchant_id: str) -> AsyncIterator[dict[str, Any]]:
    async for room in rooms_of_merchant(pool, merchant_id):
        yield room


async def _ledger(pool: asyncpg.Pool, merchant_id: str) -> AsyncIterator[dict[str, Any]]:
    ledger, after = Ledger(pool), 0
    while True:
        lines = await ledger.transactions(merchant_id, after)
        for line in lines:
            yield line
        if not lines:
            return
        after = lines[-1]["txn_id"]


async def _orders(pool: asyncpg.Pool, merchant_id: str) -> AsyncIterator[dict[str, Any]]:
    orders = AttributedOrders(pool)
    after: tuple[dt.datetime, str] | None = None
    while True:
        entries = await orders.entries(merchant_id, after)
        for entry in entries:
            yield entry
        if not entries:
            return
        after = (entries[-1]["at_ts"], entries[-1]["entry_id"])


def _cell(name: str, value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list):
        return "|".join(str(v) for v in value)
    if name in TIME_COLUMNS:  # epoch seconds, as ISO 8601 (UTC) for a spreadsheet
        return dt.datetime.fromtimestamp(float(value), dt.UTC).isoformat(timespec="seconds")
    if isinstance(value, Decimal):
        return format(value, "f")
    return str(value)


async def _write(path: Path, columns: Iterable[str], rows: AsyncIterator[dict[str, Any]]) -> int:
    names = list(columns)
    count = 0
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(names)
        async for row in rows:
            writer.writerow([_cell(name, row.get(name)) for name in names])
            count += 1
    return count

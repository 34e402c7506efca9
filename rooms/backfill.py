"""A platform's existing merchants, stores, staff, products and past rooms, written with their own ids
(`roomfeed import`, bulk/).

A record is the API's body (read by rooms.inputs, the routes' own readers) plus what only history has:
its id, its owner's id, when it was created, and for a room its past lifecycle (ended, with the times
it was live; or still scheduled). `read_*` return the typed record or raise ValidationFailed naming
every bad field. `CatalogBackfill` finds which ids exist (and whose they are), then writes a file's new
records in one transaction; an id that exists is left as it is, so importing twice changes nothing.

Imported rooms never enter the live index: an ended room is history, a scheduled one goes live through
the API like any other.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Literal

import asyncpg

from roomfeed.errors import ValidationFailed
from roomfeed.validation import Body
from rooms.inputs import (
    URL,
    NewMerchant,
    NewProduct,
    NewRoom,
    NewStaff,
    NewStore,
    epoch,
    read_merchant,
    read_product,
    read_room,
    read_staff,
    read_store,
)

Kind = Literal["merchants", "stores", "staff", "products", "rooms"]
# Each kind's id column and the column naming its owner (the merchant; a staff member's store too).
ID_FIELD: dict[str, str] = {
    "merchants": "merchant_id",
    "stores": "store_id",
    "staff": "staff_id",
    "products": "product_id",
    "rooms": "room_id",
}
# Fields of a record that are not the API's body.
_HISTORY_FIELDS = ("merchant_id", "store_id", "staff_id", "product_id", "room_id", "created_at")
_ROOM_HISTORY_FIELDS = ("status", "started_at", "ended_at", "replay_url")
IMPORTABLE_ROOM_STATUSES = ("ended", "scheduled")


@dataclass(frozen=True)
class ImportedMerchant:
    merchant_id: str
    created_at: float | None
    merchant: NewMerchant


@dataclass(frozen=True)
class ImportedStore:
    store_id: str
    merchant_id: str
    created_at: float | None
    store: NewStore


@dataclass(frozen=True)
class ImportedStaff:
    staff_id: str
    store_id: str
    merchant_id: str | None  # the store's merchant when absent
    created_at: float | None
    staff: NewStaff


@dataclass(frozen=True)
class ImportedProduct:
    product_id: str
    merchant_id: str
    created_at: float | None
    product: NewProduct


@dataclass(frozen=True)
class ImportedRoom:
    room_id: str
    merchant_id: str
    created_at: float | None
    status: str
    started_at: float | None
    ended_at: float | None
    replay_url: str | None
    room: NewRoom


Imported = ImportedMerchant | ImportedStore | ImportedStaff | ImportedProduct | ImportedRoom


def _api_body(record: dict[str, Any], extra: Iterable[str] = ()) -> dict[str, Any]:
    skip = {*_HISTORY_FIELDS, *extra}
    return {k: v for k, v in record.items() if k not in skip}


def _read(body: Body, reader: Any, api_fields: dict[str, Any]) -> Any:
    """The API body as the route reads it; its field errors join the record's own (all named at once)."""
    try:
        return reader(api_fields)
    except ValidationFailed as exc:
        body.errors.update({k: v for k, v in (exc.fields or {}).items() if k not in body.errors})
        return None


def _finish(body: Body, value: Any) -> None:
    body.finish("the record has invalid fields")
    assert value is not None


def read_imported_merchant(record: dict[str, Any]) -> ImportedMerchant:
    body = Body(record)
    merchant_id = body.ident("merchant_id")
    created_at = epoch(body, "created_at", required=False)
    merchant = _read(body, read_merchant, _api_body(record))
    _finish(body, merchant)
    return ImportedMerchant(merchant_id, created_at, merchant)


def read_imported_store(record: dict[str, Any]) -> ImportedStore:
    body = Body(record)
    store_id = body.ident("store_id")
    merchant_id = body.ident("merchant_id")
    created_at = epoch(body, "created_at", required=False)
    store = _read(body, read_store, _api_body(record))
    _finish(body, store)
    return ImportedStore(store_id, merchant_id, created_at, store)


def read_imported_staff(record: dict[str, Any]) -> ImportedStaff:
    body = Body(record)
    staff_id = body.ident("staff_id")
    store_id = body.ident("store_id")
    merchant_id = body.ident("merchant_id", required=False)
    created_at = epoch(body, "created_at", required=False)
    staff = _read(body, read_staff, _api_body(record))
    _finish(body, staff)
    return ImportedStaff(staff_id, store_id, merchant_id, created_at, staff)


def read_imported_product(record: dict[str, Any]) -> ImportedProduct:
    body = Body(record)
    product_id = body.ident("product_id")
    merchant_id = body.ident("merchant_id")
    created_at = epoch(body, "created_at", required=False)
    product = _read(body, read_product, _api_body(record))
    _finish(body, product)
    return ImportedProduct(product_id, merchant_id, created_at, product)


def read_imported_room(record: dict[str, Any], now: float | None = None) -> ImportedRoom:
    """A past room (`ended`, with `started_at` and `ended_at`) or a future one (`scheduled`)."""
    body = Body(record)
    room_id = body.ident("room_id")
    merchant_id = body.ident("merchant_id")
    created_at = epoch(body, "created_at", required=False)
    status = body.choice("status", IMPORTABLE_ROOM_STATUSES, required=False, default="ended")
    if record.get("status") == "live":
        body.errors["status"] = "a room goes live through the API (POST /v1/rooms/{id}/live), not by import"
    ended = status == "ended"
    started_at = epoch(body, "started_at", required=ended)
    ended_at = epoch(body, "ended_at", required=ended)
    replay_url = body.text("replay_url", required=False, max_len=500, pattern=URL)
    room = _read(body, read_room, _api_body(record, _ROOM_HISTORY_FIELDS))
    if ended and isinstance(started_at, float) and isinstance(ended_at, float):
        if ended_at < started_at:
            body.fail("ended_at", "must not be before started_at")
        if ended_at > (now if now is not None else time.time()) + 300:
            body.fail("ended_at", "is in the future (an ended room ended in the past)")
    if status == "scheduled":
        for name in ("started_at", "ended_at", "replay_url"):
            if record.get(name) is not None:
                body.fail(name, "only an ended room has it")
    _finish(body, room)
    return ImportedRoom(room_id, merchant_id, created_at, status, started_at, ended_at, replay_url, room)


READERS: dict[str, Callable[[dict[str, Any]], Imported]] = {
    "merchants": read_imported_merchant,
    "stores": read_imported_store,
    "staff": read_imported_staff,
    "products": read_imported_product,
    "rooms": read_imported_room,
}


def _ts(epoch_s: float | None) -> datetime | None:
    return datetime.fromtimestamp(epoch_s, UTC) if epoch_s is not None else None


def _created(epoch_s: float | None) -> datetime:
    return _ts(epoch_s) or datetime.now(UTC)


class CatalogBackfill:
    """Reads which ids exist and writes new records of the rooms domain, a file at a time."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def owners(self, kind: Kind, ids: Sequence[str]) -> dict[str, str]:
        """id → its merchant, for the ids of `kind` that exist."""
        query = {
            "merchants": "SELECT merchant_id AS id, merchant_id FROM merchants WHERE merchant_id = ANY($1::text[])",
            "stores": "SELECT store_id AS id, merchant_id FROM stores WHERE store_id = ANY($1::text[])",
            "staff": "SELECT staff_id AS id, merchant_id FROM staff WHERE staff_id = ANY($1::text[])",
            "products": "SELECT product_id AS id, merchant_id FROM products WHERE product_id = ANY($1::text[])",
            "rooms": "SELECT room_id AS id, merchant_id FROM rooms WHERE room_id = ANY($1::text[])",
        }[kind]
        found: dict[str, str] = {}
        for start in range(0, len(ids), 10_000):
            rows = await self.pool.fetch(query, list(ids[start : start + 10_000]))
            found.update({r["id"]: r["merchant_id"] for r in rows})
        return found

    async def store_merchants(self, store_ids: Sequence[str]) -> dict[str, str]:
        return await self.owners("stores", store_ids)

    async def write(self, kind: Kind, records: Sequence[Imported]) -> int:
        """Insert the records whose ids are new, all in one transaction (COPY into a staging table,
        then one INSERT ... ON CONFLICT DO NOTHING); returns how many were new."""
        if not records:
            return 0
        table, columns = _TABLES[kind]
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(_STAGING[kind])
            await conn.copy_records_to_table("incoming", records=[_row(r) for r in records], columns=columns)
            status = await conn.execute(_INSERT[kind])
        return int(status.rsplit(" ", 1)[-1])


# Per kind: the table, and the columns a record fills (in `_row`'s order).
_TABLES: dict[str, tuple[str, tuple[str, ...]]] = {
    "merchants": ("merchants", ("merchant_id", "name", "category", "description", "created_at")),
    "stores": ("stores", ("store_id", "merchant_id", "name", "city", "address", "created_at")),
    "staff": ("staff", ("staff_id", "store_id", "name", "role", "created_at")),
    "products": (
        "products",
        ("product_id", "merchant_id", "title", "price", "currency", "category", "created_at"),
    ),
    "rooms": (
        "rooms",
        (
            "room_id",
            "merchant_id",
            "title",
            "host",
            "category",
            "tags",
            "price_band",
            "format",
            "scheduled_at",
            "stream_url",
            "status",
            "started_at",
            "ended_at",
            "replay_url",
            "created_at",
        ),
    ),
}
_INSERT = {
    kind: f"INSERT INTO {table} ({', '.join(columns)}) SELECT {', '.join(columns)} FROM incoming "  # noqa: S608
    f"ON CONFLICT ({columns[0]}) DO NOTHING"
    for kind, (table, columns) in _TABLES.items()
    if kind != "staff"
}
# Table and column names are constants of this module, never input.
_STAGING = {
    kind: f"CREATE TEMP TABLE incoming ON COMMIT DROP AS SELECT {', '.join(columns)} FROM {table} WITH NO DATA"  # noqa: S608
    for kind, (table, columns) in _TABLES.items()
}
# A staff member belongs to its store's merchant (taken from the store, as the route does).
_INSERT["staff"] = (
    "INSERT INTO staff (staff_id, store_id, merchant_id, name, role, created_at) "
    "SELECT i.staff_id, i.store_id, s.merchant_id, i.name, i.role, i.created_at "
    "FROM incoming i JOIN stores s ON s.store_id = i.store_id ON CONFLICT (staff_id) DO NOTHING"
)


def _row(r: Imported) -> tuple[Any, ...]:
    if isinstance(r, ImportedMerchant):
        m = r.merchant
        return (r.merchant_id, m.name, m.category, m.description, _created(r.created_at))
    if isinstance(r, ImportedStore):
        s = r.store
        return (r.store_id, r.merchant_id, s.name, s.city, s.address, _created(r.created_at))
    if isinstance(r, ImportedStaff):
        return (r.staff_id, r.store_id, r.staff.name, r.staff.role, _created(r.created_at))
    if isinstance(r, ImportedProduct):
        p = r.product
        price = Decimal(str(p.price)).quantize(Decimal("0.01"))
        return (r.product_id, r.merchant_id, p.title, price, p.currency, p.category, _created(r.created_at))
    room = r.room
    return (
        r.room_id,
        r.merchant_id,
        room.title,
        room.host,
        room.category,
        list(dict.fromkeys(room.tags)),
        room.price_band,
        room.format,
        _ts(room.scheduled_at),
        room.stream_url,
        r.status,
        _ts(r.started_at),
        _ts(r.ended_at),
        r.replay_url,
        _created(r.created_at if r.created_at is not None else r.started_at),
    )

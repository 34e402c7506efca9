"""One-to-one consults: slots a merchant opens in a `one_to_one` room, bookings viewers make, no-shows.

Owns `ConsultBook`. Capacity one is a partial unique index (one booking that is not cancelled per
slot), so two viewers racing for a slot cannot both get it: the loser answers 409 `slot_taken`. A
cancelled booking frees the slot. The merchant marks a no-show once the slot has started; the
no-show rate (no-shows / bookings whose slot has started and were not cancelled) is reported per
merchant, because in this trade it often passes 50%.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import asyncpg

from roomfeed.errors import Conflict, NotFound, ValidationFailed
from roomfeed.ids import new_id

SLOT_COLUMNS = (
    "s.slot_id, s.room_id, s.staff_id, extract(epoch FROM s.starts_at)::float8 AS starts_at, "
    "extract(epoch FROM s.ends_at)::float8 AS ends_at"
)
BOOKING_COLUMNS = (
    "b.booking_id, b.slot_id, b.room_id, b.merchant_id, b.viewer_id, b.status, b.note, "
    "extract(epoch FROM b.created_at)::float8 AS created_at"
)


def slot_json(row: Mapping[str, Any], booked: bool | None = None) -> dict[str, Any]:
    out = {
        "slot_id": row["slot_id"],
        "room_id": row["room_id"],
        "staff_id": row["staff_id"],
        "starts_at": row["starts_at"],
        "ends_at": row["ends_at"],
    }
    if booked is not None:
        out["available"] = not booked
    return out


def booking_json(row: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "booking_id": row["booking_id"],
        "slot_id": row["slot_id"],
        "room_id": row["room_id"],
        "merchant_id": row["merchant_id"],
        "viewer_id": row["viewer_id"],
        "status": row["status"],
        "note": row["note"],
        "created_at": row["created_at"],
    }


class ConsultBook:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def open_slot(
        self, merchant_id: str, room_id: str, *, starts_at: float, ends_at: float, staff_id: str | None = None
    ) -> dict[str, Any]:
        if ends_at <= starts_at:
            raise ValidationFailed(
                "ends_at must be after starts_at", fields={"ends_at": "must be after starts_at"}
            )
        if ends_at - starts_at > 8 * 3600:
            raise ValidationFailed(
                "a slot lasts at most 8 hours", fields={"ends_at": "at most 8 hours after starts_at"}
            )
        async with self.pool.acquire() as conn:
            room = await conn.fetchrow(
                "SELECT format, status FROM rooms WHERE room_id = $1 AND merchant_id = $2",
                room_id,
                merchant_id,
            )
            if room is None:
                raise NotFound("no such room")
            if room["format"] != "one_to_one":
                raise Conflict("consult slots go in one_to_one rooms", code="not_a_consult_room")
            if staff_id is not None and not await conn.fetchval(
                "SELECT EXISTS (SELECT 1 FROM staff WHERE staff_id = $1 AND merchant_id = $2)",
                staff_id,
                merchant_id,
            ):
                raise ValidationFailed("no such staff member", fields={"staff_id": "no such staff member"})
            row = await conn.fetchrow(
                f"""
                INSERT INTO consult_slots AS s (slot_id, room_id, merchant_id, staff_id, starts_at, ends_at)
                VALUES ($1, $2, $3, $4, to_timestamp($5), to_timestamp($6)) RETURNING {SLOT_COLUMNS}
                """,  # noqa: S608
                new_id("slot"),
                room_id,
                merchant_id,
                staff_id,
                starts_at,
                ends_at,
            )
        return slot_json(row, booked=False)

    async def slots(self, room_id: str, merchant_id: str | None = None) -> list[dict[str, Any]]:
        """A room's slots with availability; merchant_id scopes to that merchant's room (None: viewers)."""
        rows = await self.pool.fetch(
            f"""
            SELECT {SLOT_COLUMNS},
                   EXISTS (SELECT 1 FROM bookings b WHERE b.slot_id = s.slot_id AND b.status <> 'cancelled') AS booked
              FROM consult_slots s
             WHERE s.room_id = $1 AND ($2::text IS NULL OR s.merchant_id = $2)
             ORDER BY s.starts_at
            """,  # noqa: S608
            room_id,
            merchant_id,
        )
        return [slot_json(r, booked=r["booked"]) for r in rows]

    async def book(
        self, viewer_id: str, room_id: str, slot_id: str, note: str = "", now: float | None = None
    ) -> dict[str, Any]:
        now = time.time() if now is None else now
        async with self.pool.acquire() as conn:
            slot = await conn.fetchrow(
                "SELECT merchant_id, extract(epoch FROM ends_at)::float8 AS ends_at FROM consult_slots "
                "WHERE slot_id = $1 AND room_id = $2",
                slot_id,
                room_id,
            )
            if slot is None:
                raise NotFound("no such slot in this room")
            if slot["ends_at"] <= now:
                raise Conflict("the slot is over", code="slot_over")
            try:
                row = await conn.fetchrow(
                    f"""
                    INSERT INTO bookings AS b (booking_id, slot_id, room_id, merchant_id, viewer_id, note)
                    VALUES ($1, $2, $3, $4, $5, $6) RETURNING {BOOKING_COLUMNS}
                    """,  # noqa: S608
                    new_id("bkg"),
                    slot_id,
                    room_id,
                    slot["merchant_id"],
                    viewer_id,
                    note,
                )
            except asyncpg.UniqueViolationError:
                raise Conflict("the slot is already booked", code="slot_taken") from None
        return booking_json(row)

    async def get(
        self, booking_id: str, *, viewer_id: str | None = None, merchant_id: str | None = None
    ) -> dict[str, Any]:
        """A booking, as the viewer who made it or the merchant who owns it sees it (404 otherwise)."""
        row = await self.pool.fetchrow(
            f"SELECT {BOOKING_COLUMNS} FROM bookings b WHERE b.booking_id = $1 "  # noqa: S608 (constant columns)
            "AND ($2::text IS NULL OR b.viewer_id = $2) AND ($3::text IS NULL OR b.merchant_id = $3)",
            booking_id,
            viewer_id,
            merchant_id,
        )
        if row is None or (viewer_id is None and merchant_id is None):
            raise NotFound("no such booking")
        return booking_json(row)

    async def cancel(
        self, booking_id: str, *, viewer_id: str | None = None, merchant_id: str | None = None
    ) -> dict[str, Any]:
        """Cancel a booking: by the viewer who made it or the merchant who owns it."""
        return await self._move(
            booking_id, "cancelled", "cancelled_at = now()", viewer_id=viewer_id, merchant_id=merchant_id
        )

    async def no_show(self, merchant_id: str, booking_id: str, now: float | None = None) -> dict[str, Any]:
        now = time.time() if now is None else now
        started = await self.pool.fetchval(
            """
            SELECT extract(epoch FROM s.starts_at)::float8 <= $3 FROM bookings b
              JOIN consult_slots s ON s.slot_id = b.slot_id WHERE b.booking_id = $1 AND b.merchant_id = $2
            """,
            booking_id,
            merchant_id,
            now,
        )
        if started is None:
            raise NotFound("no such booking")
        if not started:
            raise Conflict("a no-show can be marked once the slot has started", code="slot_not_started")
        return await self._move(booking_id, "no_show", "no_show_at = now()", merchant_id=merchant_id)

    async def _move(
        self,
        booking_id: str,
        to: str,
        stamp: str,
        *,
        viewer_id: str | None = None,
        merchant_id: str | None = None,
    ) -> dict[str, Any]:
        if viewer_id is None and merchant_id is None:
            raise ValueError("a booking is moved by its viewer or its merchant")
        async with self.pool.acquire() as conn:
            row = await conn.fetchrow(
                f"""
                UPDATE bookings AS b SET status = $4, {stamp}
                 WHERE b.booking_id = $1 AND b.status = 'booked'
                   AND ($2::text IS NULL OR b.viewer_id = $2) AND ($3::text IS NULL OR b.merchant_id = $3)
                RETURNING {BOOKING_COLUMNS}
                """,  # noqa: S608 -- constants only
                booking_id,
                viewer_id,
                merchant_id,
                to,
            )
            if row is None:
                status = await conn.fetchval(
                    "SELECT status FROM bookings WHERE booking_id = $1 "
                    "AND ($2::text IS NULL OR viewer_id = $2) AND ($3::text IS NULL OR merchant_id = $3)",
                    booking_id,
                    viewer_id,
                    merchant_id,
                )
                if status is None:
                    raise NotFound("no such booking")
                raise Conflict(
                    f"the booking is {status}; only a booked booking can become {to}",
                    code="invalid_transition",
                    fields={"status": status},
                )
        return booking_json(row)

    async def report(self, merchant_id: str, now: float | None = None) -> dict[str, Any]:
        now = time.time() if now is None else now
        row = await self.pool.fetchrow(
            """
            SELECT count(*) AS bookings,
                   count(*) FILTER (WHERE b.status = 'cancelled') AS cancelled,
                   count(*) FILTER (WHERE b.status = 'no_show') AS no_shows,
                   count(*) FILTER (WHERE b.status <> 'cancelled'
                                      AND extract(epoch FROM s.starts_at) <= $2) AS due,
                   count(*) FILTER (WHERE b.status = 'booked'
                                      AND extract(epoch FROM s.starts_at) > $2) AS upcoming
              FROM bookings b JOIN consult_slots s ON s.slot_id = b.slot_id
             WHERE b.merchant_id = $1
            """,
            merchant_id,
            now,
        )
        due = int(row["due"])
        no_shows = int(row["no_shows"])
        return {
            "merchant_id": merchant_id,
            "bookings": int(row["bookings"]),
            "cancelled": int(row["cancelled"]),
            "upcoming": int(row["upcoming"]),
            "due": due,
            "no_shows": no_shows,
            "no_show_rate": round(no_shows / due, 4) if due else None,
        }

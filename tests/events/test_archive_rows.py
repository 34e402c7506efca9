"""The archive keeps what an event says to the millisecond: its time and when ingest received it, each
in the day partition of its own UTC day (a last millisecond before midnight stays in that day), and
the fields a type carries beyond the columns in `payload`; a replay adds no row."""

from __future__ import annotations

import datetime as dt
import secrets
from typing import Any

import asyncpg
import orjson

from events.archive import ArchiveSink, days_of, to_row


def _json(value: Any) -> Any:
    """A jsonb column as the pool returns it (text, or already decoded by a codec)."""
    return orjson.loads(value) if isinstance(value, str | bytes) else value


def _ms(at: dt.datetime) -> int:
    return int(at.timestamp() * 1000)


async def test_times_are_kept_to_the_millisecond_in_their_own_days_partition(pool: asyncpg.Pool) -> None:
    today = dt.datetime.now(dt.UTC).date()
    midnight = dt.datetime.combine(today, dt.time(), tzinfo=dt.UTC)
    before, after = midnight - dt.timedelta(milliseconds=1), midnight + dt.timedelta(milliseconds=123)
    tag = secrets.token_hex(4)
    events = [
        {
            "event_id": f"ms-{tag}-a",
            "type": "like",
            "viewer_id": "v",
            "session_id": "s",
            "room_id": "r",
            "ts": _ms(before),
            "received_at": _ms(after) + 7,
        },
        {
            "event_id": f"ms-{tag}-b",
            "type": "impression",
            "viewer_id": "v",
            "session_id": "s",
            "room_id": "r",
            "ts": _ms(after),
            "position": 3,
            "page_token": "3.abc",
            "merchant_id": "m1",
        },
    ]
    sink = ArchiveSink(pool)
    assert days_of([to_row(e) for e in events]) == {today - dt.timedelta(days=1), today}
    assert await sink.write(events) == 2
    assert await sink.write(events) == 0  # a replay: nothing new
    rows = {
        r["event_id"]: r
        for r in await pool.fetch(
            "SELECT event_id, ts, received_at, payload, merchant_id, tableoid::regclass::text AS part "
            "FROM interactions WHERE event_id LIKE $1",
            f"ms-{tag}-%",
        )
    }
    a, b = rows[f"ms-{tag}-a"], rows[f"ms-{tag}-b"]
    assert a["ts"] == before and a["received_at"] == after + dt.timedelta(milliseconds=7)
    assert a["part"] == f"interactions_{before:%Y%m%d}" and b["part"] == f"interactions_{after:%Y%m%d}"
    assert b["ts"] == after and b["received_at"] == after  # no received_at: the event's own time
    assert _json(a["payload"]) == {} and b["merchant_id"] == "m1"
    assert _json(b["payload"]) == {"position": 3, "page_token": "3.abc"}
    ids = await pool.fetch("SELECT event_id, ts FROM event_ids WHERE event_id LIKE $1", f"ms-{tag}-%")
    assert {r["event_id"]: r["ts"] for r in ids} == {a["event_id"]: before, b["event_id"]: after}

"""Sessions belong to their viewer: events naming another viewer's session are refused at ingest;
a block wins over a code's landing room. Real PostgreSQL, Redis and Kafka."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable

import pytest

from tests.feed.conftest import AppClient, Market, start_session

pytestmark = pytest.mark.timeout(120)


def _event(viewer: str, session_id: str, room_id: str, kind: str = "like") -> dict[str, object]:
    return {
        "event_id": f"ev-{secrets.token_hex(6)}",
        "type": kind,
        "viewer_id": viewer,
        "session_id": session_id,
        "room_id": room_id,
        "ts": int(time.time() * 1000),
    }


async def test_events_naming_another_viewers_session_are_refused(
    feed_app: AppClient,
    market: Market,
    viewer_headers: Callable[[str], dict[str, str]],
) -> None:
    room = await market.live_room(await market.merchant())
    owner, intruder = f"own-{secrets.token_hex(3)}", f"int-{secrets.token_hex(3)}"
    session = await start_session(feed_app, viewer_headers(owner), owner)
    sid = session["session_id"]
    batch = [
        _event(intruder, sid, room),
        _event(intruder, "direct", room),
        _event(intruder, sid, room, "share"),
    ]
    r = await feed_app.post("/v1/events", json=batch, headers=viewer_headers(intruder))
    assert r.status_code == 202, r.text
    assert r.json()["accepted"] == 1
    assert [(x["index"], x["error"]["code"], x["error"]["field"]) for x in r.json()["rejected"]] == [
        (0, "session_not_yours", "session_id"),
        (2, "session_not_yours", "session_id"),
    ]
    r = await feed_app.post("/v1/events", json=[_event(owner, sid, room)], headers=viewer_headers(owner))
    assert r.json() == {"accepted": 1, "rejected": []}


async def test_a_block_wins_over_a_codes_landing_room(
    feed_app: AppClient,
    market: Market,
    viewer_headers: Callable[[str], dict[str, str]],
) -> None:
    merchant = await market.merchant()
    room = await market.live_room(merchant)
    for _ in range(3):
        await market.live_room(await market.merchant())
    r = await feed_app.post("/v1/codes", json={}, headers=market.merchants[merchant])
    assert r.status_code == 201, r.text
    code = r.json()["code"]
    viewer = f"blk-{secrets.token_hex(3)}"
    landed = await start_session(feed_app, viewer_headers(viewer), viewer, {"code": code})
    assert landed["rooms"][0]["room_id"] == room
    r = await feed_app.post(
        "/v1/viewers/me/blocks", json={"merchant_id": merchant}, headers=viewer_headers(viewer)
    )
    assert r.status_code == 201, r.text
    for entry in ({"code": code}, {"room_id": room}):
        session = await start_session(feed_app, viewer_headers(viewer), viewer, entry, count=10)
        assert session["entry_room_id"] is None
        assert session["rooms"], entry  # the feed starts, without the blocked merchant
        assert all(r["merchant_id"] != merchant for r in session["rooms"]), entry

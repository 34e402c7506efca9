"""The simulator is seeded, reproducible and speaks the real event schema."""

from __future__ import annotations

from typing import Any

import numpy as np

from events.vocabulary import TYPES
from simulator import Marketplace

SMALL: dict[str, Any] = {"n_merchants": 200, "n_viewers": 2_000, "days": 2}


def test_same_seed_same_events() -> None:
    a = Marketplace(seed=3, **SMALL)
    b = Marketplace(seed=3, **SMALL)
    assert len(a.log) == len(b.log) > 1000
    assert list(a.events())[:500] == list(b.events())[:500]
    assert np.array_equal(a.log.ts, b.log.ts) and np.array_equal(a.log.merchant, b.log.merchant)


def test_different_seed_different_events() -> None:
    assert not np.array_equal(Marketplace(seed=3, **SMALL).log.ts, Marketplace(seed=4, **SMALL).log.ts)


def test_events_follow_the_ingest_schema_and_live_schedule() -> None:
    market = Marketplace(seed=5, **SMALL)
    rooms = {r.room_id: r for r in market.rooms}
    saw_code = False
    for e in market.events():
        assert e["type"] in TYPES and len(str(e["event_id"])) <= 64
        assert isinstance(e["ts"], int)
        room = rooms[str(e["room_id"])]
        assert room.merchant_id == e["merchant_id"]
        assert room.live_from_ms <= e["ts"] < room.live_until_ms
        if e["type"] == "leave":
            assert isinstance(e["dwell_ms"], int) and e["dwell_ms"] > 0
        if e["type"] == "purchase":
            assert (
                e["currency"] == "CNY"
                and isinstance(e["amount"], float)
                and e["order_id"]
                and e["product_id"]
            )
        saw_code |= "entry_code_merchant_id" in e
    assert saw_code


def test_simulated_viewer_reacts_to_offered_rooms() -> None:
    market = Marketplace(seed=5, **SMALL)
    room = market.rooms[0]
    viewer = market.viewer(
        "v1", session_id="demo", start_ms=room.live_from_ms, seed=1, entry_code_merchant_id=room.merchant_id
    )
    events = viewer.react(room.features)
    assert events[0]["type"] == "impression"
    assert events[1]["type"] == "enter" and events[1]["entry_code_merchant_id"] == room.merchant_id
    assert events[-1]["type"] == "leave"

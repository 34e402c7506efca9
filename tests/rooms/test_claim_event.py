"""A claim's event is one the consumers accept (not dead-lettered), in a session or outside one."""

from __future__ import annotations

import time

import pytest

from events.schema import Rejection, validate_stored
from rooms.deals import DIRECT_SESSION, claim_event


@pytest.mark.parametrize("session_id", [None, "ses_0123456789abcdef"])
def test_claim_event_passes_the_consumers_schema(session_id: str | None) -> None:
    claim = {
        "claim_id": "clm_0123456789abcdef",
        "viewer_id": "v-7",
        "session_id": session_id,
        "room_id": "room_0123456789abcdef",
        "merchant_id": "mer_0123456789abcdef",
        "deal_id": "deal_0123456789abcdef",
        "quantity": 1,
        "claimed_at_ms": int(time.time() * 1000),
    }
    event = validate_stored(claim_event(claim))
    assert not isinstance(event, Rejection), event
    assert event["session_id"] == (session_id or DIRECT_SESSION)
    assert event["deal_id"] == claim["deal_id"]

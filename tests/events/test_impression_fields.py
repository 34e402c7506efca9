"""An impression keeps what the feed's experiment report joins on."""

from __future__ import annotations

import time

from events.schema import validate


def test_impression_keeps_experiment_variant_and_versions() -> None:
    now = int(time.time() * 1000)
    raw = {
        "event_id": "imp-1",
        "type": "impression",
        "viewer_id": "v1",
        "session_id": "ses_1",
        "room_id": "room_1",
        "ts": now,
        "position": 2,
        "boosted": True,
        "experiment_id": "exp_42",
        "variant": "treatment",
        "config_version": 7,
        "model_version": "m3",
    }
    event = validate(raw, now)
    assert isinstance(event, dict), event
    assert (event["experiment_id"], event["variant"], event["config_version"], event["model_version"]) == (
        "exp_42",
        "treatment",
        7,
        "m3",
    )

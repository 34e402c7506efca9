"""The event vocabulary: what ingest accepts and how it names what it refuses (pure logic)."""

from __future__ import annotations

from typing import Any

import pytest

from events.schema import Rejection, validate, validate_stored

NOW = 1_800_000_000_000


def event(kind: str = "enter", **extra: Any) -> dict[str, Any]:
    return {
        "event_id": "e1",
        "type": kind,
        "viewer_id": "v1",
        "session_id": "s1",
        "room_id": "room_1",
        "ts": NOW,
        **extra,
    }


def rejected_field(raw: Any) -> str | None:
    result = validate(raw, NOW)
    assert isinstance(result, Rejection), result
    return result.field


def test_valid_events_of_every_type_are_accepted_and_normalised() -> None:
    samples = [
        event("impression", position=3, boosted=True, variant="a", config_version=4, model_version="m1"),
        event("enter", source="code"),
        event("heartbeat"),
        event("leave", dwell_ms=0),
        event("like"),
        event("comment", text="nice"),
        event("follow"),
        event("share"),
        event("add_to_cart", product_id="prd_1"),
        event("purchase", order_id="o1", product_id="prd_1", amount=19.9, currency="CNY"),
        event("deal_claim", deal_id="deal_1"),
    ]
    for raw in samples:
        result = validate(raw, NOW)
        assert isinstance(result, dict), result
        assert result["v"] == 1 and result["type"] == raw["type"]


def test_unknown_fields_are_dropped() -> None:
    result = validate(event(secret="x" * 10_000), NOW)
    assert isinstance(result, dict) and "secret" not in result


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        (event(type="teleport"), "type"),
        ({k: v for k, v in event().items() if k != "room_id"}, "room_id"),
        (event(event_id="has space"), "event_id"),
        (event(event_id="x" * 65), "event_id"),
        (event(ts="yesterday"), "ts"),
        (event(ts=NOW + 6 * 60_000), "ts"),
        (event(ts=NOW - 8 * 24 * 3600_000), "ts"),
        (event("leave"), "dwell_ms"),
        (event("leave", dwell_ms=-1), "dwell_ms"),
        (event("purchase", product_id="p", amount=1, currency="CNY"), "order_id"),
        (event("purchase", order_id="o", product_id="p", amount=0, currency="CNY"), "amount"),
        (event("purchase", order_id="o", product_id="p", amount=5, currency="yuan"), "currency"),
        (event("add_to_cart"), "product_id"),
        (event("deal_claim"), "deal_id"),
        (event("comment", text="x" * 501), "text"),
        (event("enter", source="tv"), "source"),
        (event(v=2), "v"),
        (event(device_id="d" * 65), "device_id"),
    ],
)
def test_bad_events_are_rejected_naming_the_field(raw: dict[str, Any], field: str) -> None:
    assert rejected_field(raw) == field


def test_a_non_object_is_rejected() -> None:
    assert isinstance(validate(["enter"], NOW), Rejection)


def test_stored_events_skip_the_clock_but_check_enrichment() -> None:
    old = event(ts=1, merchant_id="mer_1", received_at=2)
    assert isinstance(validate_stored(old), dict)
    assert isinstance(validate_stored(event(merchant_id=5)), Rejection)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"type": "comment", "text": "nice\x00"}, "text"),
        ({"type": "impression", "variant": "a\x00"}, "variant"),
        ({"type": "impression", "config_version": "v\x00"}, "config_version"),
        ({"type": "impression", "config_version": "x" * 65}, "config_version"),
        ({"type": "impression", "position": 2**31}, "position"),
        ({"type": "leave", "dwell_ms": 2**31}, "dwell_ms"),
        (
            {
                "type": "purchase",
                "order_id": "o",
                "product_id": "p",
                "currency": "CNY",
                "amount": 999999999999.996,
            },
            "amount",
        ),
    ],
)
def test_what_no_sink_could_store_is_refused_at_ingest(change: dict[str, object], field: str) -> None:
    """The archive (PostgreSQL) cannot hold NUL, integers past int4, or amounts that round to 1e12:
    ingest refuses them, so nothing that got 202 is dead-lettered later."""
    now = 1_790_000_000_000
    raw = {"event_id": "e1", "viewer_id": "v1", "session_id": "s1", "room_id": "r1", "ts": now, **change}
    result = validate(raw, now)
    assert isinstance(result, Rejection) and result.field == field, result


def test_amount_of_1e12_and_above_names_the_limit() -> None:
    now = 1_790_000_000_000
    raw = {
        "event_id": "e1",
        "viewer_id": "v1",
        "session_id": "s1",
        "room_id": "r1",
        "ts": now,
        "type": "purchase",
        "order_id": "o",
        "product_id": "p",
        "currency": "CNY",
    }
    assert validate({**raw, "amount": 2e12}, now).message == "amount must be less than 1e12"  # type: ignore[union-attr]
    assert validate({**raw, "amount": 0}, now).message == "amount must be greater than 0"  # type: ignore[union-attr]

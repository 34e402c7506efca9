"""No accepted event is ever lost: over events hypothesis generates (hostile text, NUL, huge numbers,
every type), whatever ingest answered 202 for is archived exactly once and counted once by the live
stats, nothing is dead-lettered, and nothing it refused reaches a sink. Real Kafka, PostgreSQL, Redis."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
from aiokafka import AIOKafkaConsumer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from events.consumer import SinkRunner
from events.live_stats import LiveStats
from events.vocabulary import ADD_TO_CART, DEAD_LETTERS, ENTER, FIELDS, LIKE, TYPES
from roomfeed.settings import Settings
from tests.events.conftest import eventually, tag

pytestmark = pytest.mark.timeout(180)

EXAMPLES = 200
hostile_text = st.just("a\x00b") | st.text(
    st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=600
)
wide_int = st.integers(min_value=-10, max_value=2**40) | st.sampled_from(
    [0, 2**31 - 1, 2**31, 2**53, 2**53 + 1]
)
amounts = st.floats(min_value=-1, max_value=1e13, allow_nan=False, allow_infinity=False) | st.sampled_from(
    [0.004, 0.005, 999999999999.99, 999999999999.996, 1e12, 1e12 - 1]
)


def event_strategy(viewer: str, rooms: list[str]) -> st.SearchStrategy[dict[str, Any]]:
    now = int(time.time() * 1000)
    values: dict[str, st.SearchStrategy[Any]] = {
        "text": hostile_text,
        "dwell_ms": wide_int,
        "position": wide_int,
        "boosted": st.booleans() | st.just("yes"),
        "variant": hostile_text,
        "config_version": wide_int | hostile_text,
        "source": st.sampled_from(["feed", "code", "deeplink", "replay", "elsewhere"]),
        "product_id": st.sampled_from(["p1", "p 1", "p\x00"]),
        "order_id": st.just("o1"),
        "amount": amounts,
        "currency": st.sampled_from(["CNY", "CNY", "cny"]),
        "deal_id": st.just("deal_1"),
    }

    def of_type(kind: str) -> st.SearchStrategy[dict[str, Any]]:
        return st.fixed_dictionaries(
            {
                "type": st.just(kind),
                "viewer_id": st.just(viewer),
                "session_id": st.just(f"ses_{viewer}"),
                "room_id": st.sampled_from(rooms),
                "ts": st.integers(min_value=now - 1_800_000, max_value=now),
                # every field the type carries (events.vocabulary), with hostile values most of the time
                **{f.name: values[f.name] for f in FIELDS.get(kind, ()) if f.name in values},
            },
            optional={"device_id": st.sampled_from(["dev1", "dev\x00", "d" * 70])},
        )

    return st.sampled_from([*TYPES, "bogus"]).flatmap(of_type)


def generate(viewer: str, rooms: list[str]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []

    @settings(max_examples=EXAMPLES, database=None, deadline=None, suppress_health_check=list(HealthCheck))
    @given(event_strategy(viewer, rooms))
    def collect(event: dict[str, Any]) -> None:
        found.append(event)

    collect()
    for n, event in enumerate(found):
        event["event_id"] = f"{viewer}-{n}"
    return found


async def test_every_accepted_event_is_archived_and_counted_exactly_once(
    app_client: httpx.AsyncClient,
    viewer_token: Any,
    worker: list[SinkRunner],
    pool: asyncpg.Pool,
    redis: Any,
    migrated: Settings,
) -> None:
    marker = f"hv{tag()}"
    rooms = [f"{marker}_room{k}" for k in range(3)]
    events = generate(marker, rooms)
    accepted: list[dict[str, Any]] = []
    refused: list[dict[str, Any]] = []
    headers = {"Authorization": f"Bearer {viewer_token(marker)}"}
    for start in range(0, len(events), 40):
        batch = events[start : start + 40]
        r = await app_client.post("/v1/events", json=batch, headers=headers)
        assert r.status_code == 202, r.text
        bad = {x["index"] for x in r.json()["rejected"]}
        assert r.json()["accepted"] == len(batch) - len(bad)
        accepted += [e for i, e in enumerate(batch) if i not in bad]
        refused += [e for i, e in enumerate(batch) if i in bad]
    assert accepted and refused, "the generator should make both kinds"
    ids = [e["event_id"] for e in accepted]

    async def archived() -> Counter[str] | None:
        rows = await pool.fetch(
            "SELECT event_id FROM interactions WHERE event_id = ANY($1::text[])",
            [e["event_id"] for e in events],
        )
        found = Counter(r["event_id"] for r in rows)
        return found if sum(found.values()) >= len(ids) else None

    await eventually(archived, timeout=60)
    await asyncio.sleep(1.0)  # a little longer, so an event counted twice (or a late refused one) would show
    found = await archived() or Counter()
    assert found == Counter(ids), "every accepted event archived once, no refused one archived"

    stats = LiveStats(redis)
    counted = {ENTER: "enters_1h", LIKE: "likes_1h", ADD_TO_CART: "carts_1h"}

    async def live_counts() -> dict[tuple[str, str], int] | None:
        got = await stats.rooms(rooms)
        counts = {
            (room, kind): getattr(got[room], field) for room in rooms for kind, field in counted.items()
        }
        want = Counter((e["room_id"], e["type"]) for e in accepted if e["type"] in counted)
        return counts if all(counts[k] == want.get(k, 0) for k in counts) else None

    await eventually(live_counts, timeout=30)
    assert await _dead_letters(migrated, marker) == []


async def _dead_letters(settings: Settings, marker: str) -> list[dict[str, Any]]:
    consumer = AIOKafkaConsumer(
        settings.topic(DEAD_LETTERS), bootstrap_servers=settings.kafka_bootstrap, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        polled = await consumer.getmany(timeout_ms=1500)
    finally:
        await consumer.stop()
    letters = [orjson.loads(r.value) for records in polled.values() for r in records]
    return [letter for letter in letters if marker in str(letter.get("value"))]

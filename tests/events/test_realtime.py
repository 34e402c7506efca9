"""The realtime sink on real Redis: a batch summed per room and bucket is applied exactly once per
event — across replays, overlapping batches, client retries at new offsets and racing consumers —
and presence follows each viewer's last sign within a batch."""

from __future__ import annotations

import asyncio
import time
from typing import Any, cast

import orjson
from aiokafka import TopicPartition
from redis.asyncio import Redis

from events.live_stats import LiveStats
from events.realtime import RealtimeSink, plan_writes
from tests.events.conftest import make_event, tag


def at(
    events: list[dict[str, Any]], topic: str, first_offset: int = 0, partition: int = 0
) -> list[dict[str, Any]]:
    """The events as the consumer hands them over: with their Kafka position."""
    return [
        {**e, "_topic": topic, "_partition": partition, "_offset": first_offset + i}
        for i, e in enumerate(events)
    ]


async def test_a_batch_is_summed_per_room_and_counted_exactly(redis: Redis) -> None:
    room, other = f"room_{tag()}", f"room_{tag()}"
    now = int(time.time() * 1000)
    events = []
    for i in range(30):
        viewer = f"v{i % 7}_{tag()}"
        events += [
            make_event("impression", viewer, room, ts=now - 900),
            make_event("enter", viewer, room, ts=now - 800),
            make_event("leave", viewer, room, ts=now - 700, dwell_ms=1000 * (i % 6)),
        ]
    events.append(
        make_event(
            "purchase",
            "buyer",
            other,
            ts=now - 600,
            order_id="o1",
            product_id="p1",
            amount=10.25,
            currency="EUR",
        )
    )
    before = await LiveStats(redis).totals()
    applied = await RealtimeSink(redis).write(at(events, f"t{tag()}"))
    assert applied == len(events)
    stats = await LiveStats(redis).rooms([room, other])
    assert (stats[room].impressions_1h, stats[room].enters_1h, stats[room].leaves_1h) == (30, 30, 30)
    assert stats[room].swipe_aways_1h == 15  # dwell 0, 1 and 2 s of every 6
    assert stats[room].dwell_ms_1h == sum(1000 * (i % 6) for i in range(30))
    assert stats[other].orders_1h == 1 and stats[other].gmv_1h == 10.25
    after = await LiveStats(redis).totals()
    assert after["enters_1h"] - before["enters_1h"] == 30
    assert after["orders_1h"] - before["orders_1h"] == 1


async def test_overlapping_batches_apply_only_the_new_offsets(redis: Redis) -> None:
    room, topic = f"room_{tag()}", f"t{tag()}"
    events = [make_event("like", f"v{i}", room) for i in range(20)]
    sink = RealtimeSink(redis)
    assert await sink.write(at(events[:10], topic)) == 10
    assert await sink.write(at(events[5:20], topic, first_offset=5)) == 10  # offsets 5..9 are stale
    assert await sink.write(at(events, topic)) == 0  # a replay from offset 0
    assert (await LiveStats(redis).rooms([room]))[room].likes_1h == 20


async def test_a_client_retry_at_a_new_offset_is_counted_once(redis: Redis) -> None:
    room, topic = f"room_{tag()}", f"t{tag()}"
    first = [make_event("enter", "v1", room), make_event("like", "v1", room)]
    sink = RealtimeSink(redis)
    assert await sink.write(at(first, topic)) == 2
    # the same events again at later offsets (after a 503), and twice within one batch
    retried = at([*first, make_event("share", "v1", room), *first], topic, first_offset=2)
    assert await sink.write(retried) == 1
    stats = (await LiveStats(redis).rooms([room]))[room]
    assert (stats.enters_1h, stats.likes_1h, stats.shares_1h) == (1, 1, 1)


async def test_two_consumers_racing_on_one_partition_apply_each_event_once(redis: Redis) -> None:
    room, topic = f"room_{tag()}", f"t{tag()}"
    batch = at([make_event("enter", f"v{i}", room) for i in range(500)], topic)
    counts = await asyncio.gather(*(RealtimeSink(redis).write(batch) for _ in range(4)))
    assert sum(counts) == 500
    assert (await LiveStats(redis).rooms([room]))[room].enters_1h == 500


async def test_presence_follows_each_viewers_last_sign_within_a_batch(redis: Redis) -> None:
    room, topic = f"room_{tag()}", f"t{tag()}"
    now = int(time.time() * 1000)
    stayed, left, came_back, late_leave = (f"{name}_{tag()}" for name in ("stayed", "left", "back", "late"))
    batch = [
        make_event("enter", stayed, room, ts=now - 5000),
        make_event("heartbeat", stayed, room, ts=now - 1000),
        make_event("enter", left, room, ts=now - 5000),
        make_event("leave", left, room, ts=now - 4000, dwell_ms=1000),
        make_event("enter", came_back, room, ts=now - 5000),
        make_event("leave", came_back, room, ts=now - 4000, dwell_ms=1000),
        make_event("enter", came_back, room, ts=now - 3000),
        make_event("heartbeat", late_leave, room, ts=now - 1000),
    ]
    sink = RealtimeSink(redis)
    await sink.write(at(batch, topic))
    # a leave older than the viewer's last sign does not remove them
    await sink.write(
        at([make_event("leave", late_leave, room, ts=now - 2000, dwell_ms=9000)], topic, first_offset=100)
    )
    members = {cast(bytes, m).decode() for m in await redis.zrange(f"rf:{{ev}}:r:{room}:now", 0, -1)}
    assert members == {stayed, came_back, late_leave}
    assert (await LiveStats(redis).rooms([room]))[room].viewers_now == 3
    await sink.write(at([make_event("leave", stayed, room, ts=now, dwell_ms=5000)], topic, first_offset=101))
    assert (await LiveStats(redis).rooms([room]))[room].viewers_now == 2


def test_the_plan_sums_per_key_rather_than_per_event() -> None:
    now = int(time.time() * 1000)
    events = [make_event("enter", f"v{i}", "room_a", ts=now) for i in range(100)]
    plan = plan_writes(events, now)
    assert plan["hour"] == {("room_a", now // 300_000, "enter"): 100}  # the script adds the platform's
    assert plan["tens"] == {("room_a", now // 10_000): 100}
    assert len(plan["signs"]) == 100 and not plan["leaves"]  # 100 viewers, no leave to fold


async def test_a_room_with_thousands_of_viewers_in_one_batch_is_applied(redis: Redis) -> None:
    # Thousands of viewers of one room in one script call: no Redis command may unpack them all at once.
    room, topic = f"room_{tag()}", f"t{tag()}"
    now = int(time.time() * 1000)
    events = [make_event("enter", f"v{i}_{tag()}", room, ts=now - 1000) for i in range(5000)]
    events += [make_event("leave", e["viewer_id"], room, ts=now, dwell_ms=1000) for e in events[:3000]]
    assert await RealtimeSink(redis).write(at(events, topic)) == 8000
    stats = (await LiveStats(redis).rooms([room]))[room]
    assert (stats.enters_1h, stats.leaves_1h, stats.swipe_aways_1h, stats.viewers_now) == (
        5000,
        3000,
        3000,
        2000,
    )
    assert 4800 <= stats.unique_visitors_1h <= 5200  # a HyperLogLog: about 1% off


class _Record:
    def __init__(self, offset: int, value: bytes) -> None:
        self.offset, self.value, self.key = offset, value, b"k"


async def test_unreadable_records_are_refused_with_the_reason_and_the_rest_applied(redis: Redis) -> None:
    room, topic = f"room_{tag()}", f"t{tag()}"
    good = [make_event("like", f"v{i}", room) for i in range(3)]
    values = [
        orjson.dumps(good[0]),
        b"{not json",
        orjson.dumps({**make_event("leave", "v9", room), "dwell_ms": "long"}),
        orjson.dumps(good[1]),
        orjson.dumps({**make_event("like", "v8", room), "type": "teleport"}),
        orjson.dumps(good[2]),
    ]
    sink = RealtimeSink(redis)
    chunk, refused = sink.read({TopicPartition(topic, 0): [_Record(i, v) for i, v in enumerate(values)]})
    reasons = [reason.split(":")[0] for _tp, _record, reason in refused]
    assert [record.offset for _tp, record, _reason in refused] == [1, 2, 4]
    assert reasons == ["not JSON", "dwell_ms must be an integer", "type must be one of"]
    assert await sink.apply(chunk) == 3
    assert (await LiveStats(redis).rooms([room]))[room].likes_1h == 3

"""Room heat: decayed per-room counters on real Redis, exactly once per Kafka offset."""

from __future__ import annotations

import secrets
import time

import numpy as np
import pytest
from redis.asyncio import Redis

from events.heat import HeatTable, RoomHeat
from events.heat_sink import RoomHeatSink
from events.keys import CHANGED_KEY, EPOCH_KEY, HALF_LIFE_S, HEAT_KEY, SEQ_KEY
from events.live_stats import LiveStats
from events.realtime import RealtimeSink
from roomfeed.redis_lane import RedisLane, RoundTrip
from roomfeed.settings import Settings


def _event(
    kind: str, room: str, offset: int, ts: int, topic: str, partition: int = 0, **extra: object
) -> dict[str, object]:
    return {
        "event_id": f"e{secrets.token_hex(6)}",
        "type": kind,
        "viewer_id": f"v{offset}",
        "session_id": "s",
        "room_id": room,
        "ts": ts,
        "_topic": topic,
        "_partition": partition,
        "_offset": offset,
        **extra,
    }


@pytest.fixture
async def heat(redis: Redis) -> tuple[RoomHeatSink, RoomHeat]:
    await redis.delete(HEAT_KEY, SEQ_KEY, CHANGED_KEY, EPOCH_KEY)
    return RoomHeatSink(redis), RoomHeat(redis)


async def test_heat_counts_signals_and_halves_every_half_life(heat: tuple[RoomHeatSink, RoomHeat]) -> None:
    sink, reader = heat
    topic, now_ms = f"t{secrets.token_hex(3)}", int(time.time() * 1000)
    batch = [
        _event("enter", "room_a", 0, now_ms, topic),
        _event("enter", "room_a", 1, now_ms, topic),
        _event("impression", "room_a", 2, now_ms, topic),
        _event("leave", "room_a", 3, now_ms, topic, dwell_ms=4500),
        _event("purchase", "room_b", 4, now_ms, topic),
        _event("like", "room_b", 5, now_ms, topic),
    ]
    assert await sink.write(batch) == 5  # the like changes no heat signal
    snap = await reader.snapshot(now_ms / 1000)
    values = snap.aligned(["room_a", "room_b", "room_never"])
    assert np.allclose(values, np.array([[2, 1, 4.5, 0, 0], [0, 0, 0, 1, 0], [0, 0, 0, 0, 0]]))
    later = (await reader.snapshot(now_ms / 1000 + HALF_LIFE_S)).aligned(["room_a"])
    assert later[0].tolist() == pytest.approx([1, 0.5, 2.25, 0, 0])


async def test_enters_from_a_code_or_a_deep_link_count_as_landings_too(
    heat: tuple[RoomHeatSink, RoomHeat],
) -> None:
    sink, reader = heat
    topic, now_ms = f"t{secrets.token_hex(3)}", int(time.time() * 1000)
    batch = [
        _event("impression", "room_l", 0, now_ms, topic),
        _event("enter", "room_l", 1, now_ms, topic, source="code"),
        _event("impression", "room_l", 2, now_ms, topic),
        _event("enter", "room_l", 3, now_ms, topic, source="deeplink"),
        _event("impression", "room_l", 4, now_ms, topic),
        _event("enter", "room_l", 5, now_ms, topic, source="feed"),
        _event("impression", "room_l", 6, now_ms, topic),
        _event("enter", "room_l", 7, now_ms, topic),  # no source: the feed
    ]
    assert await sink.write(batch) == 8
    enters, impressions, _, _, landings = (await reader.snapshot(now_ms / 1000)).aligned(["room_l"])[0]
    # Every enter is an enter; the two not from the feed are landings: 2 feed enters in 2 feed impressions.
    assert (enters, impressions, landings) == pytest.approx((4, 4, 2))


async def test_a_record_of_the_layout_before_landings_is_read_and_rewritten(
    heat: tuple[RoomHeatSink, RoomHeat], redis: Redis
) -> None:
    sink, reader = heat
    topic, now_ms = f"t{secrets.token_hex(3)}", int(time.time() * 1000)
    # What the sink wrote before landings: enters, impressions, dwell_s, orders, ts_ms (40 bytes).
    await redis.hset(HEAT_KEY, "room_old", np.array([3, 5, 10, 1, now_ms], dtype="<f8").tobytes())
    assert await sink.write([_event("enter", "room_old", 0, now_ms, topic, source="code")]) == 1
    values = (await reader.snapshot(now_ms / 1000)).aligned(["room_old"])[0]
    assert values.tolist() == pytest.approx([4, 5, 10, 1, 1])
    assert await sink.prune(now_ms) == 0  # the pruner reads the time of either layout


async def test_older_events_weigh_less_than_new_ones(heat: tuple[RoomHeatSink, RoomHeat]) -> None:
    sink, reader = heat
    topic, now_ms = f"t{secrets.token_hex(3)}", int(time.time() * 1000)
    half = int(HALF_LIFE_S * 1000)
    await sink.write([_event("enter", "room_c", 0, now_ms - 2 * half, topic)])
    await sink.write(
        [_event("enter", "room_c", 1, now_ms, topic), _event("enter", "room_c", 2, now_ms - half, topic)]
    )
    (value,) = (await reader.snapshot(now_ms / 1000)).aligned(["room_c"])[:, 0]
    assert value == pytest.approx(1 + 0.5 + 0.25)


async def test_replayed_batch_changes_nothing(heat: tuple[RoomHeatSink, RoomHeat]) -> None:
    sink, reader = heat
    topic, now_ms = f"t{secrets.token_hex(3)}", int(time.time() * 1000)
    batch = [_event("enter", "room_d", i, now_ms, topic, partition=i % 2) for i in range(6)]
    assert await sink.write(batch) == 6
    assert await sink.write(batch) == 0  # a crash before the commit: the same offsets again
    assert await sink.write(batch[3:] + [_event("enter", "room_d", 6, now_ms, topic, partition=0)]) == 1
    assert (await reader.snapshot(now_ms / 1000)).aligned(["room_d"])[0, 0] == pytest.approx(7)


async def test_prune_deletes_rooms_untouched_for_hours(
    heat: tuple[RoomHeatSink, RoomHeat], redis: Redis
) -> None:
    sink, reader = heat
    topic, now_ms = f"t{secrets.token_hex(3)}", int(time.time() * 1000)
    await sink.write(
        [
            _event("enter", "room_old", 0, now_ms - 7 * 3600 * 1000, topic),
            _event("enter", "room_new", 1, now_ms, topic),
        ]
    )
    deleted = 0
    for _ in range(10):
        deleted += await sink.prune(now_ms)
        if sink._cursor in (b"0", 0, "0"):
            break
    assert deleted == 1
    assert (await reader.snapshot(now_ms / 1000)).room_ids == ["room_new"]


async def test_viewers_now_reads_the_realtime_presence_of_a_page(
    heat: tuple[RoomHeatSink, RoomHeat], redis: Redis, migrated: Settings
) -> None:
    reader = LiveStats(redis)  # presence is the realtime sink's: LiveStats reads it
    now_ms = int(time.time() * 1000)
    topic, room = f"t{secrets.token_hex(3)}", f"room_{secrets.token_hex(4)}"
    await RealtimeSink(redis).write([_event("enter", room, i, now_ms, topic) for i in range(3)])
    assert await reader.viewers_now([room, "room_nobody"], now_ms) == [3, 0]
    lane = RedisLane(migrated.redis_url)
    try:
        trip = RoundTrip(lane.pipeline())
        presence = trip.add(reader.presence([room], now_ms))
        await trip.send()
        assert presence.value == [3]
    finally:
        await lane.close()


def test_snapshot_aligns_by_room_id() -> None:
    from events.heat import HeatSnapshot

    snap = HeatSnapshot(0.0, ["b", "a"], np.array([[1, 0, 0, 0], [2, 0, 0, 0]], dtype=np.float64))
    assert snap.aligned(["a", "x", "b"])[:, 0].tolist() == [2, 0, 1]


async def test_heat_table_reads_only_changes_and_matches_a_full_read(
    heat: tuple[RoomHeatSink, RoomHeat], redis: Redis
) -> None:
    sink, reader = heat
    topic, now_ms = f"t{secrets.token_hex(3)}", int(time.time() * 1000)
    rooms = [f"room_t{i}" for i in range(7)]
    await sink.write([_event("enter", room, i, now_ms - i * 1000, topic) for i, room in enumerate(rooms)])
    table = HeatTable(reader, batch=3)  # 7 changed rooms come back in three steps
    first = await table.refresh(now_ms / 1000)
    assert sorted(first.room_ids) == rooms
    layout = table.layout

    # Rooms already known change in place (the layout holds); a new room is appended (it moves).
    await sink.write(
        [
            _event("leave", "room_t2", 10, now_ms, topic, dwell_ms=3000),
            _event("purchase", "room_t5", 11, now_ms, topic),
        ]
    )
    second = await table.refresh(now_ms / 1000)
    assert table.layout == layout
    await sink.write([_event("enter", "room_t9", 12, now_ms, topic)])
    third = await table.refresh(now_ms / 1000)
    assert table.layout != layout
    everyone = [*rooms, "room_t9", "room_never"]
    full = (await reader.snapshot(now_ms / 1000)).aligned(everyone)
    assert np.allclose(third.aligned(everyone), full)
    assert np.allclose(second.aligned(["room_t2", "room_t5"]), full[[2, 5]])
    # An older snapshot does not know rows added after it (its values end where its rows did).
    assert second.aligned(["room_t9"]).tolist() == [[0, 0, 0, 0, 0]]


async def test_heat_table_rescans_when_redis_lost_its_data_or_was_rebuilt(
    heat: tuple[RoomHeatSink, RoomHeat], redis: Redis
) -> None:
    sink, reader = heat
    topic, now_ms = f"t{secrets.token_hex(3)}", int(time.time() * 1000)
    await sink.write([_event("enter", f"room_l{i}", i, now_ms, topic) for i in range(5)])
    table = HeatTable(reader)
    assert len((await table.refresh(now_ms / 1000)).room_ids) == 5
    # Every events key gone (a flush, a restart without data, `roomfeed rebuild`), then more rooms
    # rewritten than the table had read: the counter is past where the table stood, the epoch is new.
    await redis.delete(HEAT_KEY, SEQ_KEY, CHANGED_KEY, EPOCH_KEY, f"rf:{{ev}}:heat:wm:{topic}:0")
    await sink.write([_event("enter", f"room_after{i}", i, now_ms, topic) for i in range(8)])
    snap = await table.refresh(now_ms / 1000)
    assert sorted(snap.room_ids) == sorted(f"room_after{i}" for i in range(8))
    assert snap.aligned(["room_after0", "room_l0"])[:, 0].tolist() == pytest.approx([1, 0])


async def test_pruned_rooms_leave_the_change_log(heat: tuple[RoomHeatSink, RoomHeat], redis: Redis) -> None:
    sink, _ = heat
    topic, now_ms = f"t{secrets.token_hex(3)}", int(time.time() * 1000)
    await sink.write(
        [
            _event("enter", "room_gone", 0, now_ms - 7 * 3600 * 1000, topic),
            _event("enter", "room_here", 1, now_ms, topic),
        ]
    )
    assert await redis.zcard(CHANGED_KEY) == 2
    for _ in range(10):
        await sink.prune(now_ms)
        if sink._cursor in (b"0", 0, "0"):
            break
    assert await redis.zrange(CHANGED_KEY, 0, -1) == [b"room_here"]
